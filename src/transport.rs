//! Listeners (vsock and Unix) injected into the daemon, the vsock peer-CID policy, and the
//! host-side connectors used by `vfnotify send`.
//!
//! The daemon is generic over [`Listener`]; tests use `unix:` listeners since there is no vsock
//! loopback everywhere. The vsock path is kept thin (tokio-vsock).

use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::sys;

/// The host's CID.
pub const HOST_CID: u32 = 2;
/// Default vsock port of the guest daemon, as in the original virtiofs-notify.
pub const DEFAULT_PORT: u32 = 3401;

/// Errors of this module, named for the step that failed.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("--listen {arg:?}: expected vsock:PORT or unix:PATH")]
    ParseListen { arg: String },
    #[error("--to {arg:?}: expected unix:PATH, vsock:CID:PORT or hvsock:PATH:PORT")]
    ParseConnect { arg: String },
    #[error("--allow-cid {arg:?}: expected a CID number or `any`")]
    ParseCid { arg: String },
    #[error("cannot create folder {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("another process is already listening on {path}")]
    AddressInUse { path: PathBuf },
    #[error("cannot remove stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot set the mode of {path}: {source}")]
    Chmod { path: PathBuf, source: io::Error },
    #[error("cannot move the socket into place at {path}: {source}")]
    Rename { path: PathBuf, source: io::Error },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("hybrid-vsock handshake with {addr} failed: {detail}")]
    Handshake { addr: String, detail: String },
    #[error("writing to {addr} failed: {source}")]
    Write { addr: String, source: io::Error },
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// vsock, any local CID.
    Vsock { port: u32 },
    /// A Unix stream socket.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Vsock { port } => write!(f, "vsock:{port}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parse `vsock:PORT` or `unix:PATH`.
pub fn parse_listen(arg: &str) -> Result<ListenAddr, TransportError> {
    let bad = || TransportError::ParseListen {
        arg: arg.to_string(),
    };
    if let Some(port) = arg.strip_prefix("vsock:") {
        let port = port.parse::<u32>().map_err(|_| bad())?;
        Ok(ListenAddr::Vsock { port })
    } else if let Some(path) = arg.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad());
        }
        Ok(ListenAddr::Unix(PathBuf::from(path)))
    } else {
        Err(bad())
    }
}

/// Where `send` connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectAddr {
    Unix(PathBuf),
    Vsock {
        cid: u32,
        port: u32,
    },
    /// A Unix socket speaking the hybrid-vsock handshake (`CONNECT <port>\n` → `OK ...\n`).
    HybridVsock {
        path: PathBuf,
        port: u32,
    },
}

impl fmt::Display for ConnectAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ConnectAddr::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            ConnectAddr::HybridVsock { path, port } => {
                write!(f, "hvsock:{}:{port}", path.display())
            }
        }
    }
}

/// Parse `unix:PATH`, `vsock:CID:PORT` or `hvsock:PATH:PORT`.
pub fn parse_connect(arg: &str) -> Result<ConnectAddr, TransportError> {
    let bad = || TransportError::ParseConnect {
        arg: arg.to_string(),
    };
    if let Some(path) = arg.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad());
        }
        Ok(ConnectAddr::Unix(PathBuf::from(path)))
    } else if let Some(rest) = arg.strip_prefix("vsock:") {
        let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
        Ok(ConnectAddr::Vsock {
            cid: cid.parse().map_err(|_| bad())?,
            port: port.parse().map_err(|_| bad())?,
        })
    } else if let Some(rest) = arg.strip_prefix("hvsock:") {
        let (path, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        if path.is_empty() {
            return Err(bad());
        }
        Ok(ConnectAddr::HybridVsock {
            path: PathBuf::from(path),
            port: port.parse().map_err(|_| bad())?,
        })
    } else {
        Err(bad())
    }
}

/// Which vsock peers are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidPolicy {
    Any,
    Only(Vec<u32>),
}

impl Default for CidPolicy {
    fn default() -> Self {
        CidPolicy::Only(vec![HOST_CID])
    }
}

impl fmt::Display for CidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidPolicy::Any => write!(f, "any"),
            CidPolicy::Only(cids) => {
                let s: Vec<String> = cids.iter().map(u32::to_string).collect();
                write!(f, "{}", s.join(","))
            }
        }
    }
}

