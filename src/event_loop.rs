//! `loop()`, `poll()` (the select path), `poll2()` (the poll path) and the
//! per-event helpers, on the polling crate (epoll, level-triggered).
//!
//! CPython rebuilds the whole poll set every pass, calling `readable()` and
//! `writable()` on every channel. Here a `LoopState` per map keeps the poller
//! and its registrations across passes and changes them only where something
//! changed: map entries written (tracked by `SocketMap`, or found by comparing
//! a plain dict with the last pass), channels whose interest state changed
//! (they tell us through `ChannelNotify`), and channels whose `readable()` /
//! `writable()` are Python overrides (called every pass, as CPython does).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use polling::{Event, PollMode, Poller};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyString};

use crate::dispatcher::{accepting, connected, has_builtin, out_buffer_of, producer_fifo_of};
use crate::dispatcher::{Dispatcher, F_ACCEPTING, F_CONNECTED, F_FIFO, F_OUT};
use crate::errors::{call_in_except, errno_of, is_disconnect, is_reraised, os_error};
use crate::fifo::Fifo;
use crate::module_state::{global, state};
use crate::output_batch::dispatching;

// poll(2) flag values, as `select.POLL*` has them on Linux.
const POLLIN: u32 = 0x001;
const POLLPRI: u32 = 0x002;
const POLLOUT: u32 = 0x004;
const POLLERR: u32 = 0x008;
const POLLHUP: u32 = 0x010;
const POLLNVAL: u32 = 0x020;

// Registration interest bits.
const WANT_R: u8 = 1;
const WANT_W: u8 = 2;
const WANT_P: u8 = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ------------------------------------------------------------ notifications

/// Shared between a loop state and the channels registered in it.
pub struct LoopShared {
    poller: Poller,
    /// fds of tracked channels whose interest state changed.
    dirty: Mutex<Vec<RawFd>>,
    /// fds whose channel unregistered itself (del_channel) before closing.
    gone: Mutex<Vec<RawFd>>,
    /// The registered channels. Held here, not in `Reg`, so that a channel's
    /// `del_channel()` lets go of it at once: a closed channel (and its class)
    /// is never kept alive by a loop that is not running.
    objs: Mutex<FdMap<Py<PyAny>>>,
}

impl LoopShared {
    fn obj(&self, py: Python<'_>, fd: RawFd) -> Option<Py<PyAny>> {
        lock(&self.objs).get(&fd).map(|o| o.clone_ref(py))
    }

    /// Drops the channel at `fd` (after the lock: its destructor may run Python).
    fn release(&self, fd: RawFd) {
        let old = lock(&self.objs).remove(&fd);
        drop(old);
    }

    fn hold(&self, fd: RawFd, obj: Py<PyAny>) {
        let old = lock(&self.objs).insert(fd, obj);
        drop(old);
    }
}

/// A channel's link to the loop that polls it.
#[derive(Default)]
pub struct ChannelNotify {
    dirty: AtomicBool,
    sink: Mutex<Option<(Arc<LoopShared>, RawFd)>>,
}

impl ChannelNotify {
    /// The channel's poll interest may have changed.
    pub fn mark_dirty(&self) {
        if !self.dirty.swap(true, Ordering::Relaxed) {
            if let Some((shared, fd)) = &*lock(&self.sink) {
                lock(&shared.dirty).push(*fd);
            }
        }
    }

    /// Leaves the poller now, before the socket can be closed (the polling
    /// crate's contract: an fd must be deleted before it is closed).
    pub fn unregister(&self) {
        let taken = lock(&self.sink).take();
        if let Some((shared, fd)) = taken {
            // SAFETY: fd is the channel's registered, still-open descriptor.
            let _ = shared.poller.delete(unsafe { BorrowedFd::borrow_raw(fd) });
            lock(&shared.gone).push(fd);
            shared.release(fd);
        }
    }

    fn attach(&self, shared: &Arc<LoopShared>, fd: RawFd) {
        *lock(&self.sink) = Some((shared.clone(), fd));
        self.dirty.store(false, Ordering::Relaxed);
    }

    fn detach(&self, shared: &Arc<LoopShared>) {
        let mut sink = lock(&self.sink);
        if sink.as_ref().is_some_and(|(s, _)| Arc::ptr_eq(s, shared)) {
            *sink = None;
        }
    }
}

// ------------------------------------------------------------ loop state

/// fds are small, distinct integers: they hash to themselves (SipHash showed
/// in profiles of the event path).
#[derive(Default)]
struct FdHasher(u64);

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_i32(&mut self, i: i32) {
        self.0 = u64::from(i as u32);
    }
}

type FdHash = BuildHasherDefault<FdHasher>;
type FdMap<V> = HashMap<RawFd, V, FdHash>;
type FdSet = HashSet<RawFd, FdHash>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Select,
    Poll,
}

enum MapKind {
    /// Our `SocketMap`: it lists the keys written since the last pass.
    Tracked(Py<PyList>),
    /// A dict: compared entry by entry with the last pass (pointer equality).
    Dict,
    /// Any other mapping: re-read in full every pass.
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Registered with epoll (or not, when `want` is empty).
    Epoll,
    /// epoll refuses regular files (EPERM); poll() calls them always ready.
    AlwaysReady,
    /// The fd is not open: select() raises EBADF, poll() reports POLLNVAL.
    Invalid,
}

struct Reg {
    key: Py<PyAny>,
    /// Whether Rust derives the interest (else readable()/writable() are asked).
    tracked: bool,
    /// Some for channels whose interest Rust tracks; None: asked every pass.
    notify: Option<Arc<ChannelNotify>>,
    /// For tracked channels: which built-in writable() answers for them.
    wkind: WKind,
    want: u8,
    in_kernel: bool,
    kernel: Kernel,
    /// The pass in which readable()/writable() were last asked.
    asked: u64,
}

