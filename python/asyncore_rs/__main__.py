"""``python -m asyncore_rs``: a loopback echo demo and a short benchmark.

    python -m asyncore_rs                  # demo, then a short asyncore-rs vs stdlib benchmark
    python -m asyncore_rs demo             # only the loopback echo demo
    python -m asyncore_rs bench [options]  # the benchmark suite (--help for its options)

The benchmarks live in the source checkout (``benches/``), not in the wheel: they are
found beside this package in a checkout or an editable install, else in the current
directory, else in ``$ASYNCORE_RS_BENCHES``.
"""

import importlib.util
import os
import socket
import sys
import threading
import time
from pathlib import Path

USAGE = __doc__.split("\n\n")[1]


def find_benches():
    """The benches/ directory of a source checkout, or None."""
    candidates = []
    if os.environ.get("ASYNCORE_RS_BENCHES"):
        candidates.append(Path(os.environ["ASYNCORE_RS_BENCHES"]))
    here = Path(__file__).resolve()
    candidates += [here.parents[2] / "benches", Path.cwd() / "benches"]
    for path in candidates:
        if (path / "bench.py").is_file() and (path / "loadgen" / "Cargo.toml").is_file():
            return path
    return None


def load_bench_module(benches):
    spec = importlib.util.spec_from_file_location("asyncore_rs_bench", benches / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def no_benches_message():
    return (
        "python -m asyncore_rs: the benchmarks need a source checkout of asyncore-rs, and "
        "none was found beside the installed package or in the current directory.\n"
        "Run this from the repository root (the directory holding benches/), or set "
        "ASYNCORE_RS_BENCHES=/path/to/asyncore-rs/benches."
    )


def demo():
    """One echo round trip through an asyncore-rs server; prints what happened."""
    from asyncore_rs import asyncore

    class EchoHandler(asyncore.dispatcher_with_send):
        def handle_read(self):
            data = self.recv(8192)
            if data:
                self.send(data)

    class EchoServer(asyncore.dispatcher):
        def __init__(self, map):
            asyncore.dispatcher.__init__(self, map=map)
            self.create_socket()
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(5)

        def handle_accepted(self, sock, addr):
            EchoHandler(sock, map=self._map)

    channels = {}
    server = EchoServer(channels)
    port = server.socket.getsockname()[1]
    message = b"hello from a legacy asyncore EchoHandler\n"
    reply = bytearray()

    def client():
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(message)
            while len(reply) < len(message):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply.extend(chunk)

    thread = threading.Thread(target=client, daemon=True)
    start = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        asyncore.loop(timeout=0.05, count=1, map=channels)
    elapsed_ms = (time.perf_counter() - start) * 1000
    thread.join(timeout=1)
    asyncore.close_all(map=channels)
    ok = bytes(reply) == message
    print(
        f"echo demo: a client sent {message!r} to an asyncore.dispatcher_with_send "
        f"EchoHandler on 127.0.0.1:{port} running on asyncore-rs "
        f"({asyncore.__name__}) and got {'the same bytes back' if ok else repr(bytes(reply))}"
        f" in {elapsed_ms:.1f} ms"
    )
    return ok


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv and argv[0] == "demo":
        return 0 if demo() else 1
    if argv and argv[0] == "bench":
        benches = find_benches()
        if benches is None:
            print(no_benches_message(), file=sys.stderr)
            return 2
        return load_bench_module(benches).main(argv[1:], prog="python -m asyncore_rs bench")
    if argv:
        print(f"python -m asyncore_rs: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2

    try:
        ok = demo()
    except ImportError as exc:
        print(f"echo demo skipped: asyncore_rs cannot be imported ({exc})")
        ok = False
    benches = find_benches()
    if benches is None:
        print(no_benches_message(), file=sys.stderr)
        return 0 if ok else 1
    print(
        "short benchmark: asyncore-rs (default, and with ac_batch_output=False) vs the pure-Python "
        "asyncore on the same handler code, 1000 idle connections in the idle scenario "
        "(python -m asyncore_rs bench runs the full suite)",
        flush=True,
    )
    rc = load_bench_module(benches).main(["--quick"], prog="python -m asyncore_rs bench")
    return rc if ok else 1


if __name__ == "__main__":
    sys.exit(main())
