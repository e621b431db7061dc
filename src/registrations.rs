//! Owns one loop state's registrations: which channel is polled at which fd,
//! under which map key, with what interest, and how the kernel took it.
//!
//! The registrations themselves are one fd-indexed table in the loop state's
//! shared part (link.rs `Reg`), where a channel leaving the loop lets go of
//! its entry's channel at once. What is derived from them is private here so
//! that it stays true: the fds asked every pass, the fds outside the kernel's
//! set and the count of fds that want any event change only with a
//! registration (in `add`, `apply` and `remove`). A pass then costs what is
//! active, not what is registered.
//!
//! Uses: channel, errors, fd_map, interest, link, poller.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::channel::Dispatcher;
use crate::errors::os_error;
use crate::fd_map::{FdSet, RawFd};
use crate::interest::WKind;
use crate::link::{LoopShared, Reg};
use crate::poller::{poll_flags, Events, Poller, Watch, POLLIN, POLLNVAL, POLLOUT, WANT_R, WANT_W};

// `Reg::kind`: the channel is a dispatcher linked to this state (link.rs), as
// every dispatcher of a persistent state is; and for those whose interest Rust
// derives from their fields, which built-in writable() answers for them (no
// derivation bit: readable() and writable() are asked every pass).
const LINKED: u8 = 1;
const DERIVED: u8 = 2;
const ALWAYS: u8 = 0;
const WITH_SEND: u8 = 4;
const CHAT: u8 = 8;
const KIND_MASK: u8 = 12;

fn kind_code(linked: bool, derived: Option<WKind>) -> u8 {
    let derived = match derived {
        None => 0,
        Some(WKind::Always) => DERIVED | ALWAYS,
        Some(WKind::WithSend) => DERIVED | WITH_SEND,
        Some(WKind::Chat) => DERIVED | CHAT,
    };
    derived | if linked { LINKED } else { 0 }
}

fn derived_kind(code: u8) -> Option<WKind> {
    if code & DERIVED == 0 {
        return None;
    }
    Some(match code & KIND_MASK {
        WITH_SEND => WKind::WithSend,
        CHAT => WKind::Chat,
        _ => WKind::Always,
    })
}

