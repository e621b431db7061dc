//! Owns the link between a channel and the loop state that polls it.
//!
//! A channel holds a `ChannelLink` in its own state; while a loop state polls
//! it, that points to the loop state's `LoopShared`, through which the channel
//! reports that its poll interest may have changed (`mark_dirty`) and leaves
//! the poller before its socket is closed (`take` + `leave`, from
//! `del_channel`).
//!
//! Garbage collection: the link also holds a strong reference to the loop
//! state's Python holder (loop_cache.rs `LoopHolder`), which the channel
//! reports in its `__traverse__` (`visit_holder`). An idle loop state is thus
//! owned by the channels it polls, inside the cycle map -> channel -> loop
//! state -> map that Python's collector sees: dropping the map frees it all.
//!
//! Uses: fd_map, poller, pyobj.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::fd_map::{FdMap, RawFd};
use crate::poller::{Poller, Watch};
use crate::pyobj::try_lock;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a loop state keeps of one channel it polls, in the one fd-indexed
/// table of its shared part. registrations.rs owns the rules (what `kind`
/// means, and the sets derived from the table); it is here because a channel
/// leaving the loop (`Taken::leave`) lets go of `obj` at once.
pub struct Reg {
    /// The channel; None once it left the poller itself (del_channel), so a
    /// closed channel (and its class) is never kept alive by a loop that is
    /// not running. The registration stays until the loop settles it.
    pub obj: Option<Py<PyAny>>,
    /// The map key the channel was found under.
    pub key: Py<PyAny>,
    /// The pass in which the interest was last read, modulo 2^32.
    pub asked: u32,
    pub want: u8,
    /// Whether the fd is in the kernel's set now.
    pub added: bool,
    pub watch: Watch,
    /// registrations.rs's flags: linked, and how the interest is derived.
    pub kind: u8,
}

/// Shared between a loop state and the channels registered in it.
pub struct LoopShared {
    poller: Poller,
    /// fds of channels whose interest may have changed.
    dirty: Mutex<Vec<RawFd>>,
    /// fds whose channel unregistered itself (del_channel) before closing.
    gone: Mutex<Vec<RawFd>>,
    /// The registrations, by fd. Never locked while Python code runs, nor
    /// while a Python object is dropped (its destructor may run Python).
    regs: Mutex<FdMap<Reg>>,
}

impl LoopShared {
    pub fn new(poller: Poller) -> Self {
        LoopShared {
            poller,
            dirty: Mutex::new(Vec::new()),
            gone: Mutex::new(Vec::new()),
            regs: Mutex::new(FdMap::default()),
        }
    }

    pub fn poller(&self) -> &Poller {
        &self.poller
    }

    /// The registrations (for registrations.rs). Drop nothing Python while
    /// holding it: return it and drop it after.
    pub fn regs(&self) -> MutexGuard<'_, FdMap<Reg>> {
        lock(&self.regs)
    }

    /// The fds whose channels reported a change since the last call.
    pub fn take_dirty(&self) -> Vec<RawFd> {
        std::mem::take(&mut *lock(&self.dirty))
    }

    /// The fds whose channels unregistered themselves since the last call.
    pub fn take_gone(&self) -> Vec<RawFd> {
        std::mem::take(&mut *lock(&self.gone))
    }

    /// Reports the keys and channels held to the garbage collector, for the
    /// one loop state that owns this `LoopShared` (the channels' links share
    /// it but never report it). Skips rather than waits if the lock is taken.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(regs) = try_lock(&self.regs) {
            for reg in regs.values() {
                visit.call(&reg.key)?;
                visit.call(&reg.obj)?;
            }
        }
        Ok(())
    }
}

/// Where a channel's link points: the loop state's shared part, the fd it
/// is polled at, the loop state's Python holder (None for a loop state that
/// is not kept between calls), and whether the channel has reported a change
/// the loop has not read yet.
struct Sink {
    shared: Arc<LoopShared>,
    holder: Option<Py<PyAny>>,
    fd: RawFd,
    dirty: bool,
}

/// A channel's link to the loop that polls it, kept inside the channel's
/// own state (channel.rs `Fields`, under its lock), so that a polled channel
/// costs no allocation of its own: 24 bytes, none while it is not polled.
#[derive(Default)]
pub struct ChannelLink(Option<Sink>);

/// A link taken out of its channel (`ChannelLink::take`), to be left after
/// the channel's lock is released.
pub struct Taken(Sink);

impl ChannelLink {
    /// The channel's poll interest may have changed: the first change since
    /// the loop last read it puts the fd on the loop's list.
    pub fn mark_dirty(&mut self) {
        if let Some(s) = &mut self.0 {
            if !std::mem::replace(&mut s.dirty, true) {
                lock(&s.shared.dirty).push(s.fd);
            }
        }
    }

    /// The loop state has re-read the channel's interest.
    pub fn clear_dirty(&mut self) {
        if let Some(s) = &mut self.0 {
            s.dirty = false;
        }
    }

    /// Points the link at a loop state. Returns the previous link (perhaps
    /// the last reference to another loop state), for the caller to drop
    /// after the channel's lock is released.
    #[must_use]
    pub fn attach(
        &mut self,
        shared: &Arc<LoopShared>,
        fd: RawFd,
        holder: Option<Py<PyAny>>,
    ) -> Option<Taken> {
        let sink = Sink {
            shared: shared.clone(),
            holder,
            fd,
            dirty: false,
        };
        self.0.replace(sink).map(Taken)
    }

    /// Unlinks the channel if it is linked to `shared`; returns the link,
    /// to be dropped after the channel's lock is released.
    #[must_use]
    pub fn detach(&mut self, shared: &Arc<LoopShared>) -> Option<Taken> {
        if self
            .0
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.shared, shared))
        {
            self.0.take().map(Taken)
        } else {
            None
        }
    }

    /// Unlinks the channel; `Taken::leave` then takes it out of the poller.
    #[must_use]
    pub fn take(&mut self) -> Option<Taken> {
        self.0.take().map(Taken)
    }

    /// Reports the loop state holder this link keeps alive. Only the channel
    /// that holds the link calls it, so each reference is reported once.
    pub fn visit_holder(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(self.0.as_ref().and_then(|s| s.holder.as_ref()))
    }
}

impl Taken {
    /// Leaves the poller now, before the socket can be closed (the polling
    /// crate's contract: an fd must be deleted before it is closed), and has
    /// the loop state let go of the channel. Called without the channel's
    /// lock: the holder's reference, dropped last, may be the last one to the
    /// loop state, whose destructor detaches other channels.
    pub fn leave(self) {
        let s = self.0;
        s.shared.poller.unwatch(s.fd);
        lock(&s.shared.gone).push(s.fd);
        let obj = lock(&s.shared.regs)
            .get_mut(&s.fd)
            .and_then(|r| r.obj.take());
        drop((obj, s));
    }
}
