//! The kernel's readiness interface, behind one type: `Poller` owns the
//! kernel's poll set, its registrations and its wait, and speaks poll(2)'s
//! flag values, which is what the loop and CPython's `poll2()` speak.
//!
//! Two implementations, chosen when a loop state creates its poller:
//! - `epoll` (Linux only, the default there): registrations through the
//!   polling crate, the wait an epoll_wait on the crate's epoll fd, whose raw
//!   event bits are poll(2)'s. The fastest path: one syscall per wait.
//! - `portable` (the only one on other systems; on Linux when the
//!   environment says `ASYNCORE_RS_POLLER=portable`, which the test command
//!   uses to run the whole suite on it): the polling crate's public API alone
//!   (kqueue on macOS and the BSDs, IOCP/wepoll on Windows, epoll on Linux).
//!   The crate's `Event` folds poll(2)'s flags together (readable means IN,
//!   HUP, ERR or PRI on epoll; kqueue reports no HUP/ERR/PRI at all), so on
//!   POSIX the fds it reports ready are asked again with a zero-timeout
//!   poll(2), which gives the exact flags CPython's `poll2()` sees.
//!
//! Uses: errors, fd_map.

use std::io;
use std::time::{Duration, Instant};

use polling::PollMode;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::os_error;
use crate::fd_map::RawFd;

// poll(2) flag values, as `select.POLL*` has them on Linux (and on macOS and
// FreeBSD: the traditional values).
pub const POLLIN: u32 = 0x001;
pub const POLLPRI: u32 = 0x002;
pub const POLLOUT: u32 = 0x004;
pub const POLLERR: u32 = 0x008;
pub const POLLHUP: u32 = 0x010;
pub const POLLNVAL: u32 = 0x020;

// Interest bits: what a registration asks the kernel to report.
pub const WANT_R: u8 = 1;
pub const WANT_W: u8 = 2;
pub const WANT_P: u8 = 4;

/// The environment variable that chooses the poller of new loop states.
pub const POLLER_ENV: &str = "ASYNCORE_RS_POLLER";

/// How the kernel took a registration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Watch {
    /// In the kernel's set (or out of it, while nothing is wanted).
    Polled,
    /// Regular files (epoll refuses them with EPERM); poll() calls them
    /// always ready.
    AlwaysReady,
    /// The fd is not open: select() raises EBADF, poll() reports POLLNVAL.
    Invalid,
}

/// The kernel's poll set of one loop state. It is shared with the channels
/// it polls (for `unwatch`); the buffers a wait fills are the waiter's
/// (`Events`), so it needs no lock.
pub struct Poller(Imp);

/// The buffers `Poller::wait` fills, owned by the one loop state that waits
/// (its registrations), made by `Poller::events` for that poller's kind.
/// Boxed: a loop state moves in and out of the loop cache on every call, and
/// the portable buffers would make it much larger.
pub struct Events(Box<EventsImp>);

enum EventsImp {
    #[cfg(target_os = "linux")]
    Epoll(epoll::Buffer),
    Portable(portable::Scratch),
}

enum Imp {
    #[cfg(target_os = "linux")]
    Epoll(epoll::Epoll),
    Portable(portable::Portable),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    #[cfg(target_os = "linux")]
    Epoll,
    Portable,
}

#[cfg(target_os = "linux")]
const DEFAULT: Kind = Kind::Epoll;
#[cfg(not(target_os = "linux"))]
const DEFAULT: Kind = Kind::Portable;

impl Kind {
    fn name(self) -> &'static str {
        match self {
            #[cfg(target_os = "linux")]
            Kind::Epoll => "epoll",
            Kind::Portable => "portable",
        }
    }

    /// The poller `ASYNCORE_RS_POLLER` asks for: unset or empty is the
    /// platform's default; anything unknown is an error, not a silent default.
    fn from_env() -> PyResult<Kind> {
        let Some(value) = std::env::var_os(POLLER_ENV) else {
            return Ok(DEFAULT);
        };
        match value.to_str() {
            Some("") => Ok(DEFAULT),
            Some("portable") => Ok(Kind::Portable),
            #[cfg(target_os = "linux")]
            Some("epoll") => Ok(Kind::Epoll),
            _ => {
                let choices = if cfg!(target_os = "linux") {
                    "'epoll' or 'portable'"
                } else {
                    "'portable'"
                };
                Err(PyValueError::new_err(format!(
                    "{POLLER_ENV} must be {choices} (or unset), not {value:?}"
                )))
            }
        }
    }
}