struct LoopState {
    map: Py<PyAny>,
    kind: MapKind,
    /// `map.get(k)` may be done as a C-level dict lookup (see map_get).
    plain_get: bool,
    mode: Mode,
    persistent: bool,
    fresh: bool,
    shared: Arc<LoopShared>,
    regs: FdMap<Reg>,
    /// Derived from `regs`, so that a pass costs what is active, not what is
    /// registered: fds asked every pass, fds outside epoll, and how many want
    /// any event. Kept by take_reg/put_reg/apply only.
    untracked: FdSet,
    special: FdSet,
    wanting: usize,
    snapshot: Vec<(usize, usize)>,
    /// Map entries whose key is no usable fd (None, a str, a negative int):
    /// select()/poll() only fail on them once their channel wants events.
    unkeyed: Vec<(Py<PyAny>, Py<PyAny>, u64)>,
    /// Keys whose channel left the poller during the last pass.
    recheck: Vec<Py<PyAny>>,
    pass: u64,
    events: Vec<libc::epoll_event>,
}

impl LoopState {
    fn new(py: Python<'_>, map: &Bound<'_, PyAny>, mode: Mode, persistent: bool) -> PyResult<Self> {
        let kind = if map
            .get_type()
            .hasattr(intern!(py, "_asyncore_rs_tracked"))?
        {
            let touched = map.getattr(intern!(py, "_touched"))?;
            MapKind::Tracked(touched.cast_into::<PyList>()?.unbind())
        } else if map.is_instance_of::<PyDict>() {
            MapKind::Dict
        } else {
            MapKind::Other
        };
        let plain_get = matches!(kind, MapKind::Tracked(_)) || map.is_exact_instance_of::<PyDict>();
        let poller = Poller::new().map_err(|e| os_error(py, e.raw_os_error().unwrap_or(0)))?;
        Ok(LoopState {
            map: map.clone().unbind(),
            kind,
            plain_get,
            mode,
            persistent,
            fresh: true,
            shared: Arc::new(LoopShared {
                poller,
                dirty: Mutex::new(Vec::new()),
                gone: Mutex::new(Vec::new()),
                objs: Mutex::new(FdMap::default()),
            }),
            regs: FdMap::default(),
            untracked: FdSet::default(),
            special: FdSet::default(),
            wanting: 0,
            snapshot: Vec::new(),
            unkeyed: Vec::new(),
            recheck: Vec::new(),
            pass: 0,
            events: Vec::with_capacity(1024),
        })
    }

    // ---------------- bringing registrations up to date

    fn sync(&mut self, py: Python<'_>, mode: Mode) -> PyResult<()> {
        self.pass += 1;
        let r = self.sync_inner(py, mode);
        if r.is_err() {
            self.fresh = true; // start over from the map next time
        }
        r
    }

    fn sync_inner(&mut self, py: Python<'_>, mode: Mode) -> PyResult<()> {
        let map = self.map.bind(py).clone();
        if mode != self.mode {
            self.mode = mode;
            self.fresh = true;
        }
        let full = self.fresh || self.membership_changed(py, &map)?;
        if full {
            self.full_resync(py, &map)?;
            self.fresh = false;
        }
        self.settle(py);
        for key in std::mem::take(&mut self.recheck) {
            self.examine(py, &map, key.bind(py), true)?;
        }
        // Membership is handled above; a dirty channel only needs its interest
        // re-derived from its Rust fields.
        let dirty = std::mem::take(&mut *lock(&self.shared.dirty));
        for fd in dirty {
            if !self.regs.contains_key(&fd) {
                continue;
            }
            let Some(obj) = self.shared.obj(py, fd) else {
                continue;
            };
            self.refresh_one(py, fd, obj.bind(py))?;
        }
        self.refresh_untracked(py)
    }

    /// Whether entries were added, removed or replaced; for a tracked map the
    /// written keys are examined here directly.
    fn membership_changed(&mut self, py: Python<'_>, map: &Bound<'_, PyAny>) -> PyResult<bool> {
        match &self.kind {
            MapKind::Tracked(touched) => {
                let touched = touched.bind(py).clone();
                if touched.is_empty() {
                    return Ok(false);
                }
                let keys: Vec<Bound<PyAny>> = touched.iter().collect();
                touched.del_slice(0, keys.len())?;
                if keys.iter().any(|k| k.is(map)) {
                    return Ok(true);
                }
                for key in keys {
                    self.examine(py, map, &key, false)?;
                }
                Ok(false)
            }
            MapKind::Dict => Ok(!self.dict_unchanged(map)),
            MapKind::Other => Ok(true),
        }
    }

    /// Compares the dict's (key, value) pointers with the last pass's. A
    /// pointer cannot be reused behind our back: registrations (keys, and the
    /// channels in `LoopShared::objs`) and `unkeyed` hold references, and a
    /// channel released by del_channel() is re-examined (`recheck`), which
    /// rebuilds the snapshot.
    fn dict_unchanged(&self, map: &Bound<'_, PyAny>) -> bool {
        let mut i = 0;
        let mut pos: ffi::Py_ssize_t = 0;
        let mut k: *mut ffi::PyObject = std::ptr::null_mut();
        let mut v: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: map is a dict (MapKind::Dict) and the GIL is held; PyDict_Next
        // returns borrowed references we only compare.
        while unsafe { ffi::PyDict_Next(map.as_ptr(), &raw mut pos, &raw mut k, &raw mut v) } != 0 {
            if self.snapshot.get(i) != Some(&(k as usize, v as usize)) {
                return false;
            }
            i += 1;
        }
        i == self.snapshot.len()
    }

    fn full_resync(&mut self, py: Python<'_>, map: &Bound<'_, PyAny>) -> PyResult<()> {
        if let MapKind::Tracked(touched) = &self.kind {
            let touched = touched.bind(py);
            touched.del_slice(0, touched.len())?;
        }
        let items: Vec<(Bound<PyAny>, Bound<PyAny>)> = map
            .call_method0(intern!(py, "items"))?
            .try_iter()?
            .map(|kv| kv.and_then(|kv| kv.extract()))
            .collect::<PyResult<_>>()?;
        self.snapshot.clear();
        self.unkeyed.clear();
        let mut seen: FdSet = FdSet::with_capacity_and_hasher(items.len(), FdHash::default());
        for (key, obj) in &items {
            self.snapshot
                .push((key.as_ptr() as usize, obj.as_ptr() as usize));
            if let Some(fd) = self.place(py, key, obj, true)? {
                seen.insert(fd);
            }
        }
        let stale: Vec<RawFd> = self
            .regs
            .keys()
            .filter(|fd| !seen.contains(fd))
            .copied()
            .collect();
        for fd in stale {
            self.remove(fd);
        }
        Ok(())
    }

