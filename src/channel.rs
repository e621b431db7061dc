//! Owns the channel object: `dispatcher`'s Rust layout, shared by every
//! channel class, its Rust-held attributes and the accessors that read them.
//!
//! The attributes that decide a channel's poll interest (`connected`,
//! `accepting`, `out_buffer`, `producer_fifo`) live in Rust behind data
//! descriptors, so the event loop learns of every change without asking
//! Python each pass. Attributes nothing in Rust needs stay in the instance
//! `__dict__`, as in CPython. A subclass may shadow a descriptor with a class
//! attribute; then the accessors use Python attribute lookup (`is_direct`).
//!
//! Uses: calls, dict_watch, errors, fd_map, fifo, gil_cell, inbuf, link, managed_dict,
//! names, pyobj, type_cache.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyString, PyType, PyWeakrefReference};
use pyo3::{PyTraverseError, PyVisit};

use crate::errors::missing_attr;
use crate::fd_map::RawFd;
use crate::fifo::{Fifo, FifoOwner};
use crate::gil_cell::{GilCell, GilRef};
use crate::inbuf::InBuf;
use crate::link::{ChannelLink, LoopShared};
use crate::names;
use crate::pyobj::Built;

/// Attributes whose Rust field is authoritative unless a subclass shadows the
/// descriptor with a class attribute (then Python attribute lookup is used).
pub const F_CONNECTED: u16 = 1;
pub const F_ACCEPTING: u16 = 2;
pub const F_CONNECTING: u16 = 4;
pub const F_SOCKET: u16 = 8;
pub const F_FILENO: u16 = 16;
pub const F_OUT: u16 = 32;
pub const F_INBUF: u16 = 64;
pub const F_FIFO: u16 = 128;
/// The instance `__dict__` pointer is at `dispatcher`'s `tp_dictoffset`.
const F_DICTPTR: u16 = 256;
/// The class has CPython's managed dict, read by managed_dict.rs.
const F_MANAGED: u16 = 512;
/// Not class answers but the channel's own state, kept in `direct` because
/// the object has no spare byte (a byte more costs 8, and 16 per object
/// with pymalloc's rounding): `connected`, `accepting`, `connecting`.
pub const S_CONNECTED: u16 = 0x400;
pub const S_ACCEPTING: u16 = 0x800;
pub const S_CONNECTING: u16 = 0x1000;
/// The bits of `direct` that are the object's own, kept when the class
/// answers are computed again.
const OWN_BITS: u16 = S_CONNECTED | S_ACCEPTING | S_CONNECTING | F_DICT_UNCLEAN;
/// Not a class answer: a scan of the instance dict found a name that may be
/// shadowable (dict_watch.rs), so it is looked up from then on, not scanned
/// at every check. A bit of `direct` because the object has no spare byte.
const F_DICT_UNCLEAN: u16 = 0x4000;
const F_KNOWN: u16 = 0x8000;

#[derive(Default)]
pub struct Fields {
    pub socket: Option<Py<PyAny>>,
    pub fileno: Option<Py<PyAny>>,
    /// `_map` and `addr`: kept here rather than in the instance `__dict__`,
    /// which then stays empty (an idle channel's largest cost otherwise; see
    /// benches/idle_memory.py). Read and written through Python attribute
    /// access only, so a subclass that shadows them still works.
    pub map: Option<Py<PyAny>>,
    pub addr: Option<Py<PyAny>>,
    /// `dispatcher_with_send.out_buffer`.
    pub out_buffer: Option<Py<PyAny>>,
    /// async_chat's own fields, made at first use (`chat_mut`).
    chat: Option<Box<ChatFields>>,
    /// The link to the loop state that polls the channel (link.rs).
    link: ChannelLink,
}

/// async_chat's fields, in a box of their own that only async_chat
/// channels allocate: every other channel pays one pointer for the three
/// (the memory target for dispatcher_with_send, benches/idle_memory.py,
/// has no room for 16 bytes more).
#[derive(Default)]
pub struct ChatFields {
    /// `async_chat.ac_in_buffer`.
    pub inbuf: InBuf,
    pub producer_fifo: Option<Py<PyAny>>,
    /// async_chat's virtually sent data (see output_batch.rs).
    pub out_queue: OutQueue,
}

/// What `Fields::chat` reads as before a channel has its own.
static NO_CHAT: ChatFields = ChatFields {
    inbuf: InBuf::EMPTY,
    producer_fifo: None,
    out_queue: OutQueue(None),
};

impl Fields {
    /// async_chat's fields (empty ones if this channel has none).
    #[inline]
    pub fn chat(&self) -> &ChatFields {
        self.chat.as_deref().unwrap_or(&NO_CHAT)
    }

    /// async_chat's fields, made now if this channel has none.
    #[inline]
    pub fn chat_mut(&mut self) -> &mut ChatFields {
        self.chat.get_or_insert_with(Box::default)
    }
}

/// The channel's queue of virtually sent data (output_batch.rs). Allocated
/// at the first virtual send and kept: only async_chat in a batch mode uses
/// it, and every other channel pays one pointer.
#[derive(Default)]
pub struct OutQueue(Option<Box<Queued>>);

/// Exact bytes objects, in order, and their total size.
#[derive(Default)]
pub struct Queued {
    pub items: Vec<Py<PyBytes>>,
    pub bytes: usize,
}

/// Most items and bytes one `sendmsg()` gathers (Linux's UIO_MAXIOV is 1024).
const MAX_IOV: usize = 1024;
const MAX_BYTES: usize = 256 * 1024;

impl OutQueue {
    /// Whether `n` more bytes fit in one `sendmsg()`.
    pub fn has_room(&self, n: usize) -> bool {
        self.0
            .as_deref()
            .is_none_or(|q| q.items.len() < MAX_IOV && q.bytes + n <= MAX_BYTES)
    }

    pub fn push(&mut self, item: Py<PyBytes>, n: usize) {
        let q = self.0.get_or_insert_with(Box::default);
        if q.items.capacity() == 0 {
            q.items = take_spare();
        }
        q.items.push(item);
        q.bytes += n;
    }