/// The name of the poller a loop state created now would use (`ASYNCORE_RS_POLLER`
/// read now): `"epoll"` or `"portable"`. For tests and bug reports.
#[pyfunction]
#[pyo3(name = "_poller_name")]
pub fn poller_name() -> PyResult<&'static str> {
    Kind::from_env().map(Kind::name)
}

impl Poller {
    /// A poller of the kind `ASYNCORE_RS_POLLER` chooses.
    pub fn new(py: Python<'_>) -> PyResult<Self> {
        let kind = Kind::from_env()?;
        let imp = match kind {
            #[cfg(target_os = "linux")]
            Kind::Epoll => epoll::Epoll::new().map(Imp::Epoll),
            Kind::Portable => portable::Portable::new(py).map(Imp::Portable),
        };
        imp.map(Poller)
            .map_err(|e| os_error(py, e.raw_os_error().unwrap_or(0)))
    }

    /// Empty buffers for this poller's waits.
    pub fn events(&self) -> Events {
        Events(Box::new(match &self.0 {
            #[cfg(target_os = "linux")]
            Imp::Epoll(_) => EventsImp::Epoll(epoll::Buffer::new()),
            Imp::Portable(_) => EventsImp::Portable(portable::Scratch::new()),
        }))
    }

    /// Asks for the events in `want` (not 0) on `fd`; `added` says whether
    /// `fd` is in the set already. A stale registration is mended either
    /// way (a failing modify falls back to add, and the reverse).
    pub fn watch(&self, fd: RawFd, want: u8, added: bool) -> io::Result<Watch> {
        if fd < 0 {
            // Not an fd (the loop rejects negative keys before this).
            return Ok(Watch::Invalid);
        }
        let result = match &self.0 {
            #[cfg(target_os = "linux")]
            Imp::Epoll(p) => register(&p.epoll, fd, want, added),
            Imp::Portable(p) => p.watch(fd, want, added),
        };
        match result {
            Ok(w) => Ok(w),
            Err(e) if is_refused(&e) => Ok(Watch::AlwaysReady),
            Err(e) if is_invalid(&e) => Ok(Watch::Invalid),
            Err(e) => Err(e),
        }
    }

    /// Takes `fd` out of the set. Failure means it is gone already (closed,
    /// or never added), which is normal: user code closes sockets behind the
    /// loop's back.
    pub fn unwatch(&self, fd: RawFd) {
        if fd < 0 {
            return;
        }
        let poller = match &self.0 {
            #[cfg(target_os = "linux")]
            Imp::Epoll(p) => &p.epoll,
            Imp::Portable(p) => &p.poller,
        };
        // SAFETY: fd (not negative) is only borrowed for the call; a closed
        // fd makes the call fail, which is ignored.
        let _ = poller.delete(unsafe { source::borrow(fd) });
    }

    /// Waits up to `timeout` (None: forever) with the GIL released, filling
    /// `events` (made by `events()`), then calls `on_event(fd, poll flags)`
    /// once for each ready fd. EINTR runs the signal handlers and waits for
    /// what is left (PEP 475).
    pub fn wait(
        &self,
        py: Python<'_>,
        events: &mut Events,
        timeout: Option<Duration>,
        on_event: impl FnMut(RawFd, u32),
    ) -> PyResult<()> {
        match (&self.0, &mut *events.0) {
            #[cfg(target_os = "linux")]
            (Imp::Epoll(p), EventsImp::Epoll(buf)) => p.wait(py, buf, timeout, on_event),
            (Imp::Portable(p), EventsImp::Portable(scratch)) => {
                p.wait(py, scratch, timeout, on_event)
            }
            // Buffers made for the other kind (not done by the one caller,
            // which makes them from this poller): made again, right.
            #[cfg(target_os = "linux")]
            _ => {
                *events = self.events();
                self.wait(py, events, timeout, on_event)
            }
        }
    }
}

/// The kernel will not poll this kind of file (epoll: EPERM for regular
/// files and directories); poll(2) calls it always ready.
fn is_refused(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(windows)]
    {
        let _ = e;
        false
    }
}

/// Not an open fd we can watch (closed behind our back, or its number now
/// taken by the poller's own fd).
fn is_invalid(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EBADF | libc::EINVAL | libc::ELOOP)
        )
    }
    #[cfg(windows)]
    {
        // WSAENOTSOCK, ERROR_INVALID_HANDLE: what select() raises for a
        // closed socket on Windows.
        matches!(e.raw_os_error(), Some(10038 | 6))
    }
}