/// Parse the `--allow-cid` arguments (none → the host only).
pub fn parse_allow_cid(args: &[String]) -> Result<CidPolicy, TransportError> {
    if args.is_empty() {
        return Ok(CidPolicy::default());
    }
    let mut cids = Vec::new();
    let mut any = false;
    for arg in args {
        if arg == "any" {
            any = true;
        } else {
            cids.push(
                arg.parse::<u32>()
                    .map_err(|_| TransportError::ParseCid { arg: arg.clone() })?,
            );
        }
    }
    Ok(if any {
        CidPolicy::Any
    } else {
        CidPolicy::Only(cids)
    })
}

/// Who connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAddr {
    Unix,
    Vsock { cid: u32, port: u32 },
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Unix => write!(f, "unix peer"),
            PeerAddr::Vsock { cid, port } => write!(f, "vsock {cid}:{port}"),
        }
    }
}

/// The peer policy: may this peer talk to us? Decided before any byte is read. Unix peers are
/// always accepted (the socket's file mode guards them).
pub fn peer_allowed(policy: &CidPolicy, peer: &PeerAddr) -> bool {
    match (policy, peer) {
        (_, PeerAddr::Unix) => true,
        (CidPolicy::Any, PeerAddr::Vsock { .. }) => true,
        (CidPolicy::Only(cids), PeerAddr::Vsock { cid, .. }) => cids.contains(cid),
    }
}

/// A listener the daemon accepts peers from.
pub trait Listener: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Accept the next peer.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, PeerAddr)>> + Send;
    /// Human-readable address (`vsock:3401`, `unix:/path`).
    fn describe(&self) -> String;
}

/// A Unix listener; removes its socket file on drop if it is still the one it bound.
#[derive(Debug)]
pub struct UnixListener {
    inner: tokio::net::UnixListener,
    path: PathBuf,
    ino: Option<(u64, u64)>,
}

