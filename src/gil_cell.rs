//! Owns `GilCell`: state that the GIL guards, instead of a lock of its own.
//!
//! A channel's fields are read and written several times per event (per
//! message, for async_chat). A `std::sync::Mutex` makes each access a locked
//! compare-and-swap and a locked swap: about 17 ns a pair on our benchmark
//! machines, against 3 ns for a plain flag, and some six pairs per line of
//! the lines scenario. Every access already holds the GIL (it takes a
//! `Python` token, which only an attached thread has), and on a CPython with
//! a GIL one attached thread runs at a time: the GIL is the lock. What is
//! left to guard against is re-entry on the same thread (a borrow taken
//! while one is live, which a Mutex turns into a deadlock): a plain flag
//! catches it.
//!
//! The free-threaded build (3.13t, 3.14t; not supported, docs/install.rst)
//! may run attached threads side by side: there `GilCell` is a Mutex.
//!
//! Uses nothing from the crate.

use std::ops::{Deref, DerefMut};

use pyo3::Python;

#[cfg(not(Py_GIL_DISABLED))]
pub use with_gil::{GilCell, GilRef};
#[cfg(Py_GIL_DISABLED)]
pub use without_gil::{GilCell, GilRef};

#[cfg(not(Py_GIL_DISABLED))]
mod with_gil {
    use super::{Deref, DerefMut, Python};
    use std::cell::{Cell, UnsafeCell};
    use std::marker::PhantomData;

    pub struct GilCell<T> {
        borrowed: Cell<bool>,
        value: UnsafeCell<T>,
    }

    // SAFETY: every access to `value` and `borrowed` goes through `borrow`
    // or `try_borrow`, which take a `Python` token: the calling thread is
    // attached to the interpreter and holds the GIL (this build has one), so
    // no two threads touch the cell at once. `T: Send` because the value
    // may be used, and dropped, by whichever thread holds the GIL.
    unsafe impl<T: Send> Sync for GilCell<T> {}

    impl<T> GilCell<T> {
        pub const fn new(value: T) -> Self {
            GilCell {
                borrowed: Cell::new(false),
                value: UnsafeCell::new(value),
            }
        }

        /// The value, for the length of the returned guard. Taking a second
        /// borrow while one is live is a bug in this crate (a Mutex would
        /// deadlock there): it panics, which pyo3 raises as PanicException.
        pub fn borrow(&self, py: Python<'_>) -> GilRef<'_, T> {
            match self.try_borrow(py) {
                Some(r) => r,
                None => already_borrowed(),
            }
        }

        /// The value if no borrow is live (for `__traverse__` and
        /// `__clear__`, which must neither block nor panic).
        pub fn try_borrow(&self, _py: Python<'_>) -> Option<GilRef<'_, T>> {
            if self.borrowed.replace(true) {
                return None;
            }
            Some(GilRef {
                cell: self,
                _not_send: PhantomData,
            })
        }
    }

    #[cold]
    #[inline(never)]
    fn already_borrowed() -> ! {
        panic!("asyncore-rs: a channel's state was borrowed twice (please report this bug)")
    }

    /// Not Send (the raw-pointer marker): a borrow stays on the thread
    /// that holds the GIL, never moves into a `Python::detach` closure.
    pub struct GilRef<'a, T> {
        cell: &'a GilCell<T>,
        _not_send: PhantomData<*mut ()>,
    }

    impl<T> Deref for GilRef<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: this guard is the only live borrow (`borrowed` was
            // false when it was made and stays true until it drops), and the
            // GIL keeps other threads out (see the Sync impl).
            unsafe { &*self.cell.value.get() }
        }
    }

    impl<T> DerefMut for GilRef<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as in `deref`; `&mut self` makes this the only
            // reference made through the guard.
            unsafe { &mut *self.cell.value.get() }
        }
    }

    impl<T> Drop for GilRef<'_, T> {
        fn drop(&mut self) {
            self.cell.borrowed.set(false);
        }
    }
}

#[cfg(Py_GIL_DISABLED)]
mod without_gil {
    use super::{Deref, DerefMut, Python};
    use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

    pub struct GilCell<T>(Mutex<T>);

    impl<T> GilCell<T> {
        pub const fn new(value: T) -> Self {
            GilCell(Mutex::new(value))
        }

        pub fn borrow(&self, _py: Python<'_>) -> GilRef<'_, T> {
            GilRef(self.0.lock().unwrap_or_else(PoisonError::into_inner))
        }

        pub fn try_borrow(&self, _py: Python<'_>) -> Option<GilRef<'_, T>> {
            match self.0.try_lock() {
                Ok(g) => Some(GilRef(g)),
                Err(TryLockError::Poisoned(p)) => Some(GilRef(p.into_inner())),
                Err(TryLockError::WouldBlock) => None,
            }
        }
    }

    pub struct GilRef<'a, T>(MutexGuard<'a, T>);

    impl<T> Deref for GilRef<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    impl<T> DerefMut for GilRef<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.0
        }
    }
}
