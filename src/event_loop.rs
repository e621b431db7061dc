//! Owns `loop()`, `poll()` (the select path), `poll2()` (the poll path), the
//! per-event helpers and `close_all()`: the passes over a map's loop state,
//! and the module functions that run them.
//!
//! Uses: channel, errors, interest, loop_cache, loop_state, module_state,
//! names, output_batch, poller.

use std::time::Duration;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyString};

use crate::channel::{has_builtin, Dispatcher};
use crate::errors::{call_in_except, errno_of, is_disconnect, is_reraised, py_errno};
use crate::interest::Mode;
use crate::loop_cache::{forget, Checkout};
use crate::loop_state::LoopState;
use crate::module_state::{bound, global};
use crate::names;
use crate::output_batch::dispatching;
use crate::poller::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI, WANT_P, WANT_R, WANT_W};

// ------------------------------------------------------------ passes

/// Which module-level handlers poll() must call (they may be replaced).
struct Hooks<'py> {
    read: Option<Bound<'py, PyAny>>,
    write: Option<Bound<'py, PyAny>>,
    exception: Option<Bound<'py, PyAny>>,
    readwrite: Option<Bound<'py, PyAny>>,
}

impl<'py> Hooks<'py> {
    fn load(py: Python<'py>) -> PyResult<Self> {
        let st = bound(py)?;
        let pick = |name: &Bound<'py, PyString>,
                    orig: &Py<PyAny>|
         -> PyResult<Option<Bound<'py, PyAny>>> {
            let cur = global(py, name)?;
            Ok((!cur.is(orig.bind(py))).then_some(cur))
        };
        Ok(Hooks {
            read: pick(names::read(py), &st.read)?,
            write: pick(names::write(py), &st.write)?,
            exception: pick(names::_exception(py), &st.exception)?,
            readwrite: pick(names::readwrite(py), &st.readwrite)?,
        })
    }
}

/// select()'s timeout argument.
fn select_timeout(t: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    // CPython converts to a nanosecond _PyTime_t (an i64) first.
    const MAX_SECS: f64 = 9.223_372_036e9;
    if t.is_none() {
        return Ok(None);
    }
    let too_large = || PyOverflowError::new_err("timestamp too large to convert to C _PyTime_t");
    if t.is_instance_of::<PyInt>() {
        let secs: i64 = t.extract().map_err(|_| too_large())?;
        if secs < 0 {
            return Err(PyValueError::new_err("timeout must be non-negative"));
        }
        if secs as f64 > MAX_SECS {
            return Err(too_large());
        }
        return Ok(Some(Duration::from_secs(secs as u64)));
    }
    let secs: f64 = t
        .extract()
        .map_err(|_| PyTypeError::new_err("timeout must be a float or None"))?;
    if secs.is_nan() {
        return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
    }
    if !secs.is_finite() || secs.abs() > MAX_SECS {
        return Err(PyOverflowError::new_err(
            "timestamp out of range for platform time_t",
        ));
    }
    if secs < 0.0 {
        return Err(PyValueError::new_err("timeout must be non-negative"));
    }
    Ok(Some(
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
    ))
}

/// poll()'s millisecond timeout: None or negative waits forever; too large
/// raises the OverflowError select.poll().poll() raises.
fn poll_timeout(ms: Option<i64>) -> PyResult<Option<Duration>> {
    match ms {
        Some(ms) if !(i64::MIN / 1_000_000..=i64::MAX / 1_000_000).contains(&ms) => Err(
            PyOverflowError::new_err("timestamp too large to convert to C _PyTime_t"),
        ),
        Some(ms) if ms > i64::from(i32::MAX) => {
            Err(PyOverflowError::new_err("timeout is too large"))
        }
        Some(ms) if ms >= 0 => Ok(Some(Duration::from_millis(ms as u64))),
        _ => Ok(None),
    }
}

/// One pass of CPython's `poll()` (the select path).
fn pass_select(py: Python<'_>, st: &mut LoopState, timeout: &Bound<'_, PyAny>) -> PyResult<()> {
    st.sync(py, Mode::Select)?;
    if !st.has_interest() {
        global(py, names::time(py))?.call_method1(names::sleep(py), (timeout,))?;
        return Ok(());
    }
    let t = select_timeout(timeout)?;
    let ready = st.wait(py, t)?;
    let hooks = Hooks::load(py)?;
    let map = st.map(py).clone();
    let mut rl = Vec::new();
    let mut wl = Vec::new();
    let mut el = Vec::new();
    for &(fd, f, want) in &ready {
        if want & WANT_R != 0 && f & (POLLIN | POLLHUP | POLLERR) != 0 {
            rl.push(fd);
        }
        if want & WANT_W != 0 && f & (POLLOUT | POLLERR) != 0 {
            wl.push(fd);
        }
        if want & WANT_P != 0 && f & POLLPRI != 0 {
            el.push(fd);
        }
    }
    for (list, which) in [(rl, 0u8), (wl, 1), (el, 2)] {
        for fd in list {
            let Some(obj) = st.target(py, &map, fd)? else {
                continue;
            };
            let hook = match which {
                0 => hooks.read.as_ref(),
                1 => hooks.write.as_ref(),
                _ => hooks.exception.as_ref(),
            };
            if let Some(h) = hook {
                h.call1((&obj,))?;
            } else {
                let method = match which {
                    0 => names::handle_read_event(py),
                    1 => names::handle_write_event(py),
                    _ => names::handle_expt_event(py),
                };
                guarded(py, &obj, method)?;
            }
        }
    }
    st.settle(py);
    Ok(())
}

