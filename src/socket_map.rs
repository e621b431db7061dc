//! Owns `SocketMap`'s change log, the one place that says which writes to
//! the map the loop must look at, and `map_write`, the dict write plus the
//! note that `add_channel`/`del_channel` make without calling into Python.
//!
//! `asyncore.socket_map` is a `SocketMap` (python/asyncore_rs/asyncore.py), a
//! dict that notes each key written in its `_changes`; the loop re-reads only
//! those keys (loop_state.rs).
//!
//! Uses: module_state, names, pyobj.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{PyTraverseError, PyVisit};

use crate::module_state::global;
use crate::names;
use crate::pyobj::{try_lock, Built};

/// Past this many keys noted between two passes, the log keeps one "re-read
/// everything" mark instead: a map nobody polls must not grow a list forever.
const MAX_KEYS: usize = 1024;

/// What was written to a `SocketMap` since the loop last looked.
#[derive(Default)]
struct Log {
    keys: Vec<Py<PyAny>>,
    /// A write the keys cannot describe (clear, update, `|=`, popitem), or
    /// more than `MAX_KEYS` keys: the whole map is to be re-read.
    everything: bool,
}

/// What the loop must look at, taken from the log (which is then empty).
pub enum Changes {
    Nothing,
    Keys(Vec<Py<PyAny>>),
    Everything,
}

/// `SocketMap._changes`: `note(key)` after a write to one key, `note_all()`
/// after a write to many.
#[pyclass(frozen, module = "asyncore", name = "_ChangeLog")]
#[derive(Default)]
pub struct ChangeLog {
    /// Checked first by `__traverse__` (see pyobj.rs `Built`).
    built: Built,
    log: Mutex<Log>,
}

impl ChangeLog {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn take(&self) -> Changes {
        let log = std::mem::take(&mut *self.log());
        if log.everything {
            Changes::Everything
        } else if log.keys.is_empty() {
            Changes::Nothing
        } else {
            Changes::Keys(log.keys)
        }
    }
}

#[pymethods]
impl ChangeLog {
    #[new]
    fn new() -> Self {
        ChangeLog::default()
    }

    /// A write to `key`.
    pub fn note(&self, key: Py<PyAny>) {
        // Keys are dropped after the lock is released: a key's destructor
        // may run Python code that writes to the map again.
        let mut log = self.log();
        if log.everything {
            drop(log);
            drop(key);
        } else if log.keys.len() > MAX_KEYS {
            let keys = std::mem::take(&mut log.keys);
            log.everything = true;
            drop(log);
            drop((keys, key));
        } else {
            log.keys.push(key);
        }
    }

    /// A write to many keys at once.
    pub fn note_all(&self) {
        let keys = {
            let mut log = self.log();
            log.everything = true;
            std::mem::take(&mut log.keys)
        };
        drop(keys);
    }

    /// How many keys are noted (0 once the log says "everything").
    fn __len__(&self) -> usize {
        self.log().keys.len()
    }

    /// Whether the whole map is to be re-read.
    #[getter]
    fn everything(&self) -> bool {
        self.log().everything
    }

    /// The noted keys (a key may be any object, one that refers to the map
    /// included). Nothing if another thread holds the lock.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if !self.built.get() {
            return Ok(());
        }
        if let Some(log) = try_lock(&self.log) {
            for key in &log.keys {
                visit.call(key)?;
            }
        }
        Ok(())
    }

    /// Forgets the keys; the log then says "re-read everything", which is
    /// true of a log that lost its keys.
    fn __clear__(&self) {
        let Some(mut log) = try_lock(&self.log) else {
            return;
        };
        let keys = std::mem::take(&mut log.keys);
        log.everything = true;
        drop(log);
        drop(keys);
    }
}

/// `map[key] = value` / `del map[key]`. On our own `SocketMap` (exactly that
/// type) this is what its `__setitem__`/`__delitem__` do, without the two
/// Python calls: the dict write plus the note of the key for the loop.
pub fn map_write(
    map: &Bound<'_, PyAny>,
    key: &Bound<'_, PyAny>,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = map.py();
    let ours = global(py, names::socket_map_class(py)).is_ok_and(|t| map.get_type().is(&t));
    if let (true, Ok(d)) = (ours, map.cast::<PyDict>()) {
        let changes = map.getattr(names::_changes(py))?;
        let changes = changes.cast::<ChangeLog>()?;
        // PyDict_SetItem/DelItem on the dict itself, as dict.__setitem__ does.
        match value {
            Some(v) => dict_set_raw(d, key, v)?,
            None => dict_del_raw(d, key)?,
        }
        changes.get().note(key.clone().unbind());
        return Ok(());
    }
    match value {
        Some(v) => map.set_item(key, v),
        None => map.del_item(key),
    }
}

fn dict_set_raw(
    d: &Bound<'_, PyDict>,
    key: &Bound<'_, PyAny>,
    v: &Bound<'_, PyAny>,
) -> PyResult<()> {
    // SAFETY: the GIL is held; `d` is a dict (cast above) and `d`, `key`, `v`
    // are live objects the caller keeps for the call (hashing `key` may run
    // Python code; PyDict_SetItem holds its own references meanwhile and
    // steals none). Returns -1 with an exception set on failure.
    let rc = unsafe { pyo3::ffi::PyDict_SetItem(d.as_ptr(), key.as_ptr(), v.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(d.py()))
    }
}

fn dict_del_raw(d: &Bound<'_, PyDict>, key: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: as in dict_set_raw: the GIL is held, `d` is a dict, and `d` and
    // `key` are live for the call.
    let rc = unsafe { pyo3::ffi::PyDict_DelItem(d.as_ptr(), key.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(d.py()))
    }
}
