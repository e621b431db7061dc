//! Opt-in batching of `async_chat.push()` output (`ac_batch_output = True`).
//!
//! CPython's `push()` calls `initiate_send()`, so a handler that answers 100
//! lines makes 100 `send()` calls. For a class that opts in, while our loop
//! dispatches an event, a push on a channel whose output path is all built-in
//! (our `initiate_send`, our `send`, a plain socket, our fifo) is queued, and
//! the queue goes out in one `sendmsg()` when the handler returns, still inside
//! the event's error handling. The bytes, their order and the errors are the
//! same, and Python access that could tell (reading `socket` or
//! `producer_fifo`, `writable()`, `initiate_send()`, `close()`,
//! `discard_buffers()`, `del_channel()`) first sends what is queued.
//!
//! It is not the default because one thing does change: a handler that pushes
//! and then waits for the peer's answer inside the same handler (CPython's own
//! test FTP server does, with a blocking accept() after "227 passive mode")
//! would wait forever, its push not yet sent.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::dispatcher::{connected, has_builtin, producer_fifo_of, socket_of, Dispatcher};
use crate::errors::{call_in_except, errno_of, is_disconnect};
use crate::fifo::Fifo;
use crate::sockio::{is_plain, nonblocking, plain_fd, Direct};

/// Most items and bytes one `sendmsg()` gathers.
const MAX_IOV: usize = 64;
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

/// Whether `push()` on this channel may be batched now.
pub fn may_defer(slf: &Bound<'_, Dispatcher>) -> PyResult<bool> {
    if DISPATCH.with(|d| d.borrow().depth) == 0 {
        return Ok(false);
    }
    let py = slf.py();
    let me = slf.get();
    let path = match me.builtin_output.load(Ordering::Relaxed) {
        0 => {
            let ok = slf
                .getattr(intern!(py, "ac_batch_output"))
                .and_then(|v| v.is_truthy())
                .unwrap_or(false)
                && has_builtin(
                    slf,
                    intern!(py, "initiate_send"),
                    intern!(py, "_ac_initiate_send"),
                )
                && has_builtin(slf, intern!(py, "send"), intern!(py, "send"));
            me.builtin_output
                .store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
        v => v == 1,
    };
    Ok(path
        && connected(slf)?
        && producer_fifo_of(slf)?.cast::<Fifo>().is_ok()
        && is_plain(py, &socket_of(slf)?))
}

/// Queues the channel's output for the end of the event.
pub fn defer(slf: &Bound<'_, Dispatcher>) {
    if !slf.get().deferred.swap(true, Ordering::Relaxed) {
        let ch = slf.clone().unbind();
        DISPATCH.with(|d| d.borrow_mut().pending.push(ch));
    }
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
        let batch = gather(py, fifo.get());
        if batch.is_empty() {
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
            continue;
        }
        match send_batch(fd, py, &batch) {
            Ok(sent) => {
                let total: usize = batch.iter().map(|b| b.bind(py).as_bytes().len()).sum();
                consume(py, fifo.get(), &batch, sent);
                if sent < total {
                    return Ok(()); // the socket is full: writable events go on
                }
            }
            Err(Some(e)) => return send_failed(slf, e),
            Err(None) => return Ok(()), // would block
        }
    }
}

/// The leading run of bytes items (empty ones included) of the fifo.
fn gather(py: Python<'_>, fifo: &Fifo) -> Vec<Py<PyBytes>> {
    fifo.front_run(py, MAX_IOV, MAX_BYTES)
}

fn send_batch(fd: RawFd, py: Python<'_>, batch: &[Py<PyBytes>]) -> Result<usize, Option<PyErr>> {
    let iov: Vec<libc::iovec> = batch
        .iter()
        .map(|b| {
            let s = b.bind(py).as_bytes();
            libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            }
        })
        .collect();
    // SAFETY: the iovecs point into bytes objects `batch` keeps alive.
    let sent = nonblocking(py, || unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr().cast_mut();
        msg.msg_iovlen = iov.len();
        libc::sendmsg(fd, &raw const msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    });
    match sent {
        Direct::Done(n) => Ok(n),
        Direct::Fallback => Err(None),
        Direct::Failed(e) => Err(Some(e)),
    }
}

/// Drops the items fully sent and keeps the unsent tail of a partial one.
fn consume(py: Python<'_>, fifo: &Fifo, batch: &[Py<PyBytes>], mut sent: usize) {
    fifo.edit(|items| {
        for b in batch {
            let Some(front) = items.front() else { return };
            if !front.bind(py).is(b.bind(py)) {
                return;
            }
            let data = b.bind(py).as_bytes();
            if sent >= data.len() {
                sent -= data.len();
                items.pop_front();
            } else {
                if sent > 0 {
                    items[0] = PyBytes::new(py, &data[sent..]).into_any().unbind();
                }
                return;
            }
        }
    });
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
