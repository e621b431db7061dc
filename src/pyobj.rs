//! Owns small helpers for Python objects that several layers need: slices
//! and default argument values.
//!
//! Uses nothing from the crate.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// A default argument value (defaults are built when a call omits them).
pub fn py_str(s: &str) -> Py<PyAny> {
    Python::attach(|py| PyString::new(py, s).into_any().unbind())
}

pub fn py_int(i: i32) -> Py<PyAny> {
    Python::attach(|py| {
        i.into_pyobject(py)
            .map_or_else(|_| py.None(), |v| v.into_any().unbind())
    })
}

/// `obj[start:]`.
pub fn slice_from<'py>(
    obj: &Bound<'py, PyAny>,
    start: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if let (Ok(b), Ok(i)) = (obj.cast_exact::<PyBytes>(), start.extract::<usize>()) {
        let data = b.as_bytes();
        return Ok(PyBytes::new(py, data.get(i..).unwrap_or_default()).into_any());
    }
    obj.get_item(make_slice(py, start, &py.None().into_bound(py))?)
}

/// `slice(start, stop)` for any objects (what `obj[start:stop]` builds).
pub fn make_slice<'py>(
    py: Python<'py>,
    start: &Bound<'py, PyAny>,
    stop: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: GIL held; PySlice_New returns a new reference or NULL with an error set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PySlice_New(start.as_ptr(), stop.as_ptr(), std::ptr::null_mut()),
        )
    }
}
