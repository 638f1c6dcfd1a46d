//! Mount options (`-o a,b=c`): a pure, bounded parser into a validated [`MountConfig`].
//!
//! Unknown options are an error naming the option (exit 2); the options mount(8) passes to
//! helpers are accepted and either mapped to mount flags or ignored.

use std::path::PathBuf;
use std::time::Duration;

/// How long the kernel may cache names, attributes, pages and listings.
///
/// Each variant says when it is safe:
/// - `Always`: long entry/attribute timeouts, negative lookups cached, page cache kept across
///   opens, kernel readdir cache. Safe only while notifications arrive (`channel=` linked to a
///   daemon): the overlay then invalidates exactly what changed. Without a link the overlay falls
///   back to `Auto` timeouts until one is made.
/// - `Auto`: 1 s timeouts, page cache revalidated on open by mtime/size. Safe without a notifier
///   if one second of staleness is acceptable.
/// - `Never`: no caching of names or attributes; every access asks SOURCE. Always safe, slowest.
///
/// The default is `Always` when `channel=` is given and `Auto` otherwise (see [`parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    Always,
    Auto,
    Never,
}

impl CachePolicy {
    /// Entry and attribute timeout for this policy.
    pub fn ttl(self) -> Duration {
        match self {
            CachePolicy::Always => Duration::from_secs(24 * 3600),
            CachePolicy::Auto => Duration::from_secs(1),
            CachePolicy::Never => Duration::ZERO,
        }
    }
}

/// How host changes are shown to inotify watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventMode {
    /// Replay each change as its real event (IN_CREATE, IN_DELETE, IN_MOVED_*, IN_MODIFY, ...).
    Precise,
    /// Virtual create+delete of the trigger name in each changed folder (the old tool's signal).
    Toggle,
    /// Both of the above.
    Both,
    /// No events; caches are still invalidated.
    Off,
}

impl EventMode {
    pub fn precise(self) -> bool {
        matches!(self, EventMode::Precise | EventMode::Both)
    }
    pub fn toggle(self) -> bool {
        matches!(self, EventMode::Toggle | EventMode::Both)
    }
}

/// Where file data goes (`passthrough=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    /// Kernel FUSE passthrough to the SOURCE file over a local SOURCE; the overlay's own page
    /// cache over a FUSE or virtiofs SOURCE, whose files are usually direct I/O there (every read
    /// would be a round trip to the host) and which the kernel refuses to stack on when it uses
    /// passthrough itself (ELOOP).
    Auto,
    /// Kernel passthrough wherever the kernel allows it.
    On,
    /// Data through the overlay (page cache).
    Off,
}

impl Passthrough {
    /// Whether to ask the kernel for passthrough over a SOURCE that is (`source_is_fuse`) or is
    /// not FUSE-based.
    pub fn wanted(self, source_is_fuse: bool) -> bool {
        match self {
            Passthrough::Auto => !source_is_fuse,
            Passthrough::On => true,
            Passthrough::Off => false,
        }
    }
}

/// When an open checks SOURCE's attributes of the file (`revalidate=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revalidate {
    /// As `Notify` while the daemon is fed by a `vfnotify host` (which names every host change:
    /// the daemon says so with a `feed` event), else as `Open`. The default.
    Auto,
    /// At every open: a host permission change is enforced before its notification (one
    /// `fstat`, a GETATTR round trip over virtiofs, per open).
    Open,
    /// Only without a daemon link: while linked the overlay trusts the notifications (a host
    /// change is seen from its notification on, as for every other cached view). An open then
    /// asks SOURCE nothing; where the overlay serves files itself (no kernel passthrough), the
    /// kernel sends no opens at all (`overlay::fs::open_free`).
    Notify,
}

/// Everything `-o` can say, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    pub channel: Option<String>,
    pub control: PathBuf,
    pub cache: CachePolicy,
    pub events: EventMode,
    pub passthrough: Passthrough,
    pub read_only: bool,
    pub allow_other: bool,
    pub suid: bool,
    pub dev: bool,
    pub exec: bool,
    pub noatime: bool,
    /// `nodiratime`: listing a folder leaves its atime alone (implied by `noatime`).
    pub nodiratime: bool,
    /// `strictatime`: every access updates atime (the default is `relatime`).
    pub strictatime: bool,
    pub sync: bool,
    pub dirsync: bool,
    pub fsname: Option<String>,
    pub audit: bool,
    pub log: Option<PathBuf>,
    pub threads: usize,
    pub trigger_name: String,
    /// Most entries the overlay views for watch globs in folders the kernel does not hold
    /// (`reach=N`; 0: watches hear only of folders guest clients looked at).
    pub reach: usize,
    /// Most backing fds of closed files kept for warm opens (`fdcache=N`; 0: none; default
    /// from the open-files limit, see `overlay::fs::fdcache`).
    pub fdcache: Option<usize>,
    pub revalidate: Revalidate,
    /// `remount`: change the per-mount flags of a live overlay (`mount -o remount,...`) instead
    /// of mounting one.
    pub remount: bool,
}

