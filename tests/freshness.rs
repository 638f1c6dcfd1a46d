//! Freshness: with `cache=always`, the overlay shows the old state until the host's notification
//! (the cache is on) and the new state as soon as `vfnotify notify` returns — for every kind of
//! change, with events replayed (`events=precise`) and with plain invalidation (`events=off`).
//! Data caching is tested with `passthrough=off`, where the kernel's page cache is in play.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use overlay_support::Linked;
use vfnotify::sys::mmap::ReadMap;

const MODES: [&str; 2] = [
    "events=off,passthrough=off",
    "events=precise,passthrough=off",
];

fn fill(src: &Path) {
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::create_dir_all(src.join("c")).unwrap();
    fs::write(src.join("a/file.txt"), b"version-1").unwrap();
    fs::write(src.join("a/b/deep.txt"), b"deep").unwrap();
    fs::write(src.join("top.txt"), b"top").unwrap();
    std::os::unix::fs::symlink("top.txt", src.join("link")).unwrap();
}

/// Run `case` once per event mode on a fresh linked overlay.
fn each_mode(test: &str, case: impl Fn(&Linked)) {
    for mode in MODES {
        let Some(l) = Linked::with_source(test, mode, fill) else {
            return;
        };
        // Linked (long caching from now on); the kernel learns the tree, the overlay its views.
        l.notify(&[]);
        walk(&l.mnt);
        l.notify(&[]);
        case(&l);
    }
}

