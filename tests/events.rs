//! Precise events: each host change, once notified, reaches an inotify watcher on the overlay as
//! the real event for that very file — without writing anything to SOURCE.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use libc::{
    IN_ATTRIB, IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_ISDIR, IN_MODIFY, IN_MOVED_FROM,
    IN_MOVED_TO,
};
use overlay_support::{Event, Linked, Watcher, summary, tree_digest};

const WAIT: Duration = Duration::from_millis(300);

fn fill(src: &Path) {
    fs::create_dir_all(src.join("d1")).unwrap();
    fs::create_dir_all(src.join("d2")).unwrap();
    fs::create_dir_all(src.join("gone/inner")).unwrap();
    fs::write(src.join("gone/inner/x.txt"), b"x").unwrap();
    fs::write(src.join("d1/a.txt"), b"alpha").unwrap();
    fs::write(src.join("d1/b.txt"), b"bravo").unwrap();
    fs::write(src.join("top.txt"), b"top").unwrap();
}

/// A linked overlay whose tree the kernel knows, with a watcher on every folder.
fn setup(test: &str, opts: &str) -> Option<(Linked, Watcher)> {
    let l = Linked::with_source(test, opts, fill)?;
    l.notify(&[]);
    let mut w = Watcher::new();
    w.add_recursive(&l.mnt);
    l.notify(&[]);
    assert!(
        w.events(Duration::from_millis(50)).is_empty(),
        "no events before any change"
    );
    Some((l, w))
}

fn only(events: &[Event], dir_suffix: &str) -> Vec<(String, String)> {
    summary(
        &events
            .iter()
            .filter(|e| e.dir.ends_with(dir_suffix))
            .cloned()
            .collect::<Vec<_>>(),
    )
}

fn s(m: &str, n: &str) -> (String, String) {
    (m.to_string(), n.to_string())
}

/// On ext4 a file removed and another created frees and reuses one inode number: that is a delete
/// and a create (the birth times differ), not a rename — which the overlay used to replay.
#[test]
fn a_reused_inode_number_is_a_delete_and_a_create_not_a_rename() {
    if !common::fuse_ready("reused_number_events") || !common::Ext4Mount::available() {
        return;
    }
    let img = common::tempdir();
    let image = img.path().join("src.img");
    let ext4 = std::cell::RefCell::new(None);
    let Some(mut l) = Linked::with_source("reused_number_events", "", |src| {
        *ext4.borrow_mut() = Some(common::Ext4Mount::new(&image, src));
        fill(src);
    }) else {
        return;
    };
    l.notify(&[]);
    let mut w = Watcher::new();
    w.add_recursive(&l.mnt);
    l.notify(&[]);
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let before = ino(&l.s("d1/a.txt"));
    fs::remove_file(l.s("d1/a.txt")).unwrap();
    fs::write(l.s("d1/c.txt"), b"charlie").unwrap();
    assert_eq!(ino(&l.s("d1/c.txt")), before, "ext4 reused the number");
    l.notify(&[]);
    let ev = only(&w.events(WAIT), "d1");
    assert!(ev.contains(&s("DELETE", "a.txt")), "{ev:?}");
    assert!(ev.contains(&s("CREATE", "c.txt")), "{ev:?}");
    assert!(
        !ev.iter().any(|(m, _)| m.contains("MOVED")),
        "not a rename: {ev:?}"
    );
    assert_eq!(fs::read(l.m("d1/c.txt")).unwrap(), b"charlie");
    drop(l.mount.take());
    drop(ext4.borrow_mut().take());
}

