"""Python 3.11's own smtpd (which imports asyncore and asynchat by name) receiving mail from
smtplib clients, with the loop in a thread, in a fresh interpreter: for ours after
asyncore_rs.install() (and smtpd must then be running on ours), for the stdlib without it."""

import importlib.util

import pytest
from _dropin import check_ok, run_python

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("smtpd") is None, reason="smtpd is not in this Python (3.12+)"
)

SCENARIO = r"""
import io, smtplib, threading, time
import smtpd

if IMPL == "rs":
    assert smtpd.asyncore is asyncore_rs.asyncore, smtpd.asyncore
    assert smtpd.asynchat is asyncore_rs.asynchat, smtpd.asynchat
    assert issubclass(smtpd.SMTPChannel, asyncore_rs.asynchat.async_chat)
    assert issubclass(smtpd.SMTPServer, asyncore_rs.asyncore.dispatcher)

HOST = "127.0.0.1"
received = []


class Recorder(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        received.append((mailfrom, tuple(rcpttos), data))


recorder = Recorder((HOST, 0), None, decode_data=False)
debugging = smtpd.DebuggingServer((HOST, 0), None, decode_data=True)
assert recorder.socket.getsockname()[0] == HOST
ports = recorder.socket.getsockname()[1], debugging.socket.getsockname()[1]

# DebuggingServer prints each message to sys.stdout: catch it
real_stdout, sys.stdout = sys.stdout, io.StringIO()
stop = threading.Event()
loop_errors = []


def serve():
    end = time.monotonic() + 30
    try:
        while not stop.is_set() and time.monotonic() < end:
            asyncore.loop(timeout=0.05, count=1)
    except BaseException as exc:
        loop_errors.append(exc)


def message(n, i, size):
    body = "".join("line %d of message %d-%d\n" % (k, n, i) for k in range(size))
    # a line that starts with a dot travels dot-stuffed and must arrive unstuffed
    return "Subject: m%d-%d\n\n%s.dotted line\n..two dots\nend\n" % (n, i, body)


failures = []


def client(n, port, count):
    try:
        for i in range(count):
            with smtplib.SMTP(HOST, port, timeout=10) as s:
                for j in range(2):  # two messages per session
                    msg = message(n, i * 2 + j, [1, 50, 3000][(i + j) % 3])
                    rcpts = ["r%d@example.org" % k for k in range(1 + j)]
                    refused = s.sendmail("c%d@example.org" % n, rcpts, msg)
                    assert refused == {}, refused
                s.quit()
    except BaseException as exc:
        failures.append(exc)


loop_thread = threading.Thread(target=serve)
loop_thread.start()
try:
    threads = [threading.Thread(target=client, args=(n, ports[0], 3)) for n in range(5)]
    threads += [threading.Thread(target=client, args=(n, ports[1], 1)) for n in (100, 101)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
finally:
    stop.set()
    loop_thread.join(30)
    printed, sys.stdout = sys.stdout.getvalue(), real_stdout
assert not loop_thread.is_alive()
assert loop_errors == [], loop_errors
assert failures == [], failures

asyncore.close_all()
assert asyncore.socket_map == {}

# 5 clients x 3 sessions x 2 messages, each exactly as sent
assert len(received) == 30, len(received)
expected = set()
for n in range(5):
    for k in range(6):
        i, j = divmod(k, 2)
        msg = message(n, k, [1, 50, 3000][(i + j) % 3])
        rcpts = tuple("r%d@example.org" % r for r in range(1 + j))
        expected.add(("c%d@example.org" % n, rcpts, msg.rstrip("\n").encode()))
assert set(received) == expected

assert printed.count("---------- MESSAGE FOLLOWS ----------") == 4, printed[:2000]
assert printed.count("------------ END MESSAGE ------------") == 4
for n in (100, 101):
    for k in range(2):
        assert "Subject: m%d-%d\n" % (n, k) in printed
assert "X-Peer: 127.0.0.1" in printed
assert "\n.dotted line\n..two dots\n" in printed
print("OK")
"""


def test_smtpd_servers_receive_mail_from_smtplib_threads():
    check_ok(run_python(SCENARIO))