fn walk(p: &Path) {
    for e in fs::read_dir(p).unwrap().flatten() {
        let _ = fs::symlink_metadata(e.path());
        if e.file_type().unwrap().is_dir() {
            walk(&e.path());
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn new_file_and_negative_entry() {
    each_mode("new_file_and_negative_entry", |l| {
        // Looked up and missed: a cached negative entry.
        assert!(fs::metadata(l.m("a/new.txt")).is_err());
        fs::write(l.s("a/new.txt"), b"hello").unwrap();
        assert!(
            fs::metadata(l.m("a/new.txt")).is_err(),
            "negative entry should still be cached"
        );
        assert!(
            !names(&l.m("a")).contains(&"new.txt".to_string()),
            "listing should still be cached"
        );
        l.notify(&[]);
        assert_eq!(fs::read(l.m("a/new.txt")).unwrap(), b"hello");
        assert!(names(&l.m("a")).contains(&"new.txt".to_string()));
    });
}

#[test]
fn removed_file() {
    each_mode("removed_file", |l| {
        fs::remove_file(l.s("a/file.txt")).unwrap();
        assert!(
            names(&l.m("a")).contains(&"file.txt".to_string()),
            "listing should still be cached"
        );
        l.notify(&[]);
        assert!(fs::symlink_metadata(l.m("a/file.txt")).is_err());
        assert!(!names(&l.m("a")).contains(&"file.txt".to_string()));
    });
}

#[test]
fn content_rewritten_same_size_read_and_mmap() {
    each_mode("content_rewritten_same_size", |l| {
        assert_eq!(fs::read(l.m("a/file.txt")).unwrap(), b"version-1");
        let f = fs::File::open(l.m("a/file.txt")).unwrap();
        let map = ReadMap::new(f.as_fd(), 9).expect("mmap");
        assert_eq!(map.to_vec(), b"version-1");
        // Same size, same second: only the content (and mtime nanoseconds) differ.
        fs::write(l.s("a/file.txt"), b"version-2").unwrap();
        // Read through the handle opened before, without a stat first (a stat after a read
        // refetches attributes (atime), and the kernel then drops pages whose mtime changed —
        // fresher than asked for, not a cache miss).
        let mut old = [0u8; 9];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut old, 0).unwrap();
        assert_eq!(
            &old, b"version-1",
            "page cache should still hold the old content"
        );
        // A new open finds the file changed on SOURCE (revalidation on open): read afresh.
        // (Under `revalidate=notify` the notification is what tells.)
        if common::revalidates_on_open(&l.opts) {
            assert_eq!(read_raw(&l.m("a/file.txt")), b"version-2");
        }
        l.notify(&[]);
        assert_eq!(fs::read(l.m("a/file.txt")).unwrap(), b"version-2");
        assert_eq!(
            map.to_vec(),
            b"version-2",
            "a process holding an mmap sees the new content"
        );
    });
}

#[test]
fn file_grown_and_shrunk() {
    each_mode("file_grown_and_shrunk", |l| {
        assert_eq!(fs::metadata(l.m("top.txt")).unwrap().len(), 3);
        fs::write(l.s("top.txt"), b"top and more").unwrap();
        assert_eq!(
            fs::metadata(l.m("top.txt")).unwrap().len(),
            3,
            "attributes should still be cached"
        );
        l.notify(&[]);
        assert_eq!(fs::read(l.m("top.txt")).unwrap(), b"top and more");
        fs::write(l.s("top.txt"), b"t").unwrap();
        l.notify(&[]);
        assert_eq!(fs::metadata(l.m("top.txt")).unwrap().len(), 1);
        assert_eq!(fs::read(l.m("top.txt")).unwrap(), b"t");
    });
}

#[test]
fn chmod_and_chown() {
    each_mode("chmod_and_chown", |l| {
        fs::set_permissions(l.s("top.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::lchown(l.s("top.txt"), Some(1234), Some(4321)).unwrap();
        let before = fs::metadata(l.m("top.txt")).unwrap();
        assert_ne!(
            before.mode() & 0o777,
            0o600,
            "attributes should still be cached"
        );
        l.notify(&[]);
        let after = fs::metadata(l.m("top.txt")).unwrap();
        assert_eq!(after.mode() & 0o777, 0o600);
        assert_eq!((after.uid(), after.gid()), (1234, 4321));
    });
}

#[test]
fn rename_within_and_across_directories() {
    each_mode("rename_within_and_across", |l| {
        let ino = fs::metadata(l.m("a/file.txt")).unwrap().ino();
        fs::rename(l.s("a/file.txt"), l.s("a/renamed.txt")).unwrap();
        fs::rename(l.s("top.txt"), l.s("c/moved.txt")).unwrap();
        assert!(
            fs::metadata(l.m("a/file.txt")).is_ok(),
            "old name should still be cached"
        );
        l.notify(&[]);
        assert!(fs::symlink_metadata(l.m("a/file.txt")).is_err());
        assert_eq!(
            fs::metadata(l.m("a/renamed.txt")).unwrap().ino(),
            ino,
            "same inode under the new name"
        );
        assert!(fs::symlink_metadata(l.m("top.txt")).is_err());
        assert_eq!(fs::read(l.m("c/moved.txt")).unwrap(), b"top");
        assert_eq!(names(&l.m("c")), vec!["moved.txt"]);
    });
}

#[test]
fn new_nested_tree_and_removed_tree() {
    each_mode("nested_trees", |l| {
        assert!(fs::metadata(l.m("n1")).is_err());
        fs::create_dir_all(l.s("n1/n2/n3")).unwrap();
        fs::write(l.s("n1/n2/n3/leaf.txt"), b"leaf").unwrap();
        fs::write(l.s("n1/one.txt"), b"1").unwrap();
        fs::remove_dir_all(l.s("a")).unwrap();
        assert!(
            fs::metadata(l.m("n1")).is_err(),
            "negative entry should still be cached"
        );
        assert!(
            fs::metadata(l.m("a/b/deep.txt")).is_ok(),
            "removed tree should still be cached"
        );
        l.notify(&[]);
        assert_eq!(fs::read(l.m("n1/n2/n3/leaf.txt")).unwrap(), b"leaf");
        assert_eq!(names(&l.m("n1")), vec!["n2", "one.txt"]);
        assert!(fs::symlink_metadata(l.m("a")).is_err());
        assert!(!names(&l.mnt).contains(&"a".to_string()));
    });
}

#[test]
fn symlink_retargeted_and_hard_link_added() {
    each_mode("symlink_and_hard_link", |l| {
        assert_eq!(fs::read_link(l.m("link")).unwrap(), Path::new("top.txt"));
        fs::remove_file(l.s("link")).unwrap();
        std::os::unix::fs::symlink("a/file.txt", l.s("link")).unwrap();
        fs::hard_link(l.s("a/file.txt"), l.s("c/hard.txt")).unwrap();
        assert_eq!(
            fs::read_link(l.m("link")).unwrap(),
            Path::new("top.txt"),
            "old target should still be cached"
        );
        l.notify(&[]);
        assert_eq!(fs::read_link(l.m("link")).unwrap(), Path::new("a/file.txt"));
        let a = fs::metadata(l.m("a/file.txt")).unwrap();
        let b = fs::metadata(l.m("c/hard.txt")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(b.nlink(), 2);
    });
}

#[test]
fn other_channel_changes_nothing() {
    let Some(l) = Linked::with_source("other_channel", "passthrough=off", fill) else {
        return;
    };
    walk(&l.mnt);
    assert!(fs::metadata(l.m("ghost.txt")).is_err());
    fs::write(l.s("ghost.txt"), b"x").unwrap();
    let before = l.overlay_stats()["notifications"].as_u64().unwrap_or(0);
    // A channel nobody follows is an error from `notify`; map one so the daemon accepts it.
    let out = common::vfnotify()
        .args(["notify", "--control"])
        .arg(&l.daemon.control)
        .arg("elsewhere")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "notify for an unknown channel should fail"
    );
    assert!(
        fs::metadata(l.m("ghost.txt")).is_err(),
        "another channel must not refresh this overlay"
    );
    assert_eq!(
        l.overlay_stats()["notifications"].as_u64().unwrap_or(0),
        before
    );
    l.notify(&[]);
    assert!(fs::metadata(l.m("ghost.txt")).is_ok());
}

#[test]
fn scoped_notification_touches_only_its_scope() {
    let Some(l) = Linked::with_source("scoped", "passthrough=off", fill) else {
        return;
    };
    walk(&l.mnt);
    l.notify(&[]);
    assert!(fs::metadata(l.m("a/in-scope.txt")).is_err());
    assert!(fs::metadata(l.m("c/out-of-scope.txt")).is_err());
    fs::write(l.s("a/in-scope.txt"), b"1").unwrap();
    fs::write(l.s("c/out-of-scope.txt"), b"2").unwrap();
    l.notify(&["a/in-scope.txt"]);
    assert!(fs::metadata(l.m("a/in-scope.txt")).is_ok());
    assert!(
        fs::metadata(l.m("c/out-of-scope.txt")).is_err(),
        "a change outside the scope stays unseen"
    );
    // A directory scope covers that directory.
    l.notify(&["c"]);
    assert!(fs::metadata(l.m("c/out-of-scope.txt")).is_ok());
    // Hostile scopes are refused by the daemon, not followed.
    let out = common::vfnotify()
        .args(["notify", "--control"])
        .arg(&l.daemon.control)
        .args(["docs", "../etc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn burst_of_notifications_causes_bounded_rescans() {
    let Some(l) = Linked::with_source("burst", "passthrough=off", fill) else {
        return;
    };
    walk(&l.mnt);
    l.notify(&[]);
    let before = l.overlay_stats()["rescans"].as_u64().unwrap_or(0);
    fs::write(l.s("burst.txt"), b"x").unwrap();
    let mut payload = Vec::new();
    for _ in 0..1000 {
        payload.extend_from_slice(b"docs\n");
    }
    l.daemon.send(&payload);
    l.daemon.wait_counter("received", 1000);
    // The last one is always acted on.
    l.notify(&[]);
    assert!(fs::metadata(l.m("burst.txt")).is_ok());
    let after = l.overlay_stats()["rescans"].as_u64().unwrap_or(0);
    let rescans = after - before;
    assert!(
        (1..200).contains(&rescans),
        "1,001 notifications caused {rescans} rescans"
    );
}

#[test]
fn delivery_survives_late_daemon_restart_and_remount() {
    if !common::fuse_ready("delivery") {
        return;
    }
    // The overlay is mounted before the daemon exists.
    let dir = common::tempdir();
    let ctl = dir.path().join("ctl.sock");
    let src = dir.path().join("src");
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let opts = format!("channel=docs,control={},passthrough=off", ctl.display());
    let mut mount = Some(common::MountGuard::mount(&src, &mnt, &opts));
    assert!(fs::metadata(mnt.join("f1")).is_err());
    let mut daemon = daemon_support::Daemon::start_at(&ctl, &[]);
    let notify = |name: &str| {
        fs::write(src.join(name), b"x").unwrap();
        daemon_support::poll_until("overlay linked", daemon_support::DEADLINE, || {
            common::notify_ok(&ctl, "docs", &[])
        });
        assert!(
            fs::metadata(mnt.join(name)).is_ok(),
            "{name} visible after notify"
        );
    };
    notify("f1");
    // Daemon restarted while the overlay stays mounted; a change made meanwhile is caught up.
    daemon.terminate();
    fs::write(src.join("missed"), b"m").unwrap();
    let _ = fs::metadata(mnt.join("missed"));
    let daemon2 = daemon_support::Daemon::start_at(&ctl, &[]);
    notify("f2");
    assert!(fs::metadata(mnt.join("missed")).is_ok());
    // Overlay unmounted and mounted again while the daemon runs.
    drop(mount.take());
    mount = Some(common::MountGuard::mount(&src, &mnt, &opts));
    notify("f3");
    drop(mount);
    drop(daemon2);
}

/// Read a file with plain read(2) calls, without the fstat `fs::read` makes first.
/// An ext4 SOURCE reuses a freed inode number at once: a file removed and a folder made in its
/// place get the same number while the kernel still holds the file. The folder must show as a
/// folder — the overlay's node for that number used to keep the old kind, so listing it failed
/// with ENOTDIR.
#[test]
fn reused_inode_numbers_of_another_kind_on_ext4() {
    if !common::fuse_ready("reused_inode_numbers") || !common::Ext4Mount::available() {
        return;
    }
    for mode in MODES {
        let img = common::tempdir();
        let image = img.path().join("src.img");
        let ext4 = std::cell::RefCell::new(None);
        let Some(mut l) = Linked::with_source("reused_inode_numbers", mode, |src| {
            *ext4.borrow_mut() = Some(common::Ext4Mount::new(&image, src));
            fs::create_dir_all(src.join("sub")).unwrap();
            fs::write(src.join("sub/f"), b"file").unwrap();
        }) else {
            return;
        };
        let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
        l.notify(&[]);
        walk(&l.mnt);
        // Looked up, not opened: an open's fd on SOURCE would keep the number taken a while.
        assert!(fs::metadata(l.m("sub/f")).unwrap().is_file(), "{mode}");
        let file_ino = ino(&l.s("sub/f"));
        // The file goes (the kernel still holds it: nothing was notified), a folder takes its
        // number. (A folder's number is not freed while the overlay caches an fd of it.)
        fs::remove_file(l.s("sub/f")).unwrap();
        fs::create_dir(l.s("sub/e")).unwrap();
        fs::write(l.s("sub/e/inner"), b"i").unwrap();
        assert_eq!(
            ino(&l.s("sub/e")),
            file_ino,
            "{mode}: ext4 reused the number"
        );
        l.notify(&[]);
        assert_eq!(names(&l.m("sub")), ["e"], "{mode}");
        assert!(fs::metadata(l.m("sub/e")).unwrap().is_dir(), "{mode}");
        assert_eq!(names(&l.m("sub/e")), ["inner"], "{mode}");
        assert_eq!(fs::read(l.m("sub/e/inner")).unwrap(), b"i", "{mode}");
        drop(l.mount.take());
        drop(ext4.borrow_mut().take());
    }
}

fn read_raw(p: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut f = fs::File::open(p).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// A host change to a file a client has just looked up, made while the overlay is still taking
/// its first view of the file's folder (a large folder, whose view takes a while; the file is
/// listed last on tmpfs, newest first), is seen after its notification. The view keeps what the
/// lookup told the kernel: had it taken SOURCE's newer attributes, the notification would have
/// found no difference, and the kernel would have kept the old size and pages.
#[test]
fn a_change_racing_the_first_view_of_its_folder_is_seen_after_its_notification() {
    const TEST: &str =
        "a_change_racing_the_first_view_of_its_folder_is_seen_after_its_notification";
    // Trusted: the kernel keeps what it was told until a notification says otherwise.
    for mode in MODES.map(|m| format!("{m},revalidate=notify")) {
        let Some(l) = Linked::with_source(TEST, &mode, |src| {
            fs::create_dir(src.join("big")).unwrap();
            fs::write(src.join("big/f"), b"old").unwrap();
            for i in 0..20_000 {
                fs::write(src.join(format!("big/e{i}")), b"").unwrap();
            }
        }) else {
            return;
        };
        l.notify(&[]);
        // The lookup of `big` sets off its first view; `f` is looked up meanwhile.
        assert_eq!(fs::read(l.m("big/f")).unwrap(), b"old");
        fs::write(l.s("big/f"), b"new and longer").unwrap();
        l.notify(&["big/f"]);
        assert_eq!(fs::metadata(l.m("big/f")).unwrap().len(), 14, "{mode}");
        assert_eq!(fs::read(l.m("big/f")).unwrap(), b"new and longer", "{mode}");
    }
}

/// A whole rescan stats the entries of a folder whose times prove its names unchanged by the
/// names of its last view, without listing it (counter `dirs_unlisted`). Every kind of change
/// is still found after its notification, with its event: a file's own (content, mode) by its
/// stat, a name's by the folder's times — even when the host sets the folder's mtime back after
/// adding a name (its ctime moves all the same).
#[test]
fn whole_rescans_of_folders_proved_unchanged_still_find_every_change() {
    const TEST: &str = "whole_rescans_of_folders_proved_unchanged_still_find_every_change";
    let dirs = ["p0", "p1", "p2", "p3", "p4", "p5"];
    let Some(l) = Linked::with_source(TEST, "events=precise,passthrough=off", |src| {
        for d in dirs {
            fs::create_dir(src.join(d)).unwrap();
            fs::write(src.join(d).join("f"), b"ffff").unwrap();
            fs::write(src.join(d).join("g"), b"g").unwrap();
        }
        // Times prove names only once they are older than the margin (1 s) when listed.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }) else {
        return;
    };
    walk(&l.mnt);
    l.notify(&[]);
    l.notify(&[]);
    let before = l.wait_stat(
        "dirs_unlisted",
        "folders rescanned without a listing",
        |n| n >= dirs.len() as u64,
    );
    let mut w = overlay_support::Watcher::new();
    w.add_recursive(&l.mnt);

    fs::write(l.s("p0/f"), b"FFFF").unwrap();
    fs::set_permissions(l.s("p1/f"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(l.s("p2/new"), b"n").unwrap();
    let p3 = fs::metadata(l.s("p3")).unwrap().modified().unwrap();
    fs::write(l.s("p3/new"), b"n").unwrap();
    fs::File::open(l.s("p3"))
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(p3))
        .unwrap();
    assert_eq!(fs::metadata(l.s("p3")).unwrap().modified().unwrap(), p3);
    fs::remove_file(l.s("p4/g")).unwrap();
    fs::rename(l.s("p5/f"), l.s("p5/h")).unwrap();
    l.notify(&[]);

    assert_eq!(fs::read(l.m("p0/f")).unwrap(), b"FFFF");
    assert_eq!(fs::metadata(l.m("p1/f")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(names(&l.m("p2")), ["f", "g", "new"]);
    assert_eq!(names(&l.m("p3")), ["f", "g", "new"]);
    assert_eq!(names(&l.m("p4")), ["f"]);
    assert_eq!(names(&l.m("p5")), ["g", "h"]);
    let events = w.events(std::time::Duration::from_secs(2));
    let seen = |dir: &str, mask: u32, name: &str| {
        events.iter().any(|e| e.dir == l.m(dir) && e.is(mask, name))
    };
    let all = overlay_support::summary(&events);
    assert!(seen("p0", libc::IN_MODIFY, "f"), "{all:?}");
    assert!(seen("p1", libc::IN_ATTRIB, "f"), "{all:?}");
    assert!(seen("p2", libc::IN_CREATE, "new"), "{all:?}");
    assert!(seen("p3", libc::IN_CREATE, "new"), "{all:?}");
    assert!(seen("p4", libc::IN_DELETE, "g"), "{all:?}");
    assert!(seen("p5", libc::IN_MOVED_FROM, "f"), "{all:?}");
    assert!(seen("p5", libc::IN_MOVED_TO, "h"), "{all:?}");
    // p0 and p1 (their names unchanged) at least were statted by name again.
    l.wait_stat(
        "dirs_unlisted",
        "unchanged folders rescanned without a listing",
        |n| n >= before + 2,
    );
}
