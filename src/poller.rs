//! Owns the kernel's readiness interface, behind one type: `Poller` owns the
//! epoll instance, its registrations and its wait, and speaks poll(2)'s flag
//! values, which is what the loop and CPython's `poll2()` speak.
//!
//! Everything epoll-specific is in this file: a poller for another kernel
//! (kqueue, IOCP through the polling crate) is another `Poller` with the same
//! methods, chosen by `cfg`.
//!
//! Uses: errors.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use polling::{Event, PollMode};
use pyo3::prelude::*;

use crate::errors::os_error;

// poll(2) flag values, as `select.POLL*` has them on Linux.
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

/// How the kernel took a registration.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// In the epoll set (or out of it, while nothing is wanted).
    Polled,
    /// epoll refuses regular files (EPERM); poll() calls them always ready.
    AlwaysReady,
    /// The fd is not open: select() raises EBADF, poll() reports POLLNVAL.
    Invalid,
}

/// An epoll instance, level-triggered. It is shared with the channels it
/// polls (for `unwatch`); the buffer a wait fills is the waiter's (`Events`).
pub struct Poller {
    /// Registrations go through the polling crate.
    epoll: polling::Poller,
}

/// The buffer `Poller::wait` fills, owned by the one loop state that waits.
pub struct Events(Vec<libc::epoll_event>);

impl Events {
    pub fn new() -> Self {
        Events(Vec::with_capacity(1024))
    }
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        Ok(Poller {
            epoll: polling::Poller::new()?,
        })
    }

    /// Asks for the events in `want` (not 0) on `fd`; `added` says whether
    /// `fd` is in the set already. A stale registration is mended either
    /// way (a failing modify falls back to add, and the reverse).
    pub fn watch(&self, fd: RawFd, want: u8, added: bool) -> io::Result<Watch> {
        let ev = event(fd, want);
        // SAFETY: fd belongs to a channel in the map; it is deleted from the
        // poller before removal (unwatch, called by the registration's owner
        // and by the channel's del_channel), and stale numbers are re-added
        // fresh.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let result = if added {
            match self.epoll.modify_with_mode(borrowed, ev, PollMode::Level) {
                // SAFETY: as above.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => unsafe {
                    self.epoll.add_with_mode(fd, ev, PollMode::Level)
                },
                other => other,
            }
        } else {
            // SAFETY: as above.
            match unsafe { self.epoll.add_with_mode(fd, ev, PollMode::Level) } {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.epoll.modify_with_mode(borrowed, ev, PollMode::Level)
                }
                other => other,
            }
        };
        match result {
            Ok(()) => Ok(Watch::Polled),
            Err(e) => match e.raw_os_error() {
                Some(libc::EPERM) => Ok(Watch::AlwaysReady),
                // Not an open fd we can watch (closed behind our back, or its
                // number now taken by our own epoll fd).
                Some(libc::EBADF | libc::EINVAL | libc::ELOOP) => Ok(Watch::Invalid),
                _ => Err(e),
            },
        }
    }

    /// Takes `fd` out of the set. Failure means it is gone already (closed,
    /// or never added), which is normal: user code closes sockets behind the
    /// loop's back.
    pub fn unwatch(&self, fd: RawFd) {
        // SAFETY: fd is only borrowed for the call; a closed fd makes the
        // call fail, which is ignored.
        let _ = self.epoll.delete(unsafe { BorrowedFd::borrow_raw(fd) });
    }

    /// Waits up to `timeout` (None: forever) with the GIL released, then calls
    /// `on_event(fd, poll flags)` for each ready fd. EINTR runs the signal
    /// handlers and waits for what is left (PEP 475).
    ///
    /// Registrations go through the polling crate; the wait itself calls
    /// epoll_wait on the crate's epoll fd, because poll()'s semantics need the
    /// raw flags (POLLIN apart from POLLHUP and POLLPRI), which the crate's
    /// `Event` folds into "readable".
    pub fn wait(
        &self,
        py: Python<'_>,
        events: &mut Events,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(RawFd, u32),
    ) -> PyResult<()> {
        let events = &mut events.0;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let epfd = self.epoll.as_raw_fd();
        let cap = events.capacity();
        let n = loop {
            let ms = deadline.map_or(-1, |d| {
                // Round up: a 0.1 ms select() timeout must not become a busy loop.
                let left = d.saturating_duration_since(Instant::now());
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            });
            let buf = events.as_mut_ptr() as usize;
            // SAFETY: `buf` has room for `cap` events; the GIL is not needed.
            let n = py.detach(move || unsafe {
                libc::epoll_wait(epfd, buf as *mut libc::epoll_event, cap as i32, ms)
            });
            if n >= 0 {
                break n as usize;
            }
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno != libc::EINTR {
                return Err(os_error(py, errno));
            }
            // PEP 475: run the signal handlers, then wait for what is left.
            py.check_signals()?;
        };
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

fn event(fd: RawFd, want: u8) -> Event {
    let mut ev = Event::new(fd as usize, want & WANT_R != 0, want & WANT_W != 0);
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

    #[test]
    fn epoll_bits_are_poll_bits() {
        // Poller::wait passes epoll's bits on as poll(2)'s.
        assert_eq!(libc::EPOLLIN as u32, POLLIN);
        assert_eq!(libc::EPOLLPRI as u32, POLLPRI);
        assert_eq!(libc::EPOLLOUT as u32, POLLOUT);
        assert_eq!(libc::EPOLLERR as u32, POLLERR);
        assert_eq!(libc::EPOLLHUP as u32, POLLHUP);
    }
}
