//! The link between a channel and the loop state that polls it: a channel
//! reports interest changes and its own unregistration through it.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use polling::Poller;
use pyo3::prelude::*;

use crate::fd_map::FdMap;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shared between a loop state and the channels registered in it.
pub struct LoopShared {
    pub poller: Poller,
    /// fds of tracked channels whose interest state changed.
    pub dirty: Mutex<Vec<RawFd>>,
    /// fds whose channel unregistered itself (del_channel) before closing.
    pub gone: Mutex<Vec<RawFd>>,
    /// The registered channels. Held here, not in `Reg`, so that a channel's
    /// `del_channel()` lets go of it at once: a closed channel (and its class)
    /// is never kept alive by a loop that is not running.
    pub objs: Mutex<FdMap<Py<PyAny>>>,
}

impl LoopShared {
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
    pub dirty: AtomicBool,
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
