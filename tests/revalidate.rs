//! Revalidation on open: a permission change made on the host is enforced at the next open
//! through the overlay, before any notification arrives (the kernel checks permissions against
//! the attributes it caches, for 24 h with `cache=always`), and the kernel's view of the file is
//! refreshed (with its IN_ATTRIB replayed) without waiting for the host's notification.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use daemon_support::{DEADLINE, poll_until};
use overlay_support::{Linked, Watcher, summary};
use serde_json::json;

const NOBODY: u32 = 65534;
/// A group nobody is in, given to the caller as a supplementary group only.
const GROUP: u32 = 4242;

/// An overlay with `allow_other` (so other users may use it) whose folders they can reach.
fn linked(test: &str) -> Option<Linked> {
    let l = Linked::new(test, "allow_other,revalidate=open")?;
    for dir in [l.src.parent().unwrap(), l.src.as_path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    Some(l)
}

/// Run `sh -c SCRIPT` as uid/gid `NOBODY`, with `groups` as supplementary groups (setpriv).
fn as_nobody(groups: &[u32], script: &str) -> Output {
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg(groups)
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)")
}

fn ok(o: &Output) -> bool {
    o.status.success()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn denied(o: &Output) -> bool {
    !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Permission denied")
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn host_chmod_is_enforced_at_the_next_open() {
    let Some(l) = linked("host_chmod_is_enforced_at_the_next_open") else {
        return;
    };
    fs::write(l.s("doc.txt"), b"for everyone\n").unwrap();
    fs::set_permissions(l.s("doc.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    l.notify(&["doc.txt"]);
    let doc = l.m("doc.txt");
    let cat = format!("cat {}", doc.display());
    assert_eq!(text(&as_nobody(&[], &cat)), "for everyone\n");
    assert_eq!(mode(&doc), 0o644);
    let mut w = Watcher::new();
    w.add(&l.mnt);
    let mut stream = l.daemon.client();
    stream
        .request("watch", json!({"channel": l.channel}))
        .unwrap();
    // The host revokes access; no notification comes.
    fs::set_permissions(l.s("doc.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let o = as_nobody(&[], &cat);
    assert!(
        denied(&o),
        "nobody still read a file the host made private: {:?} {}",
        o.status,
        text(&o)
    );
    // The open told the overlay: the kernel's view follows, and watchers see the change.
    poll_until("the kernel's view refreshed", DEADLINE, || {
        mode(&doc) == 0o600
    });
    let ev = w.events(DEADLINE);
    assert!(
        ev.iter().any(|e| e.is(libc::IN_ATTRIB, "doc.txt")),
        "{:?}",
        summary(&ev)
    );
    // Root still reads it; writes by nobody are refused too.
    assert_eq!(fs::read(&doc).unwrap(), b"for everyone\n");
    assert!(denied(&as_nobody(
        &[],
        &format!("echo x >> {}", doc.display())
    )));
    assert_eq!(fs::read(l.s("doc.txt")).unwrap(), b"for everyone\n");
    // The host's notification comes late: nothing more to do, but `vfnotify watch` subscribers
    // now hear of the change the open found.
    l.notify(&["doc.txt"]);
    let is_it =
        |e: &serde_json::Value| e["event"]["type"] == "attrib" && e["event"]["path"] == "doc.txt";
    let mut found = stream.take_events().iter().any(is_it);
    while !found {
        let e = stream
            .recv()
            .unwrap_or_else(|e| panic!("no attrib doc.txt on the watch stream: {e}"));
        found = is_it(&e);
    }
    let stats = l.overlay_stats();
    assert!(stats["open_revalidated"].as_u64() >= Some(1), "{stats}");
    assert!(stats["open_refused"].as_u64() >= Some(1), "{stats}");
}

/// The group check uses the caller's supplementary groups: a host change that keeps a
/// supplementary group's access keeps it, and a `chown` to another group revokes it.
#[test]
fn host_chown_is_enforced_with_supplementary_groups() {
    let Some(l) = linked("host_chown_is_enforced_with_supplementary_groups") else {
        return;
    };
    let p = l.s("team.txt");
    fs::write(&p, b"team\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&p, Some(0), Some(GROUP)).unwrap();
    l.notify(&["team.txt"]);
    let cat = format!("cat {}", l.m("team.txt").display());
    assert_eq!(text(&as_nobody(&[GROUP], &cat)), "team\n");
    assert!(denied(&as_nobody(&[], &cat)), "not in the group");
    // A host change that keeps the group's access (new content): still readable.
    fs::write(&p, b"team, v2\n").unwrap();
    let o = as_nobody(&[GROUP], &cat);
    assert!(ok(&o), "a supplementary group's access was lost: {o:?}");
    // The host gives the file to another group: the member loses access at once.
    std::os::unix::fs::chown(&p, None, Some(GROUP + 1)).unwrap();
    let o = as_nobody(&[GROUP], &cat);
    assert!(denied(&o), "read after the host's chown: {o:?}");
    poll_until("the kernel's view refreshed", DEADLINE, || {
        fs::metadata(l.m("team.txt")).unwrap().gid() == GROUP + 1
    });
}

/// `open(O_CREAT)` without `O_EXCL` on a name the kernel believes absent (a negative entry) but
/// the host has created meanwhile opens the host's file: the kernel checked only the folder, so
/// the overlay checks the file (no reading or truncating someone else's private file).
#[test]
fn create_over_a_host_file_checks_the_file() {
    let Some(l) = linked("create_over_a_host_file_checks_the_file") else {
        return;
    };
    fs::create_dir(l.s("shared")).unwrap();
    fs::set_permissions(l.s("shared"), fs::Permissions::from_mode(0o1777)).unwrap();
    l.notify(&["shared"]);
    let late = l.m("shared/late.txt");
    // The kernel learns that the name does not exist (cached: cache=always).
    assert!(ok(&as_nobody(
        &[],
        &format!("test ! -e {}", late.display())
    )));
    fs::write(l.s("shared/late.txt"), b"host secret\n").unwrap();
    fs::set_permissions(l.s("shared/late.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let o = as_nobody(&[], &format!("cat <> {}", late.display()));
    assert!(
        denied(&o),
        "nobody opened the host's private file: {:?} {}",
        o.status,
        text(&o)
    );
    let o = as_nobody(&[], &format!(": > {}", late.display()));
    assert!(
        denied(&o),
        "nobody truncated the host's private file: {o:?}"
    );
    assert_eq!(fs::read(l.s("shared/late.txt")).unwrap(), b"host secret\n");
    // A file the caller may write is opened (and truncated) as asked.
    fs::write(l.s("shared/open.txt"), b"anyone\n").unwrap();
    fs::set_permissions(l.s("shared/open.txt"), fs::Permissions::from_mode(0o666)).unwrap();
    let open = l.m("shared/open.txt");
    // Make sure the kernel holds a negative entry for this one too.
    let _ = as_nobody(&[], &format!("test -e {}", open.display()));
    assert!(ok(&as_nobody(&[], &format!(": > {}", open.display()))));
    assert_eq!(fs::read(l.s("shared/open.txt")).unwrap(), b"");
}

/// Root executes a file only while it has an execute bit, as the kernel decides for a local
/// file: a host `chmod -x` is enforced at the next exec.
#[test]
fn host_chmod_minus_x_is_enforced_at_the_next_exec() {
    let Some(l) = linked("host_chmod_minus_x_is_enforced_at_the_next_exec") else {
        return;
    };
    let p = l.s("tool.sh");
    fs::write(&p, b"#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    l.notify(&["tool.sh"]);
    let tool = l.m("tool.sh");
    let o = Command::new(&tool).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let e = Command::new(&tool).output().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
}

/// A host rewrite that makes a file longer, not notified: the next open finds it changed and
/// expires the attributes the kernel holds before its reply, so the read that follows reads the
/// whole new content (the kernel reads no further than the size it holds), and a stat right
/// after shows the new size, without waiting for the rescan the open queued. Also for a file
/// whose pages the kernel caches from an earlier read, and under `revalidate=auto` with no host
/// feeding the daemon (not trusted: the same check at every open). The overlay's page cache
/// serves the reads (`passthrough=off`; with kernel passthrough the kernel reads the backing
/// file, whose size is SOURCE's).
#[test]
fn a_host_rewrite_found_at_the_open_is_read_whole_and_shown_at_once() {
    for opts in [
        "passthrough=off,revalidate=open",
        "passthrough=off,revalidate=auto",
    ] {
        let Some(l) = Linked::new(
            "a_host_rewrite_found_at_the_open_is_read_whole_and_shown_at_once",
            opts,
        ) else {
            return;
        };
        fs::write(l.s("cold.txt"), b"short\n").unwrap();
        fs::write(l.s("warm.txt"), b"short too\n").unwrap();
        l.notify(&["cold.txt", "warm.txt"]);
        // cold.txt: looked up only; warm.txt: read once (its pages cached).
        assert_eq!(fs::metadata(l.m("cold.txt")).unwrap().len(), 6, "{opts}");
        assert_eq!(fs::read(l.m("warm.txt")).unwrap(), b"short too\n", "{opts}");
        for (name, body) in [
            (
                "cold.txt",
                &b"rewritten on the host, and much longer than before\n"[..],
            ),
            (
                "warm.txt",
                &b"also rewritten on the host, and longer than it was\n"[..],
            ),
        ] {
            fs::write(l.s(name), body).unwrap();
            assert_eq!(fs::read(l.m(name)).unwrap(), body, "{opts}: {name}");
            assert_eq!(
                fs::metadata(l.m(name)).unwrap().len(),
                body.len() as u64,
                "{opts}: {name}"
            );
        }
        // The counters reach `status` within its report interval.
        poll_until("both opens found the change", DEADLINE, || {
            l.overlay_stats()["open_revalidated"].as_u64() >= Some(2)
        });
        let stats = l.overlay_stats();
        assert_eq!(
            stats["open_expiry_timeouts"].as_u64(),
            Some(0),
            "{opts}: {stats}"
        );
    }
}
