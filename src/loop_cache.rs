//! The loop states kept between calls, one per map, and the checkout that
//! lends one to a pass.
//!
//! A state kept between calls lives in a `LoopHolder`, a Python object that
//! the garbage collector sees: its `__traverse__` reports the map and the
//! channels the state references. The holder is kept alive only by the
//! channels the state polls (each channel's link holds it, link.rs) and by
//! the checkout while a pass runs; the cache below only has weak references
//! to holders. So a map dropped with channels that were never closed is a
//! cycle (map -> channel -> holder -> map) that Python collects, as it
//! collects the same map in CPython, whichever of `loop()`, `poll()` and
//! `poll2()` ran on it. A map whose channels have all left keeps no state.
//!
//! Uses: interest, link, loop_state, pyobj.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyWeakrefReference;
use pyo3::{PyTraverseError, PyVisit};

use crate::interest::Mode;
use crate::link::lock;
use crate::loop_state::LoopState;
use crate::pyobj::{try_lock, Built};

/// At most this many idle states are kept (each holds a poller: 3 fds).
const CACHE_SIZE: usize = 8;

enum Slot {
    /// Kept between calls.
    Idle(Box<LoopState>),
    /// Lent to a pass (the checkout has it).
    Busy,
    /// Cleared, evicted or discarded: never used again.
    Dead,
}

/// The Python object that holds one map's loop state between calls.
#[pyclass(frozen, weakref, module = "asyncore", name = "_LoopState")]
pub struct LoopHolder {
    /// Checked first by `__traverse__` (see pyobj.rs `Built`).
    built: Built,
    slot: Mutex<Slot>,
}

/// Takes the idle state out of `slot`, which is then dead. A busy slot is
/// left as it is: the pass that has the state puts it back (Checkout::drop).
fn take_idle(slot: &mut Slot) -> Option<Box<LoopState>> {
    if matches!(slot, Slot::Busy) {
        return None;
    }
    match std::mem::replace(slot, Slot::Dead) {
        Slot::Idle(state) => Some(state),
        _ => None,
    }
}

impl LoopHolder {
    /// The idle state, taken out (see take_idle), to be dropped by the caller
    /// after every lock is released: dropping it releases Python objects,
    /// whose destructors may run Python code.
    fn retire(&self) -> Option<Box<LoopState>> {
        take_idle(&mut lock(&self.slot))
    }

    fn is_idle(&self) -> bool {
        matches!(*lock(&self.slot), Slot::Idle(_))
    }
}

#[pymethods]
impl LoopHolder {
    /// The idle state's references (the map, its keys and channels); nothing
    /// while a pass has the state (the running pass holds it, like a local
    /// variable) or if the lock is taken.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if !self.built.get() {
            return Ok(());
        }
        if let Some(slot) = try_lock(&self.slot) {
            if let Slot::Idle(state) = &*slot {
                state.traverse(&visit)?;
            }
        }
        Ok(())
    }

    /// Drops the idle state (the next pass over its map, if any, starts a
    /// new one). A state lent to a pass is left alone: the collector only
    /// clears unreachable objects, and a running pass reaches its holder.
    fn __clear__(&self) {
        let old = try_lock(&self.slot).and_then(|mut slot| take_idle(&mut slot));
        drop(old);
    }
}

/// A weak reference to a holder, under the address of the map it serves.
struct Entry {
    map: usize,
    holder: usize,
    weak: Py<PyWeakrefReference>,
}

/// Oldest first. Only weak references: the cache keeps nothing alive.
static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The live holder of the map at address `key`, if any. Only the entries
/// under that key are looked at (dead ones are removed by `tidy`).
fn find(py: Python<'_>, key: usize) -> Option<Py<LoopHolder>> {
    let cache = lock(&CACHE);
    cache.iter().filter(|e| e.map == key).find_map(|e| {
        let h = e.weak.bind(py).upgrade()?.cast_into::<LoopHolder>().ok()?;
        let live = !matches!(*lock(&h.get().slot), Slot::Dead);
        live.then(|| h.unbind())
    })
}

/// A loop state checked out for one map; returned to its holder on drop.
pub struct Checkout {
    state: Option<LoopState>,
    /// None for a throw-away state (a nested pass over a map being polled).
    holder: Option<Py<LoopHolder>>,
}

