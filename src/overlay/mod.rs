//! The passthrough FUSE overlay (`vfnotify mount`, `mount.fuse.vfnotify`).
//!
//! - [`options`]: `-o` parsing into a validated config (pure; fuzzed).
//! - [`inode`]: the inode table (one node per backing inode, re-resolved by name, freed on forget).
//! - [`fs`]: the FUSE operations and the replay view.
//! - [`sync`]: the worker that rescans on notifications, invalidates the kernel's caches and
//!   replays changes as inotify events.
//! - [`kernel_notify`]: the notification fuser lacks (INC_EPOCH), written directly.
//!
//! This module mounts (mount(2) directly, type `fuse.vfnotify`), returns once the mount is live
//! (daemonising unless `-f`), wires the daemon link and ends on unmount or SIGTERM.

#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_lossless
)]

pub mod access;
pub mod fs;
pub mod inode;
pub mod kernel_notify;
mod link_target;
pub mod local_ops;
pub mod options;
pub mod sync;

use std::ffi::CString;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::sys;
use fs::{OverlayFs, Shared};
use options::MountConfig;
use sync::Job;
pub use sync::REACH_BUDGET;

/// Mount failures.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("SOURCE {path}: {source}")]
    OpenSource { path: PathBuf, source: io::Error },
    #[error("cannot open /dev/fuse: {0}")]
    OpenFuse(io::Error),
    #[error("mount(2) of {mountpoint} failed: {source}")]
    Mount {
        mountpoint: PathBuf,
        source: io::Error,
    },
    #[error("FUSE handshake failed: {0}")]
    Handshake(io::Error),
    #[error("starting a thread: {0}")]
    Spawn(io::Error),
    #[error("blocking signals: {0}")]
    Signals(io::Error),
    #[error("FUSE session ended with an error: {0}")]
    Session(io::Error),
    #[error("SOURCE {} is not a directory", path.display())]
    SourceNotADirectory { path: PathBuf },
    #[error("SOURCE {}: {source}", path.display())]
    CheckSource { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Mountpoint(String),
    #[error("{0}")]
    Canonicalize(io::Error),
    #[error("mounting needs root (CAP_SYS_ADMIN) for mount(2) and kernel passthrough")]
    NotRoot,
    #[error("pipe: {0}")]
    Pipe(io::Error),
    #[error("fork: {0}")]
    Fork(io::Error),
    /// The forked server's own report (or its silence) before the mount was live.
    #[error("{0}")]
    Server(String),
    #[error("remounting needs root (CAP_SYS_ADMIN)")]
    RemountNotRoot,
    #[error("MOUNTPOINT {}: {source}", path.display())]
    RemountMountpoint { path: PathBuf, source: io::Error },
    #[error("remount: no vfnotify overlay is mounted at {}", path.display())]
    NotAnOverlay { path: PathBuf },
    #[error("remount of {}: {source}", path.display())]
    Remount { path: PathBuf, source: io::Error },
}

/// What `vfnotify mount` does: the `-o` options and where.
#[derive(Debug, Clone)]
pub struct Config {
    pub options: MountConfig,
    pub source: PathBuf,
    pub mountpoint: PathBuf,
    /// Serve in the foreground instead of returning once the mount is live.
    pub foreground: bool,
    /// Debug logging (set up here: after stderr goes to `log=`, or after daemonising).
    pub debug: bool,
}

/// `vfnotify mount` / `mount.fuse.vfnotify`: check SOURCE and MOUNTPOINT, mount, and serve
/// (`foreground`) or return once the mount is live.
pub fn run(config: Config) -> Result<(), MountError> {
    let Config {
        options: cfg,
        source,
        mountpoint,
        foreground,
        debug,
    } = config;
    if cfg.remount {
        return remount(&mountpoint, &cfg);
    }
    match std::fs::metadata(&source) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(MountError::SourceNotADirectory { path: source }),
        Err(e) => {
            return Err(MountError::CheckSource {
                path: source,
                source: e,
            });
        }
    }
    prepare_mountpoint(&mountpoint).map_err(MountError::Mountpoint)?;
    let (source, mountpoint) = match (source.canonicalize(), mountpoint.canonicalize()) {
        (Ok(s), Ok(m)) => (s, m),
        (Err(e), _) | (_, Err(e)) => return Err(MountError::Canonicalize(e)),
    };
    if sys::geteuid() != 0 {
        return Err(MountError::NotRoot);
    }
    if foreground {
        if let Some(log) = &cfg.log {
            redirect_stderr(log);
        }
        crate::logging::init(debug);
        return serve(cfg, &source, &mountpoint, None).inspect_err(|e| error!("{e}"));
    }
    daemonize(cfg, &source, &mountpoint, debug)
}

