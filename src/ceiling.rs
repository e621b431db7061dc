//! The benchmark's ceiling: `_ceiling_serve(...)`, a minimal single-threaded
//! epoll echo server in plain Rust, shipped in the extension with the load
//! generator (`loadgen.rs`, which registers it). It runs in a process of its
//! own (the bench starts it as `python -m asyncore_rs._bench_server --impl
//! ceiling`), so its CPU time is its own. It touches no asyncore state; Ctrl-C
//! is honoured (a wait that is interrupted or times out runs Python's signal
//! handlers).
//!
//! Uses: loadgen_net.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::loadgen_net::{check_signals, os_err, raise_nofile_limit, set_nodelay, to_py_err, Res};

/// Stop reading from a connection whose peer does not read its echo.
const MAX_PENDING: usize = 4 << 20;
const LISTENER: usize = usize::MAX - 1;

struct ServerConn {
    stream: TcpStream,
    /// Bytes accepted for echo but not sent yet.
    pending: Vec<u8>,
    /// `lines`: the start of a line whose `\n` has not arrived.
    partial: Vec<u8>,
    want_write: bool,
    want_read: bool,
}

struct Server {
    poller: Poller,
    conns: Vec<Option<ServerConn>>,
    free: Vec<usize>,
    lines: bool,
    buf: Vec<u8>,
}

