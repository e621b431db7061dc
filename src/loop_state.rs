//! Owns the state the loop keeps for one map between passes, and bringing
//! its registrations up to date with the map.
//!
//! CPython rebuilds the whole poll set every pass, calling `readable()` and
//! `writable()` on every channel. Here a `LoopState` per map keeps the poller
//! and its registrations across passes and changes them only where something
//! changed: map entries written (logged by `SocketMap`, or found by comparing
//! a plain dict with the last pass), channels whose interest may have changed
//! (they tell us through their `ChannelLink`), and channels whose `readable()` /
//! `writable()` are Python overrides (called every pass, as CPython does).
//!
//! Uses: channel, fd_map, interest, names, registrations, socket_map.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt};
use pyo3::{PyTraverseError, PyVisit};

use crate::channel::Dispatcher;
use crate::fd_map::{FdHash, FdSet, RawFd};
use crate::interest::{derivable, derived_interest, interest, Mode};
use crate::names;
use crate::registrations::{Refresh, Registrations};
use crate::socket_map::{self, ChangeLog, Changes};

enum MapKind {
    /// Our `SocketMap`: its change log lists the keys written since the last pass.
    Logged(Py<ChangeLog>),
    /// A dict: compared entry by entry with the last pass (pointer equality).
    Dict,
    /// Any other mapping: re-read in full every pass.
    Other,
}

pub struct LoopState {
    map: Py<PyAny>,
    kind: MapKind,
    /// `map.get(k)` may be done as a C-level dict lookup (see map_get).
    plain_get: bool,
    mode: Mode,
    /// Kept between calls (loop_cache.rs), with links from its channels.
    persistent: bool,
    fresh: bool,
    regs: Registrations,
    snapshot: Vec<(usize, usize)>,
    /// Map entries whose key is no usable fd (None, a str, a negative int):
    /// select()/poll() only fail on them once their channel wants events.
    unkeyed: Vec<(Py<PyAny>, Py<PyAny>, u64)>,
    /// Keys whose channel left the poller during the last pass.
    recheck: Vec<Py<PyAny>>,
    pass: u64,
    /// `socket_map::writes()` at the start of the last sync, which left the
    /// registrations exactly as the map was then (the map watched, so its
    /// log complete); 0 when not known. While the count is still this, no
    /// write has been made since (see `target`).
    synced_at: u64,
    /// The map is watched for this state (socket_map.rs `watch`).
    watched: bool,
    /// The Python object that holds this state between calls (loop_cache.rs),
    /// while it is checked out: every channel linked to this state keeps it
    /// alive (link.rs). None while the holder itself keeps the state, so the
    /// state never holds its own holder.
    pub holder: Option<Py<PyAny>>,
}

impl LoopState {
    pub fn new(
        py: Python<'_>,
        map: &Bound<'_, PyAny>,
        mode: Mode,
        persistent: bool,
    ) -> PyResult<Self> {
        let ours = map.get_type().hasattr(names::_asyncore_rs_change_log(py))?;
        // The log has one reader: the state kept for the map. A throw-away
        // state (a pass nested in a handler) that took its keys would hide
        // them from that one, which would then miss a channel added or
        // removed just before the nested pass.
        let kind = if ours && persistent {
            let changes = map.getattr(names::_changes(py))?;
            MapKind::Logged(changes.cast_into::<ChangeLog>()?.unbind())
        } else if map.is_instance_of::<PyDict>() {
            MapKind::Dict
        } else {
            MapKind::Other
        };
        let plain_get = ours || map.is_exact_instance_of::<PyDict>();
        // Before the first sync (a full read of the map): no write after it
        // goes unnoted.
        let watched = match &kind {
            MapKind::Logged(changes) => socket_map::watch(map, changes.bind(py)),
            _ => false,
        };
        Ok(LoopState {
            map: map.clone().unbind(),
            kind,
            plain_get,
            mode,
            persistent,
            fresh: true,
            regs: Registrations::new(py)?,
            snapshot: Vec::new(),
            unkeyed: Vec::new(),
            recheck: Vec::new(),
            pass: 0,
            synced_at: 0,
            watched,
            holder: None,
        })
    }

