//! `vfnotify demo`: the one-command tour.
//!
//! On any Linux box with /dev/fuse (no VM, no vsock): a temporary SOURCE made from the fixtures,
//! the overlay mounted over it (`cache=always`, `events=precise`), the daemon on a Unix listener,
//! and an inotify watcher on the overlay that behaves like a file manager (recursive). The host
//! side is `vfnotify host` watching SOURCE and telling the daemon; the demo only changes SOURCE,
//! step by step, with the host watcher paused (SIGSTOP) during the change so that what a cached
//! reader saw before the notification can be shown, then lets it go on (SIGCONT). Each step
//! shows that stale view and the fresh one after, the events the watcher received and the
//! latency from the host watcher's resumption to the event. Everything lives in a temporary folder that is
//! removed on success, failure and Ctrl-C.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::sys::{self, Inotify};

mod report;
mod watcher;

use report::*;
use watcher::*;

const CHANNEL: &str = "demo";
/// The demo daemon's vsock port, away from a real daemon's 3401.
const DEMO_VSOCK_PORT: u32 = 13401;
const DEADLINE: Duration = Duration::from_secs(10);
const WATCH_MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB;

/// Demo failures.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("preparing {what}: {source}")]
    Prepare {
        what: String,
        source: std::io::Error,
    },
    #[error("fixtures: {0}")]
    Fixtures(#[from] crate::fixtures::FixtureError),
    #[error("starting {what}: {source}")]
    Start {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0} did not come up within {DEADLINE:?}{1}")]
    Timeout(&'static str, String),
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sending the notification: {0}")]
    Send(std::io::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error(
        "cannot run here: {0}\nIt needs Linux with /dev/fuse (modprobe fuse) and root (sudo): try `sudo -E cargo run --release -- demo`."
    )]
    Preflight(String),
    /// Some step did not show what it should (the summary says which).
    #[error("some steps failed")]
    StepsFailed,
}

/// How the tour runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    /// The results as JSON.
    pub json: bool,
    /// Leave the overlay mounted and the daemon running at the end, for exploring.
    pub keep: bool,
}

/// One step of the tour, as shown and as `--json` reports it.
#[derive(Debug, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub host_action: String,
    pub before: String,
    pub after: String,
    pub expected_events: Vec<String>,
    pub events: Vec<String>,
    pub latency_ms: Option<f64>,
    pub stale_before: bool,
    pub fresh_after: bool,
    pub events_ok: bool,
    pub ok: bool,
}

/// Where the demo's pieces live, for cleanup from any path (including the signal thread).
#[derive(Default)]
struct Cleanup {
    mountpoint: Option<PathBuf>,
    children: Vec<u32>,
    dir: Option<PathBuf>,
}

