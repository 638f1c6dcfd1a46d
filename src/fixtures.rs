//! The fixture trees under `fuse-fixtures/`, made real in a scratch folder.
//!
//! git stores no hard links, empty folders or large generated files, so `fuse-fixtures/tree` holds
//! the plain files and `fuse-fixtures/MANIFEST` lists the rest; [`materialize`] copies the tree and
//! applies the manifest. Tests and the demo use it.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// Failures while making the fixture tree.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("fixture folder not found (looked in {0}); set VFNOTIFY_FIXTURES")]
    Locate(PathBuf),
    #[error("copying {path}: {source}")]
    Copy { path: PathBuf, source: io::Error },
    #[error("reading the manifest {path}: {source}")]
    ReadManifest { path: PathBuf, source: io::Error },
    #[error("manifest line {line}: {reason}")]
    Manifest { line: usize, reason: String },
    #[error("applying manifest line {line} ({path}): {source}")]
    Apply {
        line: usize,
        path: PathBuf,
        source: io::Error,
    },
}

/// Where the fixtures live: `$VFNOTIFY_FIXTURES`, else the source checkout's `fuse-fixtures/`.
pub fn locate() -> Result<PathBuf, FixtureError> {
    let dir = std::env::var_os("VFNOTIFY_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fuse-fixtures"));
    if dir.join("tree").is_dir() {
        Ok(dir)
    } else {
        Err(FixtureError::Locate(dir))
    }
}

/// Copy the fixture tree into `dest` (which must exist) and apply the manifest.
pub fn materialize(dest: &Path) -> Result<(), FixtureError> {
    let dir = locate()?;
    copy_tree(&dir.join("tree"), dest)?;
    let manifest = dir.join("MANIFEST");
    let text = fs::read_to_string(&manifest).map_err(|source| FixtureError::ReadManifest {
        path: manifest.clone(),
        source,
    })?;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = raw.split_whitespace().collect();
        let [kind, path, arg] = fields[..] else {
            return Err(FixtureError::Manifest {
                line,
                reason: "expected: kind path argument".into(),
            });
        };
        let target = dest.join(path);
        let apply = |r: io::Result<()>| {
            r.map_err(|source| FixtureError::Apply {
                line,
                path: target.clone(),
                source,
            })
        };
        match kind {
            "symlink" => apply(symlink(arg, &target))?,
            "hardlink" => apply(fs::hard_link(dest.join(arg), &target))?,
            "emptydir" => apply(fs::create_dir_all(&target))?,
            "bigfile" => {
                let size: usize = arg.parse().map_err(|_| FixtureError::Manifest {
                    line,
                    reason: format!("bad size {arg}"),
                })?;
                let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                apply(fs::write(&target, data))?
            }
            other => {
                return Err(FixtureError::Manifest {
                    line,
                    reason: format!("unknown kind {other}"),
                });
            }
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), FixtureError> {
    let wrap = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FixtureError::Copy { path, source }
    };
    for entry in fs::read_dir(from).map_err(wrap(from))? {
        let entry = entry.map_err(wrap(from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if entry.file_type().map_err(wrap(&src))?.is_dir() {
            fs::create_dir(&dst).map_err(wrap(&dst))?;
            copy_tree(&src, &dst)?;
        } else {
            fs::copy(&src, &dst).map_err(wrap(&src))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn materialize_builds_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        materialize(dir.path()).unwrap();
        let p = dir.path();
        assert!(p.join("with space/a file.txt").is_file());
        assert!(p.join("ünïcødé-dir/файл-🙂.txt").is_file());
        assert_eq!(
            fs::read_link(p.join("link-to-hello")).unwrap(),
            Path::new("hello.txt")
        );
        let a = fs::metadata(p.join("hello.txt")).unwrap();
        let b = fs::metadata(p.join("hello-hardlink.txt")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(fs::read_dir(p.join("empty-dir")).unwrap().count(), 0);
        assert_eq!(fs::metadata(p.join("big.bin")).unwrap().len(), 1 << 20);
    }
}
