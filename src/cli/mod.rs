//! Command-line interface: argument definitions (the user-facing contract) and dispatch.
//!
//! `main.rs` calls [`main`]; each subcommand's arguments become its subsystem's `Config`
//! ([`config`]: `TryFrom<Args>`), the subsystem's `run(Config)` does the work, and [`exit`] turns
//! its error into the message and the exit code: 0 ok, 1 runtime failure, 2 bad usage or
//! configuration. Nothing below this module imports it; the defaults shown here are the
//! subsystems' own.

pub mod config;
pub mod exit;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::control::DEFAULT_CONTROL;
use crate::transport::DEFAULT_PORT;
use crate::trigger::DEFAULT_TRIGGER_NAME as DEFAULT_TRIGGER;
pub use exit::{EXIT_FAILURE, EXIT_USAGE};

#[derive(Debug, Parser)]
#[command(
    name = "vfnotify",
    version,
    about = "virtiofs change notifications for Linux guests",
    long_about = "virtiofs change notifications for Linux guests.\n\n\
        Without a subcommand, runs the guest daemon exactly like the original virtiofs-notify \
        (`vfnotify --map documents=/mnt/share/documents`): it listens on vsock port 3401 for \
        `CHANNEL\\n` lines from the host and makes watchers of the mapped folders see the change.\n\n\
        With a FUSE overlay mounted over the share (`vfnotify mount SOURCE MOUNTPOINT -o channel=NAME`), \
        notifications invalidate exactly what changed in the guest kernel's caches and are replayed \
        as the real inotify events (IN_CREATE, IN_DELETE, IN_MODIFY, IN_MOVED_FROM/TO, IN_ATTRIB).",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Daemon options, when no subcommand is given (drop-in for virtiofs-notify).
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the guest daemon (the same as giving no subcommand).
    Daemon(DaemonArgs),
    /// Send notification lines to a daemon, as the host does (a stand-in for the host side).
    Send(SendArgs),
    /// Ask the local daemon, over its control socket, to act on a notification; waits until handled
    /// (every overlay of the channel acknowledged, trigger files toggled; 10 s timeout).
    Notify(NotifyArgs),
    /// Show the local daemon's listeners, channels, overlays and counters.
    Status(StatusArgs),
    /// Mount the caching FUSE overlay of SOURCE at MOUNTPOINT (also run as mount.fuse.vfnotify).
    Mount(MountArgs),
    /// Stream the changes the overlays of a channel find (create, delete, modify, attrib, rename),
    /// as the daemon relays them; runs until interrupted. `OVERFLOW` means events were lost:
    /// rescan.
    Watch(WatchArgs),
    /// A self-contained tour: mounts an overlay on a temporary copy of the fixtures, plays host
    /// changes and shows what a cached reader and an inotify watcher see.
    Demo(DemoArgs),
    /// The host side: watch each channel's folder and tell every guest exactly what changed
    /// (`CHANNEL\tRELPATH` lines over one persistent connection per guest). `vfnotify host
    /// status` shows a running one.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Host(HostCli),
}

#[derive(Debug, Clone, Args, Default)]
pub struct DaemonArgs {
    /// Map a channel to a folder: CHANNEL=PATH. Repeatable; one channel may map to several
    /// folders. The folder must exist at start. A notification for CHANNEL toggles the trigger
    /// file in PATH, or, when PATH is a vfnotify overlay, is handed to that overlay. Optional: a
    /// daemon may serve only overlays.
    #[arg(short = 'm', long = "map", value_name = "CHANNEL=PATH")]
    pub map: Vec<String>,

    /// vsock port of the default listener (used when no --listen is given).
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u32,

    /// Enable debug logging (RUST_LOG overrides).
    #[arg(short = 'd', long)]
    pub debug: bool,

    /// Listen on ADDR instead of the default vsock:PORT. Repeatable. ADDR is `vsock:PORT`
    /// (any local CID) or `unix:PATH`.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Accept vsock peers with this CID only. Repeatable; `any` accepts every peer.
    /// Default: 2 (the host). Refused peers are logged and counted.
    #[arg(long = "allow-cid", value_name = "CID|any")]
    pub allow_cid: Vec<String>,

    /// Local control socket (mode 0600; its parent folder is created).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,

    /// Name of the trigger file toggled in mapped folders.
    #[arg(long = "trigger-name", value_name = "NAME", default_value = DEFAULT_TRIGGER)]
    pub trigger_name: String,

