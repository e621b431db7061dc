//! Owns `asyncore.dispatcher_with_send`: buffered output on a plain
//! dispatcher. Its methods are registered on `dispatcher` as `_ws_*`.
//!
//! Uses: channel, dispatcher, names, pyobj, sockio.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::channel::{
    connected, field, has_builtin, is_plain_false, out_buffer_of, set_out_buffer, socket_of,
    store_out_buffer, Dispatcher,
};
use crate::dispatcher::{dispatcher_init, dispatcher_send};
use crate::names;
use crate::pyobj::{make_slice, slice_from};

#[pymethods]
impl Dispatcher {
    #[getter(_rs_out_buffer)]
    fn get_out_buffer(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        field(slf, |st| st.out_buffer.as_ref(), "out_buffer").map(Bound::unbind)
    }
    #[setter(_rs_out_buffer)]
    fn set_out_buffer_attr(&self, v: &Bound<'_, PyAny>) {
        store_out_buffer(self, v);
    }

    // ---- dispatcher_with_send ----
    #[pyo3(signature = (sock=None, map=None))]
    fn _ws_init(
        slf: &Bound<'_, Self>,
        sock: Option<&Bound<'_, PyAny>>,
        map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        dispatcher_init(slf, sock, map)?;
        set_out_buffer(slf, PyBytes::new(slf.py(), b"").as_any())
    }

    fn _ws_initiate_send(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let buf = out_buffer_of(slf)?;
        let chunk = if buf.is_exact_instance_of::<PyBytes>() && buf.len()? <= 65536 {
            // `buf[:65536]` of a short bytes object is the object itself.
            buf.clone()
        } else {
            // CPython's `self.out_buffer[:65536]`: slice(None, 65536, None).
            // (Not pyo3's PySlice::new, which leaks its three ints: clippy.toml.)
            let stop = 65536i32.into_pyobject(py)?;
            buf.get_item(make_slice(py, &py.None().into_bound(py), stop.as_any())?)?
        };
        let num_sent = dispatcher_send(slf, &chunk)?;
        let rest = slice_from(&out_buffer_of(slf)?, &num_sent)?;
        set_out_buffer(slf, &rest)
    }

    fn _ws_handle_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.call_method0(names::initiate_send(slf.py()))?;
        Ok(())
    }

    fn _ws_writable<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if !connected(slf)? {
            return Ok(true.into_pyobject(py)?.to_owned().into_any());
        }
        Ok(out_buffer_of(slf)?.len()?.into_pyobject(py)?.into_any())
    }

    fn _ws_send(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        ws_send(slf, data)
    }
}

/// `dispatcher_with_send.send(data)`.
pub fn ws_send(slf: &Bound<'_, Dispatcher>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    let debug = names::debug(py);
    if !is_plain_false(slf, debug) && slf.getattr(debug)?.is_truthy()? {
        let msg = format!("sending {}", data.repr()?);
        slf.call_method1(names::log_info(py), (msg,))?;
    }
    let buf = out_buffer_of(slf)?;
    let builtin_send = has_builtin(slf, names::initiate_send(py), names::_ws_initiate_send(py));
    let empty = buf.len().is_ok_and(|n| n == 0);
    if empty && builtin_send && data.is_exact_instance_of::<PyBytes>() {
        if let Some(rest) = send_whole(slf, data)? {
            // What CPython's out_buffer holds after its one send attempt.
            set_out_buffer(slf, &rest)?;
            if rest.is(data) {
                // Nothing went out: CPython's path, with its error handling.
                return Dispatcher::_ws_initiate_send(slf);
            }
        }
        return Ok(());
    }
    let joined = if empty && data.is_exact_instance_of::<PyBytes>() {
        data.clone()
    } else {
        buf.add(data)?
    };
    set_out_buffer(slf, &joined)?;
    if builtin_send {
        return Dispatcher::_ws_initiate_send(slf);
    }
    slf.call_method0(names::initiate_send(py))?;
    Ok(())
}

/// `dispatcher_with_send.send(data)` with an empty out_buffer on a plain
/// socket: one send syscall of `data` (bytes no longer than 65536, as
/// CPython's `initiate_send` slices). None when all of it went out (the buffer
/// stays empty, no interest change); else the buffer CPython would now hold.
fn send_whole<'py>(
    slf: &Bound<'py, Dispatcher>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = slf.py();
    let Ok(bytes) = data.cast::<PyBytes>() else {
        return Ok(Some(data.clone()));
    };
    let raw = bytes.as_bytes();
    if raw.is_empty() || raw.len() > 65536 {
        return Ok(Some(data.clone()));
    }
    let Some(fd) = crate::sockio::plain_fd(py, &socket_of(slf)?) else {
        return Ok(Some(data.clone()));
    };
    match crate::sockio::send_fd(py, fd, raw) {
        crate::sockio::Syscall::Done(n) if n == raw.len() => Ok(None),
        crate::sockio::Syscall::Done(n) => Ok(Some(PyBytes::new(py, &raw[n..]).into_any())),
        // Would block, or failed: leave it all to CPython's path, which makes
        // its own attempt and handles the error as it does.
        _ => Ok(Some(data.clone())),
    }
}
