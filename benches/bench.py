"""The asyncore-rs benchmark suite.

Run it as ``python -m asyncore_rs bench [options]`` (or ``python benches/bench.py``) from a
source checkout. It builds the native load generator on first use
(``cargo build --release --manifest-path benches/loadgen/Cargo.toml``), then runs every
scenario against every available implementation, each server in a process of its own:

* ``asyncore_rs`` -- the shared legacy handlers (servers/legacy_handlers.py) on asyncore-rs;
* ``stdlib``      -- the same handlers on the pure-Python asyncore/asynchat (CPython's own
  modules on <= 3.11, the ``pyasyncore``/``pyasynchat`` backports on 3.12+);
* ``uvloop``, ``asyncio`` -- asyncio.Protocol servers doing the same work;
* ``ceiling``     -- a minimal Rust epoll echo server (loadgen/src/bin/ceiling_echo.rs).

The figure is the server's CPU time (utime+stime from /proc/<pid>/stat, read by the load
generator at the edges of the measured window) per request, or per line for the line
scenario: on a shared machine it moves much less than throughput does. Each round runs
every scenario on every implementation (implementations interleaved, their order rotated
from round to round); the table shows the median over the rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import select
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
SERVERS = BENCHES / "servers"
LOADGEN_DIR = BENCHES / "loadgen"
DEFAULT_DOCS = ROOT / "docs" / "benchmarks.rst"


class SuiteError(Exception):
    """A problem that stops the whole suite (no load generator, bad options)."""


class RunError(Exception):
    """A problem with one run (server crashed, echo mismatch...)."""


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    server: str  # the server's --scenario
    mode: str  # the load generator's --mode
    conns: int
    unit: str = "request"
    size: int = 64
    lines: int = 0
    line_size: int = 64
    idle: int = 0

    def loadgen_args(self, idle: int) -> list[str]:
        args = ["--mode", self.mode, "--conns", str(self.conns)]
        if self.mode == "lines":
            args += ["--lines", str(self.lines), "--line-size", str(self.line_size)]
        else:
            args += ["--size", str(self.size)]
        if self.idle:
            args += ["--idle", str(idle)]
        return args


SCENARIOS = {
    s.key: s
    for s in [
        Scenario("echo", "64 B echo, 50 connections", "echo", "echo", conns=50),
        Scenario(
            "lines",
            "100 lines of 64 B per request, 10 connections",
            "lines",
            "lines",
            conns=10,
            unit="line",
            lines=100,
        ),
        Scenario(
            "idle", "64 B echo, 10 active + {idle} idle connections", "echo", "echo", 10, idle=5000
        ),
        Scenario("bulk", "64 KiB echo, 4 connections", "bulk", "echo", conns=4, size=65536),
        Scenario(
            "churn",
            "connect, one 64 B echo, close; 10 at a time",
            "echo",
            "churn",
            conns=10,
            unit="connection",
        ),
    ]
}


@dataclass
class Impl:
    key: str
    label: str
    script: str | None  # servers/<script>; None for the native ceiling server
    legacy: bool = False  # asyncore-style: takes --use-poll
    detail: str = ""
    available: bool = False
    reason: str = ""


def all_impls() -> dict[str, Impl]:
    return {
        i.key: i
        for i in [
            Impl("asyncore_rs", "asyncore-rs", "asyncore_rs_server.py", legacy=True),
            Impl(
                "asyncore_rs_unbatched",
                "asyncore-rs, unbatched",
                "asyncore_rs_unbatched_server.py",
                legacy=True,
            ),
            Impl("stdlib", "stdlib asyncore", "stdlib_server.py", legacy=True),
            Impl("uvloop", "uvloop Protocol", "uvloop_server.py"),
            Impl("asyncio", "asyncio Protocol", "asyncio_server.py"),
            Impl("ceiling", "Rust epoll (ceiling)", None),
        ]
    }


PRESETS = {
    # name: (scenarios, impls, rounds, duration, warmup, idle)
    "full": (list(SCENARIOS), None, 3, 3.0, 1.0, 5000),
    "quick": (
        ["echo", "lines", "idle"],
        ["asyncore_rs", "asyncore_rs_unbatched", "stdlib"],
        1,
        2.0,
        0.5,
        1000,
    ),
    "smoke": (list(SCENARIOS), None, 1, 0.25, 0.1, 200),
}


@dataclass
class Params:
    preset: str
    scenarios: list[str]
    impls: list[str] | None
    rounds: int
    duration: float
    warmup: float
    idle: int
    quickack: bool = True
    python: str = sys.executable
    max_steal: float = 5.0
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- progress


class Progress:
    """Progress lines on stderr; on a terminal the running step is rewritten in place."""

    def __init__(self, quiet: bool = False):
        self.tty = sys.stderr.isatty()
        self.quiet = quiet
        self.pending = False

    def note(self, text: str) -> None:
        if self.quiet:
            return
        self._clear()
        print(text, file=sys.stderr, flush=True)

    def running(self, text: str) -> None:
        if self.quiet or not self.tty:
            return
        self._clear()
        sys.stderr.write(text[: shutil.get_terminal_size().columns - 1])
        sys.stderr.flush()
        self.pending = True

    def _clear(self) -> None:
        if self.pending:
            sys.stderr.write("\r\033[K")
            self.pending = False


# --------------------------------------------------------------------------- building


def cargo_path() -> str | None:
    found = shutil.which("cargo")
    if found:
        return found
    home = Path.home() / ".cargo" / "bin" / "cargo"
    return str(home) if home.exists() else None


def ensure_loadgen(progress: Progress) -> dict[str, Path]:
    """Builds benches/loadgen when its binaries are missing or older than its sources."""
    manifest = LOADGEN_DIR / "Cargo.toml"
    target = LOADGEN_DIR / "target"
    bins = {name: target / "release" / name for name in ("loadgen", "ceiling_echo")}
    sources = [manifest, *sorted((LOADGEN_DIR / "src").rglob("*.rs"))]
    lock = LOADGEN_DIR / "Cargo.lock"
    if lock.exists():
        sources.append(lock)
    newest = max(p.stat().st_mtime for p in sources)
    # cargo leaves a binary untouched when its own inputs did not change, so the
    # freshness check compares the sources with a stamp written after each build.
    stamp = target / "bench-build.stamp"
    if (
        stamp.exists()
        and stamp.stat().st_mtime >= newest
        and all(b.exists() for b in bins.values())
    ):
        return bins
    cargo = cargo_path()
    if cargo is None:
        raise SuiteError(
            "cargo was not found: the load generator is a small Rust crate "
            f"({manifest}); install Rust (https://rustup.rs) and run again"
        )
    cmd = [cargo, "build", "--release", "--manifest-path", str(manifest)]
    cmd += ["--target-dir", str(target)]
    shown = ["cargo", "build", "--release", "--manifest-path", os.path.relpath(manifest)]
    progress.note("building the load generator: " + shlex.join(shown))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SuiteError("building the load generator failed:\n" + proc.stdout[-3000:])
    missing = [str(b) for b in bins.values() if not b.exists()]
    if missing:
        raise SuiteError("cargo build did not produce " + ", ".join(missing))
    stamp.write_text("built by benches/bench.py\n")
    return bins


# --------------------------------------------------------------------------- servers


def detect(impls: dict[str, Impl], wanted: list[str], python: str, bins: dict[str, Path]):
    for key in wanted:
        impl = impls[key]
        if impl.script is None:
            impl.available = bins["ceiling_echo"].exists()
            impl.detail = "benches/loadgen ceiling_echo (polling/epoll, one thread)"
            continue
        cmd = [python, str(SERVERS / impl.script), "--check"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            impl.reason = "--check timed out"
            continue
        out = proc.stdout.strip()
        if proc.returncode == 0:
            impl.available, impl.detail = True, out
            if key == "stdlib" and out.startswith("pyasyncore"):
                impl.label = "pyasyncore"
        elif proc.returncode == 3:
            impl.reason = out.removeprefix("unavailable: ") if out else "not installed"
        else:
            impl.reason = (proc.stderr.strip() or out or f"exit {proc.returncode}")[-300:]


def server_command(impl: Impl, scn: Scenario, params: Params, bins: dict[str, Path]):
    common = ["--port", "0", "--scenario", scn.server]
    if impl.script is None:
        return [str(bins["ceiling_echo"]), *common]
    cmd = [params.python, str(SERVERS / impl.script), *common]
    if impl.legacy and scn.idle:
        # select() cannot watch fds above 1023: legacy code with thousands of
        # connections calls asyncore.loop(use_poll=True). Both asyncore
        # implementations get the same call.
        cmd.append("--use-poll")
    return cmd


def read_port(proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunError(f"the server did not print its port within {timeout:.0f} s")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise RunError(f"the server exited before printing its port (exit {proc.wait()})")
            text = line.decode(errors="replace").strip()
            if text.isdigit():
                return int(text)
            raise RunError(f"the server printed {text!r} instead of its port")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def run_one(impl: Impl, scn: Scenario, params: Params, bins: dict[str, Path]) -> dict:
    idle = params.idle if scn.idle else 0
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(
            server_command(impl, scn, params, bins),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errf,
        )
        try:
            port = read_port(proc, timeout=60)
            cmd = [str(bins["loadgen"]), "--port", str(port), "--server-pid", str(proc.pid)]
            cmd += scn.loadgen_args(idle)
            cmd += ["--warmup", str(params.warmup), "--duration", str(params.duration)]
            cmd += ["--stall-timeout", "20"]
            if not params.quickack:
                cmd.append("--no-quickack")
            budget = 60 + 2 * params.warmup + params.duration + 0.05 * idle
            times_before = cpu_times()
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
            except subprocess.TimeoutExpired:
                raise RunError(f"the load generator did not finish within {budget:.0f} s")
            stolen = steal_pct(times_before, cpu_times())
            lines = out.stdout.strip().splitlines()
            try:
                data = json.loads(lines[-1])
            except (IndexError, ValueError):
                raise RunError(f"no result from the load generator: {out.stderr.strip()[-500:]}")
            if proc.poll() is not None:
                raise RunError(f"the server exited during the run (exit {proc.returncode})")
            if not data.get("ok"):
                raise RunError(data.get("error", "the load generator failed"))
        except RunError as exc:
            stop(proc)
            errf.seek(0)
            tail = errf.read().decode(errors="replace").strip()[-1500:]
            raise RunError(f"{exc}\n--- server stderr ---\n{tail}" if tail else str(exc))
        finally:
            stop(proc)
    result = derive(data, scn, idle)
    result["steal_pct"] = stolen
    return result


STEAL_RETRIES = 2


def run_with_little_steal(impl, scn, params, bins, progress, head) -> dict:
    """run_one(), repeated (up to STEAL_RETRIES times) while the hypervisor stole more
    than --max-steal percent of the machine's CPU time during the run: CPU time per
    request inflates then. Keeps the run with the least steal."""
    best = None
    for attempt in range(1 + STEAL_RETRIES):
        r = run_one(impl, scn, params, bins)
        if best is None or (r["steal_pct"] or 0) < (best["steal_pct"] or 0):
            best = r
        if r["steal_pct"] is None or r["steal_pct"] <= params.max_steal:
            break
        if attempt < STEAL_RETRIES:
            progress.note(f"{head} {r['steal_pct']:.0f}% steal time: run again")
    best["attempts"] = attempt + 1
    return best


def derive(d: dict, scn: Scenario, idle: int) -> dict:
    units, requests, elapsed = d["units"], d["requests"], d["elapsed_s"]
    if units <= 0:
        raise RunError("no request completed in the measured window")
    if d.get("server_cpu_ticks") is None:
        raise RunError("could not read /proc/<server pid>/stat")
    cpu_s = d["server_cpu_ticks"] / d["clk_tck"]
    cpu_ns = d.get("server_cpu_ns")
    r = {
        "requests": requests,
        "units": units,
        "elapsed_s": elapsed,
        "server_cpu_ticks": d["server_cpu_ticks"],
        "cpu_us_per_unit": cpu_s * 1e6 / units,
        "cpu_us_per_request": cpu_s * 1e6 / requests,
        "cpu_us_per_unit_ns_clock": None if cpu_ns is None else cpu_ns / 1e3 / units,
        "server_cpu_pct": 100 * cpu_s / elapsed,
        "loadgen_cpu_us_per_unit": d["loadgen_cpu_ns"] / 1e3 / units,
        "loadgen_cpu_pct": 100 * d["loadgen_cpu_ns"] / 1e9 / elapsed,
        "requests_per_s": d["requests_per_s"],
        "units_per_s": units / elapsed,
        "mean_us": d["mean_us"],
        "p50_us": d["p50_us"],
        "p90_us": d["p90_us"],
        "p99_us": d["p99_us"],
        "max_us": d["max_us"],
        "rss_kib_end": d["server_rss_kib_end"],
    }
    if idle:
        before, after = d["server_rss_kib_before_idle"], d["server_rss_kib_after_idle"]
        r["idle"] = idle
        r["rss_kib_before_idle"] = before
        r["rss_kib_after_idle"] = after
        r["rss_per_idle_kib"] = None if None in (before, after) else (after - before) / idle
        r["idle_setup_s"] = d["idle_setup_s"]
    return r


def median_of(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        out[key] = statistics.median(values) if values else None
    return out


# --------------------------------------------------------------------------- the suite


def machine_info(python: str) -> dict:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    version = platform.python_version()
    if python != sys.executable:
        probe = [python, "-c", "import platform; print(platform.python_version())"]
        version = subprocess.run(probe, capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": version,
    }


def cpu_times() -> list[int] | None:
    """The machine's aggregate CPU times from /proc/stat (None where there is none)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return [int(x) for x in fields[1:9]]  # user .. steal (guest time is inside user)