impl Default for MountConfig {
    /// The defaults without `channel=` (so `cache=auto`).
    fn default() -> Self {
        MountConfig {
            channel: None,
            control: PathBuf::from(crate::control::DEFAULT_CONTROL),
            cache: CachePolicy::Auto,
            events: EventMode::Precise,
            passthrough: Passthrough::Auto,
            read_only: false,
            allow_other: false,
            suid: false,
            dev: false,
            exec: true,
            noatime: false,
            nodiratime: false,
            strictatime: false,
            sync: false,
            dirsync: false,
            fsname: None,
            audit: false,
            log: None,
            threads: 4,
            trigger_name: crate::trigger::DEFAULT_TRIGGER_NAME.to_string(),
            reach: super::sync::REACH_BUDGET,
            fdcache: None,
            revalidate: Revalidate::Auto,
            remount: false,
        }
    }
}

/// A bad `-o` option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown mount option '{0}'")]
    Unknown(String),
    #[error("mount option '{name}' has a bad value '{value}': {expected}")]
    BadValue {
        name: String,
        value: String,
        expected: &'static str,
    },
    #[error("mount option '{0}' needs a value ({0}=...)")]
    MissingValue(String),
    #[error("mount options are too long ({0} bytes, at most 8192)")]
    TooLong(usize),
}

const MAX_OPTIONS_LEN: usize = 8192;

/// Parse every `-o` argument (each comma-separated) into a config.
///
/// Without `cache=`, the cache policy is `always` when a `channel=` is given (notifications will
/// invalidate what changed) and `auto` otherwise (nothing would, so one second of staleness at
/// most).
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountConfig, OptionError> {
    let total: usize = args.iter().map(|a| a.as_ref().len()).sum();
    if total > MAX_OPTIONS_LEN {
        return Err(OptionError::TooLong(total));
    }
    let mut cfg = MountConfig::default();
    let mut cache = None;
    for arg in args {
        for opt in arg
            .as_ref()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            apply(&mut cfg, &mut cache, opt)?;
        }
    }
    cfg.cache = cache.unwrap_or(if cfg.channel.is_some() {
        CachePolicy::Always
    } else {
        CachePolicy::Auto
    });
    Ok(cfg)
}

