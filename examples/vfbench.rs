//! Measurement helpers for `bench/run.sh`: metadata workloads timed in-process (no
//! process-spawn noise) and small queries of the vfnotify daemon.
//!
//! Every timing subcommand prints one line: the elapsed seconds, then the number of operations.
//!
//! ```text
//! vfbench mkfiles  DIR NDIRS NFILES [SIZE]  create NDIRS folders d0000.. and NFILES files in them
//! vfbench stat     DIR NDIRS NFILES [PASSES] lstat every file by path, up to PASSES times (0.3 s)
//! vfbench readdir  DIR NDIRS [PASSES]       list every folder (getdents64 only), likewise
//! vfbench unlink   DIR NDIRS NFILES         unlink every file (folders are left)
//! vfbench statall  DIR                      walk the tree, lstat everything
//! vfbench gentree  DIR NDIRS NFILES         a source-like tree of small text files
//! vfbench notify   CONTROL CHANNEL [REL..]  one notification through the control socket, timed
//! vfbench overlay  CONTROL MOUNTPOINT       print "PID KNOWN_INODES ENTRIES_SCANNED DIRS_SCANNED"
//! vfbench rss      PID                      print VmRSS in KiB
//! ```

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vfnotify::control::Client;

fn usage() -> ExitCode {
    eprintln!(
        "usage: vfbench mkfiles|stat|readdir|unlink|statall|gentree|notify|overlay|rss ARGS (see source)"
    );
    ExitCode::from(2)
}

fn num(s: Option<&String>) -> io::Result<usize> {
    s.and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "expected a number"))
}

fn dir_name(root: &Path, d: usize) -> PathBuf {
    root.join(format!("d{d:04}"))
}

/// (folder, file) paths of NFILES files spread evenly over NDIRS folders.
/// Work from inside `root` with relative paths, so every column walks the same components (the
/// path up to a mount point is not what is measured; a FUSE mount one level deeper than the native
/// folder would pay one extra lookup per operation).
fn enter(root: &Path, create: bool) -> io::Result<PathBuf> {
    if create {
        fs::create_dir_all(root)?;
    }
    std::env::set_current_dir(root)?;
    Ok(PathBuf::new())
}

fn files(root: &Path, ndirs: usize, nfiles: usize) -> Vec<CString> {
    (0..nfiles)
        .map(|i| {
            let p = dir_name(root, i % ndirs).join(format!("f{i:06}"));
            CString::new(p.as_os_str().as_bytes()).expect("no NUL in paths")
        })
        .collect()
}

fn report(start: Instant, ops: usize) {
    println!("{:.6} {ops}", start.elapsed().as_secs_f64());
}

fn mkfiles(root: &Path, ndirs: usize, nfiles: usize, size: usize) -> io::Result<()> {
    let root = &enter(root, true)?;
    let paths = files(root, ndirs, nfiles);
    let data = vec![b'x'; size];
    let start = Instant::now();
    for d in 0..ndirs {
        fs::create_dir_all(dir_name(root, d))?;
    }
    for p in &paths {
        // SAFETY: `p` is a valid NUL-terminated path; the fd is closed right after.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        if size > 0 {
            // SAFETY: `data` outlives the call; `fd` is open.
            let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
    }
    report(start, nfiles);
    Ok(())
}

/// Extra passes stop once this much time has gone (a slow column does one pass).
const PASS_BUDGET: Duration = Duration::from_millis(300);

