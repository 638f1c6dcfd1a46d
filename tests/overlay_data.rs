//! The overlay's open files, end to end under /dev/fuse: create, open, read, write, append,
//! fsync and release (data I/O with and without kernel passthrough), open files whose name is
//! gone, the client's changes seen at once under `cache=always`, xattrs, access, fallocate,
//! lseek, copy_file_range and locks (OFD, flock, and POSIX locks between two processes). Names
//! and attributes are in `overlay_ops.rs`; shared helpers in `common/ops.rs`.
//!
//! Each test mounts its own overlay of a fresh SOURCE under the temp dir (see `overlay_ops.rs`
//! for the cache policies the tests ask for).
//!
//! System calls std does not wrap go through `vfnotify::sys`.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::process::Command;

use common::ops::*;
use vfnotify::sys;

// ------------------------------------------------------------------------------------------------
// open / create / read / write / flush / release / fsync

#[test]
fn create_write_read_append_fsync() {
    let Some(fx) = setup("create_write_read_append_fsync", "", false) else {
        return;
    };
    let p = fx.o("f");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&p)
        .unwrap();
    assert_eq!(fs::metadata(fx.s("f")).unwrap().mode() & 0o777, 0o640);
    f.write_all(b"hello world").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    assert_eq!(fs::read(fx.s("f")).unwrap(), b"hello world");
    f.seek(SeekFrom::Start(6)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "world");
    // pwrite in the middle.
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"W", 6).unwrap();
    drop(f); // flush + release
    assert_eq!(fs::read(fx.s("f")).unwrap(), b"hello World");
    // O_EXCL on an existing name.
    assert_eq!(
        eno(OpenOptions::new().write(true).create_new(true).open(&p)),
        libc::EEXIST
    );
    // O_APPEND: every write lands at the end, even after a seek; also from a second handle.
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"+a").unwrap();
    b.write_all(b"+b").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"+c").unwrap();
    drop((a, b));
    assert_eq!(fs::read(fx.s("f")).unwrap(), b"hello World+a+b+c");
    assert_eq!(fs::read(&p).unwrap(), b"hello World+a+b+c");
    // O_TRUNC on open.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(fs::metadata(fx.s("f")).unwrap().len(), 0);
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    // A reader and a writer open at once (read-only open first, then write-only).
    fs::write(&p, b"0123456789").unwrap();
    let mut r = File::open(&p).unwrap();
    let mut w = OpenOptions::new().write(true).open(&p).unwrap();
    w.write_all(b"abc").unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"abc3456789");
    // Writing through a read-only handle fails with EBADF.
    assert_eq!(eno(r.write_all(b"x")), libc::EBADF);
    // Opening a directory for writing: EISDIR.
    assert_eq!(
        eno(OpenOptions::new().write(true).open(fx.mnt.path())),
        libc::EISDIR
    );
    // fsync on a directory.
    File::open(fx.mnt.path()).unwrap().sync_all().unwrap();
}

#[test]
fn open_unlinked_file_keeps_working() {
    let Some(fx) = setup("open_unlinked_file_keeps_working", "", false) else {
        return;
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.o("tmpfile"))
        .unwrap();
    f.write_all(b"before unlink").unwrap();
    fs::remove_file(fx.o("tmpfile")).unwrap();
    assert!(!fx.s("tmpfile").exists());
    // I/O on the open handle.
    f.write_all(b", after").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "before unlink, after");
    f.set_len(6).unwrap();
    // fstat on the unlinked file: POSIX says it works (nlink 0).
    let m = f.metadata().expect("fstat of an open, unlinked file");
    assert_eq!(m.nlink(), 0);
    assert_eq!(m.len(), 6);
}

