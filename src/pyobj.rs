//! Owns small helpers for Python objects that several layers need: slices,
//! default argument values, sizes from ints, an object's type without a
//! reference, and the lock `__traverse__` may take.
//!
//! Uses nothing from the crate.

use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyType};

/// `type(obj)`, borrowed: no reference counted, for a lookup that runs no
/// Python code while `obj` is held (the hot path's class questions).
pub fn type_of<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> Borrowed<'a, 'py, PyType> {
    // SAFETY: an object's type is alive while the object is, and `obj` is
    // held for 'a; Py_TYPE is always a type object.
    unsafe { Borrowed::from_ptr(obj.py(), obj.get_type_ptr().cast()).cast_unchecked::<PyType>() }
}

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
    if let (Ok(b), Some(i)) = (obj.cast_exact::<PyBytes>(), to_usize(start)) {
        // CPython's bytes slicing returns the object itself for a full slice.
        if i == 0 {
            return Ok(obj.clone());
        }
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
    // SAFETY: the GIL is held (`py`); `start` and `stop` are live objects the
    // caller keeps (PySlice_New takes its own references; NULL step means
    // None). It returns a new reference or NULL with an error set, which
    // from_owned_ptr_or_err takes over.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PySlice_New(start.as_ptr(), stop.as_ptr(), std::ptr::null_mut()),
        )
    }
}

/// `obj.extract::<usize>().ok()`, with the common case, an exact int that
/// fits an `isize`, read by one C call: PyO3's conversion cost about 60
/// instructions more (3.14, `benches/instructions.py`: the `recv(8192)` of
/// each echo request).
pub fn to_usize(obj: &Bound<'_, PyAny>) -> Option<usize> {
    if let Some(n) = exact_small_size(obj) {
        return Some(n);
    }
    obj.extract::<usize>().ok()
}

/// `obj` when it is an exact int from 0 to `isize::MAX`; None for anything
/// else, including a larger int (which `to_usize` hands to PyO3).
#[inline]
fn exact_small_size(obj: &Bound<'_, PyAny>) -> Option<usize> {
    use pyo3::ffi;
    if !obj.is_exact_instance_of::<pyo3::types::PyInt>() {
        return None;
    }
    // SAFETY: `obj` is a live exact int, held for the call; the only error
    // PyLong_AsSsize_t can set for one is its OverflowError, which is
    // cleared at once (no error was set before: we are running Rust code
    // that returned no error).
    let v = unsafe { ffi::PyLong_AsSsize_t(obj.as_ptr()) };
    if v == -1 && PyErr::take(obj.py()).is_some() {
        return None;
    }
    usize::try_from(v).ok()
}

/// The lock if it is free now, for `__traverse__` and `__clear__`: they must
/// neither block (the collector may run while this thread, or a thread the
/// collector stopped, holds the lock) nor panic. A poisoned lock's data is
/// still whole: every critical section over Python references in this crate
/// is one container operation.
pub fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Whether a pyclass's Rust value has been written, for `__traverse__` to
/// check before it reads anything else.
///
/// The collector can traverse an object before its Rust value exists: pyo3
/// calls the base type's `tp_new`, which allocates the object zero-filled
/// and tracks it, and on CPython 3.11 and 3.12 then creates the instance
/// `__dict__` eagerly (`_PyObject_InitializeDict` for a nonzero
/// `tp_dictoffset`); that allocation may start a collection, which calls our
/// `tp_traverse` on zero bytes where pyo3 has not yet written the value. An
/// `Arc` read there is a null pointer. All-zero is a valid `Built` (false),
/// and it reads true once the value is written.
pub struct Built(std::sync::atomic::AtomicBool);

impl Built {
    pub fn new() -> Self {
        Built(std::sync::atomic::AtomicBool::new(true))
    }

    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Default for Built {
    fn default() -> Self {
        Self::new()
    }
}