    /// Most concurrent peer connections. When all are taken, the one that has gone longest
    /// without completing a line is closed to make room for the newcomer (counted as `evicted`).
    #[arg(long = "max-connections", value_name = "N", default_value_t = crate::daemon::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Close a peer connection that completes no line for this many seconds (at least 1): an idle
    /// one, or one that sends a line too slowly.
    #[arg(long = "idle-timeout", value_name = "SECS", default_value_t = crate::daemon::DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout: u64,

    /// Coalescing window for trigger-file toggles, in milliseconds (trailing edge: the last
    /// notification of a burst is always acted on).
    #[arg(long = "coalesce-ms", value_name = "MS", default_value_t = crate::daemon::DEFAULT_COALESCE_MS)]
    pub coalesce_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Destination vsock CID (the guest).
    #[arg(long, value_name = "CID", default_value_t = crate::daemon::send::DEFAULT_CID)]
    pub cid: u32,
    /// Destination vsock port.
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u32,
    /// Send to ADDR instead of vsock CID:PORT: `unix:PATH`, `vsock:CID:PORT`, or
    /// `hvsock:PATH:PORT` (a hybrid-vsock Unix socket, as Firecracker and Cloud Hypervisor use).
    #[arg(long = "to", value_name = "ADDR")]
    pub to: Option<String>,
    /// Channel name.
    pub channel: String,
    /// Relative paths the change is scoped to (one line each); none means the whole channel.
    pub relpaths: Vec<String>,
    /// Enable debug logging.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// Control socket of the daemon.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// Channel name.
    pub channel: String,
    /// Relative paths the change is scoped to; none means the whole channel.
    pub relpaths: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Control socket of the daemon.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// Print the raw JSON status.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Control socket of the daemon.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// Channel name, or the mountpoint of an overlay linked to the daemon (a path: starts with
    /// `/`, `./` or `../`).
    pub channel: String,
    /// Only changes whose relative path matches this glob (`*.pdf`, `reports/**`, `**/*.txt`;
    /// `*` stays within a folder, `**` crosses folders, `?` is one character). A rename is shown
    /// when either name matches.
    pub glob: Option<String>,
    /// Print one JSON object per event.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "OPTIONS for -o (comma-separated):\n  \
    channel=NAME            notification channel this overlay follows\n  \
    control=PATH            daemon control socket (default /run/vfnotify/control.sock)\n  \
    cache=always|auto|never kernel caching (default: always with channel=, auto without;\n                          \
    see README)\n  \
    events=precise|toggle|both|off  replay host changes as inotify events (default precise)\n  \
    passthrough=auto|on|off kernel FUSE passthrough for file data (default auto: on over a\n                          \
    local SOURCE, off (the overlay's page cache) over a FUSE or virtiofs one)\n  \
    fdcache=N               backing fds of closed files kept for warm opens (default from\n                          \
    the open-files limit; 0: none)\n  \
    revalidate=auto|open|notify  check SOURCE's attributes at every open (open), or trust the\n                          \
    notifications while linked: no check, and over a FUSE or virtiofs SOURCE no open\n                          \
    sent at all (notify); auto (default): notify while a `vfnotify host` feeds the\n                          \
    daemon, else open\n  \
    ro, rw, allow_other, default_permissions, fsname=NAME, suid, dev, exec, atime, audit,\n  \
    log=PATH, threads=N\n  \
    mount(8) options accepted and handled: defaults, auto, noauto, nofail, _netdev, user,\n  \
    users, nouser, owner, group, nodev, nosuid, noexec, noatime, relatime, strictatime, sync, async\n\n\
    Also run as `vfnotify SOURCE MOUNTPOINT -o OPTS` (the form the generic mount.fuse3 helper uses\n\
    for type fuse.vfnotify); through it mount(8)'s defaults apply (dev,suid unless nodev,nosuid).")]
pub struct MountArgs {
    /// Folder to mirror (the virtiofs mount of the host share).
    pub source: PathBuf,
    /// Where to mount the overlay.
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated (see below). Repeatable.
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Stay in the foreground (otherwise return once the mount is live and serve in the background).
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
    /// Enable debug logging.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Accepted for mount(8) compatibility (no mtab), ignored.
    #[arg(short = 'n', hide = true)]
    pub no_mtab: bool,
    /// Accepted for mount(8) compatibility (sloppy), ignored.
    #[arg(short = 's', hide = true)]
    pub sloppy: bool,
    /// Accepted for mount(8) compatibility (verbose), ignored.
    #[arg(short = 'v', hide = true)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Leave the overlay mounted and the daemon running at the end, for exploring.
    #[arg(long)]
    pub keep: bool,
    /// Enable debug logging.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

/// `vfnotify host [status]`.
#[derive(Debug, Clone, Args)]
pub struct HostCli {
    #[command(subcommand)]
    pub command: Option<HostCommand>,
    #[command(flatten)]
    pub args: HostArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum HostCommand {
    /// Show a running host's channels, guests and counters.
    Status(HostStatusArgs),
    /// Wait until every guest of the channels has handled every change seen so far.
    ///
    /// A cross-VM barrier: returns once every guest of the CHANNELs (default: every channel) has
    /// handled every change the running `vfnotify host` saw before the call. The watcher
    /// publishes what the kernel had queued, each guest is sent what is pending and then asked to
    /// acknowledge, and its daemon answers once its overlays have invalidated their caches and
    /// replayed the events and its trigger files were toggled. A build step can write files on
    /// the host, run `vfnotify host sync`, and start the guest's step knowing the guest sees
    /// exactly what the host sees: no polling, no sleeps.
    Sync(HostSyncArgs),
}

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Either --config FILE (the virtiofs-gate format: {\"CHANNEL\": {\"basePath\": \
    \"/path\", \"notify\": {\"guests\": [CID, ...], \"port\": 3401}}}; unknown keys are ignored), or \
    --watch CHANNEL=PATH with --guest CID / --to ADDR, or both. Relative paths are sent relative \
    to each channel's folder, which must be the folder the guests see for that channel.\n\n\
    Backends: fanotify (a filesystem mark, any tree size; needs CAP_SYS_ADMIN) or recursive inotify \
    (unprivileged; one watch per folder). `auto` picks fanotify where it works and logs the choice."
)]
pub struct HostArgs {
    /// The host configuration file (JSON, the format of virtiofs-gate).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Watch PATH for CHANNEL. Repeatable; these channels go to every --guest and --to.
    #[arg(short = 'w', long = "watch", value_name = "CHANNEL=PATH")]
    pub watch: Vec<String>,
    /// Notify the guest with this vsock CID (on --port). Repeatable.
    #[arg(long = "guest", value_name = "CID")]
    pub guest: Vec<u32>,
    /// Notify ADDR: `unix:PATH`, `vsock:CID:PORT` or `hvsock:PATH:PORT`. Repeatable.
    #[arg(long = "to", value_name = "ADDR")]
    pub to: Vec<String>,
    /// vsock port of the --guest CIDs.
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u32,
    /// Watching backend: auto, fanotify or inotify.
    #[arg(long, value_name = "BACKEND", default_value = "auto")]
    pub backend: String,
    /// Batching window, in milliseconds: a change goes to a guest at once, unless 8 changes or
    /// more were already sent to it in the current window; then the window's later changes are
    /// merged and sent together when it ends (trailing edge: the last change is always sent
    /// after it happened). 0: no batching beyond what queues during a write.
    #[arg(long = "window-ms", value_name = "MS", default_value_t = crate::host::DEFAULT_WINDOW_MS)]
    pub window_ms: u64,
    /// More changed paths than this directly in one folder, in one send: send the folder.
    #[arg(long = "folder-limit", value_name = "N", default_value_t = crate::host::DEFAULT_FOLDER_LIMIT)]
    pub folder_limit: usize,
    /// More changed paths than this in one send: send the whole channel (`CHANNEL\n`).
    #[arg(long = "channel-limit", value_name = "M", default_value_t = crate::host::DEFAULT_CHANNEL_LIMIT)]
    pub channel_limit: usize,
    /// Changes kept per channel for guests that have not been sent them yet; a guest further
    /// behind gets the whole channel.
    #[arg(long, value_name = "N", default_value_t = crate::host::DEFAULT_QUEUE)]
    pub queue: usize,
    /// The host's control socket (`vfnotify host status`).
    #[arg(long, value_name = "PATH", default_value = crate::host::DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// Write a keepalive line (an unknown channel to the guest) after this many quiet seconds, so
    /// a guest daemon's idle timeout keeps the connection; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = crate::host::DEFAULT_KEEPALIVE_SECS)]
    pub keepalive: u64,
    /// inotify backend: use at most N watches (one per folder); past it a channel is sent whole
    /// periodically, as when the kernel's limit is reached.
    #[arg(long = "max-watches", value_name = "N")]
    pub max_watches: Option<usize>,
    /// Never send changes of files with this name (the last component), in any folder.
    /// Repeatable; giving it replaces the default, the guests' trigger file: a guest daemon
    /// toggles it in the shared folder for every notification, and sending that change back
    /// would make it toggle again, forever. `--ignore-name ''` ignores nothing.
    #[arg(long = "ignore-name", value_name = "NAME", default_value = DEFAULT_TRIGGER)]
    pub ignore_names: Vec<String>,
    /// Enable debug logging (RUST_LOG overrides).
    #[arg(short = 'd', long)]
    pub debug: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HostStatusArgs {
    /// Control socket of the host.
    #[arg(long, value_name = "PATH", default_value = crate::host::DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// Print the raw JSON status.
    #[arg(long)]
    pub json: bool,
}

/// `vfnotify host sync`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Per guest: acknowledged; does not acknowledge (connected, but it never answered \
    the hello: a guest running a tool that reads lines only; decided 2 s after it connected); \
    timed out; not connected (a guest that is down is waited for until the timeout: it rescans \
    when it reconnects, and the sync covers that rescan).\n\nExit status: 0 when every guest \
    acknowledged, 1 otherwise or when no host answers, 2 for a bad command line or a channel the \
    host does not watch."
)]
pub struct HostSyncArgs {
    /// Channels to sync (default: every channel of the host).
    #[arg(value_name = "CHANNEL")]
    pub channels: Vec<String>,
    /// How long to wait for the guests: `10s`, `500ms`, `2m`, or seconds.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = crate::host::sync::parse_timeout)]
    pub timeout: std::time::Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Control socket of the host.
    #[arg(long, value_name = "PATH", default_value = crate::host::DEFAULT_CONTROL)]
    pub control: PathBuf,
}

/// Name under which mount(8) runs the helper.
pub const MOUNT_HELPER_NAME: &str = "mount.fuse.vfnotify";

/// Parse `args` into a [`Cli`]. The arguments are those of `vfnotify mount` when invoked as
/// `mount.fuse.vfnotify`, or when the first argument is a path rather than a subcommand: the
/// generic helper (`mount.fuse3`/`mount.fuse`, for `mount -t fuse.vfnotify` without our link)
/// runs `vfnotify SOURCE MOUNTPOINT -o OPTIONS`, as for sshfs or bindfs.
pub fn parse_from(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let invoked_as = args.first().map(|a| {
        std::path::Path::new(a)
            .file_name()
            .unwrap_or(a.as_os_str())
            .to_owned()
    });
    let helper = invoked_as.as_deref() == Some(std::ffi::OsStr::new(MOUNT_HELPER_NAME));
    if helper || args.get(1).is_some_and(|a| is_mount_source(a)) {
        let mut rewritten = vec![OsString::from("vfnotify"), OsString::from("mount")];
        rewritten.extend(args.into_iter().skip(1));
        Cli::try_parse_from(rewritten)
    } else {
        Cli::try_parse_from(args)
    }
}

/// Whether the first argument of `vfnotify ARG ...` is a mount SOURCE (the mount helper form):
/// not an option, not a subcommand, and a path (it has a `/`, or names something that exists).
fn is_mount_source(arg: &std::ffi::OsStr) -> bool {
    use clap::CommandFactory;
    use std::os::unix::ffi::OsStrExt;
    let bytes = arg.as_bytes();
    if bytes.is_empty() || bytes.starts_with(b"-") {
        return false;
    }
    let mut cmd = Cli::command();
    cmd.build();
    let subcommand = arg
        .to_str()
        .is_some_and(|a| cmd.find_subcommand(a).is_some());
    !subcommand && (bytes.contains(&b'/') || std::path::Path::new(arg).exists())
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = match parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(dispatch(cli.command.unwrap_or(Command::Daemon(cli.daemon))))
}

/// Run one subcommand: logging, `Config::try_from(args)`, `run(config)`, the exit code.
fn dispatch(command: Command) -> u8 {
    use crate::{control, daemon, demo, host, overlay};
    use exit::{Infallible, run};
    match command {
        Command::Daemon(args) => {
            crate::logging::init(args.debug);
            run(
                "vfnotify",
                daemon::DaemonConfig::try_from(&args),
                daemon::run,
            )
        }
        Command::Send(args) => {
            crate::logging::init(args.debug);
            run(
                "vfnotify send",
                daemon::send::Config::try_from(args),
                daemon::send::run,
            )
        }
        Command::Notify(args) => {
            crate::logging::init(false);
            run(
                "vfnotify notify",
                control::notify::Config::try_from(args),
                control::notify::run,
            )
        }
        Command::Status(args) => {
            crate::logging::init(false);
            let config = Ok::<_, Infallible>(control::status::Config::from(args));
            run("vfnotify status", config, control::status::run)
        }
        Command::Watch(args) => {
            crate::logging::init(false);
            run(
                "vfnotify watch",
                control::watch::Config::try_from(args),
                control::watch::run,
            )
        }
        // Logging starts in the overlay, once stderr is where `log=` or daemonising puts it.
        Command::Mount(args) => run(
            "vfnotify mount",
            overlay::Config::try_from(args),
            overlay::run,
        ),
        Command::Demo(args) => {
            crate::logging::init(args.debug);
            let config = Ok::<_, Infallible>(demo::Config::from(args));
            run("vfnotify demo", config, demo::run)
        }
        Command::Host(HostCli {
            command: Some(HostCommand::Status(args)),
            ..
        }) => {
            crate::logging::init(false);
            let config = host::control::StatusConfig::from(args);
            run(
                "vfnotify host status",
                Ok::<_, Infallible>(config),
                host::control::status,
            )
        }
        Command::Host(HostCli {
            command: Some(HostCommand::Sync(args)),
            ..
        }) => {
            crate::logging::init(false);
            let config = host::sync::SyncConfig::from(args);
            run(
                "vfnotify host sync",
                Ok::<_, Infallible>(config),
                host::sync::sync,
            )
        }
        Command::Host(HostCli {
            command: None,
            args,
        }) => {
            crate::logging::init(args.debug);
            run("vfnotify host", host::Config::try_from(args), host::run)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_from(args.iter().map(OsString::from).collect())
    }

    fn mount_args(cli: Cli) -> MountArgs {
        match cli.command {
            Some(Command::Mount(m)) => m,
            other => panic!("not a mount: {other:?}"),
        }
    }

    /// The argument shapes the mount helpers use: ours (`mount.fuse.vfnotify SOURCE MOUNTPOINT
    /// -o OPTS`, from mount(8)) and the generic one (`vfnotify SOURCE MOUNTPOINT -o OPTS`, from
    /// mount.fuse3), both meaning `vfnotify mount`.
    #[test]
    fn mount_helper_argument_shapes() {
        let m = mount_args(parse(&["vfnotify", "/src", "/mnt", "-o", "rw,channel=docs"]).unwrap());
        assert_eq!(m.source, PathBuf::from("/src"));
        assert_eq!(m.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(m.options, vec!["rw,channel=docs".to_string()]);
        let m = mount_args(
            parse(&["/sbin/mount.fuse.vfnotify", "src", "/mnt", "-o", "ro", "-n"]).unwrap(),
        );
        assert_eq!(m.source, PathBuf::from("src"));
        let m = mount_args(parse(&["vfnotify", "./share", "mnt"]).unwrap());
        assert_eq!(m.mountpoint, PathBuf::from("mnt"));
        // A SOURCE without its MOUNTPOINT is a usage error of `mount`, not a subcommand error.
        let e = parse(&["vfnotify", "/src"]).unwrap_err();
        assert!(e.to_string().contains("MOUNTPOINT"), "{e}");
        // Subcommands, options and the daemon's drop-in form are untouched.
        assert!(matches!(
            parse(&["vfnotify", "status", "--json"]).unwrap().command,
            Some(Command::Status(_))
        ));
        assert!(
            parse(&["vfnotify", "--map", "docs=/tmp"])
                .unwrap()
                .command
                .is_none()
        );
        assert!(parse(&["vfnotify", "help"]).is_err_and(|e| !e.use_stderr()));
        // A word that is neither a subcommand nor a path stays an error naming it.
        let e = parse(&["vfnotify", "no-such-subcommand-xyz"]).unwrap_err();
        assert!(e.to_string().contains("no-such-subcommand-xyz"), "{e}");
    }
}
