"""The asyncore-rs benchmark suite: ``python -m asyncore_rs bench [options]``.

Everything it needs ships in the wheel: the load generator and the ceiling server are
in the extension (``asyncore_rs._core._loadgen_run`` and ``_ceiling_serve``, plain Rust,
src/loadgen.rs) and the servers are ``asyncore_rs/_bench_server.py``. Every scenario
runs against every available implementation, each server in a process of its own:

* ``asyncore_rs`` -- the legacy handlers (``_bench_server.make_server``) on asyncore-rs,
  and ``asyncore_rs_unbatched``, the same with ``async_chat.ac_batch_output = False``;
* ``pure_python`` -- the same handlers on the pure-Python asyncore/asynchat: CPython's
  own modules on <= 3.11; on 3.12+ the ``pyasyncore``/``pyasynchat`` backports, which
  the bench installs with pip into a temporary directory for the run (``--pure-dir``
  names a directory that already holds them);
* ``uvloop`` (where installed), ``asyncio`` -- asyncio.Protocol servers doing the same work;
* ``ceiling`` -- a minimal Rust epoll echo server.

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
import re
import resource
import select
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

SERVER_FILE = Path(__file__).resolve().parent / "_bench_server.py"
# The server runs by path, without its directory (asyncore_rs/, which holds an
# asyncore.py) or the current directory on sys.path: the pure-Python server must
# import nothing of ours.
SERVER_BOOT = (
    "import runpy, sys; del sys.path[0]; path = sys.argv.pop(1); sys.argv[0] = path; "
    "runpy.run_path(path, run_name='__main__')"
)
PURE_PACKAGES = ("pyasyncore", "pyasynchat")


class SuiteError(Exception):
    """A problem that stops the whole suite (bad options, nothing to measure)."""


class RunError(Exception):
    """A problem with one run (server crashed, echo mismatch...)."""


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    server: str  # the server's --scenario
    mode: str  # the load generator's mode
    conns: int
    unit: str = "request"
    size: int = 64
    lines: int = 0
    line_size: int = 64
    idle: int = 0
    handler: str = "recv8192"  # the legacy echo handler's shape
    short: str = ""  # the name in the docs' summary

    def loadgen_kwargs(self, idle: int) -> dict:
        kw: dict = {"mode": self.mode, "conns": self.conns}
        if self.mode == "lines":
            kw.update(lines=self.lines, line_size=self.line_size)
        else:
            kw["size"] = self.size
        if self.idle:
            kw["idle"] = idle
        return kw


SCENARIOS = {
    s.key: s
    for s in [
        Scenario("echo", "64 B echo, 50 connections", "echo", "echo", conns=50, short="64 B echo"),
        Scenario(
            "echo65536",
            "64 B echo, 50 connections, recv(65536) handler",
            "echo",
            "echo",
            conns=50,
            handler="recv65536",
            short="64 B echo with recv(65536)",
        ),
        Scenario(
            "lines",
            "100 lines of 64 B per request, 10 connections",
            "lines",
            "lines",
            conns=10,
            unit="line",
            lines=100,
            short="100 pipelined lines",
        ),
        # The idle scenario without its idle connections: what they cost is the
        # difference between the two.
        Scenario(
            "echo10",
            "64 B echo, 10 connections",
            "echo",
            "echo",
            conns=10,
            short="64 B echo on 10 connections",
        ),
        Scenario(
            "idle",
            "64 B echo, 10 active + {idle} idle connections",
            "echo",
            "echo",
            10,
            idle=5000,
            short="{idle} idle connections",
        ),
        Scenario(
            "bulk",
            "64 KiB echo, 4 connections",
            "bulk",
            "echo",
            conns=4,
            size=65536,
            short="64 KiB echo",
        ),
        Scenario(
            "bulk65536",
            "64 KiB echo, 4 connections, recv(65536) handler",
            "bulk",
            "echo",
            conns=4,
            size=65536,
            handler="recv65536",
            short="64 KiB echo with recv(65536)",
        ),
        Scenario(
            "churn",
            "connect, one 64 B echo, close; 10 at a time",
            "echo",
            "churn",
            conns=10,
            unit="connection",
            short="connection churn",
        ),
    ]
}


@dataclass
class Impl:
    key: str
    label: str
    legacy: bool = False  # asyncore-style: takes --use-poll and --handler
    detail: str = ""
    available: bool = False
    reason: str = ""


def all_impls() -> dict[str, Impl]:
    return {
        i.key: i
        for i in [
            Impl("asyncore_rs", "asyncore-rs", legacy=True),
            Impl("asyncore_rs_unbatched", "asyncore-rs, unbatched", legacy=True),
            Impl("pure_python", "pure Python", legacy=True),
            Impl("uvloop", "uvloop Protocol"),
            Impl("asyncio", "asyncio Protocol"),
            Impl("ceiling", "Rust epoll (ceiling)"),
        ]
    }


@dataclass(frozen=True)
class Preset:
    scenarios: list
    impls: list | None  # None: all
    rounds: int
    duration: float
    warmup: float
    idle: int
    # Implementations added when pure_python cannot be had (nothing to compare with).
    fallback: tuple = ()

    def describe(self) -> str:
        """Exactly what the preset runs (for --help)."""
        scenarios = ", ".join(
            f"{s} ({self.idle} idle connections)" if SCENARIOS[s].idle else s
            for s in self.scenarios
        )
        impls = ", ".join(self.impls) if self.impls else "every available implementation"
        text = f"scenarios {scenarios}; implementations {impls}"
        if self.fallback:
            text += f" ({', '.join(self.fallback)} too when pure_python cannot be had)"
        rounds = f"{self.rounds} round{'s' if self.rounds != 1 else ''}"
        return f"{text}; {rounds} of {self.duration:g} s after a {self.warmup:g} s warm-up"


PRESETS = {
    "full": Preset(list(SCENARIOS), None, 3, 3.0, 1.0, 5000),
    "quick": Preset(
        ["echo", "lines", "idle"],
        ["asyncore_rs", "asyncore_rs_unbatched", "pure_python"],
        1,
        2.0,
        0.5,
        1000,
        fallback=("asyncio",),
    ),
    "smoke": Preset(list(SCENARIOS), None, 1, 0.25, 0.1, 200),
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
    pure_dir: str | None = None
    fallback: tuple = ()
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


# --------------------------------------------------------------------------- pure Python


def python_version(python: str) -> tuple[int, int]:
    if python == sys.executable:
        return sys.version_info[:2]
    probe = [python, "-c", "import sys; print(*sys.version_info[:2])"]
    try:
        out = subprocess.run(probe, capture_output=True, text=True, timeout=60).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        raise SuiteError(f"cannot run {python}")


def fetch_pure_python(python: str, progress: Progress) -> tuple[str | None, str]:
    """pip-installs pyasyncore and pyasynchat into a new temporary directory.

    Returns (directory, "") or (None, why not). The caller removes the directory.
    Tried with the servers' interpreter, then with this one for that Python version.
    """
    target = tempfile.mkdtemp(prefix="asyncore-rs-bench-pure-")
    major, minor = python_version(python)
    quiet = ["--quiet", "--disable-pip-version-check", "--no-deps", "--target", target]
    attempts = [[python, "-m", "pip", "install", *quiet, *PURE_PACKAGES]]
    if python != sys.executable:
        attempts.append(
            [sys.executable, "-m", "pip", "install", *quiet, "--only-binary=:all:"]
            + ["--python-version", f"{major}.{minor}", *PURE_PACKAGES]
        )
    progress.note(
        f"fetching the pure-Python asyncore for Python {major}.{minor}: pip install "
        f"--target {target} {' '.join(PURE_PACKAGES)}"
    )
    why = ""
    for cmd in attempts:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = str(exc)
            continue
        found = all(
            (Path(target) / name / "__init__.py").is_file() for name in ("asyncore", "asynchat")
        )
        if proc.returncode == 0 and found:
            return target, ""
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        why = lines[-1] if lines else f"pip exited {proc.returncode}"
    shutil.rmtree(target, ignore_errors=True)
    return None, f"pip could not fetch {' and '.join(PURE_PACKAGES)} ({why})"


# --------------------------------------------------------------------------- servers


def server_base(params: Params) -> list[str]:
    return [params.python, "-c", SERVER_BOOT, str(SERVER_FILE)]


def server_args(key: str, params: Params) -> list[str]:
    args = ["--impl", key]
    if key == "pure_python" and params.pure_dir:
        args += ["--pure-dir", params.pure_dir]
    return args


def detect(impls: dict[str, Impl], wanted: list[str], params: Params) -> None:
    for key in wanted:
        impl = impls[key]
        cmd = [*server_base(params), *server_args(key, params), "--check"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            impl.reason = "--check timed out"
            continue
        out = proc.stdout.strip()
        if proc.returncode == 0:
            impl.available, impl.detail = True, out
            if key == "pure_python":
                impl.label = "pyasyncore" if out.startswith("pyasyncore") else "stdlib asyncore"
        elif proc.returncode == 3:
            impl.reason = out.removeprefix("unavailable: ") if out else "not installed"
        else:
            impl.reason = (proc.stderr.strip() or out or f"exit {proc.returncode}")[-300:]


def server_command(impl: Impl, scn: Scenario, params: Params) -> list[str]:
    cmd = [*server_base(params), *server_args(impl.key, params)]
    cmd += ["--port", "0", "--scenario", scn.server]
    if impl.legacy:
        cmd += ["--handler", scn.handler]
        if scn.idle:
            # select() cannot watch fds above 1023: legacy code with thousands of
            # connections calls asyncore.loop(use_poll=True). Both asyncore
            # implementations get the same call.
            cmd.append("--use-poll")
    return cmd


def read_port(proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    out = proc.stdout
    if out is None:
        raise RunError("the server's stdout is not a pipe")
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunError(f"the server did not print its port within {timeout:.0f} s")
        ready, _, _ = select.select([out], [], [], left)
        if ready:
            line = out.readline()
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


def load(port: int, server_pid: int, scn: Scenario, params: Params, **extra) -> dict:
    """One load-generator run (src/loadgen.rs) against the server on `port`."""
    from asyncore_rs._core import _loadgen_run

    idle = params.idle if scn.idle else 0
    kwargs = scn.loadgen_kwargs(idle)
    kwargs.update(warmup=params.warmup, duration=params.duration, stall_timeout=20.0)
    kwargs.update(quickack=params.quickack, server_pid=server_pid, **extra)
    try:
        return _loadgen_run(port, **kwargs)
    except RuntimeError as exc:
        raise RunError(str(exc))


def run_one(impl: Impl, scn: Scenario, params: Params) -> dict:
    idle = params.idle if scn.idle else 0
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(
            server_command(impl, scn, params),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errf,
        )
        try:
            port = read_port(proc, timeout=60)
            times_before = cpu_times()
            data = load(port, proc.pid, scn, params)
            stolen = steal_pct(times_before, cpu_times())
            if proc.poll() is not None:
                raise RunError(f"the server exited during the run (exit {proc.returncode})")
        except RunError as exc:
            stop(proc)
            errf.seek(0)
            tail = errf.read().decode(errors="replace").strip()[-1500:]
            raise RunError(f"{exc}\n--- server stderr ---\n{tail}" if tail else str(exc))
        finally:
            stop(proc)
    result = derive(data, scn, idle)
    result["steal_pct"] = stolen
    result["load_avg"] = load_avg()
    return result


def load_avg() -> float | None:
    """The 1-minute load average: other processes competing for the CPUs show here."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


