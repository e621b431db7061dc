"""The benchmark's legacy handlers, written the way asyncore/asynchat programs are written.

This is the Python documentation's example code (asyncore's EchoHandler/EchoServer, and an
asynchat line handler in the style of its http_request_handler example), kept in ONE module
and parameterised by the module objects, so that asyncore-rs and the pure-Python
implementation run byte-identical handler code.
"""


def make_server(asyncore, asynchat, scenario, host="127.0.0.1", port=0, backlog=1024):
    """Returns a listening EchoServer dispatcher for `scenario` (echo, bulk or lines).

    `asyncore` and `asynchat` are the module objects of the implementation under test.
    """

    class EchoHandler(asyncore.dispatcher_with_send):
        def handle_read(self):
            data = self.recv(8192)
            if data:
                self.send(data)

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

    handlers = {"echo": EchoHandler, "bulk": EchoHandler, "lines": LineHandler}
    if scenario not in handlers:
        raise ValueError(f"unknown scenario {scenario!r} (echo, lines or bulk)")
    return EchoServer(host, port, handlers[scenario])
