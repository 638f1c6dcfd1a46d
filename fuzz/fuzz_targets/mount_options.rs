//! `-o` mount options of the overlay: `vfnotify::overlay::options::parse`.
//!
//! The input (lossily decoded as UTF-8) is split at `\0` into several `-o` arguments.
//!
//! Invariants checked beyond "no panic":
//! - Ok: `threads` in 1..=64; a channel is non-empty, at most 255 bytes, has no whitespace or
//!   control character and is a valid protocol channel (`validate_channel`), so anything an
//!   overlay follows can be notified; string values are non-empty; the total length was within
//!   8192 bytes; and the config serialised back to `-o` syntax parses to the same config.
//! - Err: the message is non-empty and names the offending option.
//! - With `--features strict`, also: the trigger name passes the daemon's
//!   `validate_trigger_name` (a single file name). See SECURITY.md, "Known gaps".
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfnotify::overlay::options::{CachePolicy, EventMode, MountConfig, OptionError, parse};
use vfnotify::protocol::validate_channel;

fn serialise(c: &MountConfig) -> String {
    let mut o: Vec<String> = Vec::new();
    if let Some(ch) = &c.channel {
        o.push(format!("channel={ch}"));
    }
    o.push(format!(
        "control={}",
        c.control.to_str().expect("utf-8 path")
    ));
    o.push(
        match c.cache {
            CachePolicy::Always => "cache=always",
            CachePolicy::Auto => "cache=auto",
            CachePolicy::Never => "cache=never",
        }
        .into(),
    );
    o.push(
        match c.events {
            EventMode::Precise => "events=precise",
            EventMode::Toggle => "events=toggle",
            EventMode::Both => "events=both",
            EventMode::Off => "events=off",
        }
        .into(),
    );
    o.push(
        if c.passthrough {
            "passthrough=auto"
        } else {
            "passthrough=off"
        }
        .into(),
    );
    o.push(if c.read_only { "ro" } else { "rw" }.into());
    if c.allow_other {
        o.push("allow_other".into());
    }
    o.push(if c.suid { "suid" } else { "nosuid" }.into());
    o.push(if c.dev { "dev" } else { "nodev" }.into());
    o.push(if c.exec { "exec" } else { "noexec" }.into());
    o.push(if c.noatime { "noatime" } else { "relatime" }.into());
    o.push(if c.sync { "sync" } else { "async" }.into());
    if c.dirsync {
        o.push("dirsync".into());
    }
    if let Some(f) = &c.fsname {
        o.push(format!("fsname={f}"));
    }
    if c.audit {
        o.push("audit".into());
    }
    if let Some(l) = &c.log {
        o.push(format!("log={}", l.to_str().expect("utf-8 path")));
    }
    o.push(format!("threads={}", c.threads));
    o.push(format!("trigger_name={}", c.trigger_name));
    o.join(",")
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<&str> = text.split('\0').collect();
    match parse(&args) {
        Ok(c) => {
            let total: usize = args.iter().map(|a| a.len()).sum();
            assert!(total <= 8192);
            assert!((1..=64).contains(&c.threads), "threads {}", c.threads);
            if let Some(ch) = &c.channel {
                assert!(!ch.is_empty() && ch.len() <= 255);
                assert!(
                    !ch.chars().any(|x| x.is_control() || x.is_whitespace()),
                    "{ch:?}"
                );
                assert_eq!(validate_channel(ch), Ok(()), "{ch:?}");
                assert!(!ch.contains(','));
            }
            assert!(!c.control.as_os_str().is_empty());
            assert!(!c.trigger_name.is_empty());
            assert!(c.fsname.as_deref().is_none_or(|f| !f.is_empty()));
            assert!(c.log.as_ref().is_none_or(|l| !l.as_os_str().is_empty()));
            #[cfg(feature = "strict")]
            assert!(
                vfnotify::trigger::validate_trigger_name(&c.trigger_name).is_ok(),
                "overlay accepted trigger_name={:?}, which the daemon refuses",
                c.trigger_name
            );
            let again = serialise(&c);
            if again.len() <= 8192 {
                assert_eq!(
                    parse(&[again.as_str()]).as_ref(),
                    Ok(&c),
                    "round trip through {again:?}"
                );
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            match &e {
                OptionError::Unknown(o) => {
                    assert!(!o.is_empty() && msg.contains(o.as_str()));
                    assert!(!o.contains(','));
                }
                OptionError::BadValue { name, value, .. } => {
                    assert!(!name.is_empty() && msg.contains(name.as_str()));
                    assert!(msg.contains(value.as_str()));
                }
                OptionError::MissingValue(name) => {
                    assert!(!name.is_empty() && msg.contains(name.as_str()))
                }
                OptionError::TooLong(n) => assert!(*n > 8192),
            }
        }
    }
});