    /// Re-reads one key of the map and brings its registration up to date.
    fn examine(
        &mut self,
        py: Python<'_>,
        map: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        recheck: bool,
    ) -> PyResult<()> {
        match map_get(map, key, self.plain_get)? {
            Some(obj) => {
                self.place(py, key, &obj, recheck)?;
            }
            None => {
                if let Ok(fd) = as_fd(key) {
                    if self
                        .regs
                        .get(&fd)
                        .is_some_and(|r| r.key.bind(py).eq(key).unwrap_or(false))
                    {
                        self.remove(fd);
                    }
                }
            }
        }
        if let MapKind::Dict = self.kind {
            self.fresh = true; // the snapshot is stale: rebuild it next pass
        }
        Ok(())
    }

    /// Registers `obj` under `key`, or refreshes its registration. Returns the fd.
    fn place(
        &mut self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        obj: &Bound<'_, PyAny>,
        recheck: bool,
    ) -> PyResult<Option<RawFd>> {
        let fd = match as_fd(key) {
            Ok(fd) if fd >= 0 => fd,
            bad => {
                self.unkeyed.retain(|(k, _, _)| !k.bind(py).is(key));
                if interest(py, obj, self.mode)? != 0 {
                    return Err(bad_key(bad));
                }
                self.unkeyed
                    .push((key.clone().unbind(), obj.clone().unbind(), self.pass));
                return Ok(None);
            }
        };
        let same = self.regs.contains_key(&fd)
            && self.shared.obj(py, fd).is_some_and(|o| o.bind(py).is(obj));
        if same {
            if recheck {
                self.refresh_one(py, fd, obj)?;
            }
            return Ok(Some(fd));
        }
        if self.regs.contains_key(&fd) {
            self.remove(fd);
        }
        // Every dispatcher of a persistent state gets a link back (for
        // del_channel); only those whose interest Rust can derive are tracked.
        let notify = match obj.cast::<Dispatcher>() {
            Ok(d) if self.persistent => Some(d.get().notify.clone()),
            _ => None,
        };
        let (tracked, wkind) = match trackable(py, obj) {
            Some(k) if notify.is_some() => (true, k),
            _ => (false, WKind::Always),
        };
        if let Some(n) = &notify {
            n.attach(&self.shared, fd);
        }
        let want = interest(py, obj, self.mode)?;
        self.shared.hold(fd, obj.clone().unbind());
        self.put_reg(
            fd,
            Reg {
                key: key.clone().unbind(),
                tracked,
                notify,
                wkind,
                want: 0,
                in_kernel: false,
                kernel: Kernel::Epoll,
                asked: self.pass,
            },
        );
        self.apply(py, fd, want)?;
        Ok(Some(fd))
    }

    /// A tracked channel told us its state changed: re-derive its interest
    /// (and whether it is still trackable).
    fn refresh_one(&mut self, py: Python<'_>, fd: RawFd, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut want = None;
        if let Some(reg) = self.regs.get_mut(&fd) {
            if !reg.tracked && reg.asked == self.pass {
                return Ok(());
            }
            reg.asked = self.pass;
            if let (true, Some(n), Ok(d)) = (reg.tracked, &reg.notify, obj.cast::<Dispatcher>()) {
                n.dirty.store(false, Ordering::Relaxed);
                want = Some(tracked_interest(d, reg.wkind, self.mode));
            }
        }
        let want = match want {
            Some(w) => w,
            None => interest(py, obj, self.mode)?,
        };
        self.apply(py, fd, want)
    }

    /// Channels whose readable()/writable() are Python: asked every pass.
    fn refresh_untracked(&mut self, py: Python<'_>) -> PyResult<()> {
        let pass = self.pass;
        let mut fds: Vec<(RawFd, Py<PyAny>)> = Vec::with_capacity(self.untracked.len());
        {
            let objs = lock(&self.shared.objs);
            for fd in &self.untracked {
                if let (Some(r), Some(o)) = (self.regs.get_mut(fd), objs.get(fd)) {
                    if r.asked != pass {
                        r.asked = pass;
                        fds.push((*fd, o.clone_ref(py)));
                    }
                }
            }
        }
        for (fd, obj) in fds {
            let want = interest(py, obj.bind(py), self.mode)?;
            self.apply(py, fd, want)?;
        }
        let unkeyed: Vec<(Py<PyAny>, Py<PyAny>)> = self
            .unkeyed
            .iter_mut()
            .filter(|(_, _, asked)| *asked != pass)
            .map(|(k, o, asked)| {
                *asked = pass;
                (k.clone_ref(py), o.clone_ref(py))
            })
            .collect();
        for (key, obj) in unkeyed {
            if interest(py, obj.bind(py), self.mode)? != 0 {
                return Err(bad_key(as_fd(key.bind(py))));
            }
        }
        Ok(())
    }

