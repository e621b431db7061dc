//! Owns `asyncore.dispatcher`: the base class's Python methods and logic.
//!
//! `dispatcher_with_send` (with_send.rs), `async_chat` (async_chat.rs) and
//! `file_dispatcher` are Python subclasses (so they mix freely in multiple
//! inheritance, as in CPython) whose methods are `dispatcher`'s Rust methods
//! under private names (`_ws_*`, `_ac_*`), each in its own `#[pymethods]`
//! block beside its logic (pyo3's `multiple-pymethods`).
//!
//! Uses: calls, channel, errors, handler_calls, module_state, names, output_batch,
//! pyobj, socket_map, sockio.

use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::channel::{
    accepting, connected, connecting, field, set_accepting, set_connected, set_connecting,
    socket_of, take_field, Dispatcher, S_ACCEPTING, S_CONNECTED, S_CONNECTING,
};
use crate::errors::{errno_of, is_disconnect, os_error_with, py_errno};
use crate::module_state::global;
use crate::names;
use crate::output_batch;
use crate::pyobj::{py_int, py_str};
use crate::socket_map::map_write;
use crate::sockio::{recv_bytes, send_obj, AF_INET, SOCK_STREAM};

impl Dispatcher {
    /// `dispatcher.handle_read_event`.
    pub fn read_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();

        if accepting(slf)? {
            slf.call_method0(names::handle_accept(py))?;
            return Ok(());
        }
        if !connected(slf)? && connecting(slf)? {
            slf.call_method0(names::handle_connect_event(py))?;
        }
        crate::handler_calls::call0(slf, names::handle_read(py))?;
        Ok(())
    }

    /// `dispatcher.handle_write_event`.
    pub fn write_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if accepting(slf)? {
            // Accepting sockets shouldn't get a write event (CPython pretends
            // it didn't happen).
            return Ok(());
        }
        if !connected(slf)? && connecting(slf)? {
            slf.call_method0(names::handle_connect_event(py))?;
        }
        crate::handler_calls::call0(slf, names::handle_write(py))?;
        Ok(())
    }
}

