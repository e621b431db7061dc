//! `asynchat.async_chat`'s behaviour, on the shared dispatcher layout.
//!
//! The input side receives into a Rust-owned buffer and scans it for the
//! terminator with memchr, one pass per message, never copying the buffer's
//! tail (CPython re-slices `ac_in_buffer` for every message). The order of
//! calls and assignments follows CPython 3.11's `handle_read` exactly.
//!
//! Uses: calls, channel, dispatcher, errors, fifo, handler_calls, inbuf, names,
//! output_batch, pyobj, scanner, sockio, type_cache.

use std::borrow::Cow;

use pyo3::exceptions::{PyBlockingIOError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyInt, PyList, PyMemoryView, PyString};

use crate::channel::{
    as_size, class_has_builtin, connected, field, has_builtin, int_setting, producer_fifo_of,
    read_setting, set_producer_fifo, socket_of, store_producer_fifo, Dispatcher, KeptAttr,
    F_CONNECTED, F_FIFO, F_INBUF, F_SOCKET,
};
use crate::dispatcher::{dispatcher_init, dispatcher_send};
use crate::errors::{call_in_except, errno_of, is_disconnect};
use crate::fifo::{self, Fifo};
use crate::handler_calls::{call0_kept, call1_kept, Resolved};
use crate::inbuf::Consume;
use crate::names;
use crate::output_batch;
use crate::scanner::{prefix_at_end, Scan, Terminator};
use crate::sockio::{plain_fd, recv_with, Syscall};

/// The bytes of a bytes-like object.
pub fn bytes_like<'a>(v: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    // Other bytes-like objects (the buffer protocol is not in the abi3 API
    // before 3.11): through bytes(), as CPython's `bytes + data` accepts them.
    if v.is_instance_of::<PyByteArray>() || v.is_instance_of::<PyMemoryView>() {
        let b = v.py().get_type::<PyBytes>().call1((v,))?;
        let b = b.cast_into::<PyBytes>()?;
        return Ok(Cow::Owned(b.as_bytes().to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "can't concat {} to bytes",
        type_name(v)
    )))
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map_or_else(|_| "object".into(), |n| n.to_string())
}

pub fn init(slf: &Bound<'_, Dispatcher>) -> PyResult<()> {
    let py = slf.py();
    slf.setattr(names::ac_in_buffer(py), PyBytes::new(py, b""))?;
    slf.setattr(names::incoming(py), PyList::empty(py))?;
    let fifo = Bound::new(py, Fifo::empty())?;
    set_producer_fifo(slf, fifo.as_any())
}

pub fn get_data<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let incoming = slf.getattr(names::incoming(py))?;
    let d = PyBytes::new(py, b"").call_method1(names::join(py), (&incoming,))?;
    incoming.del_item(pyo3::types::PySlice::full(py))?;
    Ok(d)
}

pub fn set_terminator(slf: &Bound<'_, Dispatcher>, term: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    let mut term = term.clone();
    if term.is_instance_of::<PyString>() && slf.getattr(names::use_encoding(py))?.is_truthy()? {
        let encoding = slf.getattr(names::encoding(py))?;
        term = py.get_type::<PyBytes>().call1((term, encoding))?;
    } else if term.is_instance_of::<PyInt>() && term.lt(0)? {
        return Err(PyValueError::new_err(
            "the number of received bytes must be positive",
        ));
    }
    slf.setattr(names::terminator(py), term)
}

pub fn discard_buffers(slf: &Bound<'_, Dispatcher>) -> PyResult<()> {
    let py = slf.py();
    slf.setattr(names::ac_in_buffer(py), PyBytes::new(py, b""))?;
    slf.getattr(names::incoming(py))?
        .del_item(pyo3::types::PySlice::full(py))?;
    producer_fifo_of(slf)?.call_method0(names::clear(py))?;
    Ok(())
}

// ---------------------------------------------------------------- input side

/// `async_chat.handle_read`.
pub fn handle_read(slf: &Bound<'_, Dispatcher>) -> PyResult<()> {
    if receive(slf)? {
        scan(slf)?;
    }
    Ok(())
}