    fn apply(&mut self, py: Python<'_>, fd: RawFd, want: u8) -> PyResult<()> {
        let Some(reg) = self.regs.get_mut(&fd) else {
            return Ok(());
        };
        self.wanting = self.wanting + usize::from(want != 0) - usize::from(reg.want != 0);
        if reg.kernel != Kernel::Epoll || (reg.want == want && reg.in_kernel == (want != 0)) {
            reg.want = want;
            return Ok(());
        }
        let poller = &self.shared.poller;
        // SAFETY: fd belongs to a channel in the map; it is deleted from the
        // poller before removal (remove/unregister), and stale numbers are
        // re-added fresh (a failing modify falls back to add).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let result = if want == 0 {
            let _ = poller.delete(borrowed);
            reg.in_kernel = false;
            Ok(())
        } else if reg.in_kernel {
            match poller.modify_with_mode(borrowed, event(fd, want), PollMode::Level) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => unsafe {
                    poller.add_with_mode(fd, event(fd, want), PollMode::Level)
                },
                other => other,
            }
        } else {
            match unsafe { poller.add_with_mode(fd, event(fd, want), PollMode::Level) } {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    poller.modify_with_mode(borrowed, event(fd, want), PollMode::Level)
                }
                other => other,
            }
        };
        reg.want = want;
        match result {
            Ok(()) => {
                reg.in_kernel = want != 0;
                Ok(())
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EPERM) => {
                    reg.kernel = Kernel::AlwaysReady;
                    self.special.insert(fd);
                    Ok(())
                }
                // Not an open fd we can watch (closed behind our back, or its
                // number now taken by our own epoll fd).
                Some(libc::EBADF | libc::EINVAL | libc::ELOOP) => {
                    reg.kernel = Kernel::Invalid;
                    self.special.insert(fd);
                    Ok(())
                }
                errno => Err(os_error(py, errno.unwrap_or(libc::EIO))),
            },
        }
    }

    fn put_reg(&mut self, fd: RawFd, reg: Reg) {
        if !reg.tracked {
            self.untracked.insert(fd);
        }
        // A new registration starts with want 0 and outside epoll; apply() counts.
        if let Some(old) = self.regs.insert(fd, reg) {
            self.forget_derived(fd, &old);
        }
    }

    fn take_reg(&mut self, fd: RawFd) -> Option<Reg> {
        let reg = self.regs.remove(&fd)?;
        self.forget_derived(fd, &reg);
        Some(reg)
    }

    fn forget_derived(&mut self, fd: RawFd, reg: &Reg) {
        if reg.want != 0 {
            self.wanting -= 1;
        }
        self.untracked.remove(&fd);
        self.special.remove(&fd);
    }

    fn remove(&mut self, fd: RawFd) {
        if let Some(reg) = self.take_reg(fd) {
            if reg.in_kernel {
                // SAFETY: see apply(); failure means the fd is already gone.
                let _ = self
                    .shared
                    .poller
                    .delete(unsafe { BorrowedFd::borrow_raw(fd) });
            }
            if let Some(n) = reg.notify {
                n.detach(&self.shared);
            }
            self.shared.release(fd);
        }
    }

    fn has_interest(&self) -> bool {
        self.wanting != 0
    }

    // ---------------- waiting

    /// Waits for events with the GIL released; returns (fd, poll flags, the
    /// interest it was registered with).
    ///
    /// Registrations go through the polling crate; the wait itself calls
    /// epoll_wait on the crate's epoll fd, because poll()'s semantics need the
    /// raw flags (POLLIN apart from POLLHUP and POLLPRI), which the crate's
    /// `Event` folds into "readable".
    fn wait(
        &mut self,
        py: Python<'_>,
        timeout: Option<Duration>,
    ) -> PyResult<Vec<(RawFd, u32, u8)>> {
        let mut ready = Vec::new();
        for fd in &self.special {
            let Some(reg) = self.regs.get(fd) else {
                continue;
            };
            match reg.kernel {
                Kernel::AlwaysReady if reg.want != 0 => {
                    let mut f = 0;
                    if reg.want & WANT_R != 0 {
                        f |= POLLIN;
                    }
                    if reg.want & WANT_W != 0 {
                        f |= POLLOUT;
                    }
                    ready.push((*fd, f, reg.want));
                }
                Kernel::Invalid if reg.want != 0 => ready.push((*fd, POLLNVAL, reg.want)),
                _ => {}
            }
        }
        let timeout = if ready.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let epfd = self.shared.poller.as_raw_fd();
        let cap = self.events.capacity();
        let n = loop {
            let ms = deadline.map_or(-1, |d| {
                // Round up: a 0.1 ms select() timeout must not become a busy loop.
                let left = d.saturating_duration_since(Instant::now());
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            });
            let buf = self.events.as_mut_ptr() as usize;
            // SAFETY: `buf` has room for `cap` events; the GIL is not needed.
            let n = py.detach(move || unsafe {
                libc::epoll_wait(epfd, buf as *mut libc::epoll_event, cap as i32, ms)
            });
            if n >= 0 {
                break n as usize;
            }
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno != libc::EINTR {
                return Err(os_error(py, errno));
            }
            // PEP 475: run the signal handlers, then wait for what is left.
            py.check_signals()?;
        };
        // SAFETY: epoll_wait initialised the first n entries.
        unsafe { self.events.set_len(n) };
        for ev in self.events.drain(..) {
            let (flags, key) = (ev.events, ev.u64);
            let Ok(fd) = RawFd::try_from(key) else {
                continue;
            };
            let Some(reg) = self.regs.get(&fd) else {
                continue;
            };
            ready.push((fd, poll_flags(flags, reg.want), reg.want));
        }
        Ok(ready)
    }

    /// The channel an event on `fd` goes to: `map.get(...)` as CPython looks
    /// it up (select() returns the keys it was given, poll() int fds), and
    /// only if it is still the channel that was polled: an fd number closed
    /// and reused within the pass does not inherit the old socket's events.
    fn target<'py>(
        &self,
        py: Python<'py>,
        map: &Bound<'py, PyAny>,
        fd: RawFd,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(reg) = self.regs.get(&fd) else {
            return Ok(None);
        };
        let obj = match self.mode {
            Mode::Select => map_get(map, reg.key.bind(py), self.plain_get)?,
            Mode::Poll => map_get(map, fd.into_pyobject(py)?.as_any(), self.plain_get)?,
        };
        let polled = self.shared.obj(py, fd);
        Ok(obj.filter(|o| polled.is_some_and(|p| p.bind(py).is(o))))
    }

    /// After a pass: channels that left the poller (del_channel) are dropped
    /// now, so nothing here keeps a closed channel alive. If one is back in the
    /// map, the next pass registers it again.
    fn settle(&mut self, py: Python<'_>) {
        let gone = std::mem::take(&mut *lock(&self.shared.gone));
        for fd in gone {
            if let Some(reg) = self.take_reg(fd) {
                if let Some(n) = &reg.notify {
                    n.detach(&self.shared);
                }
                self.recheck.push(reg.key.clone_ref(py));
            }
        }
    }
}

impl Drop for LoopState {
    fn drop(&mut self) {
        for reg in self.regs.values() {
            if let Some(n) = &reg.notify {
                n.detach(&self.shared);
            }
        }
    }
}

fn event(fd: RawFd, want: u8) -> Event {
    let mut ev = Event::new(fd as usize, want & WANT_R != 0, want & WANT_W != 0);
    ev.set_priority(want & WANT_P != 0);
    ev
}

