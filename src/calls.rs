//! Owns the calls from Rust into Python methods on the hot path.
//!
//! pyo3's `call_method1` looks the method up with getattr, which allocates a
//! bound method, and packs the arguments in a tuple. CPython's
//! `PyObject_VectorcallMethod` finds the function without binding it and
//! vectorcalls it with the arguments on the stack (about 60 instructions
//! fewer per call than `PyObject_CallMethodObjArgs`, which gathers a va_list
//! first: benches/instructions.py --scenario lines). The lookup is the same
//! attribute lookup, so overrides and instance attributes apply.
//!
//! Uses nothing from the crate.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyType};

extern "C" {
    // CPython's own lookup of a name along a type's MRO, through the type
    // attribute cache (exported by every CPython 3.x; Cython uses it too).
    fn _PyType_Lookup(ty: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// The class attribute `name` as found along `ty`'s MRO, unbound (what
/// `ty.__dict__[name]` holds in the first class that has it), as a borrowed
/// pointer: valid while the class keeps it, compared, never dereferenced by
/// callers without a GIL-held reference. NULL if no class has it.
pub fn class_attr_ptr(ty: &Bound<'_, PyType>, name: &Bound<'_, PyString>) -> *mut ffi::PyObject {
    // SAFETY: the GIL is held (`ty` is a Bound); `ty` is a type object and
    // `name` a str, both kept alive by the caller for the call.
    // _PyType_Lookup returns a borrowed reference or NULL and sets no error;
    // callers only compare it, or take their own reference at once.
    unsafe { _PyType_Lookup(ty.as_ptr().cast(), name.as_ptr()) }
}

/// `obj.name(*args)`: PyObject_VectorcallMethod with `obj` as `args[0]`
/// (what CPython's LOAD_METHOD + CALL do: the function is found along the
/// MRO, the instance dict is looked at first, and a plain function is called
/// unbound with `obj` as its first argument, no bound method made). Without
/// it (the abi3 build for 3.11), PyObject_CallMethodObjArgs does the same
/// lookup through a va_list.
#[cfg(not(feature = "abi3"))]
fn vectorcall_method<'py, const N: usize>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    args: [*mut ffi::PyObject; N],
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the GIL is held (the arguments are Bound); every pointer is a
    // live object the caller keeps for the call (the callee takes its own
    // references). The array is ours: PY_VECTORCALL_ARGUMENTS_OFFSET lets
    // CPython overwrite args[0] (self) during the call when the method is
    // bound, which the caller no longer reads. The result is a new reference
    // or NULL with an exception set, which from_owned_ptr_or_err takes over.
    unsafe {
        let r = ffi::PyObject_VectorcallMethod(
            name.as_ptr(),
            args.as_ptr(),
            N | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
            std::ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(obj.py(), r)
    }
}

/// `obj.name()`.
pub fn call_method0<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    #[cfg(not(feature = "abi3"))]
    return vectorcall_method(obj, name, [obj.as_ptr()]);
    // SAFETY: as in call_method1.
    #[cfg(feature = "abi3")]
    unsafe {
        let r = ffi::PyObject_CallMethodObjArgs(
            obj.as_ptr(),
            name.as_ptr(),
            std::ptr::null_mut::<ffi::PyObject>(),
        );
        Bound::from_owned_ptr_or_err(obj.py(), r)
    }
}

/// `obj.name(arg)`.
pub fn call_method1<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    arg: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    #[cfg(not(feature = "abi3"))]
    return vectorcall_method(obj, name, [obj.as_ptr(), arg.as_ptr()]);
    // SAFETY: the GIL is held (the arguments are Bound); every pointer is a
    // live object the caller keeps for the call (the callee takes its own
    // references); the variadic argument list ends with NULL as
    // PyObject_CallMethodObjArgs requires; its result is a new reference or
    // NULL with an exception set, which from_owned_ptr_or_err takes over.
    #[cfg(feature = "abi3")]
    unsafe {
        let r = ffi::PyObject_CallMethodObjArgs(
            obj.as_ptr(),
            name.as_ptr(),
            arg.as_ptr(),
            std::ptr::null_mut::<ffi::PyObject>(),
        );
        Bound::from_owned_ptr_or_err(obj.py(), r)
    }
}