/// Asks the crate's `poller` for `want` on `fd`, level-triggered; `added`
/// says whether `fd` is in its set already. A stale registration is mended
/// either way: a failing modify falls back to add, and the reverse.
fn register(poller: &polling::Poller, fd: RawFd, want: u8, added: bool) -> io::Result<Watch> {
    let ev = event(fd, want);
    // SAFETY: fd (not negative) belongs to a channel in the map; it is deleted
    // from the poller before removal (unwatch, called by the registration's
    // owner and by the channel's del_channel), and stale numbers are re-added
    // fresh.
    let borrowed = unsafe { source::borrow(fd) };
    let raw = source::raw(fd);
    let result = if added {
        match poller.modify_with_mode(borrowed, ev, PollMode::Level) {
            // SAFETY: as above.
            Err(e) if e.kind() == io::ErrorKind::NotFound => unsafe {
                poller.add_with_mode(raw, ev, PollMode::Level)
            },
            other => other,
        }
    } else {
        // SAFETY: as above.
        match unsafe { poller.add_with_mode(raw, ev, PollMode::Level) } {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                poller.modify_with_mode(borrowed, ev, PollMode::Level)
            }
            other => other,
        }
    };
    result.map(|()| Watch::Polled)
}

/// The wait both pollers share: calls `once(time left)` (None: forever) with
/// the GIL released until it returns `Some` or the time is up (`None`). When
/// it returns `None` before that (EINTR, a slice that ended, a spurious
/// wake-up), Python's signal handlers run and the wait goes on for what is
/// left (PEP 475); a handler that raises ends the wait with its exception.
fn wait_loop<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut once: impl FnMut(Option<Duration>) -> io::Result<Option<T>> + Send,
) -> PyResult<Option<T>> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match py.detach(|| once(left)) {
            Ok(Some(done)) => return Ok(Some(done)),
            Ok(None) => {}
            Err(e) => return Err(os_error(py, e.raw_os_error().unwrap_or(libc::EIO))),
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// The crate's interest for `want`. `set_priority` is a no-op where the
/// kernel has no such filter (kqueue): see the portable poller.
fn event(fd: RawFd, want: u8) -> polling::Event {
    let mut ev = polling::Event::new(fd as usize, want & WANT_R != 0, want & WANT_W != 0);
    ev.set_priority(want & WANT_P != 0);
    ev
}

/// poll(2)'s flags limited to what was asked for; HUP and ERR are always
/// reported, as poll() does.
pub fn poll_flags(ready: u32, want: u8) -> u32 {
    let mut f = ready & (POLLHUP | POLLERR);
    if want & WANT_R != 0 {
        f |= ready & POLLIN;
    }
    if want & WANT_W != 0 {
        f |= ready & POLLOUT;
    }
    if want & WANT_P != 0 {
        f |= ready & POLLPRI;
    }
    f
}

/// The crate's fd types: RawFd/BorrowedFd on POSIX, RawSocket/BorrowedSocket
/// on Windows (the SOCKET handle `fileno()` gave, never negative here).
#[cfg(unix)]
mod source {
    use std::os::fd::BorrowedFd;

    use crate::fd_map::RawFd;

    pub fn raw(fd: RawFd) -> RawFd {
        fd
    }

    /// # Safety
    /// `fd` must not be -1; the borrow lasts one call of the crate.
    pub unsafe fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
        // SAFETY: the caller's.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }
}

#[cfg(windows)]
mod source {
    use std::os::windows::io::{BorrowedSocket, RawSocket};

    use crate::fd_map::RawFd;

    pub fn raw(fd: RawFd) -> RawSocket {
        fd as RawSocket
    }

    /// # Safety
    /// `fd` must be a SOCKET handle, not negative; the borrow lasts one
    /// call of the crate.
    pub unsafe fn borrow<'a>(fd: RawFd) -> BorrowedSocket<'a> {
        // SAFETY: the caller's.
        unsafe { BorrowedSocket::borrow_raw(raw(fd)) }
    }
}

/// The epoll poller: the fast path on Linux.
#[cfg(target_os = "linux")]
mod epoll {
    use std::io;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use pyo3::prelude::*;

    use super::wait_loop;
    use crate::fd_map::RawFd;

    /// An epoll instance, level-triggered.
    pub struct Epoll {
        /// Registrations go through the polling crate (`super::register`).
        pub(super) epoll: polling::Poller,
    }

    /// The buffer a wait fills (the waiting loop state's).
    pub struct Buffer(Vec<libc::epoll_event>);

    impl Buffer {
        pub fn new() -> Self {
            Buffer(Vec::with_capacity(1024))
        }
    }

    impl Epoll {
        pub fn new() -> io::Result<Self> {
            Ok(Epoll {
                epoll: polling::Poller::new()?,
            })
        }

        /// Registrations go through the polling crate; the wait itself calls
        /// epoll_wait on the crate's epoll fd, because poll()'s semantics need
        /// the raw flags (POLLIN apart from POLLHUP and POLLPRI), which the
        /// crate's `Event` folds into "readable".
        pub fn wait(
            &self,
            py: Python<'_>,
            buffer: &mut Buffer,
            timeout: Option<Duration>,
            mut on_event: impl FnMut(RawFd, u32),
        ) -> PyResult<()> {
            let events = &mut buffer.0;
            events.clear();
            let epfd = self.epoll.as_raw_fd();
            let cap = i32::try_from(events.capacity()).unwrap_or(i32::MAX);
            let n = wait_loop(py, timeout, |left| {
                let ms = left.map_or(-1, |left| {
                    // Round up: a 0.1 ms select() timeout must not become a busy loop.
                    i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                });
                // SAFETY: `events` has room for `cap` events.
                let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), cap, ms) };
                if let Ok(n) = usize::try_from(n) {
                    return Ok(Some(n));
                }
                let e = io::Error::last_os_error();
                // EINTR: wait_loop runs the signal handlers, then waits again.
                if e.raw_os_error() == Some(libc::EINTR) {
                    Ok(None)
                } else {
                    Err(e)
                }
            })?
            .unwrap_or(0);
            // SAFETY: epoll_wait initialised the first n entries.
            unsafe { events.set_len(n) };
            for ev in events.drain(..) {
                // epoll's event bits are poll(2)'s on Linux (tested below).
                let (flags, key) = (ev.events, ev.u64);
                if let Ok(fd) = RawFd::try_from(key) {
                    on_event(fd, flags);
                }
            }
            Ok(())
        }
    }
}