/// poll(2)'s flags for epoll's (the bits are the same on Linux), limited to
/// what was asked for; HUP and ERR are always reported, as poll() does.
fn poll_flags(epoll: u32, want: u8) -> u32 {
    let mut f = epoll & (POLLHUP | POLLERR);
    if want & WANT_R != 0 {
        f |= epoll & POLLIN;
    }
    if want & WANT_W != 0 {
        f |= epoll & POLLOUT;
    }
    if want & WANT_P != 0 {
        f |= epoll & POLLPRI;
    }
    f
}

// ------------------------------------------------------------ interest

/// The interest CPython's poll()/poll2() would compute for `obj` this pass.
fn interest(py: Python<'_>, obj: &Bound<'_, PyAny>, mode: Mode) -> PyResult<u8> {
    let d = obj.cast::<Dispatcher>().ok();
    let (r, w) = match d {
        Some(d) => (readable_of(d)?, writable_of(d)?),
        None => (
            obj.call_method0(intern!(py, "readable"))?.is_truthy()?,
            obj.call_method0(intern!(py, "writable"))?.is_truthy()?,
        ),
    };
    // "accepting sockets should not be writable"
    let w_ok = w
        && !match d {
            Some(d) => accepting(d)?,
            None => obj.getattr(intern!(py, "accepting"))?.is_truthy()?,
        };
    let mut want = 0;
    if r {
        want |= WANT_R;
    }
    if w_ok {
        want |= WANT_W;
    }
    match mode {
        Mode::Select if r || w => want |= WANT_P,
        Mode::Poll if r => want |= WANT_P,
        _ => {}
    }
    Ok(want)
}

fn readable_of(d: &Bound<'_, Dispatcher>) -> PyResult<bool> {
    let py = d.py();
    let name = intern!(py, "readable");
    if has_builtin(d, name, name) || has_builtin(d, name, intern!(py, "_ac_readable")) {
        return Ok(true);
    }
    d.call_method0(name)?.is_truthy()
}

fn writable_of(d: &Bound<'_, Dispatcher>) -> PyResult<bool> {
    let py = d.py();
    let name = intern!(py, "writable");
    if has_builtin(d, name, name) {
        return Ok(true);
    }
    if has_builtin(d, name, intern!(py, "_ws_writable")) {
        return Ok(!connected(d)? || out_buffer_of(d)?.len()? > 0);
    }
    if has_builtin(d, name, intern!(py, "_ac_writable")) {
        return Ok(producer_fifo_of(d)?.is_truthy()? || !connected(d)?);
    }
    d.call_method0(name)?.is_truthy()
}

/// Which built-in `writable()` a tracked channel has.
#[derive(Clone, Copy)]
enum WKind {
    Always,
    WithSend,
    Chat,
}

/// The interest of a tracked channel, from its Rust fields alone.
fn tracked_interest(d: &Bound<'_, Dispatcher>, kind: WKind, mode: Mode) -> u8 {
    let py = d.py();
    let me = d.get();
    let st = me.st();
    let w = match kind {
        WKind::Always => true,
        WKind::WithSend => {
            !st.connected
                || st.out_buffer.as_ref().is_some_and(|b| {
                    b.bind(py)
                        .cast::<pyo3::types::PyBytes>()
                        .map_or(true, |b| !b.as_bytes().is_empty())
                })
        }
        WKind::Chat => {
            !st.connected
                || st.producer_fifo.as_ref().is_some_and(|f| {
                    f.bind(py)
                        .cast::<Fifo>()
                        .map_or(true, |f| !f.get().is_empty())
                })
        }
    };
    let mut want = WANT_R;
    if w && !st.accepting {
        want |= WANT_W;
    }
    if mode == Mode::Select || want & WANT_R != 0 {
        want |= WANT_P;
    }
    want
}

/// Some(kind) when Rust can know `obj`'s interest without asking Python:
/// built-in readable/writable, and the state they read held in Rust.
fn trackable(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Option<WKind> {
    let d = obj.cast::<Dispatcher>().ok()?;
    let r = intern!(py, "readable");
    let w = intern!(py, "writable");
    if !(has_builtin(d, r, r) || has_builtin(d, r, intern!(py, "_ac_readable"))) {
        return None;
    }
    if !(Dispatcher::is_direct(d, F_CONNECTED) && Dispatcher::is_direct(d, F_ACCEPTING)) {
        return None;
    }
    if has_builtin(d, w, w) {
        Some(WKind::Always)
    } else if has_builtin(d, w, intern!(py, "_ws_writable")) {
        (Dispatcher::is_direct(d, F_OUT)
            && out_buffer_of(d).is_ok_and(|b| b.is_exact_instance_of::<pyo3::types::PyBytes>()))
        .then_some(WKind::WithSend)
    } else if has_builtin(d, w, intern!(py, "_ac_writable")) {
        (Dispatcher::is_direct(d, F_FIFO)
            && producer_fifo_of(d).is_ok_and(|f| f.cast::<Fifo>().is_ok()))
        .then_some(WKind::Chat)
    } else {
        None
    }
}

// ------------------------------------------------------------ helpers

/// The error select()/poll() raise for a key that is no usable fd.
#[cold]
fn bad_key(fd: PyResult<RawFd>) -> PyErr {
    match fd {
        Err(e) => e,
        Ok(fd) => PyValueError::new_err(format!(
            "file descriptor cannot be a negative integer ({fd})"
        )),
    }
}

fn as_fd(key: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    if let Ok(i) = key.cast::<PyInt>() {
        return i.extract::<RawFd>();
    }
    // SAFETY: GIL held; returns -1 with an exception set on failure.
    let fd = unsafe { ffi::PyObject_AsFileDescriptor(key.as_ptr()) };
    if fd == -1 {
        return Err(PyErr::take(key.py()).unwrap_or_else(|| {
            PyTypeError::new_err("argument must be an int, or have a fileno() method.")
        }));
    }
    Ok(fd)
}

/// `map.get(key)`.
/// `plain_get`: the map is a dict whose `get` is dict's own (an exact dict, or
/// our SocketMap), so the C-level lookup is the same call.
fn map_get<'py>(
    map: &Bound<'py, PyAny>,
    key: &Bound<'py, PyAny>,
    plain_get: bool,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let (true, Ok(d)) = (plain_get, map.cast::<PyDict>()) {
        return d.get_item(key);
    }
    let v = map.call_method1(intern!(map.py(), "get"), (key,))?;
    Ok((!v.is_none()).then_some(v))
}