STEAL_RETRIES = 2


def run_with_little_steal(impl, scn, params, progress, head) -> dict:
    """run_one(), repeated (up to STEAL_RETRIES times) while the hypervisor stole more
    than --max-steal percent of the machine's CPU time during the run: CPU time per
    request inflates then. Keeps the run with the least steal."""
    best = run_one(impl, scn, params)
    attempts = 1
    while best["steal_pct"] is not None and best["steal_pct"] > params.max_steal:
        if attempts > STEAL_RETRIES:
            break
        progress.note(f"{head} {best['steal_pct']:.0f}% steal time: run again")
        r = run_one(impl, scn, params)
        attempts += 1
        if r["steal_pct"] is None or r["steal_pct"] < best["steal_pct"]:
            best = r
    best["attempts"] = attempts
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
    delta = [b - a for a, b in zip(before, after, strict=True)]
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


# --------------------------------------------------------------------------- the suite


def check_loadgen() -> None:
    try:
        from asyncore_rs._core import _loadgen_run  # noqa: F401
    except ImportError as exc:
        raise SuiteError(
            f"the load generator (asyncore_rs._core, built on Linux only) cannot be imported: {exc}"
        )


def prepare_impls(params: Params, progress: Progress) -> tuple[dict, list, dict, str | None]:
    """Detects the implementations; fetches the pure-Python one on 3.12+.

    Returns (impls, active keys, unavailable {key: why}, temporary dir to remove).
    """
    impls = all_impls()
    wanted = list(params.impls or impls)
    fetched = None
    why_no_pure = ""
    if (
        "pure_python" in wanted
        and not params.pure_dir
        and python_version(params.python)
        >= (
            3,
            12,
        )
    ):
        fetched, why_no_pure = fetch_pure_python(params.python, progress)
        params.pure_dir = fetched
    detect(impls, wanted, params)
    if why_no_pure:
        impls["pure_python"].reason = why_no_pure
    if "pure_python" in wanted and not impls["pure_python"].available:
        extra = [k for k in params.fallback if k not in wanted]
        if extra:
            progress.note(
                f"no pure-Python asyncore to compare with: {', '.join(extra)} runs instead"
            )
            detect(impls, extra, params)
            wanted += extra
    active = [k for k in wanted if impls[k].available]
    unavailable = {k: impls[k].reason for k in wanted if not impls[k].available}
    return impls, active, unavailable, fetched


