//! Minimal single-threaded epoll echo server: the ceiling of the benchmark suite.
//!
//! ```text
//! ceiling_echo [--host 127.0.0.1] [--port 0] [--scenario echo|lines|bulk] [--backlog 1024]
//! ```
//!
//! Prints the bound port on stdout, then serves until killed. `echo` and `bulk`
//! send back every byte as it arrives; `lines` sends back complete lines only
//! (up to the last `\n` received, keeping a partial line for later), which is
//! the line-framing work without the per-line calls the Python servers make.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use asyncore_rs_loadgen::{raise_nofile_limit, set_nodelay, Args};
use polling::{Event, Events, PollMode, Poller};

/// Stop reading from a connection whose peer does not read its echo.
const MAX_PENDING: usize = 4 << 20;
const LISTENER: usize = usize::MAX - 1;

struct Conn {
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
    conns: Vec<Option<Conn>>,
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
                    // SAFETY: deleted from the poller in `close` before being dropped.
                    let added = unsafe {
                        self.poller
                            .add_with_mode(&stream, Event::readable(slot), PollMode::Level)
                    };
                    if added.is_err() {
                        self.free.push(slot);
                        continue;
                    }
                    self.conns[slot] = Some(Conn {
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
            let data = &self.buf[..n];
            let out: &[u8] = if !self.lines {
                data
            } else if conn.partial.is_empty() {
                match data.iter().rposition(|&b| b == b'\n') {
                    Some(pos) => {
                        conn.partial.extend_from_slice(&data[pos + 1..]);
                        &data[..=pos]
                    }
                    None => {
                        conn.partial.extend_from_slice(data);
                        &[]
                    }
                }
            } else {
                conn.partial.extend_from_slice(data);
                if let Some(pos) = conn.partial.iter().rposition(|&b| b == b'\n') {
                    let rest = conn.partial.split_off(pos + 1);
                    conn.pending
                        .extend_from_slice(&std::mem::replace(&mut conn.partial, rest));
                }
                &[]
            };
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
}

fn run() -> Result<(), String> {
    let args = Args::parse(&["host", "port", "scenario", "backlog"], &[])?;
    let host: IpAddr = args
        .get_str("host", "127.0.0.1")
        .parse()
        .map_err(|_| "bad --host (an IP address)".to_string())?;
    let port: u16 = args.get("port", 0)?;
    let scenario = args.get_str("scenario", "echo");
    let backlog: i32 = args.get("backlog", 1024)?;
    let lines = match scenario.as_str() {
        "echo" | "bulk" => false,
        "lines" => true,
        other => {
            return Err(format!(
                "unknown --scenario {other:?} (echo, lines or bulk)"
            ))
        }
    };
    raise_nofile_limit();
    let listener =
        TcpListener::bind(SocketAddr::new(host, port)).map_err(|e| format!("bind: {e}"))?;
    // SAFETY: listen() again on a listening socket only changes its backlog.
    unsafe {
        libc::listen(listener.as_raw_fd(), backlog);
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("getsockname: {e}"))?;
    let poller = Poller::new().map_err(|e| format!("epoll: {e}"))?;
    // SAFETY: the listener lives until the process exits.
    unsafe {
        poller
            .add_with_mode(&listener, Event::readable(LISTENER), PollMode::Level)
            .map_err(|e| format!("epoll add: {e}"))?;
    }
    println!("{}", bound.port());
    io::stdout().flush().map_err(|e| format!("stdout: {e}"))?;

    let mut server = Server {
        poller,
        conns: Vec::new(),
        free: Vec::new(),
        lines,
        buf: vec![0; 256 * 1024],
    };
    let mut events = Events::with_capacity(std::num::NonZeroUsize::new(1024).expect("non-zero"));
    loop {
        events.clear();
        match server.poller.wait(&mut events, None) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("epoll wait: {e}")),
        }
        for ev in events.iter() {
            if ev.key == LISTENER {
                server.accept_all(&listener);
            } else if !server.serve(ev.key, ev.readable, ev.writable) {
                server.close(ev.key);
            }
        }
    }
}

fn main() {
    if let Err(msg) = run() {
        eprintln!("ceiling_echo: {msg}");
        std::process::exit(1);
    }
}