// ------------------------------------------------------------ cache

struct Cache {
    idle: Vec<LoopState>,
    busy: Vec<usize>,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    idle: Vec::new(),
    busy: Vec::new(),
});
const CACHE_SIZE: usize = 8;

/// A loop state checked out for one map; returned to the cache on drop.
struct Checkout {
    state: Option<LoopState>,
}

impl Checkout {
    fn get(py: Python<'_>, map: &Bound<'_, PyAny>, mode: Mode) -> PyResult<Self> {
        let key = map.as_ptr() as usize;
        let found = {
            let mut cache = lock(&CACHE);
            if cache.busy.contains(&key) {
                // Nested poll of a map being polled: a throw-away state that
                // asks every channel, so the outer state keeps its links.
                None
            } else {
                cache.busy.push(key);
                Some(
                    cache
                        .idle
                        .iter()
                        .position(|s| s.map.as_ptr() as usize == key)
                        .map(|i| cache.idle.remove(i)),
                )
            }
        };
        let state = match found {
            None => LoopState::new(py, map, mode, false)?,
            Some(Some(s)) => s,
            Some(None) => match LoopState::new(py, map, mode, true) {
                Ok(s) => s,
                Err(e) => {
                    lock(&CACHE).busy.retain(|k| *k != key);
                    return Err(e);
                }
            },
        };
        Ok(Checkout { state: Some(state) })
    }

    fn state(&mut self) -> &mut LoopState {
        self.state.as_mut().expect("checked out")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        if !state.persistent {
            return;
        }
        if matches!(state.kind, MapKind::Other) {
            // Any other mapping (e.g. a WeakValueDictionary) is re-read every
            // pass anyway; keeping its channels alive here would be a leak.
            lock(&CACHE)
                .busy
                .retain(|k| *k != state.map.as_ptr() as usize);
            return;
        }
        let evicted = {
            let mut cache = lock(&CACHE);
            let key = state.map.as_ptr() as usize;
            cache.busy.retain(|k| *k != key);
            cache.idle.push(state);
            if cache.idle.len() > CACHE_SIZE {
                Some(cache.idle.remove(0))
            } else {
                None
            }
        };
        drop(evicted);
    }
}

/// Forgets the loop state of `map` (close_all empties it).
fn forget(map: &Bound<'_, PyAny>) {
    let key = map.as_ptr() as usize;
    let evicted: Vec<LoopState> = {
        let mut cache = lock(&CACHE);
        let (gone, keep) = std::mem::take(&mut cache.idle)
            .into_iter()
            .partition(|s| s.map.as_ptr() as usize == key);
        cache.idle = keep;
        gone
    };
    drop(evicted);
}

// ------------------------------------------------------------ passes

/// Which module-level handlers poll() must call (they may be replaced).
struct Hooks<'py> {
    read: Option<Bound<'py, PyAny>>,
    write: Option<Bound<'py, PyAny>>,
    exception: Option<Bound<'py, PyAny>>,
    readwrite: Option<Bound<'py, PyAny>>,
}

impl<'py> Hooks<'py> {
    fn load(py: Python<'py>) -> PyResult<Self> {
        let st = state(py)?;
        let pick = |name: &Bound<'py, PyString>,
                    orig: &Py<PyAny>|
         -> PyResult<Option<Bound<'py, PyAny>>> {
            let cur = global(py, name)?;
            Ok((!cur.is(orig.bind(py))).then_some(cur))
        };
        Ok(Hooks {
            read: pick(intern!(py, "read"), &st.read)?,
            write: pick(intern!(py, "write"), &st.write)?,
            exception: pick(intern!(py, "_exception"), &st.exception)?,
            readwrite: pick(intern!(py, "readwrite"), &st.readwrite)?,
        })
    }
}

/// select()'s timeout argument.
fn select_timeout(t: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    // CPython converts to a nanosecond _PyTime_t (an i64) first.
    const MAX_SECS: f64 = 9.223_372_036e9;
    if t.is_none() {
        return Ok(None);
    }
    let too_large = || PyOverflowError::new_err("timestamp too large to convert to C _PyTime_t");
    if t.is_instance_of::<PyInt>() {
        let secs: i64 = t.extract().map_err(|_| too_large())?;
        if secs < 0 {
            return Err(PyValueError::new_err("timeout must be non-negative"));
        }
        if secs as f64 > MAX_SECS {
            return Err(too_large());
        }
        return Ok(Some(Duration::from_secs(secs as u64)));
    }
    let secs: f64 = t
        .extract()
        .map_err(|_| PyTypeError::new_err("timeout must be a float or None"))?;
    if secs.is_nan() {
        return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
    }
    if !secs.is_finite() || secs.abs() > MAX_SECS {
        return Err(PyOverflowError::new_err(
            "timestamp out of range for platform time_t",
        ));
    }
    if secs < 0.0 {
        return Err(PyValueError::new_err("timeout must be non-negative"));
    }
    Ok(Some(
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
    ))
}

/// poll()'s millisecond timeout: None or negative waits forever; too large
/// raises the OverflowError select.poll().poll() raises.
fn poll_timeout(ms: Option<i64>) -> PyResult<Option<Duration>> {
    match ms {
        Some(ms) if !(i64::MIN / 1_000_000..=i64::MAX / 1_000_000).contains(&ms) => Err(
            PyOverflowError::new_err("timestamp too large to convert to C _PyTime_t"),
        ),
        Some(ms) if ms > i64::from(i32::MAX) => {
            Err(PyOverflowError::new_err("timeout is too large"))
        }
        Some(ms) if ms >= 0 => Ok(Some(Duration::from_millis(ms as u64))),
        _ => Ok(None),
    }
}

