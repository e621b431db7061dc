//! The benchmark's load generator, shipped in the extension so that
//! `python -m asyncore_rs` measures from an installed wheel (no cargo, no
//! checkout): `_loadgen_run(port, **options)`, a closed-loop TCP load
//! generator. One thread (the caller's, with the GIL released), one epoll
//! instance through `polling`. Each active connection sends a request and waits
//! for its whole echo, checking every byte, before it sends the next one. Idle
//! connections make one round trip (so the server has really accepted them) and
//! then stay open doing nothing. In churn mode every request is a new
//! connection: connect, one request, close. The server's CPU time (utime+stime
//! from /proc/<pid>/stat, and its process CPU clock) and RSS are read at the
//! edges of the measured window. Returns a dict. The benchmark's ceiling server
//! is in `ceiling.rs`, the socket helpers both use in `loadgen_net.rs`.
//!
//! It touches no asyncore state; it is plain Rust on loopback sockets. Signals
//! (Ctrl-C) are honoured: a wait interrupted by a signal, or one that times out,
//! runs Python's signal handlers before going on.
//!
//! Uses: ceiling, loadgen_net.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use polling::{Event, Events, PollMode, Poller};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::ceiling;
use crate::loadgen_net::{
    check_signals, os_err, raise_nofile_limit, set_int_opt, start_connect, to_py_err, Res,
};

/// Registers the benchmark's two functions (this one and the ceiling's) on
/// the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(loadgen_run, m)?)?;
    m.add_function(wrap_pyfunction!(ceiling::ceiling_serve, m)?)?;
    Ok(())
}

/// How often a busy loop stops to run Python's signal handlers.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Active,
    Idle,
    Churn,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::Idle => "idle",
            Kind::Churn => "churn",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Connecting,
    InFlight,
    Parked,
}

struct Conn {
    stream: TcpStream,
    kind: Kind,
    state: State,
    req: usize,
    sent: usize,
    recvd: usize,
    started: Instant,
    /// The registered interest: (readable, writable).
    reg: (bool, bool),
}

/// What one run does; `_loadgen_run`'s keyword arguments.
#[derive(Clone, Debug)]
struct Config {
    addr: SocketAddr,
    mode: String,
    size: usize,
    lines: usize,
    line_size: usize,
    conns: usize,
    idle: usize,
    idle_inflight: usize,
    warmup: f64,
    duration: f64,
    requests: u64,
    server_pid: i32,
    stall_timeout: f64,
    quickack: bool,
}

impl Config {
    fn new(port: u16) -> Config {
        Config {
            addr: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
            mode: "echo".into(),
            size: 64,
            lines: 100,
            line_size: 64,
            conns: 50,
            idle: 0,
            idle_inflight: 64,
            warmup: 1.0,
            duration: 5.0,
            requests: 0,
            server_pid: 0,
            stall_timeout: 10.0,
            quickack: true,
        }
    }

    /// Applies the keyword arguments; unknown names are a TypeError, as in a Python call.
    fn apply(&mut self, options: &Bound<'_, PyDict>) -> PyResult<()> {
        for (key, value) in options.iter() {
            let name: String = key.extract()?;
            match name.as_str() {
                "host" => {
                    let host: String = value.extract()?;
                    let ip: IpAddr = host.parse().map_err(|_| {
                        PyValueError::new_err(format!("host must be an IP address, not {host:?}"))
                    })?;
                    self.addr.set_ip(ip);
                }
                "mode" => self.mode = value.extract()?,
                "size" => self.size = value.extract()?,
                "lines" => self.lines = value.extract()?,
                "line_size" => self.line_size = value.extract()?,
                "conns" => self.conns = value.extract()?,
                "idle" => self.idle = value.extract()?,
                "idle_inflight" => self.idle_inflight = value.extract::<usize>()?.max(1),
                "warmup" => self.warmup = value.extract()?,
                "duration" => self.duration = value.extract()?,
                "requests" => self.requests = value.extract()?,
                "server_pid" => self.server_pid = value.extract()?,
                "stall_timeout" => self.stall_timeout = value.extract()?,
                "quickack" => self.quickack = value.is_truthy()?,
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "_loadgen_run() got an unexpected keyword argument {name:?}"
                    )))
                }
            }
        }
        self.validate().map_err(PyValueError::new_err)
    }

    fn validate(&self) -> Res<()> {
        if self.addr.port() == 0 {
            return Err("port must not be 0".into());
        }
        if self.conns == 0 {
            return Err("conns must be positive".into());
        }
        // Written so that NaN fails too.
        if !(self.duration > 0.0 && self.warmup >= 0.0 && self.stall_timeout > 0.0) {
            return Err("duration and stall_timeout must be positive, warmup not negative".into());
        }
        if self.duration > 1e6 || self.warmup > 1e6 || self.stall_timeout > 1e6 {
            return Err("duration, warmup and stall_timeout must be below 1e6 s".into());
        }
        build_requests(&self.mode, self.size, self.lines, self.line_size).map(|_| ())
    }
}

