//! Zero-message opens (`overlay::fs::open_free`): under `revalidate=notify` while linked, with no
//! kernel passthrough, the overlay answers the first OPEN with ENOSYS and the kernel sends no
//! more opens, flushes or releases. What must still hold: every notified host change shows
//! (data, size, mode, a replaced file), a client's own writes are its own (no replayed event, the
//! view and the attributes follow them), and a file unlinked while a client holds it open keeps
//! its data for that client, as on a local filesystem.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::Duration;

use overlay_support::{INTERESTING, Linked, Watcher, summary};

const OPTS: &str = "passthrough=off,revalidate=notify";

/// Read through the mount, and wait until the overlay says opens are no longer sent.
fn open_free(l: &Linked, rel: &str) {
    fs::read(l.m(rel)).unwrap();
    l.wait_stat("open_free", "opens no longer sent", |n| n == 1);
}

#[test]
fn warm_opens_send_nothing_and_notified_host_changes_show() {
    let Some(l) = Linked::with_source("open_free_host_changes", OPTS, |src| {
        fs::write(src.join("a.txt"), b"version-1").unwrap();
        fs::write(src.join("b.txt"), b"bee").unwrap();
    }) else {
        return;
    };
    open_free(&l, "a.txt");
    for _ in 0..20 {
        assert_eq!(fs::read(l.m("a.txt")).unwrap(), b"version-1");
        assert_eq!(fs::read(l.m("b.txt")).unwrap(), b"bee");
    }
    l.notify(&[]);
    assert_eq!(
        l.wait_stat("opens_declined", "the declined open counted", |n| n >= 1),
        1,
        "the kernel kept sending opens after the first was declined"
    );
    assert_eq!(l.stat_u64("opens"), 0, "an open was served");

    // In place, same size: only the content and the mtime differ.
    fs::write(l.s("a.txt"), b"version-2").unwrap();
    l.notify(&["a.txt"]);
    assert_eq!(fs::read(l.m("a.txt")).unwrap(), b"version-2");
    // Appended: the size moves.
    fs::OpenOptions::new()
        .append(true)
        .open(l.s("a.txt"))
        .unwrap()
        .write_all(b"+more")
        .unwrap();
    l.notify(&["a.txt"]);
    assert_eq!(fs::metadata(l.m("a.txt")).unwrap().len(), 14);
    assert_eq!(fs::read(l.m("a.txt")).unwrap(), b"version-2+more");
    // Saved atomically: another file under the name.
    fs::write(l.s(".b.tmp"), b"bee, saved again").unwrap();
    fs::rename(l.s(".b.tmp"), l.s("b.txt")).unwrap();
    l.notify(&["b.txt", ".b.tmp"]);
    assert_eq!(fs::read(l.m("b.txt")).unwrap(), b"bee, saved again");
    assert_eq!(
        fs::metadata(l.m("b.txt")).unwrap().ino(),
        fs::metadata(l.s("b.txt")).unwrap().ino()
    );
    // chmod: the attributes answered from the overlay's state follow the notification.
    fs::set_permissions(l.s("b.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    l.notify(&["b.txt"]);
    assert_eq!(fs::metadata(l.m("b.txt")).unwrap().mode() & 0o777, 0o600);
    // Truncated on the host.
    fs::File::options()
        .write(true)
        .open(l.s("a.txt"))
        .unwrap()
        .set_len(3)
        .unwrap();
    l.notify(&["a.txt"]);
    assert_eq!(fs::read(l.m("a.txt")).unwrap(), b"ver");
    // A hard link made and removed on the host: the link count follows.
    assert_eq!(fs::metadata(l.m("a.txt")).unwrap().nlink(), 1);
    fs::hard_link(l.s("a.txt"), l.s("a2.txt")).unwrap();
    l.notify(&["a2.txt"]);
    assert_eq!(fs::metadata(l.m("a.txt")).unwrap().nlink(), 2);
    fs::remove_file(l.s("a2.txt")).unwrap();
    l.notify(&["a2.txt"]);
    assert_eq!(fs::metadata(l.m("a.txt")).unwrap().nlink(), 1);
    assert_eq!(l.stat_u64("opens"), 0);
}

/// Attributes answered from the overlay's state (no GETATTR reaches SOURCE) are SOURCE's whole,
/// the allocated blocks too: `du` reads them, and so does the sparse-file test of cp, tar and
/// grep (blocks short of the size: ask SEEK_HOLE, a round trip to the host per file).
#[test]
fn attributes_answered_without_source_carry_the_allocated_blocks() {
    let Some(l) = Linked::with_source("open_free_blocks", OPTS, |src| {
        fs::write(src.join("dense"), vec![7u8; 100_000]).unwrap();
        let f = fs::File::create(src.join("sparse")).unwrap();
        f.set_len(10 << 20).unwrap();
        f.write_at(b"x", 5 << 20).unwrap();
    }) else {
        return;
    };
    open_free(&l, "dense");
    for name in ["dense", "sparse"] {
        fs::read(l.m(name)).unwrap();
        let (m, s) = (
            fs::metadata(l.m(name)).unwrap(),
            fs::metadata(l.s(name)).unwrap(),
        );
        assert_eq!((m.blocks(), m.size()), (s.blocks(), s.size()), "{name}");
    }
    assert!(fs::metadata(l.s("sparse")).unwrap().blocks() < (10 << 20) / 512);
    // Seeking data and holes: the dense file's answered from those attributes, the sparse
    // file's by SOURCE; both as SOURCE answers them.
    for (name, at) in [
        ("dense", 10),
        ("dense", 99_999),
        ("sparse", 0),
        ("sparse", 6 << 20),
    ] {
        let (m, s) = (
            fs::File::open(l.m(name)).unwrap(),
            fs::File::open(l.s(name)).unwrap(),
        );
        for whence in [libc::SEEK_DATA, libc::SEEK_HOLE] {
            let seek = |f: &fs::File| {
                vfnotify::sys::lseek(f.as_fd(), at, whence).map_err(|e| e.raw_os_error())
            };
            assert_eq!(seek(&m), seek(&s), "{name} at {at}, whence {whence}");
        }
    }
    let m = fs::File::open(l.m("dense")).unwrap();
    let past = vfnotify::sys::lseek(m.as_fd(), 100_000, libc::SEEK_DATA);
    assert_eq!(past.map_err(|e| e.raw_os_error()), Err(Some(libc::ENXIO)));
}

#[test]
fn a_clients_writes_are_its_own_and_read_back() {
    let Some(l) = Linked::with_source("open_free_local_writes", OPTS, |src| {
        fs::write(src.join("seed.txt"), b"seed").unwrap();
    }) else {
        return;
    };
    open_free(&l, "seed.txt");
    let mut w = Watcher::with_mask(INTERESTING);
    w.add(&l.mnt);
    // A new file, written, appended to, rewritten in the middle, truncated: every way a write
    // reaches the overlay without a handle.
    {
        let mut f = fs::File::create(l.m("new.txt")).unwrap();
        f.write_all(b"hello world").unwrap();
        f.write_all_at(b"W", 6).unwrap();
    }
    {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(l.m("new.txt"))
            .unwrap();
        f.write_all(b"!\n").unwrap();
    }
    {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(l.m("seed.txt"))
            .unwrap();
        f.set_len(2).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(b"ed, grown").unwrap();
        f.sync_all().unwrap();
        let mut back = String::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut back).unwrap();
        assert_eq!(back, "seed, grown");
    }
    let local = summary(&w.events(Duration::from_millis(300)));
    assert_eq!(fs::read(l.s("new.txt")).unwrap(), b"hello World!\n");
    assert_eq!(fs::read(l.s("seed.txt")).unwrap(), b"seed, grown");
    assert_eq!(fs::read(l.m("new.txt")).unwrap(), b"hello World!\n");
    for name in ["new.txt", "seed.txt"] {
        let (m, s) = (
            fs::metadata(l.m(name)).unwrap(),
            fs::metadata(l.s(name)).unwrap(),
        );
        assert_eq!(
            (m.len(), m.mtime(), m.mtime_nsec(), m.mode()),
            (s.len(), s.mtime(), s.mtime_nsec(), s.mode()),
            "{name}: the attributes answered are not SOURCE's"
        );
    }
    assert!(
        local.contains(&("CLOSE_WRITE".into(), "new.txt".into())),
        "{local:?}"
    );
    // A notification now finds nothing new: the writes were the client's, and were noted.
    let replayed = l.stat_u64("events_replayed");
    l.notify(&[]);
    let after = w.events(Duration::from_millis(300));
    assert!(
        after.is_empty(),
        "a client's own writes replayed as host changes: {:?}",
        summary(&after)
    );
    l.notify(&[]);
    assert_eq!(l.stat_u64("events_replayed"), replayed);
    assert_eq!(l.stat_u64("opens_declined"), 1);
}

#[test]
fn a_file_unlinked_while_open_keeps_its_data_for_its_holder() {
    let Some(l) = Linked::with_source("open_free_unlinked_while_open", OPTS, |src| {
        fs::write(src.join("held.txt"), b"held by a client").unwrap();
        fs::write(src.join("host.txt"), b"the host removes me").unwrap();
        fs::write(src.join("saved.txt"), b"old version").unwrap();
    }) else {
        return;
    };
    open_free(&l, "held.txt");
    // Removed through the overlay while open (the fd was used before).
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(l.m("held.txt"))
        .unwrap();
    let mut buf = [0u8; 4];
    f.read_exact_at(&mut buf, 0).unwrap();
    f.write_all_at(b"HELD", 0).unwrap();
    fs::remove_file(l.m("held.txt")).unwrap();
    assert!(fs::symlink_metadata(l.m("held.txt")).is_err());
    f.write_all_at(b"!", 16).unwrap();
    let mut all = vec![0u8; 17];
    f.read_exact_at(&mut all, 0).unwrap();
    assert_eq!(all, b"HELD by a client!");
    assert_eq!(f.metadata().unwrap().nlink(), 0);

    // Removed by the host while a client holds it: after the notification the name is gone,
    // and the holder still reads what it had open.
    let g = fs::File::open(l.m("host.txt")).unwrap();
    let mut first = [0u8; 3];
    g.read_exact_at(&mut first, 0).unwrap();
    fs::remove_file(l.s("host.txt")).unwrap();
    l.notify(&["host.txt"]);
    assert!(fs::symlink_metadata(l.m("host.txt")).is_err());
    drop_caches_of(&g);
    let mut rest = vec![0u8; 19];
    g.read_exact_at(&mut rest, 0).unwrap();
    assert_eq!(rest, b"the host removes me");
    // Saved atomically by the host while a client holds the old file: the holder reads the old
    // file, a new open the new one.
    let old = fs::File::open(l.m("saved.txt")).unwrap();
    let mut head = [0u8; 3];
    old.read_exact_at(&mut head, 0).unwrap();
    fs::write(l.s(".saved.tmp"), b"new version, longer").unwrap();
    fs::rename(l.s(".saved.tmp"), l.s("saved.txt")).unwrap();
    l.notify(&["saved.txt", ".saved.tmp"]);
    assert_eq!(fs::read(l.m("saved.txt")).unwrap(), b"new version, longer");
    drop_caches_of(&old);
    let mut was = vec![0u8; 11];
    old.read_exact_at(&mut was, 0).unwrap();
    assert_eq!(was, b"old version");
    l.notify(&[]);
    assert!(l.wait_stat("orphans_kept", "orphans kept", |n| n >= 3) >= 3);
    assert_eq!(l.stat_u64("orphans_lost"), 0);
}

/// A file created (with a handle: opens were still sent) and written, then opens stop while
/// the writer holds it: its writes through that handle were to be noted at its release, which
/// the kernel now never sends. `stat` must show SOURCE's size all along, not the size 0 its
/// create told (the kernel would cut its page cache to it: a mapping of the file then faults
/// SIGBUS), nor the size before a later write.
#[test]
fn writes_through_a_handle_from_before_opens_stopped_show_in_stat() {
    let Some(l) = Linked::with_source("open_free_early_writer", OPTS, |src| {
        fs::write(src.join("other.txt"), b"other").unwrap();
    }) else {
        return;
    };
    let mut w = fs::File::create(l.m("early.bin")).unwrap();
    w.write_all(&[7u8; 8192]).unwrap();
    open_free(&l, "other.txt");
    let len = |what: &str| {
        let (m, s) = (
            fs::metadata(l.m("early.bin")).unwrap(),
            fs::metadata(l.s("early.bin")).unwrap(),
        );
        assert_eq!(
            (m.len(), m.mtime(), m.mtime_nsec()),
            (s.len(), s.mtime(), s.mtime_nsec()),
            "{what}: the attributes answered are not SOURCE's"
        );
        m.len()
    };
    assert_eq!(len("written before opens stopped"), 8192);
    assert_eq!(fs::read(l.m("early.bin")).unwrap(), vec![7u8; 8192]);
    // Written again through the same handle, now that writes are noted at once.
    w.write_all(&[8u8; 4096]).unwrap();
    assert_eq!(len("written again"), 12288);
    drop(w);
    assert_eq!(len("closed (no release comes)"), 12288);
    // A host change to it still shows.
    fs::write(l.s("early.bin"), b"host").unwrap();
    l.notify(&["early.bin"]);
    assert_eq!(len("changed by the host"), 4);
    assert_eq!(fs::read(l.m("early.bin")).unwrap(), b"host");
}

/// Drop the page cache of one file (`POSIX_FADV_DONTNEED`), so the next read reaches the overlay.
fn drop_caches_of(f: &fs::File) {
    use std::os::fd::AsFd;
    vfnotify::sys::fadvise_dontneed(f.as_fd()).unwrap();
}