    /// The total size queued.
    pub fn bytes(&self) -> usize {
        self.0.as_deref().map_or(0, |q| q.bytes)
    }

    pub fn items(&self) -> &[Py<PyBytes>] {
        self.0.as_deref().map_or(&[], |q| &q.items)
    }

    /// Everything queued; the queue is empty afterwards.
    pub fn take(&mut self) -> Queued {
        self.0
            .as_deref_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

/// The item list of the last queue sent in full, emptied, for the next
/// queue to fill: a queue taken for sending leaves its channel without one,
/// and growing a new list from nothing cost about 45 instructions per push
/// (six reallocations for a 100-line reply). One list for the process, so
/// no idle channel keeps one.
static SPARE: Mutex<Vec<Py<PyBytes>>> = Mutex::new(Vec::new());

fn take_spare() -> Vec<Py<PyBytes>> {
    std::mem::take(&mut *SPARE.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Keeps `items`' allocation for the next queue (the items are dropped
/// first, outside the lock: a bytes object's release runs no Python code,
/// but the lock is held for as little as can be).
pub fn recycle(mut items: Vec<Py<PyBytes>>) {
    items.clear();
    let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    if items.capacity() > spare.capacity() {
        *spare = items;
    }
}

// Where handler classes keep their attributes (see managed_dict.rs). With a
// dict slot here (`dict`, `weakref`: tp_dictoffset) CPython does not
// specialise attribute access on a subclass's instances; without one, 3.13+
// give the public `asyncore.dispatcher` (a Python subclass, asyncore.py) and
// every handler class CPython's managed dict, with inline values on 3.14,
// whose `self.x` reads are specialised (about 1,000 instructions per line
// of the bench's line handler on 3.14). 3.11, 3.12, the abi3 and the
// free-threaded builds keep the slot: there the managed dict's layout is
// another, not read here.
#[cfg_attr(
    any(not(Py_3_13), feature = "abi3", Py_GIL_DISABLED),
    pyclass(
        frozen,
        subclass,
        dict,
        weakref,
        module = "asyncore_rs._core",
        name = "dispatcher"
    )
)]
#[cfg_attr(
    all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED))),
    pyclass(frozen, subclass, module = "asyncore_rs._core", name = "dispatcher")
)]
pub struct Dispatcher {
    /// Checked first by `__traverse__` (see pyobj.rs `Built`).
    built: Built,
    fields: GilCell<Fields>,
    direct: AtomicU16,
    /// `Fields::out_queue` holds data (see output_batch.rs).
    pub queued: AtomicBool,
    /// The socket in `Fields::socket` was seen plain and open (see
    /// output_batch.rs). A flag, not the object's address: every change of
    /// the field (replace_socket, __clear__) and every hand-out of it
    /// (expose_socket) clears it.
    sock_seen: AtomicBool,
    /// `output_batch::BatchMode` as u8; 0 until first needed.
    pub batch_mode: AtomicU8,
    /// Inside a `found_terminator()` with more input buffered behind it.
    pub pipelined: AtomicBool,
    /// The last direct `recv` was large (see sockio::recv_new_bytes).
    pub recv_big: AtomicBool,
}

impl Dispatcher {
    /// A channel with no state yet (`dispatcher.__new__`).
    pub fn new_empty() -> Self {
        Dispatcher {
            built: Built::new(),
            fields: GilCell::new(Fields::default()),
            direct: AtomicU16::new(0),
            queued: AtomicBool::new(false),
            sock_seen: AtomicBool::new(false),
            batch_mode: AtomicU8::new(0),
            pipelined: AtomicBool::new(false),
            recv_big: AtomicBool::new(false),
        }
    }

    /// One of the `S_*` state bits (`connected`...).
    #[inline]
    pub fn state(&self, bit: u16) -> bool {
        self.direct.load(Ordering::Relaxed) & bit != 0
    }

    /// Sets one of the `S_*` state bits; if it changed and the channel's
    /// interest depends on it, tells the loop. (A load and a store, which
    /// the GIL orders, as for every bit of `direct`.)
    pub fn store_state(&self, py: Python<'_>, bit: u16, value: bool, interest: bool) {
        let mask = self.direct.load(Ordering::Relaxed);
        let new = if value { mask | bit } else { mask & !bit };
        self.direct.store(new, Ordering::Relaxed);
        if new != mask && interest {
            self.mark_dirty(py);
        }
    }

    /// What a fifo this channel owns knows it by (fifo.rs `FifoOwner`).
    pub fn owner_id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// The channel's poll interest may have changed: tells the loop that
    /// polls it, if any.
    pub fn mark_dirty(&self, py: Python<'_>) {
        self.fields(py).link.mark_dirty();
    }

    /// The loop has re-read the channel's interest.
    pub fn clear_dirty(&self, py: Python<'_>) {
        self.fields(py).link.clear_dirty();
    }

    /// Links the channel to the loop state `shared`, polling it at `fd`;
    /// `holder` (the loop state's Python holder) is kept alive by the link.
    pub fn attach(
        &self,
        py: Python<'_>,
        shared: &std::sync::Arc<LoopShared>,
        fd: RawFd,
        holder: Option<Py<PyAny>>,
    ) {
        let old = self.fields(py).link.attach(shared, fd, holder);
        drop(old); // after the lock: it may hold the last reference to a loop state
    }

    /// Unlinks the channel if `shared` polls it.
    pub fn detach(&self, py: Python<'_>, shared: &std::sync::Arc<LoopShared>) {
        let old = self.fields(py).link.detach(shared);
        drop(old); // after the lock
    }

    /// Leaves the loop that polls the channel, at once (del_channel, before
    /// the socket is closed).
    pub fn unregister(&self, py: Python<'_>) {
        let taken = self.fields(py).link.take();
        if let Some(t) = taken {
            t.leave();
        }
    }

    /// Whether the socket field was seen plain and open (see output_batch.rs
    /// `socket_is_exclusive`).
    pub fn socket_seen(&self) -> bool {
        self.sock_seen.load(Ordering::Relaxed)
    }

