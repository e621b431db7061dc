//! Owns one fact about instance dicts, kept true by a CPython dict watcher
//! (3.12+): a dict we watch, and have not marked, holds no key that may be
//! one of the *shadowable names*, the method and setting names our hot path
//! resolves without a getattr (`recv`, `send`, `readable`,
//! `found_terminator`, `ac_out_buffer_size`...). CPython looks in the
//! instance dict before it uses such a class attribute, so every event asked
//! "does this instance shadow it?", a dict lookup or a scan of the dict's
//! keys (100-200 instructions each, several per line of asynchat input). For
//! a watched dict the answer is a bit of the dict object and a counter.
//!
//! How the fact stays true: a dict is watched only after a scan of its keys
//! found none that may be shadowable (each key an exact str whose hash is not
//! a shadowable name's hash). The watcher callback, which CPython calls
//! before every change to a watched dict, *marks* the dict before a key that
//! may be shadowable goes in (`PyDict_EVENT_ADDED` of such a key, or of any
//! key that is not an exact str; `PyDict_EVENT_CLONED`, a wholesale copy).
//! Changing an existing key's value, deleting or clearing cannot add a name.
//! The next check of a marked dict stops watching it (and scans it again).
//! The callback cannot stop watching by itself: CPython 3.12 and 3.13 put the
//! watcher bits back after the callback returns. A mark names the dict by
//! address, so it is dropped when the dict is freed (`PyDict_EVENT_DEALLOCATED`,
//! which a watched dict reports) before the address can be reused. A new dict
//! (CPython making one on the first attribute set, or `obj.__dict__ = {...}`)
//! starts unwatched. The cost: one callback per change to a watched dict
//! (about 30 instructions; `self.ibuffer = []` per line is one).
//!
//! The callback also counts the changes that may write one *tracked name*'s
//! value, `terminator` (`value_writes`), which asynchat reads per message:
//! a value read from a watched dict is still its value while the count is
//! the same (channel.rs `KeptAttr`).
//!
//! Not on 3.11 (no watchers), abi3 (not in the limited API) or free-threaded
//! builds (not supported): `lacks` then answers false and callers look the
//! name up as before. If CPython's 8 watcher slots are all taken, or the
//! start-up probe finds CPython's dict head or watcher calls other than
//! expected, likewise.
//!
//! Uses: calls, names.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// Whether `dict` certainly has none of `names` (exact strs): `dict` is
/// watched (or passes the scan now and becomes watched) and each name is
/// shadowable. False means "look them up". `owner` remembers a failed scan
/// of its dict, after which no scan is made (a handler that keeps a method
/// in its instance dict would otherwise pay for a scan at every check; it
/// keeps CPython's lookups instead).
#[inline]
pub fn lacks(
    dict: &Bound<'_, PyDict>,
    names: &[&Bound<'_, PyString>],
    owner: &impl ScanMemo,
) -> bool {
    imp::lacks(dict, names, owner)
}

/// Whether `dict` is watched while no dict is marked: it holds none of the
/// shadowable names (for a caller whose names `lacks` checked before).
///
/// # Safety
/// The GIL is held and `dict` is a live dict (or dict subclass) object.
#[cfg_attr(feature = "abi3", allow(dead_code))] // (handler_calls is not in abi3)
#[inline]
pub unsafe fn still_vouched(dict: *mut pyo3::ffi::PyObject) -> bool {
    imp::still_vouched(dict)
}

/// The count of changes to watched dicts that may have written the value
/// of `terminator`. A value read from a dict that [`is_watched_now`] is
/// still that dict's value while the count is the same (the dict is not
/// freed or unwatched either: both count).
pub fn value_writes() -> u64 {
    imp::value_writes()
}

/// Whether `key` (a live object) surely is not one of the shadowable
/// names: an exact str whose hash no shadowable name has. False too when
/// the set is not available (no watcher could be registered).
#[cfg(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED))))]
pub fn surely_not_shadowable(py: Python<'_>, key: *mut pyo3::ffi::PyObject) -> bool {
    imp::surely_not_shadowable(py, key)
}

/// Whether every one of `names` (exact strs) is a shadowable name, the
/// names a scan vouches for (managed_dict.rs, `Managed::InlineClean`).
pub fn all_shadowable(py: Python<'_>, names: &[&Bound<'_, PyString>]) -> bool {
    imp::all_shadowable_now(py, names)
}