impl UnixListener {
    /// Bind `path` (see [`bind_unix`]) with `mode`.
    pub fn bind(path: &Path, mode: u32) -> Result<Self, TransportError> {
        let std = bind_unix(path, mode)?;
        let ino = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let inner =
            tokio::net::UnixListener::from_std(std).map_err(|source| TransportError::Bind {
                addr: path.display().to_string(),
                source,
            })?;
        Ok(UnixListener {
            inner,
            path: path.to_path_buf(),
            ino,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying listener.
    pub fn inner(&self) -> &tokio::net::UnixListener {
        &self.inner
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let still_ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()))
            .is_some_and(|id| Some(id) == self.ino);
        if still_ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<(Self::Stream, PeerAddr)> {
        let (s, _) = self.inner.accept().await?;
        Ok((s, PeerAddr::Unix))
    }
    fn describe(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

/// A vsock listener (any local CID).
pub struct VsockListener {
    inner: tokio_vsock::VsockListener,
    port: u32,
}

impl VsockListener {
    /// Bind `port` on any local CID.
    pub fn bind(port: u32) -> Result<Self, TransportError> {
        let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
        let inner =
            tokio_vsock::VsockListener::bind(addr).map_err(|source| TransportError::Bind {
                addr: format!("vsock:{port}"),
                source,
            })?;
        Ok(VsockListener { inner, port })
    }
}

impl Listener for VsockListener {
    type Stream = tokio_vsock::VsockStream;
    async fn accept(&self) -> io::Result<(Self::Stream, PeerAddr)> {
        let (s, addr) = self.inner.accept().await?;
        Ok((
            s,
            PeerAddr::Vsock {
                cid: addr.cid(),
                port: addr.port(),
            },
        ))
    }
    fn describe(&self) -> String {
        format!("vsock:{}", self.port)
    }
}

/// Bind in a fresh private folder next to `path`, chmod, rename into place, remove the folder.
fn bind_private(
    path: &Path,
    mode: u32,
) -> Result<std::os::unix::net::UnixListener, TransportError> {
    use std::os::fd::{AsFd, AsRawFd};
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default();
    let io_err = |source: io::Error| TransportError::Bind {
        addr: path.display().to_string(),
        source,
    };
    let cname = sys::cstr(name).map_err(io_err)?;
    let pdir = sys::openat(
        sys::cwd(),
        &sys::cstr(parent.as_os_str()).map_err(io_err)?,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(io_err)?;
    // A name of our own: mkdirat fails rather than reuse anything already there.
    let mut made = None;
    for i in 0..100u32 {
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{}.{i}.tmp", std::process::id()));
        let ctmp = sys::cstr(&tmp).map_err(io_err)?;
        match sys::mkdirat(pdir.as_fd(), &ctmp, 0o700) {
            Ok(()) => {
                made = Some(ctmp);
                break;
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    let ctmp = made.ok_or_else(|| io_err(io::Error::from_raw_os_error(libc::EEXIST)))?;
    let result = (|| {
        let priv_dir = sys::openat(
            pdir.as_fd(),
            &ctmp,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(io_err)?;
        // Through the descriptor's /proc link: the folder we made, wherever it is renamed to.
        let inside = PathBuf::from(format!("/proc/self/fd/{}", priv_dir.as_raw_fd())).join(name);
        let listener = std::os::unix::net::UnixListener::bind(&inside).map_err(io_err)?;
        let done = (|| {
            sys::fchmodat(priv_dir.as_fd(), &cname, mode).map_err(|source| {
                TransportError::Chmod {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            sys::renameat2(priv_dir.as_fd(), &cname, pdir.as_fd(), &cname, 0).map_err(|source| {
                TransportError::Rename {
                    path: path.to_path_buf(),
                    source,
                }
            })
        })();
        if done.is_err() {
            let _ = sys::unlinkat(priv_dir.as_fd(), &cname, 0);
        }
        done.map(|()| listener)
    })();
    let _ = sys::unlinkat(pdir.as_fd(), &ctmp, libc::AT_REMOVEDIR);
    result
}

/// Whether a process accepts connections on the Unix socket at `path`.
pub fn socket_is_live(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
        && std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Bind a Unix stream socket at `path` with file mode `mode`:
/// - the parent folder is created (mode 0755) if missing;
/// - an existing socket nobody answers on (left by a dead process) is replaced;
/// - an existing socket someone answers on → [`TransportError::AddressInUse`];
/// - an existing non-socket → [`TransportError::NotASocket`].
///
/// The socket is bound in a private folder (mode 0700, made next to `path`), given its mode
/// there, then renamed into place: nobody can connect before the mode is set, and every step
/// works on descriptors of the two folders, never on a path another user could swap for a
/// symlink (the parent may be writable by others, like `/tmp`).
pub fn bind_unix(
    path: &Path,
    mode: u32,
) -> Result<std::os::unix::net::UnixListener, TransportError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|source| TransportError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(TransportError::AddressInUse {
                        path: path.to_path_buf(),
                    });
                }
                Err(_) => {
                    tracing::info!(path = %path.display(), "replacing a stale socket");
                }
            }
        }
        Ok(_) => {
            return Err(TransportError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(_) => {}
    }
    let listener = bind_private(path, mode)?;
    listener
        .set_nonblocking(true)
        .map_err(|source| TransportError::Bind {
            addr: path.display().to_string(),
            source,
        })?;
    Ok(listener)
}

/// Longest handshake reply accepted from a hybrid-vsock socket.
const MAX_HANDSHAKE_LINE: u64 = 512;

/// A connected host-side stream.
pub type BoxedStream = Box<dyn AsyncWriteRead>;

/// Read + write, boxed.
pub trait AsyncWriteRead: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncWriteRead for T {}

/// Connect to `addr` (performing the hybrid-vsock handshake when needed).
pub async fn connect(addr: &ConnectAddr) -> Result<BoxedStream, TransportError> {
    let name = addr.to_string();
    let conn_err = |source| TransportError::Connect {
        addr: name.clone(),
        source,
    };
    match addr {
        ConnectAddr::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(conn_err)?;
            Ok(Box::new(s))
        }
        ConnectAddr::Vsock { cid, port } => {
            let s = tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port))
                .await
                .map_err(conn_err)?;
            Ok(Box::new(s))
        }
        ConnectAddr::HybridVsock { path, port } => {
            let mut s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(conn_err)?;
            s.write_all(format!("CONNECT {port}\n").as_bytes())
                .await
                .map_err(|source| TransportError::Write {
                    addr: name.clone(),
                    source,
                })?;
            // Read the reply one byte at a time so nothing after the line is consumed.
            let mut reply = Vec::new();
            {
                let mut reader = BufReader::with_capacity(
                    1,
                    tokio::io::AsyncReadExt::take(&mut s, MAX_HANDSHAKE_LINE),
                );
                reader.read_until(b'\n', &mut reply).await.map_err(|e| {
                    TransportError::Handshake {
                        addr: name.clone(),
                        detail: e.to_string(),
                    }
                })?;
            }
            let text = String::from_utf8_lossy(&reply);
            if !reply.ends_with(b"\n") || !text.starts_with("OK") {
                return Err(TransportError::Handshake {
                    addr: name,
                    detail: format!("expected `OK ...`, got {:?}", text.trim_end()),
                });
            }
            Ok(Box::new(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addrs() {
        assert_eq!(
            parse_listen("vsock:3401").unwrap(),
            ListenAddr::Vsock { port: 3401 }
        );
        assert_eq!(
            parse_listen("unix:/tmp/x").unwrap(),
            ListenAddr::Unix("/tmp/x".into())
        );
        for bad in [
            "", "vsock:", "vsock:x", "unix:", "tcp:1", "3401", "vsock:-1",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connect_addrs() {
        assert_eq!(
            parse_connect("unix:/s").unwrap(),
            ConnectAddr::Unix("/s".into())
        );
        assert_eq!(
            parse_connect("vsock:3:3401").unwrap(),
            ConnectAddr::Vsock { cid: 3, port: 3401 }
        );
        assert_eq!(
            parse_connect("hvsock:/run/v:1.sock:3401").unwrap(),
            ConnectAddr::HybridVsock {
                path: "/run/v:1.sock".into(),
                port: 3401
            }
        );
        for bad in [
            "vsock:3",
            "vsock:a:b",
            "hvsock:/x",
            "hvsock::5",
            "unix:",
            "x",
        ] {
            assert!(parse_connect(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cid_policy() {
        let host = parse_allow_cid(&[]).unwrap();
        assert_eq!(host, CidPolicy::Only(vec![2]));
        assert!(peer_allowed(&host, &PeerAddr::Vsock { cid: 2, port: 1 }));
        assert!(!peer_allowed(&host, &PeerAddr::Vsock { cid: 3, port: 1 }));
        assert!(!peer_allowed(
            &host,
            &PeerAddr::Vsock {
                cid: u32::MAX,
                port: 1
            }
        ));
        assert!(peer_allowed(&host, &PeerAddr::Unix));
        let some = parse_allow_cid(&["3".into(), "10".into()]).unwrap();
        assert!(peer_allowed(&some, &PeerAddr::Vsock { cid: 10, port: 1 }));
        assert!(!peer_allowed(&some, &PeerAddr::Vsock { cid: 2, port: 1 }));
        let any = parse_allow_cid(&["3".into(), "any".into()]).unwrap();
        assert!(peer_allowed(&any, &PeerAddr::Vsock { cid: 77, port: 1 }));
        assert!(parse_allow_cid(&["host".into()]).is_err());
        assert!(parse_allow_cid(&["-1".into()]).is_err());
    }

    #[test]
    fn bind_replaces_stale_and_refuses_live() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vfnotify-ut-{}", std::process::id()));
        let path = dir.join("sub/s.sock");
        let l = bind_unix(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            bind_unix(&path, 0o600),
            Err(TransportError::AddressInUse { .. })
        ));
        drop(l);
        // The file is left behind (stale): it is replaced.
        assert!(path.exists());
        let _l2 = bind_unix(&path, 0o600).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            bind_unix(&file, 0o600),
            Err(TransportError::NotASocket { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// In a folder others can write (like /tmp): a name planted where the temporary folder would
    /// go is skipped and left alone, the mode is set before the socket shows, and nothing else is
    /// left behind.
    #[test]
    fn bind_in_a_shared_folder_uses_a_private_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vfnotify-ut-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"v").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let planted = dir.join(format!(".c.sock.{}.0.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let path = dir.join("c.sock");
        let _l = bind_unix(&path, 0o660).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(
            std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(
            std::fs::symlink_metadata(&planted)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let planted_name = planted.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            names,
            [planted_name, "c.sock".to_string(), "victim".to_string()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
