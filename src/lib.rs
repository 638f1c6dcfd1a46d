//! vfnotify: virtiofs change notifications for Linux guests.
//!
//! Module map (data flows top to bottom; a module uses only modules below it, which
//! `tests/architecture.rs` checks):
//! - [`cli`]: argument definitions, `TryFrom<Args>` into each subsystem's `Config`, and the one
//!   mapping of errors to exit codes; `main.rs` only calls [`cli::main`].
//! - [`demo`]: the self-contained tour behind `vfnotify demo`.
//! - [`host`]: `vfnotify host`, the host side: watches the shared folders (fanotify or inotify) and
//!   sends each guest the changed paths over one persistent connection per guest.
//! - [`overlay`]: the passthrough FUSE overlay: mount options, inode table, operations,
//!   invalidation of the kernel's caches and replay of changes as inotify events.
//! - [`link`]: the overlay's side of the daemon link (subscribe, receive, acknowledge, reconnect).
//! - [`daemon`]: the guest daemon: accepts peers, parses lines, dispatches to triggers and
//!   overlays; its control socket server (`daemon::server`) beside the state it serves.
//! - [`control`]: the local JSON control protocol both ends share (requests, wire types, line
//!   reader), its blocking client, and the `notify`/`status`/`watch` commands.
//! - [`channels`]: the channel → folder map from `--map`.
//! - [`trigger`]: the toggle-file trigger (`.virtiofs-refresh`) and its trailing-edge coalescer.
//! - [`transport`]: vsock and Unix listeners (and the host-side connectors used by `send`),
//!   injected into the daemon; the vsock peer-CID policy.
//! - [`protocol`]: the host → guest line protocol (`CHANNEL[\tRELPATH]\n`), pure and bounded.
//! - [`glob`]: the bounded path matcher of watch subscriptions (pure).
//! - [`mountinfo`]: /proc/self/mountinfo parsing (pure) and the mounted overlays.
//! - [`fixtures`]: the test and demo fixture trees (`fuse-fixtures/`) made real.
//! - [`logging`]: tracing set-up shared by every subcommand.
//! - [`util`]: the poison-tolerant `lock` and `unix_now`, defined once.
//! - [`sys`]: the only home of `unsafe`: thin wrappers over Linux system calls.

#![deny(unsafe_code)]

/// `vfnotify X.Y.Z`.
pub const PROGRAM: &str = concat!("vfnotify ", env!("CARGO_PKG_VERSION"));

pub mod channels;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod fixtures;
pub mod glob;
pub mod host;
pub mod link;
pub mod logging;
pub mod mountinfo;
pub mod overlay;
pub mod protocol;
#[allow(unsafe_code)]
pub mod sys;
pub mod transport;
pub mod trigger;
pub mod util;
