"""Command line and start-up protocol shared by the benchmark servers.

Every server runs in its own process (so /proc/<pid>/stat holds its CPU time alone)::

    python benches/servers/<impl>_server.py --port 0 --scenario echo|lines|bulk

and prints the port it listens on as one line on stdout, then serves until it is killed.
``--check`` only imports the implementation and prints what it is (exit status 3 and the
reason on stdout when it is not available).
"""

import argparse
import sys


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", choices=("echo", "lines", "bulk"), default="echo")
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument(
        "--use-poll",
        action="store_true",
        help="asyncore.loop(use_poll=True): select() cannot watch fds above 1023",
    )
    parser.add_argument(
        "--check", action="store_true", help="print what the implementation is and exit"
    )
    return parser.parse_args()


def check_or_exit(load, args):
    """Loads the implementation; handles --check. Returns load()'s result."""
    try:
        loaded = load()
    except ImportError as exc:
        print(f"unavailable: {exc}", flush=True)
        sys.exit(3)
    if args.check:
        print(loaded[-1], flush=True)
        sys.exit(0)
    return loaded


def announce(port):
    print(port, flush=True)


def serve_legacy(description, load):
    """Runs the shared legacy handlers on the asyncore/asynchat modules `load()` returns.

    `load()` returns (asyncore, asynchat, detail) or raises ImportError.
    """
    args = parse_args(description)
    asyncore, asynchat, _detail = check_or_exit(load, args)
    from legacy_handlers import make_server

    server = make_server(asyncore, asynchat, args.scenario, args.host, args.port, args.backlog)
    announce(server.socket.getsockname()[1])
    asyncore.loop(timeout=30.0, use_poll=args.use_poll)
