//! Batching of `async_chat.push()` output (`ac_batch_output`).
//!
//! CPython's `push()` calls `initiate_send()`, so a handler that answers 100
//! pipelined lines makes 100 `send()` calls. When a push may be batched, and
//! the channel's output path is all built-in (our `initiate_send`, our `send`,
//! a plain socket, our fifo), it is queued, and the queue goes out in one
//! `sendmsg()` a little later. The bytes, their order and the errors are the
//! same, and Python access that could tell (reading `socket` or
//! `producer_fifo`; assigning them or `connected`; `writable()`,
//! `initiate_send()`, `close()`, `discard_buffers()`, `del_channel()`) first
//! sends what is queued.
//!
//! `ac_batch_output` chooses when a push may be batched:
//! - `"pipelined"` (the default): only inside a `found_terminator()` call that
//!   has more received input already buffered behind its message, i.e. input
//!   the peer sent without waiting for this reply. The queue goes out when the
//!   first message without input behind it pushes, or when `handle_read`'s
//!   scan ends. The reply to the last message buffered is sent by its own
//!   push, as in CPython, so a peer that waits for it is never kept waiting.
//! - `True`: every push made while our loop dispatches an event; the queue
//!   goes out when the handler returns, still inside the event's error
//!   handling.
//! - `False`: never (CPython's one send per push).
//!
//! What can tell the difference: a handler that pushes and then blocks
//! waiting for the peer's answer inside the same handler (CPython's own test
//! FTP server does, with a blocking accept() after "227 passive mode") waits
//! forever, its push not yet sent. With `"pipelined"` this needs a peer that
//! has also sent its next request before reading the reply.
//!
//! Uses: channel, errors, fifo, sockio.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::channel::{
    connected, has_builtin, producer_fifo_of, socket_of, Dispatcher, F_CONNECTED, F_FIFO, F_SOCKET,
};
use crate::errors::{call_in_except, errno_of, is_disconnect, os_error};
use crate::fifo::Fifo;
use crate::sockio::{is_plain, last_errno, plain_fd};

/// Most items and bytes one `sendmsg()` gathers (Linux's UIO_MAXIOV is 1024).
const MAX_IOV: usize = 1024;
const MAX_BYTES: usize = 256 * 1024;

#[derive(Default)]
struct Dispatch {
    depth: u32,
    pending: Vec<Py<Dispatcher>>,
}

thread_local! {
    static DISPATCH: RefCell<Dispatch> = RefCell::new(Dispatch::default());
}

/// Runs one event's handler with pushes batched, then sends the batch. Both
/// run inside the caller's error handling, as CPython's push would.
pub fn dispatching(py: Python<'_>, handler: impl FnOnce() -> PyResult<()>) -> PyResult<()> {
    DISPATCH.with(|d| d.borrow_mut().depth += 1);
    let result = handler();
    let pending = DISPATCH.with(|d| {
        let mut d = d.borrow_mut();
        d.depth -= 1;
        std::mem::take(&mut d.pending)
    });
    let mut flushed = Ok(());
    for ch in pending {
        let r = flush(ch.bind(py));
        if flushed.is_ok() {
            flushed = r;
        }
    }
    result.and(flushed)
}

/// When a channel's pushes may be batched (`Dispatcher::batch_mode`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    Never = 1,
    Pipelined = 2,
    Always = 3,
}

/// The channel's batch mode, read from `ac_batch_output` once per object.
fn batch_mode(slf: &Bound<'_, Dispatcher>) -> BatchMode {
    let me = slf.get();
    match me.batch_mode.load(Ordering::Relaxed) {
        1 => return BatchMode::Never,
        2 => return BatchMode::Pipelined,
        3 => return BatchMode::Always,
        _ => {}
    }
    let mode = read_batch_mode(slf);
    me.batch_mode.store(mode as u8, Ordering::Relaxed);
    mode
}

#[cold]
fn read_batch_mode(slf: &Bound<'_, Dispatcher>) -> BatchMode {
    let py = slf.py();
    let builtin_path = has_builtin(
        slf,
        intern!(py, "initiate_send"),
        intern!(py, "_ac_initiate_send"),
    ) && has_builtin(slf, intern!(py, "send"), intern!(py, "send"));
    if !builtin_path {
        return BatchMode::Never;
    }
    let Ok(value) = slf.getattr(intern!(py, "ac_batch_output")) else {
        return BatchMode::Never;
    };
    if value
        .cast::<PyString>()
        .is_ok_and(|s| s.to_cow().is_ok_and(|s| s == "pipelined"))
    {
        BatchMode::Pipelined
    } else if value.is_truthy().unwrap_or(false) {
        BatchMode::Always
    } else {
        BatchMode::Never
    }
}

/// Queues this `push()`'s output if the channel may batch now; false when
/// the caller must send as CPython does.
pub fn defer_push(slf: &Bound<'_, Dispatcher>) -> PyResult<bool> {
    let me = slf.get();
    let register = match batch_mode(slf) {
        // Flushed by the scan that set the flag: nothing to register.
        BatchMode::Pipelined if me.pipelined.load(Ordering::Relaxed) => false,
        BatchMode::Always if DISPATCH.with(|d| d.borrow().depth) > 0 => true,
        _ => return Ok(false),
    };
    // A batch is open: its checks below still hold, because assigning
    // `connected`, `socket` or `producer_fifo` sends the batch first (unless a
    // subclass shadows them, then we check again).
    if me.deferred.load(Ordering::Relaxed)
        && Dispatcher::is_direct(slf, F_CONNECTED | F_SOCKET | F_FIFO)
    {
        return Ok(true);
    }
    let py = slf.py();
    if !(connected(slf)?
        && producer_fifo_of(slf)?.cast::<Fifo>().is_ok()
        && is_plain(py, &socket_of(slf)?))
    {
        return Ok(false);
    }
    if !me.deferred.swap(true, Ordering::Relaxed) && register {
        let ch = slf.clone().unbind();
        DISPATCH.with(|d| d.borrow_mut().pending.push(ch));
    }
    Ok(true)
}