/// The portable poller: the polling crate's public API, and on POSIX a
/// zero-timeout poll(2) of the fds it reports, for poll(2)'s exact flags.
mod portable {
    use std::ffi::c_ulong;
    use std::io;
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use polling::Events;
    use pyo3::prelude::*;

    use super::{register, wait_loop, Watch};
    #[cfg(unix)]
    use crate::errors::os_error;
    use crate::fd_map::RawFd;

    /// The longest the main thread waits without running Python's signal
    /// handlers. The crate retries EINTR inside its wait (it never returns
    /// it), so a Ctrl-C during a long `loop(timeout=30)` would otherwise wait
    /// for the timeout; CPython's select()/poll() run the handlers at once
    /// (PEP 475). Other threads never run signal handlers: they wait whole.
    const SIGNAL_SLICE: Duration = Duration::from_millis(100);

    pub struct Portable {
        pub(super) poller: polling::Poller,
        /// The Python thread that runs signal handlers (`threading.main_thread()`).
        main_thread: Option<c_ulong>,
    }

    /// The buffers a wait fills (the waiting loop state's).
    pub struct Scratch {
        events: Events,
        /// The fds reported ready, and their flags (kqueue reports a read
        /// and a write event of one fd apart).
        ready: Vec<(RawFd, u32)>,
        #[cfg(unix)]
        pollfds: Vec<libc::pollfd>,
    }