/// One pass of CPython's `poll()` (the select path).
fn pass_select(py: Python<'_>, st: &mut LoopState, timeout: &Bound<'_, PyAny>) -> PyResult<()> {
    st.sync(py, Mode::Select)?;
    if !st.has_interest() {
        global(py, intern!(py, "time"))?.call_method1(intern!(py, "sleep"), (timeout,))?;
        return Ok(());
    }
    let t = select_timeout(timeout)?;
    let ready = st.wait(py, t)?;
    let hooks = Hooks::load(py)?;
    let map = st.map.bind(py).clone();
    let mut rl = Vec::new();
    let mut wl = Vec::new();
    let mut el = Vec::new();
    for &(fd, f, want) in &ready {
        if want & WANT_R != 0 && f & (POLLIN | POLLHUP | POLLERR) != 0 {
            rl.push(fd);
        }
        if want & WANT_W != 0 && f & (POLLOUT | POLLERR) != 0 {
            wl.push(fd);
        }
        if want & WANT_P != 0 && f & POLLPRI != 0 {
            el.push(fd);
        }
    }
    for (list, which) in [(rl, 0u8), (wl, 1), (el, 2)] {
        for fd in list {
            let Some(obj) = st.target(py, &map, fd)? else {
                continue;
            };
            let hook = match which {
                0 => hooks.read.as_ref(),
                1 => hooks.write.as_ref(),
                _ => hooks.exception.as_ref(),
            };
            if let Some(h) = hook {
                h.call1((&obj,))?;
            } else {
                let method = match which {
                    0 => intern!(py, "handle_read_event"),
                    1 => intern!(py, "handle_write_event"),
                    _ => intern!(py, "handle_expt_event"),
                };
                guarded(py, &obj, method)?;
            }
        }
    }
    st.settle(py);
    Ok(())
}

/// One pass of CPython's `poll2()` (the poll path).
fn pass_poll(py: Python<'_>, st: &mut LoopState, ms: Option<i64>) -> PyResult<()> {
    st.sync(py, Mode::Poll)?;
    let ready = st.wait(py, poll_timeout(ms)?)?;
    let hooks = Hooks::load(py)?;
    let map = st.map.bind(py).clone();
    for (fd, flags, _) in ready {
        let Some(obj) = st.target(py, &map, fd)? else {
            continue;
        };
        match &hooks.readwrite {
            Some(h) => {
                h.call1((&obj, flags))?;
            }
            None => do_readwrite(py, &obj, flags)?,
        }
    }
    st.settle(py);
    Ok(())
}

/// `obj.<method>()` with CPython's read()/write()/_exception() error routing.
fn guarded(py: Python<'_>, obj: &Bound<'_, PyAny>, method: &Bound<'_, PyString>) -> PyResult<()> {
    match dispatching(py, || call_event(obj, method)) {
        Ok(()) => Ok(()),
        Err(e) => handle_failure(py, obj, e),
    }
}

/// `obj.<method>()`; our own handle_read_event / handle_write_event run
/// directly when the object has not overridden them.
fn call_event(obj: &Bound<'_, PyAny>, method: &Bound<'_, PyString>) -> PyResult<()> {
    if let Ok(d) = obj.cast::<Dispatcher>() {
        if has_builtin(d, method, method) {
            let py = obj.py();
            if method.is(intern!(py, "handle_read_event")) {
                return Dispatcher::read_event(d);
            }
            if method.is(intern!(py, "handle_write_event")) {
                return Dispatcher::write_event(d);
            }
        }
    }
    obj.call_method0(method).map(drop)
}

#[cold]
fn handle_failure(py: Python<'_>, obj: &Bound<'_, PyAny>, e: PyErr) -> PyResult<()> {
    if is_reraised(py, &e)? {
        return Err(e);
    }
    call_in_except(py, obj, intern!(py, "handle_error"), e)
}

fn do_readwrite(py: Python<'_>, obj: &Bound<'_, PyAny>, flags: u32) -> PyResult<()> {
    let run = || -> PyResult<()> {
        if flags & POLLIN != 0 {
            call_event(obj, intern!(py, "handle_read_event"))?;
        }
        if flags & POLLOUT != 0 {
            call_event(obj, intern!(py, "handle_write_event"))?;
        }
        if flags & POLLPRI != 0 {
            obj.call_method0(intern!(py, "handle_expt_event"))?;
        }
        if flags & (POLLHUP | POLLERR | POLLNVAL) != 0 {
            obj.call_method0(intern!(py, "handle_close"))?;
        }
        Ok(())
    };
    match dispatching(py, run) {
        Ok(()) => Ok(()),
        Err(e) => readwrite_failure(py, obj, e),
    }
}

/// poll2's routing: a disconnect OSError goes to handle_close, others to
/// handle_error (CPython's readwrite; the select path differs on purpose).
#[cold]
fn readwrite_failure(py: Python<'_>, obj: &Bound<'_, PyAny>, e: PyErr) -> PyResult<()> {
    if let Some(errno) = errno_of(py, &e) {
        let method = if is_disconnect(py, errno)? {
            intern!(py, "handle_close")
        } else {
            intern!(py, "handle_error")
        };
        return call_in_except(py, obj, method, e);
    }
    handle_failure(py, obj, e)
}

fn poll_ms(timeout: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    if timeout.is_none() {
        return Ok(None);
    }
    // `int(timeout*1000)`, as CPython writes it.
    let ms = if let Ok(f) = timeout.cast::<PyFloat>() {
        let v = f.value() * 1000.0;
        if v.is_finite() {
            return Ok(Some(
                v.trunc().clamp(i64::MIN as f64, i64::MAX as f64) as i64
            ));
        }
        timeout.mul(1000)?
    } else {
        timeout.mul(1000)?
    };
    let ms = timeout.py().get_type::<PyInt>().call1((ms,))?;
    Ok(Some(ms.extract::<i64>().unwrap_or(i64::MAX)))
}

// ------------------------------------------------------------ Python API

/// `asyncore.poll(timeout, map)` (the Python wrapper supplies defaults).
#[pyfunction]
pub fn poll(py: Python<'_>, timeout: &Bound<'_, PyAny>, map: &Bound<'_, PyAny>) -> PyResult<()> {
    let map = resolve_map(py, map)?;
    if !map.is_truthy()? {
        return Ok(());
    }
    let mut c = Checkout::get(py, &map, Mode::Select)?;
    pass_select(py, c.state(), timeout)
}

/// `asyncore.poll2(timeout, map)`.
#[pyfunction]
pub fn poll2(py: Python<'_>, timeout: &Bound<'_, PyAny>, map: &Bound<'_, PyAny>) -> PyResult<()> {
    let map = resolve_map(py, map)?;
    let ms = poll_ms(timeout)?;
    if !map.is_truthy()? {
        return Ok(());
    }
    let mut c = Checkout::get(py, &map, Mode::Poll)?;
    pass_poll(py, c.state(), ms)
}

