//! Owns asynchat's terminator scanning over a byte buffer, without Python
//! (tested with `cargo test`).
//!
//! One `find` per message with memchr (a one-byte terminator, such as
//! `b"\n"`, without memmem's searcher dispatch) or memchr's memmem, and
//! CPython's `find_prefix_at_end` for a terminator split across reads.
//!
//! Uses nothing from the crate.

use memchr::memmem::Finder;

/// A compiled bytes terminator: the needle and its memmem searcher.
pub struct Terminator {
    finder: Finder<'static>,
    /// The needle's byte when it is one byte long.
    single: Option<u8>,
}

/// What the scan of the buffer found for a bytes terminator.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The terminator starts at this index.
    Found(usize),
    /// No terminator, but the last `n` bytes are a prefix of it (keep them).
    PrefixAtEnd(usize),
    /// Neither: everything is data.
    Nothing,
}

impl Terminator {
    pub fn new(needle: &[u8]) -> Self {
        Terminator {
            finder: Finder::new(needle).into_owned(),
            single: match needle {
                [b] => Some(*b),
                _ => None,
            },
        }
    }

    pub fn needle(&self) -> &[u8] {
        self.finder.needle()
    }

    pub fn scan(&self, buf: &[u8]) -> Scan {
        let found = match self.single {
            Some(b) => memchr::memchr(b, buf),
            None => self.finder.find(buf),
        };
        if let Some(i) = found {
            return Scan::Found(i);
        }
        match prefix_at_end(buf, self.needle()) {
            0 => Scan::Nothing,
            n => Scan::PrefixAtEnd(n),
        }
    }
}

/// CPython's `asynchat.find_prefix_at_end` for a non-empty needle: the length
/// of the longest proper prefix of `needle` that `haystack` ends with.
pub fn prefix_at_end(haystack: &[u8], needle: &[u8]) -> usize {
    let mut l = needle.len().saturating_sub(1);
    while l > 0 && !haystack.ends_with(&needle[..l]) {
        l -= 1;
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_terminator() {
        let t = Terminator::new(b"\r\n");
        assert_eq!(t.scan(b"abc\r\ndef"), Scan::Found(3));
        assert_eq!(t.scan(b"\r\n"), Scan::Found(0));
    }

    #[test]
    fn keeps_partial_terminator() {
        let t = Terminator::new(b"\r\n");
        assert_eq!(t.scan(b"qwerty\r"), Scan::PrefixAtEnd(1));
        assert_eq!(t.scan(b"qwertydkjf"), Scan::Nothing);
        let t = Terminator::new(b"aab");
        assert_eq!(t.scan(b"xxaa"), Scan::PrefixAtEnd(2));
        assert_eq!(t.scan(b"xxa"), Scan::PrefixAtEnd(1));
    }

    #[test]
    fn prefix_matches_cpython() {
        assert_eq!(prefix_at_end(b"qwerty\r", b"\r\n"), 1);
        assert_eq!(prefix_at_end(b"qwertydkjf", b"\r\n"), 0);
        assert_eq!(prefix_at_end(b"abc", b"\n"), 0);
        assert_eq!(prefix_at_end(b"", b"abc"), 0);
        assert_eq!(prefix_at_end(b"ab", b"abc"), 2);
    }
}