impl Cleanup {
    fn run(&mut self) {
        if let Some(mp) = self.mountpoint.take() {
            if let Ok(c) = sys::cstr(mp.as_os_str()) {
                if sys::umount2(&c, 0).is_err() {
                    let _ = sys::umount2(&c, libc::MNT_DETACH);
                }
            }
        }
        for pid in self.children.drain(..) {
            let _ = Command::new("kill")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Runs [`Cleanup::run`] when dropped, unless the demo's pieces are to be kept.
struct CleanupGuard {
    cleanup: Arc<Mutex<Cleanup>>,
    keep: bool,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if !self.keep {
            crate::util::lock(&self.cleanup).run();
        }
    }
}

/// `vfnotify demo`.
pub fn run(args: Config) -> Result<(), DemoError> {
    if let Some(missing) = preflight() {
        return Err(DemoError::Preflight(missing));
    }
    let cleanup = Arc::new(Mutex::new(Cleanup::default()));
    // Ctrl-C and SIGTERM: unmount, stop what was started, remove the temporary folder.
    if sys::block_termination_signals().is_ok() {
        let c = cleanup.clone();
        let _ = std::thread::Builder::new()
            .name("demo-signal".into())
            .spawn(move || {
                if sys::wait_signal().is_ok() {
                    eprintln!("\ninterrupted: cleaning up");
                    crate::util::lock(&c).run();
                    std::process::exit(130);
                }
            });
    }
    // Whatever ends the demo (an error, a closed stdout, a panic), clean up on the way out.
    let guard = CleanupGuard {
        cleanup: cleanup.clone(),
        keep: args.keep,
    };
    let result = tour(&args, &cleanup);
    let outcome = match result {
        Ok(reports) => {
            let all_ok = reports.iter().all(|r| r.ok);
            let text = if args.json {
                let doc = json!({ "ok": all_ok, "steps": reports });
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&doc).unwrap_or_default()
                )
            } else {
                summary(&reports)
            };
            match crate::control::print_stdout(&text) {
                Err(e) => Err(DemoError::Stdout(e)),
                Ok(()) if all_ok => Ok(()),
                Ok(()) => Err(DemoError::StepsFailed),
            }
        }
        Err(e) => Err(e),
    };
    let c = crate::util::lock(&cleanup);
    if args.keep {
        if let (Some(mp), Some(dir)) = (&c.mountpoint, &c.dir) {
            eprintln!(
                "\nkept for exploring:\n  overlay:  {}\n  SOURCE:   {}",
                mp.display(),
                dir.join("source").display()
            );
            eprintln!(
                "  change SOURCE: the host watcher tells the overlay (vfnotify host status --control {})",
                dir.join("host.sock").display()
            );
            eprintln!(
                "  to clean up: umount {} && kill {} && rm -rf {}",
                mp.display(),
                c.children
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                dir.display()
            );
        }
    }
    drop(c);
    drop(guard);
    outcome
}

/// What is missing for the demo, if anything.
fn preflight() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (no FUSE support loaded)".into());
    }
    if sys::geteuid() != 0 {
        return Some("it must run as root (it mounts a FUSE filesystem with mount(2))".into());
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_err()
    {
        return Some("/dev/fuse cannot be opened".into());
    }
    None
}

struct Env {
    src: PathBuf,
    mnt: PathBuf,
    peer: PathBuf,
    control: PathBuf,
    host_control: PathBuf,
    /// The `vfnotify host` process (paused during each change).
    host_pid: u32,
}

