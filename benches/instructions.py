"""User-space instructions per request, counted by valgrind's callgrind.

CPU time on a shared machine moves by 10-20% from run to run (steal time, noisy
neighbours), which hides the 2-5% a hot-path change is worth. Instruction counts do
not move: this runs a legacy-handler server under callgrind twice, serving N1 and
then N2 requests from the load generator, and prints (Ir(N2) - Ir(N1)) / (N2 - N1),
so start-up and import costs cancel out. Kernel time is not counted; the bench suite
(``bench.py``) measures that.

    python benches/instructions.py --impl asyncore_rs --scenario echo
    python benches/instructions.py --impl stdlib --scenario lines --requests 100,400

Needs valgrind. Under callgrind the server runs ~50x slower, so a pass sees more
events than at full speed; compare implementations and revisions with each other,
not with the bench suite's figures.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the loadgen build and scenario table)

SERVERS = Path(__file__).resolve().parent / "servers"

# Serves until the load generator has come and gone, then exits normally, so that
# callgrind writes its totals (a killed process writes none).
SERVER = """
import sys
sys.path.insert(0, {servers!r})
if {impl!r} == "stdlib":
    import asynchat, asyncore
else:
    from asyncore_rs import asynchat, asyncore
from legacy_handlers import make_server

server = make_server(asyncore, asynchat, {scenario!r})
print(server.socket.getsockname()[1], flush=True)
seen = False
while True:
    asyncore.loop(timeout=0.2, count=1)
    if len(asyncore.socket_map) > 1:
        seen = True
    elif seen:
        break
"""


def count(args, loadgen: Path, requests: int, workdir: Path) -> int:
    """Total instructions (Ir) of one server run serving `requests` requests."""
    out = workdir / f"callgrind.{requests}"
    script = SERVER.format(servers=str(SERVERS), impl=args.impl, scenario=args.server_scenario)
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            script,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = int(server.stdout.readline())
        subprocess.run(
            [
                str(loadgen),
                "--port",
                str(port),
                "--requests",
                str(requests),
                "--warmup",
                "0",
                "--duration",
                "100000",
                "--stall-timeout",
                "120",
                *args.loadgen_args,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        server.wait(timeout=300)
    finally:
        if server.poll() is None:
            server.kill()
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("asyncore_rs", "stdlib"), default="asyncore_rs")
    parser.add_argument("--scenario", choices=("echo", "lines", "bulk", "churn"), default="echo")
    parser.add_argument("--requests", default=None, help="N1,N2 (default depends on scenario)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    scn = bench.SCENARIOS[args.scenario]
    args.server_scenario = scn.server
    args.loadgen_args = scn.loadgen_args(0)
    defaults = {"echo": "5000,25000", "lines": "300,1300", "bulk": "500,2500", "churn": "1000,4000"}
    n1, n2 = (int(n) for n in (args.requests or defaults[args.scenario]).split(","))
    bins = bench.ensure_loadgen(bench.Progress())
    with tempfile.TemporaryDirectory() as tmp:
        a = count(args, bins["loadgen"], n1, Path(tmp))
        b = count(args, bins["loadgen"], n2, Path(tmp))
    per = (b - a) / (n2 - n1)
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
    sys.exit(main())
