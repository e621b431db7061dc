//! Owns the link between a channel and the loop state that polls it.
//!
//! A channel holds a `ChannelNotify`; while a loop state polls it, that
//! points to the loop state's `LoopShared`, through which the channel reports
//! that its poll interest may have changed (`mark_dirty`) and leaves the
//! poller before its socket is closed (`unregister`, from `del_channel`).
//!
//! Uses: fd_map, poller.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;

use crate::fd_map::{FdMap, RawFd};
use crate::poller::Poller;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shared between a loop state and the channels registered in it.
pub struct LoopShared {
    poller: Poller,
    /// fds of channels whose interest may have changed.
    dirty: Mutex<Vec<RawFd>>,
    /// fds whose channel unregistered itself (del_channel) before closing.
    gone: Mutex<Vec<RawFd>>,
    /// The registered channels. Held here, not in the registration, so that
    /// a channel's `del_channel()` lets go of it at once: a closed channel
    /// (and its class) is never kept alive by a loop that is not running.
    objs: Mutex<FdMap<Py<PyAny>>>,
}

impl LoopShared {
    pub fn new(poller: Poller) -> Self {
        LoopShared {
            poller,
            dirty: Mutex::new(Vec::new()),
            gone: Mutex::new(Vec::new()),
            objs: Mutex::new(FdMap::default()),
        }
    }

    pub fn poller(&self) -> &Poller {
        &self.poller
    }

    /// The fds whose channels reported a change since the last call.
    pub fn take_dirty(&self) -> Vec<RawFd> {
        std::mem::take(&mut *lock(&self.dirty))
    }

    /// The fds whose channels unregistered themselves since the last call.
    pub fn take_gone(&self) -> Vec<RawFd> {
        std::mem::take(&mut *lock(&self.gone))
    }

    /// The channels held at `fds` (one lock for all of them).
    pub fn objs_at(
        &self,
        py: Python<'_>,
        fds: impl Iterator<Item = RawFd>,
    ) -> Vec<(RawFd, Py<PyAny>)> {
        let objs = lock(&self.objs);
        fds.filter_map(|fd| objs.get(&fd).map(|o| (fd, o.clone_ref(py))))
            .collect()
    }

    pub fn obj(&self, py: Python<'_>, fd: RawFd) -> Option<Py<PyAny>> {
        lock(&self.objs).get(&fd).map(|o| o.clone_ref(py))
    }

    /// Drops the channel at `fd` (after the lock: its destructor may run Python).
    pub fn release(&self, fd: RawFd) {
        let old = lock(&self.objs).remove(&fd);
        drop(old);
    }

    pub fn hold(&self, fd: RawFd, obj: Py<PyAny>) {
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
            shared.poller.unwatch(fd);
            lock(&shared.gone).push(fd);
            shared.release(fd);
        }
    }

    /// The loop state has re-read the channel's interest.
    pub fn clear_dirty(&self) {
        self.dirty.store(false, Ordering::Relaxed);
    }

    pub fn attach(&self, shared: &Arc<LoopShared>, fd: RawFd) {
        *lock(&self.sink) = Some((shared.clone(), fd));
        self.dirty.store(false, Ordering::Relaxed);
    }

    pub fn detach(&self, shared: &Arc<LoopShared>) {
        let mut sink = lock(&self.sink);
        if sink.as_ref().is_some_and(|(s, _)| Arc::ptr_eq(s, shared)) {
            *sink = None;
        }
    }
}