/// A pass number as a registration keeps it: the low 32 bits. Only compared
/// for equality with the current pass, and only for a channel asked every
/// pass, which was asked in the previous pass at the latest (unless every
/// pass since failed before asking it): two passes equal modulo 2^32 would
/// take 2^32 failed passes in a row. (A registration is then 24 bytes, not 32.)
fn pass_mark(pass: u64) -> u32 {
    pass as u32
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
    /// Derived from the registrations: the fds asked every pass, the fds the
    /// kernel would not take (always ready, or invalid), and how many want
    /// events.
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
            asked_each_pass: FdSet::default(),
            special: FdSet::default(),
            wanting: 0,
            events,
        })
    }

    pub fn contains(&self, fd: RawFd) -> bool {
        self.shared.regs().contains_key(&fd)
    }

    /// The map key the channel at `fd` was found under.
    pub fn key(&self, py: Python<'_>, fd: RawFd) -> Option<Py<PyAny>> {
        self.shared.regs().get(&fd).map(|r| r.key.clone_ref(py))
    }

    /// The channel polled at `fd`.
    pub fn channel(&self, py: Python<'_>, fd: RawFd) -> Option<Py<PyAny>> {
        let regs = self.shared.regs();
        regs.get(&fd)?.obj.as_ref().map(|o| o.clone_ref(py))
    }

    /// The map key registered at `fd` and its channel, unless that left the
    /// loop (one lock). As Bounds: a Py's drop asks pyo3's thread-local GIL
    /// count whether it may decref now (a TLS lookup, two per event), a
    /// Bound's does not.
    pub fn polled<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
    ) -> Option<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
        let regs = self.shared.regs();
        let reg = regs.get(&fd)?;
        Some((
            reg.key.bind(py).clone(),
            reg.obj.as_ref().map(|o| o.bind(py).clone()),
        ))
    }

    /// The registered fds not in `seen`.
    pub fn stale(&self, seen: &FdSet) -> Vec<RawFd> {
        self.shared
            .regs()
            .keys()
            .filter(|fd| !seen.contains(fd))
            .copied()
            .collect()
    }

    /// Points the channel's link at this loop state (before its interest is
    /// first read, so a change made while reading it is reported). The link
    /// keeps `holder`, the loop state's Python holder, alive (link.rs).
    pub fn link(&self, py: Python<'_>, channel: &Dispatcher, fd: RawFd, holder: Option<Py<PyAny>>) {
        channel.attach(py, &self.shared, fd, holder);
    }

    /// Makes room for `total` registrations: one allocation of the table now
    /// (a full re-read knows the count) instead of the ever larger ones, each
    /// left behind in the heap, it would grow through.
    pub fn reserve_for(&mut self, total: usize) {
        let mut regs = self.shared.regs();
        let more = total.saturating_sub(regs.len());
        regs.reserve(more);
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
        let reg = Reg {
            obj: Some(obj.clone().unbind()),
            key: key.clone().unbind(),
            asked: pass_mark(pass),
            want: 0,
            added: false,
            watch: Watch::Polled,
            kind: kind_code(linked, derived),
        };
        let old = self.shared.regs().insert(fd, reg);
        if let Some(old) = &old {
            self.forget_derived(fd, old.want);
        }
        if derived.is_none() {
            self.asked_each_pass.insert(fd);
        }
        drop(old); // after the lock: its channel's destructor may run Python
    }

    /// Sets the interest of the registration at `fd`, in the kernel too.
    pub fn apply(&mut self, py: Python<'_>, fd: RawFd, want: u8) -> PyResult<()> {
        let mut regs = self.shared.regs();
        let Some(reg) = regs.get_mut(&fd) else {
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
            Err(e) => {
                drop(regs);
                return Err(os_error(py, e.raw_os_error().unwrap_or(libc::EIO)));
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, fd: RawFd) {
        let Some(reg) = self.take(fd) else {
            return;
        };
        if reg.added {
            self.shared.poller().unwatch(fd);
        }
        if reg.kind & LINKED != 0 {
            detach(reg.obj.as_ref(), &self.shared);
        }
        drop(reg);
    }

    /// Takes the registration at `fd` out of the table (returned, to be
    /// dropped by the caller outside the lock).
    fn take(&mut self, fd: RawFd) -> Option<Reg> {
        let reg = self.shared.regs().remove(&fd)?;
        self.forget_derived(fd, reg.want);
        Some(reg)
    }

    fn forget_derived(&mut self, fd: RawFd, want: u8) {
        if want != 0 {
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
    /// (For a derived channel, the caller clears the channel's dirty mark.)
    pub fn plan_refresh(&mut self, fd: RawFd, pass: u64) -> Refresh {
        let mut regs = self.shared.regs();
        let Some(reg) = regs.get_mut(&fd) else {
            return Refresh::Ask;
        };
        let pass = pass_mark(pass);
        let derived = derived_kind(reg.kind);
        if derived.is_none() && reg.asked == pass {
            return Refresh::Skip;
        }
        reg.asked = pass;
        match derived {
            Some(kind) if reg.kind & LINKED != 0 => Refresh::Derive(kind),
            _ => Refresh::Ask,
        }
    }

    /// The channels asked every pass that were not asked in pass `pass`
    /// (marked asked now).
    pub fn due_each_pass(&mut self, py: Python<'_>, pass: u64) -> Vec<(RawFd, Py<PyAny>)> {
        let pass = pass_mark(pass);
        let mut regs = self.shared.regs();
        let mut due = Vec::new();
        for fd in &self.asked_each_pass {
            let Some(reg) = regs.get_mut(fd) else {
                continue;
            };
            if reg.asked == pass {
                continue;
            }
            if let Some(obj) = &reg.obj {
                reg.asked = pass;
                due.push((*fd, obj.clone_ref(py)));
            }
        }
        due
    }

    /// Waits for events with the GIL released; returns (fd, poll flags, the
    /// interest it was registered with). The table is locked only before and
    /// after the wait, never during it (a channel in another thread may
    /// leave meanwhile).
    pub fn wait(
        &mut self,
        py: Python<'_>,
        timeout: Option<Duration>,
    ) -> PyResult<Vec<(RawFd, u32, u8)>> {
        let mut ready = self.always_ready();
        let timeout = if ready.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let first_polled = ready.len();
        let events = &mut self.events;
        self.shared
            .poller()
            .wait(py, events, timeout, |fd, flags| ready.push((fd, flags, 0)))?;
        let regs = self.shared.regs();
        let mut i = first_polled;
        while i < ready.len() {
            let (fd, flags, _) = ready[i];
            if let Some(reg) = regs.get(&fd) {
                ready[i] = (fd, poll_flags(flags, reg.want), reg.want);
                i += 1;
            } else {
                ready.swap_remove(i);
            }
        }
        Ok(ready)
    }

    /// The events of the fds outside the kernel's set: regular files are
    /// always ready, invalid fds report POLLNVAL (as poll(2) does).
    fn always_ready(&self) -> Vec<(RawFd, u32, u8)> {
        let mut ready = Vec::new();
        if self.special.is_empty() {
            return ready;
        }
        let regs = self.shared.regs();
        for fd in &self.special {
            let Some(reg) = regs.get(fd) else {
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
        ready
    }

    /// After a pass: channels that left the poller (del_channel) were let go
    /// of then, so nothing here keeps a closed channel alive; their
    /// registrations go now. Returns their keys, to be looked up again: if one
    /// is back in the map, it is registered again.
    pub fn settle(&mut self, py: Python<'_>) -> Vec<Py<PyAny>> {
        let mut keys = Vec::new();
        for fd in self.shared.take_gone() {
            let gone = self.shared.regs().get(&fd).is_some_and(|r| r.obj.is_none());
            if !gone {
                continue; // registered again since, under the same fd
            }
            if let Some(reg) = self.take(fd) {
                keys.push(reg.key.clone_ref(py));
                drop(reg);
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
        self.shared.traverse(visit)
    }
}

impl Drop for Registrations {
    /// Unlinks the channels still linked here. Not while the interpreter
    /// shuts down (no Python to reach them through): their links then keep
    /// only this state's shared part alive, which nothing polls.
    fn drop(&mut self) {
        let _ = Python::try_attach(|py| {
            let linked: Vec<Py<PyAny>> = self
                .shared
                .regs()
                .values()
                .filter(|r| r.kind & LINKED != 0)
                .filter_map(|r| r.obj.as_ref().map(|o| o.clone_ref(py)))
                .collect();
            for obj in &linked {
                detach(Some(obj), &self.shared);
            }
            drop(linked);
        });
    }
}

/// Unlinks `obj`, a dispatcher, from the loop state `shared`.
fn detach(obj: Option<&Py<PyAny>>, shared: &Arc<LoopShared>) {
    if let Some(obj) = obj {
        Python::attach(|py| {
            if let Ok(d) = obj.bind(py).cast::<Dispatcher>() {
                d.get().detach(py, shared);
            }
        });
    }
}
