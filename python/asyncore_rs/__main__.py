"""``python -m asyncore_rs``: a loopback echo demo and a short benchmark.

    python -m asyncore_rs [options]        # the demo, then the short benchmark (bench --quick
                                           # [options], e.g. --duration 5 --impls ...)
    python -m asyncore_rs demo             # only the loopback echo demo
    python -m asyncore_rs bench [options]  # the benchmark suite (bench --help for its options)

Everything runs from the installed wheel: the load generator is in the extension
(Rust, driving loopback sockets with the GIL released) and the benchmark's servers are
in this package. The pure-Python asyncore it compares with is the standard library's on
3.11; on 3.12+ pip fetches the pyasyncore/pyasynchat backports into a temporary
directory for the run (never installed into this environment).
"""

import socket
import sys
import threading
import time

USAGE = __doc__.split("\n\n")[1]
PROG = "python -m asyncore_rs"
HELP = {
    "demo": f"usage: {PROG} demo\n\nOne echo round trip through an asyncore-rs "
    "dispatcher_with_send server on 127.0.0.1 (a client thread sends, the loop echoes).",
}


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
        print(
            f"usage: {PROG} [bench options] | {PROG} demo | {PROG} bench [options]\n\n"
            + __doc__.split("\n\n", 2)[0].strip("`").replace("``", "")
            + "\n\n"
            + USAGE
            + "\n\nThe short benchmark takes the bench options (see bench --help), "
            "--smoke and --quick aside."
        )
        return 0
    command, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("", argv)
    if command == "demo":
        if rest in (["-h"], ["--help"]):
            print(HELP["demo"])
            return 0
        if rest:
            print(f"{PROG} demo: unexpected arguments {rest}\n\n{HELP['demo']}", file=sys.stderr)
            return 2
        return 0 if demo() else 1
    if command == "bench":
        from asyncore_rs import _bench

        return _bench.main(rest, prog=f"{PROG} bench")
    if command:
        print(f"{PROG}: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    if "--smoke" in rest or "--quick" in rest:
        print(f"{PROG}: runs bench --quick; use {PROG} bench for other presets", file=sys.stderr)
        return 2

    try:
        ok = demo()
    except ImportError as exc:
        print(f"echo demo skipped: asyncore_rs cannot be imported ({exc})")
        ok = False
    from asyncore_rs import _bench

    print(
        f"\nshort benchmark ({PROG} bench --quick): "
        + _bench.PRESETS["quick"].describe()
        + f". {PROG} bench runs the full suite.",
        flush=True,
    )
    rc = _bench.main(["--quick", *rest], prog=f"{PROG} bench")
    return rc if ok else 1


if __name__ == "__main__":
    sys.exit(main())