/// A mountpoint must be a directory; a stale mount left by a killed server (ENOTCONN) is
/// detached first.
fn prepare_mountpoint(mp: &Path) -> Result<(), String> {
    match std::fs::metadata(mp) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("MOUNTPOINT {} is not a directory", mp.display())),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            let c = CString::new(mp.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            sys::umount2(&c, libc::MNT_DETACH)
                .map_err(|e| format!("detaching the stale mount at {}: {e}", mp.display()))?;
            eprintln!("vfnotify mount: detached a stale mount at {}", mp.display());
            match std::fs::metadata(mp) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(format!("MOUNTPOINT {} is not a directory", mp.display())),
                Err(e) => Err(format!("MOUNTPOINT {}: {e}", mp.display())),
            }
        }
        Err(e) => Err(format!("MOUNTPOINT {}: {e}", mp.display())),
    }
}

/// Fork: the child mounts and serves; the parent returns once the mount is live (mount(8)
/// relies on that), with the child's error if it failed.
fn daemonize(
    cfg: MountConfig,
    source: &Path,
    mountpoint: &Path,
    debug: bool,
) -> Result<(), MountError> {
    let (mut rd, wr) = std::io::pipe().map_err(MountError::Pipe)?;
    match sys::fork().map_err(MountError::Fork)? {
        sys::Fork::Parent(_) => {
            drop(wr);
            // One line: "ok" once the mount is live, else the error. The child keeps the pipe.
            let mut msg = String::new();
            let _ = io::BufReader::new(&mut rd).read_line(&mut msg);
            if msg.starts_with("ok") {
                Ok(())
            } else {
                let m = msg.trim();
                Err(MountError::Server(if m.is_empty() {
                    "server exited before the mount was live".to_string()
                } else {
                    m.to_string()
                }))
            }
        }
        sys::Fork::Child => {
            drop(rd);
            let _ = sys::setsid();
            redirect_stdio(cfg.log.as_deref());
            crate::logging::init(debug);
            let mut wr = Some(wr);
            let code = match serve(cfg, source, mountpoint, wr.as_mut()) {
                Ok(()) => 0,
                Err(e) => {
                    error!("{e}");
                    if let Some(w) = wr.as_mut() {
                        let _ = writeln!(w, "{e}");
                    }
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

fn redirect_stderr(log: &Path) {
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = sys::dup2(f.as_fd(), 2);
    }
}

fn redirect_stdio(log: Option<&Path>) {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    if let Ok(null) = &null {
        let _ = sys::dup2(null.as_fd(), 0);
        let _ = sys::dup2(null.as_fd(), 1);
    }
    let err = log
        .and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        })
        .or_else(|| null.ok());
    if let Some(f) = err {
        let _ = sys::dup2(f.as_fd(), 2);
    }
}

/// Mount, serve until unmounted, clean up.
pub fn serve(
    cfg: MountConfig,
    source: &Path,
    mountpoint: &Path,
    ready: Option<&mut std::io::PipeWriter>,
) -> Result<(), MountError> {
    // Before any thread exists: signals go to the dedicated waiter; modes are the caller's.
    sys::block_termination_signals().map_err(MountError::Signals)?;
    sys::umask(0);
    // Every client open holds a backing fd here: use the whole hard limit.
    if let Err(e) = sys::raise_nofile_limit() {
        warn!("could not raise the open-files limit: {e}");
    }
    let csource = sys::cstr(source.as_os_str()).map_err(|e| MountError::OpenSource {
        path: source.into(),
        source: e,
    })?;
    let root_fd =
        sys::openat(sys::cwd(), &csource, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(|e| {
            MountError::OpenSource {
                path: source.into(),
                source: e,
            }
        })?;
    let (root_fd, source_atime) = private_source(&csource, root_fd);
    let shared =
        Arc::new(
            Shared::new(cfg.clone(), root_fd).map_err(|e| MountError::OpenSource {
                path: source.into(),
                source: e,
            })?,
        );
    if let Some(a) = source_atime {
        let _ = shared.source_atime.set(a);
        shared.apply_source_atime();
    }
    let dev: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(MountError::OpenFuse)?
        .into();

    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id=0,default_permissions",
        dev.as_raw_fd(),
        sys::geteuid()
    );
    if cfg.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = per_mount_flags(&cfg);
    if cfg.sync {
        flags |= libc::MS_SYNCHRONOUS;
    }
    if cfg.dirsync {
        flags |= libc::MS_DIRSYNC;
    }
    let fsname = cfg
        .fsname
        .clone()
        .unwrap_or_else(|| source.display().to_string());
    let cmp = sys::cstr(mountpoint.as_os_str()).map_err(|e| MountError::Mount {
        mountpoint: mountpoint.into(),
        source: e,
    })?;
    let mount_err = |e| MountError::Mount {
        mountpoint: mountpoint.into(),
        source: e,
    };
    // With `ro`, the filesystem is mounted writable at a private staging folder (replays need
    // it) and MOUNTPOINT gets a read-only bind of it; see `finish_read_only`.
    let staging = if cfg.read_only {
        let dir = std::env::temp_dir().join(format!("vfnotify-ro-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(mount_err)?;
        Some(dir)
    } else {
        None
    };
    let target = match &staging {
        Some(dir) => sys::cstr(dir.as_os_str()).map_err(mount_err)?,
        None => cmp.clone(),
    };
    sys::mount(
        &CString::new(fsname.replace(',', "_")).map_err(|e| mount_err(e.into()))?,
        &target,
        c"fuse.vfnotify",
        flags,
        &CString::new(data).map_err(|e| mount_err(e.into()))?,
    )
    .map_err(mount_err)?;

    let raw_fd = sys::dup(dev.as_fd()).map_err(MountError::OpenFuse)?;
    let fs = OverlayFs { s: shared.clone() };
    let mut fcfg = fuser::Config::default();
    fcfg.n_threads = Some(cfg.threads);
    fcfg.clone_fd = true;
    fcfg.acl = if cfg.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    let session = match fuser::Session::from_fd(fs, dev, fcfg.acl, fcfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = sys::umount2(&target, libc::MNT_DETACH);
            return Err(MountError::Handshake(e));
        }
    };
    // INIT is done (the handshake above): the kernel now takes a larger read-ahead.
    fs::raise_readahead(staging.as_deref().unwrap_or(mountpoint));
    let _ = shared.mountpoint.set(mountpoint.to_path_buf());
    let holder = match &staging {
        // Replays go through a private writable copy of the mount, so that they go on while
        // MOUNTPOINT is remounted read-only (`mount -o remount,ro`).
        None => match sys::mount_api::open_tree_clone(&cmp, false) {
            Ok(fd) => Some(Arc::new(std::sync::Mutex::new(Some(fd)))),
            Err(e) => {
                warn!(
                    "no private mount for replays ({e}): they go through MOUNTPOINT, and fail while it is remounted read-only"
                );
                None
            }
        },
        Some(dir) => match finish_read_only(dir, &cmp, flags) {
            Ok(holder) => Some(holder),
            Err(e) => {
                let _ = sys::umount2(&target, libc::MNT_DETACH);
                let _ = std::fs::remove_dir(dir);
                return Err(mount_err(e));
            }
        },
    };
    if let Err(e) = follow_mount(mountpoint.to_path_buf(), holder.clone(), shared.clone()) {
        let _ = sys::umount2(&cmp, libc::MNT_DETACH);
        return Err(MountError::Spawn(e));
    }
    let replay_root = match holder {
        Some(h) => sync::ReplayRoot::Detached(h),
        None => sync::ReplayRoot::Path(mountpoint.to_path_buf()),
    };

    let (tx, rx) = mpsc::channel::<Job>();
    *crate::util::lock(&shared.baseline_tx) = Some(tx.clone());
    let spawned = (|| -> io::Result<()> {
        let minor = shared.kernel_minor.load(Ordering::Relaxed);
        let raw = kernel_notify::KernelNotifier::new(raw_fd, minor);
        sync::atime::spawn(shared.clone(), session.notifier(), replay_root.clone())?;
        sync::open_expiry::spawn(shared.clone(), session.notifier())?;
        sync::spawn(shared.clone(), session.notifier(), raw, replay_root, rx)?;
        if cfg.channel.is_some() {
            // The root is never looked up: its view is taken now, so a change made while the
            // overlay waits for the daemon is found by the first rescan.
            let _ = tx.send(Job::Baseline(inode::ROOT_INO));
        }
        let mp = cmp.clone();
        std::thread::Builder::new()
            .name("vfnotify-signal".into())
            .spawn(move || {
                if let Ok(sig) = sys::wait_signal() {
                    info!(sig, "signal received: unmounting");
                    if sys::umount2(&mp, 0).is_err() {
                        let _ = sys::umount2(&mp, libc::MNT_DETACH);
                    }
                }
            })?;
        if let Some(channel) = cfg.channel.clone() {
            let target = Arc::new(link_target::LinkTarget {
                s: shared.clone(),
                tx: std::sync::Mutex::new(tx.clone()),
            });
            crate::link::spawn(
                crate::link::LinkConfig {
                    control: cfg.control.clone(),
                    channel,
                    mountpoint: mountpoint.to_path_buf(),
                    stats_interval: crate::link::STATS_INTERVAL,
                },
                target,
            )?;
        } else if cfg.cache == options::CachePolicy::Always {
            warn!(
                "cache=always without channel=: nothing will invalidate the kernel's caches; host changes stay unseen"
            );
        }
        Ok(())
    })();
    if let Err(e) = spawned {
        shared.atime_refresh.close();
        shared.open_expiries.close();
        let _ = sys::umount2(&cmp, libc::MNT_DETACH);
        return Err(MountError::Spawn(e));
    }
    info!(source = %source.display(), mountpoint = %mountpoint.display(), "mounted");
    if let Some(w) = ready {
        let _ = w.write_all(b"ok\n");
    }
    let res = session.run();
    shared.atime_refresh.close();
    shared.open_expiries.close();
    info!("unmounted");
    res.map_err(MountError::Session)
}

/// SOURCE as the server reaches it: a private copy of its mount (and the mounts below it), as
/// overlayfs takes of its layers, so that `noatime`/`nodiratime` can be set on it — the kernel's
/// passthrough reads and maps, the server's reads and listings and its own rescans then leave
/// SOURCE's atimes alone as the guest asked — without touching the mount other users see. With
/// the copy's original atime flags. Not for a FUSE SOURCE (virtiofs): its atimes are the host's
/// to keep, and a detached copy could not take its submounts; nor where the kernel refuses
/// (then `noatime` holds for the server's own reads only, through `O_NOATIME`).
fn private_source(
    csource: &std::ffi::CStr,
    direct: OwnedFd,
) -> (OwnedFd, Option<(sys::mount_api::Atime, bool)>) {
    if sys::is_fuse(direct.as_fd()).unwrap_or(true) {
        return (direct, None);
    }
    let copy = sys::mount_api::open_tree_clone(csource, true).and_then(|fd| {
        // The same directory, now on the copy.
        let (a, b) = (sys::fstat(fd.as_fd())?, sys::fstat(direct.as_fd())?);
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
        }
        let atime = sys::mount_api::atime_of(fd.as_fd())?;
        Ok((fd, atime))
    });
    match copy {
        Ok((fd, atime)) => (fd, Some(atime)),
        Err(e) => {
            warn!(
                "no private copy of SOURCE's mount ({e}): noatime holds for the server's own reads only"
            );
            (direct, None)
        }
    }
}

/// `ro`: bind the writable staging mount read-only at MOUNTPOINT, keep an `O_PATH` fd of the
/// staging mount for replays and detach it from the namespace, so only MOUNTPOINT shows.
fn finish_read_only(
    staging: &Path,
    mountpoint: &CString,
    flags: libc::c_ulong,
) -> io::Result<ReplayHolder> {
    let cstaging = sys::cstr(staging.as_os_str())?;
    sys::mount(&cstaging, mountpoint, c"", libc::MS_BIND, c"")?;
    let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags;
    if let Err(e) = sys::mount(c"", mountpoint, c"", ro, c"") {
        let _ = sys::umount2(mountpoint, libc::MNT_DETACH);
        return Err(e);
    }
    let fd = sys::openat(sys::cwd(), &cstaging, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    sys::umount2(&cstaging, libc::MNT_DETACH)?;
    let _ = std::fs::remove_dir(staging);
    Ok(Arc::new(std::sync::Mutex::new(Some(fd))))
}

/// The private writable mount replays go through (the staging mount of an `ro` overlay, or a
/// detached copy of MOUNTPOINT's), held until MOUNTPOINT is unmounted.
pub type ReplayHolder = Arc<std::sync::Mutex<Option<OwnedFd>>>;

/// The per-mount flags of `cfg` (what `mount -o remount` may change too).
fn per_mount_flags(cfg: &MountConfig) -> libc::c_ulong {
    let mut flags: libc::c_ulong = 0;
    for (on, flag) in [
        (!cfg.suid, libc::MS_NOSUID),
        (!cfg.dev, libc::MS_NODEV),
        (!cfg.exec, libc::MS_NOEXEC),
        (cfg.noatime, libc::MS_NOATIME),
        (cfg.nodiratime, libc::MS_NODIRATIME),
        (cfg.strictatime, libc::MS_STRICTATIME),
    ] {
        if on {
            flags |= flag;
        }
    }
    flags
}

/// `mount -o remount,...` (mount(8) runs the helper with the mount's current options, the new
/// ones and `remount`): change MOUNTPOINT's per-mount flags — ro/rw, nosuid/suid, nodev/dev,
/// noexec/exec, noatime, nodiratime, relatime/strictatime — with `MS_REMOUNT | MS_BIND`. The
/// superblock and the server stay as they are (replays keep their own writable mount), and the
/// server follows the flags from the mount table (`follow_mount`). The overlay's own options
/// (channel=, cache=, ...) cannot change this way and are left as they are.
fn remount(mountpoint: &Path, cfg: &MountConfig) -> Result<(), MountError> {
    if sys::geteuid() != 0 {
        return Err(MountError::RemountNotRoot);
    }
    let mp = mountpoint
        .canonicalize()
        .map_err(|source| MountError::RemountMountpoint {
            path: mountpoint.to_path_buf(),
            source,
        })?;
    if !crate::mountinfo::vfnotify_mounts().contains(&mp) {
        return Err(MountError::NotAnOverlay { path: mp });
    }
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | per_mount_flags(cfg);
    if cfg.read_only {
        flags |= libc::MS_RDONLY;
    }
    sys::cstr(mp.as_os_str())
        .and_then(|c| sys::mount(c"", &c, c"", flags, c""))
        .map_err(|source| MountError::Remount { path: mp, source })
}

/// Follow MOUNTPOINT in the mount table: take its per-mount flags as they change (`remount`;
/// the server then refuses or allows changes and keeps atime still accordingly), and once it is
/// unmounted let go of the private replay mount, so the kernel ends the session as usual (it
/// lives on through that mount otherwise). The thread sleeps in poll(2) on
/// /proc/self/mountinfo, which wakes it on every change of the mount table (and every 5 s
/// regardless, should polling not work).
fn follow_mount(
    mountpoint: PathBuf,
    holder: Option<ReplayHolder>,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let info = std::fs::File::open("/proc/self/mountinfo")?;
    std::thread::Builder::new()
        .name("vfnotify-mount".into())
        .spawn(move || {
            use std::io::{Read, Seek};
            let mut info = info;
            let mut text = String::new();
            loop {
                text.clear();
                let read = info.rewind().and_then(|()| info.read_to_string(&mut text));
                let opts = read.ok().map(|_| {
                    crate::mountinfo::parse_mountinfo_options(&text, "fuse.vfnotify", &mountpoint)
                });
                match opts {
                    Some(None) => {
                        info!("mountpoint unmounted: releasing the replay mount");
                        if let Some(h) = &holder {
                            crate::util::lock(h).take();
                        }
                        return;
                    }
                    Some(Some(o)) if shared.flags.apply(&options::PerMount::parse(&o)) => {
                        fs::Stats::bump(&shared.stats.remounts);
                        shared.apply_source_atime();
                        info!(flags = %o, "mount flags changed");
                    }
                    _ => {}
                }
                if sys::poll_pri(info.as_fd(), 5000).is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
    Ok(())
}