/// Receives into the input buffer; false when handle_read must return now.
fn receive(slf: &Bound<'_, Dispatcher>) -> PyResult<bool> {
    let py = slf.py();
    let size = slf.getattr(names::ac_in_buffer_size(py))?;
    if Dispatcher::is_direct(slf, F_INBUF) && has_builtin(slf, names::recv(py), names::recv(py)) {
        let sock = socket_of(slf)?;
        if let (Some(fd), Some(n)) = (plain_fd(py, &sock), crate::pyobj::to_usize(&size)) {
            let me = slf.get();
            match recv_with(py, fd, n, |data| {
                me.fields(py).chat_mut().inbuf.extend(data);
                data.len()
            }) {
                Syscall::Done(0) => {
                    // dispatcher.recv: an empty read means the peer closed.
                    slf.call_method0(names::handle_close(py))?;
                    return Ok(true);
                }
                Syscall::Done(_) => return Ok(true),
                Syscall::Failed(e) => return recv_failed(slf, e),
                Syscall::Fallback => {}
            }
        }
    }
    let data = match slf.call_method1(names::recv(py), (&size,)) {
        Ok(d) => d,
        Err(e) if e.is_instance_of::<PyBlockingIOError>(py) => return Ok(false),
        Err(e) if e.is_instance_of::<PyOSError>(py) => {
            call_in_except(py, slf, names::handle_error(py), e)?;
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    if data.is_instance_of::<PyString>() && slf.getattr(names::use_encoding(py))?.is_truthy()? {
        // CPython 3.11 writes `bytes(str, self.encoding)` here (the type, not
        // the data), which raises TypeError. We keep that on purpose.
        let encoding = slf.getattr(names::encoding(py))?;
        py.get_type::<PyBytes>()
            .call1((py.get_type::<PyString>(), encoding))?;
    }
    let bytes = bytes_like(&data)?;
    slf.get().fields(py).chat_mut().inbuf.extend(&bytes);
    Ok(true)
}

/// The recv on the fd failed: what dispatcher.recv + handle_read's excepts do.
#[cold]
fn recv_failed(slf: &Bound<'_, Dispatcher>, e: PyErr) -> PyResult<bool> {
    let py = slf.py();
    match errno_of(py, &e) {
        Some(errno) if is_disconnect(py, errno)? => {
            slf.call_method0(names::handle_close(py))?;
            Ok(true)
        }
        Some(_) => {
            call_in_except(py, slf, names::handle_error(py), e)?;
            Ok(false)
        }
        None => Err(e),
    }
}

/// The handler methods the scan calls per message, as last found, kept
/// across the messages of one read (see handler_calls::Resolved).
#[derive(Default)]
struct ScanCalls<'py> {
    collect: Resolved,
    found: Resolved,
    /// For `channel::instance_attr` of `terminator`.
    terminator: KeptAttr<'py>,
}

/// The messages of the input buffer, one by one.
fn scan_messages(slf: &Bound<'_, Dispatcher>) -> PyResult<()> {
    let py = slf.py();
    let me = slf.get();
    let calls = &mut ScanCalls::default();
    let get_term_builtin = has_builtin(
        slf,
        names::get_terminator(py),
        names::_ac_get_terminator(py),
    );
    let mut compiled: Option<(Py<PyAny>, Terminator)> = None;
    loop {
        let lb = me.fields(py).chat().inbuf.data().len();
        if lb == 0 {
            return Ok(());
        }
        let term = if get_term_builtin {
            crate::channel::instance_attr(slf, names::terminator(py), &mut calls.terminator)?
        } else {
            slf.call_method0(names::get_terminator(py))?
        };
        // Exact bytes (the common terminator) without a call to its __bool__.
        let truthy = match term.cast_exact::<PyBytes>() {
            Ok(b) => !b.as_bytes().is_empty(),
            Err(_) => term.is_truthy()?,
        };
        if !truthy {
            // No terminator: collect it all.
            collect(slf, lb, Consume::All, calls)?;
        } else if term.is_instance_of::<PyInt>() {
            scan_count(slf, &term, lb, calls)?;
        } else {
            // Only an immutable terminator is reused: CPython searches for
            // a bytearray's current contents at every message.
            let reuse = compiled.as_ref().is_some_and(|(o, _)| o.bind(py).is(&term))
                && term.is_exact_instance_of::<PyBytes>();
            if !reuse {
                compiled = Some((term.clone().unbind(), compile(slf, &term)?));
            }
            let Some((_, t)) = compiled.as_ref() else {
                return Ok(());
            };
            let found = t.scan(me.fields(py).chat().inbuf.data());
            let tlen = t.needle().len();
            match found {
                Scan::Found(index) => {
                    let more_input = if index > 0 {
                        // Don't report the empty string (CPython: "source of subtle bugs").
                        collect(slf, index, Consume::Front(index + tlen), calls)?
                    } else {
                        me.fields(py)
                            .chat_mut()
                            .inbuf
                            .consume(&Consume::Front(tlen))
                    };
                    found_terminator(slf, more_input, calls)?;
                }
                Scan::PrefixAtEnd(keep) => {
                    if keep != lb {
                        collect(slf, lb - keep, Consume::Front(lb - keep), calls)?;
                    }
                    return Ok(());
                }
                Scan::Nothing => {
                    collect(slf, lb, Consume::All, calls)?;
                }
            }
        }
    }
}

/// The `while self.ac_in_buffer:` loop of CPython's handle_read, then the
/// end of the batch window: what the pipelined messages' replies queued goes
/// out (see output_batch.rs), also before an error from the scan reaches
/// handle_error.
fn scan(slf: &Bound<'_, Dispatcher>) -> PyResult<()> {
    let result = scan_messages(slf);
    slf.get().fields(slf.py()).chat_mut().inbuf.shrink();
    let flushed = output_batch::flush(slf);
    result.and(flushed)
}

/// `self.found_terminator()`. While more received input is buffered behind
/// this message, its pushes may be batched (`ac_batch_output = "pipelined"`).
fn found_terminator(
    slf: &Bound<'_, Dispatcher>,
    more_input: bool,
    calls: &mut ScanCalls<'_>,
) -> PyResult<()> {
    crate::output_batch::pipelined(slf, more_input, || {
        call0_kept(slf, names::found_terminator(slf.py()), &mut calls.found)
    })?;
    Ok(())
}

/// An int terminator: collect up to that many bytes, counting down. A
/// negative count (only possible by assigning `self.terminator` directly) is a
/// negative slice index, as in CPython.
fn scan_count(
    slf: &Bound<'_, Dispatcher>,
    term: &Bound<'_, PyAny>,
    lb: usize,
    calls: &mut ScanCalls<'_>,
) -> PyResult<()> {
    let py = slf.py();
    let n: i128 = term.extract::<i64>().map_or_else(
        |_| {
            if term.lt(0).unwrap_or(false) {
                i128::MIN
            } else {
                i128::MAX
            }
        },
        i128::from,
    );
    if (lb as i128) < n {
        collect(slf, lb, Consume::All, calls)?;
        let left = slf.getattr(names::terminator(py))?.sub(lb)?;
        slf.setattr(names::terminator(py), left)
    } else {
        // buf[:n] and buf[n:], with Python's meaning of a negative n.
        let cut = if n >= 0 {
            n as usize
        } else {
            (lb as i128 + n).max(0) as usize
        };
        let more_input = if cut > 0 {
            collect(slf, cut, Consume::Front(cut), calls)?
        } else {
            collect_empty(slf, calls)?
        };
        slf.setattr(names::terminator(py), 0)?;
        found_terminator(slf, more_input, calls)
    }
}

/// `self.collect_incoming_data(b'')` (a count that cuts nothing).
#[cold]
fn collect_empty(slf: &Bound<'_, Dispatcher>, calls: &mut ScanCalls<'_>) -> PyResult<bool> {
    collect(slf, 0, Consume::Front(0), calls)
}

/// A bytes terminator, or the TypeError CPython's `bytes.find` raises.
#[cold]
fn compile(slf: &Bound<'_, Dispatcher>, term: &Bound<'_, PyAny>) -> PyResult<Terminator> {
    let is_bytes_like = term.is_instance_of::<PyBytes>()
        || term.is_instance_of::<PyByteArray>()
        || term.is_instance_of::<PyMemoryView>();
    if !is_bytes_like {
        let py = slf.py();
        let buf = PyBytes::new(py, slf.get().fields(py).chat().inbuf.data());
        buf.call_method1(names::find(py), (term,))?;
        return Err(PyTypeError::new_err(
            "terminator must be bytes, int or None",
        ));
    }
    Ok(Terminator::new(&bytes_like(term)?))
}

/// `self.collect_incoming_data(buf[:n])`, then CPython's assignment to
/// `self.ac_in_buffer` computed from the buffer as it was before the call.
/// Returns whether input is left in the buffer.
fn collect(
    slf: &Bound<'_, Dispatcher>,
    n: usize,
    then: Consume,
    calls: &mut ScanCalls<'_>,
) -> PyResult<bool> {
    let py = slf.py();
    let me = slf.get();
    let data = {
        let mut st = me.fields(py);
        let inbuf = &mut st.chat_mut().inbuf;
        inbuf.begin_callback();
        PyBytes::new(py, &inbuf.data()[..n])
    };
    let r = call1_kept(
        slf,
        names::collect_incoming_data(py),
        &data,
        &mut calls.collect,
    );
    let mut st = me.fields(py);
    // The callback may have assigned ac_in_buffer; CPython then overwrites
    // it with the slice of the old buffer (unless the callback raised).
    st.chat_mut().inbuf.end_callback(r.is_ok());
    r?;
    Ok(st.chat_mut().inbuf.consume(&then))
}

// --------------------------------------------------------------- output side

/// `async_chat.push(data)`.
pub fn push(slf: &Bound<'_, Dispatcher>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    if !(data.is_instance_of::<PyBytes>()
        || data.is_instance_of::<PyByteArray>()
        || data.is_instance_of::<PyMemoryView>())
    {
        // CPython 3.11 passes the format and the type as two arguments.
        return Err(PyTypeError::new_err((
            "data argument must be byte-ish (%r)",
            data.get_type().unbind(),
        )));
    }
    // Reads no attribute, so it may come before CPython's reads below.
    let candidate = one_step_candidate(slf, data);
    if let Some(bytes) = candidate {
        // What CPython's push and initiate_send would read, read without
        // running Python code: if it is all the class's, the one step is
        // exact (else the steps below read it again, as CPython does).
        if one_step_settings(slf).is_some_and(|size| bytes.as_bytes().len() <= size)
            && output_batch::push_virtual(slf, bytes)
        {
            return Ok(());
        }
    }
    // CPython reads ac_out_buffer_size once, and initiate_send at the call.
    let (sabs, plain) = read_setting(slf, names::ac_out_buffer_size(py))?;
    let ours = has_builtin(slf, names::initiate_send(py), names::_ac_initiate_send(py));
    if let (true, true, Some(size), Some(bytes)) = (ours, plain, as_size(&sabs), candidate) {
        // Checked last: an instance-dict lookup.
        if bytes.as_bytes().len() <= size
            && has_builtin(slf, names::send(py), names::send(py))
            && output_batch::push_virtual(slf, bytes)
        {
            return Ok(());
        }
    }
    let fifo = producer_fifo_of(slf)?;
    let n = data.len()?;
    let longer = match as_size(&sabs) {
        Some(size) => n > size,
        None => sabs.lt(n)?,
    };
    if longer {
        let starts = py.get_type::<pyo3::types::PyRange>().call1((0, n, &sabs))?;
        for i in starts.try_iter()? {
            let i = i?;
            let end = i.add(&sabs)?;
            let part = data.get_item(crate::pyobj::make_slice(py, &i, &end)?)?;
            crate::fifo::append(&fifo, &part)?;
        }
    } else {
        crate::fifo::append(&fifo, data)?;
    }
    if ours {
        return initiate_send(slf);
    }
    slf.call_method0(names::initiate_send(py))?;
    Ok(())
}