impl Server {
    fn accept_all(&mut self, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = set_nodelay(stream.as_raw_fd());
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    // SAFETY: deleted from the poller in `close` (or `Drop`) before being dropped.
                    let added = unsafe {
                        self.poller
                            .add_with_mode(&stream, Event::readable(slot), PollMode::Level)
                    };
                    if added.is_err() {
                        self.free.push(slot);
                        continue;
                    }
                    self.conns[slot] = Some(ServerConn {
                        stream,
                        pending: Vec::new(),
                        partial: Vec::new(),
                        want_write: false,
                        want_read: true,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or out of fds (EMFILE): wait for the next event.
                Err(_) => return,
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            let _ = self.poller.delete(&conn.stream);
            self.free.push(slot);
        }
    }

    /// The part of `data` to echo now: all of it, or in `lines` mode whole lines only
    /// (a partial line waits in `conn.partial`; a completed one may go to `pending`).
    fn framed<'a>(lines: bool, conn: &mut ServerConn, data: &'a [u8]) -> &'a [u8] {
        if !lines {
            return data;
        }
        if conn.partial.is_empty() {
            if let Some(pos) = memchr::memrchr(b'\n', data) {
                conn.partial.extend_from_slice(&data[pos + 1..]);
                return &data[..=pos];
            }
            conn.partial.extend_from_slice(data);
            return &[];
        }
        conn.partial.extend_from_slice(data);
        if let Some(pos) = memchr::memrchr(b'\n', &conn.partial) {
            let rest = conn.partial.split_off(pos + 1);
            let done = std::mem::replace(&mut conn.partial, rest);
            conn.pending.extend_from_slice(&done);
        }
        &[]
    }

    /// Handles one readiness event; returns false when the connection must close.
    fn serve(&mut self, slot: usize, readable: bool, writable: bool) -> bool {
        let Some(conn) = self.conns[slot].as_mut() else {
            return true;
        };
        if readable && conn.want_read {
            let n = match (&conn.stream).read(&mut self.buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    0
                }
                Err(_) => return false,
            };
            let out = Self::framed(self.lines, conn, &self.buf[..n]);
            if conn.pending.is_empty() && !out.is_empty() {
                match (&conn.stream).write(out) {
                    Ok(w) => conn.pending.extend_from_slice(&out[w..]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        conn.pending.extend_from_slice(out);
                    }
                    Err(_) => return false,
                }
            } else {
                conn.pending.extend_from_slice(out);
            }
        }
        if (writable || readable) && !conn.pending.is_empty() {
            match (&conn.stream).write(&conn.pending) {
                Ok(w) => {
                    conn.pending.drain(..w);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
        let want_write = !conn.pending.is_empty();
        let want_read = conn.pending.len() < MAX_PENDING;
        if want_write != conn.want_write || want_read != conn.want_read {
            conn.want_write = want_write;
            conn.want_read = want_read;
            let ev = Event::new(slot, want_read, want_write);
            if self
                .poller
                .modify_with_mode(&conn.stream, ev, PollMode::Level)
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Serves until Python's signal handlers raise (the bench terminates the process).
    fn run(&mut self, listener: &TcpListener, interrupted: &mut Option<PyErr>) -> Res<()> {
        let mut events =
            Events::with_capacity(std::num::NonZeroUsize::new(1024).expect("non-zero"));
        loop {
            events.clear();
            // The timeout only bounds how long a pending Ctrl-C waits for its handler.
            match self.poller.wait(&mut events, Some(Duration::from_secs(1))) {
                Ok(0) => check_signals(interrupted)?,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => check_signals(interrupted)?,
                Err(e) => return Err(os_err("epoll wait", &e)),
            }
            for ev in events.iter() {
                if ev.key == LISTENER {
                    self.accept_all(listener);
                } else if !self.serve(ev.key, ev.readable, ev.writable) {
                    self.close(ev.key);
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for slot in 0..self.conns.len() {
            self.close(slot);
        }
    }
}

fn bind_listener(host: &str, port: u16, backlog: i32) -> Res<TcpListener> {
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("host must be an IP address, not {host:?}"))?;
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).map_err(|e| os_err("bind", &e))?;
    // SAFETY: listen() again on a listening socket only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(os_err("listen", &io::Error::last_os_error()));
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| os_err("nonblocking", &e))?;
    Ok(listener)
}

/// `_ceiling_serve(host="127.0.0.1", port=0, scenario="echo", backlog=1024, ready=None)`
///
/// The benchmark's ceiling: a minimal epoll echo server in plain Rust. `echo` and
/// `bulk` send back every byte as it arrives; `lines` sends back complete lines only
/// (the line-framing work without the per-line calls the Python servers make).
/// Calls `ready(port)` once listening, then serves with the GIL released until a
/// signal handler raises (KeyboardInterrupt); never returns normally.
#[pyfunction]
#[pyo3(
    name = "_ceiling_serve",
    signature = (host="127.0.0.1", port=0, scenario="echo", backlog=1024, ready=None)
)]
pub fn ceiling_serve(
    py: Python<'_>,
    host: &str,
    port: u16,
    scenario: &str,
    backlog: i32,
    ready: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let lines = match scenario {
        "echo" | "bulk" => false,
        "lines" => true,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown scenario {other:?} (echo, lines or bulk)"
            )))
        }
    };
    raise_nofile_limit();
    let listener = bind_listener(host, port, backlog).map_err(PyRuntimeError::new_err)?;
    let bound = listener
        .local_addr()
        .map_err(|e| PyRuntimeError::new_err(os_err("getsockname", &e)))?;
    let poller = Poller::new().map_err(|e| PyRuntimeError::new_err(os_err("epoll", &e)))?;
    // SAFETY: the listener outlives the poller: both live until this function returns,
    // and the poller (inside `server`) is dropped first.
    unsafe {
        poller
            .add_with_mode(&listener, Event::readable(LISTENER), PollMode::Level)
            .map_err(|e| PyRuntimeError::new_err(os_err("epoll add", &e)))?;
    }
    let mut server = Server {
        poller,
        conns: Vec::new(),
        free: Vec::new(),
        lines,
        buf: vec![0; 256 * 1024],
    };
    if let Some(ready) = ready {
        ready.call1((bound.port(),))?;
    }
    let mut interrupted = None;
    let result = py.detach(|| server.run(&listener, &mut interrupted));
    let _ = server.poller.delete(&listener);
    drop(server);
    match result {
        Ok(()) => Ok(()),
        Err(msg) => Err(to_py_err(msg, interrupted)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_framing_keeps_partial_lines() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut conn = ServerConn {
            stream: client,
            pending: Vec::new(),
            partial: Vec::new(),
            want_write: false,
            want_read: true,
        };
        assert_eq!(Server::framed(true, &mut conn, b"ab\ncd"), b"ab\n");
        assert_eq!(conn.partial, b"cd");
        assert_eq!(Server::framed(true, &mut conn, b"e\nf"), b"");
        assert_eq!(conn.pending, b"cde\n");
        assert_eq!(conn.partial, b"f");
        assert_eq!(Server::framed(false, &mut conn, b"xyz"), b"xyz");
    }
}
