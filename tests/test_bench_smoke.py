"""The benchmark suite runs end to end, from the package alone, so it cannot rot unnoticed.

One subprocess runs ``python -m asyncore_rs bench --smoke --json`` (every scenario, a
fraction of a second per implementation, on every implementation that is available).
The checks are about the report's shape and that every figure is there and positive;
there are no timing assertions (the numbers are not compared with anything). Another
runs ``python -m asyncore_rs`` from a copy of the installed package outside the
checkout, as a user of the wheel would. The load generator and the ceiling server
(src/loadgen.rs) are tested directly against small loopback servers.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("asyncore_rs._core")
from asyncore_rs import _bench, _bench_server  # noqa: E402
from asyncore_rs._core import _loadgen_run  # noqa: E402

SCENARIOS = {"echo", "echo65536", "lines", "echo10", "idle", "bulk", "bulk65536", "churn"}
POSITIVE = [
    "requests",
    "units",
    "elapsed_s",
    "requests_per_s",
    "units_per_s",
    "p50_us",
    "p99_us",
    "cpu_us_per_unit_ns_clock",
    "loadgen_cpu_us_per_unit",
    "rss_kib_end",
]

pytestmark = pytest.mark.timeout(900)


def _run(args, **kw):
    kw.setdefault("timeout", 600)
    return subprocess.run(
        [sys.executable, "-m", "asyncore_rs", *args], capture_output=True, text=True, **kw
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    docs = tmp_path_factory.mktemp("bench") / "benchmarks.rst"
    args = ["bench", "--smoke", "--json", "--quiet", "--write-docs", "--docs-file", str(docs)]
    proc = _run(args, timeout=800)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout), docs


def test_smoke_report_covers_every_scenario(smoke):
    report, _ = smoke
    assert set(report["scenarios"]) == SCENARIOS
    assert report["preset"] == "smoke"
    assert report["errors"] == []
    for key, scenario in report["scenarios"].items():
        assert set(scenario["results"]) == set(report["implementations"]), key
    assert report["scenarios"]["echo"]["handler"] == "recv8192"
    assert report["scenarios"]["echo65536"]["handler"] == "recv65536"
    assert report["scenarios"]["bulk65536"]["handler"] == "recv65536"


def test_smoke_ran_the_legacy_implementations(smoke):
    report, _ = smoke
    assert "asyncore_rs" in report["implementations"], report["unavailable"]
    if sys.version_info < (3, 12):
        assert "pure_python" in report["implementations"], report["unavailable"]
        assert "standard library" in report["implementations"]["pure_python"]["detail"]
    elif "pure_python" in report["implementations"]:
        assert report["implementations"]["pure_python"]["detail"].startswith("pyasyncore")
    else:
        assert "pip could not fetch" in report["unavailable"]["pure_python"]
    assert "ceiling" in report["implementations"], report["unavailable"]
    assert "asyncio" in report["implementations"], report["unavailable"]


def test_smoke_figures_are_positive(smoke):
    report, _ = smoke
    for key, scenario in report["scenarios"].items():
        for impl, result in scenario["results"].items():
            where = f"{key}/{impl}"
            assert "errors" not in result, (where, result.get("errors"))
            assert len(result["runs"]) == 1, where
            median = result["median"]
            for name in POSITIVE:
                assert median[name] > 0, (where, name, median[name])
            # Clock ticks (1/100 s) over a quarter of a second can round to zero for the
            # lightest servers; the nanosecond process clock above cannot.
            assert median["cpu_us_per_unit"] >= 0, where
            assert median["server_cpu_pct"] >= 0, where


def test_smoke_lines_count_every_line(smoke):
    report, _ = smoke
    lines = report["scenarios"]["lines"]
    assert lines["unit"] == "line"
    for impl, result in lines["results"].items():
        run = result["runs"][0]
        assert run["units"] == 100 * run["requests"], impl


def test_smoke_idle_scenario_measures_rss_per_idle_connection(smoke):
    report, _ = smoke
    idle = report["scenarios"]["idle"]
    assert idle["idle_connections"] == report["params"]["idle"] > 0
    for impl, result in idle["results"].items():
        median = result["median"]
        assert median["rss_kib_before_idle"] > 0, impl
        assert median["rss_kib_after_idle"] > 0, impl
        assert isinstance(median["rss_per_idle_kib"], float), impl


def test_smoke_writes_the_docs_page_report_and_chart(smoke):
    report, docs = smoke
    text = docs.read_text(encoding="utf-8")
    assert text.startswith(".. This page is written by")
    assert "--smoke" in text
    assert report["date"][:10] in text
    for scenario in report["scenarios"].values():
        assert scenario["title"] in text
    for info in report["implementations"].values():
        assert info["label"] in text
    minor = "%d.%d" % sys.version_info[:2]
    saved = docs.parent / "bench-results" / f"py{minor}.json"
    assert json.loads(saved.read_text(encoding="utf-8"))["date"] == report["date"]
    # The summary paragraph comes before the first section.
    head = text.split(f"CPython {minor}\n---")[0]
    assert f"On CPython {sys.version.split()[0]}" in head
    chart = docs.parent / "images" / f"benchmarks-py{minor}.svg"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not chart.exists()
    else:
        assert f".. image:: images/benchmarks-py{minor}.svg" in head
        svg = chart.read_text(encoding="utf-8")
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
        for scenario in report["scenarios"].values():
            assert scenario["title"].split(",")[0] in svg


def test_smoke_reports_hypervisor_steal_time(smoke):
    """/proc/stat's steal column, read around every run (noise on shared machines)."""
    report, docs = smoke
    machine = report["machine"]
    assert 0.0 <= machine["steal_pct"] <= 100.0
    runs = [
        r for s in report["scenarios"].values() for x in s["results"].values() for r in x["runs"]
    ]
    assert all(0.0 <= r["steal_pct"] <= 100.0 for r in runs)
    assert machine["steal_pct_max_run"] == max(r["steal_pct"] for r in runs)
    assert "Hypervisor steal time" in docs.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "steals, kept, attempts",
    [
        ([1.0], 1.0, 1),  # little steal: one run
        ([30.0, 2.0], 2.0, 2),  # too much, then fine
        ([30.0, 10.0, 20.0], 10.0, 3),  # never fine: the least of three
        ([None], None, 1),  # no /proc/stat: one run
    ],
)
def test_runs_with_much_steal_time_are_repeated(steals, kept, attempts, monkeypatch):
    results = iter(steals)
    monkeypatch.setattr(_bench, "run_one", lambda *a: {"steal_pct": next(results)})
    params = _bench.Params("full", ["echo"], None, 1, 1.0, 0.1, 1, max_steal=5.0)
    best = _bench.run_with_little_steal(None, None, params, _bench.Progress(quiet=True), "")
    assert best["steal_pct"] == kept
    assert best["attempts"] == attempts


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"], ["bench", "--help"]])
def test_every_subcommand_has_help(args):
    proc = _run(args, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()
    assert proc.stderr == ""


def test_quick_help_names_exactly_what_it_runs():
    proc = _run(["bench", "--help"], timeout=60)
    text = " ".join(proc.stdout.split())
    quick = _bench.PRESETS["quick"]
    described = " ".join(quick.describe().split())
    assert described in text
    for name in quick.scenarios + quick.impls:
        assert name in described
    for name in set(_bench.SCENARIOS) - set(quick.scenarios):
        assert f" {name}," not in described and f" {name};" not in described


def test_unknown_command_fails():
    proc = _run(["nope"], timeout=60)
    assert proc.returncode == 2
    assert "unknown command" in proc.stderr


def test_main_runs_from_an_installed_copy_outside_the_checkout(tmp_path):
    """`python -m asyncore_rs` as from a wheel: the package alone (compiled core
    included), no checkout, no benches/, no cargo; demo and table on stdout."""
    import asyncore_rs

    site = tmp_path / "site"
    site.mkdir()
    pkg = Path(asyncore_rs.__file__).parent
    shutil.copytree(pkg, site / "asyncore_rs", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    args = ["--duration", "0.2", "--warmup", "0.05", "--idle", "50", "--quiet"]
    probe = [sys.executable, "-c", "import asyncore_rs; print(asyncore_rs.__file__)"]
    where = subprocess.run(probe, capture_output=True, text=True, cwd=work, env=env, timeout=60)
    assert where.stdout.strip() == str(site / "asyncore_rs" / "__init__.py")
    proc = _run(args, cwd=work, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    out = proc.stdout
    assert "echo demo:" in out and "got the same bytes back" in out
    assert "asyncore-rs benchmarks: server CPU time per unit" in out
    for title in ("64 B echo, 50 connections", "100 lines of 64 B", "10 active + 50 idle"):
        assert title in out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert "asyncore-rs" in rows
    assert "stdlib" in rows or "pyasyncore" in rows or "asyncio" in rows, out
    assert "failed" not in out


# --------------------------------------------------------------------------- the tools


class _Server:
    """A loopback server thread: `handle(conn)` per connection, until closed."""

    def __init__(self, handle):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(10)
        try:
            while True:
                conn, _ = self.sock.accept()
                threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
        except OSError:
            pass

    def close(self):
        self.sock.close()
        self.thread.join(timeout=10)


def _echo(conn, mangle=lambda b: b):
    conn.settimeout(10)
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(mangle(data))
        except OSError:
            pass


def _close_after_the_request(conn):
    with conn:
        conn.settimeout(10)
        conn.recv(65536)


def test_loadgen_counts_requests_against_an_echo_server():
    server = _Server(_echo)
    try:
        r = _loadgen_run(server.port, conns=2, size=100, warmup=0.0, duration=30.0, requests=50)
    finally:
        server.close()
    assert r["requests"] >= 50 and r["units"] == r["requests"]
    assert r["request_bytes"] == 100
    assert 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]
    assert r["server_cpu_ticks"] is None  # no server_pid given


@pytest.mark.parametrize(
    "handle, message",
    [
        (lambda c: _echo(c, lambda b: b.upper()), "echo mismatch"),
        (lambda c: _echo(c, lambda b: b + b"!"), "more than"),
        (_close_after_the_request, "server closed"),
    ],
)
def test_loadgen_reports_a_misbehaving_server(handle, message):
    server = _Server(handle)
    try:
        with pytest.raises(RuntimeError, match=message):
            _loadgen_run(server.port, conns=1, warmup=0.0, duration=5.0, stall_timeout=5.0)
    finally:
        server.close()


def test_loadgen_refuses_bad_arguments():
    with pytest.raises(TypeError, match="unexpected keyword"):
        _loadgen_run(1, nope=1)
    with pytest.raises(ValueError):
        _loadgen_run(0)
    with pytest.raises(ValueError):
        _loadgen_run(1, mode="nope")
    with pytest.raises(ValueError):
        _loadgen_run(1, duration=float("nan"))
    with pytest.raises(ValueError):
        _loadgen_run(1, host="localhost")


@pytest.mark.parametrize("scenario, mode", [("echo", "echo"), ("lines", "lines")])
def test_ceiling_server_echoes(scenario, mode):
    cmd = [*_bench.server_base(_bench.Params("x", [], None, 1, 1, 0, 1))]
    cmd += ["--impl", "ceiling", "--scenario", scenario]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        port = _bench.read_port(proc, timeout=60)
        r = _loadgen_run(port, mode=mode, conns=3, lines=5, warmup=0.0, duration=30.0, requests=20)
        assert r["requests"] >= 20
        assert proc.poll() is None
    finally:
        _bench.stop(proc)


@pytest.mark.parametrize("handler", ["recv8192", "recv65536"])
def test_legacy_echo_handlers_echo(handler):
    """Both echo handler shapes, on the implementation under test."""
    from _impl import asynchat, asyncore

    server = _bench_server.make_server(asyncore, asynchat, "echo", handler=handler)
    port = server.socket.getsockname()[1]
    done = threading.Event()
    result = {}

    def client():
        try:
            result["r"] = _loadgen_run(
                port, conns=2, size=20000, warmup=0.0, duration=30.0, requests=20
            )
        except Exception as exc:  # reported below
            result["error"] = exc
        done.set()

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    for _ in range(3000):
        if done.is_set():
            break
        asyncore.loop(timeout=0.01, count=1)
    asyncore.close_all()
    thread.join(timeout=10)
    assert "error" not in result, result.get("error")
    assert result["r"]["requests"] >= 20


def test_legacy_handlers_refuse_an_unknown_shape():
    from _impl import asynchat, asyncore

    with pytest.raises(ValueError, match="unknown handler"):
        _bench_server.make_server(asyncore, asynchat, "echo", handler="recv1")


def test_docs_page_names_the_314_command_until_a_314_report_exists():
    report = {
        "machine": {"python": "3.11.7", "cpu": "cpu", "cpus": 2, "system": "Linux"},
        "date": "2026-12-01T00:00:00+00:00",
        "command": "python -m asyncore_rs bench --write-docs",
        "params": {"rounds": 1, "duration_s": 1, "warmup_s": 0, "idle": 10},
        "implementations": {
            "asyncore_rs": {"label": "asyncore-rs", "detail": "d"},
            "pure_python": {"label": "stdlib asyncore", "detail": "d"},
        },
        "unavailable": {},
        "scenarios": {
            "echo": {
                "title": "64 B echo",
                "unit": "request",
                "results": {
                    "asyncore_rs": {"median": {"cpu_us_per_unit": 3.0}},
                    "pure_python": {"median": {"cpu_us_per_unit": 4.0}},
                },
            }
        },
    }
    text = _bench.format_rst([report], set())
    assert "python3.14 -m asyncore_rs bench --write-docs" in text
    assert '("pure": stdlib asyncore)' in " ".join(text.split())
    assert "was: 64 B echo 0.75× pure." in " ".join(text.split())
    as_314 = json.loads(json.dumps(report))
    as_314["machine"]["python"] = "3.14.0"
    text = _bench.format_rst([report, as_314], set())
    assert "python3.14 -m asyncore_rs bench --write-docs" not in text
    assert text.index("On CPython 3.14.0") < text.index("On CPython 3.11.7")


def test_main_passes_options_to_the_quick_bench_only():
    proc = _run(["--smoke"], timeout=60)
    assert proc.returncode == 2
    assert "bench --quick" in proc.stderr
