//! Batching of `async_chat` output (`ac_batch_output`), as an exact model of
//! CPython's output path.
//!
//! CPython's `push()` and `push_with_producer()` call `initiate_send()`, which
//! takes exactly one fifo item or one producer chunk and makes one `send()`.
//! We run that same `initiate_send()` at the same moment, with the same fifo
//! consumption, `more()` calls, `None` handling and error paths; only its
//! `send()` syscall may become a *virtual send*: the data is appended to the
//! channel's queue and reported as sent in full, as a kernel with room in its
//! buffer would. The queue goes out in one `sendmsg()` when the batch window
//! ends, and before anything else can write to the socket or close it:
//! - a real send made by `initiate_send` (the queue and the data share one
//!   `sendmsg()`), by `dispatcher.send`, or through `self.socket` (its getter);
//! - assigning `socket` (queued bytes belong to the old one), `close()`;
//! - `initiate_send` reaching a `None` (`close_when_done`) or a Python `send`.
//!
//! Back-pressure: when the kernel takes only part of the queue, the unsent
//! items go back to the front of `producer_fifo`, in order, where CPython's
//! own unsent data would be. The stream is then the one CPython makes with a
//! kernel buffer of the size that accepted the first part: same bytes, same
//! order, nothing lost or repeated.
//!
//! A virtual send is made only when nothing outside the channel can write to
//! the socket meanwhile: `initiate_send`, `send` and the fifo are ours, the
//! socket is a plain `socket.socket` that no other Python object references
//! (its refcount is ours alone, so no cached reference, `makefile()` or
//! wrapper can send behind the queue), and the queue is under 1024 items and
//! 256 KiB. Otherwise the send is real, as CPython's.
//!
//! `ac_batch_output` chooses the batch window:
//! - `"pipelined"` (the default): a `found_terminator()` that has more received
//!   input buffered behind its message (the peer sent it without waiting for
//!   this reply); the window ends with the scan of `handle_read`.
//! - `True`: any event our loop dispatches; the window ends when the handler
//!   returns, still inside the event's error handling.
//! - `False`: never (one real send per `initiate_send`).
//!
//! What can still tell: the time the bytes reach the peer. A handler that
//! pushes and then blocks waiting for the peer's answer inside the same window
//! waits until its block times out.
//!
//! Uses: channel, errors, fd_map, fifo, names, sockio.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};

use crate::channel::{producer_fifo_of, socket_of, Dispatcher, Fields, F_SOCKET, S_CONNECTED};
use crate::errors::{call_in_except, is_disconnect, os_error};
use crate::fd_map::RawFd;
use crate::fifo::Fifo;
use crate::names;
use crate::sockio::plain_fd;
#[cfg(unix)]
use crate::sockio::{last_errno, SEND_FLAGS};

#[derive(Default)]
struct Dispatch {
    depth: u32,
    pending: Vec<Py<Dispatcher>>,
}

thread_local! {
    static DISPATCH: RefCell<Dispatch> = RefCell::new(Dispatch::default());
}

/// Runs one event's handler as a batch window of `ac_batch_output = True`
/// channels, then sends their queues, inside the caller's error handling.
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

