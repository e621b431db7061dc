//! Owns the C entry points of the methods handler code calls per message:
//! `dispatcher.recv` and `dispatcher.send`, `dispatcher_with_send.send` and
//! `async_chat.push`.
//!
//! pyo3's method wrapper parses the arguments for any shape the signature
//! allows (positional or keyword), counts the GIL in thread-local storage and
//! catches panics: about 160 instructions a call on CPython 3.14
//! (benches/instructions.py: `trampoline`, `extract_arguments_fastcall`,
//! `AttachGuard`, `__tls_get_addr`), more than the work of a `push` that
//! queues. The entry points here take the shape handler code uses, one
//! positional argument, straight to the Rust function, and still catch
//! panics. Any other shape (a keyword, a wrong count) goes to pyo3's own
//! method, kept aside, so errors stay pyo3's. The new descriptors copy
//! pyo3's name and docstring (and so the text signature `inspect` reads)
//! and replace pyo3's in the class dict when the module is made, before
//! asyncore.py and asynchat.py copy them into their classes.
//!
//! Not in the abi3 build: it reads the method descriptor's `d_method`,
//! which the limited API hides.
//!
//! Uses: async_chat, channel, dispatcher, with_send.

use pyo3::prelude::*;
use pyo3::types::PyType;

/// Puts the entry points in `ty`'s dict (the `_core.dispatcher` class).
#[cfg(feature = "abi3")]
#[allow(clippy::unnecessary_wraps)] // the signature of the other build's
pub fn install(_ty: &Bound<'_, PyType>) -> PyResult<()> {
    Ok(())
}

/// Puts the entry points in `ty`'s dict (the `_core.dispatcher` class).
#[cfg(not(feature = "abi3"))]
pub fn install(ty: &Bound<'_, PyType>) -> PyResult<()> {
    for (i, &(name, entry)) in imp::ENTRY_POINTS.iter().enumerate() {
        imp::replace(ty, name, entry, &imp::FALLBACKS[i])?;
    }
    Ok(())
}

#[cfg(not(feature = "abi3"))]
mod imp {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::ptr::null_mut;
    use std::sync::atomic::{AtomicPtr, Ordering};

    use pyo3::exceptions::PySystemError;
    use pyo3::ffi;
    use pyo3::panic::PanicException;
    use pyo3::prelude::*;
    use pyo3::types::{PyString, PyType};
    use pyo3::Borrowed;

    use crate::channel::Dispatcher;

    /// A method's Rust body: the channel and the one argument, to the result.
    type Body = for<'py> fn(&Bound<'py, Dispatcher>, &Bound<'py, PyAny>) -> PyResult<Py<PyAny>>;

    /// pyo3's descriptor of each method (a strong reference, for the
    /// process), which the entry point calls for any other argument shape.
    pub static FALLBACKS: [AtomicPtr<ffi::PyObject>; 4] = [const { AtomicPtr::new(null_mut()) }; 4];

    /// Defines an `extern "C"` entry point (METH_FASTCALL | METH_KEYWORDS)
    /// that runs `$body` for one positional argument and otherwise calls
    /// `FALLBACKS[$index]`.
    macro_rules! entry_point {
        ($name:ident, $index:expr, $body:expr) => {
            unsafe extern "C" fn $name(
                slf: *mut ffi::PyObject,
                args: *const *mut ffi::PyObject,
                nargsf: ffi::Py_ssize_t,
                kwnames: *mut ffi::PyObject,
            ) -> *mut ffi::PyObject {
                // SAFETY: CPython calls this as the method descriptor's C
                // function: the GIL held, `slf` an instance of the class the
                // descriptor was made for (checked by the descriptor), and
                // `args` holding the positional then the keyword values.
                unsafe { call_one_arg(slf, args, nargsf, kwnames, &FALLBACKS[$index], $body) }
            }
        };
    }

    fn unit(r: PyResult<()>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        r.map(|()| py.None())
    }

    entry_point!(recv_entry, 0, |slf, arg| {
        crate::dispatcher::dispatcher_recv(slf, arg).map(Bound::unbind)
    });
    entry_point!(send_entry, 1, |slf, arg| {
        crate::dispatcher::dispatcher_send(slf, arg).map(Bound::unbind)
    });
    entry_point!(ws_send_entry, 2, |slf, arg| {
        unit(crate::with_send::ws_send(slf, arg), slf.py())
    });
    entry_point!(push_entry, 3, |slf, arg| {
        unit(crate::async_chat::push(slf, arg), slf.py())
    });

