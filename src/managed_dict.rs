//! Reads where an instance of a managed-dict class keeps its attributes
//! (CPython 3.13+), without making its dict.
//!
//! On these versions `dispatcher` has no dict slot (channel.rs), so a handler
//! class gets CPython's *managed dict*: the instance dict pointer sits in the
//! object's pre-header and stays NULL until something needs a dict object
//! (`obj.__dict__`, too many attributes); until then, on 3.14, the attribute
//! values are stored inline, after the object, keyed by the class's *shared
//! keys* (`ht_cached_keys`), which only ever grow. CPython specialises
//! attribute access on such objects, which is the point of the layout; this
//! module answers the question the hot path asks of every instance dict
//! ("may it hold one of the shadowable names?", dict_watch.rs) for them:
//!
//! * a dict was made: it is the dict (`Managed::Dict`), checked as before;
//! * no dict, and no inline values (3.13 for a subclass of a C class) or
//!   none possible (the class's shared keys are empty): the instance has no
//!   attribute at all (`Managed::Empty`);
//! * no dict, inline values: the instance can only hold names that are among
//!   its class's shared keys. If none of those may be shadowable, neither may
//!   the instance's (`Managed::InlineClean`). A new name goes in at the end of
//!   the keys, so an answer stays true while the count of keys is the same:
//!   kept per class with that count (a few loads per check).
//!
//! All of this reads CPython's private layout (Include/internal/pycore_dict.h
//! and pycore_object.h, the same in 3.13 and 3.14): the pointer three words
//! before the object, `PyHeapTypeObject.ht_cached_keys`, and the head and
//! entries of a split `PyDictKeysObject`. `probe` checks each of these on
//! objects of its own before the first use; if CPython's layout is another,
//! every answer is `Managed::Unknown` and callers ask getattr, as they do
//! for any class they cannot read.
//!
//! Uses: dict_watch, type_cache.

#[cfg(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED))))]
pub use imp::{inline_value, layout_known, read};

/// Where an instance of a managed-dict class keeps its attributes.
#[cfg_attr(
    not(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED)))),
    allow(dead_code)
)]
pub enum Managed {
    /// Its dict (a borrowed pointer to a live dict).
    Dict(*mut pyo3::ffi::PyObject),
    /// No attribute at all.
    Empty,
    /// Inline values, none of them under a name that may be shadowable.
    InlineClean,
    /// Only getattr can tell.
    Unknown,
}

