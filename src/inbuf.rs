//! Owns async_chat's input buffer, in plain Rust (tested with `cargo test`):
//! the bytes received and not yet handed to `collect_incoming_data`.
//!
//! Consuming a message moves an offset instead of copying the rest of the
//! buffer (CPython re-slices `ac_in_buffer` for every message). While
//! `collect_incoming_data` runs, an assignment to `ac_in_buffer` goes to a
//! new buffer and the old one is kept: CPython's `handle_read` then
//! overwrites the attribute with the slice of the buffer it had before the
//! call, and `end_callback` does the same.
//!
//! Uses nothing from the crate.

/// What is left of the buffer after `collect_incoming_data` returns.
pub enum Consume {
    /// Nothing.
    All,
    /// All but the first `n` bytes.
    Front(usize),
}

/// Allocated at the first byte received (or assigned), so an idle channel,
/// and every channel class that never reads through asynchat, pays one
/// pointer for it. Once made it is kept: a read per event must not allocate.
#[derive(Default)]
pub struct InBuf(Option<Box<Parts>>);

impl InBuf {
    /// No buffer yet (for a `static`).
    pub const EMPTY: InBuf = InBuf(None);
}

#[derive(Default)]
struct Parts {
    /// `ac_in_buffer` is `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    /// Inside a `collect_incoming_data` call.
    in_callback: bool,
    /// The buffer as it was before an assignment made during that call.
    stash: Option<(Vec<u8>, usize)>,
}

impl InBuf {
    fn parts(&mut self) -> &mut Parts {
        self.0.get_or_insert_with(Box::default)
    }

    /// `ac_in_buffer`.
    pub fn data(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], |p| &p.buf[p.start..])
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.parts().buf.extend_from_slice(data);
        }
    }

    /// `self.ac_in_buffer = data`.
    pub fn assign(&mut self, data: &[u8]) {
        if data.is_empty() && self.0.is_none() {
            return; // `ac_in_buffer = b''` on a channel that never received
        }
        let p = self.parts();
        if p.in_callback && p.stash.is_none() {
            let old = std::mem::take(&mut p.buf);
            p.stash = Some((old, p.start));
        }
        p.buf.clear();
        p.buf.extend_from_slice(data);
        p.start = 0;
    }

    /// `collect_incoming_data` is about to run.
    pub fn begin_callback(&mut self) {
        self.parts().in_callback = true;
    }

    /// `collect_incoming_data` returned (`completed`) or raised. After a
    /// return, an assignment it made is undone, as CPython's handle_read
    /// overwrites it; after an exception it stays.
    pub fn end_callback(&mut self, completed: bool) {
        let Some(p) = self.0.as_deref_mut() else {
            return;
        };
        p.in_callback = false;
        let stash = p.stash.take();
        if let (true, Some((buf, start))) = (completed, stash) {
            p.buf = buf;
            p.start = start;
        }
    }

    /// Drops consumed input; returns whether input is left.
    pub fn consume(&mut self, how: &Consume) -> bool {
        let Some(p) = self.0.as_deref_mut() else {
            return false;
        };
        match *how {
            Consume::All => p.clear(),
            Consume::Front(k) => {
                p.start += k;
                if p.start >= p.buf.len() {
                    p.clear();
                }
            }
        }
        !self.data().is_empty()
    }

    /// Keeps idle channels small: a drained buffer gives back large capacity,
    /// and a kept partial message moves to the front.
    pub fn shrink(&mut self) {
        let Some(p) = self.0.as_deref_mut() else {
            return;
        };
        if p.start >= p.buf.len() {
            p.clear();
            if p.buf.capacity() > 16 * 1024 {
                p.buf = Vec::new();
            }
        } else if p.start > 0 {
            p.buf.drain(..p.start);
            p.start = 0;
        }
    }
}

impl Parts {
    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(data: &[u8]) -> InBuf {
        let mut b = InBuf::default();
        b.extend(data);
        b
    }

    #[test]
    fn consuming_moves_the_offset_and_keeps_the_rest() {
        let mut b = filled(b"one\ntwo\nthr");
        assert!(b.consume(&Consume::Front(4)));
        assert_eq!(b.data(), b"two\nthr");
        assert!(b.consume(&Consume::Front(4)));
        assert_eq!(b.data(), b"thr");
        b.extend(b"ee\n");
        assert_eq!(b.data(), b"three\n");
        assert!(!b.consume(&Consume::Front(6)));
        assert_eq!(b.data(), b"");
        let mut b = filled(b"abc");
        assert!(!b.consume(&Consume::All));
        assert!(!filled(b"abc").consume(&Consume::Front(10)));
    }

    #[test]
    fn assignment_inside_the_callback_is_overwritten_after_it() {
        let mut b = filled(b"head\ntail");
        b.begin_callback();
        b.assign(b"replaced");
        assert_eq!(b.data(), b"replaced");
        b.assign(b"twice");
        b.end_callback(true);
        // CPython: self.ac_in_buffer = <the old buffer>[index + len(terminator):]
        assert!(b.consume(&Consume::Front(5)));
        assert_eq!(b.data(), b"tail");
    }

    #[test]
    fn assignment_stays_when_the_callback_raises() {
        let mut b = filled(b"head\ntail");
        b.begin_callback();
        b.assign(b"replaced");
        b.end_callback(false);
        assert_eq!(b.data(), b"replaced");
    }

    #[test]
    fn assignment_outside_the_callback_replaces() {
        let mut b = filled(b"abc");
        b.consume(&Consume::Front(1));
        b.assign(b"xyz");
        assert_eq!(b.data(), b"xyz");
    }

    #[test]
    fn nothing_is_allocated_until_data_arrives() {
        let mut b = InBuf::default();
        b.extend(b"");
        b.assign(b"");
        assert!(!b.consume(&Consume::All));
        b.shrink();
        b.end_callback(true);
        assert!(b.0.is_none());
        assert_eq!(b.data(), b"");
        b.extend(b"x");
        assert!(b.0.is_some());
        assert_eq!(b.data(), b"x");
    }

    #[test]
    fn shrink_compacts_and_releases() {
        let mut b = filled(b"done\npartial");
        b.consume(&Consume::Front(5));
        b.shrink();
        assert_eq!(b.data(), b"partial");
        assert_eq!(b.0.as_deref().map(|p| p.start), Some(0));
        let mut big = filled(&vec![b'x'; 64 * 1024]);
        big.consume(&Consume::All);
        big.shrink();
        assert_eq!(big.0.as_deref().map(|p| p.buf.capacity()), Some(0));
    }
}