#[pymethods]
impl Dispatcher {
    // No text signature of its own: inspect.signature(cls) and help() then take the
    // class's from the Python `__init__` (CPython's parameters).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = None)]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Dispatcher::new_empty()
    }

    // ---- class attributes CPython defines on dispatcher ----
    #[classattr]
    fn debug() -> bool {
        false
    }
    #[classattr]
    fn closing() -> bool {
        false
    }
    #[classattr]
    fn ignore_log_types(py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(pyo3::types::PyFrozenSet::new(py, ["warning"])?
            .into_any()
            .unbind())
    }

    // ---- Rust-held attributes ----
    #[getter(connected)]
    fn get_connected(&self) -> bool {
        self.state(S_CONNECTED)
    }
    #[setter(connected)]
    fn set_connected_attr(slf: &Bound<'_, Self>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = v.is_truthy()?;
        slf.get().store_state(slf.py(), S_CONNECTED, v, true);
        Ok(())
    }
    #[getter(accepting)]
    fn get_accepting(&self) -> bool {
        self.state(S_ACCEPTING)
    }
    #[setter(accepting)]
    fn set_accepting_attr(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store_state(v.py(), S_ACCEPTING, v.is_truthy()?, true);
        Ok(())
    }
    #[getter(connecting)]
    fn get_connecting(&self) -> bool {
        self.state(S_CONNECTING)
    }
    #[setter(connecting)]
    fn set_connecting_attr(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store_state(v.py(), S_CONNECTING, v.is_truthy()?, false);
        Ok(())
    }
    // Unset until __init__ (or the subclass) assigns them, as in CPython.
    #[getter(socket)]
    fn get_socket(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        output_batch::flush(slf)?;
        Self::expose_socket(slf)
    }
    #[setter(socket)]
    fn set_socket_attr(slf: &Bound<'_, Self>, v: Py<PyAny>) -> PyResult<()> {
        // Batched output belongs to the old socket (STARTTLS swaps it).
        output_batch::flush(slf)?;
        slf.get().replace_socket(slf.py(), v);
        Ok(())
    }
    /// Unset reads None: CPython's class attribute `addr = None`.
    #[getter(addr)]
    fn get_addr(&self, py: Python<'_>) -> Py<PyAny> {
        self.fields(py)
            .addr
            .as_ref()
            .map_or_else(|| py.None(), |a| a.clone_ref(py))
    }
    #[setter(addr)]
    fn set_addr_attr(&self, py: Python<'_>, v: Py<PyAny>) {
        let old = self.fields(py).addr.replace(v);
        drop(old); // after the lock: its destructor may run Python
    }
    #[deleter(addr)]
    fn del_addr_attr(slf: &Bound<'_, Self>) -> PyResult<()> {
        take_field(slf, |st| &mut st.addr, "addr")
    }
    #[getter(_map)]
    fn get_map(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        field(slf, |st| st.map.as_ref(), "_map").map(Bound::unbind)
    }
    #[setter(_map)]
    fn set_map_attr(&self, py: Python<'_>, v: Py<PyAny>) {
        let old = self.fields(py).map.replace(v);
        drop(old); // after the lock: its destructor may run Python
    }
    #[deleter(_map)]
    fn del_map_attr(slf: &Bound<'_, Self>) -> PyResult<()> {
        take_field(slf, |st| &mut st.map, "_map")
    }
    #[getter(_fileno)]
    fn get_fileno(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        field(slf, |st| st.fileno.as_ref(), "_fileno").map(Bound::unbind)
    }
    #[setter(_fileno)]
    fn set_fileno_attr(&self, py: Python<'_>, v: Py<PyAny>) {
        self.fields(py).fileno = Some(v);
    }

    // ---- construction ----
    // Called by the `__init__` that asyncore.py defines in Python: a #[pymethods]
    // `__init__` is a slot wrapper, which inspect.signature() shows as (*args, **kwargs).
    #[pyo3(signature = (sock=None, map=None))]
    fn _init(
        slf: &Bound<'_, Self>,
        sock: Option<&Bound<'_, PyAny>>,
        map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        dispatcher_init(slf, sock, map)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let cls = slf.get_type();
        let mut status = vec![format!(
            "{}.{}",
            cls.getattr(names::dunder_module(py))?.str()?,
            cls.getattr(names::dunder_qualname(py))?.str()?
        )];
        let addr = slf.getattr(names::addr(py))?;
        if accepting(slf)? && addr.is_truthy()? {
            status.push("listening".into());
        } else if connected(slf)? {
            status.push("connected".into());
        }
        if !addr.is_none() {
            match PyString::new(py, "%s:%d").rem(&addr) {
                Ok(s) => status.push(s.str()?.to_string()),
                Err(e) if e.is_instance_of::<PyTypeError>(py) => {
                    status.push(addr.repr()?.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(format!(
            "<{} at {:#x}>",
            status.join(" "),
            slf.as_ptr() as usize
        ))
    }

    #[pyo3(signature = (map=None))]
    fn add_channel(slf: &Bound<'_, Self>, map: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let map = match map {
            Some(m) => m.clone(),
            None => slf.getattr(names::_map(py))?,
        };
        let fd = slf.getattr(names::_fileno(py))?;
        map_write(&map, &fd, Some(slf.as_any()))
    }

    #[pyo3(signature = (map=None))]
    fn del_channel(slf: &Bound<'_, Self>, map: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let fd = slf.getattr(names::_fileno(py))?;
        let map = match map {
            Some(m) => m.clone(),
            None => slf.getattr(names::_map(py))?,
        };
        // Unregister from the poller before the socket can be closed (the
        // polling crate's contract), then do what CPython does.
        slf.get().unregister(py);
        if map.contains(&fd)? {
            map_write(&map, &fd, None)?;
        }
        slf.setattr(names::_fileno(py), py.None())
    }

    // CPython's defaults: socket.AF_INET, socket.SOCK_STREAM.
    #[pyo3(
        signature = (family = py_int(AF_INET), r#type = py_int(SOCK_STREAM)),
        text_signature = "($self, family=socket.AF_INET, type=socket.SOCK_STREAM)"
    )]
    fn create_socket(slf: &Bound<'_, Self>, family: Py<PyAny>, r#type: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (family, r#type) = (family.bind(py), r#type.bind(py));
        slf.setattr(
            names::family_and_type(py),
            PyTuple::new(py, [family, r#type])?,
        )?;
        let socket_mod = global(py, names::socket(py))?;
        let sock = socket_mod.call_method1(names::socket(py), (family, r#type))?;
        sock.call_method1(names::setblocking(py), (false,))?;
        slf.call_method1(names::set_socket(py), (sock,))?;
        Ok(())
    }

    #[pyo3(signature = (sock, map=None))]
    fn set_socket(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        slf.setattr(names::socket(py), sock)?;
        let fd = sock.call_method0(names::fileno(py))?;
        slf.setattr(names::_fileno(py), fd)?;
        slf.call_method1(names::add_channel(py), (map,))?;
        Ok(())
    }

    fn set_reuse_addr(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let attempt = || -> PyResult<()> {
            let socket_mod = global(py, names::socket(py))?;
            let level = socket_mod.getattr(names::sol_socket(py))?;
            let opt = socket_mod.getattr(names::so_reuseaddr(py))?;
            let sock = slf.getattr(names::socket(py))?;
            let cur = sock.call_method1(names::getsockopt(py), (&level, &opt))?;
            sock.call_method1(names::setsockopt(py), (&level, &opt, cur.bitor(1)?))?;
            Ok(())
        };
        match attempt() {
            Err(e) if e.is_instance_of::<PyOSError>(py) => Ok(()),
            other => other,
        }
    }

    fn readable(&self) -> bool {
        true
    }

    fn writable(&self) -> bool {
        true
    }

    fn listen<'py>(slf: &Bound<'py, Self>, num: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        set_accepting(slf, true)?;
        let mut num = num.clone();
        if is_windows(py)? && num.gt(5)? {
            num = 5i32.into_pyobject(py)?.into_any();
        }
        socket_of(slf)?.call_method1(names::listen(py), (num,))
    }

    fn bind<'py>(slf: &Bound<'py, Self>, addr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        slf.setattr(names::addr(py), addr)?;
        socket_of(slf)?.call_method1(names::bind(py), (addr,))
    }

    fn connect(slf: &Bound<'_, Self>, address: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        set_connected(slf, false)?;
        set_connecting(slf, true)?;
        let err: i32 = socket_of(slf)?
            .call_method1(names::connect_ex(py), (address,))?
            .extract()?;
        if matches!(
            err,
            py_errno::EINPROGRESS | py_errno::EALREADY | py_errno::EWOULDBLOCK
        ) || (err == py_errno::EINVAL && is_windows(py)?)
        {
            return slf.setattr(names::addr(py), address);
        }
        if err == 0 || err == py_errno::EISCONN {
            slf.setattr(names::addr(py), address)?;
            slf.call_method0(names::handle_connect_event(py))?;
            return Ok(());
        }
        let name = global(py, names::errorcode(py))?.get_item(err)?;
        Err(os_error_with(py, err, &name.str()?.to_string()))
    }

    fn accept<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let pair = match socket_of(slf)?.call_method0(names::accept(py)) {
            Ok(p) => p,
            Err(e) if e.is_instance_of::<PyTypeError>(py) => return Ok(py.None().into_bound(py)),
            Err(e) => {
                return match errno_of(py, &e) {
                    Some(py_errno::EWOULDBLOCK | py_errno::ECONNABORTED) => {
                        Ok(py.None().into_bound(py))
                    }
                    _ => Err(e),
                }
            }
        };
        // `conn, addr = self.socket.accept()` sits inside CPython's try: a
        // result that does not unpack raises TypeError, which it swallows.
        match pair.extract::<(Bound<PyAny>, Bound<PyAny>)>() {
            Ok((conn, addr)) => Ok(PyTuple::new(py, [conn, addr])?.into_any()),
            Err(_) if pair.try_iter().is_err() => Ok(py.None().into_bound(py)),
            Err(_) => {
                let seq: Vec<Bound<PyAny>> = pair.try_iter()?.collect::<PyResult<_>>()?;
                Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "{} values to unpack (expected 2)",
                    if seq.len() > 2 {
                        "too many"
                    } else {
                        "not enough"
                    }
                )))
            }
        }
    }

    fn send<'py>(slf: &Bound<'py, Self>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        dispatcher_send(slf, data)
    }

    fn recv<'py>(
        slf: &Bound<'py, Self>,
        buffer_size: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        dispatcher_recv(slf, buffer_size)
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        output_batch::flush(slf)?;
        slf.get().forget_socket();
        set_connected(slf, false)?;
        set_accepting(slf, false)?;
        set_connecting(slf, false)?;
        slf.call_method0(names::del_channel(py))?;
        let sock = socket_of(slf)?;
        if !sock.is_none() {
            if let Err(e) = sock.call_method0(names::close(py)) {
                if !matches!(errno_of(py, &e), Some(py_errno::ENOTCONN | py_errno::EBADF)) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn log(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let stderr = global(py, names::sys(py))?.getattr(names::stderr(py))?;
        stderr.call_method1(names::write(py), (format!("log: {}\n", message.str()?),))?;
        Ok(())
    }

    #[pyo3(signature = (message, r#type = py_str("info")), text_signature = "($self, message, type='info')")]
    fn log_info(
        slf: &Bound<'_, Self>,
        message: &Bound<'_, PyAny>,
        r#type: Py<PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let kind = r#type.into_bound(py);
        if !slf.getattr(names::ignore_log_types(py))?.contains(&kind)? {
            let line = format!("{}: {}", kind.str()?, message.str()?);
            py.import(names::builtins(py))?
                .getattr(names::print(py))?
                .call1((line,))?;
        }
        Ok(())
    }

    fn handle_read_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::read_event(slf)
    }

    fn handle_write_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::write_event(slf)
    }

    fn handle_connect_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let err = so_error(slf)?;
        if err.is_truthy()? {
            let msg = crate::errors::strerror(py, &err)?;
            let exc = py.get_type::<PyOSError>().call1((err, msg))?;
            return Err(PyErr::from_value(exc));
        }
        slf.call_method0(names::handle_connect(py))?;
        set_connected(slf, true)?;
        set_connecting(slf, false)
    }

    fn handle_expt_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if so_error(slf)?.is_truthy()? {
            slf.call_method0(names::handle_close(py))?;
        } else {
            slf.call_method0(names::handle_expt(py))?;
        }
        Ok(())
    }

    fn handle_error(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let ct = global(py, names::compact_traceback(py))?.call0()?;
        let (_nil, t, v, tbinfo): (Bound<PyAny>, Bound<PyAny>, Bound<PyAny>, Bound<PyAny>) =
            ct.extract()?;
        let self_repr = match slf.repr() {
            Ok(r) => r.to_string(),
            Err(_) => format!(
                "<__repr__(self) failed for object at {:x}>",
                slf.as_ptr() as usize
            ),
        };
        let msg = format!(
            "uncaptured python exception, closing channel {} ({}:{} {})",
            self_repr,
            t.str()?,
            v.str()?,
            tbinfo.str()?
        );
        slf.call_method1(names::log_info(py), (msg, "error"))?;
        slf.call_method0(names::handle_close(py))?;
        Ok(())
    }

    fn handle_expt(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled incoming priority event"))
    }

    fn handle_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled read event"))
    }

    fn handle_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled write event"))
    }

    fn handle_connect(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled connect event"))
    }

    fn handle_accept(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let pair = slf.call_method0(names::accept(py))?;
        if !pair.is_none() {
            // CPython: self.handle_accepted(*pair)
            let args = pair.try_iter()?.collect::<PyResult<Vec<_>>>()?;
            if let [sock, addr] = args.as_slice() {
                crate::calls::call_method2(slf, names::handle_accepted(py), sock, addr)?;
            } else {
                slf.call_method1(names::handle_accepted(py), PyTuple::new(py, args)?)?;
            }
        }
        Ok(())
    }

    fn handle_accepted(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let _ = addr;
        sock.call_method0(names::close(slf.py()))?;
        warn_unhandled(slf, intern!(slf.py(), "unhandled accepted event"))
    }

    fn handle_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled close event"))?;
        slf.call_method0(names::close(slf.py()))?;
        Ok(())
    }
}

