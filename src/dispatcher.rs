//! `asyncore.dispatcher`: the base class's methods and logic.
//!
//! `dispatcher_with_send` (with_send.rs), `async_chat` (async_chat.rs) and
//! `file_dispatcher` are Python subclasses (so they mix freely in multiple
//! inheritance, as in CPython) whose methods are `dispatcher`'s Rust methods
//! under private names (`_ws_*`, `_ac_*`), each in its own `#[pymethods]`
//! block beside its logic (pyo3's `multiple-pymethods`).

use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::channel::{
    accepting, connected, connecting, field, set_accepting, set_connected, set_connecting,
    socket_of, Dispatcher,
};
use crate::errors::{errno_of, is_disconnect, os_error_with};
use crate::module_state::global;
use crate::output_batch;
use crate::pyobj::{py_int, py_str};
use crate::socket_map::map_write;
use crate::sockio::{recv_bytes, send_obj, AF_INET, SOCK_STREAM};

impl Dispatcher {
    /// `dispatcher.handle_read_event`.
    pub fn read_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();

        if accepting(slf)? {
            slf.call_method0(intern!(py, "handle_accept"))?;
            return Ok(());
        }
        if !connected(slf)? && connecting(slf)? {
            slf.call_method0(intern!(py, "handle_connect_event"))?;
        }
        slf.call_method0(intern!(py, "handle_read"))?;
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
            slf.call_method0(intern!(py, "handle_connect_event"))?;
        }
        slf.call_method0(intern!(py, "handle_write"))?;
        Ok(())
    }
}

#[pymethods]
impl Dispatcher {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
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
    fn addr(py: Python<'_>) -> Py<PyAny> {
        py.None()
    }
    #[classattr]
    fn ignore_log_types(py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(pyo3::types::PyFrozenSet::new(py, ["warning"])?
            .into_any()
            .unbind())
    }

    // ---- Rust-backed state ----
    #[getter(connected)]
    fn get_connected(&self) -> bool {
        self.st().connected
    }
    #[setter(connected)]
    fn set_connected_attr(slf: &Bound<'_, Self>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = v.is_truthy()?;
        slf.get().store_flag(|st| &mut st.connected, v, true);
        Ok(())
    }
    #[getter(accepting)]
    fn get_accepting(&self) -> bool {
        self.st().accepting
    }
    #[setter(accepting)]
    fn set_accepting_attr(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store_flag(|st| &mut st.accepting, v.is_truthy()?, true);
        Ok(())
    }
    #[getter(connecting)]
    fn get_connecting(&self) -> bool {
        self.st().connecting
    }
    #[setter(connecting)]
    fn set_connecting_attr(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store_flag(|st| &mut st.connecting, v.is_truthy()?, false);
        Ok(())
    }
    // Unset until __init__ (or the subclass) assigns them, as in CPython.
    #[getter(socket)]
    fn get_socket(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        output_batch::flush(slf)?;
        output_batch::forget_socket(slf);
        field(slf, |st| st.socket.as_ref(), "socket").map(Bound::unbind)
    }
    #[setter(socket)]
    fn set_socket_attr(slf: &Bound<'_, Self>, v: Py<PyAny>) -> PyResult<()> {
        // Batched output belongs to the old socket (STARTTLS swaps it).
        output_batch::flush(slf)?;
        output_batch::forget_socket(slf);
        slf.get().st().socket = Some(v);
        Ok(())
    }
    #[getter(_fileno)]
    fn get_fileno(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        field(slf, |st| st.fileno.as_ref(), "_fileno").map(Bound::unbind)
    }
    #[setter(_fileno)]
    fn set_fileno_attr(&self, v: Py<PyAny>) {
        self.st().fileno = Some(v);
    }

