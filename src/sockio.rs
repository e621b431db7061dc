//! Owns the socket calls. A plain `socket.socket` gets non-blocking syscalls
//! on its fd; anything else (SSL sockets, mocks, `file_wrapper`, user
//! subclasses) goes through its Python methods.
//!
//! The direct calls are POSIX socket calls on the fd. On Windows (where a
//! socket is a SOCKET handle, not an fd) `recv_with` and `send_fd` always
//! fall back, so every socket call goes through its Python method.
//!
//! Uses: calls, errors, fd_map, module_state, names, pyobj.

#[cfg(unix)]
use std::cell::RefCell;
#[cfg(unix)]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[cfg(unix)]
use crate::errors::os_error;
use crate::fd_map::RawFd;
use crate::module_state::bound;
use crate::names;

// `create_socket()`'s defaults (the same values in winsock2.h).
#[cfg(unix)]
pub use libc::{AF_INET, SOCK_STREAM};
#[cfg(windows)]
pub const AF_INET: std::ffi::c_int = 2;
#[cfg(windows)]
pub const SOCK_STREAM: std::ffi::c_int = 1;

/// Outcome of a syscall on a plain socket's fd.
// Windows only ever falls back (see the module doc).
#[cfg_attr(windows, allow(dead_code))]
pub enum Syscall<T> {
    Done(T),
    /// The call would block (or the socket is not in non-blocking use): let the
    /// Python method decide, so its exact exception or timeout applies.
    Fallback,
    Failed(PyErr),
}

/// Whether `sock` is exactly `socket.socket` (no fd check: see plain_fd).
pub fn is_plain(py: Python<'_>, sock: &Bound<'_, PyAny>) -> bool {
    bound(py).is_ok_and(|st| sock.get_type().is(st.socket_class.bind(py)))
}

/// The fd of `sock` if it is exactly `socket.socket` and open.
pub fn plain_fd(py: Python<'_>, sock: &Bound<'_, PyAny>) -> Option<RawFd> {
    // FD_FIELD_TYPE is only ever set below, for a type is_plain accepted
    // (the real socket.socket): the same type needs neither check again.
    #[cfg(unix)]
    if sock.get_type_ptr() as usize == FD_FIELD_TYPE.load(Ordering::Relaxed) {
        // SAFETY: `sock`'s exact type is one whose objects were checked to
        // be `_socket.socket`s with the fd where read_fd_field looks.
        let fd = unsafe { read_fd_field(sock) };
        return (fd >= 0).then_some(fd);
    }
    if !is_plain(py, sock) {
        return None;
    }
    #[cfg(unix)]
    let fd = fileno_checking_layout(py, sock)?;
    #[cfg(windows)]
    let fd = call_fileno(py, sock)?;
    (fd >= 0).then_some(fd)
}

/// `sock.fileno()` without binding a method object (PyObject_AsFileDescriptor
/// would bind one); a closed socket gives -1.
fn call_fileno(py: Python<'_>, sock: &Bound<'_, PyAny>) -> Option<RawFd> {
    crate::calls::call_method0(sock, names::fileno(py))
        .and_then(|n| n.extract::<RawFd>())
        .ok()
}

/// The type (address, kept alive) whose objects' fd is read from the object
/// itself; 0 until one is checked.
#[cfg(unix)]
static FD_FIELD_TYPE: AtomicUsize = AtomicUsize::new(0);

/// `sock_fd` of CPython's `PySocketSockObject` (Modules/socketmodule.h: the
/// first field after the object header, an `int` on POSIX; -1 once closed or
/// detached). What `sock.fileno()` returns, without the method call (about
/// 400 instructions, twice per echoed request).
///
/// # Safety
/// `sock` must be an instance of `_socket.socket` (or a subclass).
#[cfg(unix)]
unsafe fn read_fd_field(sock: &Bound<'_, PyAny>) -> RawFd {
    // SAFETY: the caller's contract: the object is at least a
    // PySocketSockObject, whose first field after the header is sock_fd.
    unsafe {
        sock.as_ptr()
            .cast::<u8>()
            .add(std::mem::size_of::<pyo3::ffi::PyObject>())
            .cast::<RawFd>()
            .read_unaligned()
    }
}

/// `sock.fileno()`; on the way, learns whether `sock`'s type keeps the fd
/// where read_fd_field reads it (a `_socket.socket` subclass whose field
/// agrees with `fileno()` on an open socket), and if so, remembers the type.
#[cfg(unix)]
#[cold]
fn fileno_checking_layout(py: Python<'_>, sock: &Bound<'_, PyAny>) -> Option<RawFd> {
    let fd = call_fileno(py, sock)?;
    let ty = sock.get_type();
    let is_c_socket = py
        .import("_socket")
        .and_then(|m| m.getattr("socket"))
        .is_ok_and(|base| {
            base.cast::<pyo3::types::PyType>()
                .is_ok_and(|base| ty.is_subclass(base).unwrap_or(false))
        });
    // SAFETY: checked just above to be a `_socket.socket` instance.
    if fd >= 0 && is_c_socket && unsafe { read_fd_field(sock) } == fd {
        // Kept alive for good, so that its address is never another type's.
        std::mem::forget(ty.clone().unbind());
        FD_FIELD_TYPE.store(ty.as_ptr() as usize, Ordering::Relaxed);
    }
    Some(fd)
}

