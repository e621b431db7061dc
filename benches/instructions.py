"""User-space instructions per request, counted by valgrind's callgrind.

CPU time on a shared machine moves by 10-20% from run to run (steal time, noisy
neighbours), which hides the 2-5% a hot-path change is worth. Instruction counts do
not move: this runs a legacy-handler server under callgrind twice, serving N1 and
then N2 requests from the load generator, and prints (Ir(N2) - Ir(N1)) / (N2 - N1),
so start-up and import costs cancel out. Kernel time is not counted; the bench suite
(``bench.py``) measures that. The servers run with ``PYTHONHASHSEED=0`` unless the
environment sets it.

    python benches/instructions.py --impl asyncore_rs --scenario echo
    python benches/instructions.py --impl stdlib --scenario lines --requests 100,400
    python benches/instructions.py --scenario lines --breakdown 30

``--breakdown N`` also prints the N functions with the largest inclusive cost per
unit (callgrind_annotate of both runs, subtracted), which is where a change to
the hot path shows: e.g. ``async_chat::collect`` or ``__pymethod__ac_push__``.

Needs valgrind. Under callgrind the server runs ~50x slower, so a pass sees more
events than at full speed; compare implementations and revisions with each other,
not with the bench suite's figures.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import _callgrind
from asyncore_rs import _bench as bench
from asyncore_rs import _bench_server
from asyncore_rs._core import _loadgen_run

# Serves until the load generator has come and gone, then exits normally, so that
# callgrind writes its totals (a killed process writes none).
SERVER = """
import runpy, sys
make_server = runpy.run_path({server_file!r})["make_server"]
if {impl!r} == "stdlib":
    import asynchat, asyncore
else:
    from asyncore_rs import asynchat, asyncore

server = make_server(asyncore, asynchat, {scenario!r}, handler={handler!r})
print(server.socket.getsockname()[1], flush=True)
seen = False
while True:
    asyncore.loop(timeout=0.2, count=1)
    if len(asyncore.socket_map) > 1:
        seen = True
    elif seen:
        break
"""


def count(args, requests: int, workdir: Path) -> int:
    """Total instructions (Ir) of one server run serving `requests` requests."""
    out = workdir / f"callgrind.{requests}"
    script = SERVER.format(
        server_file=_bench_server.__file__,
        impl=args.impl,
        scenario=args.server_scenario,
        handler=args.handler,
    )
    server = subprocess.Popen(
        _callgrind.command(script, out),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = int(server.stdout.readline())
        _loadgen_run(
            port,
            requests=requests,
            warmup=0.0,
            duration=100000.0,
            stall_timeout=120.0,
            **args.loadgen_kwargs,
        )
        server.wait(timeout=300)
    finally:
        if server.poll() is None:
            server.kill()
    return _callgrind.total(out)


def inclusive_costs(out: Path) -> dict[str, int]:
    """Inclusive instructions per function in one callgrind output file."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[.*\])?$", line)
        if m:
            # file:function; the file part of CPython's build paths is noise.
            name = re.sub(r"^/tmp/python-build[^:]*/", "", m.group(2))
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def print_breakdown(workdir: Path, n1: int, n2: int, units: float, top: int) -> None:
    """The `top` functions by inclusive instructions per unit (N2 run minus N1 run)."""
    a = inclusive_costs(workdir / f"callgrind.{n1}")
    b = inclusive_costs(workdir / f"callgrind.{n2}")
    rows = sorted(((b.get(k, 0) - a.get(k, 0)) / units, k) for k in set(a) | set(b))
    print(f"inclusive instructions per unit, top {top}:")
    for per, name in reversed(rows[-top:]):
        print(f"{per:9.0f}  {name}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("asyncore_rs", "stdlib"), default="asyncore_rs")
    parser.add_argument(
        "--scenario",
        choices=("echo", "echo65536", "lines", "bulk", "bulk65536", "churn"),
        default="echo",
    )
    parser.add_argument("--requests", default=None, help="N1,N2 (default depends on scenario)")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        default=None,
        help="keep the callgrind output files there (callgrind_annotate --inclusive=yes FILE)",
    )
    parser.add_argument(
        "--breakdown",
        metavar="N",
        type=int,
        default=0,
        help="also print the N functions with the largest inclusive cost per unit "
        "(needs callgrind_annotate)",
    )
    args = parser.parse_args(argv)
    if not _callgrind.have_valgrind():
        return 2
    scn = bench.SCENARIOS[args.scenario]
    args.server_scenario = scn.server
    args.handler = scn.handler
    args.loadgen_kwargs = scn.loadgen_kwargs(0)
    defaults = {"echo": "5000,25000", "lines": "300,1300", "bulk": "500,2500", "churn": "1000,4000"}
    defaults.update(echo65536=defaults["echo"], bulk65536=defaults["bulk"])
    n1, n2 = _callgrind.pair(args.requests or defaults[args.scenario])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        a = count(args, n1, workdir)
        b = count(args, n2, workdir)
        units = (n2 - n1) * (scn.lines or 1)
        if args.breakdown:
            print_breakdown(workdir, n1, n2, units, args.breakdown)
    per = _callgrind.per_unit(a, b, n1, n2)
    unit = scn.unit
    if scn.lines:
        print(
            f"{args.impl} {args.scenario}: {per:.0f} instructions per request, "
            f"{per / scn.lines:.0f} per {unit}"
        )
    else:
        print(f"{args.impl} {args.scenario}: {per:.0f} instructions per {unit}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    # A fixed string hash: with a random one, the probes of CPython's dict
    # lookups (and so the count) move by about 100 instructions per line
    # from one run to the next.
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