fn tour(args: &Config, cleanup: &Arc<Mutex<Cleanup>>) -> Result<Vec<StepReport>, DemoError> {
    use std::io::IsTerminal as _;
    let progress = !args.json;
    // The `[i/n] action` line redrawn in place is for a terminal showing both streams: written
    // to a file or a pipe, it would be glued to the step's result line.
    let redraw = progress && std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
    let exe = std::env::current_exe().map_err(|e| DemoError::Start {
        what: "locating vfnotify",
        source: e,
    })?;
    let dir = std::env::temp_dir().join(format!("vfnotify-demo-{}", std::process::id()));
    let prep = |what: &str| {
        let what = what.to_string();
        move |source| DemoError::Prepare { what, source }
    };
    std::fs::create_dir_all(&dir).map_err(prep("the temporary folder"))?;
    crate::util::lock(cleanup).dir = Some(dir.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(prep("the temporary folder"))?;
    let mut env = Env {
        src: dir.join("source"),
        mnt: dir.join("overlay"),
        peer: dir.join("peer.sock"),
        control: dir.join("control.sock"),
        host_control: dir.join("host.sock"),
        host_pid: 0,
    };
    std::fs::create_dir_all(&env.src).map_err(prep("SOURCE"))?;
    std::fs::create_dir_all(&env.mnt).map_err(prep("the mountpoint"))?;
    crate::fixtures::materialize(&env.src)?;

    say(
        progress,
        "starting the daemon (unix listener, the host's stand-in; vsock too where the machine has it)",
    );
    // vsock too when the machine has it (on a port of its own); if that listener cannot be
    // bound, the daemon exits at once and the demo goes on with the unix listener alone.
    let with_vsock = Path::new("/dev/vsock").exists();
    let mut daemon = None;
    for vsock in [with_vsock, false] {
        let mut daemon_cmd = Command::new(&exe);
        daemon_cmd
            .arg("daemon")
            .arg("--listen")
            .arg(format!("unix:{}", env.peer.display()))
            .arg("--control")
            .arg(&env.control)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "daemon.log"));
        if vsock {
            daemon_cmd
                .arg("--listen")
                .arg(format!("vsock:{DEMO_VSOCK_PORT}"));
        }
        let mut child = spawn(&mut daemon_cmd, "the daemon", cleanup)?;
        let up = wait_for(
            "the daemon's control socket",
            || {
                std::os::unix::net::UnixStream::connect(&env.control).is_ok()
                    || matches!(child.try_wait(), Ok(Some(_)))
            },
            &dir,
        );
        if matches!(child.try_wait(), Ok(Some(_))) && vsock {
            say(
                progress,
                "vsock listener unavailable here: unix listener only",
            );
            continue;
        }
        up?;
        if vsock {
            say(
                progress,
                &format!("daemon also listening on vsock port {DEMO_VSOCK_PORT}"),
            );
        }
        daemon = Some(child);
        break;
    }
    let daemon = daemon.ok_or(DemoError::Timeout("the daemon", String::new()))?;

    say(
        progress,
        "mounting the overlay (cache=always, events=precise)",
    );
    let mut mount_cmd = Command::new(&exe);
    mount_cmd
        .arg("mount")
        .arg(&env.src)
        .arg(&env.mnt)
        .arg("-f")
        .arg("-o")
        .arg(format!(
            "channel={CHANNEL},control={},cache=always,events=precise",
            env.control.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&dir, "overlay.log"));
    let overlay = spawn(&mut mount_cmd, "the overlay", cleanup)?;
    wait_for("the overlay mount", || is_mounted(&env.mnt), &dir)?;
    crate::util::lock(cleanup).mountpoint = Some(env.mnt.clone());
    wait_for(
        "the overlay's link to the daemon",
        || control_notify(&env.control, &[]).is_ok(),
        &dir,
    )?;
    let _ = (daemon, overlay);

    // The host side: `vfnotify host` watching SOURCE, telling the daemon. (inotify: SOURCE is a
    // folder of this machine's own filesystem, where a fanotify filesystem mark would see the
    // whole machine.)
    say(
        progress,
        "starting the host watcher (vfnotify host --watch demo=SOURCE --backend inotify)",
    );
    let mut host_cmd = Command::new(&exe);
    host_cmd
        .arg("host")
        .arg("--watch")
        .arg(format!("{CHANNEL}={}", env.src.display()))
        .arg("--to")
        .arg(format!("unix:{}", env.peer.display()))
        .arg("--control")
        .arg(&env.host_control)
        .arg("--backend")
        .arg("inotify")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&dir, "host.log"));
    let host = spawn(&mut host_cmd, "the host watcher", cleanup)?;
    env.host_pid = host.id();
    wait_for(
        "the host watcher's connection to the daemon",
        || host_connected(&env.host_control),
        &dir,
    )?;
    // It began with the whole channel: let the overlay handle that first.
    control_notify(&env.control, &[]).map_err(DemoError::Send)?;

    // A file manager opens the folder: lists it and watches it, recursively.
    let mut watcher = Watcher::new(&env.mnt)?;
    control_notify(&env.control, &[]).map_err(DemoError::Send)?;
    watcher.drain(&env.mnt);

    let steps = script();
    let mut reports = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if redraw {
            eprint!("[{}/{}] {:<48}\r", i + 1, steps.len(), step.action);
            let _ = std::io::stderr().flush();
        }
        let report = play(i + 1, step, &env, &mut watcher)?;
        if redraw {
            eprint!("\r{:60}\r", "");
        }
        if progress {
            crate::control::print_stdout(&step_text(&report)).map_err(DemoError::Stdout)?;
        }
        reports.push(report);
    }
    Ok(reports)
}