    /// Remembers that `sock` was seen plain and open, if it is still the
    /// socket field.
    pub fn mark_socket_seen(&self, sock: &Bound<'_, PyAny>) {
        let st = self.fields(sock.py());
        if st.socket.as_ref().is_some_and(|s| s.is(sock)) {
            self.sock_seen.store(true, Ordering::Relaxed);
        }
    }

    /// Forgets that the socket was seen open: Python code that gets hold of
    /// it may close it, and a new one is not checked yet.
    pub fn forget_socket(&self) {
        self.sock_seen.store(false, Ordering::Relaxed);
    }

    /// `self.socket` handed to Python code (which may close it).
    pub fn expose_socket(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        slf.get().forget_socket();
        field(slf, |st| st.socket.as_ref(), "socket").map(Bound::unbind)
    }

    /// `self.socket = v`.
    pub fn replace_socket(&self, py: Python<'_>, v: Py<PyAny>) {
        self.forget_socket();
        let old = self.fields(py).socket.replace(v);
        drop(old); // after the lock: its destructor may run Python
    }

    /// The channel's state, for the guard's length: never held across a
    /// call into Python (gil_cell.rs).
    pub fn fields(&self, py: Python<'_>) -> GilRef<'_, Fields> {
        self.fields.borrow(py)
    }

    /// Whether the Rust fields behind `flag` (one or more bits) are all
    /// authoritative for this object.
    #[inline]
    pub fn is_direct(slf: &Bound<'_, Self>, flag: u16) -> bool {
        Self::direct_flags(slf) & flag == flag
    }

    /// The object's `direct` bits, computed at the first ask.
    #[inline]
    fn direct_flags(slf: &Bound<'_, Self>) -> u16 {
        let mask = slf.get().direct.load(Ordering::Relaxed);
        if mask & F_KNOWN == 0 {
            return Self::learn_direct_flags(slf);
        }
        mask
    }

    // Out of line: in line, its call and reference count made every caller
    // save registers (about 10 instructions a check).
    #[cold]
    #[inline(never)]
    fn learn_direct_flags(slf: &Bound<'_, Self>) -> u16 {
        let class = direct_mask(slf.py(), &slf.get_type()) | F_KNOWN;
        // Read again: computing the class answers may have run Python code
        // (a metaclass) that set a state bit.
        let own = slf.get().direct.load(Ordering::Relaxed) & OWN_BITS;
        slf.get().direct.store(class | own, Ordering::Relaxed);
        class | own
    }
}

impl crate::dict_watch::ScanMemo for Dispatcher {
    fn scan_failed(&self) -> bool {
        self.direct.load(Ordering::Relaxed) & F_DICT_UNCLEAN != 0
    }

    fn set_scan_failed(&self, failed: bool) {
        // The GIL orders this with is_direct's store (a load and a store, as
        // for every field of `direct`).
        let mask = self.direct.load(Ordering::Relaxed);
        let mask = if failed {
            mask | F_DICT_UNCLEAN
        } else {
            mask & !F_DICT_UNCLEAN
        };
        self.direct.store(mask, Ordering::Relaxed);
    }
}

// Garbage collection. Every Python reference a channel holds in Rust is
// reported here, so cycles through them (a producer or socket that refers
// back to its channel, a channel in its own map) are collected as CPython
// collects the same cycles through the instance `__dict__` (which pyo3
// reports and clears itself).
#[pymethods]
impl Dispatcher {
    /// The state's references (socket, `_fileno`, `out_buffer`,
    /// `producer_fifo`, the virtually sent bytes) and the loop state holder
    /// the channel's link keeps alive (link.rs). The bytes objects cannot be
    /// part of a cycle (bytes hold no references; the collector ignores
    /// them), but reporting them costs nothing and keeps this list complete.
    /// If the state is borrowed (the collector ran from inside a borrow, on
    /// an allocation), nothing of it is reported:
    /// the collector then treats those objects as reachable (no collection,
    /// never a wrong one).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if !self.built.get() {
            return Ok(());
        }
        // SAFETY: the collector calls tp_traverse from a thread attached to
        // the interpreter, holding the GIL.
        let py = unsafe { Python::assume_attached() };
        if let Some(st) = self.fields.try_borrow(py) {
            visit.call(&st.socket)?;
            visit.call(&st.fileno)?;
            visit.call(&st.map)?;
            visit.call(&st.addr)?;
            visit.call(&st.out_buffer)?;
            visit.call(&st.chat().producer_fifo)?;
            for item in st.chat().out_queue.items() {
                visit.call(item)?;
            }
            st.link.visit_holder(&visit)?;
        }
        Ok(())
    }

    /// Leaves the loop that polls the channel and drops every reference, as
    /// CPython's collector empties an unreachable instance's `__dict__`:
    /// afterwards `socket`, `_fileno`, `out_buffer` and `producer_fifo` are
    /// unset (reading them raises AttributeError, as before `__init__`), so
    /// every method that needs them raises, and `connected`, `accepting` and
    /// `connecting` read False (CPython's class attributes). The objects are
    /// released after the lock.
    fn __clear__(&self, py: Python<'_>) {
        self.unregister(py);
        let Some(mut st) = self.fields.try_borrow(py) else {
            return;
        };
        let taken = (
            st.socket.take(),
            st.fileno.take(),
            st.map.take(),
            st.addr.take(),
            st.out_buffer.take(),
            st.chat.as_mut().and_then(|c| c.producer_fifo.take()),
            st.chat.take(),
        );
        drop(st);
        // CPython's cleared instance falls back to the class attributes (False).
        let mask = self.direct.load(Ordering::Relaxed);
        self.direct.store(
            mask & !(S_CONNECTED | S_ACCEPTING | S_CONNECTING),
            Ordering::Relaxed,
        );
        self.queued.store(false, Ordering::Relaxed);
        self.forget_socket();
        if let Some(fifo) = &taken.5 {
            if let Ok(f) = fifo.bind(py).cast::<Fifo>() {
                f.get().disown(py, self.owner_id());
            }
        }
        drop(taken);
    }
}