def steal_pct(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of the machine's CPU time the hypervisor gave to other guests in between."""
    if before is None or after is None:
        return None
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta)
    return 100.0 * delta[7] / total if total > 0 else None


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SuiteError(
            f"the open-file limit ({soft}) is below the {needed} the idle scenario needs; "
            "raise it (ulimit -n) or pass a smaller --idle"
        )
    return soft


def fmt_num(x) -> str:
    if x is None:
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def run_suite(params: Params, progress: Progress) -> dict:
    bins = ensure_loadgen(progress)
    impls = all_impls()
    wanted = params.impls or list(impls)
    detect(impls, wanted, params.python, bins)
    active = [k for k in wanted if impls[k].available]
    unavailable = {k: impls[k].reason for k in wanted if not impls[k].available}
    for key in active:
        progress.note(f"  {impls[key].label:<22} {impls[key].detail}")
    for key, why in unavailable.items():
        progress.note(f"  {impls[key].label:<22} not run: {why}")
    if not active:
        raise SuiteError("no implementation is available")
    if "idle" in params.scenarios:
        raise_fd_limit(params.idle + 200)

    scenarios = [SCENARIOS[s] for s in params.scenarios]
    runs: dict[tuple[str, str], list[dict]] = {}
    errors: list[dict] = []
    total = params.rounds * len(scenarios) * len(active)
    done, started = 0, time.monotonic()
    suite_times = cpu_times()
    for rnd in range(params.rounds):
        shift = rnd % len(active)
        order = active[shift:] + active[:shift]
        for scn in scenarios:
            for key in order:
                impl = impls[key]
                eta = ""
                if done:
                    left = (time.monotonic() - started) / done * (total - done)
                    eta = f", about {left:.0f} s left"
                head = f"[{done + 1:>3}/{total}] round {rnd + 1}/{params.rounds} {scn.key:<6}"
                head += f" {impl.label:<22}"
                progress.running(f"{head} running{eta}")
                try:
                    r = run_with_little_steal(impl, scn, params, bins, progress, head)
                except RunError as exc:
                    errors.append({"scenario": scn.key, "impl": key, "error": str(exc)})
                    progress.note(f"{head} FAILED: {str(exc).splitlines()[0]}")
                else:
                    runs.setdefault((scn.key, key), []).append(r)
                    progress.note(
                        f"{head} {fmt_num(r['cpu_us_per_unit']):>7} us/{scn.unit}"
                        f"  {fmt_num(r['requests_per_s']):>8} req/s"
                        f"  p99 {fmt_num(r['p99_us'])} us"
                        f"  (server {r['server_cpu_pct']:.0f}% CPU,"
                        f" loadgen {r['loadgen_cpu_pct']:.0f}%)"
                    )
                done += 1

    result_scenarios = {}
    for scn in scenarios:
        results = {}
        for key in active:
            rs = runs.get((scn.key, key), [])
            errs = [e["error"] for e in errors if e["scenario"] == scn.key and e["impl"] == key]
            entry: dict = {"runs": rs}
            if rs:
                entry["median"] = median_of(rs)
            if errs:
                entry["errors"] = errs
            results[key] = entry
        result_scenarios[scn.key] = {
            "title": scn.title.format(idle=params.idle),
            "unit": scn.unit,
            "connections": scn.conns,
            "idle_connections": params.idle if scn.idle else 0,
            "request_bytes": scn.lines * scn.line_size if scn.mode == "lines" else scn.size,
            "results": results,
        }
    steal = steal_pct(suite_times, cpu_times())
    per_run = [r["steal_pct"] for rs in runs.values() for r in rs if r["steal_pct"] is not None]
    return {
        "suite": "asyncore-rs benchmarks",
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "preset": params.preset,
        "machine": {
            **machine_info(params.python),
            "steal_pct": steal,
            "steal_pct_max_run": max(per_run) if per_run else None,
        },
        "params": {
            "rounds": params.rounds,
            "duration_s": params.duration,
            "warmup_s": params.warmup,
            "idle": params.idle,
            "quickack": params.quickack,
            "python": params.python,
            "max_steal_pct": params.max_steal,
        },
        "implementations": {
            k: {"label": impls[k].label, "detail": impls[k].detail} for k in active
        },
        "unavailable": unavailable,
        "scenarios": result_scenarios,
        "errors": errors,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


# --------------------------------------------------------------------------- output

COLUMNS = [
    # header, key, formatter
    ("CPU us/unit", "cpu_us_per_unit", fmt_num),
    ("% of pure-Py", None, None),
    ("req/s", "requests_per_s", fmt_num),
    ("p50 us", "p50_us", fmt_num),
    ("p99 us", "p99_us", fmt_num),
    ("RSS/idle KiB", "rss_per_idle_kib", fmt_num),
    ("server CPU", "server_cpu_pct", lambda x: "-" if x is None else f"{x:.0f}%"),
    ("loadgen CPU", "loadgen_cpu_pct", lambda x: "-" if x is None else f"{x:.0f}%"),
]


def table_rows(report: dict) -> list[tuple[str, list[list[str]]]]:
    """[(scenario heading, [[implementation, cell, ...], ...]), ...]"""
    out = []
    for scn in report["scenarios"].values():
        base = scn["results"].get("stdlib", {}).get("median", {}).get("cpu_us_per_unit")
        rows = []
        for key, res in scn["results"].items():
            label = report["implementations"][key]["label"]
            med = res.get("median")
            if med is None:
                err = res.get("errors", ["no result"])[0].splitlines()[0]
                rows.append([label, f"failed: {err}"])
                continue
            cells = [label]
            for _header, mkey, fmt in COLUMNS:
                if mkey is None:
                    cpu = med["cpu_us_per_unit"]
                    cells.append(f"{100 * cpu / base:.0f}%" if base and cpu is not None else "-")
                elif mkey == "rss_per_idle_kib" and "rss_per_idle_kib" not in med:
                    cells.append("-")
                else:
                    cells.append(fmt(med.get(mkey)))
            rows.append(cells)
        out.append((f"{scn['title']} (CPU per {scn['unit']})", rows))
    return out


def steal_note(report: dict) -> str:
    """How much CPU time the hypervisor stole during the runs ("" when unknown)."""
    machine = report["machine"]
    steal, worst = machine.get("steal_pct"), machine.get("steal_pct_max_run")
    if steal is None:
        return ""
    note = f"Hypervisor steal time: {steal:.0f}% of the machine's CPU time over the suite"
    if worst is not None:
        note += f", at most {worst:.0f}% during one kept run"
    limit = report["params"].get("max_steal_pct")
    if limit is not None and limit < 100:
        note += f" (a run with more than {limit:g}% is run again, twice at most)"
    return note


def format_table(report: dict) -> str:
    headers = ["implementation"] + [c[0] for c in COLUMNS]
    groups = table_rows(report)
    widths = [len(h) for h in headers]
    for _, rows in groups:
        for row in rows:
            if len(row) == len(headers):
                widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells):
        first = cells[0].ljust(widths[0] + 2)
        return first + "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))

    p = report["params"]
    m = report["machine"]
    rounds = p["rounds"]
    out = [
        f"asyncore-rs benchmarks: server CPU time per unit of work (lower is better), "
        f"median of {rounds} interleaved round{'s' if rounds != 1 else ''}, "
        f"{p['duration_s']:g} s measured after {p['warmup_s']:g} s warm-up",
        f"{m['cpu']} x{m['cpus']}, {m['system']}, Python {m['python']}, {report['date']}",
        *([steal_note(report)] if steal_note(report) else []),
        "",
        "  " + line(headers),
    ]
    for title, rows in groups:
        out.append(title)
        for row in rows:
            out.append("  " + (line(row) if len(row) == len(headers) else "  ".join(row)))
    if report["unavailable"]:
        out.append("")
        for key, why in report["unavailable"].items():
            out.append(f"not run: {key}: {why}")
    return "\n".join(out)


