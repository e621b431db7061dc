//! Closed-loop TCP load generator for the asyncore-rs benchmark suite.
//!
//! One thread, one epoll instance (through `polling`). Each active connection
//! sends a request and waits for its whole echo (checking every byte) before it
//! sends the next one. Optional idle connections connect, make one round trip
//! (so the server has really accepted them) and then stay open doing nothing.
//! In churn mode every request is a new connection: connect, one request, close.
//!
//! The measured window follows a warm-up. When `--server-pid` is given, the
//! server's CPU time (utime+stime from /proc/<pid>/stat, plus the nanosecond
//! process CPU clock as a cross-check) and RSS are read at the window's edges,
//! so the figures cover exactly the window. One JSON object is printed on stdout.
//!
//! ```text
//! loadgen --port P [--host 127.0.0.1] [--mode echo|lines|churn] [--size 64]
//!         [--lines 100] [--line-size 64] [--conns 50] [--idle 0] [--idle-inflight 64]
//!         [--warmup 1.0] [--duration 5.0] [--requests 0] [--server-pid PID]
//!         [--stall-timeout 10] [--no-quickack]
//! ```

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

use asyncore_rs_loadgen::{json_str, raise_nofile_limit, set_int_opt, set_nodelay, Args};
use polling::{Event, Events, PollMode, Poller};

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
}

type Res<T> = Result<T, String>;

fn os_err(what: &str, err: &io::Error) -> String {
    format!("{what}: {err}")
}