/// Which of our descriptors `ty` still resolves to (not shadowed by a subclass
/// class attribute). Computed once per object, by walking the MRO's class
/// dicts: no AttributeError is raised and no class is kept alive.
fn direct_mask(py: Python<'_>, ty: &Bound<'_, PyType>) -> u16 {
    // Cached per class through a weak reference: classes made at run time
    // still die with their last instance.
    type Cache = Vec<(usize, Py<PyWeakrefReference>, u16)>;
    static CACHE: Mutex<Cache> = Mutex::new(Vec::new());
    let key = ty.as_ptr() as usize;
    {
        let cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, r, m)) = cache.iter().rev().find(|(k, _, _)| *k == key) {
            if r.bind(py).upgrade().is_some_and(|t| t.is(ty)) {
                return *m;
            }
        }
    }
    let mask = compute_direct_mask(py, ty);
    if let Ok(r) = PyWeakrefReference::new(ty) {
        let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|(k, r, _)| *k != key && r.bind(py).upgrade().is_some());
        cache.push((key, r.unbind(), mask));
    }
    mask
}

fn compute_direct_mask(py: Python<'_>, ty: &Bound<'_, PyType>) -> u16 {
    let base_dict = py.get_type::<Dispatcher>().getattr(names::dunder_dict(py));
    let mro = ty.getattr(names::dunder_mro(py));
    let (Ok(base_dict), Ok(mro)) = (base_dict, mro) else {
        return 0;
    };
    let dicts: Vec<Bound<PyAny>> = mro
        .try_iter()
        .map(|it| {
            it.filter_map(|k| k.and_then(|k| k.getattr(names::dunder_dict(py))).ok())
                .collect()
        })
        .unwrap_or_default();
    let mut mask = dict_at_base_offset(py, ty) | managed_flag(ty);
    for (flag, public, private) in descriptor_names(py) {
        let Ok(ours) = base_dict.get_item(private) else {
            continue;
        };
        // The first class in the MRO that defines the name decides.
        let seen = dicts
            .iter()
            .find(|d| d.contains(&public).unwrap_or(false))
            .and_then(|d| d.get_item(&public).ok());
        if seen.is_none_or(|v| v.is(&ours)) {
            mask |= flag;
        }
    }
    mask
}

/// Byte offset of the instance dict pointer in our object layout
/// (`dispatcher.__dictoffset__`, pyo3's `dict` slot); 0 until known.
static DICT_OFFSET: AtomicUsize = AtomicUsize::new(0);

/// `F_DICTPTR` if `ty` keeps the instance dict where `dispatcher` does. A
/// Python subclass of a class with a dict slot inherits its tp_dictoffset; we
/// check rather than assume.
fn dict_at_base_offset(py: Python<'_>, ty: &Bound<'_, PyType>) -> u16 {
    let offset = |t: &Bound<'_, PyType>| {
        t.getattr(names::dunder_dictoffset(py))
            .and_then(|v| v.extract::<isize>())
            .unwrap_or(0)
    };
    let base = offset(&py.get_type::<Dispatcher>());
    match usize::try_from(base) {
        Ok(b) if b > 0 && offset(ty) == base => {
            DICT_OFFSET.store(b, Ordering::Relaxed);
            F_DICTPTR
        }
        _ => 0,
    }
}

/// `F_MANAGED` if instances of `ty` have CPython's managed dict and this
/// build reads it (3.13+, see managed_dict.rs).
fn managed_flag(ty: &Bound<'_, PyType>) -> u16 {
    if managed_dict_read(ty) {
        F_MANAGED
    } else {
        0
    }
}

#[cfg(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED))))]
fn managed_dict_read(ty: &Bound<'_, PyType>) -> bool {
    // SAFETY: `ty` is a live type object; reading its flags has no effect.
    let flags = unsafe { pyo3::ffi::PyType_GetFlags(ty.as_ptr().cast()) };
    flags & pyo3::ffi::Py_TPFLAGS_MANAGED_DICT != 0 && crate::managed_dict::layout_known(ty.py())
}

#[cfg(not(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED)))))]
fn managed_dict_read(_ty: &Bound<'_, PyType>) -> bool {
    false
}

/// The instance dict pointer of `obj`, without a reference.
#[derive(Clone, Copy)]
enum DictPtr {
    /// Only getattr can tell: ask `obj.__dict__`.
    Elsewhere,
    /// No dict and no attribute.
    Null,
    /// No dict; inline values, none under a shadowable name (managed_dict.rs).
    #[cfg_attr(
        not(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED)))),
        allow(dead_code)
    )]
    InlineClean,
    /// A live dict that `obj` keeps.
    Ptr(*mut pyo3::ffi::PyObject),
}

/// The instance dict of `obj` as its slot has it.
enum SlotDict<'py> {
    /// The class keeps the dict elsewhere: ask `obj.__dict__`.
    Elsewhere,
    /// No dict made yet.
    Empty,
    /// No dict made; the instance may have attributes, but none of the
    /// shadowable names (dict_watch.rs): answers only for those.
    InlineClean,
    /// An owned reference: looking a key up may run Python code (a colliding
    /// key's `__eq__`) that replaces `obj.__dict__`, which CPython's own
    /// generic getattr guards against by holding the dict too.
    Dict(Bound<'py, PyDict>),
}

/// Where `obj` keeps its attributes: the pointer in its instance dict slot,
/// or its managed dict, read without a reference.
#[inline]
fn dict_slot(obj: &Bound<'_, Dispatcher>) -> DictPtr {
    let flags = Dispatcher::direct_flags(obj);
    if flags & F_MANAGED != 0 {
        return managed_dict_of(obj);
    }
    let offset = DICT_OFFSET.load(Ordering::Relaxed);
    if offset == 0 || flags & F_DICTPTR == 0 {
        return DictPtr::Elsewhere;
    }
    // SAFETY: `offset` is `dispatcher`'s tp_dictoffset, and F_DICTPTR says
    // `type(obj)` has the same one (checked for its class in direct_mask), so
    // `obj + offset` is inside the object, where CPython keeps the instance
    // dict pointer, or NULL before the dict is made. Read unaligned: the
    // offset comes from a Python attribute, so its alignment is not assumed.
    let ptr = unsafe {
        obj.as_ptr()
            .cast::<u8>()
            .add(offset)
            .cast::<*mut pyo3::ffi::PyObject>()
            .read_unaligned()
    };
    if ptr.is_null() {
        DictPtr::Null
    } else {
        DictPtr::Ptr(ptr)
    }
}

