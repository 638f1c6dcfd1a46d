//! /proc/self/mountinfo, read and parsed (pure parsers, tested on fixed text): which
//! `fuse.vfnotify` overlays are mounted, and a mount's per-mount options. Used by the daemon
//! (overlays on `--map` folders), the overlay (its own per-mount flags, `remount`) and the demo.

use std::path::{Path, PathBuf};

/// Mountpoints of `fuse.vfnotify` filesystems in /proc/self/mountinfo (empty when unreadable).
pub fn vfnotify_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    parse_mountinfo_fstype(&info, "fuse.vfnotify")
}

/// Mountpoints whose filesystem type is `fstype`, from mountinfo text. Pure.
pub fn parse_mountinfo_fstype(info: &str, fstype: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(sep + 1) == Some(&fstype) {
            if let Some(mp) = fields.get(4) {
                out.push(unescape_mountinfo(mp));
            }
        }
    }
    out
}

/// The per-mount options (mountinfo's sixth field, e.g. `rw,nosuid,noatime`) of the last mount
/// of type `fstype` at `mountpoint`; `None` when nothing of that type is mounted there. Pure.
pub fn parse_mountinfo_options(info: &str, fstype: &str, mountpoint: &Path) -> Option<String> {
    last_mount_field(info, fstype, mountpoint, 5)
}

/// The device (`MAJOR:MINOR`, mountinfo's third field; for a FUSE mount also its bdi's name in
/// /sys/class/bdi) of the last mount of type `fstype` at `mountpoint`. Pure.
pub fn parse_mountinfo_device(info: &str, fstype: &str, mountpoint: &Path) -> Option<String> {
    last_mount_field(info, fstype, mountpoint, 2)
}

fn last_mount_field(info: &str, fstype: &str, mountpoint: &Path, field: usize) -> Option<String> {
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(sep + 1) == Some(&fstype)
            && fields
                .get(4)
                .is_some_and(|mp| unescape_mountinfo(mp) == mountpoint)
        {
            found = fields.get(field).map(|o| o.to_string());
        }
    }
    found
}

fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(v) = field
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Whether `path` is in `mounts`.
pub fn is_mount(mounts: &[PathBuf], path: &Path) -> bool {
    mounts.iter().any(|m| m == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_of_one_mountpoint() {
        let info = "40 27 0:41 / /m\\040n rw,nosuid - fuse.vfnotify s rw,user_id=0\n\
                    41 27 0:41 / /m\\040n ro,nosuid,noatime - fuse.vfnotify s rw,user_id=0\n\
                    42 27 0:42 / /other ro - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo_options(info, "fuse.vfnotify", Path::new("/m n")).as_deref(),
            Some("ro,nosuid,noatime")
        );
        assert_eq!(
            parse_mountinfo_options(info, "fuse.vfnotify", Path::new("/other")),
            None
        );
        let info = format!("{info}43 27 0:43 / /m\\040n rw - fuse.vfnotify s rw\n");
        assert_eq!(
            parse_mountinfo_device(&info, "fuse.vfnotify", Path::new("/m n")).as_deref(),
            Some("0:43"),
            "the last mount there"
        );
        assert_eq!(
            parse_mountinfo_device(&info, "tmpfs", Path::new("/m n")),
            None
        );
    }

    #[test]
    fn mountinfo_parsing() {
        let info = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - fuse.vfnotify vf rw\n\
                    37 35 98:0 / /mnt/c rw - ext4 /dev/sda rw\n\
                    garbage line\n\
                    38 35 0:1 / /x\\777 rw shared:2 - fuse.vfnotify vf rw\n";
        let m = parse_mountinfo_fstype(info, "fuse.vfnotify");
        assert_eq!(m[0], PathBuf::from("/mnt/a b"));
        assert_eq!(m.len(), 2);
        assert!(is_mount(&m, Path::new("/mnt/a b")));
        assert!(!is_mount(&m, Path::new("/mnt/c")));
    }
}
