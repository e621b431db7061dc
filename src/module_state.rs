//! Owns the binding to the Python-side `asyncore` module the Rust code
//! serves, and the lookup of its globals at call time.
//!
//! CPython's asyncore looks its globals up when it runs, and real code and
//! CPython's tests replace them (`asyncore.socket_map`, `asyncore.socket`,
//! `asyncore.poll`, `read`, `write`...). So do we: the module's `__dict__` is
//! bound once, and every name is read from it when needed.
//!
//! Uses: names.

use pyo3::exceptions::{PyNameError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

use crate::names;

/// The bound module namespace and the originals of the replaceable functions.
pub struct BoundModule {
    pub globals: Py<PyDict>,
    pub poll: Py<PyAny>,
    pub poll2: Py<PyAny>,
    pub read: Py<PyAny>,
    pub write: Py<PyAny>,
    pub exception: Py<PyAny>,
    pub readwrite: Py<PyAny>,
    /// The real `socket.socket` class, for the raw-fd fast path (sockio.rs).
    pub socket_class: Py<PyAny>,
    /// Helper that gives an exception raised in Rust a traceback entry.
    pub attach_traceback: Py<PyAny>,
}

static BOUND: PyOnceLock<BoundModule> = PyOnceLock::new();

/// Called once by `asyncore_rs/asyncore.py` after it has defined its globals.
#[pyfunction]
#[pyo3(name = "_bind_asyncore")]
pub fn bind_asyncore(py: Python<'_>, globals: Bound<'_, PyDict>) -> PyResult<()> {
    let get = |name: &Bound<'_, PyString>| -> PyResult<Py<PyAny>> {
        globals
            .get_item(name)?
            .map(Bound::unbind)
            .ok_or_else(|| PyRuntimeError::new_err(format!("asyncore module lacks {name}")))
    };
    let socket_mod = py.import(names::socket(py))?;
    let module = BoundModule {
        poll: get(names::poll(py))?,
        poll2: get(names::poll2(py))?,
        read: get(names::read(py))?,
        write: get(names::write(py))?,
        exception: get(names::_exception(py))?,
        readwrite: get(names::readwrite(py))?,
        attach_traceback: get(names::_attach_traceback(py))?,
        socket_class: socket_mod.getattr(names::socket(py))?.unbind(),
        globals: globals.clone().unbind(),
    };
    // A second import of the module (importlib.reload) keeps the first binding.
    let _ = BOUND.set(py, module);
    Ok(())
}

pub fn bound(py: Python<'_>) -> PyResult<&BoundModule> {
    BOUND
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("asyncore_rs._core is not bound to asyncore"))
}

/// A global of the asyncore module, looked up now (it may have been replaced).
pub fn global<'py>(py: Python<'py>, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let globals = bound(py)?.globals.bind(py);
    match globals.get_item(name)? {
        Some(v) => Ok(v),
        None => Err(name_error(name)),
    }
}

#[cold]
fn name_error(name: &Bound<'_, PyString>) -> PyErr {
    PyNameError::new_err(format!("name '{name}' is not defined"))
}
