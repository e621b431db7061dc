"""The numbers and checkable claims in README.md and docs/ match the code and the tests.

Each figure a page states about a test file (how many cases, clients, bytes...) is read
from the page and compared with what the test collects or the constant it runs with, so
changing a test without its description fails here. Figures that are measurements
(timings, benchmark tables) are not checked here: they are written by the command that
measures them, and the pages name that command.
"""

import ast
import importlib.util
import inspect
import re
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _impl import asynchat
from _impl import asyncore as asyncore_rs_asyncore
from _reference import _ref_asynchat

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def page(name):
    return (ROOT / name).read_text(encoding="utf-8")


def figure(text, pattern):
    """The number(s) `pattern` captures in `text` (exactly one match)."""
    found = re.findall(pattern, text, flags=re.DOTALL)
    assert len(found) == 1, f"{pattern!r} matched {len(found)} times"
    groups = found[0] if isinstance(found[0], tuple) else (found[0],)
    return [float(g.replace(",", "")) if "." in g else int(g.replace(",", "")) for g in groups]


@pytest.fixture(scope="module")
def collected():
    """Test ids per (file, function) as pytest collects them for the reliability files."""
    files = sorted(str(p.relative_to(ROOT)) for p in TESTS.glob("test_reliability_*.py"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = Counter()
    for line in proc.stdout.splitlines():
        if "::" not in line:
            continue
        path, rest = line.split("::", 1)
        counts[(Path(path).name, rest.split("[", 1)[0])] += 1
        counts[(Path(path).name, None)] += 1
    assert counts, proc.stdout
    return counts


def per_file(collected, name):
    return collected[(name, None)]


def test_reliability_bad_input_case_count(collected):
    (n,) = figure(page("docs/reliability.rst"), r"- (\d+) cases\.")
    assert n == collected[("test_reliability_bad_input.py", "test_same_outcome_as_cpython")]


def test_reliability_run_counts(collected):
    text = page("docs/reliability.rst")
    (n,) = figure(text, r"- (\d+) runs\. One of them")
    assert n == per_file(collected, "test_reliability_map_mutation.py")
    a, b, c, d, e, f, total = figure(
        text, r"- (\d) × (\d) \+ (\d) \+ (\d) × (\d) \+ (\d) = (\d+) runs, 4 channels each"
    )
    errors = "test_reliability_handler_errors.py"
    assert a * b + c + d * e + f == total == per_file(collected, errors)
    assert (a, c, d, f) == (
        collected[(errors, "test_exception_reaches_handle_error")] // 2,
        collected[(errors, "test_default_handle_error_closes_only_that_channel")],
        collected[(errors, "test_reraised_exception_leaves_loop_and_loop_resumes")] // 2,
        collected[(errors, "test_exception_in_readable_propagates_out_of_loop")],
    )
    (n,) = figure(text, r"- (\d+) scenarios × 2 modes, \d+ bystanders each")
    assert n * 2 == collected[("test_reliability_disconnects.py", "test_peer_disconnect")]


def test_reliability_figures_are_the_tests_constants():
    text = page("docs/reliability.rst")
    import test_reliability_churn as churn
    import test_reliability_disconnects as disconnects
    import test_reliability_integrity as integrity
    import test_reliability_load as load
    import test_reliability_producers as producers
    import test_reliability_threads as threads

    threads_n, mib, each, loops_n, mib2, per_mode, total, checked = figure(
        text,
        r"- (\d+) thread clients × (\d+) MiB = (\d+) MiB each way per mode, (\d+) in-loop clients"
        r" × ([\d.]+) MiB =\s+(\d+) MiB per mode: (\d+) MiB sent and (\d+) MiB checked in all",
    )
    assert (threads_n, loops_n) == (integrity.THREAD_CLIENTS, integrity.LOOP_CLIENTS)
    assert mib << 20 == integrity.BYTES_PER_CLIENT
    assert each == threads_n * mib and per_mode == loops_n * mib2
    assert total == checked == 2 * (each + per_mode)
    # The in-loop clients send half as much each (the test says so; check it does).
    src = (TESTS / "test_reliability_integrity.py").read_text(encoding="utf-8")
    assert "BYTES_PER_CLIENT // 2" in src and mib2 == mib / 2

    clients, mib, modes, total = figure(
        text, r"- (\d+) clients × (\d+) MiB × (\d+) modes = (\d+) MiB"
    )
    assert (clients, mib << 20) == (producers.CLIENTS, producers.BYTES_PER_CLIENT)
    assert clients * mib * modes == total

    (big,) = figure(text, r"RST while the\s+server's (\d+) MiB echo is queued")
    assert big << 20 == disconnects.BIG
    scenarios, bystanders = figure(text, r"- (\d+) scenarios × 2 modes, (\d+) bystanders each")
    assert (scenarios, bystanders) == (len(disconnects.SCENARIOS), disconnects.GOOD_CLIENTS)

    in_flight, warmup = figure(
        text, r"In-loop clients, (\d+) in flight.*?After a (\d+)-cycle warm-up"
    )
    (rss,) = figure(text, r"grown by less than (\d+) MiB")
    cycles, channels = figure(text, r"- (\d+) cycles \((\d+) channels\) × 2 modes")
    assert (in_flight, warmup, rss << 20, cycles) == (
        churn.IN_FLIGHT,
        churn.WARMUP,
        churn.RSS_BOUND,
        churn.CYCLES,
    )
    assert channels == 2 * cycles

    connections, channels = figure(text, r"- (\d+) connections = (\d+) channels in one map")
    assert connections == load.CONNECTIONS and channels == 2 * connections + 1

    loops_n, clients, rounds = figure(text, r"- (\d+) loops × (\d+) clients × (\d+) round trips")
    assert (loops_n, clients, rounds) == (threads.LOOPS, threads.CLIENTS_PER_LOOP, threads.ROUNDS)


def test_fuzz_run_length_is_the_tests():
    (seconds,) = figure(page("docs/reliability.rst"), r"for (\d+) seconds with a fixed seed")
    src = (TESTS / "test_reliability_fuzz.py").read_text(encoding="utf-8")
    assert f'"--seconds", "{seconds}"' in src


def test_ac_in_buffer_type_error_claim():
    # migration.rst: ours refuses a str ac_in_buffer with TypeError at once; CPython stores
    # it and fails in handle_read(), also with a TypeError (another message).
    text = " ".join(page("docs/migration.rst").split())
    assert "CPython stores anything and fails later, in ``handle_read()``, also with a" in text
    a, b = socket.socketpair()
    ours = asynchat.async_chat(a, map={})
    ref = _ref_asynchat.async_chat(b, map={})
    try:
        with pytest.raises(TypeError) as ours_exc:
            ours.ac_in_buffer = "text"
        ref.ac_in_buffer = "text"
        ref.set_terminator(b"\n")
        a.send(b"x\n")
        with pytest.raises(TypeError) as ref_exc:
            ref.handle_read()
        assert str(ours_exc.value) != str(ref_exc.value)
    finally:
        ours.close()
        ref.close()


def test_readme_performance_table_is_the_benchmark_pages():
    # README.md's table is copied from docs/benchmarks.rst (which the benchmark command
    # writes) by scripts/readme_numbers.py; it must be what the script writes now.
    spec = importlib.util.spec_from_file_location(
        "readme_numbers", ROOT / "scripts" / "readme_numbers.py"
    )
    readme_numbers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme_numbers)
    readme = page("README.md")
    assert readme_numbers.render(readme, page("docs/benchmarks.rst")) == readme, (
        "README.md's performance table is stale: run python scripts/readme_numbers.py"
    )
    table = readme.split(readme_numbers.BEGIN, 1)[1].split(readme_numbers.END, 1)[0]
    assert table.count("\n| ") >= 4 and "µs" in table


def test_readme_example_prints_what_it_says(tmp_path):
    readme = page("README.md")
    section = readme.split("## A 30-second example", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (promised,) = re.findall(r"it prints `([^`]+)` and exits", section)
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == promised


def _documented_signatures(name):
    """(class or None, name, parameter text) for every signature in docs/api/<name>.rst."""
    found = []
    cls = None
    lines = page(f"docs/api/{name}.rst").splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^( *)\.\. (function|method|class|exception):: (.*)$", line)
        if not m:
            continue
        indent, kind, first = m.groups()
        if not indent:
            cls = None
        sigs = [first]
        # Continuation signatures line up under the first one.
        col = len(indent) + len(f".. {kind}:: ")
        for more in lines[i + 1 :]:
            if more.startswith(" " * col) and more.strip() and more[col] != " ":
                sigs.append(more.strip())
            else:
                break
        for sig in sigs:
            sm = re.fullmatch(r"(\w+)(?:\((.*)\))?", sig)
            assert sm, sig
            owner = cls if kind == "method" else None
            found.append((owner, sm.group(1), sm.group(2)))
            if kind in ("class", "exception") and not indent:
                cls = sm.group(1)
    return found


@pytest.mark.parametrize("name", ["asyncore", "asynchat"])
def test_api_pages_show_the_runtime_signatures(name):
    # Every signature the API pages show is the runtime's (and so CPython's, which
    # tests/test_signatures.py checks): names, order, kinds and default values.
    ours = {"asyncore": asyncore_rs_asyncore, "asynchat": asynchat}[name]
    checked = 0
    for owner, attr, params in _documented_signatures(name):
        obj = getattr(getattr(ours, owner), attr) if owner else getattr(ours, attr)
        if params is None:  # a class shown without parameters (SocketMap, ExitNow)
            continue
        sig = inspect.signature(obj)
        got = list(sig.parameters.values())
        if owner:
            got = got[1:]  # self
        tree = ast.parse(f"def f({params}): pass").body[0].args
        names = [a.arg for a in tree.args]
        defaults = [None] * (len(names) - len(tree.defaults)) + tree.defaults
        where = f"{owner + '.' if owner else ''}{attr}({params})"
        assert [p.name for p in got] == names, where
        for p, default in zip(got, defaults, strict=True):
            if default is None:
                assert p.default is inspect.Parameter.empty, where
            else:
                value = eval(ast.unparse(default), {"socket": socket})
                assert (value, type(value)) == (p.default, type(p.default)), where
        checked += 1
    assert checked > 20