def format_rst(report: dict, command: str) -> str:
    p = report["params"]
    m = report["machine"]
    date = report["date"][:10]
    headers = ["Implementation"] + [c[0].replace("us", "µs") for c in COLUMNS]
    out = [
        ".. This page is written by ``python -m asyncore_rs bench --write-docs``",
        "   (benches/bench.py); edits are overwritten the next time it runs.",
        "",
        "Benchmarks",
        "==========",
        "",
        "The figure that matters is the **server's CPU time per request** (per line in the",
        "line scenario, per connection in the churn scenario): utime + stime of the server",
        "process from ``/proc/<pid>/stat`` over the measured window only. On a shared",
        "machine it moves much less than requests per second do. Lower is better.",
        "",
        f"Measured on {date} with::",
        "",
        f"    {command}",
        "",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['system']}, Python {m['python']}.",
        f"Median of {p['rounds']} interleaved round{'s' if p['rounds'] != 1 else ''}; each",
        f"run measures {p['duration_s']:g} s after a {p['warmup_s']:g} s warm-up.",
        *([steal_note(report) + "."] if steal_note(report) else []),
        "",
        "Columns: *CPU µs/unit* is the server's CPU time per request (per line, per",
        "connection where the title says so); *% of pure-Py* is that figure relative to",
        "the pure-Python asyncore in the same scenario (lower is cheaper); *req/s*, *p50*",
        "and *p99* are requests per second and per-request latency (a request is the",
        "whole 100-line exchange in the line scenario, connect to close in the churn",
        "scenario); *RSS/idle* is the server's memory per idle connection; *server CPU*",
        "and *loadgen CPU* are each process's share of one core during the window.",
        "",
    ]

    def row(cells):
        lines = []
        for i, c in enumerate(cells):
            c = "—" if c in ("", "-") else c
            lines.append(("   * - " if i == 0 else "     - ") + c)
        return lines

    for title, rows in table_rows(report):
        out += [f".. list-table:: {title}", "   :header-rows: 1", ""]
        out += row(headers)
        for r in rows:
            out += row(r + [""] * (len(headers) - len(r)))
        out.append("")
    out += ["Implementations:", ""]
    for key, info in report["implementations"].items():
        out.append(f"- **{info['label']}** (``{key}``): {info['detail']}")
    for key, why in report["unavailable"].items():
        out.append(f"- ``{key}``: not run ({why})")
    out += [
        "",
        "How it is measured",
        "------------------",
        "",
        "- Every server runs in a process of its own, so ``/proc/<pid>/stat`` holds its CPU",
        "  time alone. asyncore-rs and the pure-Python asyncore run the *same* handler code",
        "  (``benches/servers/legacy_handlers.py``: the Python documentation's ``EchoHandler``",
        "  on ``dispatcher_with_send``, and an ``async_chat`` that pushes back each",
        '  ``b"\\n"``-terminated line); uvloop and asyncio run ``asyncio.Protocol`` servers',
        "  doing the same work; the ceiling is a minimal Rust epoll echo server.",
        "- The load generator (``benches/loadgen``, Rust, one thread, epoll) keeps each",
        "  connection closed-loop: it sends a request, waits for the whole echo and checks",
        "  every byte. After an incomplete echo it sets ``TCP_QUICKACK``, so servers that",
        "  keep Nagle's algorithm on (asyncore does) are not held up by the client's 40 ms",
        "  delayed ACK.",
        "- Scenarios: 64 B echo on 50 connections; 100 lines of 63 bytes + ``\\n`` sent at",
        "  once, waiting for all 100 echoed lines, on 10 connections; 64 B echo on 10",
        f"  connections while {p['idle']} idle connections stay open (each made one round",
        "  trip first; the asyncore servers call ``asyncore.loop(use_poll=True)`` there,",
        "  as select() cannot watch that many); 64 KiB echo on 4 connections; churn:",
        "  connect, one 64 B echo, close, 10 connections at a time.",
        "- RSS per idle connection is the server's RSS growth while the idle connections",
        "  open, divided by their number.",
        "- On loopback the kernel's TCP work is charged to the sending process, so a fast",
        "  server and the load generator use similar CPU; the *server CPU* and",
        "  *loadgen CPU* columns show each one's share of a core during the window. When",
        "  the load generator is the busier one (always with the ceiling server), req/s",
        "  is its limit rather than the server's; CPU per request holds either way.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- CLI


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark asyncore-rs against the pure-Python asyncore, uvloop, "
        "asyncio and a Rust epoll ceiling (server CPU time per request).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny run of every scenario")
    mode.add_argument(
        "--quick", action="store_true", help="asyncore-rs vs stdlib on echo and lines"
    )
    parser.add_argument(
        "--scenarios", help="comma-separated, from: " + ",".join(SCENARIOS) + " (default: all)"
    )
    parser.add_argument(
        "--impls", help="comma-separated, from: " + ",".join(all_impls()) + " (default: all)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per run (default 1)")
    parser.add_argument("--idle", type=int, help="idle connections (default 5000)")
    parser.add_argument(
        "--no-quickack",
        action="store_true",
        help="let the load generator delay its ACKs (shows Nagle stalls)",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the Python servers"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument(
        "--write-docs", action="store_true", help="write the table to docs/benchmarks.rst"
    )
    parser.add_argument("--docs-file", type=Path, default=DEFAULT_DOCS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--max-steal",
        type=float,
        default=5.0,
        help="run again (twice at most) when the hypervisor stole more than this percent "
        "of the CPU time during a run (default 5; 100 never repeats)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def params_from(args: argparse.Namespace) -> Params:
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    scenarios, impls, rounds, duration, warmup, idle = PRESETS[preset]

    def split(text, known, what):
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in known]
        if bad or not items:
            raise SuiteError(
                f"unknown {what}: {','.join(bad) or text!r} (known: {','.join(known)})"
            )
        return items

    if args.scenarios:
        scenarios = split(args.scenarios, SCENARIOS, "scenario")
    if args.impls:
        impls = split(args.impls, all_impls(), "implementation")
    params = Params(
        preset=preset,
        scenarios=scenarios,
        impls=impls,
        rounds=args.rounds if args.rounds is not None else rounds,
        duration=args.duration if args.duration is not None else duration,
        warmup=args.warmup if args.warmup is not None else warmup,
        idle=args.idle if args.idle is not None else idle,
        quickack=not args.no_quickack,
        python=args.python,
        max_steal=args.max_steal,
    )
    if params.rounds < 1 or params.duration <= 0 or params.warmup < 0 or params.idle < 1:
        raise SuiteError("--rounds, --duration and --idle must be positive")
    return params


