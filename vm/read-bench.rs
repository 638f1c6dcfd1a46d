//! Read timings for the VM test's guest: the same files read through several views of one folder
//! (the bare virtiofs mount, the overlay with its default `passthrough=auto`, the overlay with
//! `passthrough=on`), printed as ratios against the first view. Busybox has no clock finer than a
//! second (`date +%N` is not supported), hence this helper.
//!
//! `read-bench FILE TREE NAME=DIR...`: in each DIR, FILE is a big file and TREE a folder of small
//! files. Measures: `file` (FILE read whole, 1 MiB reads), `tree-stat` (TREE walked, every entry
//! lstat'ed), `tree-cat` (the walk, then every file of TREE opened and read whole). For each
//! measure and each view in turn: the guest's caches are dropped (`/proc/sys/vm/drop_caches`),
//! one cold pass is timed, then warm passes (the fastest of 3 counts; tree-cat makes one). Each
//! result line gives every view's time and, for the views after the first, `xR` with R = first
//! view's time / this view's time (a throughput ratio: above 1 the view is faster than the
//! first). Before timing, an untimed pass checks that every view has the first's FILE bytes and
//! TREE names; every timed pass must see the same entry and byte counts. Any difference or I/O
//! error exits 1. Lines start with `VFNOTIFY-VM BENCH` (the VM test's serial-console prefix).
//! Built with plain `rustc` (no crates): `rustc -O -o read-bench vm/read-bench.rs`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Warm passes of the file and tree-stat measures (the fastest counts); tree-cat, which opens
/// every file (a few FUSE round trips each, slow under TCG), makes one: a sum over its files.
const WARM: usize = 3;

/// What one pass saw: entries visited, bytes read and a checksum of names and bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    entries: u64,
    bytes: u64,
    sum: u64,
}

impl Seen {
    fn add(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        for chunk in data.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.sum =
                (self.sum.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Read `path` whole (1 MiB reads); `check` also folds the bytes into the checksum.
fn read_file(path: &Path, buf: &mut [u8], seen: &mut Seen, check: bool) -> io::Result<()> {
    let mut f = File::open(path)?;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        if check {
            seen.add(&buf[..n]);
        } else {
            seen.bytes += n as u64;
        }
    }
}

/// Every entry below `dir` (sorted, so views compare), each lstat'ed.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, bool)>) -> io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let md = std::fs::symlink_metadata(&p)?;
        out.push((p.clone(), md.is_file()));
        if md.is_dir() {
            walk(&p, out)?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Measure {
    File,
    TreeStat,
    TreeCat,
}

fn pass(
    m: Measure,
    root: &Path,
    file: &str,
    tree: &str,
    buf: &mut [u8],
    check: bool,
) -> io::Result<Seen> {
    let mut seen = Seen::default();
    match m {
        Measure::File => {
            seen.entries = 1;
            read_file(&root.join(file), buf, &mut seen, check)?;
        }
        Measure::TreeStat | Measure::TreeCat => {
            let mut all = Vec::new();
            walk(&root.join(tree), &mut all)?;
            seen.entries = all.len() as u64;
            if check {
                for (p, _) in &all {
                    let rel = p.strip_prefix(root).unwrap_or(p);
                    seen.add(rel.as_os_str().as_encoded_bytes());
                }
            }
            if let Measure::TreeCat = m {
                seen.entries = 0;
                for (p, _) in all.iter().filter(|(_, is_file)| *is_file) {
                    seen.entries += 1;
                    read_file(p, buf, &mut seen, check)?;
                }
            }
        }
    }
    Ok(seen)
}

fn drop_caches() -> io::Result<()> {
    std::fs::write("/proc/sys/vm/drop_caches", "3")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn run(file: &str, tree: &str, views: &[(String, PathBuf)]) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let err = |what: String| io::Error::other(what);
    // Same names and bytes in every view (untimed).
    for m in [Measure::File, Measure::TreeStat] {
        let mut first = None;
        for (name, dir) in views {
            let s = pass(m, dir, file, tree, &mut buf, true)
                .map_err(|e| err(format!("{name} ({}): {e}", dir.display())))?;
            match first {
                None => first = Some(s),
                Some(f) if f != s => {
                    return Err(err(format!(
                        "{name} differs from {}: {s:?} vs {f:?}",
                        views[0].0
                    )));
                }
                Some(_) => {}
            }
        }
    }
    let v: Vec<String> = views
        .iter()
        .map(|(n, d)| format!("{n}={}", d.display()))
        .collect();
    println!(
        "VFNOTIFY-VM BENCH views {} (cold: after drop_caches; warm: best of {WARM}, tree-cat one pass; xR = {} time / view time, >1: faster than {})",
        v.join(" "),
        views[0].0,
        views[0].0
    );
    for (m, label) in [
        (Measure::File, "file"),
        (Measure::TreeStat, "tree-stat"),
        (Measure::TreeCat, "tree-cat"),
    ] {
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        let mut seen = Seen::default();
        let warm_passes = if let Measure::TreeCat = m { 1 } else { WARM };
        for (name, dir) in views {
            drop_caches().map_err(|e| err(format!("drop_caches: {e}")))?;
            let mut times = Vec::new();
            for _ in 0..=warm_passes {
                let t = Instant::now();
                let s = pass(m, dir, file, tree, &mut buf, false)
                    .map_err(|e| err(format!("{name} ({}): {e}", dir.display())))?;
                times.push(t.elapsed());
                // The same entries and byte counts on every pass of every view.
                if seen != Seen::default() && s != seen {
                    return Err(err(format!("{name}: {s:?}, before {seen:?}")));
                }
                seen = s;
            }
            cold.push(times[0]);
            warm.push(*times[1..].iter().min().expect("WARM > 0"));
        }
        let what = match m {
            Measure::File => format!("{} MiB", seen.bytes >> 20),
            Measure::TreeStat => format!("{} entries", seen.entries),
            Measure::TreeCat => format!("{} files, {} KiB", seen.entries, seen.bytes >> 10),
        };
        for (kind, times) in [("cold", &cold), ("warm", &warm)] {
            let cols: Vec<String> = views
                .iter()
                .zip(times.iter())
                .enumerate()
                .map(|(i, ((name, _), t))| {
                    if i == 0 {
                        format!("{name} {}", ms(*t))
                    } else {
                        let r = times[0].as_secs_f64() / t.as_secs_f64().max(1e-9);
                        format!("{name} {} x{r:.2}", ms(*t))
                    }
                })
                .collect();
            println!(
                "VFNOTIFY-VM BENCH {label}-{kind} ({what}): {}",
                cols.join(" | ")
            );
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let views: Option<Vec<(String, PathBuf)>> = args
        .iter()
        .skip(2)
        .map(|a| {
            a.split_once('=')
                .map(|(n, d)| (n.to_string(), PathBuf::from(d)))
        })
        .collect();
    let (Some(file), Some(tree), Some(views)) = (args.first(), args.get(1), views) else {
        eprintln!("usage: read-bench FILE TREE NAME=DIR...");
        std::process::exit(2);
    };
    if views.is_empty() {
        eprintln!("usage: read-bench FILE TREE NAME=DIR...");
        std::process::exit(2);
    }
    if let Err(e) = run(file, tree, &views) {
        println!("VFNOTIFY-VM BENCH error: {e}");
        std::process::exit(1);
    }
}