    // ---- construction ----
    #[pyo3(signature = (sock=None, map=None))]
    fn __init__(
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
            cls.getattr(intern!(py, "__module__"))?.str()?,
            cls.getattr(intern!(py, "__qualname__"))?.str()?
        )];
        let addr = slf.getattr(intern!(py, "addr"))?;
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
            None => slf.getattr(intern!(py, "_map"))?,
        };
        let fd = slf.getattr(intern!(py, "_fileno"))?;
        map_write(&map, &fd, Some(slf.as_any()))
    }

    #[pyo3(signature = (map=None))]
    fn del_channel(slf: &Bound<'_, Self>, map: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let fd = slf.getattr(intern!(py, "_fileno"))?;
        let map = match map {
            Some(m) => m.clone(),
            None => slf.getattr(intern!(py, "_map"))?,
        };
        // Unregister from the poller before the socket can be closed (the
        // polling crate's contract), then do what CPython does.
        slf.get().notify.unregister();
        if map.contains(&fd)? {
            map_write(&map, &fd, None)?;
        }
        slf.setattr(intern!(py, "_fileno"), py.None())
    }

    // CPython's defaults: socket.AF_INET, socket.SOCK_STREAM.
    #[pyo3(signature = (family = py_int(AF_INET), r#type = py_int(SOCK_STREAM)))]
    fn create_socket(slf: &Bound<'_, Self>, family: Py<PyAny>, r#type: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (family, r#type) = (family.bind(py), r#type.bind(py));
        slf.setattr(
            intern!(py, "family_and_type"),
            PyTuple::new(py, [family, r#type])?,
        )?;
        let socket_mod = global(py, intern!(py, "socket"))?;
        let sock = socket_mod.call_method1(intern!(py, "socket"), (family, r#type))?;
        sock.call_method1(intern!(py, "setblocking"), (false,))?;
        slf.call_method1(intern!(py, "set_socket"), (sock,))?;
        Ok(())
    }

    #[pyo3(signature = (sock, map=None))]
    fn set_socket(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        slf.setattr(intern!(py, "socket"), sock)?;
        let fd = sock.call_method0(intern!(py, "fileno"))?;
        slf.setattr(intern!(py, "_fileno"), fd)?;
        slf.call_method1(intern!(py, "add_channel"), (map,))?;
        Ok(())
    }

    fn set_reuse_addr(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let attempt = || -> PyResult<()> {
            let socket_mod = global(py, intern!(py, "socket"))?;
            let level = socket_mod.getattr(intern!(py, "SOL_SOCKET"))?;
            let opt = socket_mod.getattr(intern!(py, "SO_REUSEADDR"))?;
            let sock = slf.getattr(intern!(py, "socket"))?;
            let cur = sock.call_method1(intern!(py, "getsockopt"), (&level, &opt))?;
            sock.call_method1(intern!(py, "setsockopt"), (&level, &opt, cur.bitor(1)?))?;
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
        socket_of(slf)?.call_method1(intern!(py, "listen"), (num,))
    }

    fn bind<'py>(slf: &Bound<'py, Self>, addr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        slf.setattr(intern!(py, "addr"), addr)?;
        socket_of(slf)?.call_method1(intern!(py, "bind"), (addr,))
    }

    fn connect(slf: &Bound<'_, Self>, address: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        set_connected(slf, false)?;
        set_connecting(slf, true)?;
        let err: i32 = socket_of(slf)?
            .call_method1(intern!(py, "connect_ex"), (address,))?
            .extract()?;
        if matches!(err, libc::EINPROGRESS | libc::EALREADY | libc::EWOULDBLOCK)
            || (err == libc::EINVAL && is_windows(py)?)
        {
            return slf.setattr(intern!(py, "addr"), address);
        }
        if err == 0 || err == libc::EISCONN {
            slf.setattr(intern!(py, "addr"), address)?;
            slf.call_method0(intern!(py, "handle_connect_event"))?;
            return Ok(());
        }
        let name = global(py, intern!(py, "errorcode"))?.get_item(err)?;
        Err(os_error_with(py, err, &name.str()?.to_string()))
    }

    fn accept<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let pair = match socket_of(slf)?.call_method0(intern!(py, "accept")) {
            Ok(p) => p,
            Err(e) if e.is_instance_of::<PyTypeError>(py) => return Ok(py.None().into_bound(py)),
            Err(e) => {
                return match errno_of(py, &e) {
                    Some(libc::EWOULDBLOCK | libc::ECONNABORTED) => Ok(py.None().into_bound(py)),
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
        let py = slf.py();
        let sock = socket_of(slf)?;
        match recv_bytes(py, &sock, buffer_size) {
            Ok(data) if data.is_truthy()? => Ok(data),
            Ok(_) => {
                slf.call_method0(intern!(py, "handle_close"))?;
                Ok(PyBytes::new(py, b"").into_any())
            }
            Err(e) => match errno_of(py, &e) {
                Some(errno) if is_disconnect(py, errno)? => {
                    slf.call_method0(intern!(py, "handle_close"))?;
                    Ok(PyBytes::new(py, b"").into_any())
                }
                _ => Err(e),
            },
        }
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        output_batch::flush(slf)?;
        output_batch::forget_socket(slf);
        set_connected(slf, false)?;
        set_accepting(slf, false)?;
        set_connecting(slf, false)?;
        slf.call_method0(intern!(py, "del_channel"))?;
        let sock = socket_of(slf)?;
        if !sock.is_none() {
            if let Err(e) = sock.call_method0(intern!(py, "close")) {
                if !matches!(errno_of(py, &e), Some(libc::ENOTCONN | libc::EBADF)) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn log(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let stderr = global(py, intern!(py, "sys"))?.getattr(intern!(py, "stderr"))?;
        stderr.call_method1(
            intern!(py, "write"),
            (format!("log: {}\n", message.str()?),),
        )?;
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
        if !slf
            .getattr(intern!(py, "ignore_log_types"))?
            .contains(&kind)?
        {
            let line = format!("{}: {}", kind.str()?, message.str()?);
            py.import("builtins")?
                .getattr(intern!(py, "print"))?
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
        slf.call_method0(intern!(py, "handle_connect"))?;
        set_connected(slf, true)?;
        set_connecting(slf, false)
    }

    fn handle_expt_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if so_error(slf)?.is_truthy()? {
            slf.call_method0(intern!(py, "handle_close"))?;
        } else {
            slf.call_method0(intern!(py, "handle_expt"))?;
        }
        Ok(())
    }

    fn handle_error(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let ct = global(py, intern!(py, "compact_traceback"))?.call0()?;
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
        slf.call_method1(intern!(py, "log_info"), (msg, "error"))?;
        slf.call_method0(intern!(py, "handle_close"))?;
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
        let pair = slf.call_method0(intern!(py, "accept"))?;
        if !pair.is_none() {
            // CPython: self.handle_accepted(*pair)
            let args = pair.try_iter()?.collect::<PyResult<Vec<_>>>()?;
            if let [sock, addr] = args.as_slice() {
                crate::calls::call_method2(slf, intern!(py, "handle_accepted"), sock, addr)?;
            } else {
                slf.call_method1(intern!(py, "handle_accepted"), PyTuple::new(py, args)?)?;
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
        sock.call_method0(intern!(slf.py(), "close"))?;
        warn_unhandled(slf, intern!(slf.py(), "unhandled accepted event"))
    }

    fn handle_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled close event"))?;
        slf.call_method0(intern!(slf.py(), "close"))?;
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
    let the_map = match map {
        Some(m) => m.clone(),
        None => global(py, intern!(py, "socket_map"))?,
    };
    slf.setattr(intern!(py, "_map"), the_map)?;
    slf.setattr(intern!(py, "_fileno"), py.None())?;
    let sock = match sock {
        Some(s) if s.is_truthy()? => s,
        _ => return slf.setattr(intern!(py, "socket"), py.None()),
    };
    // Set to non-blocking just to make sure, for sockets from a blocking source.
    sock.call_method1(intern!(py, "setblocking"), (false,))?;
    slf.call_method1(intern!(py, "set_socket"), (sock, map))?;
    set_connected(slf, true)?;
    match sock.call_method0(intern!(py, "getpeername")) {
        Ok(addr) => slf.setattr(intern!(py, "addr"), addr),
        Err(e) => match errno_of(py, &e) {
            Some(libc::ENOTCONN | libc::EINVAL) => set_connected(slf, false),
            Some(_) => {
                slf.call_method1(intern!(py, "del_channel"), (map,))?;
                Err(e)
            }
            None => Err(e),
        },
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
            Some(libc::EWOULDBLOCK) => Ok(0i32.into_pyobject(py)?.into_any()),
            Some(errno) if is_disconnect(py, errno)? => {
                slf.call_method0(intern!(py, "handle_close"))?;
                Ok(0i32.into_pyobject(py)?.into_any())
            }
            _ => Err(e),
        },
    }
}

fn so_error<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let socket_mod = global(py, intern!(py, "socket"))?;
    let level = socket_mod.getattr(intern!(py, "SOL_SOCKET"))?;
    let opt = socket_mod.getattr(intern!(py, "SO_ERROR"))?;
    socket_of(slf)?.call_method1(intern!(py, "getsockopt"), (level, opt))
}

/// `self.log_info(what, 'warning')`, with interned strings: the default
/// handle_close logs one per connection (and CPython ignores it by default).
fn warn_unhandled(slf: &Bound<'_, Dispatcher>, what: &Bound<'_, PyString>) -> PyResult<()> {
    let py = slf.py();
    crate::calls::call_method2(slf, intern!(py, "log_info"), what, intern!(py, "warning"))?;
    Ok(())
}

fn is_windows(py: Python<'_>) -> PyResult<bool> {
    let name = global(py, intern!(py, "os"))?.getattr(intern!(py, "name"))?;
    name.eq("nt")
}
