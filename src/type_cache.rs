//! Owns answers about a class that hold until the class or one of its bases
//! changes, cached by CPython's type version tag: the key of CPython's own
//! type attribute cache (`_PyType_Lookup`'s method cache in typeobject.c).
//!
//! A version tag names one state of one class: tags come from a global
//! counter and are never reused, and any change to the class or a base
//! (`PyType_Modified`: attribute assignment or deletion, `__bases__`,
//! `__getattribute__`...) resets the tag of the class and of every subclass;
//! CPython gives a new one at the next lookup. So an answer computed from the
//! class's MRO alone, without running Python code, stays right for as long as
//! the tag is the same. `channel::class_has_builtin` asks it for every event
//! (is `readable` ours? `handle_read`? `send`?), about 100 instructions a
//! question otherwise (benches/instructions.py --breakdown).
//!
//! The table is global and read and written with the GIL held (the module
//! does not declare free-threading support), which orders every access; the
//! atomics only keep Rust's aliasing rules.
//!
//! Uses nothing from the crate.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};

/// Entries in the table (two-way set-associative, a power of two; a miss
/// only recomputes).
const SLOTS: usize = 256;

struct Slot {
    tag: AtomicU32,
    ty: AtomicUsize,
    first: AtomicUsize,
    second: AtomicUsize,
    answer: AtomicU64,
    /// In the first slot of a pair: the pair's last write went there.
    fresh: AtomicBool,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        tag: AtomicU32::new(0),
        ty: AtomicUsize::new(0),
        first: AtomicUsize::new(0),
        second: AtomicUsize::new(0),
        answer: AtomicU64::new(0),
        fresh: AtomicBool::new(false),
    }
}; SLOTS];

/// `ty`'s version tag while CPython vouches for it, else 0 (none yet, or
/// the class changed since the last lookup). 3.11 and 3.12 also mark a valid
/// tag with `Py_TPFLAGS_VALID_VERSION_TAG`; 3.13 dropped the flag and
/// resets the tag itself to 0, which 3.11 and 3.12 do as well.
#[cfg(not(any(feature = "abi3", Py_GIL_DISABLED)))]
#[inline]
pub fn version_tag(ty: &Bound<'_, PyType>) -> u32 {
    let t = ty.as_ptr().cast::<pyo3::ffi::PyTypeObject>();
    // SAFETY: `ty` is a live type object (a Bound, the GIL held); reading
    // two fields of it has no effect. Not in the limited API (hence the
    // abi3 build has no cache).
    let (tag, flags) = unsafe { ((*t).tp_version_tag, (*t).tp_flags) };
    if tag == 0 || (cfg!(not(Py_3_13)) && flags & pyo3::ffi::Py_TPFLAGS_VALID_VERSION_TAG == 0) {
        return 0;
    }
    tag
}

/// No cache: the limited API has no version tags, and on a free-threaded
/// build (not supported) the table would need a lock.
#[cfg(any(feature = "abi3", Py_GIL_DISABLED))]
pub fn version_tag(_ty: &Bound<'_, PyType>) -> u32 {
    0
}

/// The answer `compute` gives for `ty` and the two names, cached for as long
/// as `ty` keeps its version tag. `compute` must decide from `ty`'s MRO
/// alone (its result may not depend on anything else that can change) and
/// must run no Python code, so that the class cannot change under it.
/// Answers are u64; `names` are interned (immortal for the process: their
/// addresses identify them), and the pair names the question: each caller
/// asks with a pair no other caller uses (`class_has_builtin`: public and
/// private method name; the one-step push: `initiate_send` and
/// `ac_out_buffer_size`; handler_calls: the method name and `__func__`, the
/// answer the function's address, which the class keeps alive while its tag
/// holds; `channel::instance_attr`: the name and `__dict__`).
pub fn cached(
    ty: &Bound<'_, PyType>,
    names: (&Bound<'_, PyString>, &Bound<'_, PyString>),
    compute: impl FnOnce() -> u64,
) -> u64 {
    let tag = version_tag(ty);
    if tag == 0 {
        return compute();
    }
    let (ty_id, first, second) = (
        ty.as_ptr() as usize,
        names.0.as_ptr() as usize,
        names.1.as_ptr() as usize,
    );
    let matches = |slot: &Slot| {
        slot.tag.load(Ordering::Relaxed) == tag
            && slot.ty.load(Ordering::Relaxed) == ty_id
            && slot.first.load(Ordering::Relaxed) == first
            && slot.second.load(Ordering::Relaxed) == second
    };
    // Two-way: the pair of slots `i & !1` and `i | 1`.
    let i = slot_index(tag, first, second);
    let (a, b) = (&TABLE[i & !1], &TABLE[i | 1]);
    for slot in [a, b] {
        if matches(slot) {
            return slot.answer.load(Ordering::Relaxed);
        }
    }
    let answer = compute();
    // `compute` ran no Python code, so `tag` still names the state it read.
    // The new entry goes where the older one was (`fresh` points at the
    // slot written last).
    let slot = if a.fresh.load(Ordering::Relaxed) {
        b
    } else {
        a
    };
    a.fresh.store(std::ptr::eq(slot, a), Ordering::Relaxed);
    slot.tag.store(tag, Ordering::Relaxed);
    slot.ty.store(ty_id, Ordering::Relaxed);
    slot.first.store(first, Ordering::Relaxed);
    slot.second.store(second, Ordering::Relaxed);
    slot.answer.store(answer, Ordering::Relaxed);
    answer
}

fn slot_index(tag: u32, first: usize, second: usize) -> usize {
    // Multiplicative mixing (the names are objects at nearby addresses, the
    // tags small consecutive numbers): the top bits of the product.
    let mixed = (u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        ^ (first as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (second as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}