#[test]
fn create_modify_delete_attrib() {
    let Some((l, mut w)) = setup("create_modify_delete_attrib", "") else {
        return;
    };
    // Create.
    fs::write(l.s("d1/new.txt"), b"fresh").unwrap();
    l.notify(&[]);
    let ev = w.events(WAIT);
    assert_eq!(
        only(&ev, "d1"),
        vec![
            s("CREATE", "new.txt"),
            s("MODIFY", "new.txt"),
            s("CLOSE_WRITE", "new.txt")
        ]
    );
    // Content rewritten.
    fs::write(l.s("d1/a.txt"), b"ALPHA-2").unwrap();
    l.notify(&[]);
    let ev = w.events(WAIT);
    assert_eq!(
        only(&ev, "d1"),
        vec![s("MODIFY", "a.txt"), s("CLOSE_WRITE", "a.txt")]
    );
    assert_eq!(fs::read(l.m("d1/a.txt")).unwrap(), b"ALPHA-2");
    // chmod, chown, times.
    fs::set_permissions(l.s("d1/b.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    l.notify(&[]);
    assert_eq!(only(&w.events(WAIT), "d1"), vec![s("ATTRIB", "b.txt")]);
    std::os::unix::fs::lchown(l.s("d1/b.txt"), Some(4242), None).unwrap();
    l.notify(&[]);
    assert_eq!(only(&w.events(WAIT), "d1"), vec![s("ATTRIB", "b.txt")]);
    let t =
        fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000));
    fs::File::options()
        .write(true)
        .open(l.s("top.txt"))
        .unwrap()
        .set_times(t)
        .unwrap();
    l.notify(&[]);
    let ev = w.events(WAIT);
    assert!(
        ev.iter()
            .any(|e| e.is(IN_ATTRIB, "top.txt") || e.is(IN_MODIFY, "top.txt")),
        "times change: {:?}",
        summary(&ev)
    );
    // Delete.
    fs::remove_file(l.s("d1/new.txt")).unwrap();
    l.notify(&[]);
    assert_eq!(only(&w.events(WAIT), "d1"), vec![s("DELETE", "new.txt")]);
    // Nothing changed: nothing emitted; a burst for one change emits it once.
    l.notify(&[]);
    assert!(w.events(Duration::from_millis(100)).is_empty());
    fs::write(l.s("d2/once.txt"), b"1").unwrap();
    for _ in 0..5 {
        l.notify(&[]);
    }
    let ev = w.events(WAIT);
    assert_eq!(
        ev.iter().filter(|e| e.is(IN_CREATE, "once.txt")).count(),
        1,
        "{:?}",
        summary(&ev)
    );
}

#[test]
fn renames_pair_cookies_within_and_across_directories() {
    let Some((l, mut w)) = setup("renames", "") else {
        return;
    };
    fs::rename(l.s("d1/a.txt"), l.s("d1/a-renamed.txt")).unwrap();
    fs::rename(l.s("d1/b.txt"), l.s("d2/b-moved.txt")).unwrap();
    l.notify(&[]);
    let ev = w.events(WAIT);
    let from_a = ev
        .iter()
        .find(|e| e.is(IN_MOVED_FROM, "a.txt"))
        .expect("MOVED_FROM a.txt");
    let to_a = ev
        .iter()
        .find(|e| e.is(IN_MOVED_TO, "a-renamed.txt"))
        .expect("MOVED_TO a-renamed.txt");
    assert!(from_a.cookie != 0 && from_a.cookie == to_a.cookie);
    let from_b = ev
        .iter()
        .find(|e| e.is(IN_MOVED_FROM, "b.txt"))
        .expect("MOVED_FROM b.txt");
    let to_b = ev
        .iter()
        .find(|e| e.is(IN_MOVED_TO, "b-moved.txt"))
        .expect("MOVED_TO b-moved.txt");
    assert!(from_b.dir.ends_with("d1") && to_b.dir.ends_with("d2"));
    assert_eq!(from_b.cookie, to_b.cookie);
    assert_ne!(from_a.cookie, from_b.cookie);
    assert!(
        !ev.iter().any(|e| e.mask & (IN_CREATE | IN_DELETE) != 0),
        "renames are not create+delete: {:?}",
        summary(&ev)
    );
}