def shown_args(argv: list[str]) -> list[str]:
    """argv without the options that do not change the figures (for the docs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--docs-file":
            skip = True
        elif not arg.startswith("--docs-file=") and arg not in ("--quiet", "--json"):
            out.append(arg)
    return out


def main(argv: list[str] | None = None, prog: str = "python benches/bench.py") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    progress = Progress(quiet=args.quiet)
    try:
        params = params_from(args)
        progress.note(
            f"{prog}: {params.preset} run, {len(params.scenarios)} scenario(s), "
            f"{params.rounds} round(s) of {params.duration:g} s (+{params.warmup:g} s warm-up)"
        )
        report = run_suite(params, progress)
    except SuiteError as exc:
        progress.note(f"{prog}: {exc}")
        return 2
    except KeyboardInterrupt:
        progress.note(f"{prog}: interrupted")
        return 130
    command = " ".join([prog, *map(shlex.quote, shown_args(argv))])
    report["command"] = command
    table = format_table(report)
    if args.json:
        progress.note("\n" + table)
        print(json.dumps(report, indent=1))
    else:
        print(table)
    if args.write_docs:
        args.docs_file.parent.mkdir(parents=True, exist_ok=True)
        args.docs_file.write_text(format_rst(report, command), encoding="utf-8")
        progress.note(f"wrote {args.docs_file}")
    for err in report["errors"]:
        progress.note(f"FAILED {err['scenario']} / {err['impl']}:\n{err['error']}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
