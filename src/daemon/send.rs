//! `vfnotify send`: the host side, for tests and scripts.

use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::protocol::{ChannelError, RelpathError, validate_channel, validate_relpath};
use crate::transport::{ConnectAddr, TransportError, connect};

/// Default destination vsock CID (the first guest's).
pub const DEFAULT_CID: u32 = 3;

/// What `send` writes where: the encoded lines (see [`encode_lines`]) and the destination.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: ConnectAddr,
    pub lines: Vec<u8>,
}

/// How long `send` waits to connect and write.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of `send`, named for the step that failed.
#[derive(Debug, Error)]
pub enum SendError {
    #[error("bad channel {channel:?}: {source}")]
    Channel {
        channel: String,
        source: ChannelError,
    },
    #[error("bad relative path {path:?}: {source}")]
    Relpath { path: String, source: RelpathError },
    #[error(transparent)]
    Address(TransportError),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Connect(TransportError),
    #[error("writing to {addr} failed: {source}")]
    Write {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out after {secs} s sending to {addr}")]
    Timeout { addr: String, secs: u64 },
}

/// The bytes `send` writes: one line per relative path, or `CHANNEL\n`.
pub fn encode_lines(channel: &str, relpaths: &[String]) -> Result<Vec<u8>, SendError> {
    validate_channel(channel).map_err(|source| SendError::Channel {
        channel: channel.to_string(),
        source,
    })?;
    let mut out = Vec::new();
    if relpaths.is_empty() {
        out.extend_from_slice(channel.as_bytes());
        out.push(b'\n');
    }
    for p in relpaths {
        let norm = validate_relpath(p).map_err(|source| SendError::Relpath {
            path: p.clone(),
            source,
        })?;
        out.extend_from_slice(format!("{channel}\t{norm}\n").as_bytes());
    }
    Ok(out)
}

/// Connect to `addr`, write `bytes`, flush and shut down the write side.
pub async fn send_bytes(addr: &ConnectAddr, bytes: &[u8]) -> Result<(), SendError> {
    let name = addr.to_string();
    let work = async {
        let mut stream = connect(addr).await.map_err(SendError::Connect)?;
        let werr = |source| SendError::Write {
            addr: name.clone(),
            source,
        };
        stream.write_all(bytes).await.map_err(werr)?;
        stream.flush().await.map_err(werr)?;
        stream.shutdown().await.map_err(werr)?;
        Ok(())
    };
    match tokio::time::timeout(SEND_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Timeout {
            addr: name,
            secs: SEND_TIMEOUT.as_secs(),
        }),
    }
}

/// `vfnotify send`: write the lines to the destination.
pub fn run(config: Config) -> Result<(), SendError> {
    let Config { addr, lines: bytes } = config;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SendError::Runtime)?;
    rt.block_on(send_bytes(&addr, &bytes))?;
    tracing::debug!(%addr, bytes = bytes.len(), "sent");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(encode_lines("docs", &[]).unwrap(), b"docs\n");
        assert_eq!(
            encode_lines("docs", &["a/./b".into(), "c".into()]).unwrap(),
            b"docs\ta/b\ndocs\tc\n"
        );
        assert!(matches!(
            encode_lines("", &[]),
            Err(SendError::Channel { .. })
        ));
        assert!(matches!(
            encode_lines("d", &["/x".into()]),
            Err(SendError::Relpath { .. })
        ));
    }
}