/// Runs `found_terminator` (`call`) with pushes batched if the channel's mode
/// is `"pipelined"` and `more_input` (received input is buffered behind this
/// message). The caller flushes when its scan ends.
pub fn pipelined<R>(slf: &Bound<'_, Dispatcher>, more_input: bool, call: impl FnOnce() -> R) -> R {
    let me = slf.get();
    // Load and store, not swap: the GIL orders these, no locked instruction needed.
    let prev = me.pipelined.load(Ordering::Relaxed);
    me.pipelined.store(more_input, Ordering::Relaxed);
    let r = call();
    me.pipelined.store(prev, Ordering::Relaxed);
    r
}

/// Sends what `push()` queued on this channel, as the `initiate_send()` calls
/// CPython would have made by now.
pub fn flush(slf: &Bound<'_, Dispatcher>) -> PyResult<()> {
    if !slf.get().deferred.swap(false, Ordering::Relaxed) {
        return Ok(());
    }
    let py = slf.py();
    loop {
        if !connected(slf)? {
            return Ok(());
        }
        let fifo = producer_fifo_of(slf)?;
        let Ok(fifo) = fifo.cast::<Fifo>() else {
            slf.call_method0(intern!(py, "initiate_send"))?;
            return Ok(());
        };
        let Some(fd) = plain_fd(py, &socket_of(slf)?) else {
            slf.call_method0(intern!(py, "initiate_send"))?;
            return Ok(());
        };
        match send_front(py, fifo.get(), fd) {
            Some(Ok(Sent { sent, total })) => {
                if sent < total {
                    return Ok(()); // the socket is full: writable events go on
                }
            }
            Some(Err(libc::EINTR)) => py.check_signals()?, // PEP 475: retry
            Some(Err(errno)) if errno == libc::EAGAIN || errno == libc::EWOULDBLOCK => {
                return Ok(());
            }
            Some(Err(errno)) => return send_failed(slf, os_error(py, errno)),
            None => {
                // A producer, None or a non-bytes item at the head: CPython's path.
                let before = fifo.get().len();
                if before == 0 {
                    return Ok(());
                }
                let head = fifo.get().front(py);
                slf.call_method0(intern!(py, "initiate_send"))?;
                let after = fifo.get().front(py);
                let moved = fifo.get().len() != before
                    || !matches!((&head, &after), (Some(a), Some(b)) if a.is(b));
                if !moved {
                    return Ok(());
                }
            }
        }
    }
}

struct Sent {
    sent: usize,
    total: usize,
}

/// One `sendmsg()` of the fifo's leading run of exact bytes items (empty ones
/// included), straight from the fifo: the items sent are popped and a partly
/// sent one keeps its unsent tail. None when the head is not bytes; the errno
/// when the call failed. The GIL is held and no Python code runs while the
/// fifo is locked.
fn send_front(py: Python<'_>, fifo: &Fifo, fd: RawFd) -> Option<Result<Sent, i32>> {
    fifo.edit(|items| {
        let mut iov = Vec::with_capacity(items.len().min(MAX_IOV));
        let mut total = 0;
        for item in items.iter().take(MAX_IOV) {
            let Ok(b) = item.bind(py).cast_exact::<PyBytes>() else {
                break;
            };
            if total >= MAX_BYTES {
                break;
            }
            let s = b.as_bytes();
            total += s.len();
            iov.push(libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            });
        }
        if iov.is_empty() {
            return None;
        }
        // SAFETY: the iovecs point into bytes objects the locked fifo holds.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            libc::sendmsg(fd, &raw const msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        let Ok(sent) = usize::try_from(n) else {
            return Some(Err(last_errno()));
        };
        pop_sent(py, items, iov.len(), sent);
        Some(Ok(Sent { sent, total }))
    })
}

/// Drops the first `count` items as far as `sent` bytes cover them; a partly
/// sent item keeps its unsent tail.
fn pop_sent(py: Python<'_>, items: &mut VecDeque<Py<PyAny>>, count: usize, mut sent: usize) {
    for _ in 0..count {
        let Some(front) = items.front() else { return };
        let Ok(b) = front.bind(py).cast_exact::<PyBytes>() else {
            return;
        };
        let data = b.as_bytes();
        if sent >= data.len() {
            sent -= data.len();
            items.pop_front();
        } else {
            if sent > 0 {
                let rest = PyBytes::new(py, &data[sent..]).into_any().unbind();
                items[0] = rest;
            }
            return;
        }
    }
}

/// What `dispatcher.send` and `initiate_send` do with a failed send.
#[cold]
fn send_failed(slf: &Bound<'_, Dispatcher>, e: PyErr) -> PyResult<()> {
    let py = slf.py();
    match errno_of(py, &e) {
        Some(errno) if is_disconnect(py, errno)? => {
            slf.call_method0(intern!(py, "handle_close"))?;
            Ok(())
        }
        _ if e.is_instance_of::<PyOSError>(py) => {
            call_in_except(py, slf, intern!(py, "handle_error"), e)
        }
        _ => Err(e),
    }
}
