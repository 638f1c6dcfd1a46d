//! `vfnotify host`: the host side. Watches each channel's `basePath` (fanotify filesystem marks,
//! or recursive inotify) and tells every guest of the channel exactly what changed, in the line
//! protocol the guest daemon (and the tool it replaces) reads: `CHANNEL\tRELPATH\n`, or
//! `CHANNEL\n` when the change cannot be named more precisely.
//!
//! Data flows: [`watch`] (a thread: kernel events → relative paths per channel, names that cannot
//! travel widened to their folder) → [`batch::Log`] (one bounded log per channel) → [`guest`] (one
//! task per guest: its persistent connection, batching, collapsing, reconnecting). [`control`] is
//! the status socket (`vfnotify host status`), [`config`] the configuration file, [`state`] the
//! shared state and counters.

pub mod barrier;
pub mod batch;
pub mod config;
pub mod control;
pub mod guest;
pub mod state;
pub mod sync;
pub mod watch;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch as tokio_watch;

use crate::protocol::{ChannelError, validate_channel};
use crate::transport::{ConnectAddr, TransportError};
pub use batch::Limits;
pub use state::Hub;
pub use watch::BackendChoice;

/// Default control socket of the host watcher.
pub const DEFAULT_CONTROL: &str = "/run/vfnotify/host.sock";
/// Default batching window, in milliseconds.
pub const DEFAULT_WINDOW_MS: u64 = 2;
/// Default: more paths than this in one folder in one batch are sent as the folder.
pub const DEFAULT_FOLDER_LIMIT: usize = 256;
/// Default: more paths than this in one batch are sent as the whole channel.
pub const DEFAULT_CHANNEL_LIMIT: usize = 2048;
/// Default capacity of each channel's change log.
pub const DEFAULT_QUEUE: usize = 16_384;
/// Default keepalive interval, in seconds (under the guest daemon's 30 s idle timeout).
pub const DEFAULT_KEEPALIVE_SECS: u64 = 10;
/// Longest wait between two connection attempts to a guest.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A write a guest does not take for this long drops the connection.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);
pub use crate::protocol::{KEEPALIVE_LINE, RESERVED_PREFIX};
/// Mode of the control socket.
const SOCKET_MODE: u32 = 0o600;

/// One channel: a folder and the guests to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    pub name: String,
    /// Canonical (absolute, symlinks resolved).
    pub base: PathBuf,
    pub guests: Vec<ConnectAddr>,
}

/// Everything `vfnotify host` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub channels: Vec<ChannelConfig>,
    pub backend: BackendChoice,
    pub window: Duration,
    pub limits: Limits,
    pub queue: usize,
    pub control: PathBuf,
    /// `None`: no keepalive.
    pub keepalive: Option<Duration>,
    pub backoff_max: Duration,
    pub stall_timeout: Duration,
    /// At most this many inotify watches (`None`: the kernel's limit).
    pub max_watches: Option<usize>,
    /// Names (last components) whose changes are never sent: by default the guests' trigger
    /// file, which trigger-mode guests toggle in the shared folder for every notification.
    pub ignore_names: Vec<std::ffi::OsString>,
}

impl Config {
    /// The defaults for `channels`, with the control socket at `control`.
    pub fn new(channels: Vec<ChannelConfig>, control: PathBuf) -> Config {
        Config {
            channels,
            backend: BackendChoice::Auto,
            window: Duration::from_millis(DEFAULT_WINDOW_MS),
            limits: Limits {
                folder: DEFAULT_FOLDER_LIMIT,
                channel: DEFAULT_CHANNEL_LIMIT,
            },
            queue: DEFAULT_QUEUE,
            control,
            keepalive: Some(Duration::from_secs(DEFAULT_KEEPALIVE_SECS)),
            backoff_max: DEFAULT_BACKOFF_MAX,
            stall_timeout: DEFAULT_STALL,
            max_watches: None,
            ignore_names: vec![crate::trigger::DEFAULT_TRIGGER_NAME.into()],
        }
    }
}

/// A bad command line or configuration file (exit 2).
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("{}: not valid JSON: {source}", file.display())]
    Json {
        file: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}{field}: {detail}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Field {
        file: Option<PathBuf>,
        field: String,
        detail: String,
    },
    #[error("--watch {arg:?}: expected CHANNEL=PATH")]
    ParseWatch { arg: String },
    #[error("channel {name:?}: {source}")]
    Channel { name: String, source: ChannelError },
    #[error("channel {name:?}: names starting with {RESERVED_PREFIX:?} are reserved")]
    ReservedChannel { name: String },
    #[error("channel {name:?}: a channel name must not start or end with white space")]
    ChannelSpace { name: String },
    #[error("channel {name:?} is given twice")]
    DuplicateChannel { name: String },
    #[error("channel {name:?}: basePath {}: {source}", path.display())]
    BasePath {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("channel {name:?}: basePath {} is not a directory", path.display())]
    NotADirectory { name: String, path: PathBuf },
    #[error(transparent)]
    To(TransportError),
    #[error("--watch needs at least one guest: give --guest CID or --to ADDR")]
    NoGuests,
    #[error("--guest/--to given but no --watch channel to send for")]
    GuestsWithoutWatch,
    #[error("nothing to watch: give --config FILE or --watch CHANNEL=PATH")]
    NothingToWatch,
    #[error("--backend: {0}")]
    Backend(String),
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error("--ignore-name {name:?}: a file name, not a path")]
    IgnoreName { name: String },
    #[error("--control must not be empty")]
    Control,
}