    impl Scratch {
        pub fn new() -> Self {
            Scratch {
                events: Events::with_capacity(NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN)),
                ready: Vec::new(),
                #[cfg(unix)]
                pollfds: Vec::new(),
            }
        }
    }

    impl Portable {
        pub fn new(py: Python<'_>) -> io::Result<Self> {
            Ok(Portable {
                poller: polling::Poller::new()?,
                main_thread: main_thread_ident(py),
            })
        }

        pub fn watch(&self, fd: RawFd, want: u8, added: bool) -> io::Result<Watch> {
            #[cfg(unix)]
            if !added {
                if let Some(w) = unpollable(fd) {
                    return Ok(w);
                }
            }
            register(&self.poller, fd, want, added)
        }

        pub fn wait(
            &self,
            py: Python<'_>,
            scratch: &mut Scratch,
            timeout: Option<Duration>,
            mut on_event: impl FnMut(RawFd, u32),
        ) -> PyResult<()> {
            let sliced = self.main_thread == Some(this_thread_ident());
            let (poller, events) = (&self.poller, &mut scratch.events);
            wait_loop(py, timeout, |left| {
                let slice = match left {
                    Some(left) if sliced => Some(left.min(SIGNAL_SLICE)),
                    None if sliced => Some(SIGNAL_SLICE),
                    other => other,
                };
                events.clear();
                poller.wait(events, slice)?;
                // Done with events, or when no time was left to wait (a zero
                // timeout, the common case of a busy loop: no signal check).
                Ok((!events.is_empty() || left == Some(Duration::ZERO)).then_some(()))
            })?;
            scratch.ready.clear();
            scratch.ready.extend(
                scratch
                    .events
                    .iter()
                    .map(|ev| (ev.key as RawFd, flags_of(&ev))),
            );
            merge_by_fd(&mut scratch.ready);
            #[cfg(unix)]
            exact_flags(py, &mut scratch.ready, &mut scratch.pollfds)?;
            for &(fd, flags) in &scratch.ready {
                if flags != 0 {
                    on_event(fd, flags);
                }
            }
            Ok(())
        }
    }

    /// poll(2)'s flags as far as the crate's `Event` tells them: all there is
    /// on Windows (IOCP); on POSIX `exact_flags` replaces them.
    pub(super) fn flags_of(ev: &polling::Event) -> u32 {
        use super::{POLLERR, POLLHUP, POLLIN, POLLOUT, POLLPRI};
        if cfg!(windows) && ev.is_err() == Some(true) {
            // A failed connect() (IOCP's CONNECT_FAIL, which the crate also
            // calls readable and writable): Windows' select() reports it in
            // the exceptional set only, where CPython's poll() sends it to
            // handle_expt_event (SO_ERROR set: handle_close).
            return POLLPRI;
        }
        let mut f = 0;
        if ev.readable {
            f |= POLLIN;
        }
        if ev.writable {
            f |= POLLOUT;
        }
        if ev.is_priority() {
            f |= POLLPRI;
        }
        if ev.is_interrupt() {
            f |= POLLHUP;
        }
        if ev.is_err() == Some(true) {
            f |= POLLERR;
        }
        f
    }

    /// One entry per fd, its flags or-ed (kqueue reports the read and the
    /// write filter of one fd as two events).
    pub(super) fn merge_by_fd(ready: &mut Vec<(RawFd, u32)>) {
        ready.sort_unstable_by_key(|&(fd, _)| fd);
        ready.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 |= later.1;
                true
            } else {
                false
            }
        });
    }

    /// Replaces the flags of the fds the crate reported with poll(2)'s own,
    /// from one zero-timeout poll(2): the crate's `Event` cannot say POLLIN
    /// apart from POLLHUP, POLLERR and POLLPRI (epoll), or report them at
    /// all (kqueue), and CPython's `poll2()` acts on each. Every event is
    /// asked for; `poll_flags` keeps what the registration wants.
    #[cfg(unix)]
    fn exact_flags(
        py: Python<'_>,
        ready: &mut [(RawFd, u32)],
        pollfds: &mut Vec<libc::pollfd>,
    ) -> PyResult<()> {
        if ready.is_empty() {
            return Ok(());
        }
        pollfds.clear();
        pollfds.extend(ready.iter().map(|&(fd, _)| libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLPRI | libc::POLLOUT,
            revents: 0,
        }));
        loop {
            // SAFETY: pollfds holds pollfds.len() initialised entries; a zero
            // timeout does not block, so the GIL stays held.
            let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 0) };
            if n >= 0 {
                break;
            }
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno != libc::EINTR {
                return Err(os_error(py, errno));
            }
            py.check_signals()?;
        }
        for (entry, pfd) in ready.iter_mut().zip(pollfds.iter()) {
            entry.1 = from_poll_bits(pfd.revents);
        }
        Ok(())
    }

    /// The platform's poll(2) bits as ours (the same values on Linux, macOS
    /// and FreeBSD; mapped one by one all the same).
    #[cfg(unix)]
    pub(super) fn from_poll_bits(revents: libc::c_short) -> u32 {
        use super::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI};
        [
            (libc::POLLIN, POLLIN),
            (libc::POLLPRI, POLLPRI),
            (libc::POLLOUT, POLLOUT),
            (libc::POLLERR, POLLERR),
            (libc::POLLHUP, POLLHUP),
            (libc::POLLNVAL, POLLNVAL),
        ]
        .iter()
        .filter(|(bit, _)| revents & bit != 0)
        .fold(0, |f, (_, ours)| f | ours)
    }

    /// What the kernel's poller would refuse or misreport, found before it is
    /// asked: a closed fd (EBADF: invalid), and regular files, directories
    /// and block devices, which poll(2) calls always ready (epoll refuses
    /// them with EPERM; kqueue would report a regular file at its end as
    /// not readable).
    #[cfg(unix)]
    fn unpollable(fd: RawFd) -> Option<Watch> {
        // SAFETY: fstat writes into `st` only; a closed fd fails with EBADF.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd, &raw mut st) } != 0 {
            return (io::Error::last_os_error().raw_os_error() == Some(libc::EBADF))
                .then_some(Watch::Invalid);
        }
        matches!(
            st.st_mode & libc::S_IFMT,
            libc::S_IFREG | libc::S_IFDIR | libc::S_IFBLK
        )
        .then_some(Watch::AlwaysReady)
    }

    /// `threading.main_thread().ident`, the thread Python runs signal
    /// handlers in (None if `threading` cannot say).
    fn main_thread_ident(py: Python<'_>) -> Option<c_ulong> {
        let main = py
            .import("threading")
            .ok()?
            .call_method0("main_thread")
            .ok()?;
        main.getattr("ident").ok()?.extract::<c_ulong>().ok()
    }

    fn this_thread_ident() -> c_ulong {
        // SAFETY: only reads the calling thread's id (the GIL is held).
        unsafe { pyo3::ffi::PyThread_get_thread_ident() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_flags_keep_only_what_was_asked_plus_hup_and_err() {
        let all = POLLIN | POLLPRI | POLLOUT | POLLERR | POLLHUP;
        assert_eq!(poll_flags(all, WANT_R), POLLIN | POLLERR | POLLHUP);
        assert_eq!(poll_flags(all, WANT_W), POLLOUT | POLLERR | POLLHUP);
        assert_eq!(poll_flags(all, WANT_P), POLLPRI | POLLERR | POLLHUP);
        // A pipe whose writer closed: poll(2) says POLLHUP only, and so do we.
        assert_eq!(poll_flags(POLLHUP, WANT_R | WANT_P), POLLHUP);
        assert_eq!(
            poll_flags(POLLIN | POLLOUT, WANT_R | WANT_W),
            POLLIN | POLLOUT
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn epoll_bits_are_poll_bits() {
        // The epoll poller passes epoll's bits on as poll(2)'s.
        assert_eq!(libc::EPOLLIN as u32, POLLIN);
        assert_eq!(libc::EPOLLPRI as u32, POLLPRI);
        assert_eq!(libc::EPOLLOUT as u32, POLLOUT);
        assert_eq!(libc::EPOLLERR as u32, POLLERR);
        assert_eq!(libc::EPOLLHUP as u32, POLLHUP);
    }

    #[cfg(unix)]
    #[test]
    fn poll_bits_map_one_by_one() {
        use portable::from_poll_bits;
        assert_eq!(
            from_poll_bits(libc::POLLIN | libc::POLLHUP),
            POLLIN | POLLHUP
        );
        assert_eq!(from_poll_bits(libc::POLLNVAL), POLLNVAL);
        assert_eq!(
            from_poll_bits(libc::POLLPRI | libc::POLLOUT),
            POLLPRI | POLLOUT
        );
        assert_eq!(from_poll_bits(0), 0);
    }

    #[test]
    fn events_of_one_fd_merge() {
        let mut ready = vec![
            (7, POLLIN),
            (3, POLLOUT),
            (7, POLLOUT),
            (3, POLLHUP),
            (5, 0),
        ];
        portable::merge_by_fd(&mut ready);
        assert_eq!(
            ready,
            vec![(3, POLLOUT | POLLHUP), (5, 0), (7, POLLIN | POLLOUT)]
        );
    }

    #[test]
    fn event_flags_from_the_crate() {
        let mut ev = polling::Event::readable(1);
        assert_eq!(portable::flags_of(&ev), POLLIN);
        ev.writable = true;
        assert_eq!(portable::flags_of(&ev), POLLIN | POLLOUT);
    }
}
