"""Resident memory per idle connection, by handler class and implementation.

Issue 14's measure: open N socketpairs, wrap one end of each in a handler of the
class under test, run a few loop passes, and divide the growth of the resident set
by N. The socket objects exist before the first reading, so what is counted is the
handler object and whatever the loop keeps per channel. Each (implementation,
class) pair runs in a fresh interpreter, so one measurement's heap does not shape
the next.

    python benches/idle_memory.py                      # both implementations, 3 classes
    python benches/idle_memory.py --impl asyncore_rs --classes dispatcher_with_send
    python benches/idle_memory.py --python /path/to/python3.14 --pure-dir DIR

``--impl stdlib`` is the ``asyncore``/``asynchat`` the interpreter imports (3.11's
stdlib here; on 3.12+ point ``--pure-dir`` at a directory holding the pure-Python
backport, e.g. ``pip install --target DIR pyasyncore pyasynchat``).
"""

import argparse
import json
import os
import subprocess
import sys

CLASSES = ("dispatcher", "dispatcher_with_send", "async_chat")

CHILD = r"""
import gc, json, socket, sys
impl, cls_name, n, passes, pure_dir = sys.argv[1:6]
n, passes = int(n), int(passes)
if impl == "asyncore_rs":
    from asyncore_rs import asynchat, asyncore
else:
    if pure_dir:
        sys.path.insert(0, pure_dir)
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    import asynchat, asyncore

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")

if cls_name == "dispatcher":
    # The base class wants handle_read; an idle channel never calls it.
    cls = asyncore.dispatcher
elif cls_name == "dispatcher_with_send":
    cls = asyncore.dispatcher_with_send
else:
    class cls(asynchat.async_chat):
        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock)
            self.set_terminator(b"\n")
        def collect_incoming_data(self, data):
            pass
        def found_terminator(self):
            pass

# poll(): select() takes no fd above 1023.
# Warm up: the classes, the loop and its allocator pools exist before counting.
warm = [socket.socketpair() for _ in range(50)]
hs = [cls(a) for a, _ in warm]
for _ in range(passes):
    asyncore.loop(timeout=0, use_poll=True, count=1)
for h in hs:
    h.close()
for a, b in warm:
    b.close()
del hs, warm
asyncore.loop(timeout=0, use_poll=True, count=1)

pairs = [socket.socketpair() for _ in range(n)]
gc.collect()
before = rss_kib()
handlers = [cls(a) for a, _ in pairs]
gc.collect()
mid = rss_kib()
for _ in range(passes):
    asyncore.loop(timeout=0, use_poll=True, count=1)
gc.collect()
after = rss_kib()
print(json.dumps({"impl": impl, "class": cls_name, "n": n,
                  "kib_per_conn": (after - before) / n,
                  "handlers_kib_per_conn": (mid - before) / n,
                  "loop_kib_per_conn": (after - mid) / n,
                  "module": asyncore.__file__}))
"""


def measure(python, impl, cls, n, passes, pure_dir):
    env = dict(os.environ)
    if impl == "stdlib":
        # asyncore-rs's import hook (docs/install.rst) would otherwise serve
        # `import asyncore` on 3.12+ even with the backport on the path.
        env["ASYNCORE_RS_PREFER_BACKPORT"] = "1"
    proc = subprocess.run(
        [python, "-c", CHILD, impl, cls, str(n), str(passes), pure_dir or ""],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        sys.exit(f"{impl} {cls} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("asyncore_rs", "stdlib", "both"), default="both")
    parser.add_argument("--classes", nargs="+", choices=CLASSES, default=list(CLASSES))
    parser.add_argument("-n", type=int, default=5000, help="connections (default 5000)")
    parser.add_argument("--passes", type=int, default=3, help="loop passes (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--pure-dir", default=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="every run, and the module")
    args = parser.parse_args(argv)
    impls = ("asyncore_rs", "stdlib") if args.impl == "both" else (args.impl,)
    header = "".join(f"{i:>14}" for i in impls)
    print(f"{'class':<22}{header}   (KiB RSS per idle connection)")
    for cls in args.classes:
        cells = []
        for impl in impls:
            results = [
                measure(args.python, impl, cls, args.n, args.passes, args.pure_dir)
                for _ in range(args.repeat)
            ]
            runs = sorted(r["kib_per_conn"] for r in results)
            cells.append(runs[len(runs) // 2])
            if args.verbose:
                print(f"  {impl} {cls}: {runs} ({results[0]['module']})")
                # The split: the handler objects (and map entries) as made,
                # then what the loop's first passes add per channel.
                parts = sorted(
                    (r["handlers_kib_per_conn"], r["loop_kib_per_conn"]) for r in results
                )[len(results) // 2]
                print(f"    handlers {parts[0]:.3f} + loop {parts[1]:.3f}")
        print(f"{cls:<22}" + "".join(f"{c:>14.3f}" for c in cells))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