/// When a channel's sends may be virtual (`Dispatcher::batch_mode`).
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
    let Ok(value) = slf.getattr(names::ac_batch_output(py)) else {
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

/// Whether a batch window is open for this channel now.
pub fn window_open(slf: &Bound<'_, Dispatcher>) -> bool {
    match batch_mode(slf) {
        BatchMode::Never => false,
        BatchMode::Pipelined => slf.get().pipelined.load(Ordering::Relaxed),
        BatchMode::Always => DISPATCH.with(|d| d.borrow().depth > 0),
    }
}

/// `window_open`, false while the channel's batch mode is not read yet (so
/// that a caller ahead of CPython's own reads does not read it first).
pub fn window_known_open(slf: &Bound<'_, Dispatcher>) -> bool {
    let me = slf.get();
    match me.batch_mode.load(Ordering::Relaxed) {
        m if m == BatchMode::Pipelined as u8 => me.pipelined.load(Ordering::Relaxed),
        m if m == BatchMode::Always as u8 => DISPATCH.with(|d| d.borrow().depth > 0),
        _ => false,
    }
}

/// Runs `found_terminator` (`call`) as a batch window if the channel's mode
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

/// Whether the channel has virtually sent data not yet on the wire.
pub fn has_queued(slf: &Bound<'_, Dispatcher>) -> bool {
    slf.get().queued.load(Ordering::Relaxed)
}

/// Whether the channel's socket is a plain, open `socket.socket` that no
/// Python object but the channel holds, so nothing can write to it behind
/// the queue. `sock` is the socket field, read under the channel's lock.
fn socket_is_exclusive(me: &Dispatcher, sock: &Py<PyAny>) -> Exclusive {
    if cfg!(windows) {
        // The queue goes out in one sendmsg(), a POSIX call: on Windows every
        // send is real, as CPython's.
        return Exclusive::No;
    }
    // One reference: the channel's field. A subclass that shadows `socket`
    // keeps another one in its __dict__, and loses batching.
    // SAFETY: `sock` is a live object; reading its refcount has no effect.
    if unsafe { pyo3::ffi::Py_REFCNT(sock.as_ptr()) } != 1 {
        return Exclusive::No;
    }
    // Open: checked once per socket object with a fileno() call. Only the
    // channel holds it, so it can be closed only through the channel, whose
    // `socket` getter and setter and close() forget the check (channel.rs
    // `expose_socket`, `replace_socket`, `forget_socket`).
    if me.socket_seen() {
        Exclusive::Yes
    } else {
        Exclusive::Unchecked
    }
}

enum Exclusive {
    Yes,
    No,
    /// Exclusive, but not yet seen open (plain_fd says, outside the lock).
    Unchecked,
}

/// Checks, once per socket assigned, that the channel's socket is open; true
/// when it is (and remembered as seen).
#[cold]
fn check_socket_open(slf: &Bound<'_, Dispatcher>) -> bool {
    let Ok(sock) = socket_of(slf) else {
        return false;
    };
    if plain_fd(slf.py(), &sock).is_none() {
        return false;
    }
    slf.get().mark_socket_seen(&sock);
    true
}

/// `data` as a bytes object the queue can hold: bytes itself, or a copy of a
/// bytearray or memoryview (their contents may change after the send).
fn frozen_bytes<'py>(data: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
    if let Ok(b) = data.cast_exact::<PyBytes>() {
        return Some(b.clone());
    }
    if data.is_exact_instance_of::<PyByteArray>() || data.is_exact_instance_of::<PyMemoryView>() {
        let b = data.py().get_type::<PyBytes>().call1((data,)).ok()?;
        return b.cast_into::<PyBytes>().ok();
    }
    None
}

/// The virtual send: queues `data` as sent in full if a batch window is open
/// and nothing else can reach the socket. Returns the count "sent", or None
/// when the caller must send for real.
///
/// The caller is our `initiate_send`, with our `send`, connected, `data` its
/// fifo head's slice (CPython's `first[:obs]`).
pub fn virtual_send(
    slf: &Bound<'_, Dispatcher>,
    fifo: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
) -> Option<usize> {
    if !window_open(slf) || fifo.cast::<Fifo>().is_err() || !Dispatcher::is_direct(slf, F_SOCKET) {
        return None;
    }
    let bytes = frozen_bytes(data)?;
    let n = bytes.as_bytes().len();
    if n == 0 {
        // socket.send(b"") returns 0, and initiate_send then keeps its item.
        return Some(0);
    }
    queue_exclusive(slf, bytes.unbind(), n, |_| true).then_some(n)
}

/// `push(data)` in one step (async_chat.rs `push`): CPython appends `data`
/// to an empty fifo and its `initiate_send` sends all of it at once; here the
/// send is virtual and the fifo is never touched. True when done; false when
/// nothing was done and the caller must take CPython's steps.
///
/// The caller has checked what needs Python: our `initiate_send` and `send`,
/// `data` non-empty exact bytes that `ac_out_buffer_size` does not cut, a
/// window open, and the `connected`, `producer_fifo` and `socket` fields
/// authoritative. This checks the rest as `virtual_send` and CPython's
/// `initiate_send` would (our fifo, empty; connected; the socket exclusive;
/// room in the queue), under one lock with the append.
pub fn push_virtual(slf: &Bound<'_, Dispatcher>, data: &Bound<'_, PyBytes>) -> bool {
    let py = slf.py();
    let fifo_empty_and_connected = |st: &Fields| {
        slf.get().state(S_CONNECTED)
            && st.chat().producer_fifo.as_ref().is_some_and(|f| {
                f.bind(py)
                    .cast::<Fifo>()
                    .is_ok_and(|f| f.get().is_empty(py))
            })
    };
    let n = data.as_bytes().len();
    queue_exclusive(slf, data.clone().unbind(), n, fifo_empty_and_connected)
}

