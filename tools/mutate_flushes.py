"""Mutation check of the hot path's guards: async_chat's output batching
(src/output_batch.rs), the class answers cached by version tag, the watched
instance dicts and the direct calls of the handler's methods.

Removes each flush point and each guard in turn, rebuilds the extension in a
scratch copy of the tree, and runs the batching, shadowing and differential
tests: every mutation must make a test fail. Not run by the test command (one
release build per mutation); run it after changing that code, with CPython
3.12+ for the dict-watcher entries (3.11 has no watchers and skips them):

    python tools/mutate_flushes.py [NAME ...]

It prints one line per mutation: CAUGHT (with the first failing test) or
NOT CAUGHT. Exit status 1 if any mutation was not caught.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (file, text that must occur exactly once, replacement). The copy of a
# bytearray or memoryview at the virtual send has no entry: the queue holds
# bytes objects only, so the type system is that guard.
MUTATIONS = {
    "scan-end flush": (
        "src/async_chat.rs",
        "    let flushed = output_batch::flush(slf);\n",
        "    let flushed: PyResult<()> = Ok(());\n",
    ),
    "dispatch-end flush (True)": (
        "src/output_batch.rs",
        "let r = flush(ch.bind(py));",
        "let r: PyResult<()> = {\n            drop(ch);\n            Ok(())\n        };",
    ),
    "dispatcher.send flush": (
        "src/dispatcher.rs",
        "    // Bytes async_chat queued were sent before this call, under CPython.\n"
        "    output_batch::flush(slf)?;\n",
        "",
    ),
    "socket getter flush": (
        "src/dispatcher.rs",
        "    fn get_socket(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {\n"
        "        output_batch::flush(slf)?;\n",
        "    fn get_socket(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {\n",
    ),
    "socket setter flush": (
        "src/dispatcher.rs",
        "        // Batched output belongs to the old socket (STARTTLS swaps it).\n"
        "        output_batch::flush(slf)?;\n",
        "",
    ),
    "close flush": (
        "src/dispatcher.rs",
        "        output_batch::flush(slf)?;\n"
        "        slf.get().forget_socket();\n"
        "        set_connected(slf, false)?;",
        "        slf.get().forget_socket();\n        set_connected(slf, false)?;",
    ),
    "flush before a None": (
        "src/async_chat.rs",
        "    if !output_batch::has_queued(slf) {\n        return Ok(true);\n    }",
        "    if true {\n        return Ok(true);\n    }",
    ),
    "flush before a Python send": (
        "src/async_chat.rs",
        "        // A Python send() writes after what was queued before it.\n"
        "        output_batch::flush(slf)?;\n",
        "",
    ),
    "unsent tail back to the fifo": (
        "src/output_batch.rs",
        "            put_back(slf, queue.items, sent)?;\n",
        "            drop(queue.items);\n",
    ),
    "guard: socket referenced elsewhere": (
        "src/output_batch.rs",
        "Py_REFCNT(sock.as_ptr()) } != 1 {",
        "Py_REFCNT(sock.as_ptr()) } == 0 {",
    ),
    "guard: socket seen open": (
        "src/output_batch.rs",
        "    if plain_fd(slf.py(), &sock).is_none() {\n        return false;\n    }\n    slf.get()",
        "    slf.get()",
    ),
    "guard: socket getter forgets the check": (
        "src/channel.rs",
        "        slf.get().forget_socket();\n        field(slf",
        "        field(slf",
    ),
    "guard: queue limits": (
        "src/channel.rs",
        "            .is_none_or(|q| q.items.len() < MAX_IOV && q.bytes + n <= MAX_BYTES)",
        "            .is_none_or(|_| n < usize::MAX)",
    ),
    # The one-step push (tests/test_lines_fastpath.py).
    "one-step push: fifo empty": (
        "src/output_batch.rs",
        "                    .is_ok_and(|f| f.get().is_empty(py))\n",
        "                    .is_ok()\n",
    ),
    "one-step push: connected": (
        "src/output_batch.rs",
        "        st.connected\n            && st.producer_fifo",
        "        st.producer_fifo",
    ),
    "one-step push: our send": (
        "src/async_chat.rs",
        "&& has_builtin(slf, names::send(py), names::send(py))\n",
        "",
    ),
    "one-step push: class send ours": (
        "src/async_chat.rs",
        "\n            || !class_has_builtin(&ty, send, send)\n",
        "\n",
    ),
    "one-step push: class initiate_send ours": (
        "src/async_chat.rs",
        "if !class_has_builtin(&ty, initiate_send, names::_ac_initiate_send(py))\n            ||",
        "if",
    ),
    "one-step push: instance dict lacks the names": (
        "src/async_chat.rs",
        "crate::channel::instance_dict_lacks(slf, &[initiate_send, send, size]).then_some(n)",
        "Some(n)",
    ),
    "one-step push: scan takes only exact str keys of other hashes": (
        "src/calls.rs",
        "            if h == -1 || hashes.contains(&h) {",
        "            if h == -1 {",
    ),
    "one-step push: class ac_out_buffer_size": (
        "src/async_chat.rs",
        ".is_some_and(|size| bytes.as_bytes().len() <= size)",
        ".is_some()",
    ),
    "one-step push: our initiate_send": (
        "src/async_chat.rs",
        "if let (true, true, Some(size), Some(bytes)) = (ours, plain, as_size(&sabs), candidate) {",
        "if let (_, true, Some(size), Some(bytes)) = (ours, plain, as_size(&sabs), candidate) {",
    ),
    "one-step push: ac_out_buffer_size": (
        "src/async_chat.rs",
        "        if bytes.as_bytes().len() <= size\n            && has_builtin",
        "        if has_builtin",
    ),
    # The class answers cached by version tag (src/type_cache.rs): a cache
    # that never sees the class change (tests/test_class_changes.py).
    "type cache: version tag": (
        "src/type_cache.rs",
        "    if tag == 0 {\n        return compute();\n    }\n",
        "    if tag == 0 {\n        return compute();\n    }\n    let tag = 1u32;\n",
    ),
    # Instance dicts watched for shadowing names (src/dict_watch.rs, 3.12+:
    # on 3.11 these four are reported as skipped), the handler's methods
    # called as the functions CPython would find (src/handler_calls.rs), and
    # the terminator read from the instance dict (tests/test_instance_shadowing.py).
    "watcher: marks a dict on a shadowing key": (
        "src/dict_watch.rs",
        "            EVENT_ADDED if key.is_null() || may_be_shadowable(key) => {",
        "            EVENT_ADDED if false => {",
        # The start-up probe would turn the watcher off: that guard too.
        "        plain_key_kept && shadow_caught && !is_watched(&d, id)",
        "        plain_key_kept",
    ),
    "watcher: marks a dict on a clone": (
        "src/dict_watch.rs",
        "            EVENT_CLONED => {\n"
        "                edit_marks(|m| m.insert(addr));\n"
        "            }",
        "            EVENT_CLONED => {}",
    ),
    "watcher: a marked dict is not vouched for": (
        "src/dict_watch.rs",
        "        if is_watched(dict, id) && MARKED_COUNT.load(Ordering::Relaxed) == 0 {",
        "        if is_watched(dict, id) {",
        "        is_watched(dict, id) && !take_mark_if_any(dict, id)",
        "        is_watched(dict, id)",
        "        plain_key_kept && shadow_caught && !is_watched(&d, id)",
        "        plain_key_kept",
    ),
    "watcher: a key that is not an exact str may shadow": (
        "src/dict_watch.rs",
        "        ffi::PyUnicode_CheckExact(key) == 0 || in_set(str_hash(key))",
        "        ffi::PyUnicode_CheckExact(key) != 0 && in_set(str_hash(key))",
    ),
    "watcher: scans a dict before watching it": (
        "src/dict_watch.rs",
        "                if may_be_shadowable(key) {",
        "                if may_be_shadowable(key) && false {",
    ),
    "handler call: instance dict lacks the name": (
        "src/handler_calls.rs",
        "    if !crate::channel::instance_dict_surely_lacks(obj, &[name]) {",
        "    if false {",
    ),
    "handler call: a plain function": (
        "src/handler_calls.rs",
        "!f.is_null() && unsafe { pyo3::ffi::PyFunction_Check(f) } != 0",
        "!f.is_null()",
    ),
    # Kept across the messages of one read (handler_calls::Resolved, the
    # terminator's class answer in channel::instance_attr).
    "kept call: class version tag": (
        "src/handler_calls.rs",
        "(kept.tag != 0 && kept.tag == tag && crate::channel::instance_dict_still_vouched(obj))",
        "(kept.tag != 0 && crate::channel::instance_dict_still_vouched(obj))",
    ),
    "kept call: instance dict still vouched": (
        "src/handler_calls.rs",
        "(kept.tag != 0 && kept.tag == tag && crate::channel::instance_dict_still_vouched(obj))",
        "(kept.tag != 0 && kept.tag == tag)",
    ),
    "watcher: still vouched only while watched": (
        "src/dict_watch.rs",
        "            && (*dict.cast::<DictHead>()).watcher_tag & (1 << id) != 0\n",
        "",
    ),
    "watcher: still vouched only while no dict is marked": (
        "src/dict_watch.rs",
        "            && (*dict.cast::<DictHead>()).watcher_tag & (1 << id) != 0\n"
        "            && MARKED_COUNT.load(Ordering::Relaxed) == 0\n",
        "            && (*dict.cast::<DictHead>()).watcher_tag & (1 << id) != 0\n",
    ),
    # The per-message methods' own entry points (src/fast_methods.rs,
    # tests/test_method_calls.py): any other argument shape goes to pyo3's.
    "entry point: one positional argument only": (
        "src/fast_methods.rs",
        "        if nargs != 1 || !kwnames.is_null() {",
        "        if nargs < 1 {",
    ),
    "scan: only a bytes terminator is reused": (
        "src/async_chat.rs",
        "                && term.is_exact_instance_of::<PyBytes>();",
        ";",
    ),
    "watcher: counts a write of the tracked name": (
        "src/dict_watch.rs",
        "            EVENT_ADDED | EVENT_MODIFIED | EVENT_DELETED => {\n",
        "            EVENT_ADDED | EVENT_MODIFIED | EVENT_DELETED => false,\n            -1 => {\n",
    ),
    "watcher: counts a whole-dict change": (
        "src/dict_watch.rs",
        "            _ => true,\n        }\n    }",
        "            _ => false,\n        }\n    }",
    ),
    "watcher: an unwatched dict's value is not kept": (
        "src/dict_watch.rs",
        "        // vouched for any more.\n        count_value_write();",
        "        // vouched for any more.",
    ),
    "kept terminator: same dict": (
        "src/channel.rs",
        "let same_dict = dict_slot(obj).is_some_and(|d| d as usize == kept.dict);",
        "let same_dict = kept.dict != 0;",
    ),
    "kept terminator: read from a watched dict": (
        "src/channel.rs",
        "                    && crate::dict_watch::is_watched_now(&d)\n",
        "",
    ),
    "terminator read: kept class answer": (
        "src/channel.rs",
        "let dict_only = (tag != 0 && tag == kept.tag) ||",
        "let dict_only = (kept.tag != 0) ||",
    ),
    "terminator read: no class attribute": (
        "src/channel.rs",
        "crate::calls::generic_getattr(&ty)\n"
        "                    && crate::calls::class_attr_ptr(&ty, name).is_null(),",
        "true,",
    ),
    "setting read: watched dict lacks it": (
        "src/channel.rs",
        "    if crate::dict_watch::lacks(&dict, &[name], obj.get()) {\n"
        "        return Some(in_class);",
        "    if true {\n        return Some(in_class);",
    ),
    "watcher: map lookup skipped only while the map stands still": (
        "src/loop_state.rs",
        "if self.synced_at == socket_map::writes() && key.is_exact_instance_of::<PyInt>() {",
        "if key.is_exact_instance_of::<PyInt>() {",
    ),
    "watcher: map lookup skipped only for an int key": (
        "src/loop_state.rs",
        "if self.synced_at == socket_map::writes() && key.is_exact_instance_of::<PyInt>() {",
        "if self.synced_at == socket_map::writes() {",
    ),
    "map log read only by the state kept for the map": (
        "src/loop_state.rs",
        "let kind = if ours && persistent {",
        "let kind = if ours {",
    ),
    "watcher: map write noted in the log": (
        "src/socket_map.rs",
        "unsafe { &*(log as *const ChangeLog) }.note_in_write(key);",
        "let _ = (log, key);",
    ),
    "managed: no attribute only while the class's keys are empty": (
        "src/managed_dict.rs",
        "        if n == 0 {\n            // No instance",
        "        if true {\n            // No instance",
    ),
    "managed: kept clean answer only for the same count of keys": (
        "src/managed_dict.rs",
        "            && n == CLEAN_COUNT.load(Ordering::Relaxed)\n",
        "",
    ),
    "managed: kept clean answer only for the same class": (
        "src/managed_dict.rs",
        "            && (*t).tp_version_tag == CLEAN_TAG.load(Ordering::Relaxed)\n",
        "",
    ),
    "managed: keys scanned for shadowable names": (
        "src/managed_dict.rs",
        ".all(|k| !k.is_null() && crate::dict_watch::surely_not_shadowable(py, k));",
        ".all(|k| !k.is_null());",
    ),
    "managed: inline value read only for its own key": (
        "src/managed_dict.rs",
        "let index = keys_of(keys, n).position(|k| k == name)?;",
        "let index = keys_of(keys, n).position(|k| k == name).unwrap_or(0);",
    ),
    "managed: a made dict is read": (
        "src/managed_dict.rs",
        "        if !dict.is_null() {\n            return Managed::Dict(dict);",
        "        if false {\n            return Managed::Dict(dict);",
    ),
}

# Mutations of code that runs only on CPython 3.12+ (dict watchers).
NEEDS_312 = {name for name in MUTATIONS if name.startswith("watcher:")}
# Mutations of code that runs only on CPython 3.14+ (inline values of a
# subclass of a C class); run them with a 3.14 (benches/sid_bench.sh's root).
NEEDS_314 = {name for name in MUTATIONS if name.startswith("managed:")}

TESTS = [
    "tests/test_asynchat_batching.py",
    "tests/test_asynchat_output_differential.py",
    "tests/test_lines_fastpath.py",
    "tests/test_class_changes.py",
    "tests/test_instance_shadowing.py",
    "tests/test_method_calls.py",
    "tests/test_map_watch.py",
    "tests/test_managed_dict.py",
    "tests/test_asynchat_own.py::test_bytearray_terminator_changed_in_place",
]


def main(names):
    unknown = set(names) - set(MUTATIONS)
    if unknown:
        sys.exit(f"unknown mutation(s): {sorted(unknown)}")
    work = Path(tempfile.mkdtemp(prefix="asyncore-rs-mutate-"))
    tree = work / "tree"
    shutil.copytree(
        ROOT, tree, ignore=shutil.ignore_patterns("target", ".git", "_build", "__pycache__")
    )
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "maturin", "pytest", "pytest-timeout", "hypothesis"],
        check=True,
    )
    env = dict(os.environ, VIRTUAL_ENV=str(env_dir), PATH=f"{env_dir / 'bin'}:{os.environ['PATH']}")
    missed = 0
    for name, (path, *edits) in MUTATIONS.items():
        if names and name not in names:
            continue
        if name in NEEDS_312 and sys.version_info < (3, 12):
            print(f"{name}: SKIPPED (the code runs on CPython 3.12+; run this with one)")
            continue
        if name in NEEDS_314 and sys.version_info < (3, 14):
            print(f"{name}: SKIPPED (the code runs on CPython 3.14+; run this with one)")
            continue
        f = tree / path
        orig = f.read_text()
        mutated, missing = orig, False
        for old, new in zip(edits[::2], edits[1::2], strict=True):
            missing = mutated.count(old) != 1
            if missing:
                break
            mutated = mutated.replace(old, new)
        if missing:
            print(f"{name}: the text to remove is not in {path} once; update this script")
            missed += 1
            continue
        f.write_text(mutated)
        try:
            build = subprocess.run(
                ["maturin", "develop", "-r", "-q"],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
            )
            if build.returncode:
                print(f"{name}: BUILD FAILED\n{build.stderr[-2000:]}")
                missed += 1
                continue
            run = subprocess.run(
                [py, "-m", "pytest", "-q", "-x", "-p", "no:randomly", *TESTS],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
            )
            failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
            if run.returncode and failed:
                print(f"{name}: CAUGHT by {failed[0][7:]}", flush=True)
            elif run.returncode:
                # No test failed: a crash (the mutation's doing) or an error.
                tail = (run.stdout + run.stderr).strip().splitlines()[-3:]
                print(f"{name}: CAUGHT by the run (exit {run.returncode}): {tail}", flush=True)
            else:
                print(f"{name}: NOT CAUGHT", flush=True)
                missed += 1
        finally:
            f.write_text(orig)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
