//! The host → guest line protocol, pure and bounded (no I/O).
//!
//! One notification per line:
//! - `CHANNEL\n`: something changed in the folders mapped to CHANNEL (compatible with
//!   virtiofs-notify);
//! - `CHANNEL\tRELPATH\n`: the change is scoped to RELPATH, relative to the mapped folder.
//!
//! `\r\n` is accepted, surrounding whitespace is trimmed and empty lines are ignored. A line longer
//! than [`MAX_LINE`] bytes makes the peer's connection close ([`Dropped::Overlong`]); any other bad
//! line is dropped and the connection goes on. Nothing here panics, whatever the input.

use thiserror::Error;

/// Longest accepted line, in bytes, without its terminator.
pub const MAX_LINE: usize = 4096;
/// Longest accepted channel name, in bytes.
pub const MAX_CHANNEL: usize = 255;
/// Longest accepted relative path, in bytes (PATH_MAX).
pub const MAX_RELPATH: usize = 4096;

/// One decoded notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The channel (validated with [`validate_channel`]).
    pub channel: String,
    /// The relative path it is scoped to (validated with [`validate_relpath`]); `None` means
    /// the whole channel.
    pub path: Option<String>,
}

/// Why a channel name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL} bytes")]
    TooLong,
    #[error("channel name contains a control character")]
    ControlChar,
}

/// Why a relative path is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RelpathError {
    #[error("path is absolute (starts with '/')")]
    Absolute,
    #[error("path has a '..' component")]
    DotDot,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is empty")]
    Empty,
    #[error("path is longer than {MAX_RELPATH} bytes")]
    TooLong,
}

/// Why one line is refused (the connection goes on).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    #[error("line is not UTF-8")]
    NonUtf8,
    #[error("bad channel: {0}")]
    BadChannel(#[from] ChannelError),
    #[error("bad relative path: {0}")]
    BadRelpath(#[from] RelpathError),
    #[error("line is longer than {MAX_LINE} bytes")]
    Overlong,
}

/// Something the decoder dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Dropped {
    /// A line went over [`MAX_LINE`]: the connection must be closed; the decoder yields nothing
    /// more.
    #[error("line longer than {MAX_LINE} bytes")]
    Overlong,
    /// One bad line; the connection goes on.
    #[error("{0}")]
    Line(LineError),
}

/// Check a channel name: non-empty, at most [`MAX_CHANNEL`] bytes, no control characters.
pub fn validate_channel(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL {
        return Err(ChannelError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(ChannelError::ControlChar);
    }
    Ok(())
}

/// Validate and normalise a relative path: no leading `/`, no `..` component, no NUL, at most
/// [`MAX_RELPATH`] bytes, and not empty once `.` components and repeated `/` are removed.
/// Returns the normalised form (`a//./b/` → `a/b`).
pub fn validate_relpath(path: &str) -> Result<String, RelpathError> {
    if path.len() > MAX_RELPATH {
        return Err(RelpathError::TooLong);
    }
    if path.contains('\0') {
        return Err(RelpathError::Nul);
    }
    if path.starts_with('/') {
        return Err(RelpathError::Absolute);
    }
    let mut parts: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(RelpathError::DotDot),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Err(RelpathError::Empty);
    }
    Ok(parts.join("/"))
}

/// Parse one line (without or with its `\n` / `\r\n` terminator). An empty (or all-whitespace)
/// line yields `Ok(None)`.
pub fn parse_line(line: &[u8]) -> Result<Option<Notification>, LineError> {
    if line.len() > MAX_LINE + 2 {
        return Err(LineError::Overlong);
    }
    let text = std::str::from_utf8(line).map_err(|_| LineError::NonUtf8)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_LINE {
        return Err(LineError::Overlong);
    }
    let (channel, path) = match text.split_once('\t') {
        Some((c, p)) => (c, Some(p)),
        None => (text, None),
    };
    validate_channel(channel)?;
    let path = match path {
        Some(p) => Some(validate_relpath(p)?),
        None => None,
    };
    Ok(Some(Notification {
        channel: channel.to_string(),
        path,
    }))
}

/// Incremental decoder for one connection. Buffers at most [`MAX_LINE`] + 2 bytes.
#[derive(Debug, Default)]
pub struct LineDecoder {
    buf: Vec<u8>,
    closed: bool,
}

