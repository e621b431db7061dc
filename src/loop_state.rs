//! The state the loop keeps for one map between passes: the poller, the
//! registrations, and what it needs to bring them up to date with the map.
//!
//! CPython rebuilds the whole poll set every pass, calling `readable()` and
//! `writable()` on every channel. Here a `LoopState` per map keeps the poller
//! and its registrations across passes and changes them only where something
//! changed: map entries written (tracked by `SocketMap`, or found by comparing
//! a plain dict with the last pass), channels whose interest state changed
//! (they tell us through `ChannelNotify`), and channels whose `readable()` /
//! `writable()` are Python overrides (called every pass, as CPython does).

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use polling::{PollMode, Poller};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList};

use crate::channel::Dispatcher;
use crate::errors::os_error;
use crate::fd_map::{FdHash, FdMap, FdSet};
use crate::interest::{interest, trackable, tracked_interest, Mode, WKind};
use crate::link::{lock, ChannelNotify, LoopShared};
use crate::poller::{event, poll_flags, POLLIN, POLLNVAL, POLLOUT, WANT_R, WANT_W};

pub enum MapKind {
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

pub struct LoopState {
    pub map: Py<PyAny>,
    pub kind: MapKind,
    /// `map.get(k)` may be done as a C-level dict lookup (see map_get).
    plain_get: bool,
    mode: Mode,
    pub persistent: bool,
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
    pub fn new(
        py: Python<'_>,
        map: &Bound<'_, PyAny>,
        mode: Mode,
        persistent: bool,
    ) -> PyResult<Self> {
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

    pub fn sync(&mut self, py: Python<'_>, mode: Mode) -> PyResult<()> {
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

    pub fn has_interest(&self) -> bool {
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
    pub fn wait(
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
    pub fn target<'py>(
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
    pub fn settle(&mut self, py: Python<'_>) {
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
