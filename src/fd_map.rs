//! Owns the hash maps and sets keyed by file descriptor (an identity hash).
//!
//! Uses nothing from the crate.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A map key's descriptor: the fd on POSIX. On Windows, the SOCKET handle as
/// CPython's select() takes it (`PyObject_AsFileDescriptor`, a C int).
#[cfg(unix)]
pub use std::os::fd::RawFd;
#[cfg(windows)]
pub type RawFd = std::ffi::c_int;

/// fds are small, distinct integers: they hash to themselves (SipHash showed
/// in profiles of the event path).
#[derive(Default)]
pub struct FdHasher(u64);

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_i32(&mut self, i: i32) {
        self.0 = u64::from(i as u32);
    }
}

pub type FdHash = BuildHasherDefault<FdHasher>;
pub type FdMap<V> = HashMap<RawFd, V, FdHash>;
pub type FdSet = HashSet<RawFd, FdHash>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_hasher_is_identity_for_fds() {
        let mut h = FdHasher::default();
        h.write_i32(1234);
        assert_eq!(h.finish(), 1234);
        let mut set = FdSet::default();
        assert!(set.insert(3) && set.insert(1 << 20) && !set.insert(3));
    }
}