/// `dict_slot` for a class with F_MANAGED.
#[cfg(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED))))]
#[inline]
fn managed_dict_of(obj: &Bound<'_, Dispatcher>) -> DictPtr {
    use crate::managed_dict::Managed;
    let ty = crate::pyobj::type_of(obj.as_any());
    // SAFETY: the GIL is held, `obj` is live and `ty` is its type, which
    // has the managed-dict flag and a layout managed_dict reads (F_MANAGED,
    // checked for its class).
    match unsafe { crate::managed_dict::read(obj.py(), obj.as_ptr(), &ty) } {
        Managed::Dict(d) => DictPtr::Ptr(d),
        Managed::Empty => DictPtr::Null,
        Managed::InlineClean => DictPtr::InlineClean,
        Managed::Unknown => DictPtr::Elsewhere,
    }
}

#[cfg(not(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED)))))]
#[inline]
fn managed_dict_of(_obj: &Bound<'_, Dispatcher>) -> DictPtr {
    DictPtr::Elsewhere
}

// Measured: left to the compiler it stays a call, about 35 instructions a
// check for a channel without a dict (three checks per echo request).
#[allow(clippy::inline_always)]
#[inline(always)]
fn instance_dict<'py>(obj: &Bound<'py, Dispatcher>) -> SlotDict<'py> {
    let ptr = match dict_slot(obj) {
        DictPtr::Elsewhere => return SlotDict::Elsewhere,
        DictPtr::Null => return SlotDict::Empty,
        DictPtr::InlineClean => return SlotDict::InlineClean,
        DictPtr::Ptr(ptr) => ptr,
    };
    // SAFETY: a non-NULL slot holds a live dict (`__dict__` assignment
    // accepts only dicts) that `obj` keeps; we take our own reference before
    // any other code runs.
    unsafe { Bound::from_borrowed_ptr(obj.py(), ptr) }
        .cast_into::<PyDict>()
        .map_or(SlotDict::Elsewhere, SlotDict::Dict)
}

/// Drops the instance dict CPython 3.11 and 3.12 make for every new object of
/// a class with a dict slot (`object_new` calls `_PyObject_InitializeDict`),
/// while it is still empty and nothing else holds it: 64 bytes per channel,
/// most of which never set an attribute of their own (`_map`, `addr`,
/// `socket`... are Rust fields). CPython makes the dict again when it is
/// first needed (`PyObject_GenericSetAttr`, `PyObject_GenericGetDict`), as
/// for any object whose dict slot is NULL, which is how 3.13+ start.
pub fn release_unused_dict(obj: &Bound<'_, Dispatcher>) {
    let offset = DICT_OFFSET.load(Ordering::Relaxed);
    if !Dispatcher::is_direct(obj, F_DICTPTR) || offset == 0 {
        return;
    }
    // SAFETY: as in `instance_dict`: `obj + offset` is the instance dict slot
    // of a live object whose class keeps it at `dispatcher`'s offset, read
    // and written unaligned. The dict is released only when it is an exact,
    // empty dict and the slot holds the only reference to it, so no other
    // code can see it go; the slot is cleared before the reference is
    // dropped (the GIL is held; dropping an empty dict runs no Python code).
    // Read and written unaligned (see above), hence the cast is allowed.
    #[allow(clippy::cast_ptr_alignment)]
    unsafe {
        let slot = obj
            .as_ptr()
            .cast::<u8>()
            .add(offset)
            .cast::<*mut pyo3::ffi::PyObject>();
        let dict = slot.read_unaligned();
        if !dict.is_null()
            && pyo3::ffi::PyDict_CheckExact(dict) != 0
            && pyo3::ffi::PyDict_Size(dict) == 0
            && pyo3::ffi::Py_REFCNT(dict) == 1
        {
            slot.write_unaligned(std::ptr::null_mut());
            pyo3::ffi::Py_DECREF(dict);
        }
    }
}

/// Whether the instance dict of `obj` has the key `name` (an exact str).
fn instance_dict_has(obj: &Bound<'_, Dispatcher>, name: &Bound<'_, PyString>) -> bool {
    let py = obj.py();
    match instance_dict(obj) {
        SlotDict::Empty => return false,
        // An error in the lookup: can't tell, assume an override.
        // An empty dict is answered without a lookup (about 100 instructions).
        SlotDict::Dict(d) => {
            return !d.is_empty()
                && !crate::dict_watch::lacks(&d, &[name], obj.get())
                && d.contains(name).unwrap_or(true)
        }
        SlotDict::InlineClean if crate::dict_watch::all_shadowable(py, &[name]) => return false,
        SlotDict::InlineClean | SlotDict::Elsewhere => {}
    }
    match obj.getattr(names::dunder_dict(py)) {
        Ok(d) => d
            .cast::<PyDict>()
            .is_ok_and(|d| d.contains(name).unwrap_or(true)),
        Err(_) => false,
    }
}

/// Whether the instance dict of `obj` surely holds none of `names`, read
/// from the dict slot without making a dict (`calls::dict_lacks` for a small
/// one). False when it may, or only getattr can tell: the caller then looks
/// each name up as CPython does.
pub fn instance_dict_lacks(obj: &Bound<'_, Dispatcher>, names: &[&Bound<'_, PyString>]) -> bool {
    match instance_dict(obj) {
        SlotDict::Empty => true,
        SlotDict::Dict(d) => {
            crate::dict_watch::lacks(&d, names, obj.get()) || crate::calls::dict_lacks(&d, names)
        }
        SlotDict::InlineClean => crate::dict_watch::all_shadowable(obj.py(), names),
        SlotDict::Elsewhere => false,
    }
}