/// Warm passes take ~10 ms each: several per sample keep a scheduling blip from being the figure.
fn stat_files(root: &Path, ndirs: usize, nfiles: usize, passes: usize) -> io::Result<()> {
    let root = &enter(root, false)?;
    let paths = files(root, ndirs, nfiles);
    let start = Instant::now();
    let mut done = 0;
    while done < passes && (done == 0 || start.elapsed() < PASS_BUDGET) {
        done += 1;
        for p in &paths {
            // SAFETY: `st` is a plain C struct that lstat fills; `p` is NUL-terminated.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: as above: `st` is writable and of the right type, `p` NUL-terminated.
            if unsafe { libc::lstat(p.as_ptr(), &mut st) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    report(start, nfiles * done);
    Ok(())
}

/// Reports the time per pass (the row is a time, not a rate).
fn readdir(root: &Path, ndirs: usize, passes: usize) -> io::Result<()> {
    let root = &enter(root, false)?;
    let start = Instant::now();
    let mut n = 0;
    let mut done = 0;
    while done < passes && (done == 0 || start.elapsed() < PASS_BUDGET) {
        done += 1;
        for d in 0..ndirs {
            for e in fs::read_dir(dir_name(root, d))? {
                e?;
                n += 1;
            }
        }
    }
    println!("{:.6} {n}", start.elapsed().as_secs_f64() / done as f64);
    Ok(())
}

fn unlink(root: &Path, ndirs: usize, nfiles: usize) -> io::Result<()> {
    let root = &enter(root, false)?;
    let paths = files(root, ndirs, nfiles);
    let start = Instant::now();
    for p in &paths {
        // SAFETY: `p` is NUL-terminated.
        if unsafe { libc::unlink(p.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    report(start, nfiles);
    Ok(())
}

fn statall(root: &Path) -> io::Result<()> {
    let start = Instant::now();
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let m = fs::symlink_metadata(e.path())?;
            n += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    report(start, n);
    Ok(())
}

/// A small C-like source tree: NFILES files of 1–8 KiB over NDIRS folders, some containing the
/// word `vfbench_needle` (what the build workload greps for).
fn gentree(root: &Path, ndirs: usize, nfiles: usize) -> io::Result<()> {
    let start = Instant::now();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for d in 0..ndirs {
        fs::create_dir_all(root.join(format!("src/mod{d:03}")))?;
    }
    for i in 0..nfiles {
        let d = i % ndirs;
        let ext = if i % 5 == 0 { "h" } else { "c" };
        let p = root.join(format!("src/mod{d:03}/file{i:05}.{ext}"));
        let lines = 30 + (rnd() % 200) as usize;
        let mut f = io::BufWriter::new(fs::File::create(p)?);
        writeln!(f, "/* generated by vfbench gentree: file {i} */")?;
        writeln!(f, "#include \"mod{d:03}.h\"")?;
        for l in 0..lines {
            let v = rnd();
            if v % 97 == 0 {
                writeln!(f, "    /* vfbench_needle {l} */")?;
            }
            writeln!(
                f,
                "static int fn_{i}_{l}(int a) {{ return a * {} + {}; }}",
                v % 1000,
                (v >> 20) % 1000
            )?;
        }
        f.flush()?;
    }
    fs::write(root.join("Makefile"), "all:\n\t@echo built\n")?;
    report(start, nfiles);
    Ok(())
}

fn client(control: &Path) -> io::Result<Client> {
    let (c, _) = Client::connect_hello(control).map_err(io::Error::other)?;
    c.set_timeout(Some(Duration::from_secs(120)))
        .map_err(io::Error::other)?;
    Ok(c)
}

fn notify(control: &Path, channel: &str, paths: &[String]) -> io::Result<()> {
    let mut c = client(control)?;
    let start = Instant::now();
    let r = c
        .request("notify", json!({"channel": channel, "paths": paths}))
        .map_err(io::Error::other)?;
    let handled = r.get("handled").and_then(Value::as_u64).unwrap_or(0);
    let overlays = r.get("overlays").and_then(Value::as_u64).unwrap_or(0);
    if overlays == 0 || handled < overlays {
        return Err(io::Error::other(format!(
            "notify {channel}: {handled} of {overlays} overlays handled it"
        )));
    }
    report(start, 1);
    Ok(())
}

fn overlay(control: &Path, mountpoint: &Path) -> io::Result<()> {
    let mut c = client(control)?;
    let st = c.request("status", json!({})).map_err(io::Error::other)?;
    let mp = mountpoint.canonicalize()?;
    let list = st
        .get("overlays")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let o = list
        .iter()
        .find(|o| o.get("mountpoint").and_then(Value::as_str).map(Path::new) == Some(&mp))
        .ok_or_else(|| io::Error::other(format!("no overlay at {}", mp.display())))?;
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let stats = o.get("stats").cloned().unwrap_or(Value::Null);
    println!(
        "{} {} {} {}",
        n(o, "pid"),
        n(&stats, "known_inodes"),
        n(&stats, "entries_scanned"),
        n(&stats, "dirs_scanned")
    );
    Ok(())
}

fn rss(pid: &str) -> io::Result<()> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| io::Error::other("no VmRSS"))?;
    println!("{kb}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let p = |i: usize| PathBuf::from(args.get(i).cloned().unwrap_or_default());
    let res = match cmd.as_str() {
        "mkfiles" => (|| {
            let size = if args.len() > 4 { num(args.get(4))? } else { 0 };
            mkfiles(&p(1), num(args.get(2))?, num(args.get(3))?, size)
        })(),
        "stat" => (|| {
            let passes = args.get(4).map_or(Ok(1), |_| num(args.get(4)))?;
            stat_files(&p(1), num(args.get(2))?, num(args.get(3))?, passes)
        })(),
        "readdir" => (|| {
            let passes = args.get(3).map_or(Ok(1), |_| num(args.get(3)))?;
            readdir(&p(1), num(args.get(2))?, passes)
        })(),
        "unlink" => (|| unlink(&p(1), num(args.get(2))?, num(args.get(3))?))(),
        "statall" => statall(&p(1)),
        "gentree" => (|| gentree(&p(1), num(args.get(2))?, num(args.get(3))?))(),
        "notify" if args.len() >= 3 => notify(&p(1), &args[2], &args[3..]),
        "overlay" if args.len() == 3 => overlay(&p(1), &p(2)),
        "rss" if args.len() == 2 => rss(&args[1]),
        _ => return usage(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vfbench {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
