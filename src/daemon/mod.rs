//! The guest daemon: binds its listeners and control socket, accepts peers, parses their lines
//! and dispatches each notification to the overlays and trigger files of its channel.
//!
//! [`run`] is `vfnotify [daemon]`; [`spawn`] runs the same daemon in-process (for the demo and
//! tests).

pub mod ack;
pub mod connections;
pub mod feed;
pub mod peer;
pub mod send;
pub mod server;
pub mod state;
pub mod subscriber;
pub mod systemd;
pub mod watch;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::oneshot;

use crate::channels::{ChannelMap, ChannelsError};
use crate::transport::{self, CidPolicy, ListenAddr, TransportError};
use crate::trigger::TriggerNameError;
pub use state::Shared;

pub use crate::PROGRAM;

/// Default for [`DaemonConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default for [`DaemonConfig::idle_timeout`], in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 30;
/// Default for [`DaemonConfig::coalesce`], in milliseconds.
pub const DEFAULT_COALESCE_MS: u64 = 50;

/// Mode of the daemon's Unix sockets (control and `unix:` listeners).
const SOCKET_MODE: u32 = 0o600;

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub channels: ChannelMap,
    pub listen: Vec<ListenAddr>,
    pub cid_policy: CidPolicy,
    pub control: PathBuf,
    pub trigger_name: String,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub coalesce: Duration,
}

impl DaemonConfig {
    /// Defaults with no channel and no peer listener: a daemon that only serves overlays on
    /// `control`.
    pub fn new(control: PathBuf) -> Self {
        DaemonConfig {
            channels: ChannelMap::default(),
            listen: Vec::new(),
            cid_policy: CidPolicy::default(),
            control,
            trigger_name: crate::trigger::DEFAULT_TRIGGER_NAME.to_string(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            coalesce: Duration::from_millis(DEFAULT_COALESCE_MS),
        }
    }
}

/// A bad command line (exit 2).
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(transparent)]
    Channels(#[from] ChannelsError),
    #[error(transparent)]
    Listen(TransportError),
    #[error(transparent)]
    AllowCid(TransportError),
    #[error(transparent)]
    TriggerName(#[from] TriggerNameError),
    #[error("--max-connections must be at least 1")]
    MaxConnections,
    #[error("--idle-timeout must be at least 1 second")]
    IdleTimeout,
    #[error("--control must not be empty")]
    Control,
}

/// A runtime failure of the daemon (exit 1).
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    #[error("a vfnotify daemon is already running with control socket {}", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("cannot bind the control socket {}: {source}", path.display())]
    BindControl {
        path: PathBuf,
        source: TransportError,
    },
    #[error("cannot listen on {addr}: {source}")]
    BindListener {
        addr: String,
        source: TransportError,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("cannot start the daemon thread: {0}")]
    Thread(io::Error),
    #[error("the daemon thread stopped unexpectedly")]
    ThreadDied,
}

/// Bind every listener, then the control socket, and start serving. Returns the shared state.
/// Must run inside a tokio runtime.
pub async fn start(config: DaemonConfig) -> Result<Arc<Shared>, DaemonError> {
    let control_path = config.control.clone();
    // Refuse early when a live daemon owns the control socket, before taking any listener.
    if transport::socket_is_live(&control_path) {
        return Err(DaemonError::AlreadyRunning { path: control_path });
    }
    let shared = Shared::new(config);
    let mut names = Vec::new();
    let mut unix = Vec::new();
    let mut vsock = Vec::new();
    for addr in &shared.config.listen {
        let bind_err = |source| DaemonError::BindListener {
            addr: addr.to_string(),
            source,
        };
        match addr {
            ListenAddr::Unix(path) => {
                unix.push(transport::UnixListener::bind(path, SOCKET_MODE).map_err(bind_err)?)
            }
            ListenAddr::Vsock { port } => {
                vsock.push(transport::VsockListener::bind(*port).map_err(bind_err)?)
            }
        }
        names.push(addr.to_string());
    }
    // The control socket comes last: once it accepts, every listener is bound.
    let control =
        transport::UnixListener::bind(&control_path, SOCKET_MODE).map_err(
            |source| match source {
                TransportError::AddressInUse { path } => DaemonError::AlreadyRunning { path },
                source => DaemonError::BindControl {
                    path: control_path.clone(),
                    source,
                },
            },
        )?;
    *state::lock(&shared.listeners) = names;
    for l in unix {
        tokio::spawn(peer::accept_loop(Arc::clone(&shared), l));
    }
    for l in vsock {
        tokio::spawn(peer::accept_loop(Arc::clone(&shared), l));
    }
    tokio::spawn(server::accept_loop(Arc::clone(&shared), control));
    tracing::info!(
        control = %control_path.display(),
        listeners = ?*state::lock(&shared.listeners),
        channels = shared.config.channels.len(),
        "vfnotify daemon ready"
    );
    Ok(shared)
}

fn runtime() -> Result<tokio::runtime::Runtime, DaemonError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vfnotify-daemon")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)
}

/// `vfnotify [daemon]`: run until SIGTERM or SIGINT.
pub fn run(config: DaemonConfig) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    // A parent may have started us with SIGTERM/SIGINT blocked (the mask is inherited across
    // exec); the daemon must still stop on them.
    if let Err(e) = crate::sys::unblock_termination_signals() {
        tracing::warn!("could not unblock SIGTERM/SIGINT: {e}");
    }
    let rt = runtime()?;
    let result = rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
        let _shared = start(config).await?;
        match systemd::notify("READY=1") {
            Ok(true) => tracing::debug!("readiness sent to systemd"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot notify systemd of readiness"),
        }
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        let _ = systemd::notify("STOPPING=1");
        Ok(())
    });
    // Dropping the runtime drops the listener tasks, whose listeners remove their socket files.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// A daemon running in-process on its own thread (and runtime). Stops on [`DaemonHandle::stop`]
/// or drop, removing its socket files.
pub struct DaemonHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl DaemonHandle {
    /// The control socket path.
    pub fn control(&self) -> &std::path::Path {
        &self.shared.config.control
    }

    /// The daemon's state (counters, status).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stop the daemon and wait for its thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Start a daemon in-process: returns once its sockets are bound.
pub fn spawn(config: DaemonConfig) -> Result<DaemonHandle, DaemonError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("vfnotify-daemon".into())
        .spawn(move || {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async {
                match start(config).await {
                    Ok(shared) => {
                        let _ = ready_tx.send(Ok(shared));
                        let _ = stop_rx.await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(DaemonError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(shared)) => Ok(DaemonHandle {
            stop: Some(stop_tx),
            thread: Some(thread),
            shared,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(DaemonError::ThreadDied)
        }
    }
}