#[cfg(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED))))]
mod imp {
    use std::sync::atomic::{AtomicI8, AtomicIsize, AtomicU32, AtomicUsize, Ordering};

    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyType};

    use super::Managed;

    /// CPython's Py_TPFLAGS_INLINE_VALUES (3.13+; not in pyo3-ffi).
    const TPFLAGS_INLINE_VALUES: std::ffi::c_ulong = 1 << 2;
    /// `DICT_KEYS_SPLIT`, the kind of a class's shared keys.
    const KEYS_SPLIT: u8 = 2;

    /// The head of CPython's `PyDictKeysObject` on GIL builds, 3.13 and
    /// 3.14 (`probe` checks it), with CPython's field names.
    #[repr(C)]
    #[allow(clippy::struct_field_names)]
    struct KeysHead {
        dk_refcnt: ffi::Py_ssize_t,
        dk_log2_size: u8,
        dk_log2_index_bytes: u8,
        dk_kind: u8,
        dk_version: u32,
        dk_usable: ffi::Py_ssize_t,
        dk_nentries: ffi::Py_ssize_t,
        // dk_indices: 1 << dk_log2_index_bytes bytes, then the entries.
    }

    /// The head of CPython's `PyDictValues`, the inline values (3.13, 3.14).
    #[repr(C)]
    struct ValuesHead {
        capacity: u8,
        size: u8,
        embedded: u8,
        valid: u8,
        // Then `PyObject *values[capacity]`, 8-byte aligned.
    }

    /// `PyDictUnicodeEntry`: a split table's entries hold only keys.
    #[repr(C)]
    struct UnicodeEntry {
        me_key: *mut ffi::PyObject,
        me_value: *mut ffi::PyObject,
    }

    /// 1: the layout is as above (`probe` passed); 0: it is not; -1: not
    /// probed yet.
    static LAYOUT: AtomicI8 = AtomicI8::new(-1);

    /// The last class found clean, as (shared keys address, their count,
    /// the class's version tag, never 0): while all three are the same, it
    /// is still clean. A new name goes in at the end of the keys (the count
    /// grows); the tag tells a new class apart from a freed one whose keys
    /// object had the same address (CPython does not reuse tags, and a
    /// changed class gets a new one). One entry: a server's channels are
    /// mostly of one class, and a miss costs a scan of a few keys.
    static CLEAN_KEYS: AtomicUsize = AtomicUsize::new(0);
    static CLEAN_COUNT: AtomicIsize = AtomicIsize::new(-1);
    static CLEAN_TAG: AtomicU32 = AtomicU32::new(0);

    /// Where `obj` keeps its attributes. `ty` is `type(obj)`, a class with
    /// `Py_TPFLAGS_MANAGED_DICT`. Called several times per event (four per
    /// echo request): the common answers are a few loads, with the scan of
    /// `inline_clean` out of line (in line, the call cost about 46
    /// instructions).
    ///
    /// # Safety
    /// The GIL is held, `obj` is a live object and `ty` its type, which has
    /// the managed-dict flag, and `layout_known` said true.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub unsafe fn read(py: Python<'_>, obj: *mut ffi::PyObject, ty: &Bound<'_, PyType>) -> Managed {
        let dict = dict_pointer(obj);
        if !dict.is_null() {
            return Managed::Dict(dict);
        }
        let t = ty.as_ptr().cast::<ffi::PyTypeObject>();
        if (*t).tp_flags & TPFLAGS_INLINE_VALUES == 0 {
            return Managed::Empty;
        }
        let keys = (*t.cast::<ffi::PyHeapTypeObject>())
            .ht_cached_keys
            .cast::<KeysHead>();
        if keys.is_null() {
            return Managed::Unknown;
        }
        let n = (*keys).dk_nentries;
        if n == 0 {
            // No instance of the class ever stored an attribute inline (nor
            // does its code name one, `__static_attributes__`).
            return Managed::Empty;
        }
        // The kept answer (see CLEAN_KEYS): a class's keys object keeps
        // its kind, so only the address, count and tag are compared.
        if keys as usize == CLEAN_KEYS.load(Ordering::Relaxed)
            && n == CLEAN_COUNT.load(Ordering::Relaxed)
            && (*t).tp_version_tag == CLEAN_TAG.load(Ordering::Relaxed)
        {
            return Managed::InlineClean;
        }
        if inline_clean(py, ty) {
            Managed::InlineClean
        } else {
            Managed::Unknown
        }
    }

    /// The value `obj` holds inline under `name` (an interned str), borrowed:
    /// what CPython's generic getattr finds in the instance when no class
    /// attribute comes first. None when it is not there, or may be elsewhere
    /// (the values no longer valid: a dict replaced them): the caller asks
    /// getattr. Used for asynchat's `terminator`, read per message.
    ///
    /// # Safety
    /// As for `read`.
    #[inline]
    pub unsafe fn inline_value(
        obj: *mut ffi::PyObject,
        ty: &Bound<'_, PyType>,
        name: *mut ffi::PyObject,
    ) -> Option<std::ptr::NonNull<ffi::PyObject>> {
        let t = ty.as_ptr().cast::<ffi::PyTypeObject>();
        if (*t).tp_flags & TPFLAGS_INLINE_VALUES == 0 {
            return None;
        }
        let (keys, n) = shared_keys(ty)?;
        // Keys set through getattr/setattr are interned: an equal key that
        // is another object is left to getattr.
        let index = keys_of(keys, n).position(|k| k == name)?;
        let values = inline_values(obj, t);
        // The values stay the object's while they are valid, also once a dict
        // was made (it uses them): CPython's own specialised read
        // (LOAD_ATTR_INSTANCE_VALUE, _CHECK_MANAGED_OBJECT_HAS_VALUES)
        // checks this flag alone. (CPython also clears the slots when it
        // marks them invalid, so no test can tell this check missing.)
        if (*values).valid == 0 || index >= usize::from((*values).capacity) {
            return None;
        }
        std::ptr::NonNull::new(*value_slots(values).add(index))
    }

    /// Where `obj`'s inline values are: right after the object
    /// (`_PyObject_InlineValues`; 3.13 has them only for subclasses of
    /// object, whose objects end at `tp_basicsize` too).
    ///
    /// # Safety
    /// `obj` is a live object of `t`, which has inline values.
    unsafe fn inline_values(
        obj: *mut ffi::PyObject,
        t: *mut ffi::PyTypeObject,
    ) -> *const ValuesHead {
        let size = usize::try_from((*t).tp_basicsize).unwrap_or(0);
        obj.cast::<u8>().add(size).cast::<ValuesHead>()
    }

    /// The value slots after the head, 8 bytes in (`PyDictValues.values`).
    ///
    /// # Safety
    /// `values` points to a live `PyDictValues`.
    unsafe fn value_slots(values: *const ValuesHead) -> *const *mut ffi::PyObject {
        // The head is 4 bytes and the slots are pointers: they start at 8.
        #[allow(clippy::cast_ptr_alignment)]
        values.cast::<u8>().add(8).cast::<*mut ffi::PyObject>()
    }

    /// Whether CPython's layout is the one this module reads (probed once).
    pub fn layout_known(py: Python<'_>) -> bool {
        match LAYOUT.load(Ordering::Relaxed) {
            1 => true,
            0 => false,
            _ => {
                let ok = probe(py);
                LAYOUT.store(i8::from(ok), Ordering::Relaxed);
                ok
            }
        }
    }

    /// The managed dict pointer, three words before the object on GIL
    /// builds (`MANAGED_DICT_OFFSET`), NULL while no dict was made.
    ///
    /// # Safety
    /// `obj` is a live object of a class with the managed-dict flag, and
    /// the layout was probed.
    #[inline]
    unsafe fn dict_pointer(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
        *obj.cast::<*mut ffi::PyObject>().sub(3)
    }

    /// The class's shared keys and their count, if it has split keys.
    ///
    /// # Safety
    /// The GIL is held; `ty` is a heap type (managed-dict classes are).
    unsafe fn shared_keys(ty: &Bound<'_, PyType>) -> Option<(*const KeysHead, isize)> {
        let ht = ty.as_ptr().cast::<ffi::PyHeapTypeObject>();
        let keys = (*ht).ht_cached_keys.cast::<KeysHead>().cast_const();
        if keys.is_null() || (*keys).dk_kind != KEYS_SPLIT {
            return None;
        }
        Some((keys, (*keys).dk_nentries))
    }

    /// The keys of a split keys object, in order.
    ///
    /// # Safety
    /// The GIL is held; `keys` is a live split keys object with `n` entries.
    unsafe fn keys_of(keys: *const KeysHead, n: isize) -> impl Iterator<Item = *mut ffi::PyObject> {
        let indices = keys.add(1).cast::<u8>();
        // The entries follow the index table, whose size is a power of two
        // of at least 8 bytes (`dk_log2_index_bytes` >= 3): they are aligned
        // as the 32-byte head is.
        #[allow(clippy::cast_ptr_alignment)]
        let entries = indices
            .add(1usize << (*keys).dk_log2_index_bytes)
            .cast::<UnicodeEntry>();
        (0..usize::try_from(n).unwrap_or(0)).map(move |i| (*entries.add(i)).me_key)
    }

    /// Whether no instance of `ty` without a dict may hold a shadowable
    /// name, found by a scan of the class's keys (kept when it is clean).
    #[cold]
    #[inline(never)]
    fn inline_clean(py: Python<'_>, ty: &Bound<'_, PyType>) -> bool {
        // SAFETY: the GIL is held and `ty` is a live managed-dict class (a
        // heap type); the layout was probed.
        let Some((keys, n)) = (unsafe { shared_keys(ty) }) else {
            return false;
        };
        let tag = crate::type_cache::version_tag(ty);
        // SAFETY: as above; the keys are live exact strs (or NULL in a slot
        // not filled yet) that the keys object holds, and nothing below runs
        // Python code.
        let clean = unsafe { keys_of(keys, n) }
            .all(|k| !k.is_null() && crate::dict_watch::surely_not_shadowable(py, k));
        if clean && tag != 0 {
            CLEAN_KEYS.store(keys as usize, Ordering::Relaxed);
            CLEAN_COUNT.store(n, Ordering::Relaxed);
            CLEAN_TAG.store(tag, Ordering::Relaxed);
        }
        clean
    }

    /// Checks the layout this module reads on objects of its own: a class
    /// of two attributes, whose shared keys must be those two names in
    /// order, and an instance whose dict pointer must be NULL until
    /// `__dict__` makes the dict, then that dict.
    #[cold]
    fn probe(py: Python<'_>) -> bool {
        probe_with(py).unwrap_or(false)
    }

    fn probe_with(py: Python<'_>) -> PyResult<bool> {
        let builtins = py.import("builtins")?;
        let ty = builtins
            .getattr("type")?
            .call1((
                "_asyncore_rs_probe",
                (builtins.getattr("object")?,),
                PyDict::new(py),
            ))?
            .cast_into::<PyType>()?;
        let flags = ty.getattr("__flags__")?.extract::<std::ffi::c_ulong>()?;
        if flags & ffi::Py_TPFLAGS_MANAGED_DICT == 0 {
            return Ok(false);
        }
        let names = (
            pyo3::types::PyString::intern(py, "_asyncore_rs_probe_a"),
            pyo3::types::PyString::intern(py, "_asyncore_rs_probe_b"),
        );
        let obj = ty.call0()?;
        // SAFETY: `obj` is a live instance of a managed-dict class (checked
        // above); nothing else holds it.
        if !unsafe { dict_pointer(obj.as_ptr()) }.is_null() {
            return Ok(false);
        }
        obj.setattr(&names.0, 1)?;
        obj.setattr(&names.1, 2)?;
        // SAFETY: as above; `ty` is a heap type we hold.
        let keys_ok = unsafe {
            match shared_keys(&ty) {
                Some((keys, 2)) => {
                    let got: Vec<_> = keys_of(keys, 2).collect();
                    got == [names.0.as_ptr(), names.1.as_ptr()]
                }
                // 3.13 keeps inline values only for subclasses of object,
                // which this is: split keys are expected.
                _ => false,
            }
        };
        let still_null = unsafe { dict_pointer(obj.as_ptr()) }.is_null();
        // SAFETY: `obj` is a live instance of `ty`, a subclass of object,
        // which has inline values on 3.13 and 3.14 (checked by the flag).
        let values_ok = unsafe {
            let t = ty.as_ptr().cast::<ffi::PyTypeObject>();
            (*t).tp_flags & TPFLAGS_INLINE_VALUES != 0 && {
                let one = 1i32.into_pyobject(py)?;
                let two = 2i32.into_pyobject(py)?;
                inline_value(obj.as_ptr(), &ty, names.0.as_ptr()).map(std::ptr::NonNull::as_ptr)
                    == Some(one.as_ptr())
                    && inline_value(obj.as_ptr(), &ty, names.1.as_ptr())
                        .map(std::ptr::NonNull::as_ptr)
                        == Some(two.as_ptr())
            }
        };
        let dict = obj.getattr("__dict__")?;
        // SAFETY: as above.
        let made = unsafe { dict_pointer(obj.as_ptr()) } == dict.as_ptr();
        Ok(keys_ok && still_null && values_ok && made)
    }
}