#[cfg(unix)]
thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs a non-blocking socket syscall (returning a count or -1) once.
///
/// EINTR (PEP 475): the signal handlers run, then the Python method makes the
/// call again (`Fallback`). Not a retry here: a handler may close the socket
/// and open another on the same fd number, and only the socket object knows
/// its current fd (CPython's sock_call_ex reads it again for each attempt).
#[cfg(unix)]
pub fn nonblocking(py: Python<'_>, call: impl FnOnce() -> isize) -> Syscall<usize> {
    let n = call();
    if n >= 0 {
        return Syscall::Done(n as usize);
    }
    match last_errno() {
        libc::EINTR => match py.check_signals() {
            Ok(()) => Syscall::Fallback,
            Err(e) => Syscall::Failed(e),
        },
        libc::EAGAIN => Syscall::Fallback,
        errno => Syscall::Failed(os_error(py, errno)),
    }
}

/// The largest read done directly: the scratch buffer is per thread and kept,
/// and a larger request (`recv(2**40)`) goes to the Python method, which raises
/// MemoryError as CPython does where an allocation here would abort.
const MAX_DIRECT_RECV: usize = 1 << 20;

/// Receives up to `size` bytes from `fd` and hands them to `take`.
#[cfg(unix)]
pub fn recv_with<R>(
    py: Python<'_>,
    fd: RawFd,
    size: usize,
    take: impl FnOnce(&[u8]) -> R,
) -> Syscall<R> {
    if size > MAX_DIRECT_RECV {
        return Syscall::Fallback;
    }
    SCRATCH.with(|cell| {
        // In use further up this thread's stack (a signal handler or `take`
        // reading a socket again): the Python method does this read.
        let Ok(mut buf) = cell.try_borrow_mut() else {
            return Syscall::Fallback;
        };
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let ptr = buf.as_mut_ptr();
        // SAFETY: `ptr` points to `buf`, which holds at least `size` writable
        // bytes and is borrowed (so neither moved nor resized) until `take`
        // has read it; recv writes at most `size` bytes. `fd` is the open fd
        // of a socket object our caller holds.
        let got = nonblocking(py, || unsafe {
            libc::recv(fd, ptr.cast(), size, libc::MSG_DONTWAIT)
        });
        match got {
            Syscall::Done(n) => Syscall::Done(take(&buf[..n])),
            Syscall::Fallback => Syscall::Fallback,
            Syscall::Failed(e) => Syscall::Failed(e),
        }
    })
}

/// Sends `data` on `fd` without blocking; returns the count sent.
#[cfg(unix)]
pub fn send_fd(py: Python<'_>, fd: RawFd, data: &[u8]) -> Syscall<usize> {
    // SAFETY: `data` is a valid slice for the duration of the call and send
    // only reads `data.len()` bytes of it; `fd` is the open fd of a socket
    // object our caller holds. MSG_NOSIGNAL: a closed peer gives EPIPE, not
    // SIGPIPE (CPython ignores SIGPIPE at start-up to the same effect).
    nonblocking(py, || unsafe {
        libc::send(fd, data.as_ptr().cast(), data.len(), SEND_FLAGS)
    })
}

/// Flags of every direct send: never block, and no SIGPIPE on a closed
/// connection (the error comes back as EPIPE, as CPython's send gives it;
/// CPython also ignores SIGPIPE at start-up).
#[cfg(unix)]
pub const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// Windows: the caller falls back to the Python method (see the module doc).
#[cfg(windows)]
pub fn recv_with<R>(
    _py: Python<'_>,
    _fd: RawFd,
    _size: usize,
    _take: impl FnOnce(&[u8]) -> R,
) -> Syscall<R> {
    Syscall::Fallback
}

/// Windows: the caller falls back to the Python method, as for `recv_with`.
#[cfg(windows)]
pub fn send_fd(_py: Python<'_>, _fd: RawFd, _data: &[u8]) -> Syscall<usize> {
    Syscall::Fallback
}

#[cfg(unix)]
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reads at least this large go straight into the bytes object returned;
/// smaller ones through the scratch buffer and a copy. Allocating the full
/// requested size and shrinking it (CPython's way) costs a malloc and a
/// realloc, about 900 instructions: more than copying a few KiB, far less
/// than copying 64 KiB.
const BIG_READ: usize = 8192;

