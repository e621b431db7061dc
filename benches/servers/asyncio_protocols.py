"""asyncio.Protocol servers doing the legacy handlers' work (run on asyncio or uvloop)."""

import asyncio

from server_common import announce, check_or_exit, parse_args


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


def serve(description, load):
    """`load()` returns (new_event_loop, detail) or raises ImportError."""
    args = parse_args(description)
    new_event_loop, _detail = check_or_exit(load, args)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    protocol = LineProtocol if args.scenario == "lines" else EchoProtocol
    server = loop.run_until_complete(
        loop.create_server(protocol, args.host, args.port, backlog=args.backlog)
    )
    announce(server.sockets[0].getsockname()[1])
    loop.run_forever()