impl Checkout {
    pub fn get(py: Python<'_>, map: &Bound<'_, PyAny>, mode: Mode) -> PyResult<Self> {
        let key = map.as_ptr() as usize;
        if let Some(holder) = find(py, key) {
            let taken = {
                let mut slot = lock(&holder.get().slot);
                match std::mem::replace(&mut *slot, Slot::Busy) {
                    Slot::Idle(state) => Some(state),
                    other => {
                        *slot = other;
                        None
                    }
                }
            };
            let Some(state) = taken else {
                // Nested poll of a map being polled: a throw-away state that
                // asks every channel, so the outer state keeps its links.
                return Ok(Checkout {
                    state: Some(LoopState::new(py, map, mode, false)?),
                    holder: None,
                });
            };
            let mut state = *state;
            state.holder = Some(holder.clone_ref(py).into_any());
            return Ok(Checkout {
                state: Some(state),
                holder: Some(holder),
            });
        }
        // The holder is registered (busy) before the state is made, so that
        // a pass over the same map started meanwhile sees this one.
        let holder = Py::new(
            py,
            LoopHolder {
                built: Built::new(),
                slot: Mutex::new(Slot::Busy),
            },
        )?;
        let weak = PyWeakrefReference::new(holder.bind(py))?.unbind();
        lock(&CACHE).push(Entry {
            map: key,
            holder: holder.as_ptr() as usize,
            weak,
        });
        match LoopState::new(py, map, mode, true) {
            Ok(mut state) => {
                state.holder = Some(holder.clone_ref(py).into_any());
                Ok(Checkout {
                    state: Some(state),
                    holder: Some(holder),
                })
            }
            Err(e) => {
                *lock(&holder.get().slot) = Slot::Dead;
                drop(remove_entry(&holder));
                Err(e)
            }
        }
    }

    pub fn state(&mut self) -> &mut LoopState {
        self.state.as_mut().expect("checked out")
    }
}

/// Drops the idle state of `holder` and its cache entry.
fn discard(holder: &Py<LoopHolder>) {
    let old = holder.get().retire();
    let gone = remove_entry(holder);
    drop((old, gone));
}

/// Removes the cache entry of `holder` (returned, to be dropped after the
/// lock is released).
fn remove_entry(holder: &Py<LoopHolder>) -> Vec<Entry> {
    let addr = holder.as_ptr() as usize;
    let gone: Vec<Entry> = {
        let mut cache = lock(&CACHE);
        let (gone, keep) = std::mem::take(&mut *cache)
            .into_iter()
            .partition(|e| e.holder == addr);
        *cache = keep;
        gone
    };
    gone
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        let Some(holder) = self.holder.take() else {
            return; // a throw-away state
        };
        state.holder = None;
        // Any other mapping (e.g. a WeakValueDictionary) is re-read every
        // pass anyway; keeping its channels linked here would be pointless.
        if !state.is_persistent() || state.rereads_everything() {
            *lock(&holder.get().slot) = Slot::Dead;
            let gone = remove_entry(&holder);
            drop((state, gone, holder));
            return;
        }
        *lock(&holder.get().slot) = Slot::Idle(Box::new(state));
        // Most recently used last.
        let addr = holder.as_ptr() as usize;
        let crowded = {
            let mut cache = lock(&CACHE);
            if let Some(i) = cache.iter().position(|e| e.holder == addr) {
                let e = cache.remove(i);
                cache.push(e);
            }
            cache.len() > CACHE_SIZE
        };
        if crowded {
            Python::attach(tidy);
        }
        // The last reference to the holder (if no channel is linked to the
        // state) frees the state here.
        drop(holder);
    }
}

/// Removes the entries of dead holders, then drops the oldest idle states
/// beyond `CACHE_SIZE`. Run when the cache has more than `CACHE_SIZE` entries.
fn tidy(py: Python<'_>) {
    let (dead, idle): (Vec<Entry>, Vec<Py<LoopHolder>>) = {
        let mut cache = lock(&CACHE);
        let (dead, live): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut *cache)
            .into_iter()
            .partition(|e| e.weak.bind(py).upgrade().is_none());
        *cache = live;
        let idle = cache
            .iter()
            .filter_map(|e| e.weak.bind(py).upgrade())
            .filter_map(|h| h.cast_into::<LoopHolder>().ok())
            .filter(|h| h.get().is_idle())
            .map(Bound::unbind)
            .collect();
        (dead, idle)
    };
    drop(dead);
    if idle.len() > CACHE_SIZE {
        for holder in &idle[..idle.len() - CACHE_SIZE] {
            discard(holder);
        }
    }
    drop(idle);
}

/// Forgets the loop state of `map` (close_all empties it).
pub fn forget(map: &Bound<'_, PyAny>) {
    if let Some(holder) = find(map.py(), map.as_ptr() as usize) {
        if holder.get().is_idle() {
            discard(&holder);
        }
    }
}