/// `recv(size)` on `fd` as a new bytes object. `big` is the channel's guess,
/// from its last read, whether this read will be large (a guess only picks
/// the way; both give the same bytes). Updated with what came.
pub fn recv_new_bytes<'py>(
    py: Python<'py>,
    fd: RawFd,
    size: usize,
    big: &AtomicBool,
) -> Syscall<Bound<'py, PyBytes>> {
    let got = if (BIG_READ..=MAX_DIRECT_RECV).contains(&size) && big.load(Ordering::Relaxed) {
        recv_in_place(py, fd, size)
    } else {
        recv_with(py, fd, size, |data| PyBytes::new(py, data))
    };
    if let Syscall::Done(b) = &got {
        big.store(b.as_bytes().len() >= BIG_READ, Ordering::Relaxed);
    }
    got
}

/// recv(2) straight into a bytes object of the requested size, shrunk to what
/// came, as CPython's `sock.recv` does: no copy of the payload.
#[cfg(all(unix, not(feature = "abi3")))]
fn recv_in_place(py: Python<'_>, fd: RawFd, size: usize) -> Syscall<Bound<'_, PyBytes>> {
    use pyo3::ffi;
    extern "C" {
        // Not in the limited API; CPython's socketmodule.c shrinks with it.
        fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> i32;
    }
    let Ok(len) = ffi::Py_ssize_t::try_from(size) else {
        return Syscall::Fallback; // let socket.recv raise what CPython raises
    };
    // SAFETY: the GIL is held; a NULL source makes an uninitialised object of
    // `size` bytes that nothing else sees until it is returned.
    let mut obj = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
    if obj.is_null() {
        return Syscall::Failed(PyErr::fetch(py));
    }
    // SAFETY: obj is a fresh bytes object with `size` writable bytes; the
    // pointer is used only before obj is resized or released. `fd` is the
    // open fd of a socket object our caller holds.
    let got = nonblocking(py, || unsafe {
        libc::recv(
            fd,
            ffi::PyBytes_AsString(obj).cast(),
            size,
            libc::MSG_DONTWAIT,
        )
    });
    match got {
        Syscall::Done(n) => {
            // SAFETY: obj has one reference, ours; _PyBytes_Resize replaces
            // it (or frees it and sets NULL with an error set on failure).
            if n != size && unsafe { _PyBytes_Resize(&raw mut obj, n as ffi::Py_ssize_t) } < 0 {
                return Syscall::Failed(PyErr::fetch(py));
            }
            // SAFETY: obj is an owned reference to a bytes object.
            Syscall::Done(unsafe { Bound::from_owned_ptr(py, obj).cast_into_unchecked() })
        }
        other => {
            // SAFETY: our own reference to a fresh object nothing else saw.
            unsafe { ffi::Py_DECREF(obj) };
            match other {
                Syscall::Failed(e) => Syscall::Failed(e),
                _ => Syscall::Fallback,
            }
        }
    }
}

/// The abi3 build cannot shrink a bytes object (`_PyBytes_Resize` is not in
/// the limited API), and Windows falls back: through the scratch buffer.
#[cfg(any(not(unix), feature = "abi3"))]
fn recv_in_place(py: Python<'_>, fd: RawFd, size: usize) -> Syscall<Bound<'_, PyBytes>> {
    recv_with(py, fd, size, |data| PyBytes::new(py, data))
}

/// `sock.recv(size)` as bytes, by a syscall when `sock` is plain (`big`: see
/// recv_new_bytes).
pub fn recv_bytes<'py>(
    py: Python<'py>,
    sock: &Bound<'py, PyAny>,
    size: &Bound<'py, PyAny>,
    big: &AtomicBool,
) -> PyResult<Bound<'py, PyAny>> {
    if let (Some(fd), Some(n)) = (plain_fd(py, sock), crate::pyobj::to_usize(size)) {
        match recv_new_bytes(py, fd, n, big) {
            Syscall::Done(b) => return Ok(b.into_any()),
            Syscall::Failed(e) => return Err(e),
            Syscall::Fallback => {}
        }
    }
    sock.call_method1(names::recv(py), (size,))
}

/// `sock.send(data)`, by a syscall when `sock` is plain and `data` is bytes.
pub fn send_obj<'py>(
    py: Python<'py>,
    sock: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    if let (Some(fd), Ok(bytes)) = (plain_fd(py, sock), data.cast::<PyBytes>()) {
        match send_fd(py, fd, bytes.as_bytes()) {
            Syscall::Done(n) => return Ok(n.into_pyobject(py)?.into_any()),
            Syscall::Failed(e) => return Err(e),
            Syscall::Fallback => {}
        }
    }
    sock.call_method1(names::send(py), (data,))
}