fn say(progress: bool, msg: &str) {
    if progress {
        eprintln!("· {msg}");
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

fn spawn(
    cmd: &mut Command,
    what: &'static str,
    cleanup: &Arc<Mutex<Cleanup>>,
) -> Result<Child, DemoError> {
    let child = cmd
        .spawn()
        .map_err(|e| DemoError::Start { what, source: e })?;
    crate::util::lock(cleanup).children.push(child.id());
    Ok(child)
}

fn wait_for(what: &'static str, mut ok: impl FnMut() -> bool, dir: &Path) -> Result<(), DemoError> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > DEADLINE {
            let logs = ["daemon.log", "overlay.log", "host.log"]
                .iter()
                .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("");
            return Err(DemoError::Timeout(
                what,
                if logs.trim().is_empty() {
                    String::new()
                } else {
                    format!("; logs:\n{logs}")
                },
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn is_mounted(mp: &Path) -> bool {
    crate::mountinfo::vfnotify_mounts().iter().any(|m| m == mp)
}

/// A notification through the control socket; returns once the overlay has handled it.
fn control_notify(control: &Path, paths: &[&str]) -> std::io::Result<()> {
    let mut c = crate::control::Client::connect(control).map_err(std::io::Error::other)?;
    let _ = c.set_timeout(Some(DEADLINE));
    let r = c
        .request("notify", json!({"channel": CHANNEL, "paths": paths}))
        .map_err(std::io::Error::other)?;
    if r["handled"].as_u64().unwrap_or(0) >= 1 {
        Ok(())
    } else {
        Err(std::io::Error::other("no overlay handled it"))
    }
}

/// Whether the host watcher answers on its control socket and is connected to the daemon.
fn host_connected(control: &Path) -> bool {
    let status = crate::control::Client::connect(control).and_then(|mut c| {
        c.set_timeout(Some(DEADLINE))?;
        c.request("status", json!({}))
    });
    status.is_ok_and(|s| s["guests"][0]["state"] == "connected")
}

/// Pause (`STOP`) or resume (`CONT`) the host watcher.
fn host_signal(pid: u32, sig: &str) -> Result<(), DemoError> {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(DemoError::Send(std::io::Error::other(format!(
            "cannot send SIG{sig} to the host watcher (pid {pid})"
        ))))
    }
}

/// What a cached reader such as `ls -l` sees at a path: kind, size and mode (no data is read, so
/// the kernel's cached attributes are what shows), or a folder's listing.
fn look(p: &Path) -> String {
    match std::fs::symlink_metadata(p) {
        Err(_) => "(no such file)".into(),
        Ok(m) if m.is_dir() => {
            let mut names: Vec<OsString> = std::fs::read_dir(p)
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            names.sort();
            format!(
                "folder [{}]",
                names
                    .iter()
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        Ok(m) => format!(
            "file, {} bytes, mode {:o}",
            m.len(),
            m.permissions().mode() & 0o777
        ),
    }
}

/// One scripted host change.
struct Step {
    action: &'static str,
    /// The path whose view is shown before and after.
    shown: &'static str,
    change: fn(&Path) -> std::io::Result<()>,
    expected: &'static [&'static str],
}

fn script() -> Vec<Step> {
    vec![
        Step {
            action: "create notes.txt",
            shown: "notes.txt",
            change: |s| std::fs::write(s.join("notes.txt"), "first draft\n"),
            expected: &["IN_CREATE notes.txt", "IN_CLOSE_WRITE notes.txt"],
        },
        Step {
            action: "rewrite notes.txt",
            shown: "notes.txt",
            change: |s| std::fs::write(s.join("notes.txt"), "second draft, longer\n"),
            expected: &["IN_MODIFY notes.txt", "IN_CLOSE_WRITE notes.txt"],
        },
        Step {
            action: "rename notes.txt -> docs/notes-final.txt",
            shown: "docs/notes-final.txt",
            change: |s| std::fs::rename(s.join("notes.txt"), s.join("docs/notes-final.txt")),
            expected: &[
                "IN_MOVED_FROM notes.txt",
                "IN_MOVED_TO docs/notes-final.txt",
            ],
        },
        Step {
            action: "make projects/2026 with two files",
            shown: "projects/2026",
            change: |s| {
                std::fs::create_dir_all(s.join("projects/2026"))?;
                std::fs::write(s.join("projects/2026/plan.md"), "# plan\n")?;
                std::fs::write(s.join("projects/2026/budget.csv"), "item,cost\n")
            },
            expected: &[
                "IN_CREATE|IN_ISDIR projects",
                "IN_CREATE projects/2026/plan.md",
                "IN_CREATE projects/2026/budget.csv",
            ],
        },
        Step {
            action: "chmod 600 docs/notes-final.txt",
            shown: "docs/notes-final.txt",
            change: |s| {
                std::fs::set_permissions(
                    s.join("docs/notes-final.txt"),
                    std::fs::Permissions::from_mode(0o600),
                )
            },
            expected: &["IN_ATTRIB docs/notes-final.txt"],
        },
        Step {
            action: "delete docs/notes-final.txt",
            shown: "docs/notes-final.txt",
            change: |s| std::fs::remove_file(s.join("docs/notes-final.txt")),
            expected: &["IN_DELETE docs/notes-final.txt"],
        },
    ]
}

fn play(n: usize, step: &Step, env: &Env, watcher: &mut Watcher) -> Result<StepReport, DemoError> {
    let shown = env.mnt.join(step.shown);
    // Every earlier change handled by the guest (a trailing batch of the last step would
    // otherwise rescan this step's change and leave nothing stale to show).
    let barrier = crate::host::sync::SyncConfig {
        channels: vec![CHANNEL.to_string()],
        timeout: Duration::from_secs(5),
        json: false,
        control: env.host_control.clone(),
    };
    if let Err(e) = crate::host::sync::request(&barrier) {
        tracing::warn!(error = %e, "host sync before the step failed");
    }
    // The reader looks first (so the kernel caches what it saw, including "no such file").
    let _ = look(&shown);
    // The host watcher waits while SOURCE changes, so the reader's stale view can be shown.
    host_signal(env.host_pid, "STOP")?;
    let changed = (step.change)(&env.src).map_err(|e| DemoError::Prepare {
        what: step.action.into(),
        source: e,
    });
    let before = look(&shown);
    let truth = look(&env.src.join(step.shown));
    let sent = Instant::now();
    host_signal(env.host_pid, "CONT")?;
    changed?;
    let expected: Vec<String> = step.expected.iter().map(|s| s.to_string()).collect();
    let events = watcher.collect(&env.mnt, &expected, Duration::from_secs(5));
    let latency = expected
        .first()
        .and_then(|w| events.iter().find(|(e, _)| e == w))
        .map(|(_, t)| t.duration_since(sent).as_secs_f64() * 1000.0);
    let after = look(&shown);
    let events: Vec<String> = events.into_iter().map(|(e, _)| e).collect();
    let stale_before = before != truth;
    let fresh_after = after == truth;
    let events_ok = expected
        .iter()
        .all(|w| events.iter().any(|e| seen_as(e, w)));
    Ok(StepReport {
        step: n,
        host_action: step.action.into(),
        before,
        after,
        expected_events: expected,
        events,
        latency_ms: latency,
        stale_before,
        fresh_after,
        events_ok,
        ok: stale_before && fresh_after && events_ok,
    })
}
