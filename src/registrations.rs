//! Owns one loop state's registrations: which channel is polled at which fd,
//! under which map key, with what interest, and how the kernel took it.
//!
//! The fields are private so that what is derived from the registrations
//! stays true: the fds asked every pass, the fds outside the kernel's set and
//! the count of fds that want any event change only with a registration (in
//! `add`, `apply` and `remove`). A pass then costs what is active, not what
//! is registered.
//!
//! Uses: channel, errors, fd_map, interest, link, poller.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::channel::Dispatcher;
use crate::errors::os_error;
use crate::fd_map::{FdMap, FdSet, RawFd};
use crate::interest::WKind;
use crate::link::LoopShared;
use crate::poller::{poll_flags, Events, Poller, Watch, POLLIN, POLLNVAL, POLLOUT, WANT_R, WANT_W};

struct Reg {
    key: Py<PyAny>,
    /// Some for channels whose interest Rust derives from their fields (and
    /// which built-in writable() answers for them); None: readable() and
    /// writable() are asked every pass.
    derived: Option<WKind>,
    /// The channel is a dispatcher linked to this state (link.rs), as every
    /// dispatcher of a persistent state is.
    linked: bool,
    want: u8,
    /// Whether the fd is in the kernel's set now.
    added: bool,
    watch: Watch,
    /// The pass in which the interest was last read, modulo 2^32 (Pass).
    asked: Pass,
}

/// A pass number as a registration keeps it: the low 32 bits. Only compared
/// for equality with the current pass, and a channel that is compared (one
/// asked every pass) was asked in the previous pass at the latest, so the
/// wrap-around never makes two different passes equal where it matters.
/// (Half the size of a u64: a registration is 24 bytes, not 32.)
#[derive(Clone, Copy, PartialEq, Eq)]
struct Pass(u32);

impl Pass {
    fn of(pass: u64) -> Self {
        Pass(pass as u32)
    }
}

/// What reading a channel's interest again takes.
pub enum Refresh {
    /// Already read this pass.
    Skip,
    /// From its Rust fields.
    Derive(WKind),
    /// By asking readable()/writable().
    Ask,
}

pub struct Registrations {
    shared: Arc<LoopShared>,
    regs: FdMap<Reg>,
    /// Derived from `regs`: the fds asked every pass, the fds the kernel
    /// would not take (always ready, or invalid), and how many want events.
    asked_each_pass: FdSet,
    special: FdSet,
    wanting: usize,
    /// The buffers the poller's wait fills: this state's own, so the
    /// poller (shared with the channels, for `unwatch`) needs no lock.
    events: Events,
}

impl Registrations {
    pub fn new(py: Python<'_>) -> PyResult<Self> {
        let poller = Poller::new(py)?;
        let events = poller.events();
        Ok(Registrations {
            shared: Arc::new(LoopShared::new(poller)),
            regs: FdMap::default(),
            asked_each_pass: FdSet::default(),
            special: FdSet::default(),
            wanting: 0,
            events,
        })
    }

    pub fn contains(&self, fd: RawFd) -> bool {
        self.regs.contains_key(&fd)
    }

    /// The map key the channel at `fd` was found under.
    pub fn key(&self, fd: RawFd) -> Option<&Py<PyAny>> {
        self.regs.get(&fd).map(|r| &r.key)
    }

    /// The channel polled at `fd`.
    pub fn channel(&self, py: Python<'_>, fd: RawFd) -> Option<Py<PyAny>> {
        self.shared.obj(py, fd)
    }

    /// The registered fds not in `seen`.
    pub fn stale(&self, seen: &FdSet) -> Vec<RawFd> {
        self.regs
            .keys()
            .filter(|fd| !seen.contains(fd))
            .copied()
            .collect()
    }

    /// Points the channel's link at this loop state (before its interest is
    /// first read, so a change made while reading it is reported). The link
    /// keeps `holder`, the loop state's Python holder, alive (link.rs).
    pub fn link(&self, channel: &Dispatcher, fd: RawFd, holder: Option<Py<PyAny>>) {
        channel.attach(&self.shared, fd, holder);
    }

    /// Makes room for `total` registrations: one allocation of each table
    /// now (a full re-read knows the count) instead of the ever larger ones,
    /// each left behind in the heap, they would grow through.
    pub fn reserve_for(&mut self, total: usize) {
        let more = total.saturating_sub(self.regs.len());
        self.regs.reserve(more);
        self.shared.reserve(more);
    }

    /// Registers `obj` at `fd`, wanting nothing yet (`apply` sets the interest).
    pub fn add(
        &mut self,
        fd: RawFd,
        key: &Bound<'_, PyAny>,
        obj: &Bound<'_, PyAny>,
        linked: bool,
        derived: Option<WKind>,
        pass: u64,
    ) {
        self.shared.hold(fd, obj.clone().unbind());
        if derived.is_none() {
            self.asked_each_pass.insert(fd);
        }
        let reg = Reg {
            key: key.clone().unbind(),
            derived,
            linked,
            want: 0,
            added: false,
            watch: Watch::Polled,
            asked: Pass::of(pass),
        };
        if let Some(old) = self.regs.insert(fd, reg) {
            self.forget_derived(fd, &old);
        }
    }