    type Entry = unsafe extern "C" fn(
        *mut ffi::PyObject,
        *const *mut ffi::PyObject,
        ffi::Py_ssize_t,
        *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;

    /// The methods (their names in the `_core.dispatcher` class) and their
    /// entry points, in FALLBACKS' order.
    pub static ENTRY_POINTS: [(&str, Entry); 4] = [
        ("recv", recv_entry),
        ("send", send_entry),
        ("_ws_send", ws_send_entry),
        ("_ac_push", push_entry),
    ];

    /// The call: `body(slf, args[0])` for exactly one positional argument.
    ///
    /// # Safety
    /// As the entry points are called (see `entry_point!`).
    // Inlined into each entry point with its body: one call less per call.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    unsafe fn call_one_arg(
        slf: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
        fallback: &AtomicPtr<ffi::PyObject>,
        body: Body,
    ) -> *mut ffi::PyObject {
        let nargs = nargsf & !(ffi::PY_VECTORCALL_ARGUMENTS_OFFSET as ffi::Py_ssize_t);
        if nargs != 1 || !kwnames.is_null() {
            return call_fallback(fallback, slf, args, nargs, kwnames);
        }
        // SAFETY: the GIL is held (the caller's contract).
        let py = unsafe { Python::assume_attached() };
        // SAFETY: `slf` and `args[0]` are live objects the caller holds for
        // the call; `slf` is a Dispatcher (the descriptor checked its type).
        let (slf, arg) = unsafe {
            (
                Borrowed::from_ptr(py, slf).cast_unchecked::<Dispatcher>(),
                Borrowed::from_ptr(py, *args),
            )
        };
        let result = catch_unwind(AssertUnwindSafe(|| body(&slf, &arg)));
        match result {
            Ok(Ok(value)) => value.into_ptr(),
            Ok(Err(e)) => {
                e.restore(py);
                null_mut()
            }
            Err(payload) => panicked(py, payload.as_ref()),
        }
    }

    /// A panic in a method body, as pyo3 reports one: PanicException.
    #[cold]
    fn panicked(py: Python<'_>, payload: &(dyn std::any::Any + Send)) -> *mut ffi::PyObject {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic in asyncore-rs".to_owned());
        PanicException::new_err(msg).restore(py);
        null_mut()
    }

    /// pyo3's method, called with the same arguments: `descr(slf, *args, **kw)`.
    ///
    /// # Safety
    /// As `call_one_arg`; `nargs` positional values then one per name in
    /// `kwnames` are in `args`.
    #[cold]
    unsafe fn call_fallback(
        fallback: &AtomicPtr<ffi::PyObject>,
        slf: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargs: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject {
        let descr = fallback.load(Ordering::Relaxed);
        // SAFETY: the caller's contract; `descr` is the live descriptor
        // `replace` stored (it holds a reference) before this entry point
        // was reachable, and a method descriptor takes the object first.
        unsafe {
            let nkw = if kwnames.is_null() {
                0
            } else {
                ffi::PyTuple_Size(kwnames)
            };
            let n = usize::try_from(nargs + nkw).unwrap_or(0);
            let mut stack = Vec::with_capacity(n + 1);
            stack.push(slf);
            if n > 0 {
                stack.extend_from_slice(std::slice::from_raw_parts(args, n));
            }
            ffi::PyObject_Vectorcall(descr, stack.as_ptr(), (nargs + 1) as usize, kwnames)
        }
    }

    /// Replaces pyo3's descriptor `name` in `ty`'s dict with one for
    /// `entry`, with pyo3's name and docstring, and keeps pyo3's in `slot`.
    pub fn replace(
        ty: &Bound<'_, PyType>,
        name: &str,
        entry: Entry,
        slot: &AtomicPtr<ffi::PyObject>,
    ) -> PyResult<()> {
        let py = ty.py();
        let original = ty
            .getattr(pyo3::intern!(py, "__dict__"))?
            .get_item(PyString::new(py, name))?;
        // SAFETY: reading the type of a live object.
        let is_method_descr =
            unsafe { ffi::Py_TYPE(original.as_ptr()) == &raw mut ffi::PyMethodDescr_Type };
        if !is_method_descr {
            return Err(PySystemError::new_err(format!(
                "asyncore-rs: {name} is not a method descriptor"
            )));
        }
        // SAFETY: `original` is a PyMethodDescrObject (checked above); its
        // d_method is pyo3's PyMethodDef, which lives for the process.
        let def = unsafe { &*(*original.as_ptr().cast::<ffi::PyMethodDescrObject>()).d_method };
        if def.ml_flags != ffi::METH_FASTCALL | ffi::METH_KEYWORDS {
            return Ok(()); // not the calling convention this file expects: leave it
        }
        let ours: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: def.ml_name,
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: entry,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: def.ml_doc,
        }));
        // SAFETY: the GIL is held; `ty` is a live type and `ours` lives for
        // the process (leaked: one per method, once per process).
        let descr = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyDescr_NewMethod(ty.as_ptr().cast(), std::ptr::from_mut(ours)),
            )?
        };
        slot.store(original.clone().into_ptr(), Ordering::Relaxed);
        ty.setattr(name, descr)
    }
}
