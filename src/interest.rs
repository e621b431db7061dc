//! Owns the poll interest CPython's poll()/poll2() compute for a channel, and
//! whether Rust can derive it from the channel's fields alone.
//!
//! Uses: channel, fifo, names, poller.

use pyo3::prelude::*;

use crate::channel::{accepting, connected, has_builtin, out_buffer_of, producer_fifo_of};
use crate::channel::{
    Dispatcher, F_ACCEPTING, F_CONNECTED, F_FIFO, F_OUT, S_ACCEPTING, S_CONNECTED,
};
use crate::fifo::Fifo;
use crate::names;
use crate::poller::{WANT_P, WANT_R, WANT_W};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Select,
    Poll,
}

/// The interest CPython's poll()/poll2() would compute for `obj` this pass.
pub fn interest(py: Python<'_>, obj: &Bound<'_, PyAny>, mode: Mode) -> PyResult<u8> {
    let d = obj.cast::<Dispatcher>().ok();
    let (r, w) = match d {
        Some(d) => (readable_of(d)?, writable_of(d)?),
        None => (
            obj.call_method0(names::readable(py))?.is_truthy()?,
            obj.call_method0(names::writable(py))?.is_truthy()?,
        ),
    };
    // "accepting sockets should not be writable"
    let w_ok = w
        && !match d {
            Some(d) => accepting(d)?,
            None => obj.getattr(names::accepting(py))?.is_truthy()?,
        };
    let mut want = 0;
    if r {
        want |= WANT_R;
    }
    if w_ok {
        want |= WANT_W;
    }
    match mode {
        Mode::Select if r || w => want |= WANT_P,
        Mode::Poll if r => want |= WANT_P,
        _ => {}
    }
    Ok(want)
}

fn readable_of(d: &Bound<'_, Dispatcher>) -> PyResult<bool> {
    let py = d.py();
    let name = names::readable(py);
    if has_builtin(d, name, name) || has_builtin(d, name, names::_ac_readable(py)) {
        return Ok(true);
    }
    d.call_method0(name)?.is_truthy()
}

fn writable_of(d: &Bound<'_, Dispatcher>) -> PyResult<bool> {
    let py = d.py();
    let name = names::writable(py);
    if has_builtin(d, name, name) {
        return Ok(true);
    }
    if has_builtin(d, name, names::_ws_writable(py)) {
        return Ok(!connected(d)? || out_buffer_of(d)?.len()? > 0);
    }
    if has_builtin(d, name, names::_ac_writable(py)) {
        return Ok(producer_fifo_of(d)?.is_truthy()? || !connected(d)?);
    }
    d.call_method0(name)?.is_truthy()
}

/// Which built-in `writable()` a channel with a derived interest has.
#[derive(Clone, Copy)]
pub enum WKind {
    Always,
    WithSend,
    Chat,
}

/// The interest of a channel, derived from its Rust fields alone.
pub fn derived_interest(d: &Bound<'_, Dispatcher>, kind: WKind, mode: Mode) -> u8 {
    let py = d.py();
    let me = d.get();
    let st = me.fields(py);
    let w = match kind {
        WKind::Always => true,
        WKind::WithSend => {
            !me.state(S_CONNECTED)
                || st.out_buffer.as_ref().is_some_and(|b| {
                    b.bind(py)
                        .cast::<pyo3::types::PyBytes>()
                        .map_or(true, |b| !b.as_bytes().is_empty())
                })
        }
        WKind::Chat => {
            !me.state(S_CONNECTED)
                || st.chat().producer_fifo.as_ref().is_some_and(|f| {
                    f.bind(py)
                        .cast::<Fifo>()
                        .map_or(true, |f| !f.get().is_empty(py))
                })
        }
    };
    let mut want = WANT_R;
    if w && !me.state(S_ACCEPTING) {
        want |= WANT_W;
    }
    if mode == Mode::Select || want & WANT_R != 0 {
        want |= WANT_P;
    }
    want
}

/// Some(kind) when Rust can know `obj`'s interest without asking Python:
/// built-in readable/writable, and the attributes they read held in Rust.
pub fn derivable(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Option<WKind> {
    let d = obj.cast::<Dispatcher>().ok()?;
    let r = names::readable(py);
    let w = names::writable(py);
    if !(has_builtin(d, r, r) || has_builtin(d, r, names::_ac_readable(py))) {
        return None;
    }
    if !(Dispatcher::is_direct(d, F_CONNECTED) && Dispatcher::is_direct(d, F_ACCEPTING)) {
        return None;
    }
    if has_builtin(d, w, w) {
        Some(WKind::Always)
    } else if has_builtin(d, w, names::_ws_writable(py)) {
        (Dispatcher::is_direct(d, F_OUT)
            && out_buffer_of(d).is_ok_and(|b| b.is_exact_instance_of::<pyo3::types::PyBytes>()))
        .then_some(WKind::WithSend)
    } else if has_builtin(d, w, names::_ac_writable(py)) {
        (Dispatcher::is_direct(d, F_FIFO)
            && producer_fifo_of(d).is_ok_and(|f| f.cast::<Fifo>().is_ok()))
        .then_some(WKind::Chat)
    } else {
        None
    }
}
