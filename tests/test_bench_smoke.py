"""The benchmark suite's smoke mode runs end to end, so the suite cannot rot unnoticed.

One subprocess runs ``python -m asyncore_rs bench --smoke --json`` (``benches/bench.py``
directly when testing the stdlib implementation, where asyncore_rs may not be importable):
every scenario, a fraction of a second per implementation, on every implementation that is
installed. The checks are about the report's shape and that every figure is there and
positive; there are no timing assertions (the numbers are not compared with anything).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _impl import IMPL

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benches" / "bench.py"
LOADGEN = ROOT / "benches" / "loadgen" / "target" / "release" / "loadgen"
SCENARIOS = {"echo", "lines", "idle", "bulk", "churn"}
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

pytestmark = pytest.mark.timeout(1000)


def _cargo_available():
    return shutil.which("cargo") or (Path.home() / ".cargo" / "bin" / "cargo").exists()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not BENCH.exists():
        pytest.skip("benches/ is not here (not a source checkout)")
    if not LOADGEN.exists() and not _cargo_available():
        pytest.skip("the load generator is not built and cargo is not available")
    docs = tmp_path_factory.mktemp("bench") / "benchmarks.rst"
    if IMPL == "rs":
        cmd = [sys.executable, "-m", "asyncore_rs", "bench"]
    else:
        cmd = [sys.executable, str(BENCH)]
    cmd += ["--smoke", "--json", "--quiet", "--write-docs", "--docs-file", str(docs)]
    # The first run builds the load generator (cargo, release mode), hence the margin.
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout), docs


def test_smoke_report_covers_every_scenario(smoke):
    report, _ = smoke
    assert set(report["scenarios"]) == SCENARIOS
    assert report["preset"] == "smoke"
    assert report["errors"] == []
    for key, scenario in report["scenarios"].items():
        assert set(scenario["results"]) == set(report["implementations"]), key


def test_smoke_ran_the_legacy_implementations(smoke):
    report, _ = smoke
    if IMPL == "rs":
        assert "asyncore_rs" in report["implementations"], report["unavailable"]
    if sys.version_info < (3, 12):
        assert "stdlib" in report["implementations"], report["unavailable"]
    assert "ceiling" in report["implementations"], report["unavailable"]


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


def test_smoke_writes_the_docs_table(smoke):
    report, docs = smoke
    text = docs.read_text(encoding="utf-8")
    assert text.startswith(".. This page is written by")
    assert "--smoke" in text
    assert report["date"][:10] in text
    for scenario in report["scenarios"].values():
        assert scenario["title"] in text
    for info in report["implementations"].values():
        assert info["label"] in text


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
    if not BENCH.exists():
        pytest.skip("benches/ is not here (not a source checkout)")
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench
    finally:
        sys.path.remove(str(BENCH.parent))
    results = iter(steals)
    monkeypatch.setattr(bench, "run_one", lambda *a: {"steal_pct": next(results)})
    params = bench.Params("full", ["echo"], None, 1, 1.0, 0.1, 1, max_steal=5.0)
    best = bench.run_with_little_steal(None, None, params, {}, bench.Progress(quiet=True), "")
    assert best["steal_pct"] == kept
    assert best["attempts"] == attempts