#[test]
fn fchmod_of_open_unlinked_file() {
    let Some(fx) = setup("fchmod_of_open_unlinked_file", "", false) else {
        return;
    };
    let f = File::create(fx.o("tmpfile")).unwrap();
    fs::remove_file(fx.o("tmpfile")).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .expect("fchmod of an open, unlinked file");
    assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn fstat_of_open_unlinked_file_with_cache_never() {
    let Some(fx) = setup(
        "fstat_of_open_unlinked_file_with_cache_never",
        "cache=never",
        false,
    ) else {
        return;
    };
    let f = File::create(fx.o("tmpfile")).unwrap();
    fs::remove_file(fx.o("tmpfile")).unwrap();
    let m = f.metadata().expect("fstat of an open, unlinked file");
    assert_eq!(m.nlink(), 0);
}

#[test]
fn client_changes_show_at_once_under_cache_always() {
    let Some(fx) = setup(
        "client_changes_show_at_once_under_cache_always",
        "cache=always",
        true,
    ) else {
        return;
    };
    // Warm every cache: names, attributes, listing, pages.
    let _ = fs::read_dir(fx.o("docs")).unwrap().count();
    let _ = fs::read(fx.o("docs/README.md")).unwrap();
    assert_eq!(eno(fs::metadata(fx.o("docs/new"))), libc::ENOENT);
    // Then change through the overlay: each change is seen at once.
    fs::write(fx.o("docs/new"), b"one").unwrap();
    assert_eq!(fs::read(fx.o("docs/new")).unwrap(), b"one");
    assert!(
        fs::read_dir(fx.o("docs"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "new")
    );
    fs::write(fx.o("docs/README.md"), b"replaced").unwrap();
    assert_eq!(fs::read(fx.o("docs/README.md")).unwrap(), b"replaced");
    assert_eq!(fs::metadata(fx.o("docs/README.md")).unwrap().len(), 8);
    let mut f = OpenOptions::new()
        .append(true)
        .open(fx.o("docs/new"))
        .unwrap();
    f.write_all(b"+two").unwrap();
    drop(f);
    assert_eq!(fs::metadata(fx.o("docs/new")).unwrap().len(), 7);
    fs::rename(fx.o("docs/new"), fx.o("docs/renamed")).unwrap();
    assert!(
        !fs::read_dir(fx.o("docs"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "new")
    );
    fs::remove_file(fx.o("docs/renamed")).unwrap();
    assert_eq!(eno(fs::metadata(fx.o("docs/renamed"))), libc::ENOENT);
    let names: Vec<_> = fs::read_dir(fx.o("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names.iter().any(|n| n == "renamed"), "{names:?}");
}

fn data_io_4mib(test: &str, opts: &str) {
    let Some(fx) = setup(test, opts, false) else {
        return;
    };
    const LEN: usize = 4 << 20;
    let data = pattern(LEN, 7);
    {
        let mut f = File::create(fx.o("big")).unwrap();
        // Unaligned chunks, so writes straddle pages.
        for chunk in data.chunks(123_457) {
            f.write_all(chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    assert!(
        fs::read(fx.s("big")).unwrap() == data,
        "SOURCE bytes differ"
    );
    assert!(
        fs::read(fx.o("big")).unwrap() == data,
        "overlay bytes differ"
    );
    // Random-offset reads.
    use std::os::unix::fs::FileExt;
    let f = File::open(fx.o("big")).unwrap();
    for (off, len) in [
        (0usize, 1usize),
        (4095, 2),
        (1 << 20, 70_000),
        (LEN - 10, 10),
    ] {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert_eq!(buf, &data[off..off + len], "read at {off}");
    }
    // Overwrite a range in place and re-read.
    let patch = pattern(300_000, 9);
    OpenOptions::new()
        .write(true)
        .open(fx.o("big"))
        .unwrap()
        .write_all_at(&patch, 1_000_001)
        .unwrap();
    let mut want = data.clone();
    want[1_000_001..1_300_001].copy_from_slice(&patch);
    assert!(fs::read(fx.s("big")).unwrap() == want, "SOURCE after patch");
    assert!(
        fs::read(fx.o("big")).unwrap() == want,
        "overlay after patch"
    );
    // mmap-free check that the page cache (or passthrough) never serves the old bytes.
    let mut buf = vec![0u8; 300_000];
    f.read_exact_at(&mut buf, 1_000_001).unwrap();
    assert!(buf == patch);
}

#[test]
fn data_io_4mib_with_passthrough() {
    data_io_4mib("data_io_4mib_with_passthrough", "");
}

#[test]
fn data_io_4mib_without_passthrough() {
    data_io_4mib("data_io_4mib_without_passthrough", "passthrough=off");
}

// ------------------------------------------------------------------------------------------------
// xattr / access / fallocate / lseek / copy_file_range / locks

#[test]
fn xattrs_get_set_list_remove() {
    let Some(fx) = setup("xattrs_get_set_list_remove", "", true) else {
        return;
    };
    // Does SOURCE support user.* xattrs?
    if let Err(e) = lsetxattr(&fx.s("empty-dir"), "user.probe", b"1") {
        eprintln!("SKIP xattrs_get_set_list_remove: SOURCE has no user xattrs ({e})");
        return;
    }
    lremovexattr(&fx.s("empty-dir"), "user.probe").unwrap();
    let f = fx.o("hello.txt");
    lsetxattr(&f, "user.colour", b"blue").unwrap();
    assert_eq!(
        lgetxattr(&fx.s("hello.txt"), "user.colour").unwrap(),
        b"blue"
    );
    assert_eq!(lgetxattr(&f, "user.colour").unwrap(), b"blue");
    lsetxattr(&f, "user.empty", b"").unwrap();
    assert_eq!(lgetxattr(&f, "user.empty").unwrap(), b"");
    let mut l = llistxattr(&f).unwrap();
    l.sort();
    assert_eq!(l, ["user.colour", "user.empty"]);
    // Size query (size 0) then a too-small buffer: ERANGE.
    assert_eq!(lgetxattr_sized(&f, "user.colour", 0).unwrap().0, 4);
    assert_eq!(eno(lgetxattr_sized(&f, "user.colour", 2)), libc::ERANGE);
    // XATTR_CREATE on an existing name: EEXIST; XATTR_REPLACE on a missing one: ENODATA.
    let v = b"x";
    assert_eq!(
        eno(lsetxattr_flags(&f, "user.colour", v, libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        eno(lsetxattr_flags(&f, "user.missing", v, libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    lremovexattr(&f, "user.colour").unwrap();
    assert_eq!(eno(lgetxattr(&f, "user.colour")), libc::ENODATA);
    assert_eq!(
        eno(lgetxattr(&fx.s("hello.txt"), "user.colour")),
        libc::ENODATA
    );
    assert_eq!(eno(lremovexattr(&f, "user.colour")), libc::ENODATA);
}

#[test]
fn xattrs_on_a_directory() {
    let Some(fx) = setup("xattrs_on_a_directory", "", true) else {
        return;
    };
    if let Err(e) = lsetxattr(&fx.s("empty-dir"), "user.probe", b"1") {
        eprintln!("SKIP xattrs_on_a_directory: SOURCE has no user xattrs ({e})");
        return;
    }
    assert_eq!(lgetxattr(&fx.o("empty-dir"), "user.probe").unwrap(), b"1");
    assert_eq!(llistxattr(&fx.o("empty-dir")).unwrap(), ["user.probe"]);
    lsetxattr(&fx.o("docs"), "user.d", b"dir").unwrap();
    assert_eq!(lgetxattr(&fx.s("docs"), "user.d").unwrap(), b"dir");
    lremovexattr(&fx.o("docs"), "user.d").unwrap();
    assert_eq!(eno(lgetxattr(&fx.s("docs"), "user.d")), libc::ENODATA);
    // The root directory too.
    lsetxattr(fx.mnt.path(), "user.root", b"r").unwrap();
    assert_eq!(lgetxattr(fx.src.path(), "user.root").unwrap(), b"r");
}

#[test]
fn access_checks() {
    let Some(fx) = setup("access_checks", "", true) else {
        return;
    };
    access(&fx.o("hello.txt"), libc::R_OK | libc::W_OK).unwrap();
    access(&fx.o("docs"), libc::X_OK).unwrap();
    access(&fx.o("hello.txt"), libc::F_OK).unwrap();
    assert_eq!(eno(access(&fx.o("nope"), libc::F_OK)), libc::ENOENT);
    // Root gets X_OK only when some execute bit is set.
    fs::set_permissions(fx.o("hello.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(eno(access(&fx.o("hello.txt"), libc::X_OK)), libc::EACCES);
    fs::set_permissions(fx.o("hello.txt"), fs::Permissions::from_mode(0o744)).unwrap();
    access(&fx.o("hello.txt"), libc::X_OK).unwrap();
}

#[test]
fn fallocate_allocates_punches_and_keeps_size() {
    let Some(fx) = setup("fallocate_allocates_punches_and_keeps_size", "", false) else {
        return;
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.o("fa"))
        .unwrap();
    fallocate(&f, 0, 0, 1 << 20).unwrap();
    assert_eq!(fs::metadata(fx.s("fa")).unwrap().len(), 1 << 20);
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    assert_eq!(fs::metadata(fx.o("fa")).unwrap().len(), 1 << 20);
    assert!(fs::metadata(fx.s("fa")).unwrap().blocks() >= 2048);
    // KEEP_SIZE: blocks beyond EOF, size unchanged.
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20).unwrap();
    assert_eq!(fs::metadata(fx.s("fa")).unwrap().len(), 1 << 20);
    assert_eq!(fs::metadata(fx.o("fa")).unwrap().len(), 1 << 20);
    // PUNCH_HOLE: reads back zeros.
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xAB; 65536], 0).unwrap();
    fallocate(
        &f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        4096,
        8192,
    )
    .unwrap();
    let mut buf = vec![0u8; 16384];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..4096].iter().all(|b| *b == 0xAB));
    assert!(buf[4096..12288].iter().all(|b| *b == 0), "hole not zero");
    assert!(buf[12288..].iter().all(|b| *b == 0xAB));
    assert_eq!(fs::read(fx.s("fa")).unwrap()[4096..12288], [0u8; 8192]);
    // A read-only handle: EBADF.
    let r = File::open(fx.o("fa")).unwrap();
    assert_eq!(eno(fallocate(&r, 0, 0, 4096)), libc::EBADF);
}

#[test]
fn lseek_data_and_hole_on_a_sparse_file() {
    let Some(fx) = setup("lseek_data_and_hole_on_a_sparse_file", "", false) else {
        return;
    };
    use std::os::unix::fs::FileExt;
    const MIB: i64 = 1 << 20;
    {
        let f = File::create(fx.o("sparse")).unwrap();
        f.write_all_at(&[1u8; 4096], 0).unwrap();
        f.write_all_at(&[2u8; 4096], MIB as u64).unwrap();
        f.set_len(4 * MIB as u64).unwrap();
        f.sync_all().unwrap();
    }
    let o = File::open(fx.o("sparse")).unwrap();
    let s = File::open(fx.s("sparse")).unwrap();
    let probe =
        |f: &File, off, w| eno(lseek(f, off, w)).max(0) as i64 + lseek(f, off, w).unwrap_or(-1);
    for (off, whence) in [
        (0, libc::SEEK_DATA),
        (0, libc::SEEK_HOLE),
        (4096, libc::SEEK_DATA),
        (MIB, libc::SEEK_HOLE),
        (MIB + 4096, libc::SEEK_DATA),
        (2 * MIB, libc::SEEK_HOLE),
    ] {
        assert_eq!(
            probe(&o, off, whence),
            probe(&s, off, whence),
            "off {off} whence {whence}"
        );
    }
    // The expected layout (ext4 and tmpfs both report these exactly for page-aligned data).
    assert_eq!(lseek(&o, 0, libc::SEEK_DATA).unwrap(), 0);
    assert_eq!(lseek(&o, 0, libc::SEEK_HOLE).unwrap(), 4096);
    assert_eq!(lseek(&o, 4096, libc::SEEK_DATA).unwrap(), MIB);
    assert_eq!(lseek(&o, MIB, libc::SEEK_HOLE).unwrap(), MIB + 4096);
    // SEEK_DATA past the last data: ENXIO.
    assert_eq!(eno(lseek(&o, MIB + 4096, libc::SEEK_DATA)), libc::ENXIO);
    assert_eq!(eno(lseek(&o, 5 * MIB, libc::SEEK_DATA)), libc::ENXIO);
    // Plain SEEK_END still works.
    assert_eq!(lseek(&o, 0, libc::SEEK_END).unwrap(), 4 * MIB);
}

#[test]
fn copy_file_range_copies_between_overlay_files() {
    let Some(fx) = setup("copy_file_range_copies_between_overlay_files", "", false) else {
        return;
    };
    let data = pattern(3 << 20, 3);
    fs::write(fx.o("in"), &data).unwrap();
    let fin = File::open(fx.o("in")).unwrap();
    let fout = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.o("out"))
        .unwrap();
    let want = data.len() - 1000;
    let mut done = 0usize;
    while done < want {
        let (off_in, off_out) = (1000 + done as u64, done as u64);
        let n =
            sys::copy_file_range(fin.as_fd(), off_in, fout.as_fd(), off_out, want - done).unwrap();
        assert!(n > 0, "copy_file_range returned 0 at {done}");
        done += n;
    }
    drop(fout);
    assert!(
        fs::read(fx.s("out")).unwrap() == data[1000..],
        "SOURCE copy differs"
    );
    assert!(
        fs::read(fx.o("out")).unwrap() == data[1000..],
        "overlay copy differs"
    );
    assert_eq!(fs::metadata(fx.o("out")).unwrap().len(), want as u64);
}

#[test]
fn posix_ofd_and_flock_locks_conflict() {
    let Some(fx) = setup("posix_ofd_and_flock_locks_conflict", "", false) else {
        return;
    };
    fs::write(fx.o("lockme"), b"x").unwrap();
    let a = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.o("lockme"))
        .unwrap();
    let b = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.o("lockme"))
        .unwrap();
    // OFD locks conflict between two open file descriptions.
    ofd_lock(&a, libc::F_OFD_SETLK, libc::F_WRLCK).unwrap();
    assert_eq!(
        eno(ofd_lock(&b, libc::F_OFD_SETLK, libc::F_RDLCK)),
        libc::EAGAIN
    );
    let got = ofd_lock(&b, libc::F_OFD_GETLK, libc::F_WRLCK).unwrap();
    assert_eq!(
        got.l_type as i32,
        libc::F_WRLCK,
        "F_OFD_GETLK reports the holder"
    );
    ofd_lock(&a, libc::F_OFD_SETLK, libc::F_UNLCK).unwrap();
    ofd_lock(&b, libc::F_OFD_SETLK, libc::F_WRLCK).unwrap();
    ofd_lock(&b, libc::F_OFD_SETLK, libc::F_UNLCK).unwrap();

    // (Classic fcntl locks between two processes: see the next test.)
    // flock: two open files conflict, in this process and from another process.
    flock(&a, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert_eq!(
        eno(flock(&b, libc::LOCK_EX | libc::LOCK_NB)),
        libc::EWOULDBLOCK
    );
    let st = Command::new("flock")
        .args(["-n", "-E", "75"])
        .arg(fx.o("lockme"))
        .arg("true")
        .status();
    match st {
        Ok(st) => assert_eq!(st.code(), Some(75), "flock(1) got the lock we hold"),
        Err(e) => eprintln!("note: flock(1) not run: {e}"),
    }
    flock(&a, libc::LOCK_UN).unwrap();
    flock(&b, libc::LOCK_EX | libc::LOCK_NB).unwrap();
}

#[test]
fn posix_fcntl_locks_conflict_between_processes() {
    let Some(fx) = setup("posix_fcntl_locks_conflict_between_processes", "", false) else {
        return;
    };
    fs::write(fx.o("lockme"), b"x").unwrap();
    let a = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.o("lockme"))
        .unwrap();
    let mut fl = sys::whole_file_lock(libc::F_WRLCK);
    sys::fcntl_lock(a.as_fd(), libc::F_SETLK, &mut fl).unwrap();
    // POSIX record locks belong to a process, so the conflict needs a second one: this test
    // binary again, running only `posix_lock_second_process` (no fork of this multi-threaded
    // process), which asks F_GETLK and F_SETLK through `vfnotify::sys`.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "posix_lock_second_process"])
        .args(["--nocapture", "--test-threads=1"])
        .env(LOCK_CHILD_ENV, fx.o("lockme"))
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "second process: {log}");
    assert!(
        log.contains("1 passed"),
        "the second process ran no test: {log}"
    );
    drop(a);
}

/// Set for [`posix_lock_second_process`]: the file the first process holds a write lock on.
const LOCK_CHILD_ENV: &str = "VFNOTIFY_TEST_LOCK_CHILD";

/// The second process of `posix_fcntl_locks_conflict_between_processes`, which runs it with
/// `--ignored --exact`; without that test's variable it has nothing to check.
#[test]
#[ignore = "run by posix_fcntl_locks_conflict_between_processes as its second process"]
fn posix_lock_second_process() {
    let Some(path) = std::env::var_os(LOCK_CHILD_ENV) else {
        return;
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open in the second process");
    let mut q = sys::whole_file_lock(libc::F_WRLCK);
    sys::fcntl_lock(f.as_fd(), libc::F_GETLK, &mut q).expect("F_GETLK failed");
    assert_eq!(
        q.l_type as i32,
        libc::F_WRLCK,
        "the first process's lock is not reported"
    );
    let mut r = sys::whole_file_lock(libc::F_RDLCK);
    let e =
        sys::fcntl_lock(f.as_fd(), libc::F_SETLK, &mut r).expect_err("F_SETLK did not conflict");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)),
        "F_SETLK: {e}"
    );
}