/// A runtime failure (exit 1).
#[derive(Debug, Error)]
pub enum HostError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    #[error("a vfnotify host is already running with control socket {}", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("cannot bind the control socket {}: {source}", path.display())]
    BindControl {
        path: PathBuf,
        source: TransportError,
    },
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("the watcher's setup stopped unexpectedly")]
    ThreadDied,
}

/// Check a channel name for the host: a valid protocol channel, not reserved, no white space at
/// its ends (the guest trims lines).
pub fn check_channel(name: &str) -> Result<(), ConfigError> {
    validate_channel(name).map_err(|source| ConfigError::Channel {
        name: name.to_string(),
        source,
    })?;
    if name.starts_with(RESERVED_PREFIX) {
        return Err(ConfigError::ReservedChannel {
            name: name.to_string(),
        });
    }
    if name.trim() != name {
        return Err(ConfigError::ChannelSpace {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// The canonical form of a channel's folder, which must exist and be a directory.
pub fn check_base(name: &str, path: &Path) -> Result<PathBuf, ConfigError> {
    let err = |source| ConfigError::BasePath {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let canon = std::fs::canonicalize(path).map_err(err)?;
    if !std::fs::metadata(&canon).map_err(err)?.is_dir() {
        return Err(ConfigError::NotADirectory {
            name: name.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(canon)
}

/// The parts of a started host.
struct Running {
    stop_watch: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
    stop_tasks: tokio_watch::Sender<bool>,
}

impl Running {
    fn stop(&mut self) {
        self.stop_watch.store(true, Ordering::Relaxed);
        let _ = self.stop_tasks.send(true);
        if let Some(t) = self.watcher.take() {
            let _ = t.join();
        }
    }
}

/// Open the watcher, bind the control socket, start the guest tasks and the watcher thread.
/// Must run inside a tokio runtime.
async fn start(config: Config) -> Result<Running, HostError> {
    let control_path = config.control.clone();
    if crate::transport::socket_is_live(&control_path) {
        return Err(HostError::AlreadyRunning { path: control_path });
    }
    let hub = Arc::new(Hub::new(config));
    let choice = hub.config.backend;
    let hub2 = Arc::clone(&hub);
    let watcher = tokio::task::spawn_blocking(move || watch::Watcher::open(choice, &hub2))
        .await
        .map_err(|_| HostError::ThreadDied)??;
    *state::lock(&hub.backend) = watcher.name();
    let listener =
        crate::transport::UnixListener::bind(&control_path, SOCKET_MODE).map_err(|source| {
            match source {
                TransportError::AddressInUse { path } => HostError::AlreadyRunning { path },
                source => HostError::BindControl {
                    path: control_path.clone(),
                    source,
                },
            }
        })?;
    let (stop_tasks, stop_rx) = tokio_watch::channel(false);
    tokio::spawn(control::accept_loop(
        Arc::clone(&hub),
        listener,
        stop_rx.clone(),
    ));
    for g in &hub.guests {
        tokio::spawn(guest::run(Arc::clone(g), Arc::clone(&hub), stop_rx.clone()));
    }
    let stop_watch = Arc::new(AtomicBool::new(false));
    let thread = watcher.spawn(Arc::clone(&hub), Arc::clone(&stop_watch))?;
    tracing::info!(
        backend = *state::lock(&hub.backend),
        channels = hub.channels.len(),
        guests = hub.guests.len(),
        control = %control_path.display(),
        "vfnotify host ready"
    );
    Ok(Running {
        stop_watch,
        watcher: Some(thread),
        stop_tasks,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, HostError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vfnotify-host")
        .enable_all()
        .build()
        .map_err(HostError::Runtime)
}

/// Run until SIGTERM or SIGINT (readiness sent to systemd once watching).
pub fn run(config: Config) -> Result<(), HostError> {
    use tokio::signal::unix::{SignalKind, signal};
    if let Err(e) = crate::sys::unblock_termination_signals() {
        tracing::warn!("could not unblock SIGTERM/SIGINT: {e}");
    }
    let rt = runtime()?;
    let result = rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(HostError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(HostError::Signals)?;
        let mut running = start(config).await?;
        match crate::daemon::systemd::notify("READY=1") {
            Ok(true) => tracing::debug!("readiness sent to systemd"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot notify systemd of readiness"),
        }
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        let _ = crate::daemon::systemd::notify("STOPPING=1");
        running.stop();
        Ok(())
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}
