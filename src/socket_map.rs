//! Owns `SocketMap`'s change log, the one place that says which writes to
//! the map the loop must look at, and `map_write`, the dict write plus the
//! note that `add_channel`/`del_channel` make without calling into Python.
//!
//! `asyncore.socket_map` is a `SocketMap` (python/asyncore_rs/asyncore.py), a
//! dict that notes each key written in its `_changes`; the loop re-reads only
//! those keys (loop_state.rs).
//!
//! On CPython 3.12+ (not abi3 or free-threaded) a map a loop state polls is
//! also watched (`watch`): a dict watcher notes every key written into the
//! change log of each loop state polling it, however the write was made
//! (`dict.__setitem__(socket_map, ...)` and C code too), and counts the
//! writes (`writes`). The log is then complete, and while the count stands
//! still the registrations are exactly what the map says (loop_state.rs
//! `target` skips its per-event `map.get(fd)` then).
//!
//! Uses: dict_watch, module_state, names, pyobj.

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
    /// The last key was noted by the map's watcher, during the write that
    /// `SocketMap` or `map_write` is about to note too: that note is skipped.
    last_by_watcher: bool,
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

    /// Notes a write from the map's watcher, which must not drop a
    /// reference (dropping one may run Python code, here in the middle of a
    /// dict write): an overflow or a write of many keys turns the log to
    /// "everything" and leaves its keys to `take`.
    #[cfg_attr(
        not(all(Py_3_12, not(any(feature = "abi3", Py_GIL_DISABLED)))),
        allow(dead_code)
    )]
    fn note_in_write(&self, key: Option<Borrowed<'_, '_, PyAny>>) {
        let mut log = self.log();
        match key {
            _ if log.everything => {}
            Some(key) if log.keys.len() <= MAX_KEYS => {
                log.keys.push(key.to_owned().unbind());
                log.last_by_watcher = true;
            }
            _ => log.everything = true,
        }
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
        let by_watcher = std::mem::take(&mut log.last_by_watcher);
        if by_watcher && log.keys.last().is_some_and(|k| k.is(&key)) {
            // The watcher noted this write as it was made.
            drop(log);
            drop(key);
        } else if log.everything {
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

    /// How many keys are noted (0 once the log says "everything": the
    /// watcher leaves the keys it noted before to `take`).
    fn __len__(&self) -> usize {
        let log = self.log();
        if log.everything {
            0
        } else {
            log.keys.len()
        }
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

/// Watches `map` for the loop state that polls it with `log` (see the
/// module doc). The loop state keeps both alive and calls `unwatch` with
/// the same pair when it goes. False where there are no dict watchers, or
/// `map` is not a dict.
pub fn watch(map: &Bound<'_, PyAny>, log: &Bound<'_, ChangeLog>) -> bool {
    watcher::watch(map, log)
}

/// Forgets what `watch` was told (the map itself stays watched: its writes
/// are then only counted, and another loop state may poll it).
pub fn unwatch(map: &Py<PyAny>, log: &Py<ChangeLog>) {
    watcher::unwatch(map.as_ptr() as usize, log_addr(log.get()));
}

/// Where a change log's value is, which names it to the watcher.
fn log_addr(log: &ChangeLog) -> usize {
    std::ptr::from_ref(log) as usize
}

/// The count of writes to watched maps so far (never 0). Registrations
/// brought up to date from a complete log while it stood still are exactly
/// what the map says while it still stands still.
pub fn writes() -> u64 {
    watcher::writes()
}

#[cfg(all(Py_3_12, not(any(feature = "abi3", Py_GIL_DISABLED))))]
mod watcher {
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
    use std::sync::Mutex;

    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::PyDict;

    use super::ChangeLog;
    use crate::dict_watch::{EVENT_ADDED, EVENT_DEALLOCATED, EVENT_DELETED, EVENT_MODIFIED};

    /// The maps' watcher id; -2 before the first use, -1 when there is none.
    static WATCHER: AtomicI32 = AtomicI32::new(-2);
    static WRITES: AtomicU64 = AtomicU64::new(1);
    /// (map address, change log address) of each loop state polling a
    /// watched map; the loop state keeps both alive while its pair is here.
    /// Only taken with the GIL held (never contended).
    static LOGS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

    fn logs() -> std::sync::MutexGuard<'static, Vec<(usize, usize)>> {
        LOGS.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn watch(map: &Bound<'_, PyAny>, log: &Bound<'_, ChangeLog>) -> bool {
        let py = map.py();
        let Ok(d) = map.cast::<PyDict>() else {
            return false;
        };
        let mut id = WATCHER.load(Ordering::Relaxed);
        if id == -2 {
            id = crate::dict_watch::add_watcher(py, on_change).unwrap_or(-1);
            WATCHER.store(id, Ordering::Relaxed);
        }
        if id < 0 {
            return false;
        }
        // Registered before the dict is watched, so no write goes unnoted.
        logs().push((d.as_ptr() as usize, super::log_addr(log.get())));
        // SAFETY: the GIL is held and `d` is a live dict (or subclass).
        if unsafe { ffi::PyDict_Watch(id, d.as_ptr()) } != 0 {
            // SAFETY: the GIL is held.
            unsafe { ffi::PyErr_Clear() };
            unwatch(d.as_ptr() as usize, super::log_addr(log.get()));
            return false;
        }
        true
    }

    pub fn unwatch(map: usize, log: usize) {
        let mut logs = logs();
        if let Some(i) = logs.iter().position(|&e| e == (map, log)) {
            logs.swap_remove(i);
        }
    }

    pub fn writes() -> u64 {
        WRITES.load(Ordering::Relaxed)
    }

    /// Called by CPython before each change to a watched map.
    unsafe extern "C" fn on_change(
        event: c_int,
        dict: *mut ffi::PyObject,
        key: *mut ffi::PyObject,
        _new_value: *mut ffi::PyObject,
    ) -> c_int {
        if event == EVENT_DEALLOCATED {
            return 0; // no loop state polls it any more (each keeps its map)
        }
        // Load and store, not an atomic add: the GIL orders these.
        WRITES.store(WRITES.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // SAFETY: CPython calls watchers with the GIL held.
        let py = unsafe { Python::assume_attached() };
        let key = match event {
            // SAFETY: a non-NULL key is live for the call.
            EVENT_ADDED | EVENT_MODIFIED | EVENT_DELETED => unsafe {
                Borrowed::from_ptr_or_opt(py, key)
            },
            _ => None, // cleared or cloned: many keys at once
        };
        for &(map, log) in logs().iter() {
            if map == dict as usize {
                // SAFETY: the loop state that registered this pair keeps
                // its change log alive (and removes the pair before it lets
                // it go); a frozen pyclass's value does not move.
                unsafe { &*(log as *const ChangeLog) }.note_in_write(key);
            }
        }
        0
    }
}

#[cfg(not(all(Py_3_12, not(any(feature = "abi3", Py_GIL_DISABLED)))))]
mod watcher {
    use pyo3::prelude::*;

    use super::ChangeLog;

    pub fn watch(_map: &Bound<'_, PyAny>, _log: &Bound<'_, ChangeLog>) -> bool {
        false
    }

    pub fn unwatch(_map: usize, _log: usize) {}

    pub fn writes() -> u64 {
        1
    }
}