    /// Sets the interest of the registration at `fd`, in the kernel too.
    pub fn apply(&mut self, py: Python<'_>, fd: RawFd, want: u8) -> PyResult<()> {
        let Some(reg) = self.regs.get_mut(&fd) else {
            return Ok(());
        };
        self.wanting = self.wanting + usize::from(want != 0) - usize::from(reg.want != 0);
        if reg.watch != Watch::Polled || (reg.want == want && reg.added == (want != 0)) {
            reg.want = want;
            return Ok(());
        }
        let poller = self.shared.poller();
        reg.want = want;
        if want == 0 {
            poller.unwatch(fd);
            reg.added = false;
            return Ok(());
        }
        match poller.watch(fd, want, reg.added) {
            Ok(Watch::Polled) => reg.added = true,
            Ok(other) => {
                reg.watch = other;
                self.special.insert(fd);
            }
            Err(e) => return Err(os_error(py, e.raw_os_error().unwrap_or(libc::EIO))),
        }
        Ok(())
    }

    pub fn remove(&mut self, fd: RawFd) {
        if let Some(reg) = self.take(fd) {
            if reg.added {
                self.shared.poller().unwatch(fd);
            }
            let obj = self.shared.release(fd);
            if reg.linked {
                detach(obj.as_ref(), &self.shared);
            }
            drop(obj);
        }
    }

    fn take(&mut self, fd: RawFd) -> Option<Reg> {
        let reg = self.regs.remove(&fd)?;
        self.forget_derived(fd, &reg);
        Some(reg)
    }

    fn forget_derived(&mut self, fd: RawFd, reg: &Reg) {
        if reg.want != 0 {
            self.wanting -= 1;
        }
        self.asked_each_pass.remove(&fd);
        self.special.remove(&fd);
    }

    pub fn has_interest(&self) -> bool {
        self.wanting != 0
    }

    /// The fds whose channels reported an interest change since the last call.
    pub fn take_dirty(&self) -> Vec<RawFd> {
        self.shared.take_dirty()
    }

    /// How to read the interest of the channel at `fd` again in pass `pass`.
    /// (A derived channel's caller clears the channel's dirty mark.)
    pub fn plan_refresh(&mut self, fd: RawFd, pass: u64) -> Refresh {
        let Some(reg) = self.regs.get_mut(&fd) else {
            return Refresh::Ask;
        };
        let pass = Pass::of(pass);
        if reg.derived.is_none() && reg.asked == pass {
            return Refresh::Skip;
        }
        reg.asked = pass;
        match (reg.derived, reg.linked) {
            (Some(kind), true) => Refresh::Derive(kind),
            _ => Refresh::Ask,
        }
    }

    /// The channels asked every pass that were not asked in pass `pass`
    /// (marked asked now).
    pub fn due_each_pass(&mut self, py: Python<'_>, pass: u64) -> Vec<(RawFd, Py<PyAny>)> {
        let pass = Pass::of(pass);
        let due: Vec<RawFd> = self
            .asked_each_pass
            .iter()
            .filter(|fd| self.regs.get(fd).is_some_and(|r| r.asked != pass))
            .copied()
            .collect();
        let found = self.shared.objs_at(py, due.into_iter());
        for (fd, _) in &found {
            if let Some(r) = self.regs.get_mut(fd) {
                r.asked = pass;
            }
        }
        found
    }

    /// Waits for events with the GIL released; returns (fd, poll flags, the
    /// interest it was registered with).
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
            match reg.watch {
                Watch::AlwaysReady if reg.want != 0 => {
                    let mut f = 0;
                    if reg.want & WANT_R != 0 {
                        f |= POLLIN;
                    }
                    if reg.want & WANT_W != 0 {
                        f |= POLLOUT;
                    }
                    ready.push((*fd, f, reg.want));
                }
                Watch::Invalid if reg.want != 0 => ready.push((*fd, POLLNVAL, reg.want)),
                _ => {}
            }
        }
        let timeout = if ready.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let regs = &self.regs;
        let events = &mut self.events;
        self.shared
            .poller()
            .wait(py, events, timeout, |fd, flags| {
                if let Some(reg) = regs.get(&fd) {
                    ready.push((fd, poll_flags(flags, reg.want), reg.want));
                }
            })?;
        Ok(ready)
    }

    /// After a pass: channels that left the poller (del_channel) are dropped
    /// now, so nothing here keeps a closed channel alive. Returns their keys,
    /// to be looked up again: if one is back in the map, it is registered again.
    pub fn settle(&mut self, py: Python<'_>) -> Vec<Py<PyAny>> {
        let mut keys = Vec::new();
        for fd in self.shared.take_gone() {
            // The channel unlinked itself (del_channel) and is released already.
            if let Some(reg) = self.take(fd) {
                keys.push(reg.key.clone_ref(py));
            }
        }
        keys
    }
}

impl Registrations {
    /// Reports the Python references these registrations own to the garbage
    /// collector: each map key and each polled channel (held in the shared
    /// part, which only this owner reports).
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for reg in self.regs.values() {
            visit.call(&reg.key)?;
        }
        self.shared.traverse(visit)
    }
}

impl Drop for Registrations {
    /// Unlinks the channels still linked here. Not while the interpreter
    /// shuts down (no Python to reach them through): their links then keep
    /// only this state's shared part alive, which nothing polls.
    fn drop(&mut self) {
        let linked: Vec<RawFd> = self
            .regs
            .iter()
            .filter(|(_, r)| r.linked)
            .map(|(fd, _)| *fd)
            .collect();
        if linked.is_empty() {
            return;
        }
        let _ = Python::try_attach(|py| {
            for (_, obj) in self.shared.objs_at(py, linked.into_iter()) {
                detach(Some(&obj), &self.shared);
            }
        });
    }
}

/// Unlinks `obj`, a dispatcher, from the loop state `shared`.
fn detach(obj: Option<&Py<PyAny>>, shared: &Arc<LoopShared>) {
    if let Some(obj) = obj {
        Python::attach(|py| {
            if let Ok(d) = obj.bind(py).cast::<Dispatcher>() {
                d.get().detach(shared);
            }
        });
    }
}