/// Whether the instance dict of `obj` surely lacks `names`, known without a
/// lookup: there is none, it is empty, or it is watched (dict_watch.rs).
/// False means "look them up".
#[cfg(not(feature = "abi3"))]
#[inline]
pub fn instance_dict_surely_lacks(
    obj: &Bound<'_, Dispatcher>,
    names: &[&Bound<'_, PyString>],
) -> bool {
    match instance_dict(obj) {
        SlotDict::Empty => true,
        SlotDict::Dict(d) => d.is_empty() || crate::dict_watch::lacks(&d, names, obj.get()),
        SlotDict::InlineClean => crate::dict_watch::all_shadowable(obj.py(), names),
        SlotDict::Elsewhere => false,
    }
}

/// Whether the instance dict of `obj` is none, or watched while no dict is
/// marked (dict_watch.rs): then it holds no shadowable name. For a caller
/// that checked its name with `instance_dict_surely_lacks` before; read
/// from the slot without taking a reference (called per message).
#[cfg(not(feature = "abi3"))]
#[inline]
pub fn instance_dict_still_vouched(obj: &Bound<'_, Dispatcher>) -> bool {
    match dict_slot(obj) {
        DictPtr::Elsewhere => false,
        DictPtr::Null | DictPtr::InlineClean => true,
        // SAFETY: a non-NULL slot holds a live dict (`__dict__` assignment
        // accepts only dicts) that `obj` keeps; nothing runs in between.
        DictPtr::Ptr(d) => unsafe { crate::dict_watch::still_vouched(d) },
    }
}

/// What `instance_attr` found for one caller and one name, kept across
/// the messages of one read: the version tag for which the class has no
/// such attribute (0: none kept), and the value read from a watched
/// instance dict with the count of tracked writes then (dict_watch.rs).
#[derive(Default)]
pub struct KeptAttr<'py> {
    tag: u32,
    dict: usize,
    writes: u64,
    value: Option<Bound<'py, PyAny>>,
}

/// `obj.<name>` for a plain instance attribute (asynchat's `terminator`):
/// when getattr is CPython's generic one and no class along the MRO has the
/// name (cached by version tag), CPython's lookup is the instance dict's
/// alone, made here without the generic machinery (half the instructions).
/// Otherwise, or when the dict lacks it, getattr as before. `kept` is the
/// caller's, only ever used with this `name`; for `terminator`, the name
/// whose writes dict_watch counts, it also keeps the value: while the
/// instance dict is the one it was read from and no write was counted
/// since, the value is the same.
pub fn instance_attr<'py>(
    obj: &Bound<'py, Dispatcher>,
    name: &Bound<'py, PyString>,
    kept: &mut KeptAttr<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let ty = crate::pyobj::type_of(obj);
    let tag = crate::type_cache::version_tag(&ty);
    let dict_only = (tag != 0 && tag == kept.tag) || {
        // The pair (name, "__dict__") is this question's own (type_cache.rs).
        let yes = crate::type_cache::cached(&ty, (name, names::dunder_dict(obj.py())), || {
            u64::from(
                crate::calls::generic_getattr(&ty)
                    && crate::calls::class_attr_ptr(&ty, name).is_null(),
            )
        }) != 0;
        // Nothing ran Python code since `tag` was read.
        kept.tag = if yes { tag } else { 0 };
        yes
    };
    if dict_only {
        if let Some(v) = kept_value(obj, kept) {
            return Ok(v);
        }
        if let Some(v) = inline_value(obj, name) {
            return Ok(v);
        }
        if let SlotDict::Dict(d) = instance_dict(obj) {
            let writes = crate::dict_watch::value_writes();
            if let Ok(Some(v)) = d.get_item(name) {
                // Kept if it is the name whose writes are counted, the dict
                // is watched and the lookup (which may run a key's __eq__)
                // wrote nothing.
                let keep = name.is(names::terminator(obj.py()))
                    && crate::dict_watch::is_watched_now(&d)
                    && crate::dict_watch::value_writes() == writes;
                *kept = KeptAttr {
                    tag: kept.tag,
                    dict: if keep { d.as_ptr() as usize } else { 0 },
                    writes,
                    value: keep.then(|| v.clone()),
                };
                return Ok(v);
            }
        }
    }
    obj.getattr(name)
}

/// `obj.<name>` from the object's inline values (managed_dict.rs), for a
/// name no class along the MRO has; None: read it another way.
#[cfg(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED))))]
#[inline]
fn inline_value<'py>(
    obj: &Bound<'py, Dispatcher>,
    name: &Bound<'py, PyString>,
) -> Option<Bound<'py, PyAny>> {
    if !Dispatcher::is_direct(obj, F_MANAGED) {
        return None;
    }
    let ty = crate::pyobj::type_of(obj.as_any());
    // SAFETY: the GIL is held, `obj` is live and `ty` its type, whose
    // managed-dict layout was probed (F_MANAGED); the value is a borrowed
    // reference `obj` holds, taken as our own before any code runs.
    unsafe {
        let v = crate::managed_dict::inline_value(obj.as_ptr(), &ty, name.as_ptr())?;
        Some(Bound::from_borrowed_ptr(obj.py(), v.as_ptr()))
    }
}

#[cfg(not(all(Py_3_13, not(any(feature = "abi3", Py_GIL_DISABLED)))))]
#[inline]
fn inline_value<'py>(
    _obj: &Bound<'py, Dispatcher>,
    _name: &Bound<'py, PyString>,
) -> Option<Bound<'py, PyAny>> {
    None
}

/// `kept`'s value, if the instance dict is still the one it was read from
/// and no write of the name was counted since.
#[inline]
fn kept_value<'py>(
    obj: &Bound<'py, Dispatcher>,
    kept: &KeptAttr<'py>,
) -> Option<Bound<'py, PyAny>> {
    let value = kept.value.as_ref()?;
    let same_dict = matches!(dict_slot(obj), DictPtr::Ptr(d) if d as usize == kept.dict);
    (same_dict && crate::dict_watch::value_writes() == kept.writes).then(|| value.clone())
}

