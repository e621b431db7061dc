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

#[derive(Default)]
pub struct InBuf {
    /// `ac_in_buffer` is `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    /// Inside a `collect_incoming_data` call.
    in_callback: bool,
    /// The buffer as it was before an assignment made during that call.
    stash: Option<(Vec<u8>, usize)>,
}

impl InBuf {
    /// `ac_in_buffer`.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// `self.ac_in_buffer = data`.
    pub fn assign(&mut self, data: &[u8]) {
        if self.in_callback && self.stash.is_none() {
            let old = std::mem::take(&mut self.buf);
            self.stash = Some((old, self.start));
        }
        self.buf.clear();
        self.buf.extend_from_slice(data);
        self.start = 0;
    }

    /// `collect_incoming_data` is about to run.
    pub fn begin_callback(&mut self) {
        self.in_callback = true;
    }

    /// `collect_incoming_data` returned (`completed`) or raised. After a
    /// return, an assignment it made is undone, as CPython's handle_read
    /// overwrites it; after an exception it stays.
    pub fn end_callback(&mut self, completed: bool) {
        self.in_callback = false;
        let stash = self.stash.take();
        if let (true, Some((buf, start))) = (completed, stash) {
            self.buf = buf;
            self.start = start;
        }
    }

    /// Drops consumed input; returns whether input is left.
    pub fn consume(&mut self, how: &Consume) -> bool {
        match *how {
            Consume::All => self.clear(),
            Consume::Front(k) => {
                self.start += k;
                if self.start >= self.buf.len() {
                    self.clear();
                }
            }
        }
        !self.data().is_empty()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Keeps idle channels small: a drained buffer gives back large capacity,
    /// and a kept partial message moves to the front.
    pub fn shrink(&mut self) {
        if self.data().is_empty() {
            self.clear();
            if self.buf.capacity() > 16 * 1024 {
                self.buf = Vec::new();
            }
        } else if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
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
    fn shrink_compacts_and_releases() {
        let mut b = filled(b"done\npartial");
        b.consume(&Consume::Front(5));
        b.shrink();
        assert_eq!(b.data(), b"partial");
        assert_eq!(b.start, 0);
        let mut big = filled(&vec![b'x'; 64 * 1024]);
        big.consume(&Consume::All);
        big.shrink();
        assert_eq!(big.buf.capacity(), 0);
    }
}