/// The common push into an empty fifo may be done in one step: CPython
/// appends `data`, and its `initiate_send` (ours, with our `send`) sends all
/// of it (here virtually, in a batch window) and deletes it again. This is
/// the part of the conditions that reads no attribute: `data` is non-empty
/// exact bytes, a batch window is open (the channel's batch mode already
/// read: its first read stays where it was, after CPython's reads), and the
/// fields `output_batch::push_virtual` reads are authoritative. The caller
/// checks that `initiate_send` and `send` are ours and that
/// `ac_out_buffer_size` (CPython's `obs` too) does not cut `data`.
fn one_step_candidate<'a, 'py>(
    slf: &Bound<'py, Dispatcher>,
    data: &'a Bound<'py, PyAny>,
) -> Option<&'a Bound<'py, PyBytes>> {
    let bytes = data.cast_exact::<PyBytes>().ok()?;
    let ok = !bytes.as_bytes().is_empty()
        && output_batch::window_known_open(slf)
        && Dispatcher::is_direct(slf, F_CONNECTED | F_FIFO | F_SOCKET);
    ok.then_some(bytes)
}

/// `ac_out_buffer_size` as a size, when `initiate_send`, `send` and it are
/// all the class's, ours for the two methods (no instance attribute, no
/// `__getattribute__`): the three reads of CPython's push + initiate_send,
/// made without running Python code and with one pass over a small
/// instance dict instead of three lookups (`channel::instance_dict_lacks`).
/// None: the caller reads them as CPython does.
fn one_step_settings(slf: &Bound<'_, Dispatcher>) -> Option<usize> {
    let py = slf.py();
    let ty = crate::pyobj::type_of(slf.as_any());
    let (initiate_send, send, size) = (
        names::initiate_send(py),
        names::send(py),
        names::ac_out_buffer_size(py),
    );
    // The class half, from the MRO alone: cached by the class's version tag
    // (0: not all the class's; else the size + 1).
    let class_half = crate::type_cache::cached(&ty, (initiate_send, size), || {
        if !class_has_builtin(&ty, initiate_send, names::_ac_initiate_send(py))
            || !class_has_builtin(&ty, send, send)
        {
            return 0;
        }
        let class_size = crate::calls::class_attr_ptr(&ty, size);
        // SAFETY: _PyType_Lookup's result, if non-NULL, is a live object a
        // class dict holds; no code ran since, and we take our own reference
        // at once (dropping it runs no code: the class still holds it).
        let class_size = unsafe { Bound::from_borrowed_ptr_or_opt(py, class_size) };
        class_size
            .as_ref()
            .and_then(as_size)
            .and_then(|n| u64::try_from(n).ok()?.checked_add(1))
            .unwrap_or(0)
    });
    let n = usize::try_from(class_half.checked_sub(1)?).ok()?;
    crate::channel::instance_dict_lacks(slf, &[initiate_send, send, size]).then_some(n)
}

