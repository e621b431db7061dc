//! What the benchmark's tools share (`loadgen.rs`, the load generator, and
//! `ceiling.rs`, the ceiling server): socket set-up on raw fds, and running
//! Python's signal handlers from a thread that released the GIL.
//!
//! Uses nothing from the crate.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, RawFd};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

pub type Res<T> = Result<T, String>;

pub fn os_err(what: &str, err: &io::Error) -> String {
    format!("{what}: {err}")
}

/// Runs Python's signal handlers from a thread that released the GIL. A raised
/// exception (KeyboardInterrupt) is kept in `slot` and stops the loop.
// The closure is needed: `Python::check_signals` as a path is not general over the
// GIL lifetime `attach` hands out.
#[allow(clippy::redundant_closure_for_method_calls)]
pub fn check_signals(slot: &mut Option<PyErr>) -> Res<()> {
    match Python::attach(|py| py.check_signals()) {
        Ok(()) => Ok(()),
        Err(err) => {
            *slot = Some(err);
            Err("interrupted".into())
        }
    }
}

/// The error of a detached run: the signal handler's exception first.
pub fn to_py_err(msg: String, interrupted: Option<PyErr>) -> PyErr {
    interrupted.unwrap_or_else(|| PyRuntimeError::new_err(msg))
}

// ------------------------------------------------------------ socket helpers

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

pub fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

pub fn connect_raw(fd: RawFd, addr: &SocketAddr) -> i32 {
    match addr {
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
    }
}

/// Starts a non-blocking connect; returns the socket and whether it is already connected.
/// (std's `TcpStream::connect` blocks; thousands of idle connections must not wait in turn.)
pub fn start_connect(addr: &SocketAddr) -> io::Result<(TcpStream, bool)> {
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
    if connect_raw(fd, addr) == 0 {
        return Ok((stream, true));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok((stream, false))
    } else {
        Err(err)
    }
}
