//! epoll: the poll(2) flag values the loop speaks, and the translation
//! between them and the polling crate's registrations and epoll's events.

use std::os::fd::RawFd;

use polling::Event;

// poll(2) flag values, as `select.POLL*` has them on Linux.
pub const POLLIN: u32 = 0x001;
pub const POLLPRI: u32 = 0x002;
pub const POLLOUT: u32 = 0x004;
pub const POLLERR: u32 = 0x008;
pub const POLLHUP: u32 = 0x010;
pub const POLLNVAL: u32 = 0x020;

// Registration interest bits.
pub const WANT_R: u8 = 1;
pub const WANT_W: u8 = 2;
pub const WANT_P: u8 = 4;

pub fn event(fd: RawFd, want: u8) -> Event {
    let mut ev = Event::new(fd as usize, want & WANT_R != 0, want & WANT_W != 0);
    ev.set_priority(want & WANT_P != 0);
    ev
}

/// poll(2)'s flags for epoll's (the bits are the same on Linux), limited to
/// what was asked for; HUP and ERR are always reported, as poll() does.
pub fn poll_flags(epoll: u32, want: u8) -> u32 {
    let mut f = epoll & (POLLHUP | POLLERR);
    if want & WANT_R != 0 {
        f |= epoll & POLLIN;
    }
    if want & WANT_W != 0 {
        f |= epoll & POLLOUT;
    }
    if want & WANT_P != 0 {
        f |= epoll & POLLPRI;
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
        // poll_flags relies on epoll and poll sharing these values on Linux.
        assert_eq!(libc::EPOLLIN as u32, POLLIN);
        assert_eq!(libc::EPOLLPRI as u32, POLLPRI);
        assert_eq!(libc::EPOLLOUT as u32, POLLOUT);
        assert_eq!(libc::EPOLLERR as u32, POLLERR);
        assert_eq!(libc::EPOLLHUP as u32, POLLHUP);
    }
}
