//! Owns the link between a channel and the loop state that polls it.
//!
//! A channel holds a `ChannelNotify`; while a loop state polls it, that
//! points to the loop state's `LoopShared`, through which the channel reports
//! that its poll interest may have changed (`mark_dirty`) and leaves the
//! poller before its socket is closed (`unregister`, from `del_channel`).
//!
//! Garbage collection: the link also holds a strong reference to the loop
//! state's Python holder (loop_cache.rs `LoopHolder`), which the channel
//! reports in its `__traverse__` (`visit_holder`). An idle loop state is thus
//! owned by the channels it polls, inside the cycle map -> channel -> loop
//! state -> map that Python's collector sees: dropping the map frees it all.
//!
//! Uses: fd_map, poller, pyobj.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::fd_map::{FdMap, RawFd};
use crate::poller::Poller;
use crate::pyobj::try_lock;

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

    /// Reports the held channels to the garbage collector, for the one loop
    /// state that owns this `LoopShared` (the channels' links share it but
    /// never report it). Skips rather than waits if the lock is taken.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(objs) = try_lock(&self.objs) {
            for obj in objs.values() {
                visit.call(obj)?;
            }
        }
        Ok(())
    }
}

/// Where a channel's link points: the loop state's shared part, the fd it
/// is polled at, and the loop state's Python holder (None for a loop state
/// that is not kept between calls).
struct Sink {
    shared: Arc<LoopShared>,
    fd: RawFd,
    holder: Option<Py<PyAny>>,
}

/// A channel's link to the loop that polls it.
#[derive(Default)]
pub struct ChannelNotify {
    dirty: AtomicBool,
    sink: Mutex<Option<Sink>>,
}

impl ChannelNotify {
    /// The channel's poll interest may have changed.
    pub fn mark_dirty(&self) {
        if !self.dirty.swap(true, Ordering::Relaxed) {
            if let Some(s) = &*lock(&self.sink) {
                lock(&s.shared.dirty).push(s.fd);
            }
        }
    }

    /// Leaves the poller now, before the socket can be closed (the polling
    /// crate's contract: an fd must be deleted before it is closed).
    /// The holder's reference is dropped after the lock is released (the
    /// last one frees the loop state, which detaches other channels).
    pub fn unregister(&self) {
        let taken = lock(&self.sink).take();
        if let Some(s) = taken {
            s.shared.poller.unwatch(s.fd);
            lock(&s.shared.gone).push(s.fd);
            s.shared.release(s.fd);
            drop(s);
        }
    }

    /// The loop state has re-read the channel's interest.
    pub fn clear_dirty(&self) {
        self.dirty.store(false, Ordering::Relaxed);
    }

    /// Points the link at a loop state. The previous link (and with it
    /// perhaps the last reference to another loop state) is dropped after
    /// the lock is released.
    pub fn attach(&self, shared: &Arc<LoopShared>, fd: RawFd, holder: Option<Py<PyAny>>) {
        let sink = Sink {
            shared: shared.clone(),
            fd,
            holder,
        };
        let old = lock(&self.sink).replace(sink);
        self.dirty.store(false, Ordering::Relaxed);
        drop(old);
    }

    pub fn detach(&self, shared: &Arc<LoopShared>) {
        let old = {
            let mut sink = lock(&self.sink);
            if sink
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(&s.shared, shared))
            {
                sink.take()
            } else {
                None
            }
        };
        drop(old);
    }

    /// Reports the loop state holder this link keeps alive. Only the channel
    /// that owns this `ChannelNotify` calls it (the fifo and the loop state's
    /// registration share the `Arc` but never report it), so each reference
    /// is reported once.
    pub fn visit_holder(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match try_lock(&self.sink) {
            Some(sink) => visit.call(sink.as_ref().and_then(|s| s.holder.as_ref())),
            None => Ok(()),
        }
    }
}