fn resolve_map<'py>(py: Python<'py>, map: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if map.is_none() {
        global(py, intern!(py, "socket_map"))
    } else {
        Ok(map.clone())
    }
}

/// `asyncore.loop(timeout, use_poll, map, count)`.
#[pyfunction]
#[pyo3(name = "loop")]
pub fn loop_(
    py: Python<'_>,
    timeout: &Bound<'_, PyAny>,
    use_poll: &Bound<'_, PyAny>,
    map: &Bound<'_, PyAny>,
    count: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let map = resolve_map(py, map)?;
    let st = state(py)?;
    let use_poll2 =
        use_poll.is_truthy()? && global(py, intern!(py, "select"))?.hasattr(intern!(py, "poll"))?;
    let (poll_fun, original) = if use_poll2 {
        (global(py, intern!(py, "poll2"))?, st.poll2.bind(py).clone())
    } else {
        (global(py, intern!(py, "poll"))?, st.poll.bind(py).clone())
    };
    let mode = if use_poll2 { Mode::Poll } else { Mode::Select };
    let mut checkout: Option<Checkout> = None;
    let ms = if use_poll2 && poll_fun.is(&original) {
        poll_ms(timeout)?
    } else {
        None
    };
    let mut remaining = count.clone();
    let counted = !count.is_none();
    loop {
        if !map.is_truthy()? {
            break;
        }
        if counted && !remaining.gt(0)? {
            break;
        }
        if poll_fun.is(&original) {
            let c = match &mut checkout {
                Some(c) => c,
                None => checkout.insert(Checkout::get(py, &map, mode)?),
            };
            let state = c.state();
            match mode {
                Mode::Select => pass_select(py, state, timeout)?,
                Mode::Poll => pass_poll(py, state, ms)?,
            }
            if matches!(state.kind, MapKind::Other) {
                checkout = None; // holds no channel between passes (see Drop)
            }
        } else {
            poll_fun.call1((timeout, &map))?;
        }
        if counted {
            remaining = remaining.sub(1)?;
        }
    }
    Ok(())
}

#[pyfunction]
pub fn read(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    guarded(py, obj, intern!(py, "handle_read_event"))
}

#[pyfunction]
pub fn write(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    guarded(py, obj, intern!(py, "handle_write_event"))
}

#[pyfunction]
#[pyo3(name = "_exception")]
pub fn exception(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    guarded(py, obj, intern!(py, "handle_expt_event"))
}

#[pyfunction]
pub fn readwrite(py: Python<'_>, obj: &Bound<'_, PyAny>, flags: &Bound<'_, PyAny>) -> PyResult<()> {
    match flags.extract::<i64>() {
        Ok(f) => do_readwrite(py, obj, (f & 0xffff) as u32),
        // `flags & select.POLLIN` fails inside CPython's try: handle_error().
        Err(_) => match flags.bitand(POLLIN) {
            Ok(_) => do_readwrite(py, obj, 0),
            Err(e) => readwrite_failure(py, obj, e),
        },
    }
}

/// `asyncore.close_all(map, ignore_all)`.
#[pyfunction]
pub fn close_all(
    py: Python<'_>,
    map: &Bound<'_, PyAny>,
    ignore_all: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let map = resolve_map(py, map)?;
    let ignore_all = ignore_all.is_truthy()?;
    let values: Vec<Bound<PyAny>> = map
        .call_method0(intern!(py, "values"))?
        .try_iter()?
        .collect::<PyResult<_>>()?;
    for x in values {
        if let Err(e) = x.call_method0(intern!(py, "close")) {
            if e.is_instance_of::<pyo3::exceptions::PyOSError>(py) {
                if errno_of(py, &e) == Some(libc::EBADF) || ignore_all {
                    continue;
                }
                return Err(e);
            }
            if is_reraised(py, &e)? || !ignore_all {
                return Err(e);
            }
        }
    }
    map.call_method0(intern!(py, "clear"))?;
    forget(&map);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_flags_keep_only_what_was_asked_plus_hup_and_err() {
        let all = POLLIN | POLLPRI | POLLOUT | POLLERR | POLLHUP;
        assert_eq!(poll_flags(all, WANT_R), POLLIN | POLLERR | POLLHUP);
        assert_eq!(poll_flags(all, WANT_W), POLLOUT | POLLERR | POLLHUP);
        assert_eq!(poll_flags(all, WANT_P), POLLPRI | POLLERR | POLLHUP);
        // A pipe whose writer closed: poll(2) says POLLHUP only, and so do we.
        assert_eq!(poll_flags(POLLHUP, WANT_R | WANT_P), POLLHUP);
        assert_eq!(
            poll_flags(POLLIN | POLLOUT, WANT_R | WANT_W),
            POLLIN | POLLOUT
        );
    }

    #[test]
    fn epoll_bits_are_poll_bits() {
        // poll_flags relies on epoll and poll sharing these values on Linux.
        assert_eq!(libc::EPOLLIN as u32, POLLIN);
        assert_eq!(libc::EPOLLPRI as u32, POLLPRI);
        assert_eq!(libc::EPOLLOUT as u32, POLLOUT);
        assert_eq!(libc::EPOLLERR as u32, POLLERR);
        assert_eq!(libc::EPOLLHUP as u32, POLLHUP);
    }

    #[test]
    fn fd_hasher_is_identity_for_fds() {
        let mut h = FdHasher::default();
        h.write_i32(1234);
        assert_eq!(h.finish(), 1234);
        let mut set = FdSet::default();
        assert!(set.insert(3) && set.insert(1 << 20) && !set.insert(3));
    }

    #[test]
    fn poll_timeouts_follow_select_poll() {
        assert_eq!(poll_timeout(None).ok(), Some(None));
        assert_eq!(poll_timeout(Some(-1)).ok(), Some(None));
        assert_eq!(
            poll_timeout(Some(1500)).ok(),
            Some(Some(Duration::from_millis(1500)))
        );
        assert!(poll_timeout(Some(i64::from(i32::MAX) + 1)).is_err());
        assert!(poll_timeout(Some(i64::MAX)).is_err());
    }
}