#[test]
fn directories_symlinks_and_hard_links() {
    let Some((l, mut w)) = setup("dirs_links", "") else {
        return;
    };
    fs::create_dir(l.s("d2/sub")).unwrap();
    std::os::unix::fs::symlink("../top.txt", l.s("d2/sym")).unwrap();
    fs::hard_link(l.s("d1/a.txt"), l.s("d2/hard.txt")).unwrap();
    fs::remove_dir_all(l.s("gone")).unwrap();
    l.notify(&[]);
    let ev = w.events(WAIT);
    let d2: BTreeSet<(String, String)> = only(&ev, "d2").into_iter().collect();
    assert!(d2.contains(&s("CREATE|ISDIR", "sub")), "{d2:?}");
    assert!(d2.contains(&s("CREATE", "sym")), "{d2:?}");
    assert!(d2.contains(&s("CREATE", "hard.txt")), "{d2:?}");
    // The removed tree: its contents go first, then the folder itself.
    let root: Vec<_> = ev
        .iter()
        .filter(|e| e.dir == l.mnt)
        .map(|e| (e.mask, e.name.clone()))
        .collect();
    assert!(
        root.contains(&(IN_DELETE | IN_ISDIR, "gone".into())),
        "{:?}",
        summary(&ev)
    );
    let pos_x = ev
        .iter()
        .position(|e| e.is(IN_DELETE, "x.txt"))
        .expect("DELETE x.txt inside the removed tree");
    let pos_gone = ev
        .iter()
        .position(|e| e.is(IN_DELETE | IN_ISDIR, "gone"))
        .unwrap();
    assert!(pos_x < pos_gone);
    assert_eq!(
        fs::read_link(l.m("d2/sym")).unwrap(),
        Path::new("../top.txt")
    );
}

