//! The channel → folders map given with `--map CHANNEL=PATH`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::protocol::{ChannelError, validate_channel};

/// Why a `--map` argument is refused.
#[derive(Debug, Error)]
pub enum ChannelsError {
    #[error("--map {arg:?}: expected CHANNEL=PATH")]
    ParseMap { arg: String },
    #[error("--map {arg:?}: bad channel name: {source}")]
    MapChannel { arg: String, source: ChannelError },
    #[error("--map {arg:?}: the path is empty")]
    MapEmptyPath { arg: String },
    #[error("--map {arg:?}: cannot use {path}: {source}")]
    StatPath {
        arg: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("--map {arg:?}: {path} is not a directory")]
    NotADirectory { arg: String, path: PathBuf },
}

/// Split `CHANNEL=PATH` (at the first `=`) and validate the channel name. Pure: does not look
/// at the filesystem.
pub fn parse_map_arg(arg: &str) -> Result<(String, PathBuf), ChannelsError> {
    let (channel, path) = arg.split_once('=').ok_or_else(|| ChannelsError::ParseMap {
        arg: arg.to_string(),
    })?;
    validate_channel(channel).map_err(|source| ChannelsError::MapChannel {
        arg: arg.to_string(),
        source,
    })?;
    if path.is_empty() {
        return Err(ChannelsError::MapEmptyPath {
            arg: arg.to_string(),
        });
    }
    Ok((channel.to_string(), PathBuf::from(path)))
}

/// Channel → folders. One channel may map to several folders; a folder is listed once per
/// channel.
#[derive(Debug, Clone, Default)]
pub struct ChannelMap {
    map: BTreeMap<String, Vec<PathBuf>>,
}

impl ChannelMap {
    /// Parse every `--map` argument and check that each folder exists and is a directory.
    /// Folders are kept canonical (absolute, symlinks resolved), the form overlays report their
    /// mountpoints in, so a `--map` through a symlink still finds the overlay mounted there.
    pub fn from_args(args: &[String]) -> Result<Self, ChannelsError> {
        let mut map = ChannelMap::default();
        for arg in args {
            let (channel, path) = parse_map_arg(arg)?;
            let path = std::path::absolute(&path).map_err(|source| ChannelsError::StatPath {
                arg: arg.clone(),
                path: path.clone(),
                source,
            })?;
            let path = std::fs::canonicalize(&path).map_err(|source| ChannelsError::StatPath {
                arg: arg.clone(),
                path: path.clone(),
                source,
            })?;
            let meta = std::fs::metadata(&path).map_err(|source| ChannelsError::StatPath {
                arg: arg.clone(),
                path: path.clone(),
                source,
            })?;
            if !meta.is_dir() {
                return Err(ChannelsError::NotADirectory {
                    arg: arg.clone(),
                    path,
                });
            }
            map.insert(channel, path);
        }
        Ok(map)
    }

    /// Add one mapping (no filesystem check).
    pub fn insert(&mut self, channel: String, path: PathBuf) {
        let paths = self.map.entry(channel).or_default();
        if !paths.contains(&path) {
            paths.push(path);
        }
    }

    /// The folders of `channel` (empty when unknown).
    pub fn paths(&self, channel: &str) -> &[PathBuf] {
        self.map.get(channel).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether `channel` is mapped.
    pub fn contains(&self, channel: &str) -> bool {
        self.map.contains_key(channel)
    }

    /// Every channel and its folders.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<PathBuf>)> {
        self.map.iter()
    }

    /// Whether any folder equals `path`.
    pub fn maps_path(&self, path: &Path) -> bool {
        self.map.values().any(|v| v.iter().any(|p| p == path))
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no channel is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_map() {
        assert_eq!(
            parse_map_arg("docs=/mnt/d").unwrap(),
            ("docs".into(), "/mnt/d".into())
        );
        assert_eq!(
            parse_map_arg("docs=/a=b").unwrap(),
            ("docs".into(), "/a=b".into())
        );
        assert!(matches!(
            parse_map_arg("docs"),
            Err(ChannelsError::ParseMap { .. })
        ));
        assert!(matches!(
            parse_map_arg("=/x"),
            Err(ChannelsError::MapChannel { .. })
        ));
        assert!(matches!(
            parse_map_arg("a\x01=/x"),
            Err(ChannelsError::MapChannel { .. })
        ));
        assert!(matches!(
            parse_map_arg("docs="),
            Err(ChannelsError::MapEmptyPath { .. })
        ));
    }

    #[test]
    fn from_args_checks_folders() {
        let dir = std::env::temp_dir();
        let ok = format!("t={}", dir.display());
        let map = ChannelMap::from_args(&[ok.clone(), ok, format!("u={}", dir.display())]).unwrap();
        assert_eq!(map.paths("t").len(), 1);
        assert_eq!(map.len(), 2);
        assert!(map.paths("nope").is_empty());
        let missing = ChannelMap::from_args(&["t=/nonexistent/vfnotify-x".into()]).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/vfnotify-x"),
            "{missing}"
        );
        let file = ChannelMap::from_args(&["t=/proc/self/status".into()]).unwrap_err();
        assert!(matches!(file, ChannelsError::NotADirectory { .. }));
    }

    #[test]
    fn folders_are_kept_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let map = ChannelMap::from_args(&[format!("t={}/link/./", dir.path().display())]).unwrap();
        assert_eq!(map.paths("t"), [real.canonicalize().unwrap()]);
        assert!(map.maps_path(&real.canonicalize().unwrap()));
    }
}