#[cfg(all(Py_3_12, not(any(feature = "abi3", Py_GIL_DISABLED))))]
pub use imp::{add_watcher, EVENT_ADDED, EVENT_DEALLOCATED, EVENT_DELETED, EVENT_MODIFIED};

/// Whether `dict` is watched (so its changes are counted).
pub fn is_watched_now(dict: &Bound<'_, PyDict>) -> bool {
    imp::is_watched_now(dict)
}

/// Where the object that holds an instance dict remembers that a scan of
/// it found a name that may be shadowable.
// Only called where there are watchers.
#[cfg_attr(
    not(all(Py_3_12, not(any(feature = "abi3", Py_GIL_DISABLED)))),
    allow(dead_code)
)]
pub trait ScanMemo {
    fn scan_failed(&self) -> bool;
    fn set_scan_failed(&self, failed: bool);
}

#[cfg(all(Py_3_12, not(any(feature = "abi3", Py_GIL_DISABLED))))]
mod imp {
    use std::collections::HashSet;
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicI32, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Mutex, PoisonError};

    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyString};

    use super::ScanMemo;
    use crate::calls::str_hash;
    use crate::names;

    // CPython's PyDict_WatchEvent (Include/cpython/dictobject.h, 3.12+).
    pub const EVENT_ADDED: c_int = 0;
    pub const EVENT_MODIFIED: c_int = 1;
    pub const EVENT_DELETED: c_int = 2;
    pub const EVENT_CLONED: c_int = 3;
    pub const EVENT_DEALLOCATED: c_int = 5;

    pub type WatchCallback = unsafe extern "C" fn(
        event: c_int,
        dict: *mut ffi::PyObject,
        key: *mut ffi::PyObject,
        new_value: *mut ffi::PyObject,
    ) -> c_int;

    extern "C" {
        // Not in pyo3-ffi (it skips the callback type); public API since 3.12.
        fn PyDict_AddWatcher(callback: WatchCallback) -> c_int;
    }

    /// The head of CPython's PyDictObject, 3.12 to 3.15 (GIL builds): the
    /// watcher bits are the low 8 bits of the 64-bit word after `ma_used`
    /// (`ma_version_tag`, renamed `_ma_watcher_tag` in 3.14). `probe`
    /// checks this on a dict of its own before the first use.
    #[repr(C)]
    struct DictHead {
        ob_base: ffi::PyObject,
        ma_used: ffi::Py_ssize_t,
        watcher_tag: u64,
    }

    /// Our watcher id; -2 before the first use, -1 when there is none.
    static WATCHER: AtomicI32 = AtomicI32::new(-2);

    /// The addresses of watched dicts that may now hold a shadowable name,
    /// and how many there are (read first: almost always 0). The lock is
    /// only ever taken with the GIL held, so it is never contended; it is a
    /// Mutex because the callback has no `Python` token for a GilCell.
    static MARKED: Mutex<Option<HashSet<usize>>> = Mutex::new(None);
    static MARKED_COUNT: AtomicUsize = AtomicUsize::new(0);

    /// The shadowable names' hashes (0 = empty slot), each in a slot of its
    /// own: `slot_of` takes the top bits of the hash times MULTIPLIER, which
    /// `register` picks so that no two names share a slot. A test is then
    /// one probe (a probing loop cost about 23 instructions a name; the
    /// push path asks for three names per message).
    const SET_SLOTS: usize = 256;
    static HASHES: [AtomicIsize; SET_SLOTS] = [const { AtomicIsize::new(0) }; SET_SLOTS];
    static MULTIPLIER: AtomicU64 = AtomicU64::new(0);

    /// How many changes to watched dicts may have written the value of the
    /// *tracked name* (`terminator`, which asynchat reads per message): a
    /// key that may be it added, changed or deleted, a dict cleared,
    /// refilled wholesale or freed, or a dict no longer watched. A value read
    /// from a dict that was watched then stays the dict's value for as long
    /// as this count is the same (`value_writes`).
    static VALUE_WRITES: AtomicU64 = AtomicU64::new(0);
    /// The tracked name (an interned str, alive for the process) and its
    /// hash, set when the watcher is registered.
    static TRACKED: AtomicUsize = AtomicUsize::new(0);
    static TRACKED_HASH: AtomicIsize = AtomicIsize::new(0);

    /// Most keys a dict may have for the scan (a larger one is not watched).
    const SCAN_KEYS: isize = 64;

    /// The names the hot path resolves past the instance dict: the
    /// `has_builtin` methods, the settings of `channel::plain_setting` and
    /// `is_plain_false`, and the handler methods `handler_calls` calls.
    fn shadowable(py: Python<'_>) -> Vec<&Bound<'_, PyString>> {
        vec![
            names::readable(py),
            names::writable(py),
            names::handle_read_event(py),
            names::handle_write_event(py),
            names::handle_read(py),
            names::handle_write(py),
            names::recv(py),
            names::send(py),
            names::initiate_send(py),
            names::get_terminator(py),
            names::collect_incoming_data(py),
            names::found_terminator(py),
            names::ac_out_buffer_size(py),
            names::ac_in_buffer_size(py),
            names::debug(py),
        ]
    }

    // Measured: left to the compiler it is not inlined into its callers
    // (the cold paths make it large), which cost about 130 instructions
    // per line of the lines scenario on 3.14 (benches/instructions.py).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn lacks(
        dict: &Bound<'_, PyDict>,
        names: &[&Bound<'_, PyString>],
        owner: &impl ScanMemo,
    ) -> bool {
        let id = WATCHER.load(Ordering::Relaxed);
        if id < 0 || !all_shadowable(names) {
            return id == -2 && lacks_slow(dict, names, owner);
        }
        if is_watched(dict, id) && MARKED_COUNT.load(Ordering::Relaxed) == 0 {
            return true;
        }
        lacks_slow(dict, names, owner)
    }

    /// # Safety
    /// As for `super::still_vouched`.
    #[inline]
    pub unsafe fn still_vouched(dict: *mut ffi::PyObject) -> bool {
        let id = WATCHER.load(Ordering::Relaxed);
        // SAFETY (caller): a live dict, which on these versions starts with
        // DictHead (checked by `probe` before the watcher is used; `id` is
        // negative until then).
        id >= 0
            && (*dict.cast::<DictHead>()).watcher_tag & (1 << id) != 0
            && MARKED_COUNT.load(Ordering::Relaxed) == 0
    }

    pub fn value_writes() -> u64 {
        VALUE_WRITES.load(Ordering::Relaxed)
    }

    pub fn is_watched_now(dict: &Bound<'_, PyDict>) -> bool {
        let id = WATCHER.load(Ordering::Relaxed);
        id >= 0 && is_watched(dict, id)
    }

    #[cfg(Py_3_13)]
    pub fn surely_not_shadowable(py: Python<'_>, key: *mut ffi::PyObject) -> bool {
        // SAFETY: the GIL is held and `key` is a live object (caller).
        watcher(py).is_some() && !unsafe { may_be_shadowable(key) }
    }

    pub fn all_shadowable_now(py: Python<'_>, names: &[&Bound<'_, PyString>]) -> bool {
        watcher(py).is_some() && all_shadowable(names)
    }

    /// `lacks` the first time (registering the watcher), for a dict not
    /// watched yet (the scan), or while some dict is marked.
    #[cold]
    #[inline(never)]
    fn lacks_slow(
        dict: &Bound<'_, PyDict>,
        names: &[&Bound<'_, PyString>],
        owner: &impl ScanMemo,
    ) -> bool {
        let Some(id) = watcher(dict.py()) else {
            return false;
        };
        if !all_shadowable(names) {
            return false;
        }
        if vouched(dict, id) {
            return true;
        }
        if owner.scan_failed() {
            return false;
        }
        let clean = watch_if_clean(dict, id);
        owner.set_scan_failed(!clean);
        clean
    }

    /// What the watch vouches for: only the shadowable names. (Every caller
    /// passes one; a name that is not would be looked up.)
    #[inline]
    fn all_shadowable(names: &[&Bound<'_, PyString>]) -> bool {
        // SAFETY: the names are live exact strs (interned); str_hash reads
        // their cached hash.
        names
            .iter()
            .all(|n| in_set(unsafe { str_hash(n.as_ptr()) }))
    }

    /// Watched and not marked: holds no shadowable name.
    #[inline]
    fn vouched(dict: &Bound<'_, PyDict>, id: c_int) -> bool {
        is_watched(dict, id) && !take_mark_if_any(dict, id)
    }

    /// `take_mark`, after a look at the count (almost always 0).
    #[inline]
    fn take_mark_if_any(dict: &Bound<'_, PyDict>, id: c_int) -> bool {
        MARKED_COUNT.load(Ordering::Relaxed) > 0 && take_mark(dict, id)
    }

    fn is_watched(dict: &Bound<'_, PyDict>, id: c_int) -> bool {
        // SAFETY: `dict` is a live dict (a Bound, the GIL held), which on
        // these versions starts with DictHead (checked by `probe`).
        let tag = unsafe { (*dict.as_ptr().cast::<DictHead>()).watcher_tag };
        tag & (1 << id) != 0
    }

    /// If `dict` is marked: drops the mark and stops watching it (outside
    /// the callback, where that sticks). Whether it was marked.
    #[cold]
    fn take_mark(dict: &Bound<'_, PyDict>, id: c_int) -> bool {
        let addr = dict.as_ptr() as usize;
        if !edit_marks(|m| m.remove(&addr)) {
            return false;
        }
        // SAFETY: the GIL is held; `dict` is a live dict and `id` ours.
        unsafe {
            if ffi::PyDict_Unwatch(id, dict.as_ptr()) != 0 {
                ffi::PyErr_Clear();
            }
        }
        // Its changes are no longer reported: a value read from it is not
        // vouched for any more.
        count_value_write();
        true
    }

    fn count_value_write() {
        VALUE_WRITES.store(VALUE_WRITES.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Runs `f` on the set of marks, keeping MARKED_COUNT its size.
    fn edit_marks<R>(f: impl FnOnce(&mut HashSet<usize>) -> R) -> R {
        let mut guard = MARKED.lock().unwrap_or_else(PoisonError::into_inner);
        let marks = guard.get_or_insert_with(HashSet::new);
        let r = f(marks);
        MARKED_COUNT.store(marks.len(), Ordering::Relaxed);
        r
    }

    /// Scans the keys; if none may be shadowable, watches the dict.
    #[cold]
    fn watch_if_clean(dict: &Bound<'_, PyDict>, id: c_int) -> bool {
        // SAFETY: the GIL is held and we hold `dict`. PyDict_Next yields
        // borrowed keys that stay valid: nothing below runs Python code or
        // changes the dict (str_hash reads or computes an exact str's hash).
        unsafe {
            if ffi::PyDict_Size(dict.as_ptr()) > SCAN_KEYS {
                return false;
            }
            let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
            while ffi::PyDict_Next(dict.as_ptr(), &raw mut pos, &raw mut key, &raw mut value) != 0 {
                if may_be_shadowable(key) {
                    return false;
                }
            }
            ffi::PyDict_Watch(id, dict.as_ptr()) == 0
        }
    }

    /// Whether a key may equal a shadowable name: not an exact str (a str
    /// subclass may compare equal), or a hash that one of them has.
    ///
    /// # Safety
    /// The GIL is held and `key` is a live object.
    unsafe fn may_be_shadowable(key: *mut ffi::PyObject) -> bool {
        ffi::PyUnicode_CheckExact(key) == 0 || in_set(str_hash(key))
    }

    /// Whether a change may write the tracked name's value: a key that is
    /// it or may equal it (not an exact str, or its hash), or a change of
    /// the whole dict.
    ///
    /// # Safety
    /// The GIL is held and `key` is NULL or a live object.
    unsafe fn may_write_tracked(event: c_int, key: *mut ffi::PyObject) -> bool {
        match event {
            EVENT_ADDED | EVENT_MODIFIED | EVENT_DELETED => {
                key.is_null()
                    || key as usize == TRACKED.load(Ordering::Relaxed)
                    || ffi::PyUnicode_CheckExact(key) == 0
                    || str_hash(key) == TRACKED_HASH.load(Ordering::Relaxed)
            }
            _ => true,
        }
    }

    /// The watcher callback: marks `dict` before a key that may be
    /// shadowable goes in, forgets a freed dict's mark, and counts the
    /// changes that may write the tracked name. Runs no Python code and
    /// never fails.
    unsafe extern "C" fn on_change(
        event: c_int,
        dict: *mut ffi::PyObject,
        key: *mut ffi::PyObject,
        _new_value: *mut ffi::PyObject,
    ) -> c_int {
        let addr = dict as usize;
        if may_write_tracked(event, key) {
            count_value_write();
        }
        match event {
            EVENT_ADDED if key.is_null() || may_be_shadowable(key) => {
                edit_marks(|m| m.insert(addr));
            }
            EVENT_CLONED => {
                edit_marks(|m| m.insert(addr));
            }
            EVENT_DEALLOCATED if MARKED_COUNT.load(Ordering::Relaxed) > 0 => {
                edit_marks(|m| m.remove(&addr));
            }
            _ => {}
        }
        0
    }

    /// A dict watcher of its own for another concern (socket_map.rs watches
    /// the socket maps); None when CPython's watcher slots are all taken.
    pub fn add_watcher(_py: Python<'_>, callback: WatchCallback) -> Option<c_int> {
        // SAFETY: the GIL is held (`_py`); `callback` has the callback's signature.
        let id = unsafe { PyDict_AddWatcher(callback) };
        if id < 0 {
            // SAFETY: the GIL is held.
            unsafe { ffi::PyErr_Clear() };
            return None;
        }
        Some(id)
    }

    /// Our watcher id, registered (and checked by `probe`) on first use.
    fn watcher(py: Python<'_>) -> Option<c_int> {
        let id = WATCHER.load(Ordering::Relaxed);
        if id == -2 {
            let id = register(py);
            WATCHER.store(id, Ordering::Relaxed);
            return (id >= 0).then_some(id);
        }
        (id >= 0).then_some(id)
    }

    #[cold]
    fn register(py: Python<'_>) -> c_int {
        // SAFETY: interned exact strs, alive for the process.
        let hashes: Vec<isize> = shadowable(py)
            .iter()
            .map(|name| unsafe { str_hash(name.as_ptr()) })
            .collect();
        if !build_set(&hashes) {
            return -1;
        }
        let tracked = names::terminator(py);
        TRACKED.store(tracked.as_ptr() as usize, Ordering::Relaxed);
        // SAFETY: an interned exact str, alive for the process.
        TRACKED_HASH.store(unsafe { str_hash(tracked.as_ptr()) }, Ordering::Relaxed);
        let Some(id) = add_watcher(py, on_change) else {
            return -1; // All of CPython's watcher slots are taken: no fast path.
        };
        // The callback reads the id: set it before the probe.
        WATCHER.store(id, Ordering::Relaxed);
        if probe(py, id) {
            id
        } else {
            // SAFETY: the GIL is held; `id` is ours.
            unsafe {
                if ffi::PyDict_ClearWatcher(id) != 0 {
                    ffi::PyErr_Clear();
                }
            }
            -1
        }
    }

    /// Checks on a dict of our own that watching sets bit `id` of the tag
    /// word, as DictHead assumes, and that the callback keeps a plain key
    /// and catches a shadowable one.
    fn probe(py: Python<'_>, id: c_int) -> bool {
        let d = PyDict::new(py);
        if is_watched(&d, id) || !watch_if_clean(&d, id) || !is_watched(&d, id) {
            return false;
        }
        let plain_key_kept = d.set_item("x", 1).is_ok() && vouched(&d, id);
        let shadow_caught = d.set_item(names::recv(py), 1).is_ok() && !vouched(&d, id);
        plain_key_kept && shadow_caught && !is_watched(&d, id)
    }

    /// The set's key for a hash: 0 would read as an empty slot.
    fn key_of(h: isize) -> isize {
        if h == 0 {
            1
        } else {
            h
        }
    }

    fn slot_of(key: isize, multiplier: u64) -> usize {
        ((key as u64).wrapping_mul(multiplier) >> (64 - SET_SLOTS.trailing_zeros())) as usize
    }

    /// Fills HASHES with `hashes`, one slot each: tries odd multipliers (a
    /// fixed sequence) until one gives every distinct key its own slot. For
    /// 15 keys in 256 slots about two in three multipliers do. False if none
    /// of the tries does (then there is no fast path).
    fn build_set(hashes: &[isize]) -> bool {
        let mut keys: Vec<isize> = hashes.iter().map(|&h| key_of(h)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut multiplier: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..1000 {
            let mut taken = [false; SET_SLOTS];
            let separated = keys
                .iter()
                .all(|&k| !std::mem::replace(&mut taken[slot_of(k, multiplier)], true));
            if separated {
                for &k in &keys {
                    HASHES[slot_of(k, multiplier)].store(k, Ordering::Relaxed);
                }
                MULTIPLIER.store(multiplier, Ordering::Relaxed);
                return true;
            }
            multiplier = multiplier.wrapping_add(0x2545_F491_4F6C_DD1D) | 1;
        }
        false
    }

    /// Whether `h` is the hash of a shadowable name (or -1: unknown, so
    /// treated as one). Before `build_set`, every slot is empty.
    #[inline]
    fn in_set(h: isize) -> bool {
        if h == -1 {
            return true;
        }
        let key = key_of(h);
        HASHES[slot_of(key, MULTIPLIER.load(Ordering::Relaxed))].load(Ordering::Relaxed) == key
    }
}

#[cfg(not(all(Py_3_12, not(any(feature = "abi3", Py_GIL_DISABLED)))))]
mod imp {
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyString};

    use super::ScanMemo;

    pub fn lacks(
        _dict: &Bound<'_, PyDict>,
        _names: &[&Bound<'_, PyString>],
        _owner: &impl ScanMemo,
    ) -> bool {
        false
    }

    /// # Safety
    /// As for `super::still_vouched`.
    #[cfg_attr(feature = "abi3", allow(dead_code))]
    pub unsafe fn still_vouched(_dict: *mut pyo3::ffi::PyObject) -> bool {
        false
    }

    pub fn value_writes() -> u64 {
        0
    }

    pub fn all_shadowable_now(_py: Python<'_>, _names: &[&Bound<'_, PyString>]) -> bool {
        false
    }

    pub fn is_watched_now(_dict: &Bound<'_, PyDict>) -> bool {
        false
    }
}