/// `async_chat.initiate_send()`: one send attempt per call, as CPython's,
/// whose send may be virtual (see output_batch.rs).
pub fn initiate_send(slf: &Bound<'_, Dispatcher>) -> PyResult<()> {
    let py = slf.py();
    let send_builtin = has_builtin(slf, names::send(py), names::send(py));
    if !send_builtin {
        // A Python send() writes after what was queued before it.
        output_batch::flush(slf)?;
    }
    loop {
        let fifo = producer_fifo_of(slf)?;
        if !fifo::is_truthy(&fifo)? || !connected(slf)? {
            return Ok(());
        }
        let first = fifo::first(&fifo)?;
        if first.is_none() && !queue_sent_before(slf, &fifo, &first)? {
            return Ok(());
        }
        if !first.is_truthy()? {
            fifo::del_first(&fifo)?;
            if first.is_none() {
                slf.call_method0(names::handle_close(py))?;
                return Ok(());
            }
        }
        let obs = int_setting(slf, names::ac_out_buffer_size(py))?;
        let data = match head(&first, &obs) {
            Ok(d) => d,
            Err(e) if e.is_instance_of::<PyTypeError>(py) => {
                // A producer: refill from more().
                let data = first.call_method0(names::more(py))?;
                if data.is_truthy()? {
                    fifo::push_front(&fifo, &data)?;
                } else {
                    fifo::del_first(&fifo)?;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let data = if data.is_instance_of::<PyString>()
            && slf.getattr(names::use_encoding(py))?.is_truthy()?
        {
            let encoding = slf.getattr(names::encoding(py))?;
            py.get_type::<PyBytes>().call1((data, encoding))?
        } else {
            data
        };
        let sent = if send_builtin {
            send(slf, &fifo, &data)
        } else {
            slf.call_method1(names::send(py), (&data,))
        };
        let num_sent = match sent {
            Ok(n) => n,
            Err(e) if e.is_instance_of::<PyOSError>(py) => {
                return call_in_except(py, slf, names::handle_error(py), e);
            }
            Err(e) => return Err(e),
        };
        if num_sent.is_truthy()? {
            if less_than_len(&num_sent, &data)? || less_than_len(&obs, &first)? {
                let rest = crate::pyobj::slice_from(&first, &num_sent)?;
                fifo::set_first(&fifo, &rest)?;
            } else {
                fifo::del_first(&fifo)?;
            }
        }
        return Ok(());
    }
}

/// `self.send(data)` for our own `send`: virtual in a batch window, else
/// real, after the queue (see output_batch.rs).
fn send<'py>(
    slf: &Bound<'py, Dispatcher>,
    fifo: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    if let Some(n) = output_batch::virtual_send(slf, fifo, data) {
        return Ok(n.into_pyobject(py)?.into_any());
    }
    if output_batch::has_queued(slf) {
        if let Some(n) = output_batch::send_after_queue(slf, data)? {
            return Ok(n);
        }
    }
    dispatcher_send(slf, data)
}

/// Before `initiate_send` acts on a `None` (closes the channel): the queue
/// goes out first. False when the kernel did not take all of it: its tail is
/// now in the fifo ahead of the `None`, as CPython's unsent data would be,
/// and this call is over (its send attempt was the flush).
fn queue_sent_before(
    slf: &Bound<'_, Dispatcher>,
    fifo: &Bound<'_, PyAny>,
    first: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    if !output_batch::has_queued(slf) {
        return Ok(true);
    }
    output_batch::flush(slf)?;
    Ok(fifo::first(fifo)?.is(first))
}

/// `n < len(obj)`, in Rust when `n` is an int.
fn less_than_len(n: &Bound<'_, PyAny>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let len = obj.len()?;
    match n.extract::<i64>() {
        Ok(v) => Ok(v < i64::try_from(len).unwrap_or(i64::MAX)),
        Err(_) => n.lt(len),
    }
}

/// `first[:obs]`; a bytes object no longer than `obs` is itself.
fn head<'py>(first: &Bound<'py, PyAny>, obs: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let (Ok(b), Some(n)) = (first.cast_exact::<PyBytes>(), crate::pyobj::to_usize(obs)) {
        if b.as_bytes().len() <= n {
            return Ok(first.clone());
        }
    }
    let py = first.py();
    first.get_item(crate::pyobj::make_slice(
        py,
        &py.None().into_bound(py),
        obs,
    )?)
}

/// `asynchat.find_prefix_at_end(haystack, needle)`.
#[pyfunction]
pub fn find_prefix_at_end<'py>(
    haystack: &Bound<'py, PyAny>,
    needle: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = haystack.py();
    if let (Ok(h), Ok(n)) = (haystack.cast::<PyBytes>(), needle.cast::<PyBytes>()) {
        let n = n.as_bytes();
        // An empty needle gives -1 in CPython (len(needle) - 1).
        let l: isize = if n.is_empty() {
            -1
        } else {
            prefix_at_end(h.as_bytes(), n) as isize
        };
        return Ok(l.into_pyobject(py)?.into_any());
    }
    // Generic (str and other sequences): CPython's loop as written.
    let mut l = needle.len()? as isize - 1;
    let none = py.None().into_bound(py);
    while l != 0 {
        let stop = l.into_pyobject(py)?.into_any();
        let prefix = needle.get_item(crate::pyobj::make_slice(py, &none, &stop)?)?;
        if haystack
            .call_method1(names::endswith(py), (prefix,))?
            .is_truthy()?
        {
            break;
        }
        l -= 1;
    }
    Ok(l.into_pyobject(py)?.into_any())
}