impl LineDecoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an overlong line was seen: the caller must close the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes of the current partial line (discarded if the connection drops).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feed bytes; returns the notifications and drops of every line completed by them, in order.
    /// After a [`Dropped::Overlong`], returns nothing more.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Result<Notification, Dropped>> {
        let mut out = Vec::new();
        while !self.closed && !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let (head, rest) = bytes.split_at(end);
                    bytes = rest.get(1..).unwrap_or_default();
                    if self.buf.len() + head.len() > MAX_LINE + 1 {
                        self.overlong(&mut out);
                        break;
                    }
                    let result = if self.buf.is_empty() {
                        parse_line(head)
                    } else {
                        self.buf.extend_from_slice(head);
                        let r = parse_line(&self.buf);
                        self.buf.clear();
                        r
                    };
                    match result {
                        Ok(Some(n)) => out.push(Ok(n)),
                        Ok(None) => {}
                        Err(LineError::Overlong) => {
                            self.overlong(&mut out);
                            break;
                        }
                        Err(e) => out.push(Err(Dropped::Line(e))),
                    }
                }
                None => {
                    // Allow one byte over MAX_LINE for a '\r' before the '\n'.
                    if self.buf.len() + bytes.len() > MAX_LINE + 1 {
                        self.overlong(&mut out);
                        break;
                    }
                    self.buf.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
        out
    }

    fn overlong(&mut self, out: &mut Vec<Result<Notification, Dropped>>) {
        self.closed = true;
        self.buf = Vec::new();
        out.push(Err(Dropped::Overlong));
    }
}

// ---------------------------------------------------------------------------------------------
// Lines of the tool itself, under a reserved channel prefix (no channel may use it).

/// Channel names with this prefix are reserved for lines of the tool's own (keepalives, the
/// barrier's hello, sync and ack): a guest that does not know them reads an unknown channel.
pub const RESERVED_PREFIX: &str = "vfnotify.";
/// The keepalive line.
pub const KEEPALIVE_LINE: &str = "vfnotify.keepalive\n";
/// The barrier protocol version the host offers and the guest answers.
pub const VERSION: u32 = 1;
/// The host's hello, first on every connection.
pub const HELLO_LINE: &str = "vfnotify.hello\t1\n";
/// Channel names of the barrier's lines (under the reserved `vfnotify.` prefix).
pub const HELLO: &str = "vfnotify.hello";
pub const SYNC: &str = "vfnotify.sync";
pub const ACK: &str = "vfnotify.ack";

