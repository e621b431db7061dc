//! Owns the calls from Rust into the handler's own Python methods on the hot
//! path: `handle_read` and `handle_write` per event, `collect_incoming_data`
//! and `found_terminator` per asynchat message.
//!
//! `PyObject_VectorcallMethod` (calls.rs) finds the method as CPython's
//! LOAD_ATTR does, every time: the type's MRO through the type attribute
//! cache, then a lookup in the instance dict, about 250 instructions on 3.14
//! before the call. When the class attribute is a plain Python function and
//! the instance dict surely lacks the name (none, empty, or watched:
//! dict_watch.rs), the result of that lookup is known: the function, called
//! with the object as its first argument. The class half is cached by type
//! version tag (type_cache.rs), so the call costs a cache probe and a bit
//! test. Anything else (a `__getattribute__`, a builtin or other descriptor,
//! a staticmethod, an instance attribute, a dict not watched) goes through
//! `PyObject_VectorcallMethod` as before.
//!
//! A caller that calls one method many times in a row (asynchat's scan:
//! `collect_incoming_data` and `found_terminator` per message) keeps the
//! answer in a [`Resolved`] and passes it back: while the class keeps its
//! version tag and the instance dict is still vouched for, the answer holds
//! without the name check and the cache probe (about 70 instructions a call).
//!
//! Uses: calls, channel, names, pyobj, type_cache.

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::channel::Dispatcher;

/// What `obj.name` was last found to be, for one caller and one name: the
/// plain function and the version tag of the class it was found in (0:
/// nothing kept). Tags are never reused, so the tag alone names the class and
/// its state; the class holds the function while the tag holds.
#[derive(Default)]
pub struct Resolved {
    #[cfg(not(feature = "abi3"))]
    tag: u32,
    #[cfg(not(feature = "abi3"))]
    f: usize,
}

/// `obj.name()`.
pub fn call0<'py>(
    obj: &Bound<'py, Dispatcher>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    #[cfg(not(feature = "abi3"))]
    if let Some(f) = plain_function(obj, name, &mut Resolved::default()) {
        return imp::call_function(obj, f, None);
    }
    crate::calls::call_method0(obj.as_any(), name)
}

/// `obj.name()`, with `kept` (only ever used with this `name`).
pub fn call0_kept<'py>(
    obj: &Bound<'py, Dispatcher>,
    name: &Bound<'py, PyString>,
    kept: &mut Resolved,
) -> PyResult<Bound<'py, PyAny>> {
    #[cfg(not(feature = "abi3"))]
    if let Some(f) = still_resolved(obj, kept).or_else(|| plain_function(obj, name, kept)) {
        return imp::call_function(obj, f, None);
    }
    let _ = kept;
    crate::calls::call_method0(obj.as_any(), name)
}

/// `obj.name(arg)`, with `kept` (only ever used with this `name`).
pub fn call1_kept<'py>(
    obj: &Bound<'py, Dispatcher>,
    name: &Bound<'py, PyString>,
    arg: &Bound<'py, PyAny>,
    kept: &mut Resolved,
) -> PyResult<Bound<'py, PyAny>> {
    #[cfg(not(feature = "abi3"))]
    if let Some(f) = still_resolved(obj, kept).or_else(|| plain_function(obj, name, kept)) {
        return imp::call_function(obj, f, Some(arg.as_ptr()));
    }
    let _ = kept;
    crate::calls::call_method1(obj.as_any(), name, arg)
}

/// `kept`'s function, if it still is what `obj.name` resolves to: the class
/// has the same version tag (so the same MRO answer) and the instance dict
/// is still vouched for (none, or watched while no dict is marked: it holds
/// no shadowable name, and `name` was checked to be one when it was kept).
#[cfg(not(feature = "abi3"))]
#[allow(clippy::inline_always)]
#[inline(always)] // per message; left alone it stays a call (~60 instructions)
fn still_resolved(
    obj: &Bound<'_, Dispatcher>,
    kept: &Resolved,
) -> Option<*mut pyo3::ffi::PyObject> {
    let tag = crate::type_cache::version_tag(&crate::pyobj::type_of(obj));
    (kept.tag != 0 && kept.tag == tag && crate::channel::instance_dict_still_vouched(obj))
        .then_some(kept.f as *mut pyo3::ffi::PyObject)
}

/// The Python function `obj.name` resolves to, unbound, when CPython's
/// lookup would find it in the class and nothing in the instance (as a
/// borrowed pointer: the class dict holds it while the class keeps its
/// version tag, and the caller takes a reference before calling it). Kept
/// in `kept` (callers ask `still_resolved` first, inlined).
#[cfg(not(feature = "abi3"))]
fn plain_function(
    obj: &Bound<'_, Dispatcher>,
    name: &Bound<'_, PyString>,
    kept: &mut Resolved,
) -> Option<*mut pyo3::ffi::PyObject> {
    // The instance half first: without a watcher (3.11) a channel with a
    // dict has no fast path, and this answers that in a few instructions.
    if !crate::channel::instance_dict_surely_lacks(obj, &[name]) {
        return None;
    }
    let ty = crate::pyobj::type_of(obj);
    // Decided from the MRO alone, running no Python code: cached by tag
    // (the pair (name, "__func__") is this question's own).
    let f = crate::type_cache::cached(&ty, (name, crate::names::dunder_func(obj.py())), || {
        if !crate::calls::generic_getattr(&ty) {
            return 0;
        }
        let f = crate::calls::class_attr_ptr(&ty, name);
        // SAFETY: a NULL or live object from _PyType_Lookup; only its type is read.
        let is_function = !f.is_null() && unsafe { pyo3::ffi::PyFunction_Check(f) } != 0;
        if is_function {
            f as u64
        } else {
            0
        }
    });
    if f == 0 {
        return None;
    }
    // Nothing above ran Python code: the tag read now is the one `f` holds for.
    *kept = Resolved {
        tag: crate::type_cache::version_tag(&ty),
        f: f as usize,
    };
    Some(f as *mut pyo3::ffi::PyObject)
}

#[cfg(not(feature = "abi3"))]
mod imp {
    use pyo3::ffi;
    use pyo3::prelude::*;

    use crate::channel::Dispatcher;

    /// `f(obj)` or `f(obj, arg)`, as CPython calls the method.
    pub fn call_function<'py>(
        obj: &Bound<'py, Dispatcher>,
        f: *mut ffi::PyObject,
        arg: Option<*mut ffi::PyObject>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // A free slot before `obj` (PY_VECTORCALL_ARGUMENTS_OFFSET lets the
        // callee use it), then obj and the argument.
        let stack = [
            std::ptr::null_mut(),
            obj.as_ptr(),
            arg.unwrap_or(std::ptr::null_mut()),
        ];
        let n = 1 + usize::from(arg.is_some()); // obj, then the argument
                                                // SAFETY: the GIL is held (obj is a Bound). `f` is a live function
                                                // (plain_function: the class holds it); our own reference keeps it
                                                // alive through the call, which may change the class. The arguments
                                                // are live objects the caller holds for the call; the array is ours
                                                // and has the free slot the offset flag promises. The result is a
                                                // new reference or NULL with an exception set.
        unsafe {
            ffi::Py_INCREF(f);
            let r = ffi::PyObject_Vectorcall(
                f,
                stack.as_ptr().add(1),
                n | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
                std::ptr::null_mut(),
            );
            ffi::Py_DECREF(f);
            Bound::from_owned_ptr_or_err(obj.py(), r)
        }
    }
}
