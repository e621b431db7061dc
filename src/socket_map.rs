//! Writes to a channel map, noting the key for the loop when the map is our
//! own `SocketMap` (the type of `asyncore.socket_map`).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::module_state::global;

/// `map[key] = value` / `del map[key]`. On our own `SocketMap` (exactly that
/// type) this is what its `__setitem__`/`__delitem__` do, without the two
/// Python calls: the dict write plus the note of the key for the loop.
pub fn map_write(
    map: &Bound<'_, PyAny>,
    key: &Bound<'_, PyAny>,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = map.py();
    let ours = global(py, intern!(py, "SocketMap")).is_ok_and(|t| map.get_type().is(&t));
    if let (true, Ok(d)) = (ours, map.cast::<PyDict>()) {
        let touched = map.getattr(intern!(py, "_touched"))?;
        let touched = touched.cast::<pyo3::types::PyList>()?;
        // PyDict_SetItem/DelItem on the dict itself, as dict.__setitem__ does.
        match value {
            Some(v) => dict_set_raw(d, key, v)?,
            None => dict_del_raw(d, key)?,
        }
        if touched.len() > 1024 {
            // Nobody polls this map: one "re-read everything" mark (SocketMap._note).
            touched.del_slice(0, touched.len())?;
            touched.append(map)?;
        } else {
            touched.append(key)?;
        }
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
    // SAFETY: GIL held; PyDict_SetItem does not steal references.
    let rc = unsafe { pyo3::ffi::PyDict_SetItem(d.as_ptr(), key.as_ptr(), v.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(d.py()))
    }
}

fn dict_del_raw(d: &Bound<'_, PyDict>, key: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: GIL held.
    let rc = unsafe { pyo3::ffi::PyDict_DelItem(d.as_ptr(), key.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(d.py()))
    }
}
