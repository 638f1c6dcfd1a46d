//! Reading request lines, shared by every control socket server (the daemon's, the host
//! watcher's).

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use super::MAX_MESSAGE;
use super::reply::{Done, ErrorClass, error, response};

/// What [`read_request`] found.
pub enum Read {
    /// The connection ended (or failed).
    End,
    /// A line longer than [`MAX_MESSAGE`]: answer with this `overlong` error and close.
    Overlong(String),
    /// A blank line: skip it.
    Blank,
    /// A request line, in the buffer.
    Line,
}

/// Read the next request line (at most [`MAX_MESSAGE`] bytes) into `line`. Shared by every
/// control socket (the daemon's, the host watcher's).
pub async fn read_request<R: AsyncBufRead + Unpin>(reader: &mut R, line: &mut Vec<u8>) -> Read {
    line.clear();
    match reader
        .take(MAX_MESSAGE as u64 + 1)
        .read_until(b'\n', line)
        .await
    {
        Ok(0) | Err(_) => return Read::End,
        Ok(_) => {}
    }
    if line.len() > MAX_MESSAGE {
        let body = error(
            ErrorClass::Overlong,
            format!("request longer than {MAX_MESSAGE} bytes; closing"),
        );
        return Read::Overlong(response::<Done>(&None, Err(body)));
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Read::Blank;
    }
    Read::Line
}
