//! vfnotify: virtiofs change notifications for Linux guests.
//!
//! Module map (data flows top to bottom):
//! - [`cli`]: argument definitions and dispatch; `main.rs` only calls [`cli::main`].
//! - [`protocol`]: the host → guest line protocol (`CHANNEL[\tRELPATH]\n`), pure and bounded.
//! - [`transport`]: vsock and Unix listeners (and the host-side connectors used by `send`),
//!   injected into the daemon; the vsock peer-CID policy.
//! - [`channels`]: the channel → folder map from `--map`.
//! - [`trigger`]: the toggle-file trigger (`.virtiofs-refresh`) and its trailing-edge coalescer.
//! - [`daemon`]: the guest daemon: accepts peers, parses lines, dispatches to triggers and overlays.
//! - [`host`]: `vfnotify host`, the host side: watches the shared folders (fanotify or inotify) and
//!   sends each guest the changed paths over one persistent connection per guest.
//! - [`control`]: the local JSON control socket (server, client, `notify`/`status`/`watch`).
//! - [`link`]: the overlay's side of the daemon link (subscribe, receive, acknowledge, reconnect).
//! - [`overlay`]: the passthrough FUSE overlay: mount options, inode table, operations,
//!   invalidation of the kernel's caches and replay of changes as inotify events.
//! - [`fixtures`]: the test and demo fixture trees (`fuse-fixtures/`) made real.
//! - [`demo`]: the self-contained tour behind `vfnotify demo`.
//! - [`logging`]: tracing set-up shared by every subcommand.
//! - [`sys`]: the only home of `unsafe`: thin wrappers over Linux system calls.

pub mod channels;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod fixtures;
pub mod host;
pub mod link;
pub mod logging;
pub mod overlay;
pub mod protocol;
pub mod sys;
pub mod transport;
pub mod trigger;
