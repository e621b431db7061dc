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
use pyo3::types::{PyString, PyType};

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
