//! A tiny inotify watcher for the VM test's guest (Debian's busybox-static has no `inotifyd`).
//!
//! `inotify-log DIR...` watches each DIR for the events a local writer causes and prints one line
//! per event, flushed at once: `EVENTS NAME`, EVENTS being the comma-separated names of the mask
//! bits (`CREATE`, `CREATE,ISDIR`, `MOVED_FROM`, ...), NAME the entry (or `.` for the watched
//! directory itself). Open/access/close-nowrite events are not watched: readers do not cause noise.
//! Built with plain `rustc` (no crates): `rustc -O -o inotify-log vm/inotify-log.rs`.

use std::ffi::CString;
use std::io::Write;
use std::os::raw::{c_char, c_int, c_void};

unsafe extern "C" {
    fn inotify_init1(flags: c_int) -> c_int;
    fn inotify_add_watch(fd: c_int, path: *const c_char, mask: u32) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
}

const NAMES: &[(u32, &str)] = &[
    (0x0000_0002, "MODIFY"),
    (0x0000_0004, "ATTRIB"),
    (0x0000_0008, "CLOSE_WRITE"),
    (0x0000_0040, "MOVED_FROM"),
    (0x0000_0080, "MOVED_TO"),
    (0x0000_0100, "CREATE"),
    (0x0000_0200, "DELETE"),
    (0x0000_0400, "DELETE_SELF"),
    (0x0000_0800, "MOVE_SELF"),
    (0x0000_2000, "UNMOUNT"),
    (0x0000_4000, "Q_OVERFLOW"),
    (0x0000_8000, "IGNORED"),
    (0x4000_0000, "ISDIR"),
];

fn main() {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        eprintln!("usage: inotify-log DIR...");
        std::process::exit(2);
    }
    let fd = unsafe { inotify_init1(0) };
    if fd < 0 {
        eprintln!("inotify_init1: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let mask = NAMES[..9].iter().fold(0, |m, (b, _)| m | b);
    for d in &dirs {
        let c = CString::new(d.as_str()).expect("path without NUL");
        if unsafe { inotify_add_watch(fd, c.as_ptr(), mask) } < 0 {
            eprintln!("inotify_add_watch {d}: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
    }
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = unsafe { read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("read: {e}");
            std::process::exit(1);
        }
        let mut off = 0usize;
        while off + 16 <= n as usize {
            let word = |i: usize| u32::from_ne_bytes(buf[off + i..off + i + 4].try_into().unwrap());
            let (ev_mask, len) = (word(4), word(12) as usize);
            let raw = &buf[off + 16..off + 16 + len];
            let name = String::from_utf8_lossy(&raw[..raw.iter().position(|&b| b == 0).unwrap_or(len)]);
            let names: Vec<&str> = NAMES
                .iter()
                .filter(|(b, _)| ev_mask & b != 0)
                .map(|(_, s)| *s)
                .collect();
            let name = if name.is_empty() { ".".into() } else { name };
            let _ = writeln!(out, "{} {}", names.join(","), name);
            let _ = out.flush();
            off += 16 + len;
        }
    }
}