/// `obj.<name>`, when reading it runs no Python code: the class attribute is
/// an exact int (never a descriptor), so the instance dict's value wins, else
/// the class's, as CPython's generic getattr decides. None when only getattr
/// can tell.
fn plain_setting<'py>(
    obj: &Bound<'py, Dispatcher>,
    name: &Bound<'py, PyString>,
) -> Option<Bound<'py, PyAny>> {
    let py = obj.py();
    let in_class = crate::calls::class_attr_ptr(&obj.get_type(), name);
    // SAFETY: _PyType_Lookup's result is NULL or a live object that a class
    // dict along the MRO holds; no code has run since, and we take our own
    // reference at once (the dict lookup below may run code that edits the
    // class).
    let in_class = unsafe { Bound::from_borrowed_ptr_or_opt(py, in_class) }?;
    if !in_class.is_exact_instance_of::<PyInt>() {
        return None;
    }
    let dict = match instance_dict(obj) {
        SlotDict::Elsewhere => return None,
        SlotDict::Empty => return Some(in_class),
        SlotDict::InlineClean => {
            return crate::dict_watch::all_shadowable(py, &[name]).then_some(in_class)
        }
        SlotDict::Dict(d) => d,
    };
    if crate::dict_watch::lacks(&dict, &[name], obj.get()) {
        return Some(in_class);
    }
    match dict.get_item(name) {
        Ok(Some(own)) => Some(own),
        Ok(None) => Some(in_class),
        Err(_) => None, // getattr will raise it again
    }
}

/// `obj.<name>` for an int setting such as `ac_out_buffer_size`, without a
/// getattr call when reading it runs no Python code.
pub fn int_setting<'py>(
    obj: &Bound<'py, Dispatcher>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    read_setting(obj, name).map(|(v, _)| v)
}

/// `obj.<name>`, and whether reading it ran no Python code (see
/// plain_setting): CPython's one read of a setting, for a caller that also
/// needs to know the value is exactly what a later read would give.
pub fn read_setting<'py>(
    obj: &Bound<'py, Dispatcher>,
    name: &Bound<'py, PyString>,
) -> PyResult<(Bound<'py, PyAny>, bool)> {
    match plain_setting(obj, name) {
        Some(v) => Ok((v, true)),
        None => Ok((obj.getattr(name)?, false)),
    }
}

/// `v` as a size, when it is an exact non-negative int that fits one.
pub fn as_size(v: &Bound<'_, PyAny>) -> Option<usize> {
    if !v.is_exact_instance_of::<PyInt>() {
        return None;
    }
    // Negative or too large for a size: the caller takes the general path.
    crate::pyobj::to_usize(v)
}

/// (flag, public name, name on `dispatcher`) of each Rust-backed attribute.
fn descriptor_names(py: Python<'_>) -> [(u16, Bound<'_, PyString>, Bound<'_, PyString>); 8] {
    [
        (
            F_CONNECTED,
            names::connected(py).clone(),
            names::connected(py).clone(),
        ),
        (
            F_ACCEPTING,
            names::accepting(py).clone(),
            names::accepting(py).clone(),
        ),
        (
            F_CONNECTING,
            names::connecting(py).clone(),
            names::connecting(py).clone(),
        ),
        (
            F_SOCKET,
            names::socket(py).clone(),
            names::socket(py).clone(),
        ),
        (
            F_FILENO,
            names::_fileno(py).clone(),
            names::_fileno(py).clone(),
        ),
        (
            F_OUT,
            names::out_buffer(py).clone(),
            names::_rs_out_buffer(py).clone(),
        ),
        (
            F_INBUF,
            names::ac_in_buffer(py).clone(),
            names::_rs_ac_in_buffer(py).clone(),
        ),
        (
            F_FIFO,
            names::producer_fifo(py).clone(),
            names::_rs_producer_fifo(py).clone(),
        ),
    ]
}

/// The accessors of a boolean Rust-held attribute (the field and the Python
/// attribute share the name).
macro_rules! bool_attr {
    ($get:ident, $set:ident, $flag:expr, $bit:expr, $field:ident, $interest:expr) => {
        pub fn $get(slf: &Bound<'_, Dispatcher>) -> PyResult<bool> {
            if Dispatcher::is_direct(slf, $flag) {
                Ok(slf.get().state($bit))
            } else {
                slf.getattr(names::$field(slf.py()))?.is_truthy()
            }
        }

        pub fn $set(slf: &Bound<'_, Dispatcher>, value: bool) -> PyResult<()> {
            if Dispatcher::is_direct(slf, $flag) {
                slf.get().store_state(slf.py(), $bit, value, $interest);
                Ok(())
            } else {
                slf.setattr(names::$field(slf.py()), value)
            }
        }
    };
}

bool_attr!(
    connected,
    set_connected,
    F_CONNECTED,
    S_CONNECTED,
    connected,
    true
);
bool_attr!(
    accepting,
    set_accepting,
    F_ACCEPTING,
    S_ACCEPTING,
    accepting,
    true
);
bool_attr!(
    connecting,
    set_connecting,
    F_CONNECTING,
    S_CONNECTING,
    connecting,
    false
);

/// A Rust-held attribute, or AttributeError while it is unset (as before
/// CPython's `__init__` assigns it).
pub fn field<'py>(
    slf: &Bound<'py, Dispatcher>,
    pick: impl FnOnce(&Fields) -> Option<&Py<PyAny>>,
    name: impl std::fmt::Display,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    match pick(&slf.get().fields(py)) {
        Some(v) => Ok(v.bind(py).clone()),
        None => Err(missing_attr(slf.as_any(), name)),
    }
}

/// `del self.<name>` of a Rust-held attribute: AttributeError while it is
/// unset, as for an instance attribute never assigned. The object is
/// released after the lock (its destructor may run Python).
pub fn take_field(
    slf: &Bound<'_, Dispatcher>,
    pick: impl FnOnce(&mut Fields) -> &mut Option<Py<PyAny>>,
    name: &str,
) -> PyResult<()> {
    let old = pick(&mut slf.get().fields(slf.py())).take();
    match old {
        Some(v) => {
            drop(v);
            Ok(())
        }
        None => Err(missing_attr(slf.as_any(), name)),
    }
}

/// `self.<name>`: the Rust field, or Python lookup when a subclass shadows it.
fn field_or_attr<'py>(
    slf: &Bound<'py, Dispatcher>,
    flag: u16,
    pick: impl FnOnce(&Fields) -> Option<&Py<PyAny>>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    if Dispatcher::is_direct(slf, flag) {
        // The name is formatted only for the error (a hot path: no String here).
        field(slf, pick, name)
    } else {
        slf.getattr(name)
    }
}