/// One pass of CPython's `poll2()` (the poll path).
fn pass_poll(py: Python<'_>, st: &mut LoopState, ms: Option<i64>) -> PyResult<()> {
    st.sync(py, Mode::Poll)?;
    let ready = st.wait(py, poll_timeout(ms)?)?;
    let hooks = Hooks::load(py)?;
    let map = st.map(py).clone();
    for (fd, flags, _) in ready {
        let Some(obj) = st.target(py, &map, fd)? else {
            continue;
        };
        match &hooks.readwrite {
            Some(h) => {
                h.call1((&obj, flags))?;
            }
            None => do_readwrite(py, &obj, flags)?,
        }
    }
    st.settle(py);
    Ok(())
}

/// `obj.<method>()` with CPython's read()/write()/_exception() error routing.
fn guarded(py: Python<'_>, obj: &Bound<'_, PyAny>, method: &Bound<'_, PyString>) -> PyResult<()> {
    match dispatching(py, || call_event(obj, method)) {
        Ok(()) => Ok(()),
        Err(e) => handle_failure(py, obj, e),
    }
}

/// `obj.<method>()`; our own handle_read_event / handle_write_event run
/// in Rust when the object has not overridden them.
fn call_event(obj: &Bound<'_, PyAny>, method: &Bound<'_, PyString>) -> PyResult<()> {
    if let Ok(d) = obj.cast::<Dispatcher>() {
        if has_builtin(d, method, method) {
            let py = obj.py();
            if method.is(names::handle_read_event(py)) {
                return Dispatcher::read_event(d);
            }
            if method.is(names::handle_write_event(py)) {
                return Dispatcher::write_event(d);
            }
        }
    }
    obj.call_method0(method).map(drop)
}

#[cold]
fn handle_failure(py: Python<'_>, obj: &Bound<'_, PyAny>, e: PyErr) -> PyResult<()> {
    if is_reraised(py, &e)? {
        return Err(e);
    }
    call_in_except(py, obj, names::handle_error(py), e)
}

fn do_readwrite(py: Python<'_>, obj: &Bound<'_, PyAny>, flags: u32) -> PyResult<()> {
    let run = || -> PyResult<()> {
        if flags & POLLIN != 0 {
            call_event(obj, names::handle_read_event(py))?;
        }
        if flags & POLLOUT != 0 {
            call_event(obj, names::handle_write_event(py))?;
        }
        if flags & POLLPRI != 0 {
            obj.call_method0(names::handle_expt_event(py))?;
        }
        if flags & (POLLHUP | POLLERR | POLLNVAL) != 0 {
            obj.call_method0(names::handle_close(py))?;
        }
        Ok(())
    };
    match dispatching(py, run) {
        Ok(()) => Ok(()),
        Err(e) => readwrite_failure(py, obj, e),
    }
}

/// poll2's routing: a disconnect OSError goes to handle_close, others to
/// handle_error (CPython's readwrite; the select path differs on purpose).
#[cold]
fn readwrite_failure(py: Python<'_>, obj: &Bound<'_, PyAny>, e: PyErr) -> PyResult<()> {
    if let Some(errno) = errno_of(py, &e) {
        let method = if is_disconnect(py, errno)? {
            names::handle_close(py)
        } else {
            names::handle_error(py)
        };
        return call_in_except(py, obj, method, e);
    }
    handle_failure(py, obj, e)
}

fn poll_ms(timeout: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    if timeout.is_none() {
        return Ok(None);
    }
    // `int(timeout*1000)`, as CPython writes it.
    let ms = if let Ok(f) = timeout.cast::<PyFloat>() {
        let v = f.value() * 1000.0;
        if v.is_finite() {
            return Ok(Some(
                v.trunc().clamp(i64::MIN as f64, i64::MAX as f64) as i64
            ));
        }
        timeout.mul(1000)?
    } else {
        timeout.mul(1000)?
    };
    let ms = timeout.py().get_type::<PyInt>().call1((ms,))?;
    Ok(Some(ms.extract::<i64>().unwrap_or(i64::MAX)))
}

// ------------------------------------------------------------ Python API

/// `asyncore.poll(timeout, map)` (the Python wrapper supplies defaults).
#[pyfunction]
pub fn poll(py: Python<'_>, timeout: &Bound<'_, PyAny>, map: &Bound<'_, PyAny>) -> PyResult<()> {
    let map = resolve_map(py, map)?;
    if !map.is_truthy()? {
        return Ok(());
    }
    let mut c = Checkout::get(py, &map, Mode::Select)?;
    pass_select(py, c.state(), timeout)
}