// ------------------------------------------------------- Python methods

#[pymethods]
impl Dispatcher {
    #[getter(_rs_ac_in_buffer)]
    fn get_ac_in_buffer<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.fields(py).chat().inbuf.data())
    }
    #[setter(_rs_ac_in_buffer)]
    fn set_ac_in_buffer(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = bytes_like(v)?;
        self.fields(v.py()).chat_mut().inbuf.assign(&bytes);
        Ok(())
    }
    #[getter(_rs_producer_fifo)]
    fn get_producer_fifo(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        field(slf, |st| st.chat().producer_fifo.as_ref(), "producer_fifo").map(Bound::unbind)
    }
    #[setter(_rs_producer_fifo)]
    fn set_producer_fifo_attr(slf: &Bound<'_, Self>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        store_producer_fifo(slf, v)
    }

    // ---- async_chat ----
    #[pyo3(signature = (sock=None, map=None))]
    fn _ac_init(
        slf: &Bound<'_, Self>,
        sock: Option<&Bound<'_, PyAny>>,
        map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        init(slf)?;
        dispatcher_init(slf, sock, map)
    }
    fn _ac_collect_incoming_data(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let _ = data;
        Err(pyo3::exceptions::PyNotImplementedError::new_err(
            "must be implemented in subclass",
        ))
    }
    fn _ac_found_terminator(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyNotImplementedError::new_err(
            "must be implemented in subclass",
        ))
    }
    #[pyo3(name = "_ac__collect_incoming_data")]
    fn ac_private_collect_incoming_data(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let incoming = slf.getattr(names::incoming(slf.py()))?;
        crate::calls::call_method1(&incoming, names::append(slf.py()), data)?;
        Ok(())
    }
    #[pyo3(name = "_ac__get_data")]
    fn ac_private_get_data<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        get_data(slf)
    }
    fn _ac_set_terminator(slf: &Bound<'_, Self>, term: &Bound<'_, PyAny>) -> PyResult<()> {
        set_terminator(slf, term)
    }
    fn _ac_get_terminator<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(names::terminator(slf.py()))
    }
    fn _ac_handle_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        handle_read(slf)
    }
    fn _ac_handle_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.call_method0(names::initiate_send(slf.py()))?;
        Ok(())
    }
    fn _ac_handle_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.call_method0(names::close(slf.py()))?;
        Ok(())
    }
    fn _ac_push(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        push(slf, data)
    }
    fn _ac_push_with_producer(slf: &Bound<'_, Self>, producer: &Bound<'_, PyAny>) -> PyResult<()> {
        crate::fifo::append(&producer_fifo_of(slf)?, producer)?;
        slf.call_method0(names::initiate_send(slf.py()))?;
        Ok(())
    }
    fn _ac_readable(&self) -> i32 {
        1
    }
    fn _ac_writable<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let fifo = producer_fifo_of(slf)?;
        if fifo.is_truthy()? {
            return Ok(fifo);
        }
        Ok((!connected(slf)?)
            .into_pyobject(slf.py())?
            .to_owned()
            .into_any())
    }
    fn _ac_close_when_done(slf: &Bound<'_, Self>) -> PyResult<()> {
        crate::fifo::append(
            &producer_fifo_of(slf)?,
            &slf.py().None().into_bound(slf.py()),
        )
    }
    fn _ac_initiate_send(slf: &Bound<'_, Self>) -> PyResult<()> {
        initiate_send(slf)
    }
    fn _ac_discard_buffers(slf: &Bound<'_, Self>) -> PyResult<()> {
        discard_buffers(slf)
    }
}