/// Appends `bytes` (`n` long) to the channel's queue as sent, if `ready`
/// holds for its fields, the socket is the channel's alone (checked open
/// once per socket assigned) and the queue has room: the checks and the
/// append under one lock. Then notes the queue (`note_queued`). False when
/// nothing was queued.
fn queue_exclusive(
    slf: &Bound<'_, Dispatcher>,
    bytes: Py<PyBytes>,
    n: usize,
    ready: impl Fn(&Fields) -> bool,
) -> bool {
    let (me, py) = (slf.get(), slf.py());
    let mut checked = false;
    loop {
        let exclusive = {
            let mut st = me.fields(py);
            if !ready(&st) {
                return false;
            }
            let exclusive = match &st.socket {
                Some(sock) => socket_is_exclusive(me, sock),
                None => Exclusive::No,
            };
            if let Exclusive::Yes = exclusive {
                if !st.chat().out_queue.has_room(n) {
                    return false;
                }
                st.chat_mut().out_queue.push(bytes, n);
                break;
            }
            exclusive
        };
        match exclusive {
            Exclusive::Unchecked if !checked && check_socket_open(slf) => checked = true,
            _ => return false,
        }
    }
    note_queued(slf);
    true
}

/// Data was queued: remember it, and for `ac_batch_output = True` have the
/// dispatch that opened the window send it.
fn note_queued(slf: &Bound<'_, Dispatcher>) {
    // Load and store, not swap: the GIL orders these (no locked instruction).
    let queued = &slf.get().queued;
    let was_queued = queued.load(Ordering::Relaxed);
    queued.store(true, Ordering::Relaxed);
    if !was_queued && batch_mode(slf) == BatchMode::Always {
        let ch = slf.clone().unbind();
        DISPATCH.with(|d| d.borrow_mut().pending.push(ch));
    }
}

/// The real send of `initiate_send` when data is queued: the queue and `data`
/// in one `sendmsg()`. Returns what CPython's `self.send(data)` would return
/// (the count of `data` sent; 0 when the kernel took no byte of it), or None
/// when the caller must send `data` itself (after this sent the queue).
pub fn send_after_queue<'py>(
    slf: &Bound<'py, Dispatcher>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = slf.py();
    let bytes = match frozen_bytes(data) {
        Some(b)
            if slf
                .get()
                .fields(py)
                .chat()
                .out_queue
                .has_room(b.as_bytes().len()) =>
        {
            b
        }
        _ => {
            flush(slf)?;
            return Ok(None);
        }
    };
    let queued = slf.get().fields(py).chat().out_queue.bytes();
    match send_queue(slf, Some(&bytes))? {
        Outcome::Sent(sent) => {
            let of_data = sent.saturating_sub(queued);
            Ok(Some(of_data.into_pyobject(py)?.into_any()))
        }
        Outcome::Unsent => Ok(Some(0i32.into_pyobject(py)?.into_any())),
        Outcome::Broken(e) => {
            // CPython's dispatcher.send(data) on a dead connection.
            slf.call_method0(names::handle_close(py))?;
            drop(e);
            Ok(Some(0i32.into_pyobject(py)?.into_any()))
        }
        Outcome::Failed(e) => Err(e),
    }
}

/// Sends the queued data before anything else writes to the socket. What the
/// kernel does not take goes back to the front of `producer_fifo`.
pub fn flush(slf: &Bound<'_, Dispatcher>) -> PyResult<()> {
    if !has_queued(slf) {
        return Ok(());
    }
    match send_queue(slf, None)? {
        // Broken: bytes the kernel took before the connection broke are lost
        // there too; the next read or send on the socket reports the error.
        Outcome::Sent(_) | Outcome::Unsent | Outcome::Broken(_) => Ok(()),
        Outcome::Failed(e) => {
            let py = slf.py();
            call_in_except(py, slf, names::handle_error(py), e)
        }
    }
}

enum Outcome {
    /// The kernel took this many bytes; the rest is back in the fifo.
    Sent(usize),
    /// It took nothing (would block); all of it is back in the fifo.
    Unsent,
    /// The connection is gone; the queue is dropped.
    Broken(PyErr),
    /// Another error; the queue is back in the fifo.
    Failed(PyErr),
}