fn apply(
    cfg: &mut MountConfig,
    cache: &mut Option<CachePolicy>,
    opt: &str,
) -> Result<(), OptionError> {
    let (name, value) = match opt.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (opt, None),
    };
    let need = |v: Option<&str>| -> Result<String, OptionError> {
        match v {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(OptionError::MissingValue(name.to_string())),
        }
    };
    let bad = |expected: &'static str| OptionError::BadValue {
        name: name.to_string(),
        value: value.unwrap_or("").to_string(),
        expected,
    };
    let flag = |v: Option<&str>| -> Result<(), OptionError> {
        match v {
            None => Ok(()),
            Some(_) => Err(OptionError::Unknown(opt.to_string())),
        }
    };
    match name {
        "channel" => {
            let v = need(value)?;
            // The same rule as the wire protocol's, so every channel a host can send is followable.
            if crate::protocol::validate_channel(&v).is_err() {
                return Err(bad(
                    "a channel name as the protocol allows it (no control characters, bounded)",
                ));
            }
            cfg.channel = Some(v);
        }
        "control" => cfg.control = PathBuf::from(need(value)?),
        "cache" => {
            *cache = Some(match need(value)?.as_str() {
                "always" => CachePolicy::Always,
                "auto" => CachePolicy::Auto,
                "never" => CachePolicy::Never,
                _ => return Err(bad("always, auto or never")),
            })
        }
        "events" => {
            cfg.events = match need(value)?.as_str() {
                "precise" => EventMode::Precise,
                "toggle" => EventMode::Toggle,
                "both" => EventMode::Both,
                "off" => EventMode::Off,
                _ => return Err(bad("precise, toggle, both or off")),
            }
        }
        "passthrough" => {
            cfg.passthrough = match need(value)?.as_str() {
                "auto" => Passthrough::Auto,
                "on" => Passthrough::On,
                "off" => Passthrough::Off,
                _ => return Err(bad("auto, on or off")),
            }
        }
        "fsname" => cfg.fsname = Some(need(value)?),
        "log" => cfg.log = Some(PathBuf::from(need(value)?)),
        "trigger_name" => {
            let v = need(value)?;
            if crate::trigger::validate_trigger_name(&v).is_err() {
                return Err(bad("a plain file name (no '/', not '.' or '..')"));
            }
            cfg.trigger_name = v;
        }
        "threads" => {
            let n: usize = need(value)?
                .parse()
                .map_err(|_| bad("a number from 1 to 64"))?;
            if !(1..=64).contains(&n) {
                return Err(bad("a number from 1 to 64"));
            }
            cfg.threads = n;
        }
        "reach" => {
            cfg.reach = need(value)?
                .parse()
                .map_err(|_| bad("a number of entries (0 to turn it off)"))?;
        }
        "fdcache" => {
            cfg.fdcache = Some(
                need(value)?
                    .parse()
                    .map_err(|_| bad("a number of files (0 to turn it off)"))?,
            );
        }
        "revalidate" => {
            cfg.revalidate = match need(value)?.as_str() {
                "auto" => Revalidate::Auto,
                "open" => Revalidate::Open,
                "notify" => Revalidate::Notify,
                _ => return Err(bad("auto, open or notify")),
            }
        }
        "ro" => flag(value).map(|_| cfg.read_only = true)?,
        "rw" => flag(value).map(|_| cfg.read_only = false)?,
        "allow_other" => flag(value).map(|_| cfg.allow_other = true)?,
        "default_permissions" => flag(value)?, // always on: permission checks are the kernel's
        "audit" => flag(value).map(|_| cfg.audit = true)?,
        "suid" => flag(value).map(|_| cfg.suid = true)?,
        "nosuid" => flag(value).map(|_| cfg.suid = false)?,
        "dev" => flag(value).map(|_| cfg.dev = true)?,
        "nodev" => flag(value).map(|_| cfg.dev = false)?,
        "exec" => flag(value).map(|_| cfg.exec = true)?,
        "noexec" => flag(value).map(|_| cfg.exec = false)?,
        "noatime" => flag(value).map(|_| {
            cfg.noatime = true;
            cfg.strictatime = false;
        })?,
        "atime" | "relatime" | "norelatime" => flag(value).map(|_| {
            cfg.noatime = false;
            cfg.strictatime = false;
        })?,
        "strictatime" => flag(value).map(|_| {
            cfg.noatime = false;
            cfg.strictatime = true;
        })?,
        "nodiratime" => flag(value).map(|_| cfg.nodiratime = true)?,
        "diratime" => flag(value).map(|_| cfg.nodiratime = false)?,
        "remount" => flag(value).map(|_| cfg.remount = true)?,
        // The FUSE options mountinfo shows (mount(8) passes them back on a remount): the overlay
        // sets them itself.
        "user_id" | "group_id" => {
            need(value)?.parse::<u32>().map_err(|_| bad("a number"))?;
        }
        "sync" => flag(value).map(|_| cfg.sync = true)?,
        "async" => flag(value).map(|_| cfg.sync = false)?,
        "dirsync" => flag(value).map(|_| cfg.dirsync = true)?,
        // Options mount(8) and fstab pass to helpers that concern mount(8) itself, not us.
        "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "nouser" | "users"
        | "owner" | "group" | "comment" | "loud" | "silent" | "x-systemd" | "nosymfollow" => {}
        n if n.starts_with("x-") || n.starts_with("comment=") => {}
        _ => return Err(OptionError::Unknown(opt.to_string())),
    }
    Ok(())
}

/// The per-mount flags of a mount as mountinfo lists them (its sixth field, e.g.
/// `rw,nosuid,nodev,noatime`), as far as the server acts on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerMount {
    pub read_only: bool,
    pub noatime: bool,
    pub nodiratime: bool,
}