/// `asyncore.poll2(timeout, map)`.
#[pyfunction]
pub fn poll2(py: Python<'_>, timeout: &Bound<'_, PyAny>, map: &Bound<'_, PyAny>) -> PyResult<()> {
    let map = resolve_map(py, map)?;
    let ms = poll_ms(timeout)?;
    if !map.is_truthy()? {
        return Ok(());
    }
    let mut c = Checkout::get(py, &map, Mode::Poll)?;
    pass_poll(py, c.state(), ms)
}

fn resolve_map<'py>(py: Python<'py>, map: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if map.is_none() {
        global(py, names::socket_map(py))
    } else {
        Ok(map.clone())
    }
}

/// `asyncore.loop(timeout, use_poll, map, count)`.
#[pyfunction]
#[pyo3(name = "loop")]
pub fn loop_(
    py: Python<'_>,
    timeout: &Bound<'_, PyAny>,
    use_poll: &Bound<'_, PyAny>,
    map: &Bound<'_, PyAny>,
    count: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let map = resolve_map(py, map)?;
    let st = bound(py)?;
    let use_poll2 =
        use_poll.is_truthy()? && global(py, names::select(py))?.hasattr(names::poll(py))?;
    let (poll_fun, original) = if use_poll2 {
        (global(py, names::poll2(py))?, st.poll2.bind(py).clone())
    } else {
        (global(py, names::poll(py))?, st.poll.bind(py).clone())
    };
    let mode = if use_poll2 { Mode::Poll } else { Mode::Select };
    let mut checkout: Option<Checkout> = None;
    let ms = if use_poll2 && poll_fun.is(&original) {
        poll_ms(timeout)?
    } else {
        None
    };
    let mut remaining = count.clone();
    let counted = !count.is_none();
    loop {
        if !map.is_truthy()? {
            break;
        }
        if counted && !remaining.gt(0)? {
            break;
        }
        if poll_fun.is(&original) {
            let c = match &mut checkout {
                Some(c) => c,
                None => checkout.insert(Checkout::get(py, &map, mode)?),
            };
            let state = c.state();
            match mode {
                Mode::Select => pass_select(py, state, timeout)?,
                Mode::Poll => pass_poll(py, state, ms)?,
            }
            if state.rereads_everything() {
                checkout = None; // holds no channel between passes (see Drop)
            }
        } else {
            poll_fun.call1((timeout, &map))?;
        }
        if counted {
            remaining = remaining.sub(1)?;
        }
    }
    Ok(())
}

#[pyfunction]
pub fn read(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    guarded(py, obj, names::handle_read_event(py))
}

#[pyfunction]
pub fn write(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    guarded(py, obj, names::handle_write_event(py))
}

#[pyfunction]
#[pyo3(name = "_exception")]
pub fn exception(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    guarded(py, obj, names::handle_expt_event(py))
}

#[pyfunction]
pub fn readwrite(py: Python<'_>, obj: &Bound<'_, PyAny>, flags: &Bound<'_, PyAny>) -> PyResult<()> {
    match flags.extract::<i64>() {
        Ok(f) => do_readwrite(py, obj, (f & 0xffff) as u32),
        // `flags & select.POLLIN` fails inside CPython's try: handle_error().
        Err(_) => match flags.bitand(POLLIN) {
            Ok(_) => do_readwrite(py, obj, 0),
            Err(e) => readwrite_failure(py, obj, e),
        },
    }
}

/// `asyncore.close_all(map, ignore_all)`.
#[pyfunction]
pub fn close_all(
    py: Python<'_>,
    map: &Bound<'_, PyAny>,
    ignore_all: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let map = resolve_map(py, map)?;
    let ignore_all = ignore_all.is_truthy()?;
    let values: Vec<Bound<PyAny>> = map
        .call_method0(names::values(py))?
        .try_iter()?
        .collect::<PyResult<_>>()?;
    for x in values {
        if let Err(e) = x.call_method0(names::close(py)) {
            if e.is_instance_of::<pyo3::exceptions::PyOSError>(py) {
                if errno_of(py, &e) == Some(py_errno::EBADF) || ignore_all {
                    continue;
                }
                return Err(e);
            }
            if is_reraised(py, &e)? || !ignore_all {
                return Err(e);
            }
        }
    }
    map.call_method0(names::clear(py))?;
    forget(&map);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeouts_follow_select_poll() {
        assert_eq!(poll_timeout(None).ok(), Some(None));
        assert_eq!(poll_timeout(Some(-1)).ok(), Some(None));
        assert_eq!(
            poll_timeout(Some(1500)).ok(),
            Some(Some(Duration::from_millis(1500)))
        );
        assert!(poll_timeout(Some(i64::from(i32::MAX) + 1)).is_err());
        assert!(poll_timeout(Some(i64::MAX)).is_err());
    }
}