struct Engine {
    poller: Poller,
    conns: Vec<Option<Conn>>,
    requests: Vec<Vec<u8>>,
    addr: SocketAddr,
    scratch: Vec<u8>,
    /// Active and churn connections start a new request when one completes.
    issue: bool,
    recording: bool,
    latencies_ns: Vec<u64>,
    completed: u64,
    connecting: usize,
    in_flight: usize,
    idle_ready: usize,
    last_progress: Instant,
    stall: Duration,
    /// Send an immediate ACK after a partial echo (see `on_readable`).
    quickack: bool,
    /// The time the last wait returned: one clock read per batch of events.
    now: Instant,
    last_signal_check: Instant,
    interrupted: Option<PyErr>,
}

impl Engine {
    fn live(&mut self, slot: usize) -> &mut Conn {
        self.conns[slot].as_mut().expect("live slot")
    }

    fn open(&mut self, slot: usize, kind: Kind) -> Res<()> {
        let (stream, connected) = start_connect(&self.addr).map_err(|e| os_err("connect", &e))?;
        let conn = Conn {
            stream,
            kind,
            state: State::Connecting,
            req: slot % self.requests.len(),
            sent: 0,
            recvd: 0,
            started: Instant::now(),
            reg: (false, true),
        };
        // SAFETY: the stream is deleted from the poller before it is dropped (`close`,
        // and `Drop for Engine` for what is still open at the end).
        unsafe {
            self.poller
                .add_with_mode(&conn.stream, Event::writable(slot), PollMode::Level)
                .map_err(|e| os_err("epoll add", &e))?;
        }
        if slot >= self.conns.len() {
            self.conns.resize_with(slot + 1, || None);
        }
        self.conns[slot] = Some(conn);
        self.connecting += 1;
        if connected {
            self.on_connected(slot)?;
        }
        Ok(())
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            let _ = self.poller.delete(&conn.stream);
            if conn.state == State::InFlight {
                self.in_flight -= 1;
            }
        }
    }

    /// Parks a connection: no request in flight, read interest only, so that a
    /// server closing it (or sending unasked-for bytes) is noticed as an error.
    fn park(&mut self, slot: usize) -> Res<()> {
        self.live(slot).state = State::Parked;
        self.register(slot, (true, false))
    }

    /// Changes the registered interest when it differs from `want`.
    fn register(&mut self, slot: usize, want: (bool, bool)) -> Res<()> {
        let conn = self.conns[slot].as_mut().expect("live slot");
        if conn.reg == want {
            return Ok(());
        }
        conn.reg = want;
        self.poller
            .modify_with_mode(
                &conn.stream,
                Event::new(slot, want.0, want.1),
                PollMode::Level,
            )
            .map_err(|e| os_err("epoll modify", &e))
    }

    fn on_connected(&mut self, slot: usize) -> Res<()> {
        let now = self.now;
        let issue = self.issue;
        let conn = self.live(slot);
        if let Some(err) = conn
            .stream
            .take_error()
            .map_err(|e| os_err("SO_ERROR", &e))?
        {
            return Err(os_err("connect", &err));
        }
        let start = match conn.kind {
            Kind::Active => issue,
            Kind::Idle | Kind::Churn => true,
        };
        self.connecting -= 1;
        self.last_progress = now;
        if start {
            self.start_request(slot)
        } else {
            self.park(slot)
        }
    }

    fn start_request(&mut self, slot: usize) -> Res<()> {
        let now = self.now;
        let conn = self.live(slot);
        if conn.kind != Kind::Churn {
            conn.started = now;
        }
        conn.sent = 0;
        conn.recvd = 0;
        conn.state = State::InFlight;
        self.in_flight += 1;
        self.flush(slot)
    }

    /// Sends what it can of the request.
    fn flush(&mut self, slot: usize) -> Res<()> {
        let conn = self.conns[slot].as_mut().expect("live slot");
        let req = &self.requests[conn.req];
        while conn.sent < req.len() {
            match (&conn.stream).write(&req[conn.sent..]) {
                Ok(0) => return Err("send returned 0".into()),
                Ok(n) => {
                    conn.sent += n;
                    self.last_progress = self.now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(os_err("send", &e)),
            }
        }
        let want = (true, conn.sent < req.len());
        self.register(slot, want)
    }

    /// Checks `n` received bytes against the request they echo.
    fn check_echo(&self, conn: &Conn, n: usize) -> Res<()> {
        let req = &self.requests[conn.req];
        if conn.state != State::InFlight {
            return Err(format!(
                "server sent {n} bytes on an {} connection with no request in flight",
                conn.kind.name()
            ));
        }
        if conn.recvd + n > req.len() {
            return Err(format!(
                "server sent {} bytes more than the {}-byte request it echoes",
                conn.recvd + n - req.len(),
                req.len()
            ));
        }
        let got = &self.scratch[..n];
        let want = &req[conn.recvd..conn.recvd + n];
        if got != want {
            let off = (0..n).find(|&i| got[i] != want[i]).unwrap_or(0);
            return Err(format!(
                "echo mismatch at byte {} of the request: got {:?}, expected {:?}",
                conn.recvd + off,
                got[off] as char,
                want[off] as char
            ));
        }
        Ok(())
    }

    fn on_readable(&mut self, slot: usize) -> Res<()> {
        loop {
            let conn = self.conns[slot].as_mut().expect("live slot");
            let n = match (&conn.stream).read(&mut self.scratch) {
                Ok(0) => {
                    return Err(format!(
                        "server closed an {} connection ({} of {} echo bytes received)",
                        conn.kind.name(),
                        conn.recvd,
                        self.requests[conn.req].len()
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(os_err("recv", &e)),
            };
            let conn = self.conns[slot].as_ref().expect("live slot");
            self.check_echo(conn, n)?;
            let conn = self.conns[slot].as_mut().expect("live slot");
            conn.recvd += n;
            self.last_progress = self.now;
            if conn.recvd == self.requests[conn.req].len() {
                return self.complete(slot);
            }
            if self.quickack {
                // More echo is due and this client sends nothing until it has it all:
                // acknowledge now instead of after the 40 ms delayed-ACK timer, which a
                // server that leaves Nagle on (asyncore does) would otherwise wait for.
                let _ = set_int_opt(
                    conn.stream.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    1,
                );
            }
            if n < self.scratch.len() {
                return Ok(());
            }
        }
    }

    fn complete(&mut self, slot: usize) -> Res<()> {
        let now = self.now;
        let conn = self.live(slot);
        let kind = conn.kind;
        let latency = now.saturating_duration_since(conn.started);
        self.in_flight -= 1;
        if self.recording && kind != Kind::Idle {
            self.latencies_ns.push(latency.as_nanos() as u64);
            self.completed += 1;
        }
        match kind {
            Kind::Active if self.issue => self.start_request(slot),
            Kind::Active => self.park(slot),
            Kind::Idle => {
                self.idle_ready += 1;
                self.park(slot)
            }
            Kind::Churn => {
                self.live(slot).state = State::Parked;
                self.close(slot);
                if self.issue {
                    self.open(slot, Kind::Churn)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Waits once for events (at most `timeout`) and handles them.
    fn pump_once(&mut self, events: &mut Events, timeout: Duration) -> Res<()> {
        events.clear();
        let interrupted = match self.poller.wait(events, Some(timeout)) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => return Err(os_err("epoll wait", &e)),
        };
        self.now = Instant::now();
        if interrupted || self.now.saturating_duration_since(self.last_signal_check) > SIGNAL_CHECK
        {
            self.last_signal_check = self.now;
            check_signals(&mut self.interrupted)?;
        }
        for ev in events.iter() {
            let slot = ev.key;
            let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) else {
                continue;
            };
            match conn.state {
                State::Connecting => {
                    if ev.writable || ev.readable {
                        self.on_connected(slot)?;
                    }
                }
                State::InFlight | State::Parked => {
                    if ev.writable && conn.state == State::InFlight {
                        self.flush(slot)?;
                    }
                    if ev.readable {
                        self.on_readable(slot)?;
                    }
                }
            }
        }
        if self.now.saturating_duration_since(self.last_progress) > self.stall {
            return Err(format!(
                "no progress for {:.1} s ({} connecting, {} in flight)",
                self.stall.as_secs_f64(),
                self.connecting,
                self.in_flight
            ));
        }
        Ok(())
    }

    /// Runs the loop until `deadline` or until `done` says so.
    fn pump_until(
        &mut self,
        events: &mut Events,
        deadline: Option<Instant>,
        done: impl Fn(&Engine) -> bool,
    ) -> Res<()> {
        self.now = Instant::now();
        self.last_progress = self.now;
        loop {
            if done(self) {
                return Ok(());
            }
            let now = Instant::now();
            let mut timeout = SIGNAL_CHECK;
            if let Some(d) = deadline {
                if now >= d {
                    return Ok(());
                }
                timeout = timeout.min(d - now);
            }
            self.pump_once(events, timeout)?;
        }
    }

    /// Sets `issue` and starts a request on every parked active connection.
    fn resume(&mut self) -> Res<()> {
        self.issue = true;
        for slot in 0..self.conns.len() {
            let parked = matches!(
                &self.conns[slot],
                Some(c) if c.kind == Kind::Active && c.state == State::Parked
            );
            if parked {
                self.start_request(slot)?;
            }
        }
        Ok(())
    }

    /// Opens `idle` idle connections after the active ones, at most `inflight` at a time.
    fn open_idle(&mut self, events: &mut Events, idle: usize, inflight: usize) -> Res<()> {
        let first = self.conns.len();
        let mut opened = 0;
        self.now = Instant::now();
        self.last_progress = self.now;
        while self.idle_ready < idle {
            while opened < idle && opened - self.idle_ready < inflight {
                self.open(first + opened, Kind::Idle)?;
                opened += 1;
            }
            self.pump_once(events, SIGNAL_CHECK)?;
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for slot in 0..self.conns.len() {
            self.close(slot);
        }
    }
}

#[derive(Clone, Copy, Default)]
struct ServerSample {
    ticks: Option<u64>,
    cpu_ns: Option<u64>,
}

fn read_stat_ticks(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn read_rss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    if unsafe { libc::clock_gettime(clock, &raw mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn process_clock(pid: i32) -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid out-pointer.
    if unsafe { libc::clock_getcpuclockid(pid, &raw mut clock) } == 0 {
        Some(clock)
    } else {
        None
    }
}

fn sample(pid: Option<i32>, clock: Option<libc::clockid_t>) -> ServerSample {
    match pid {
        None => ServerSample::default(),
        Some(pid) => ServerSample {
            ticks: read_stat_ticks(pid),
            cpu_ns: clock.and_then(clock_ns),
        },
    }
}

fn build_requests(mode: &str, size: usize, lines: usize, line_size: usize) -> Res<Vec<Vec<u8>>> {
    const VARIANTS: usize = 16;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const MAX_REQUEST: usize = 64 << 20;
    let mut out = Vec::with_capacity(VARIANTS);
    for v in 0..VARIANTS {
        let req: Vec<u8> = match mode {
            "echo" | "churn" => {
                if size == 0 || size > MAX_REQUEST {
                    return Err(format!("size must be between 1 and {MAX_REQUEST}"));
                }
                (0..size)
                    .map(|i| ALPHABET[(i * 7 + v * 13) % ALPHABET.len()])
                    .collect()
            }
            "lines" => {
                if lines == 0 || line_size < 2 || lines.saturating_mul(line_size) > MAX_REQUEST {
                    return Err(format!(
                        "lines must be positive, line_size at least 2, \
                         lines * line_size at most {MAX_REQUEST}"
                    ));
                }
                let mut r = Vec::with_capacity(lines * line_size);
                for l in 0..lines {
                    r.extend(
                        (0..line_size - 1)
                            .map(|i| ALPHABET[(i * 7 + l * 3 + v * 13) % ALPHABET.len()]),
                    );
                    r.push(b'\n');
                }
                r
            }
            other => return Err(format!("unknown mode {other:?} (echo, lines or churn)")),
        };
        out.push(req);
    }
    Ok(out)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn diff(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(b?.saturating_sub(a?))
}

/// The figures of one run (the dict `_loadgen_run` returns).
#[derive(Debug, Default)]
struct Report {
    mode: String,
    conns: usize,
    idle: usize,
    request_bytes: usize,
    units_per_request: u64,
    requests: u64,
    elapsed_s: f64,
    latencies_ns: Vec<u64>,
    clk_tck: u64,
    server_cpu_ticks: Option<u64>,
    server_cpu_ns: Option<u64>,
    loadgen_cpu_ns: u64,
    rss_before_idle: Option<u64>,
    rss_after_idle: Option<u64>,
    rss_end: Option<u64>,
    idle_setup_s: f64,
    nofile_limit: u64,
}

impl Report {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let lat = &self.latencies_ns;
        let mean = if lat.is_empty() {
            0.0
        } else {
            lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0
        };
        let d = PyDict::new(py);
        d.set_item("mode", &self.mode)?;
        d.set_item("conns", self.conns)?;
        d.set_item("idle", self.idle)?;
        d.set_item("request_bytes", self.request_bytes)?;
        d.set_item("units_per_request", self.units_per_request)?;
        d.set_item("requests", self.requests)?;
        d.set_item("units", self.requests * self.units_per_request)?;
        d.set_item("elapsed_s", self.elapsed_s)?;
        d.set_item("requests_per_s", self.requests as f64 / self.elapsed_s)?;
        d.set_item("mean_us", mean)?;
        for (name, q) in [("p50_us", 0.50), ("p90_us", 0.90), ("p99_us", 0.99)] {
            d.set_item(name, percentile(lat, q))?;
        }
        d.set_item("max_us", percentile(lat, 1.0))?;
        d.set_item("clk_tck", self.clk_tck)?;
        d.set_item("server_cpu_ticks", self.server_cpu_ticks)?;
        d.set_item("server_cpu_ns", self.server_cpu_ns)?;
        d.set_item("loadgen_cpu_ns", self.loadgen_cpu_ns)?;
        d.set_item("server_rss_kib_before_idle", self.rss_before_idle)?;
        d.set_item("server_rss_kib_after_idle", self.rss_after_idle)?;
        d.set_item("server_rss_kib_end", self.rss_end)?;
        d.set_item("idle_setup_s", self.idle_setup_s)?;
        d.set_item("nofile_limit", self.nofile_limit)?;
        Ok(d)
    }
}

/// One load-generator run (without the GIL). On failure the engine's pending
/// signal-handler exception, if any, comes back with the message.
fn run_load(cfg: &Config) -> Result<Report, (String, Option<PyErr>)> {
    let requests =
        build_requests(&cfg.mode, cfg.size, cfg.lines, cfg.line_size).map_err(|m| (m, None))?;
    let poller = Poller::new().map_err(|e| (os_err("epoll", &e), None))?;
    let mut engine = Engine {
        poller,
        conns: Vec::with_capacity(cfg.conns + cfg.idle),
        requests,
        addr: cfg.addr,
        scratch: vec![0; 256 * 1024],
        issue: false,
        recording: false,
        latencies_ns: Vec::with_capacity(1 << 16),
        completed: 0,
        connecting: 0,
        in_flight: 0,
        idle_ready: 0,
        last_progress: Instant::now(),
        now: Instant::now(),
        last_signal_check: Instant::now(),
        stall: Duration::from_secs_f64(cfg.stall_timeout),
        quickack: cfg.quickack,
        interrupted: None,
    };
    let result = drive(&mut engine, cfg);
    result.map_err(|msg| (msg, engine.interrupted.take()))
}

/// The phases of a run: connect, idle connections, warm-up, measured window.
fn drive(engine: &mut Engine, cfg: &Config) -> Res<Report> {
    let churn = cfg.mode == "churn";
    let nofile_limit = raise_nofile_limit();
    let pid = (cfg.server_pid > 0).then_some(cfg.server_pid);
    let clock = pid.and_then(process_clock);
    let mut events = Events::with_capacity(std::num::NonZeroUsize::new(1024).expect("non-zero"));
    let warmup = Duration::from_secs_f64(cfg.warmup);

    // 1. Active connections (parked until the first resume).
    if !churn {
        for slot in 0..cfg.conns {
            engine.open(slot, Kind::Active)?;
        }
        engine.pump_until(&mut events, None, |e| e.connecting == 0)?;
    }

    // 2. Idle connections: warm the server, then open them (bounded in flight).
    let (mut rss_before_idle, mut rss_after_idle) = (None, None);
    let mut idle_setup_s = 0.0;
    if cfg.idle > 0 {
        if !churn {
            engine.resume()?;
            engine.pump_until(&mut events, Some(Instant::now() + warmup / 2), |_| false)?;
            engine.issue = false;
            engine.pump_until(&mut events, None, |e| e.in_flight == 0)?;
        }
        rss_before_idle = pid.and_then(read_rss_kib);
        let t0 = Instant::now();
        engine.open_idle(&mut events, cfg.idle, cfg.idle_inflight)?;
        idle_setup_s = t0.elapsed().as_secs_f64();
        rss_after_idle = pid.and_then(read_rss_kib);
    }

    // 3. Warm-up with the full load.
    if churn {
        engine.issue = true;
        for slot in 0..cfg.conns {
            engine.open(slot, Kind::Churn)?;
        }
    } else {
        engine.resume()?;
    }
    engine.pump_until(&mut events, Some(Instant::now() + warmup), |_| false)?;

    // 4. The measured window. The load generator runs on the calling thread, so
    // that thread's CPU clock is the load generator's own cost.
    let own_clock = libc::CLOCK_THREAD_CPUTIME_ID;
    let max_requests = cfg.requests;
    let s0 = sample(pid, clock);
    let own0 = clock_ns(own_clock);
    let t0 = Instant::now();
    engine.recording = true;
    let deadline = t0 + Duration::from_secs_f64(cfg.duration);
    engine.pump_until(&mut events, Some(deadline), |e| {
        max_requests > 0 && e.completed >= max_requests
    })?;
    engine.recording = false;
    let elapsed_s = t0.elapsed().as_secs_f64();
    let s1 = sample(pid, clock);
    let own1 = clock_ns(own_clock);
    let rss_end = pid.and_then(read_rss_kib);
    engine.issue = false;

    let mut latencies_ns = std::mem::take(&mut engine.latencies_ns);
    latencies_ns.sort_unstable();
    // SAFETY: sysconf has no preconditions.
    let clk_tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Report {
        mode: cfg.mode.clone(),
        conns: cfg.conns,
        idle: cfg.idle,
        request_bytes: engine.requests[0].len(),
        units_per_request: if cfg.mode == "lines" {
            cfg.lines as u64
        } else {
            1
        },
        requests: engine.completed,
        elapsed_s,
        latencies_ns,
        clk_tck,
        server_cpu_ticks: diff(s0.ticks, s1.ticks),
        server_cpu_ns: diff(s0.cpu_ns, s1.cpu_ns),
        loadgen_cpu_ns: diff(own0, own1).unwrap_or(0),
        rss_before_idle,
        rss_after_idle,
        rss_end,
        idle_setup_s,
        nofile_limit,
    })
}

/// `_loadgen_run(port, *, host="127.0.0.1", mode="echo", size=64, lines=100,
/// line_size=64, conns=50, idle=0, idle_inflight=64, warmup=1.0, duration=5.0,
/// requests=0, server_pid=0, stall_timeout=10.0, quickack=True) -> dict`
///
/// Drives a loopback echo server from the calling thread with the GIL released.
/// `requests > 0` ends the measured window after that many requests. Raises
/// RuntimeError when the server misbehaves (closes, echoes wrong bytes, stalls).
#[pyfunction]
#[pyo3(name = "_loadgen_run", signature = (port, **options))]
fn loadgen_run<'py>(
    py: Python<'py>,
    port: u16,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut cfg = Config::new(port);
    if let Some(options) = options {
        cfg.apply(options)?;
    } else {
        cfg.validate().map_err(PyValueError::new_err)?;
    }
    match py.detach(|| run_load(&cfg)) {
        Ok(report) => report.to_dict(py),
        Err((msg, interrupted)) => Err(to_py_err(msg, interrupted)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_lines_or_bytes() {
        let lines = build_requests("lines", 0, 3, 4).unwrap();
        assert_eq!(lines.len(), 16);
        assert_eq!(lines[0].len(), 12);
        assert_eq!(memchr::memchr_iter(b'\n', &lines[0]).count(), 3);
        let echo = build_requests("echo", 64, 0, 0).unwrap();
        assert!(echo.iter().all(|r| r.len() == 64 && !r.contains(&b'\n')));
        assert!(build_requests("echo", 0, 0, 0).is_err());
        assert!(build_requests("nope", 64, 0, 0).is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert!((percentile(&v, 0.5) - 50.0).abs() < 1e-9);
        assert!((percentile(&v, 0.99) - 99.0).abs() < 1e-9);
        assert!((percentile(&v, 1.0) - 100.0).abs() < 1e-9);
        assert!(percentile(&[], 0.5).abs() < 1e-9);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut cfg = Config::new(0);
        assert!(cfg.validate().is_err());
        cfg.addr.set_port(1);
        assert!(cfg.validate().is_ok());
        cfg.duration = f64::NAN;
        assert!(cfg.validate().is_err());
        cfg.duration = 1.0;
        cfg.mode = "lines".into();
        cfg.line_size = 1;
        assert!(cfg.validate().is_err());
    }
}