/// Starts a non-blocking connect; returns the socket and whether it is already connected.
fn start_connect(addr: &SocketAddr) -> io::Result<(TcpStream, bool)> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket() call; the fd is owned by the TcpStream right after.
    let fd: RawFd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    set_nodelay(fd)?;
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a valid sockaddr_in of the size passed.
            unsafe {
                libc::connect(
                    fd,
                    std::ptr::from_ref(&sin).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sin6` is a valid sockaddr_in6 of the size passed.
            unsafe {
                libc::connect(
                    fd,
                    std::ptr::from_ref(&sin6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc == 0 {
        return Ok((stream, true));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok((stream, false))
    } else {
        Err(err)
    }
}

impl Engine {
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
        // SAFETY: the stream is deleted from the poller before it is dropped (`close`).
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
        self.conns[slot].as_mut().expect("live slot").state = State::Parked;
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
        let conn = self.conns[slot].as_mut().expect("live slot");
        if let Some(err) = conn
            .stream
            .take_error()
            .map_err(|e| os_err("SO_ERROR", &e))?
        {
            return Err(os_err("connect", &err));
        }
        self.connecting -= 1;
        self.last_progress = self.now;
        let start = match conn.kind {
            Kind::Active => self.issue,
            Kind::Idle | Kind::Churn => true,
        };
        if start {
            self.start_request(slot)
        } else {
            self.park(slot)
        }
    }

    fn start_request(&mut self, slot: usize) -> Res<()> {
        let conn = self.conns[slot].as_mut().expect("live slot");
        if conn.kind != Kind::Churn {
            conn.started = self.now;
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
            if self.scratch[..n] != req[conn.recvd..conn.recvd + n] {
                let off = (0..n)
                    .find(|&i| self.scratch[i] != req[conn.recvd + i])
                    .unwrap_or(0);
                return Err(format!(
                    "echo mismatch at byte {} of the request: got {:?}, expected {:?}",
                    conn.recvd + off,
                    self.scratch[off] as char,
                    req[conn.recvd + off] as char
                ));
            }
            conn.recvd += n;
            self.last_progress = self.now;
            if conn.recvd == req.len() {
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
        let conn = self.conns[slot].as_mut().expect("live slot");
        debug_assert_eq!(conn.sent, self.requests[conn.req].len());
        let kind = conn.kind;
        let latency = self.now.saturating_duration_since(conn.started);
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
                conn.state = State::Parked;
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
        match self.poller.wait(events, Some(timeout)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(os_err("epoll wait", &e)),
        }
        self.now = Instant::now();
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
            let mut timeout = Duration::from_millis(100);
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
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn process_clock(pid: i32) -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid out-pointer.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } == 0 {
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
    let mut out = Vec::with_capacity(VARIANTS);
    for v in 0..VARIANTS {
        let req: Vec<u8> = match mode {
            "echo" | "churn" => {
                if size == 0 {
                    return Err("--size must be positive".into());
                }
                (0..size)
                    .map(|i| ALPHABET[(i * 7 + v * 13) % ALPHABET.len()])
                    .collect()
            }
            "lines" => {
                if lines == 0 || line_size < 2 {
                    return Err("--lines must be positive and --line-size at least 2".into());
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
            other => return Err(format!("unknown --mode {other:?} (echo, lines or churn)")),
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

fn opt_json(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_string(), |x| x.to_string())
}

fn run() -> Res<String> {
    let args = Args::parse(
        &[
            "host",
            "port",
            "mode",
            "size",
            "lines",
            "line-size",
            "conns",
            "idle",
            "idle-inflight",
            "warmup",
            "duration",
            "requests",
            "server-pid",
            "stall-timeout",
        ],
        &["no-quickack"],
    )?;
    let host: IpAddr = args
        .get_str("host", "127.0.0.1")
        .parse()
        .map_err(|_| "bad --host (an IP address)".to_string())?;
    let port: u16 = args.get("port", 0)?;
    if port == 0 {
        return Err("--port is required".into());
    }
    let mode = args.get_str("mode", "echo");
    let size: usize = args.get("size", 64)?;
    let lines: usize = args.get("lines", 100)?;
    let line_size: usize = args.get("line-size", 64)?;
    let conns: usize = args.get("conns", 50)?;
    let idle: usize = args.get("idle", 0)?;
    let idle_inflight: usize = args.get::<usize>("idle-inflight", 64)?.max(1);
    let warmup: f64 = args.get("warmup", 1.0)?;
    let duration: f64 = args.get("duration", 5.0)?;
    let max_requests: u64 = args.get("requests", 0)?;
    let server_pid: i32 = args.get("server-pid", 0)?;
    let stall: f64 = args.get("stall-timeout", 10.0)?;
    if conns == 0 {
        return Err("--conns must be positive".into());
    }
    if !(duration > 0.0 && warmup >= 0.0 && stall > 0.0) {
        return Err("--duration and --stall-timeout must be positive".into());
    }
    let churn = mode == "churn";
    let requests = build_requests(&mode, size, lines, line_size)?;
    let units_per_request = if mode == "lines" { lines as u64 } else { 1 };
    let nofile = raise_nofile_limit();
    let pid = (server_pid > 0).then_some(server_pid);
    let clock = pid.and_then(process_clock);

    let mut engine = Engine {
        poller: Poller::new().map_err(|e| os_err("epoll", &e))?,
        conns: Vec::with_capacity(conns + idle),
        requests,
        addr: SocketAddr::new(host, port),
        scratch: vec![0; 256 * 1024],
        issue: false,
        recording: false,
        latencies_ns: Vec::with_capacity(1 << 20),
        completed: 0,
        connecting: 0,
        in_flight: 0,
        idle_ready: 0,
        last_progress: Instant::now(),
        now: Instant::now(),
        stall: Duration::from_secs_f64(stall),
        quickack: !args.has("no-quickack"),
    };
    let mut events = Events::with_capacity(std::num::NonZeroUsize::new(1024).expect("non-zero"));
    let warmup = Duration::from_secs_f64(warmup);

    // 1. Active connections (parked until the first resume).
    if !churn {
        for slot in 0..conns {
            engine.open(slot, Kind::Active)?;
        }
        engine.pump_until(&mut events, None, |e| e.connecting == 0)?;
    }

    // 2. Idle connections: warm the server, then open them (bounded in flight).
    let (mut rss_before_idle, mut rss_after_idle) = (None, None);
    let mut idle_setup_s = 0.0;
    if idle > 0 {
        if !churn {
            engine.resume()?;
            engine.pump_until(&mut events, Some(Instant::now() + warmup / 2), |_| false)?;
            engine.issue = false;
            engine.pump_until(&mut events, None, |e| e.in_flight == 0)?;
        }
        rss_before_idle = pid.and_then(read_rss_kib);
        let t0 = Instant::now();
        let first = conns;
        let mut opened = 0;
        engine.now = Instant::now();
        engine.last_progress = engine.now;
        while engine.idle_ready < idle {
            while opened < idle && opened - engine.idle_ready < idle_inflight {
                engine.open(first + opened, Kind::Idle)?;
                opened += 1;
            }
            engine.pump_once(&mut events, Duration::from_millis(100))?;
        }
        idle_setup_s = t0.elapsed().as_secs_f64();
        rss_after_idle = pid.and_then(read_rss_kib);
    }

    // 3. Warm-up with the full load.
    if churn {
        engine.issue = true;
        for slot in 0..conns {
            engine.open(slot, Kind::Churn)?;
        }
    } else {
        engine.resume()?;
    }
    engine.pump_until(&mut events, Some(Instant::now() + warmup), |_| false)?;

    // 4. The measured window.
    let own_clock = libc::CLOCK_PROCESS_CPUTIME_ID;
    let s0 = sample(pid, clock);
    let own0 = clock_ns(own_clock);
    let t0 = Instant::now();
    engine.recording = true;
    let deadline = t0 + Duration::from_secs_f64(duration);
    engine.pump_until(&mut events, Some(deadline), |e| {
        max_requests > 0 && e.completed >= max_requests
    })?;
    engine.recording = false;
    let elapsed = t0.elapsed().as_secs_f64();
    let s1 = sample(pid, clock);
    let own1 = clock_ns(own_clock);
    let rss_end = pid.and_then(read_rss_kib);
    engine.issue = false;

    // 5. Report.
    let mut lat = std::mem::take(&mut engine.latencies_ns);
    lat.sort_unstable();
    let completed = engine.completed;
    let units = completed * units_per_request;
    // SAFETY: sysconf has no preconditions.
    let clk_tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = match (s0.ticks, s1.ticks) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let cpu_ns = match (s0.cpu_ns, s1.cpu_ns) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let own_ns = match (own0, own1) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0
    };
    let request_bytes = engine.requests[0].len();
    let mut out = String::from("{\"ok\": true");
    let _ = write!(out, ", \"mode\": {}", json_str(&mode));
    let _ = write!(out, ", \"conns\": {conns}, \"idle\": {idle}");
    let _ = write!(out, ", \"request_bytes\": {request_bytes}");
    let _ = write!(out, ", \"units_per_request\": {units_per_request}");
    let _ = write!(out, ", \"requests\": {completed}, \"units\": {units}");
    let _ = write!(out, ", \"elapsed_s\": {elapsed:.6}");
    let _ = write!(
        out,
        ", \"requests_per_s\": {:.3}",
        completed as f64 / elapsed
    );
    let _ = write!(out, ", \"mean_us\": {mean:.3}");
    for (name, q) in [("p50_us", 0.50), ("p90_us", 0.90), ("p99_us", 0.99)] {
        let _ = write!(out, ", \"{name}\": {:.3}", percentile(&lat, q));
    }
    let _ = write!(out, ", \"max_us\": {:.3}", percentile(&lat, 1.0));
    let _ = write!(out, ", \"clk_tck\": {clk_tck}");
    let _ = write!(out, ", \"server_cpu_ticks\": {}", opt_json(ticks));
    let _ = write!(out, ", \"server_cpu_ns\": {}", opt_json(cpu_ns));
    let _ = write!(out, ", \"loadgen_cpu_ns\": {own_ns}");
    let _ = write!(
        out,
        ", \"server_rss_kib_before_idle\": {}",
        opt_json(rss_before_idle)
    );
    let _ = write!(
        out,
        ", \"server_rss_kib_after_idle\": {}",
        opt_json(rss_after_idle)
    );
    let _ = write!(out, ", \"server_rss_kib_end\": {}", opt_json(rss_end));
    let _ = write!(out, ", \"idle_setup_s\": {idle_setup_s:.3}");
    let _ = write!(out, ", \"nofile_limit\": {nofile}");
    out.push('}');
    Ok(out)
}

fn main() {
    match run() {
        Ok(json) => println!("{json}"),
        Err(msg) => {
            println!("{{\"ok\": false, \"error\": {}}}", json_str(&msg));
            eprintln!("loadgen: {msg}");
            std::process::exit(1);
        }
    }
}
