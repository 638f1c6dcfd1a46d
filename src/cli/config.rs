//! Arguments → each subsystem's validated `Config` (`TryFrom<Args>`). The checks themselves
//! belong to the subsystems; this module only says which argument goes where.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    DaemonArgs, DemoArgs, HostArgs, HostStatusArgs, HostSyncArgs, MountArgs, NotifyArgs, SendArgs,
    StatusArgs, WatchArgs,
};
use crate::channels::ChannelMap;
use crate::control::{notify, status, watch};
use crate::daemon::send::{self, SendError};
use crate::daemon::{ConfigError, DaemonConfig};
use crate::host::{self, ChannelConfig, Limits};
use crate::overlay::{self, options::OptionError};
use crate::transport::{self, ConnectAddr, ListenAddr, parse_connect};
use crate::trigger::validate_trigger_name;

impl TryFrom<&DaemonArgs> for DaemonConfig {
    type Error = ConfigError;

    fn try_from(args: &DaemonArgs) -> Result<Self, ConfigError> {
        let channels = ChannelMap::from_args(&args.map)?;
        let listen = if args.listen.is_empty() {
            vec![ListenAddr::Vsock { port: args.port }]
        } else {
            args.listen
                .iter()
                .map(|l| transport::parse_listen(l))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ConfigError::Listen)?
        };
        let cid_policy =
            transport::parse_allow_cid(&args.allow_cid).map_err(ConfigError::AllowCid)?;
        validate_trigger_name(&args.trigger_name)?;
        if args.max_connections == 0 {
            return Err(ConfigError::MaxConnections);
        }
        if args.idle_timeout == 0 {
            return Err(ConfigError::IdleTimeout);
        }
        if args.control.as_os_str().is_empty() {
            return Err(ConfigError::Control);
        }
        Ok(DaemonConfig {
            channels,
            listen,
            cid_policy,
            control: args.control.clone(),
            trigger_name: args.trigger_name.clone(),
            max_connections: args.max_connections,
            idle_timeout: Duration::from_secs(args.idle_timeout),
            coalesce: Duration::from_millis(args.coalesce_ms),
        })
    }
}

impl TryFrom<SendArgs> for send::Config {
    type Error = SendError;

    fn try_from(args: SendArgs) -> Result<Self, SendError> {
        let lines = send::encode_lines(&args.channel, &args.relpaths)?;
        let addr = match &args.to {
            Some(to) => parse_connect(to).map_err(SendError::Address)?,
            None => ConnectAddr::Vsock {
                cid: args.cid,
                port: args.port,
            },
        };
        Ok(send::Config { addr, lines })
    }
}

impl TryFrom<NotifyArgs> for notify::Config {
    type Error = notify::NotifyError;

    fn try_from(args: NotifyArgs) -> Result<Self, Self::Error> {
        notify::Config::new(args.control, args.channel, args.relpaths)
    }
}

impl From<StatusArgs> for status::Config {
    fn from(args: StatusArgs) -> Self {
        status::Config {
            control: args.control,
            json: args.json,
        }
    }
}

impl TryFrom<WatchArgs> for watch::Config {
    type Error = watch::WatchError;

    fn try_from(args: WatchArgs) -> Result<Self, Self::Error> {
        watch::Config::new(args.control, &args.channel, args.glob, args.json)
    }
}

impl TryFrom<MountArgs> for overlay::Config {
    type Error = OptionError;

    fn try_from(args: MountArgs) -> Result<Self, OptionError> {
        Ok(overlay::Config {
            options: overlay::options::parse(&args.options)?,
            source: args.source,
            mountpoint: args.mountpoint,
            foreground: args.foreground,
            debug: args.debug,
        })
    }
}

impl From<DemoArgs> for crate::demo::Config {
    fn from(args: DemoArgs) -> Self {
        crate::demo::Config {
            json: args.json,
            keep: args.keep,
        }
    }
}

impl From<HostSyncArgs> for host::sync::SyncConfig {
    fn from(args: HostSyncArgs) -> Self {
        host::sync::SyncConfig {
            channels: args.channels,
            timeout: args.timeout,
            json: args.json,
            control: args.control,
        }
    }
}

impl From<HostStatusArgs> for host::control::StatusConfig {
    fn from(args: HostStatusArgs) -> Self {
        host::control::StatusConfig {
            control: args.control,
            json: args.json,
        }
    }
}

impl TryFrom<HostArgs> for host::Config {
    type Error = host::ConfigError;

    fn try_from(args: HostArgs) -> Result<host::Config, host::ConfigError> {
        let mut raw: Vec<(String, PathBuf, Vec<ConnectAddr>)> = Vec::new();
        if let Some(file) = &args.config {
            for c in host::config::load(file)? {
                if c.guests.is_empty() {
                    tracing::info!(channel = %c.name, "channel has no guests to notify; skipped");
                    continue;
                }
                raw.push((c.name, c.base, c.guests));
            }
        }
        let mut guests: Vec<ConnectAddr> = args
            .guest
            .iter()
            .map(|cid| ConnectAddr::Vsock {
                cid: *cid,
                port: args.port,
            })
            .collect();
        for to in &args.to {
            guests.push(parse_connect(to).map_err(host::ConfigError::To)?);
        }
        if !args.watch.is_empty() && guests.is_empty() {
            return Err(host::ConfigError::NoGuests);
        }
        if args.watch.is_empty() && !guests.is_empty() {
            return Err(host::ConfigError::GuestsWithoutWatch);
        }
        for w in &args.watch {
            let (name, path) = w
                .split_once('=')
                .filter(|(_, p)| !p.is_empty())
                .ok_or_else(|| host::ConfigError::ParseWatch { arg: w.clone() })?;
            raw.push((name.to_string(), PathBuf::from(path), guests.clone()));
        }
        if raw.is_empty() {
            return Err(host::ConfigError::NothingToWatch);
        }
        let mut channels: Vec<ChannelConfig> = Vec::new();
        for (name, base, guests) in raw {
            host::check_channel(&name)?;
            if channels.iter().any(|c| c.name == name) {
                return Err(host::ConfigError::DuplicateChannel { name });
            }
            let base = host::check_base(&name, &base)?;
            channels.push(ChannelConfig { name, base, guests });
        }
        if args.control.as_os_str().is_empty() {
            return Err(host::ConfigError::Control);
        }
        let backend = args.backend.parse().map_err(host::ConfigError::Backend)?;
        let nonzero = |v: usize, flag| {
            if v == 0 {
                Err(host::ConfigError::Zero { flag })
            } else {
                Ok(v)
            }
        };
        let mut c = host::Config::new(channels, args.control.clone());
        c.backend = backend;
        c.window = Duration::from_millis(args.window_ms);
        c.limits = Limits {
            folder: nonzero(args.folder_limit, "folder-limit")?,
            channel: nonzero(args.channel_limit, "channel-limit")?,
        };
        c.queue = nonzero(args.queue, "queue")?;
        c.keepalive = (args.keepalive > 0).then(|| Duration::from_secs(args.keepalive));
        c.max_watches = match args.max_watches {
            Some(n) => Some(nonzero(n, "max-watches")?),
            None => None,
        };
        c.ignore_names = args
            .ignore_names
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| {
                if n.contains('/') || n == "." || n == ".." {
                    Err(host::ConfigError::IgnoreName { name: n.clone() })
                } else {
                    Ok(std::ffi::OsString::from(n))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(c)
    }
}