impl PerMount {
    /// Parse mountinfo's per-mount options. Pure.
    pub fn parse(opts: &str) -> PerMount {
        let mut f = PerMount::default();
        for o in opts.split(',') {
            match o {
                "ro" => f.read_only = true,
                "noatime" => f.noatime = true,
                "nodiratime" => f.nodiratime = true,
                _ => {}
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = parse::<&str>(&[]).unwrap();
        assert_eq!(c.cache, CachePolicy::Auto);
        assert_eq!(c, MountConfig::default());
        assert_eq!(c.events, EventMode::Precise);
        assert!(c.passthrough == Passthrough::Auto && !c.read_only && !c.suid);
    }

    /// Long caching only where notifications can invalidate it; an explicit `cache=` wins, in
    /// any order relative to `channel=`.
    #[test]
    fn cache_defaults_to_always_only_with_a_channel() {
        assert_eq!(parse(&["channel=docs"]).unwrap().cache, CachePolicy::Always);
        assert_eq!(parse(&["allow_other"]).unwrap().cache, CachePolicy::Auto);
        assert_eq!(parse(&["cache=always"]).unwrap().cache, CachePolicy::Always);
        assert_eq!(
            parse(&["cache=never,channel=docs"]).unwrap().cache,
            CachePolicy::Never
        );
        assert_eq!(
            parse(&["channel=docs", "cache=auto"]).unwrap().cache,
            CachePolicy::Auto
        );
    }

    #[test]
    fn fstab_line() {
        let c = parse(&["channel=documents,allow_other,defaults,noauto,nofail,_netdev,x-systemd.automount,nosuid,nodev"]).unwrap();
        assert_eq!(c.channel.as_deref(), Some("documents"));
        assert!(c.allow_other);
    }

    #[test]
    fn values() {
        let c = parse(&[
            "cache=never",
            "passthrough=off,events=both,ro,fsname=share,threads=8",
        ])
        .unwrap();
        assert_eq!(c.cache, CachePolicy::Never);
        assert!(c.passthrough == Passthrough::Off && c.read_only);
        assert_eq!(c.events, EventMode::Both);
        assert_eq!(c.fsname.as_deref(), Some("share"));
        assert_eq!(c.threads, 8);
    }

    /// `passthrough=auto` keeps the data in the overlay's page cache over a FUSE (virtiofs)
    /// SOURCE and uses kernel passthrough over a local one; `on` and `off` force it.
    #[test]
    fn passthrough_modes() {
        assert_eq!(
            parse(&["passthrough=on"]).unwrap().passthrough,
            Passthrough::On
        );
        assert!(parse(&["passthrough=yes"]).is_err());
        assert!(Passthrough::Auto.wanted(false) && !Passthrough::Auto.wanted(true));
        assert!(Passthrough::On.wanted(true) && Passthrough::On.wanted(false));
        assert!(!Passthrough::Off.wanted(false));
        assert_eq!(parse(&["fdcache=0"]).unwrap().fdcache, Some(0));
        assert!(parse(&["fdcache=-1"]).is_err());
        assert_eq!(MountConfig::default().revalidate, Revalidate::Auto);
        assert_eq!(
            parse(&["revalidate=open"]).unwrap().revalidate,
            Revalidate::Open
        );
        let c = parse(&["revalidate=notify"]).unwrap();
        assert_eq!(c.revalidate, Revalidate::Notify);
        assert!(parse(&["revalidate=never"]).is_err());
    }

    /// What mount(8) hands the helper for `mount -o remount,ro MOUNTPOINT`: the mount's
    /// current options from mountinfo, the new ones, and `remount`.
    #[test]
    fn remount_lines_from_mount8() {
        let c = parse(&[
            "ro,nosuid,nodev,noatime,remount,user_id=0,group_id=0,default_permissions,allow_other",
        ])
        .unwrap();
        assert!(c.remount && c.read_only && c.noatime && !c.suid && !c.dev && c.allow_other);
        let c =
            parse(&["rw,nosuid,nodev,relatime,remount,nodiratime,user_id=0,group_id=0"]).unwrap();
        assert!(c.remount && !c.read_only && !c.noatime && c.nodiratime);
        let c = parse(&["noatime,strictatime"]).unwrap();
        assert!(!c.noatime && c.strictatime);
        assert!(matches!(
            parse(&["user_id=root"]),
            Err(OptionError::BadValue { .. })
        ));
        assert_eq!(
            parse(&["remount=1"]),
            Err(OptionError::Unknown("remount=1".into()))
        );
    }

    #[test]
    fn per_mount_flags_from_mountinfo() {
        assert_eq!(
            PerMount::parse("ro,nosuid,nodev,noatime"),
            PerMount {
                read_only: true,
                noatime: true,
                nodiratime: false
            }
        );
        assert_eq!(
            PerMount::parse("rw,nodiratime,relatime"),
            PerMount {
                read_only: false,
                noatime: false,
                nodiratime: true
            }
        );
    }

    #[test]
    fn errors_name_the_option() {
        assert_eq!(parse(&["bogus"]), Err(OptionError::Unknown("bogus".into())));
        assert!(matches!(
            parse(&["cache=sometimes"]),
            Err(OptionError::BadValue { .. })
        ));
        assert_eq!(
            parse(&["channel="]),
            Err(OptionError::MissingValue("channel".into()))
        );
        assert_eq!(parse(&["ro=1"]), Err(OptionError::Unknown("ro=1".into())));
        assert!(matches!(
            parse(&["threads=0"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&["channel=a\tb"]),
            Err(OptionError::BadValue { .. })
        ));
        assert_eq!(
            parse(&["channel=my docs"]).unwrap().channel.as_deref(),
            Some("my docs")
        );
        for bad in ["trigger_name=../../x", "trigger_name=/x", "trigger_name=.."] {
            assert!(
                matches!(parse(&[bad]), Err(OptionError::BadValue { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&["trigger_name=.refresh"]).unwrap().trigger_name,
            ".refresh"
        );
        assert!(matches!(
            parse(&["x".repeat(9000)]),
            Err(OptionError::TooLong(_))
        ));
    }
}