/// CPython's `dispatcher.__init__(self, sock=None, map=None)`.
pub fn dispatcher_init(
    slf: &Bound<'_, Dispatcher>,
    sock: Option<&Bound<'_, PyAny>>,
    map: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = slf.py();
    crate::channel::release_unused_dict(slf);
    let the_map = match map {
        Some(m) => m.clone(),
        None => global(py, names::socket_map(py))?,
    };
    slf.setattr(names::_map(py), the_map)?;
    slf.setattr(names::_fileno(py), py.None())?;
    let sock = match sock {
        Some(s) if s.is_truthy()? => s,
        _ => return slf.setattr(names::socket(py), py.None()),
    };
    // Set to non-blocking just to make sure, for sockets from a blocking source.
    sock.call_method1(names::setblocking(py), (false,))?;
    slf.call_method1(names::set_socket(py), (sock, map))?;
    set_connected(slf, true)?;
    match sock.call_method0(names::getpeername(py)) {
        Ok(addr) => slf.setattr(names::addr(py), addr),
        Err(e) => match errno_of(py, &e) {
            Some(py_errno::ENOTCONN | py_errno::EINVAL) => set_connected(slf, false),
            Some(_) => {
                slf.call_method1(names::del_channel(py), (map,))?;
                Err(e)
            }
            None => Err(e),
        },
    }
}