/// `self.socket`.
pub fn socket_of<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    field_or_attr(
        slf,
        F_SOCKET,
        |st| st.socket.as_ref(),
        names::socket(slf.py()),
    )
}

/// `self.out_buffer`.
pub fn out_buffer_of<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    field_or_attr(
        slf,
        F_OUT,
        |st| st.out_buffer.as_ref(),
        names::out_buffer(slf.py()),
    )
}

pub fn set_out_buffer(slf: &Bound<'_, Dispatcher>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if Dispatcher::is_direct(slf, F_OUT) {
        store_out_buffer(slf.get(), value);
        Ok(())
    } else {
        slf.setattr(names::out_buffer(slf.py()), value)
    }
}

pub fn store_out_buffer(me: &Dispatcher, value: &Bound<'_, PyAny>) {
    let is_empty = |o: &Bound<'_, PyAny>| o.len().is_ok_and(|n| n == 0);
    let now_empty = is_empty(value);
    let py = value.py();
    let old = me.fields(py).out_buffer.replace(value.clone().unbind());
    let was_empty = old.is_none_or(|o| is_empty(o.bind(value.py())));
    if was_empty != now_empty {
        me.mark_dirty(py);
    }
}

/// `self.producer_fifo`.
pub fn producer_fifo_of<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    field_or_attr(
        slf,
        F_FIFO,
        |st| st.chat().producer_fifo.as_ref(),
        names::producer_fifo(slf.py()),
    )
}

pub fn set_producer_fifo(slf: &Bound<'_, Dispatcher>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if Dispatcher::is_direct(slf, F_FIFO) {
        store_producer_fifo(slf, value)
    } else {
        slf.setattr(names::producer_fifo(slf.py()), value)
    }
}

pub fn store_producer_fifo(slf: &Bound<'_, Dispatcher>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(f) = value.cast::<Fifo>() {
        f.get().set_owner(
            slf.py(),
            Some(FifoOwner::new(
                slf.as_any(),
                slf.get().owner_id(),
                mark_dirty_of,
            )?),
        );
    }
    let py = slf.py();
    let old = slf
        .get()
        .fields(py)
        .chat_mut()
        .producer_fifo
        .replace(value.clone().unbind());
    if let Some(old) = old {
        // The same fifo set again keeps its owner; one another channel owns
        // now keeps that one.
        if let (false, Ok(f)) = (old.is(value), old.bind(value.py()).cast::<Fifo>()) {
            f.get().disown(py, slf.get().owner_id());
        }
    }
    slf.get().mark_dirty(py);
    Ok(())
}

/// How a fifo tells its owner that it turned empty or non-empty (fifo.rs
/// `FifoOwner`): `obj` is the owner, alive.
fn mark_dirty_of(obj: &Bound<'_, PyAny>) {
    if let Ok(d) = obj.cast::<Dispatcher>() {
        d.get().mark_dirty(obj.py());
    }
}

/// Whether `obj.<name>` is certainly False without reading it: the class
/// attribute found along the MRO is `False` itself (no descriptor) and the
/// instance dict does not shadow it (CPython's `debug = False`). False means
/// "read it" (`getattr`), not that the attribute is true.
pub fn is_plain_false(obj: &Bound<'_, Dispatcher>, name: &Bound<'_, PyString>) -> bool {
    let ty = obj.get_type();
    let in_class = crate::calls::class_attr_ptr(&ty, name);
    // SAFETY: Py_False is a static object; only its address is compared.
    let false_ptr = unsafe { pyo3::ffi::Py_False() };
    in_class == false_ptr && crate::calls::generic_getattr(&ty) && !instance_dict_has(obj, name)
}

/// Whether `obj.<public>` resolves to our Rust method registered as `<private>`
/// on `dispatcher` (not overridden by a subclass, nor in the instance dict),
/// and is read by CPython's generic getattr (a class `__getattribute__` sees
/// the read in CPython, so it must see ours: then the caller reads it).
/// The class lookup hits CPython's type attribute cache.
pub fn has_builtin(
    obj: &Bound<'_, Dispatcher>,
    public: &Bound<'_, PyString>,
    private: &Bound<'_, PyString>,
) -> bool {
    class_has_builtin(&crate::pyobj::type_of(obj), public, private)
        && !instance_dict_has(obj, public)
}

/// The class half of `has_builtin`: instances of `ty` read `<public>` as
/// our `dispatcher.<private>` unless their instance dict shadows it.
pub fn class_has_builtin(
    ty: &Bound<'_, PyType>,
    public: &Bound<'_, PyString>,
    private: &Bound<'_, PyString>,
) -> bool {
    // Decided from the MRO alone, without running Python code (our_method
    // reads `dispatcher`'s own dict, which is in every subclass's MRO, so a
    // change there resets the subclass's tag too): cached by version tag.
    let answer = crate::type_cache::cached(ty, (public, private), || {
        let ours = our_method(ty.py(), private);
        u64::from(
            !ours.is_null()
                && crate::calls::class_attr_ptr(ty, public) == ours
                && crate::calls::generic_getattr(ty),
        )
    });
    answer != 0
}

/// The address of `dispatcher.<private>` (our method object), for an
/// identity test made at once; NULL if there is none. Looked up each time:
/// `class_has_builtin`'s answers are cached by version tag (type_cache.rs),
/// so this runs only when a class is first seen or has changed.
fn our_method(py: Python<'_>, private: &Bound<'_, PyString>) -> *mut pyo3::ffi::PyObject {
    crate::calls::class_attr_ptr(&py.get_type::<Dispatcher>(), private)
}

#[cfg(test)]
mod tests {
    /// The channel's Rust part, measured because pymalloc rounds objects to
    /// 16 bytes: at 88 a 3.14 handler object with its managed-dict header and
    /// the smallest inline values is 160 bytes, at 96 it would be 176, over
    /// pyasyncore's figure for dispatcher_with_send (benches/idle_memory.py).
    #[test]
    fn dispatcher_fits_its_memory_budget() {
        assert!(std::mem::size_of::<super::Dispatcher>() <= 88);
    }
}