/// One `sendmsg()` of the whole queue, then `extra` (EINTR: see below).
/// The queue is empty afterwards: what of it was not sent went back to the
/// fifo, or was dropped with a broken connection. `extra` is the caller's
/// (its fifo item is still in the fifo).
fn send_queue(
    slf: &Bound<'_, Dispatcher>,
    extra: Option<&Bound<'_, PyBytes>>,
) -> PyResult<Outcome> {
    let py = slf.py();
    let me = slf.get();
    let queue = {
        let mut st = me.fields(py);
        me.queued.store(false, Ordering::Relaxed);
        st.chat_mut().out_queue.take()
    };
    let sock = socket_of(slf)?;
    let Some(mut fd) = plain_fd(py, &sock) else {
        // The socket was closed behind the channel (not through close() or
        // `self.socket`): as CPython's kernel, nothing more goes out on it.
        return Ok(Outcome::Broken(os_error(py, libc::EBADF)));
    };
    let result = loop {
        match sendmsg(py, fd, &queue.items, extra) {
            Err(libc::EINTR) => {
                // PEP 475: the handlers run, then the call is made again on
                // the socket's fd as it is now (a handler may have closed it
                // and another socket may have its number: CPython's
                // sock_call_ex reads the fd again too). A handler that raises
                // leaves the queue unsent, back in the fifo.
                if let Err(e) = py.check_signals() {
                    put_back(slf, queue.items, 0)?;
                    return Err(e);
                }
                match plain_fd(py, &sock) {
                    Some(now) => fd = now,
                    None => break Err(libc::EBADF),
                }
            }
            r => break r,
        }
    };
    match result {
        Ok(sent) if sent >= queue.bytes => {
            crate::channel::recycle(queue.items);
            Ok(Outcome::Sent(sent))
        }
        Ok(0) => {
            put_back(slf, queue.items, 0)?;
            Ok(Outcome::Unsent)
        }
        Ok(sent) => {
            put_back(slf, queue.items, sent)?;
            Ok(Outcome::Sent(sent))
        }
        Err(errno) if errno == libc::EAGAIN || errno == libc::EWOULDBLOCK => {
            put_back(slf, queue.items, 0)?;
            Ok(Outcome::Unsent)
        }
        Err(errno) if is_disconnect(py, errno)? => Ok(Outcome::Broken(os_error(py, errno))),
        Err(errno) => {
            put_back(slf, queue.items, 0)?;
            Ok(Outcome::Failed(os_error(py, errno)))
        }
    }
}

/// `sendmsg()` of the items and `extra`, without blocking or SIGPIPE.
#[cfg(unix)]
fn sendmsg(
    py: Python<'_>,
    fd: RawFd,
    items: &[Py<PyBytes>],
    extra: Option<&Bound<'_, PyBytes>>,
) -> Result<usize, i32> {
    let iovec = |s: &[u8]| libc::iovec {
        iov_base: s.as_ptr() as *mut libc::c_void,
        iov_len: s.len(),
    };
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(items.len() + 1);
    iov.extend(items.iter().map(|b| iovec(b.bind(py).as_bytes())));
    iov.extend(extra.map(|b| iovec(b.as_bytes())));
    // SAFETY: every iovec points into a bytes object that `items` or `extra`
    // keeps alive for the call (bytes are immutable); msg is zeroed but for the iovecs.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        libc::sendmsg(fd, &raw const msg, SEND_FLAGS)
    };
    usize::try_from(n).map_err(|_| last_errno())
}

/// Windows: never reached. Nothing is queued there (see `socket_is_exclusive`).
#[cfg(windows)]
fn sendmsg(
    _py: Python<'_>,
    _fd: RawFd,
    _items: &[Py<PyBytes>],
    _extra: Option<&Bound<'_, PyBytes>>,
) -> Result<usize, i32> {
    Err(libc::EBADF)
}

/// Puts the items the kernel did not take (the first `sent` bytes went out)
/// back at the front of the fifo, in order: a partly sent item as its tail.
fn put_back(slf: &Bound<'_, Dispatcher>, items: Vec<Py<PyBytes>>, mut sent: usize) -> PyResult<()> {
    let py = slf.py();
    let mut unsent: VecDeque<Py<PyAny>> = VecDeque::new();
    for item in items {
        let data = item.bind(py).as_bytes();
        if sent >= data.len() {
            sent -= data.len();
        } else if sent > 0 {
            unsent.push_back(PyBytes::new(py, &data[sent..]).into_any().unbind());
            sent = 0;
        } else {
            unsent.push_back(item.into_any());
        }
    }
    let fifo = producer_fifo_of(slf)?;
    if let Ok(fifo) = fifo.cast::<Fifo>() {
        fifo.get().edit(slf.py(), |d| {
            for item in unsent.into_iter().rev() {
                d.push_front(item);
            }
        });
        return Ok(());
    }
    // Only our fifo is batched, and assigning producer_fifo flushes first;
    // a fifo swapped behind our back still gets the data.
    for item in unsent.into_iter().rev() {
        crate::fifo::push_front(&fifo, item.bind(py))?;
    }
    Ok(())
}