/// `dispatcher.recv(buffer_size)`.
pub fn dispatcher_recv<'py>(
    slf: &Bound<'py, Dispatcher>,
    buffer_size: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let sock = socket_of(slf)?;
    match recv_bytes(py, &sock, buffer_size, &slf.get().recv_big) {
        Ok(data) if non_empty(&data)? => Ok(data),
        Ok(_) => {
            slf.call_method0(names::handle_close(py))?;
            Ok(PyBytes::new(py, b"").into_any())
        }
        Err(e) => match errno_of(py, &e) {
            Some(errno) if is_disconnect(py, errno)? => {
                slf.call_method0(names::handle_close(py))?;
                Ok(PyBytes::new(py, b"").into_any())
            }
            _ => Err(e),
        },
    }
}

/// `bool(data)` for what `recv` returned: for exact bytes (our syscall's
/// result) its length, without a call to `PyObject_IsTrue`.
fn non_empty(data: &Bound<'_, PyAny>) -> PyResult<bool> {
    match data.cast_exact::<PyBytes>() {
        Ok(b) => Ok(!b.as_bytes().is_empty()),
        Err(_) => data.is_truthy(),
    }
}

/// The base `dispatcher.send`, whatever a subclass made of `send`.
pub fn dispatcher_send<'py>(
    slf: &Bound<'py, Dispatcher>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    // Bytes async_chat queued were sent before this call, under CPython.
    output_batch::flush(slf)?;
    let sock = socket_of(slf)?;
    match send_obj(py, &sock, data) {
        Ok(n) => Ok(n),
        Err(e) => match errno_of(py, &e) {
            Some(py_errno::EWOULDBLOCK) => Ok(0i32.into_pyobject(py)?.into_any()),
            Some(errno) if is_disconnect(py, errno)? => {
                slf.call_method0(names::handle_close(py))?;
                Ok(0i32.into_pyobject(py)?.into_any())
            }
            _ => Err(e),
        },
    }
}

fn so_error<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let socket_mod = global(py, names::socket(py))?;
    let level = socket_mod.getattr(names::sol_socket(py))?;
    let opt = socket_mod.getattr(names::so_error(py))?;
    socket_of(slf)?.call_method1(names::getsockopt(py), (level, opt))
}

/// `self.log_info(what, 'warning')`, with interned strings: the default
/// handle_close logs one per connection (and CPython ignores it by default).
fn warn_unhandled(slf: &Bound<'_, Dispatcher>, what: &Bound<'_, PyString>) -> PyResult<()> {
    let py = slf.py();
    crate::calls::call_method2(slf, names::log_info(py), what, intern!(py, "warning"))?;
    Ok(())
}

fn is_windows(py: Python<'_>) -> PyResult<bool> {
    let name = global(py, names::os(py))?.getattr(names::name(py))?;
    name.eq("nt")
}