def run_suite(params: Params, progress: Progress) -> dict:
    check_loadgen()
    impls, active, unavailable, fetched = prepare_impls(params, progress)
    try:
        return run_prepared(params, progress, impls, active, unavailable)
    finally:
        if fetched:
            shutil.rmtree(fetched, ignore_errors=True)


def run_prepared(params, progress, impls, active, unavailable) -> dict:
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
                head = f"[{done + 1:>3}/{total}] round {rnd + 1}/{params.rounds} {scn.key:<9}"
                head += f" {impl.label:<22}"
                progress.running(f"{head} running{eta}")
                try:
                    r = run_with_little_steal(impl, scn, params, progress, head)
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
            "handler": scn.handler,
            "short": scn.short.format(idle=params.idle),
            "results": results,
        }
    steal = steal_pct(suite_times, cpu_times())
    per_run = [r["steal_pct"] for rs in runs.values() for r in rs if r["steal_pct"] is not None]
    loads = [r["load_avg"] for rs in runs.values() for r in rs if r.get("load_avg") is not None]
    return {
        "suite": "asyncore-rs benchmarks",
        "schema": 2,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "preset": params.preset,
        "machine": {
            **machine_info(params.python),
            "steal_pct": steal,
            "steal_pct_max_run": max(per_run) if per_run else None,
            "load_avg_median": statistics.median(loads) if loads else None,
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
    # header, key, formatter, in the docs too
    ("CPU us/unit", "cpu_us_per_unit", fmt_num, True),
    ("% of pure-Py", None, None, True),
    ("req/s", "requests_per_s", fmt_num, True),
    ("p50 us", "p50_us", fmt_num, False),
    ("p99 us", "p99_us", fmt_num, True),
    ("RSS/idle KiB", "rss_per_idle_kib", fmt_num, True),
    ("server CPU", "server_cpu_pct", lambda x: "-" if x is None else f"{x:.0f}%", False),
    ("loadgen CPU", "loadgen_cpu_pct", lambda x: "-" if x is None else f"{x:.0f}%", False),
]


def cpu_of(scn: dict, key: str) -> float | None:
    return scn["results"].get(key, {}).get("median", {}).get("cpu_us_per_unit")


def table_rows(report: dict, docs: bool = False) -> list[tuple[str, list[list[str]]]]:
    """[(scenario heading, [[implementation, cell, ...], ...]), ...]"""
    columns = [c for c in COLUMNS if c[3] or not docs]
    out = []
    for scn in report["scenarios"].values():
        base = cpu_of(scn, "pure_python")
        rows = []
        for key, res in scn["results"].items():
            label = report["implementations"][key]["label"]
            med = res.get("median")
            if med is None:
                err = res.get("errors", ["no result"])[0].splitlines()[0]
                rows.append([label, f"failed: {err}"])
                continue
            cells = [label]
            for _header, mkey, fmt, _docs in columns:
                if mkey is None:
                    cpu = med["cpu_us_per_unit"]
                    cells.append(f"{100 * cpu / base:.0f}%" if base and cpu is not None else "-")
                elif mkey == "rss_per_idle_kib" and "rss_per_idle_kib" not in med:
                    cells.append("-")
                elif fmt is not None:
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


def load_note(report: dict) -> str:
    """How busy the machine was ("" when unknown)."""
    load = report["machine"].get("load_avg_median")
    if load is None:
        return ""
    return (
        f"1-minute load average after each run: median {load:.1f} on "
        f"{report['machine']['cpus']} CPUs"
        + (" (other processes competed for the CPUs)" if load > report["machine"]["cpus"] else "")
    )


def format_table(report: dict) -> str:
    headers = ["implementation"] + [c[0] for c in COLUMNS]
    groups = table_rows(report)
    widths = [len(h) for h in headers]
    for _, rows in groups:
        for row in rows:
            if len(row) == len(headers):
                widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells):
        first = cells[0].ljust(widths[0] + 2)
        return first + "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=False))

    p = report["params"]
    m = report["machine"]
    rounds = p["rounds"]
    out = [
        f"asyncore-rs benchmarks: server CPU time per unit of work (lower is better), "
        f"median of {rounds} interleaved round{'s' if rounds != 1 else ''}, "
        f"{p['duration_s']:g} s measured after {p['warmup_s']:g} s warm-up",
        f"{m['cpu']} x{m['cpus']}, {m['system']}, Python {m['python']}, {report['date']}",
        *([steal_note(report)] if steal_note(report) else []),
        *([load_note(report)] if load_note(report) else []),
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


# --------------------------------------------------------------------------- docs


def checkout_docs() -> Path | None:
    """docs/benchmarks.rst of the source checkout this package runs from (or the cwd's)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "docs" / "conf.py").is_file() and (root / "Cargo.toml").is_file():
            return root / "docs" / "benchmarks.rst"
    return None


def minor_version(report: dict) -> str:
    return ".".join(report["machine"]["python"].split(".")[:2])


def results_dir(docs_file: Path) -> Path:
    return docs_file.parent / "bench-results"


def chart_name(report: dict) -> str:
    return f"images/benchmarks-py{minor_version(report)}.svg"


def load_reports(docs_file: Path) -> list[dict]:
    """The saved reports, oldest Python first."""
    reports = []
    for path in results_dir(docs_file).glob("py*.json"):
        reports.append(json.loads(path.read_text(encoding="utf-8")))

    def key(r):
        return tuple(int(x) for x in re.findall(r"\d+", minor_version(r)))

    return sorted(reports, key=key)


def ratio(x: float | None, y: float | None) -> str:
    return "-" if not x or not y else f"{x / y:.2f}×"


def summary_sentence(report: dict) -> str:
    """What the report says, as a sentence: asyncore-rs against pure Python and uvloop."""
    labels = {k: v["label"] for k, v in report["implementations"].items()}
    parts = []
    for key, scn in report["scenarios"].items():
        ours, pure, uv = (cpu_of(scn, k) for k in ("asyncore_rs", "pure_python", "uvloop"))
        if ours is None or not (pure or uv):
            continue
        name = scn.get("short") or scn["title"]
        if "short" not in scn and key in SCENARIOS:
            name = SCENARIOS[key].short.format(idle=scn.get("idle_connections", 0))
        cmp = [f"{ratio(ours, x)} {what}" for x, what in ((pure, "pure"), (uv, "uvloop")) if x]
        parts.append(f"{name} {', '.join(cmp)}")
    if not parts:
        return ""
    pure_label = labels.get("pure_python", "not run")
    return (
        f"On CPython {report['machine']['python']} ({report['date'][:10]}) the asyncore-rs "
        f"server's CPU time per unit of work, relative to the pure-Python asyncore "
        f'("pure": {pure_label}) and to uvloop running the same work (below 1× is '
        f"cheaper), was: {'; '.join(parts)}."
    )


def rst_table(title: str, headers: list[str], rows: list[list[str]]) -> list[str]:
    def row(cells):
        lines = []
        for i, c in enumerate(cells):
            c = "—" if c in ("", "-") else c
            lines.append(("   * - " if i == 0 else "     - ") + c)
        return lines

    out = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    out += row(headers)
    for r in rows:
        out += row(r + [""] * (len(headers) - len(r)))
    out.append("")
    return out


def rst_section(report: dict, has_chart: bool) -> list[str]:
    p = report["params"]
    m = report["machine"]
    title = f"CPython {minor_version(report)}"
    rounds = p["rounds"]
    out = [
        title,
        "-" * len(title),
        "",
        f"Measured on {report['date'][:10]} with::",
        "",
        f"    {report['command']}",
        "",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['system']}, Python {m['python']}.",
        f"Median of {rounds} interleaved round{'s' if rounds != 1 else ''}; each run",
        f"measures {p['duration_s']:g} s after a {p['warmup_s']:g} s warm-up.",
        *([steal_note(report) + "."] if steal_note(report) else []),
        *([load_note(report) + "."] if load_note(report) else []),
        "",
    ]
    if has_chart:
        out += [
            f".. image:: {chart_name(report)}",
            f"   :alt: Server CPU per unit by implementation, one panel per scenario, "
            f"CPython {minor_version(report)}",
            "   :width: 100%",
            "",
        ]
    headers = ["Implementation"] + [c[0].replace("us", "µs") for c in COLUMNS if c[3]]
    for scn_title, rows in table_rows(report, docs=True):
        out += rst_table(scn_title, headers, rows)
    out += ["Implementations:", ""]
    for key, info in report["implementations"].items():
        out.append(f"- **{info['label']}** (``{key}``): {info['detail']}")
    for key, why in report["unavailable"].items():
        out.append(f"- ``{key}``: not run ({why})")
    out.append("")
    return out


PENDING_314 = [
    "CPython 3.14",
    "------------",
    "",
    "Not measured here yet. With CPython 3.14 and this package installed for it (a",
    "version-specific wheel: ``maturin build --release -i python3.14``, then",
    "``python3.14 -m pip install target/wheels/*cp314*.whl``), from the checkout run::",
    "",
    "    python3.14 -m asyncore_rs bench --write-docs",
    "",
    "It fetches pyasyncore/pyasynchat into a temporary directory with pip (or give",
    "``--pure-dir DIR`` holding them), adds a CPython 3.14 section to this page and",
    "writes its chart (with the ``bench`` extra, matplotlib, installed).",
    "",
]


def format_rst(reports: list[dict], charts: set[str]) -> str:
    out = [
        ".. This page is written by ``python -m asyncore_rs bench --write-docs``",
        "   (asyncore_rs/_bench.py) from the reports in docs/bench-results/;",
        "   edits are overwritten the next time it runs.",
        "",
        "Benchmarks",
        "==========",
        "",
        *textwrap.wrap(" ".join(summary_sentence(r) for r in reverse_newest(reports)), 88),
        "",
        "The figure is the **server's CPU time per unit of work** (a request, a line",
        "or a connection): utime + stime of the server process over the measured",
        "window, which on a shared machine moves much less than requests per second",
        "do. Lower is better. Every server runs the same handler code in a process",
        "of its own; ``python -m asyncore_rs`` runs a short version of this. On a",
        "shared machine even this figure moves by 10-20 % from run to run: compare",
        "implementations within one section (run interleaved), not across sections.",
        "",
    ]
    newest = reports[-1]
    if chart_name(newest) in charts:
        out += [
            f".. image:: {chart_name(newest)}",
            f"   :alt: Server CPU per unit by implementation, one panel per scenario, "
            f"CPython {minor_version(newest)}",
            "   :width: 100%",
            "",
        ]
    out += [
        "The chart and the tables below were made by the command given in each",
        "section (``--write-docs`` writes this page, the JSON reports and the charts).",
        "",
        "Columns: *CPU µs/unit* is the server's CPU time per request (per line, per",
        "connection where the title says so); *% of pure-Py* is that figure relative to",
        "the pure-Python asyncore in the same scenario (lower is cheaper); *req/s* and",
        "*p99* are requests per second and per-request latency (a request is the whole",
        "100-line exchange in the line scenario, connect to close in the churn",
        "scenario); *RSS/idle* is the server's memory per idle connection. The terminal",
        "table and the JSON reports also give p50 and each process's CPU share.",
        "",
    ]
    for report in reports:
        newest_chart = report is newest
        out += rst_section(report, chart_name(report) in charts and not newest_chart)
    if not any(minor_version(r) == "3.14" for r in reports):
        out += PENDING_314
    out += HOW_MEASURED
    return "\n".join(out)


def reverse_newest(reports: list[dict]) -> list[dict]:
    return list(reversed(reports))


HOW_MEASURED = [
    "How it is measured",
    "------------------",
    "",
    "- Every server runs in a process of its own, so ``/proc/<pid>/stat`` holds its CPU",
    "  time alone. asyncore-rs and the pure-Python asyncore run the *same* handler code",
    "  (``asyncore_rs/_bench_server.py``: the Python documentation's ``EchoHandler`` on",
    "  ``dispatcher_with_send`` doing ``recv(8192)``, the same handler doing",
    "  ``self.send(self.recv(65536))`` in the scenarios that say so, and an",
    '  ``async_chat`` that pushes back each ``b"\\n"``-terminated line); uvloop and',
    "  asyncio run ``asyncio.Protocol`` servers doing the same work; the ceiling is a",
    "  minimal Rust epoll echo server. The pure-Python asyncore is CPython's own on",
    "  3.11 and the pyasyncore/pyasynchat backports (fetched by pip into a temporary",
    "  directory for the run) on 3.12 and later.",
    "- The load generator (Rust, in the extension: ``asyncore_rs._core._loadgen_run``,",
    "  one thread with the GIL released, epoll) keeps each connection closed-loop: it",
    "  sends a request, waits for the whole echo and checks every byte. After an",
    "  incomplete echo it sets ``TCP_QUICKACK``, so servers that keep Nagle's algorithm",
    "  on (asyncore does) are not held up by the client's 40 ms delayed ACK.",
    "- Scenarios: 64 B echo on 50 connections; 100 lines of 63 bytes + ``\\n`` sent at",
    "  once, waiting for all 100 echoed lines, on 10 connections; 64 B echo on 10",
    "  connections while thousands of idle connections stay open (each made one round",
    "  trip first; the asyncore servers call ``asyncore.loop(use_poll=True)`` there, as",
    "  select() cannot watch that many); 64 KiB echo on 4 connections; churn: connect,",
    "  one 64 B echo, close, 10 connections at a time.",
    "- RSS per idle connection is the server's RSS growth while the idle connections",
    "  open, divided by their number.",
    "- On loopback the kernel's TCP work is charged to the sending process, so a fast",
    "  server and the load generator use similar CPU. When the load generator is the",
    "  busier one (always with the ceiling server), req/s is its limit rather than",
    "  the server's; CPU per request holds either way.",
    "",
]


def save_report(report: dict, docs_file: Path) -> Path:
    path = results_dir(docs_file) / f"py{minor_version(report)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return path


def write_docs(docs_file: Path, progress: Progress) -> None:
    """Rewrites docs_file and the charts from every saved report."""
    from asyncore_rs import _bench_chart

    reports = load_reports(docs_file)
    if not reports:
        raise SuiteError(f"no saved reports in {results_dir(docs_file)}")
    charts = set()
    for report in reports:
        name = chart_name(report)
        why = _bench_chart.write_chart(report, docs_file.parent / name)
        if why is None:
            charts.add(name)
            progress.note(f"wrote {docs_file.parent / name}")
        elif (docs_file.parent / name).is_file():
            charts.add(name)
            progress.note(f"kept {docs_file.parent / name} ({why})")
        else:
            progress.note(f"no chart for Python {minor_version(report)}: {why}")
    docs_file.write_text(format_rst(reports, charts), encoding="utf-8")
    progress.note(f"wrote {docs_file}")


# --------------------------------------------------------------------------- CLI


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark asyncore-rs against the pure-Python asyncore, uvloop, "
        "asyncio and a Rust epoll ceiling (server CPU time per request). Without a "
        f"preset: {PRESETS['full'].describe()}.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--smoke", action="store_true", help="a tiny run: " + PRESETS["smoke"].describe()
    )
    mode.add_argument(
        "--quick",
        action="store_true",
        help="what `python -m asyncore_rs` runs: " + PRESETS["quick"].describe(),
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
        "--python", default=sys.executable, help="interpreter for the servers (default: this one)"
    )
    parser.add_argument(
        "--pure-dir",
        help="a directory holding pyasyncore and pyasynchat (pip install --target DIR); "
        "by default the bench fetches them into a temporary directory on Python 3.12+",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument(
        "--chart", type=Path, help="write a bar chart (SVG, needs matplotlib) to this file"
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="save the report under docs/bench-results/ and rewrite docs/benchmarks.rst "
        "and its charts (a source checkout)",
    )
    parser.add_argument(
        "--docs-only",
        action="store_true",
        help="run nothing: rewrite docs/benchmarks.rst and its charts from the saved reports",
    )
    parser.add_argument("--docs-file", type=Path, help=argparse.SUPPRESS)
    # The command shown in the docs when a wrapper runs this (benches/sid_bench.sh).
    parser.add_argument("--shown-command", help=argparse.SUPPRESS)
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
    preset_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    preset = PRESETS[preset_name]

    def split(text, known, what):
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in known]
        if bad or not items:
            raise SuiteError(
                f"unknown {what}: {','.join(bad) or text!r} (known: {','.join(known)})"
            )
        return items

    scenarios, impls = list(preset.scenarios), preset.impls
    if args.scenarios:
        scenarios = split(args.scenarios, SCENARIOS, "scenario")
    if args.impls:
        impls = split(args.impls, all_impls(), "implementation")
    params = Params(
        preset=preset_name,
        scenarios=scenarios,
        impls=impls,
        rounds=args.rounds if args.rounds is not None else preset.rounds,
        duration=args.duration if args.duration is not None else preset.duration,
        warmup=args.warmup if args.warmup is not None else preset.warmup,
        idle=args.idle if args.idle is not None else preset.idle,
        quickack=not args.no_quickack,
        python=args.python,
        max_steal=args.max_steal,
        pure_dir=str(Path(args.pure_dir).resolve()) if args.pure_dir else None,
        fallback=preset.fallback if not args.impls else (),
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
        elif arg in ("--docs-file", "--pure-dir", "--chart", "--shown-command"):
            skip = True
        elif not arg.startswith(
            ("--docs-file=", "--pure-dir=", "--chart=", "--shown-command=")
        ) and arg not in (
            "--quiet",
            "--json",
        ):
            out.append(arg)
    return out


def docs_file_from(args: argparse.Namespace) -> Path:
    docs_file = args.docs_file or checkout_docs()
    if docs_file is None:
        raise SuiteError(
            "--write-docs and --docs-only need a source checkout of asyncore-rs (run from "
            "its root directory)"
        )
    return docs_file


def main(argv: list[str] | None = None, prog: str = "python -m asyncore_rs bench") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    progress = Progress(quiet=args.quiet)
    try:
        if args.docs_only:
            write_docs(docs_file_from(args), progress)
            return 0
        params = params_from(args)
        docs_file = docs_file_from(args) if args.write_docs else None
        progress.note(
            f"{prog}: {params.preset} run, {len(params.scenarios)} scenario(s), "
            f"{params.rounds} round(s) of {params.duration:g} s (+{params.warmup:g} s warm-up)"
        )
        report = run_suite(params, progress)
        command = args.shown_command or " ".join([prog, *map(shlex.quote, shown_args(argv))])
        report["command"] = command
        table = format_table(report)
        if args.json:
            progress.note("\n" + table)
            print(json.dumps(report, indent=1))
        else:
            print(table)
        if args.chart:
            from asyncore_rs import _bench_chart

            why = _bench_chart.write_chart(report, args.chart)
            progress.note(f"wrote {args.chart}" if why is None else f"no chart: {why}")
        if docs_file is not None:
            progress.note(f"saved {save_report(report, docs_file)}")
            write_docs(docs_file, progress)
    except SuiteError as exc:
        progress.note(f"{prog}: {exc}")
        return 2
    except KeyboardInterrupt:
        progress.note(f"{prog}: interrupted")
        return 130
    for err in report["errors"]:
        progress.note(f"FAILED {err['scenario']} / {err['impl']}:\n{err['error']}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