/// `obj.name(a, b)`.
pub fn call_method2<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    #[cfg(not(feature = "abi3"))]
    return vectorcall_method(obj, name, [obj.as_ptr(), a.as_ptr(), b.as_ptr()]);
    // SAFETY: as in call_method1.
    #[cfg(feature = "abi3")]
    unsafe {
        let r = ffi::PyObject_CallMethodObjArgs(
            obj.as_ptr(),
            name.as_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            std::ptr::null_mut::<ffi::PyObject>(),
        );
        Bound::from_owned_ptr_or_err(obj.py(), r)
    }
}

/// Whether `obj.<name>` is looked up by CPython's generic getattr for
/// `obj`'s type (no `__getattribute__` or `__getattr__` in Python): then a
/// name that the instance dict lacks is the class attribute.
pub fn generic_getattr(ty: &Bound<'_, PyType>) -> bool {
    // SAFETY: the GIL is held; PyType_GetSlot reads a slot of a live type
    // (static types too, since 3.10) and sets no error for a valid slot id.
    let slot = unsafe { ffi::PyType_GetSlot(ty.as_ptr().cast(), ffi::Py_tp_getattro) };
    slot as *const () == ffi::PyObject_GenericGetAttr as *const ()
}

/// Most keys `dict_lacks` compares one by one; a larger dict is left to the
/// caller's lookups.
const SCAN_KEYS: usize = 8;

/// Whether the instance dict `dict` holds none of `names` (at most 4),
/// decided without running Python code and, for a small dict, without a hash
/// probe per name: one pass over its keys, each an exact str whose hash
/// (cached in the str) differs from every name's. False when a name may be
/// there, or the dict is too large or holds other keys (comparing those
/// could run their `__eq__`): the caller then looks each name up as CPython
/// would.
pub fn dict_lacks(dict: &Bound<'_, PyDict>, names: &[&Bound<'_, PyString>]) -> bool {
    if dict.len() > SCAN_KEYS {
        return false;
    }
    let mut hashes = [0isize; 4];
    let Some(hashes) = hashes.get_mut(..names.len()) else {
        return false;
    };
    // SAFETY: the GIL is held (Bound) and the caller holds the dict.
    // PyDict_Next yields borrowed references that stay valid because nothing
    // below runs Python code or changes the dict: pointer and hash
    // comparisons, and PyObject_Hash of an exact str (cached, or computed
    // from its characters).
    unsafe {
        for (h, name) in hashes.iter_mut().zip(names) {
            *h = str_hash(name.as_ptr());
        }
        let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        while ffi::PyDict_Next(dict.as_ptr(), &raw mut pos, &raw mut key, &raw mut value) != 0 {
            if names.iter().any(|n| n.as_ptr() == key) || ffi::PyUnicode_CheckExact(key) == 0 {
                return false;
            }
            let h = str_hash(key);
            if h == -1 || hashes.contains(&h) {
                return false;
            }
        }
    }
    true
}

/// The hash of an exact str, -1 if it fails (no error is left set).
///
/// # Safety
/// The GIL is held and `s` is a live exact str.
pub unsafe fn str_hash(s: *mut ffi::PyObject) -> ffi::Py_hash_t {
    // Cached in the object once computed (always, for a dict key or an
    // interned name): read it there (PyASCIIObject's layout is the same in
    // every CPython 3; not in the limited API).
    #[cfg(not(feature = "abi3"))]
    {
        let cached = (*s.cast::<ffi::PyASCIIObject>()).hash;
        if cached != -1 {
            return cached;
        }
    }
    let h = ffi::PyObject_Hash(s);
    if h == -1 {
        ffi::PyErr_Clear();
    }
    h
}
