"""One benchmark server, in a process of its own (so /proc/<pid>/stat holds its CPU time alone).

    python -m asyncore_rs._bench_server --impl IMPL --scenario echo|lines|bulk [--port 0]
        [--handler recv8192|recv65536] [--use-poll] [--pure-dir DIR] [--check]

It prints the port it listens on as one line on stdout, then serves until it is killed.
``--check`` only loads the implementation and prints what it is (exit status 3 and the
reason on stdout when it is not available).

This file imports nothing from asyncore_rs unless IMPL is one of ours, and the bench runs
it by path, so that the pure-Python server never has asyncore-rs in its process.

IMPL is one of:

* ``asyncore_rs``, ``asyncore_rs_unbatched`` -- the legacy handlers below on asyncore-rs
  (the second with ``async_chat.ac_batch_output = False``: every push() sends at once);
* ``pure_python`` -- the same handlers on the pure-Python asyncore/asynchat: the
  ``pyasyncore``/``pyasynchat`` files in ``--pure-dir`` when given (the bench fetches
  them on 3.12+), else CPython's own Lib/asyncore.py and Lib/asynchat.py (<= 3.11);
* ``uvloop``, ``asyncio`` -- asyncio.Protocol servers doing the same work;
* ``ceiling`` -- a minimal Rust epoll echo server (``asyncore_rs._core._ceiling_serve``).
"""

import argparse
import importlib.util
import os
import platform
import sys
import sysconfig
import types
import warnings

HANDLERS = ("recv8192", "recv65536")


# --------------------------------------------------------------------------- legacy handlers


def make_server(asyncore, asynchat, scenario, host="127.0.0.1", port=0, backlog=1024, handler=""):
    """Returns a listening EchoServer dispatcher for `scenario` (echo, bulk or lines).

    The handlers are the Python documentation's example code (asyncore's
    EchoHandler/EchoServer, and an asynchat line handler in the style of its
    http_request_handler example), parameterised by the module objects so that
    asyncore-rs and the pure-Python implementation run byte-identical handler code.
    `handler` picks the echo handler's shape: ``recv8192`` (the documentation's
    EchoHandler, the default) or ``recv65536`` (``self.send(self.recv(65536))``).
    """

    class EchoHandler(asyncore.dispatcher_with_send):
        def handle_read(self):
            data = self.recv(8192)
            if data:
                self.send(data)

    class BigRecvEchoHandler(asyncore.dispatcher_with_send):
        def handle_read(self):
            self.send(self.recv(65536))

    class LineHandler(asynchat.async_chat):
        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock=sock)
            self.ibuffer = []
            self.set_terminator(b"\n")

        def collect_incoming_data(self, data):
            self.ibuffer.append(data)

        def found_terminator(self):
            line = b"".join(self.ibuffer)
            self.ibuffer = []
            self.push(line + b"\n")

    class EchoServer(asyncore.dispatcher):
        def __init__(self, host, port, handler_class):
            asyncore.dispatcher.__init__(self)
            self.handler_class = handler_class
            self.create_socket()
            self.set_reuse_addr()
            self.bind((host, port))
            self.listen(backlog)

        def handle_accepted(self, sock, addr):
            self.handler_class(sock)

    echo = {"": EchoHandler, "recv8192": EchoHandler, "recv65536": BigRecvEchoHandler}
    if handler not in echo:
        raise ValueError(f"unknown handler {handler!r} ({', '.join(HANDLERS)})")
    handlers = {"echo": echo[handler], "bulk": echo[handler], "lines": LineHandler}
    if scenario not in handlers:
        raise ValueError(f"unknown scenario {scenario!r} (echo, lines or bulk)")
    return EchoServer(host, port, handlers[scenario])


# --------------------------------------------------------------------------- asyncio protocols


def protocol_for(scenario):
    """asyncio.Protocol classes doing the legacy handlers' work."""
    import asyncio

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class LineProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.partial = b""

        def data_received(self, data):
            if self.partial:
                data = self.partial + data
            lines = data.split(b"\n")
            self.partial = lines.pop()
            write = self.transport.write
            for line in lines:
                write(line + b"\n")

    return LineProtocol if scenario == "lines" else EchoProtocol


# --------------------------------------------------------------------------- loaders
# Each returns what its server needs, with a one-line description last; ImportError
# when the implementation is not available.


def load_asyncore_rs(args):
    import asyncore_rs
    from asyncore_rs import _core, asynchat, asyncore

    where = "installed" if "-packages" in asyncore.__file__ else "source tree"
    # abi3 and version-specific builds differ in calling convention (and speed).
    build = (
        "abi3 build" if ".abi3." in os.path.basename(_core.__file__) else "version-specific build"
    )
    detail = f"asyncore-rs {asyncore_rs.__version__} ({where}, {build}) on {_python()}"
    if args.impl == "asyncore_rs_unbatched":
        asynchat.async_chat.ac_batch_output = False
        detail += ", ac_batch_output=False"
    return asyncore, asynchat, detail


