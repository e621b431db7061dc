//! Owns exceptions: OSError construction, errno tests, running `handle_error`
//! inside an "except" block the way CPython does, `compact_traceback` and
//! `_strerror`. Everything here is off the hot path.
//!
//! Uses: module_state, names.

use pyo3::exceptions::{PyAssertionError, PyOSError, PyOverflowError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::module_state::{bound, global};
use crate::names;

/// The values of Python's `errno` module for the names asyncore compares an
/// OSError's `errno` with. POSIX: the C library's. Windows: CPython's
/// Modules/errnomodule.c gives the socket names their WinSock codes
/// (`errno.EWOULDBLOCK == WSAEWOULDBLOCK == 10035`, which a socket error's
/// `errno` carries), where the C runtime's `EWOULDBLOCK` is 140.
pub mod py_errno {
    #[cfg(unix)]
    pub use libc::{
        EALREADY, EBADF, ECONNABORTED, EINPROGRESS, EINVAL, EISCONN, ENOTCONN, EWOULDBLOCK,
    };
    #[cfg(windows)]
    mod winsock {
        pub const EWOULDBLOCK: i32 = 10035;
        pub const EINPROGRESS: i32 = 10036;
        pub const EALREADY: i32 = 10037;
        pub const ECONNABORTED: i32 = 10053;
        pub const EISCONN: i32 = 10056;
        pub const ENOTCONN: i32 = 10057;
        // Not socket names: the C runtime's values.
        pub const EBADF: i32 = 9;
        pub const EINVAL: i32 = 22;
    }
    #[cfg(windows)]
    pub use winsock::*;
}

/// `OSError(err, os.strerror(err))`, which Python turns into the errno's subclass
/// (ConnectionResetError, BlockingIOError...), as the socket module raises it.
#[cold]
pub fn os_error(py: Python<'_>, errno: i32) -> PyErr {
    let msg = std::io::Error::from_raw_os_error(errno).to_string();
    // Rust appends " (os error N)"; Python's message is the bare strerror.
    let msg = msg
        .rsplit_once(" (os error")
        .map_or(msg.as_str(), |(m, _)| m)
        .to_owned();
    os_error_with(py, errno, &msg)
}

#[cold]
pub fn os_error_with(py: Python<'_>, errno: i32, msg: &str) -> PyErr {
    match py.get_type::<PyOSError>().call1((errno, msg)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// The `errno` of an OSError, or None for anything else.
pub fn errno_of(py: Python<'_>, err: &PyErr) -> Option<i32> {
    if !err.is_instance_of::<PyOSError>(py) {
        return None;
    }
    err.value(py)
        .getattr(names::errno(py))
        .ok()
        .and_then(|e| e.extract::<i32>().ok())
}

/// Whether `err` is one of `asyncore._reraised_exceptions` (read at call time).
pub fn is_reraised(py: Python<'_>, err: &PyErr) -> PyResult<bool> {
    let reraised = global(py, names::_reraised_exceptions(py))?;
    err.value(py).is_instance(&reraised)
}

/// Whether `errno` is in `asyncore._DISCONNECTED` (read at call time).
pub fn is_disconnect(py: Python<'_>, errno: i32) -> PyResult<bool> {
    global(py, names::_disconnected(py))?.contains(errno)
}

/// Calls `obj.<method>()` with `err` set as the exception being handled, as
/// CPython does from its `except:` blocks: `sys.exc_info()`,
/// `compact_traceback()` and a bare `raise` work inside it.
#[cold]
pub fn call_in_except(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    method: &Bound<'_, PyString>,
    err: PyErr,
) -> PyResult<()> {
    let err = ensure_traceback(py, err);
    let value = err.value(py);
    let tb = err.traceback(py).map(Bound::unbind);
    if let Some(tb) = &tb {
        // sys.exc_info() reads the traceback from the exception object (3.11+).
        // SAFETY: the GIL is held; `value` is an exception instance and `tb`
        // a traceback, both alive for the call, which takes its own reference.
        unsafe { ffi::PyException_SetTraceback(value.as_ptr(), tb.as_ptr()) };
    }
    let _guard = ExcInfoGuard::set(py, value, tb.as_ref().map(|t| t.bind(py).as_any()));
    obj.call_method0(method).map(drop)
}

/// An exception raised in Rust has no traceback; CPython's always has one
/// (it is caught in a Python frame). Give it one through a tiny Python helper.
fn ensure_traceback(py: Python<'_>, err: PyErr) -> PyErr {
    if err.traceback(py).is_some() {
        return err;
    }
    let Ok(st) = bound(py) else { return err };
    match st.attach_traceback.bind(py).call1((err.value(py),)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => err,
    }
}

/// Sets the "currently handled" exception and restores the previous one on drop.
struct ExcInfoGuard {
    saved: (*mut ffi::PyObject, *mut ffi::PyObject, *mut ffi::PyObject),
}

impl ExcInfoGuard {
    /// `_gil` is the proof the GIL is held, which the C calls below need.
    fn set(_gil: Python<'_>, value: &Bound<'_, PyAny>, tb: Option<&Bound<'_, PyAny>>) -> Self {
        let mut saved = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        // SAFETY: the GIL is held (`_gil`). PyErr_GetExcInfo stores three new
        // references (or NULLs) in `saved`, which Drop hands back. SetExcInfo
        // steals its three arguments, so each gets a reference of its own
        // first: the type (Py_TYPE of a live object is a live type), `value`
        // and `tb`, all kept alive by the caller meanwhile.
        unsafe {
            ffi::PyErr_GetExcInfo(&raw mut saved.0, &raw mut saved.1, &raw mut saved.2);
            let t = ffi::Py_TYPE(value.as_ptr()).cast::<ffi::PyObject>();
            ffi::Py_IncRef(t);
            ffi::Py_IncRef(value.as_ptr());
            let tb_ptr = tb.map_or(std::ptr::null_mut(), |tb| {
                ffi::Py_IncRef(tb.as_ptr());
                tb.as_ptr()
            });
            ffi::PyErr_SetExcInfo(t, value.as_ptr(), tb_ptr);
        }
        ExcInfoGuard { saved }
    }
}

impl Drop for ExcInfoGuard {
    fn drop(&mut self) {
        // SAFETY: `saved` holds the references PyErr_GetExcInfo gave `set`,
        // handed over exactly once here (SetExcInfo steals them). The guard is
        // !Send (raw pointers), so this runs on the thread that made it, inside
        // the same GIL-holding call (it is a local of call_in_except).
        unsafe { ffi::PyErr_SetExcInfo(self.saved.0, self.saved.1, self.saved.2) };
    }
}

/// `asyncore.compact_traceback()`: `((file, function, line), t, v, info)`.
#[pyfunction]
pub fn compact_traceback(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    let sys = py.import(names::sys(py))?;
    let info = sys.call_method0(names::exc_info(py))?;
    let (t, v, tb): (Bound<PyAny>, Bound<PyAny>, Bound<PyAny>) = info.extract()?;
    if !tb.is_truthy()? {
        return Err(PyAssertionError::new_err("traceback does not exist"));
    }
    let entries = PyList::empty(py);
    let mut parts: Vec<String> = Vec::new();
    let mut cur = tb;
    while cur.is_truthy()? {
        let code = cur
            .getattr(names::tb_frame(py))?
            .getattr(names::f_code(py))?;
        let file = code.getattr(names::co_filename(py))?;
        let name = code.getattr(names::co_name(py))?;
        let line = cur.getattr(names::tb_lineno(py))?.str()?;
        parts.push(format!("[{}|{}|{}]", file.str()?, name.str()?, line));
        entries.append((file, name, line))?;
        cur = cur.getattr(names::tb_next(py))?;
    }
    let last = entries.get_item(entries.len() - 1)?;
    PyTuple::new(
        py,
        [last, t, v, PyString::new(py, &parts.join(" ")).into_any()],
    )
}

/// `asyncore._strerror(err)`.
#[pyfunction]
#[pyo3(name = "_strerror")]
pub fn strerror<'py>(py: Python<'py>, err: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let os = global(py, names::os(py))?;
    match os.call_method1(names::strerror(py), (err,)) {
        Ok(s) => Ok(s),
        Err(e)
            if e.is_instance_of::<PyValueError>(py)
                || e.is_instance_of::<PyOverflowError>(py)
                || e.is_instance_of::<pyo3::exceptions::PyNameError>(py) =>
        {
            let errorcode = global(py, names::errorcode(py))?;
            if errorcode.contains(err)? {
                errorcode.get_item(err)
            } else {
                Ok(PyString::new(py, &format!("Unknown error {}", err.str()?)).into_any())
            }
        }
        Err(e) => Err(e),
    }
}

/// CPython's AttributeError for an instance attribute never set (or
/// deleted), naming the object's own class.
#[cold]
pub fn missing_attr(obj: &Bound<'_, PyAny>, name: impl std::fmt::Display) -> PyErr {
    let class = obj
        .get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |n| n.to_string());
    pyo3::exceptions::PyAttributeError::new_err(format!(
        "'{class}' object has no attribute '{name}'"
    ))
}