    /// The map this state polls.
    pub fn map<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.map.bind(py)
    }

    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// Whether every pass re-reads the whole map anyway (neither our
    /// `SocketMap` nor a dict): keeping the state between calls gains nothing.
    pub fn rereads_everything(&self) -> bool {
        matches!(self.kind, MapKind::Other)
    }

    // ---------------- bringing registrations up to date

    pub fn sync(&mut self, py: Python<'_>, mode: Mode) -> PyResult<()> {
        self.pass += 1;
        let writes = socket_map::writes();
        let r = self.sync_inner(py, mode);
        if r.is_err() {
            self.fresh = true; // start over from the map next time
        }
        // The log had every write up to the sync's start (the map is
        // watched), and the sync read what it noted. A write during the sync
        // (a readable() that edits the map) is only in the next pass's log,
        // but it also moves the count past `writes`, which `target` compares.
        self.synced_at = if self.watched && r.is_ok() { writes } else { 0 };
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
        for fd in self.regs.take_dirty() {
            if !self.regs.contains(fd) {
                continue;
            }
            let Some(obj) = self.regs.channel(py, fd) else {
                continue;
            };
            self.refresh_one(py, fd, obj.bind(py))?;
        }
        self.refresh_asked_each_pass(py)
    }

    /// Whether entries were added, removed or replaced; for a logged map the
    /// written keys are examined here instead.
    fn membership_changed(&mut self, py: Python<'_>, map: &Bound<'_, PyAny>) -> PyResult<bool> {
        match &self.kind {
            MapKind::Logged(changes) => match changes.get().take() {
                Changes::Nothing => Ok(false),
                Changes::Everything => Ok(true),
                Changes::Keys(keys) => {
                    for key in keys {
                        self.examine(py, map, key.bind(py), false)?;
                    }
                    Ok(false)
                }
            },
            MapKind::Dict => Ok(!self.dict_unchanged(map)),
            MapKind::Other => Ok(true),
        }
    }

    /// Compares the dict's (key, value) pointers with the last pass's. A
    /// pointer cannot be reused behind our back: registrations (keys, and the
    /// channels in `LoopShared::regs`) and `unkeyed` hold references, and a
    /// channel released by del_channel() is re-examined (`recheck`), which
    /// rebuilds the snapshot.
    fn dict_unchanged(&self, map: &Bound<'_, PyAny>) -> bool {
        let mut i = 0;
        let mut pos: ffi::Py_ssize_t = 0;
        let mut k: *mut ffi::PyObject = std::ptr::null_mut();
        let mut v: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: the GIL is held and `map` is a live dict or dict subclass
        // (MapKind::Dict: is_instance_of::<PyDict>), whose storage PyDict_Next
        // walks; it runs no Python code, so the dict cannot change during the
        // walk. It returns borrowed pointers that are only compared, never
        // dereferenced.
        while unsafe { ffi::PyDict_Next(map.as_ptr(), &raw mut pos, &raw mut k, &raw mut v) } != 0 {
            if self.snapshot.get(i) != Some(&(k as usize, v as usize)) {
                return false;
            }
            i += 1;
        }
        i == self.snapshot.len()
    }

    fn full_resync(&mut self, py: Python<'_>, map: &Bound<'_, PyAny>) -> PyResult<()> {
        if let MapKind::Logged(changes) = &self.kind {
            drop(changes.get().take());
        }
        let items: Vec<(Bound<PyAny>, Bound<PyAny>)> = map
            .call_method0(names::items(py))?
            .try_iter()?
            .map(|kv| kv.and_then(|kv| kv.extract()))
            .collect::<PyResult<_>>()?;
        // Only a plain dict is compared with the snapshot (dict_unchanged);
        // for the others it would be 16 bytes per channel kept for nothing.
        let keep_snapshot = matches!(self.kind, MapKind::Dict);
        self.snapshot.clear();
        if !keep_snapshot {
            self.snapshot.shrink_to_fit();
        }
        self.unkeyed.clear();
        let mut seen: FdSet = FdSet::with_capacity_and_hasher(items.len(), FdHash::default());
        self.regs.reserve_for(items.len());
        for (key, obj) in &items {
            if keep_snapshot {
                self.snapshot
                    .push((key.as_ptr() as usize, obj.as_ptr() as usize));
            }
            if let Some(fd) = self.place(py, key, obj, true)? {
                seen.insert(fd);
            }
        }
        for fd in self.regs.stale(&seen) {
            self.regs.remove(fd);
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
                        .key(py, fd)
                        .is_some_and(|k| k.bind(py).eq(key).unwrap_or(false))
                    {
                        self.regs.remove(fd);
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
        let same = self.regs.contains(fd)
            && self
                .regs
                .channel(py, fd)
                .is_some_and(|o| o.bind(py).is(obj));
        if same {
            if recheck {
                self.refresh_one(py, fd, obj)?;
            }
            return Ok(Some(fd));
        }
        if self.regs.contains(fd) {
            self.regs.remove(fd);
        }
        // Every dispatcher of a persistent state gets a link back (for
        // del_channel); the interest of some of them Rust can derive.
        let linked = match obj.cast::<Dispatcher>() {
            Ok(d) if self.persistent => Some(d),
            _ => None,
        };
        let derived = match derivable(py, obj) {
            Some(k) if linked.is_some() => Some(k),
            _ => None,
        };
        if let Some(d) = linked {
            let holder = self.holder.as_ref().map(|h| h.clone_ref(py));
            self.regs.link(py, d.get(), fd, holder);
        }
        let want = interest(py, obj, self.mode)?;
        self.regs
            .add(fd, key, obj, linked.is_some(), derived, self.pass);
        self.regs.apply(py, fd, want)?;
        Ok(Some(fd))
    }

    /// A channel told us its interest may have changed, or is re-read:
    /// derive its interest again, or ask for it.
    fn refresh_one(&mut self, py: Python<'_>, fd: RawFd, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let want = match (
            self.regs.plan_refresh(fd, self.pass),
            obj.cast::<Dispatcher>(),
        ) {
            (Refresh::Skip, _) => return Ok(()),
            (Refresh::Derive(kind), Ok(d)) => {
                d.get().clear_dirty(py);
                derived_interest(d, kind, self.mode)
            }
            _ => interest(py, obj, self.mode)?,
        };
        self.regs.apply(py, fd, want)
    }

    /// Channels whose readable()/writable() are Python: asked every pass.
    fn refresh_asked_each_pass(&mut self, py: Python<'_>) -> PyResult<()> {
        let pass = self.pass;
        for (fd, obj) in self.regs.due_each_pass(py, pass) {
            let want = interest(py, obj.bind(py), self.mode)?;
            self.regs.apply(py, fd, want)?;
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

    pub fn has_interest(&self) -> bool {
        self.regs.has_interest()
    }

    // ---------------- waiting

    /// Waits for events with the GIL released; returns (fd, poll flags, the
    /// interest it was registered with).
    pub fn wait(
        &mut self,
        py: Python<'_>,
        timeout: Option<Duration>,
    ) -> PyResult<Vec<(RawFd, u32, u8)>> {
        self.regs.wait(py, timeout)
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
        let Some((key, polled)) = self.regs.polled(py, fd) else {
            return Ok(None);
        };
        // No map written since a sync that left the registrations as the
        // map says: `map[key]` is still the channel registered there. An
        // exact int key is the fd itself (place() registers an int key at
        // its value), so `map.get(fd)` finds that entry too, and hashing and
        // comparing it run no Python code. The lookup costs about 190
        // instructions per event on 3.14.
        if self.synced_at == socket_map::writes() && key.is_exact_instance_of::<PyInt>() {
            return Ok(polled);
        }
        let obj = match self.mode {
            Mode::Select => map_get(map, &key, self.plain_get)?,
            Mode::Poll => map_get(map, fd.into_pyobject(py)?.as_any(), self.plain_get)?,
        };
        Ok(obj.filter(|o| polled.is_some_and(|p| p.is(o))))
    }

    /// After a pass: channels that left the poller (del_channel) are dropped
    /// now, so nothing here keeps a closed channel alive. If one is back in the
    /// map, the next pass registers it again.
    pub fn settle(&mut self, py: Python<'_>) {
        let keys = self.regs.settle(py);
        self.recheck.extend(keys);
    }

    /// Reports every Python reference this state owns to the garbage
    /// collector (for its holder's `__traverse__`; loop_cache.rs): the map,
    /// its change log, the registrations' keys and channels, the unkeyed
    /// entries and the keys to look at again.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.map)?;
        if let MapKind::Logged(changes) = &self.kind {
            visit.call(changes)?;
        }
        self.regs.traverse(visit)?;
        for (key, obj, _) in &self.unkeyed {
            visit.call(key)?;
            visit.call(obj)?;
        }
        for key in &self.recheck {
            visit.call(key)?;
        }
        visit.call(&self.holder)
    }
}

impl Drop for LoopState {
    fn drop(&mut self) {
        if let (true, MapKind::Logged(changes)) = (self.watched, &self.kind) {
            socket_map::unwatch(&self.map, changes);
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
    // SAFETY: the GIL is held and `key` is a live object the caller keeps (its
    // fileno() may run Python code; the call holds its own references).
    // Returns -1 with an exception set on failure.
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
    let v = map.call_method1(names::get(map.py()), (key,))?;
    Ok((!v.is_none()).then_some(v))
}