def _is_pure_python(asyncore, asynchat):
    # asyncore-rs also answers to `import asyncore` (its wheel ships top-level packages
    # on 3.12+): refuse to measure it as the pure-Python implementation.
    return (
        type(asyncore.socket_map) is dict
        and isinstance(asyncore.dispatcher.__dict__.get("handle_read_event"), types.FunctionType)
        and isinstance(asynchat.async_chat.__dict__.get("handle_read"), types.FunctionType)
    )


def _load_files(paths):
    """Loads asyncore and asynchat from the given files, as those module names."""
    modules = []
    for name in ("asyncore", "asynchat"):
        path = paths[name]
        if not os.path.isfile(path):
            raise ImportError(f"{path} not found")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # asynchat does `import asyncore`: it must find this one.
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def _dist_version(directory, name):
    for entry in sorted(os.listdir(directory)):
        if entry.lower().startswith(name + "-") and entry.endswith(".dist-info"):
            return entry[len(name) + 1 : -len(".dist-info")]
    return "?"


def load_pure_python(args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if args.pure_dir:
            d = args.pure_dir
            paths = {n: os.path.join(d, n, "__init__.py") for n in ("asyncore", "asynchat")}
            asyncore, asynchat = _load_files(paths)
            detail = f"pyasyncore {_dist_version(d, 'pyasyncore')}, "
            detail += f"pyasynchat {_dist_version(d, 'pyasynchat')}"
        elif sys.version_info < (3, 12):
            stdlib = sysconfig.get_paths()["stdlib"]
            paths = {n: os.path.join(stdlib, n + ".py") for n in ("asyncore", "asynchat")}
            asyncore, asynchat = _load_files(paths)
            detail = "the standard library's asyncore/asynchat"
        else:
            raise ImportError("no pure-Python asyncore on Python 3.12+ without --pure-dir")
    if not _is_pure_python(asyncore, asynchat):
        raise ImportError(f"{asyncore.__file__} is not the pure-Python asyncore")
    return asyncore, asynchat, f"{detail} on {_python()}"


def load_uvloop(args):
    import uvloop

    return uvloop.new_event_loop, f"uvloop {uvloop.__version__} on {_python()}"


def load_asyncio(args):
    import asyncio

    return asyncio.new_event_loop, f"asyncio (default event loop) on {_python()}"


def load_ceiling(args):
    from asyncore_rs._core import _ceiling_serve

    return _ceiling_serve, "asyncore_rs._core._ceiling_serve: plain Rust, epoll, one thread"


def _python():
    return f"{platform.python_implementation()} {platform.python_version()}"


# --------------------------------------------------------------------------- serving


def announce(port):
    print(port, flush=True)


def serve_legacy(args, loaded):
    asyncore, asynchat, _ = loaded
    server = make_server(
        asyncore, asynchat, args.scenario, args.host, args.port, args.backlog, args.handler
    )
    announce(server.socket.getsockname()[1])
    asyncore.loop(timeout=30.0, use_poll=args.use_poll)


def serve_asyncio(args, loaded):
    import asyncio

    new_event_loop, _ = loaded
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(protocol_for(args.scenario), args.host, args.port, backlog=args.backlog)
    )
    announce(server.sockets[0].getsockname()[1])
    loop.run_forever()


def serve_ceiling(args, loaded):
    serve, _ = loaded
    serve(args.host, args.port, args.scenario, args.backlog, announce)


IMPLS = {
    "asyncore_rs": (load_asyncore_rs, serve_legacy),
    "asyncore_rs_unbatched": (load_asyncore_rs, serve_legacy),
    "pure_python": (load_pure_python, serve_legacy),
    "uvloop": (load_uvloop, serve_asyncio),
    "asyncio": (load_asyncio, serve_asyncio),
    "ceiling": (load_ceiling, serve_ceiling),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m asyncore_rs._bench_server",
        description="One server of the asyncore-rs benchmark (prints its port, then serves).",
    )
    parser.add_argument("--impl", choices=list(IMPLS), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", choices=("echo", "lines", "bulk"), default="echo")
    parser.add_argument("--handler", choices=HANDLERS, default="recv8192")
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument(
        "--use-poll",
        action="store_true",
        help="asyncore.loop(use_poll=True): select() cannot watch fds above 1023",
    )
    parser.add_argument("--pure-dir", help="where pyasyncore/pyasynchat are installed")
    parser.add_argument(
        "--check", action="store_true", help="print what the implementation is and exit"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    load, serve = IMPLS[args.impl]
    try:
        loaded = load(args)
    except ImportError as exc:
        print(f"unavailable: {exc}", flush=True)
        return 3
    if args.check:
        print(loaded[-1], flush=True)
        return 0
    try:
        serve(args, loaded)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
