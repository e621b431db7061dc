//! Helpers shared by the two benchmark binaries: a tiny `--name value` argument
//! parser, raising the open-file limit, and TCP socket options.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::str::FromStr;

/// Parsed `--name value` / `--flag` command-line options.
pub struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// Parses `std::env::args()`, accepting only the given option names.
    pub fn parse(valued: &[&str], flags: &[&str]) -> Result<Args, String> {
        Self::parse_from(std::env::args().skip(1), valued, flags)
    }

    /// Parses `argv` (without the program name).
    pub fn parse_from<I: Iterator<Item = String>>(
        mut argv: I,
        valued: &[&str],
        flags: &[&str],
    ) -> Result<Args, String> {
        let mut args = Args {
            values: HashMap::new(),
            flags: Vec::new(),
        };
        while let Some(arg) = argv.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (name.to_string(), None),
            };
            if flags.contains(&name.as_str()) {
                args.flags.push(name);
            } else if valued.contains(&name.as_str()) {
                let value = match inline {
                    Some(v) => v,
                    None => argv
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?,
                };
                args.values.insert(name, value);
            } else {
                return Err(format!("unknown option --{name}"));
            }
        }
        Ok(args)
    }

    /// The value of `--name`, or `default` when absent.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("bad value for --{name}: {v:?}")),
        }
    }

    /// The value of `--name` as a string, or `default` when absent.
    pub fn get_str(&self, name: &str, default: &str) -> String {
        self.values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    /// Whether `--name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name) || self.values.contains_key(name)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Sets an integer socket option.
pub fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Disables Nagle's algorithm on a TCP socket.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Quotes a string as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_flags() {
        let argv = ["--port", "80", "--mode=lines", "--quiet"].map(String::from);
        let args = Args::parse_from(argv.into_iter(), &["port", "mode"], &["quiet"]).unwrap();
        assert_eq!(args.get::<u16>("port", 0).unwrap(), 80);
        assert_eq!(args.get_str("mode", "echo"), "lines");
        assert!(args.has("quiet"));
        assert_eq!(args.get::<u32>("conns", 7).unwrap(), 7);
    }

    #[test]
    fn rejects_unknown_options() {
        let argv = ["--nope", "1"].map(String::from);
        assert!(Args::parse_from(argv.into_iter(), &["port"], &[]).is_err());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
