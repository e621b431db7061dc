//! Owns the loop states kept between calls, one per map, and the checkout
//! that lends one to a pass.
//!
//! Uses: interest, link, loop_state.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::interest::Mode;
use crate::link::lock;
use crate::loop_state::LoopState;

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
pub struct Checkout {
    state: Option<LoopState>,
}

impl Checkout {
    pub fn get(py: Python<'_>, map: &Bound<'_, PyAny>, mode: Mode) -> PyResult<Self> {
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
                        .position(|s| s.map_key() == key)
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

    pub fn state(&mut self) -> &mut LoopState {
        self.state.as_mut().expect("checked out")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        if !state.is_persistent() {
            return;
        }
        if state.rereads_everything() {
            // Any other mapping (e.g. a WeakValueDictionary) is re-read every
            // pass anyway; keeping its channels alive here would be a leak.
            lock(&CACHE).busy.retain(|k| *k != state.map_key());
            return;
        }
        let evicted = {
            let mut cache = lock(&CACHE);
            let key = state.map_key();
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
pub fn forget(map: &Bound<'_, PyAny>) {
    let key = map.as_ptr() as usize;
    let evicted: Vec<LoopState> = {
        let mut cache = lock(&CACHE);
        let (gone, keep) = std::mem::take(&mut cache.idle)
            .into_iter()
            .partition(|s| s.map_key() == key);
        cache.idle = keep;
        gone
    };
    drop(evicted);
}