#[test]
fn recursive_watcher_sees_files_of_a_new_directory() {
    let Some((l, mut w)) = setup("recursive_new_dir", "") else {
        return;
    };
    fs::create_dir_all(l.s("tree/one/two")).unwrap();
    for p in ["tree/f1", "tree/one/f2", "tree/one/two/f3"] {
        fs::write(l.s(p), p).unwrap();
    }
    // Run the notification in the background and behave like `inotifywait -r`: on
    // IN_CREATE|IN_ISDIR add a watch and list the new folder.
    let mut child = Command::new(common::bin())
        .args(["notify", "--control"])
        .arg(&l.daemon.control)
        .arg("docs")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = w.events(Duration::from_millis(20));
        for e in &ev {
            let rel = e
                .dir
                .join(&e.name)
                .strip_prefix(&l.mnt)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            seen.insert(rel.clone());
            if e.mask & (IN_CREATE | IN_ISDIR) == IN_CREATE | IN_ISDIR {
                watch_tree(&mut w, &e.dir.join(&e.name), &l.mnt, &mut seen);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success());
            for e in w.events(Duration::from_millis(100)) {
                seen.insert(
                    e.dir
                        .join(&e.name)
                        .strip_prefix(&l.mnt)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "notify did not finish"
        );
    }
    for p in [
        "tree",
        "tree/one",
        "tree/one/two",
        "tree/f1",
        "tree/one/f2",
        "tree/one/two/f3",
    ] {
        assert!(seen.contains(p), "{p} not seen; saw {seen:?}");
    }
}

/// What `inotifywait -r` and GIO do for a new folder: watch it and everything below, listing it.
fn watch_tree(w: &mut Watcher, dir: &Path, root: &Path, seen: &mut BTreeSet<String>) {
    w.add(dir);
    for entry in fs::read_dir(dir).unwrap().flatten() {
        seen.insert(
            entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        if entry.file_type().unwrap().is_dir() {
            watch_tree(w, &entry.path(), root, seen);
        }
    }
}

#[test]
fn replays_never_touch_source_even_read_only() {
    if !common::fuse_ready("read_only_source") {
        return;
    }
    // SOURCE is a read-only bind mount of the folder the host changes.
    let dir = common::tempdir();
    let host = dir.path().join("host");
    let ro = dir.path().join("ro");
    fs::create_dir_all(&host).unwrap();
    fs::create_dir_all(&ro).unwrap();
    fill(&host);
    assert!(
        Command::new("mount")
            .arg("--bind")
            .arg(&host)
            .arg(&ro)
            .status()
            .unwrap()
            .success()
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _ro_guard = Unmount(ro.clone());
    assert!(
        Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&ro)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        fs::write(ro.join("probe"), b"x").is_err(),
        "bind mount must be read-only"
    );

    let daemon = daemon_support::Daemon::start(&[]);
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let _m = common::MountGuard::mount(
        &ro,
        &mnt,
        &format!("channel=docs,control={},ro", daemon.control.display()),
    );
    let notify = || {
        let out = common::vfnotify()
            .args(["notify", "--control"])
            .arg(&daemon.control)
            .arg("docs")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    daemon_support::poll_until("linked", Duration::from_secs(5), || {
        common::notify_ok(&daemon.control, "docs", &[])
    });
    let mut w = Watcher::new();
    w.add_recursive(&mnt);
    notify();
    fs::write(host.join("d1/new.txt"), b"n").unwrap();
    fs::write(host.join("d1/a.txt"), b"changed!").unwrap();
    fs::remove_file(host.join("d1/b.txt")).unwrap();
    fs::rename(host.join("top.txt"), host.join("d2/top.txt")).unwrap();
    let before = tree_digest(&host);
    notify();
    assert_eq!(tree_digest(&host), before, "replays must not change SOURCE");
    let ev = w.events(WAIT);
    let got: BTreeSet<(String, String)> = summary(&ev).into_iter().collect();
    for want in [
        s("CREATE", "new.txt"),
        s("MODIFY", "a.txt"),
        s("CLOSE_WRITE", "a.txt"),
        s("CLOSE_WRITE", "new.txt"),
        s("DELETE", "b.txt"),
        s("MOVED_FROM", "top.txt"),
        s("MOVED_TO", "top.txt"),
    ] {
        assert!(got.contains(&want), "missing {want:?} in {got:?}");
    }
    // The overlay itself is read-only for clients.
    let err = fs::write(mnt.join("d1/client.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn client_activity_during_replay_is_served_correctly() {
    let Some((l, mut w)) = setup("concurrent_client", "") else {
        return;
    };
    for i in 0..300 {
        fs::write(l.s(&format!("d2/host-{i:03}")), b"h").unwrap();
    }
    let before = tree_digest(&l.src);
    let mut child = Command::new(common::bin())
        .args(["notify", "--control"])
        .arg(&l.daemon.control)
        .arg("docs")
        .spawn()
        .unwrap();
    // Meanwhile a client creates and renames its own files in the same folder.
    for i in 0..40 {
        let a = l.m(&format!("d2/client-{i}"));
        fs::write(&a, b"c").unwrap();
        fs::rename(&a, l.m(&format!("d2/client-{i}.done"))).unwrap();
    }
    assert!(child.wait().unwrap().success());
    for i in 0..40 {
        assert_eq!(fs::read(l.s(&format!("d2/client-{i}.done"))).unwrap(), b"c");
        assert!(fs::symlink_metadata(l.s(&format!("d2/client-{i}"))).is_err());
    }
    let ev = w.events(WAIT);
    for i in 0..300 {
        let n = format!("host-{i:03}");
        assert!(
            ev.iter().any(|e| e.is(IN_CREATE, &n)),
            "no IN_CREATE for {n}"
        );
        assert!(fs::metadata(l.m(&format!("d2/{n}"))).is_ok());
    }
    // Host files untouched by the replay (the client's own files are new, so compare the rest).
    let after: Vec<String> = tree_digest(&l.src)
        .into_iter()
        .filter(|l| !l.contains("client-"))
        .collect();
    let before: Vec<String> = before
        .into_iter()
        .filter(|l| !l.contains("client-"))
        .collect();
    assert_eq!(after.iter().filter(|l| l.contains("host-")).count(), 300);
    assert_eq!(after.len(), before.len());
    // The client's own operations produced their own events, once each.
    assert!(
        ev.iter()
            .filter(|e| e.is(IN_MOVED_TO, "client-0.done"))
            .count()
            == 1
    );
}

#[test]
fn another_channel_emits_nothing() {
    let Some(l) = Linked::build("another_channel", "", &["--map", "other=/tmp"], fill) else {
        return;
    };
    l.notify(&[]);
    let mut w = Watcher::new();
    w.add_recursive(&l.mnt);
    fs::write(l.s("d1/quiet.txt"), b"q").unwrap();
    l.notify_channel("other", &[]);
    assert!(
        w.events(Duration::from_millis(150))
            .iter()
            .all(|e| e.name != "quiet.txt")
    );
    l.notify(&[]);
    assert!(w.events(WAIT).iter().any(|e| e.is(IN_CREATE, "quiet.txt")));
    let _ = fs::remove_file("/tmp/.virtiofs-refresh");
}

#[test]
fn toggle_mode_is_virtual() {
    let Some((l, mut w)) = setup("toggle_mode", "events=toggle") else {
        return;
    };
    fs::write(l.s("d1/t.txt"), b"t").unwrap();
    l.notify(&[]);
    let ev = w.events(WAIT);
    let d1 = only(&ev, "d1");
    assert!(
        d1.contains(&s("CREATE", ".virtiofs-refresh"))
            && d1.contains(&s("DELETE", ".virtiofs-refresh")),
        "{d1:?}"
    );
    assert!(
        !d1.iter().any(|(_, n)| n == "t.txt"),
        "toggle mode gives no precise events: {d1:?}"
    );
    assert!(
        fs::symlink_metadata(l.s("d1/.virtiofs-refresh")).is_err(),
        "nothing written to SOURCE"
    );
    let listing: Vec<_> = fs::read_dir(l.m("d1"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!listing.iter().any(|n| n == ".virtiofs-refresh"));
    assert!(
        listing.iter().any(|n| n == "t.txt"),
        "the change itself is visible"
    );
    // Both: precise events and the toggle.
    drop(w);
}

#[test]
fn both_mode_gives_precise_and_toggle() {
    let Some((l, mut w)) = setup("both_mode", "events=both") else {
        return;
    };
    fs::write(l.s("d2/b.txt"), b"b").unwrap();
    l.notify(&[]);
    let d2 = only(&w.events(WAIT), "d2");
    assert!(
        d2.contains(&s("CREATE", "b.txt")) && d2.contains(&s("CREATE", ".virtiofs-refresh")),
        "{d2:?}"
    );
    assert_eq!(d2.iter().filter(|(m, _)| m == "CLOSE_WRITE").count(), 1);
    let _ = IN_CLOSE_WRITE;
}

#[test]
fn several_scoped_paths_in_one_folder_each_replayed_once() {
    let Some((l, mut w)) = setup("scoped_same_folder", "") else {
        return;
    };
    fs::write(l.s("d1/one.txt"), b"1").unwrap();
    fs::write(l.s("d1/two.txt"), b"2").unwrap();
    fs::remove_file(l.s("d1/a.txt")).unwrap();
    // One write from the host: one notification with three paths in the same folder.
    l.daemon
        .send(b"docs\td1/one.txt\ndocs\td1/two.txt\ndocs\td1/a.txt\n");
    l.daemon.wait_counter("received", 3);
    l.notify(&["d1/one.txt"]);
    let ev = w.events(WAIT);
    for want in [
        s("CREATE", "one.txt"),
        s("CREATE", "two.txt"),
        s("DELETE", "a.txt"),
    ] {
        assert_eq!(
            only(&ev, "d1").iter().filter(|e| **e == want).count(),
            1,
            "{want:?} in {:?}",
            summary(&ev)
        );
    }
    // Nothing is reported twice by a later whole-mount rescan.
    l.notify(&[]);
    assert!(w.events(Duration::from_millis(150)).is_empty());
}

#[test]
fn rename_notified_by_both_paths_is_one_move() {
    let Some((l, mut w)) = setup("rename_both_paths", "") else {
        return;
    };
    fs::rename(l.s("d1/a.txt"), l.s("d1/renamed.txt")).unwrap();
    l.notify(&["d1/a.txt", "d1/renamed.txt"]);
    let d1 = only(&w.events(WAIT), "d1");
    assert_eq!(
        d1,
        vec![s("MOVED_FROM", "a.txt"), s("MOVED_TO", "renamed.txt")]
    );
    // Two separate notifications, one per path, make one move too.
    fs::rename(l.s("d1/renamed.txt"), l.s("d1/again.txt")).unwrap();
    l.notify(&["d1/renamed.txt"]);
    l.notify(&["d1/again.txt"]);
    let d1 = only(&w.events(WAIT), "d1");
    assert_eq!(
        d1,
        vec![s("MOVED_FROM", "renamed.txt"), s("MOVED_TO", "again.txt")]
    );
    // No ghost left in the overlay's view.
    l.notify(&[]);
    assert!(w.events(Duration::from_millis(150)).is_empty());
}

#[test]
fn removed_folder_notified_by_its_own_path() {
    let Some((l, mut w)) = setup("removed_folder_own_path", "") else {
        return;
    };
    fs::remove_dir_all(l.s("gone")).unwrap();
    l.notify(&["gone"]);
    let ev = w.events(WAIT);
    assert!(
        ev.iter().any(|e| e.is(IN_DELETE | IN_ISDIR, "gone")),
        "{:?}",
        summary(&ev)
    );
    assert!(fs::symlink_metadata(l.m("gone")).is_err());
    // And a path below a removed folder.
    fs::create_dir_all(l.s("x/y")).unwrap();
    l.notify(&["x"]);
    let _ = w.events(WAIT);
    let _ = fs::read_dir(l.m("x/y")).map(|d| d.count());
    fs::remove_dir_all(l.s("x")).unwrap();
    l.notify(&["x/y/z.txt"]);
    let ev = w.events(WAIT);
    assert!(
        ev.iter().any(|e| e.is(IN_DELETE | IN_ISDIR, "x")),
        "{:?}",
        summary(&ev)
    );
}

#[test]
fn a_clients_own_writes_are_not_replayed_as_host_changes() {
    use std::io::Write;
    for opts in ["", "passthrough=off"] {
        let Some((l, mut w)) = setup("own_writes_not_replayed", opts) else {
            return;
        };
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(l.m("d1/a.txt"))
            .unwrap();
        f.write_all(b" and more, written through the overlay")
            .unwrap();
        l.notify(&[]);
        l.notify(&["d1/a.txt"]);
        let ev = w.events(Duration::from_millis(200));
        // The client's own write gives its own IN_MODIFY (once); nothing is replayed on top.
        assert!(
            ev.iter().filter(|e| e.is(IN_MODIFY, "a.txt")).count() <= 1,
            "{opts}: {:?}",
            summary(&ev)
        );
        drop(f);
        let ev = w.events(Duration::from_millis(100));
        assert!(
            ev.iter().filter(|e| e.is(IN_CLOSE_WRITE, "a.txt")).count() == 1,
            "{opts}: {:?}",
            summary(&ev)
        );
        l.notify(&[]);
        assert!(
            w.events(Duration::from_millis(150)).is_empty(),
            "{opts}: a later rescan replayed the local write"
        );
        assert_eq!(
            l.overlay_stats()["events_replayed"].as_u64(),
            Some(0),
            "{opts}"
        );
    }
}

/// A guest client's listing tells no watcher anything: a new folder a client listed before the
/// host's notification arrived is still replayed entry by entry (each file's IN_CREATE reaches a
/// watcher that adds a watch on the new folder), within a bounded time.
#[test]
fn a_new_folder_a_client_already_listed_is_still_replayed_entry_by_entry() {
    let Some((l, mut w)) = setup("listed_new_folder", "") else {
        return;
    };
    fs::create_dir_all(l.s("d2/big")).unwrap();
    for i in 0..500 {
        fs::write(l.s(&format!("d2/big/f{i}")), b"x").unwrap();
    }
    // The guest looks before the host's notification arrives.
    for e in fs::read_dir(l.m("d2/big")).unwrap() {
        let _ = e.unwrap().metadata();
    }
    // A watch on the new folder itself (as a recursive watcher has once it saw the folder).
    w.add(&l.m("d2/big"));
    let before = l.overlay_stats()["events_replayed"].as_u64().unwrap_or(0);
    l.notify(&["d2/big"]);
    // What matters is the count of replays, not how long a loaded machine took.
    let replayed = l.overlay_stats()["events_replayed"].as_u64().unwrap_or(0) - before;
    assert!(
        replayed >= 501,
        "{replayed} replays for 500 new files and their folder"
    );
    let ev = w.events(WAIT);
    assert!(
        ev.iter()
            .any(|e| e.is(IN_CREATE | IN_ISDIR, "big") && e.dir.ends_with("d2")),
        "{:?}",
        summary(&ev)
    );
    let created: BTreeSet<&str> = ev
        .iter()
        .filter(|e| e.mask & IN_CREATE != 0 && e.dir.ends_with("big"))
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(created.len(), 500, "IN_CREATE in the listed folder");
}