/// The line asking a guest to acknowledge everything before it.
pub fn sync_line(id: u64) -> String {
    format!("{SYNC}\t{id}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(c: &str, p: Option<&str>) -> Notification {
        Notification {
            channel: c.into(),
            path: p.map(Into::into),
        }
    }

    #[test]
    fn plain_and_scoped_lines() {
        assert_eq!(parse_line(b"docs\n"), Ok(Some(n("docs", None))));
        assert_eq!(parse_line(b"docs\r\n"), Ok(Some(n("docs", None))));
        assert_eq!(parse_line(b"  docs  "), Ok(Some(n("docs", None))));
        assert_eq!(
            parse_line(b"docs\ta/b.txt\n"),
            Ok(Some(n("docs", Some("a/b.txt"))))
        );
        assert_eq!(
            parse_line(b"docs\t./a//b/\n"),
            Ok(Some(n("docs", Some("a/b"))))
        );
        assert_eq!(
            parse_line(b"my docs\tx y\n"),
            Ok(Some(n("my docs", Some("x y"))))
        );
        assert_eq!(parse_line(b"docs\t\n"), Ok(Some(n("docs", None))));
    }

    #[test]
    fn empty_lines_are_ignored() {
        assert_eq!(parse_line(b""), Ok(None));
        assert_eq!(parse_line(b"\r\n"), Ok(None));
        assert_eq!(parse_line(b" \t "), Ok(None));
    }

    #[test]
    fn bad_lines() {
        assert_eq!(parse_line(b"\xff\xfe\n"), Err(LineError::NonUtf8));
        // Leading whitespace (even a tab) is trimmed with the line.
        assert_eq!(parse_line(b"\tfoo"), Ok(Some(n("foo", None))));
        assert_eq!(validate_channel(""), Err(ChannelError::Empty));
        assert_eq!(
            parse_line(b"a\x01b"),
            Err(LineError::BadChannel(ChannelError::ControlChar))
        );
        let long = "c".repeat(MAX_CHANNEL + 1);
        assert_eq!(
            parse_line(long.as_bytes()),
            Err(LineError::BadChannel(ChannelError::TooLong))
        );
        assert_eq!(
            parse_line(b"d\t/etc"),
            Err(LineError::BadRelpath(RelpathError::Absolute))
        );
        assert_eq!(
            parse_line(b"d\ta/../b"),
            Err(LineError::BadRelpath(RelpathError::DotDot))
        );
        assert_eq!(
            parse_line(b"d\ta\0b"),
            Err(LineError::BadRelpath(RelpathError::Nul))
        );
        assert_eq!(
            parse_line(b"d\t./"),
            Err(LineError::BadRelpath(RelpathError::Empty))
        );
        assert_eq!(
            parse_line(&vec![b'a'; MAX_LINE + 3]),
            Err(LineError::Overlong)
        );
    }

    #[test]
    fn relpaths() {
        assert_eq!(validate_relpath("a"), Ok("a".into()));
        assert_eq!(validate_relpath("a/./b//c/"), Ok("a/b/c".into()));
        assert_eq!(validate_relpath("..a/b.."), Ok("..a/b..".into()));
        assert_eq!(validate_relpath(""), Err(RelpathError::Empty));
        assert_eq!(validate_relpath("."), Err(RelpathError::Empty));
        assert_eq!(validate_relpath("//"), Err(RelpathError::Absolute));
        assert_eq!(validate_relpath(".."), Err(RelpathError::DotDot));
        assert_eq!(validate_relpath("a/.."), Err(RelpathError::DotDot));
        assert_eq!(
            validate_relpath(&"a".repeat(MAX_RELPATH + 1)),
            Err(RelpathError::TooLong)
        );
    }

    #[test]
    fn decoder_splits_and_joins() {
        let mut d = LineDecoder::new();
        assert!(d.push(b"do").is_empty());
        assert_eq!(d.pending(), 2);
        let out = d.push(b"cs\nmedia\tx\n\n\xff\nrest");
        assert_eq!(
            out,
            vec![
                Ok(n("docs", None)),
                Ok(n("media", Some("x"))),
                Err(Dropped::Line(LineError::NonUtf8))
            ]
        );
        assert_eq!(d.pending(), 4);
        assert!(!d.is_closed());
    }

    #[test]
    fn decoder_byte_by_byte() {
        let mut d = LineDecoder::new();
        let mut out = Vec::new();
        for b in b"a\tb\r\nc\n" {
            out.extend(d.push(std::slice::from_ref(b)));
        }
        assert_eq!(out, vec![Ok(n("a", Some("b"))), Ok(n("c", None))]);
    }

    #[test]
    fn decoder_overlong_closes() {
        let mut d = LineDecoder::new();
        let mut line = b"c\t".to_vec();
        line.extend(vec![b'x'; MAX_LINE - 2]);
        line.extend_from_slice(b"\r\n");
        assert_eq!(
            d.push(&line),
            vec![Ok(n("c", Some(&"x".repeat(MAX_LINE - 2))))]
        );
        let out = d.push(&vec![b'y'; MAX_LINE + 2]);
        assert_eq!(out, vec![Err(Dropped::Overlong)]);
        assert!(d.is_closed());
        assert_eq!(d.pending(), 0);
        assert!(d.push(b"ok\n").is_empty());
        // Overlong across pushes, then a newline.
        let mut d = LineDecoder::new();
        assert!(d.push(&vec![b'y'; MAX_LINE]).is_empty());
        assert_eq!(d.push(b"yy\n"), vec![Err(Dropped::Overlong)]);
    }

    #[test]
    fn decoder_never_panics_on_garbage() {
        let mut d = LineDecoder::new();
        let mut seed: u32 = 12345;
        for _ in 0..2000 {
            let mut chunk = Vec::new();
            for _ in 0..(seed % 97) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                chunk.push((seed >> 16) as u8);
            }
            let _ = d.push(&chunk);
            assert!(d.pending() <= MAX_LINE + 1);
        }
    }
}
