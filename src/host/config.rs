//! The host configuration file, in the format of the tool vfnotify replaces (virtiofs-gate):
//!
//! ```json
//! {
//!   "documents": {
//!     "basePath": "/var/lib/virtiofs/documents",
//!     "notify": { "guests": [10, 11], "port": 3401 }
//!   }
//! }
//! ```
//!
//! Every top-level key is a channel. Keys vfnotify does not use are ignored (the real file
//! carries more: scanning and export settings); a missing or malformed field is an error that
//! names it (`documents.notify.guests[1]`). `port` defaults to 3401. As an extension a guest may
//! also be given as an address string (`"unix:/run/vm1/notify.sock"`, `"vsock:3:3401"`,
//! `"hvsock:/run/vm1/vsock.sock:3401"`), as `--to` takes.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ConfigError;
use crate::transport::{ConnectAddr, parse_connect};

/// One channel as the file describes it (paths not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChannel {
    pub name: String,
    pub base: PathBuf,
    pub guests: Vec<ConnectAddr>,
}

/// Read and parse the file at `path`.
pub fn load(path: &Path) -> Result<Vec<FileChannel>, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ConfigError::Field { field, detail, .. } => ConfigError::Field {
            file: Some(path.to_path_buf()),
            field,
            detail,
        },
        ConfigError::Json { source, .. } => ConfigError::Json {
            file: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

fn field_err(field: impl Into<String>, detail: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        file: None,
        field: field.into(),
        detail: detail.into(),
    }
}

/// One typed field of `obj` (`None` when absent).
fn get<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<T>, ConfigError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| field_err(format!("{at}.{key}"), e.to_string())),
    }
}

fn required<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<T, ConfigError> {
    get(obj, key, at)?.ok_or_else(|| field_err(format!("{at}.{key}"), "missing"))
}

/// Parse the file's bytes.
pub fn parse(text: &[u8]) -> Result<Vec<FileChannel>, ConfigError> {
    let root: Value = serde_json::from_slice(text).map_err(|source| ConfigError::Json {
        file: PathBuf::new(),
        source,
    })?;
    let Value::Object(channels) = root else {
        return Err(field_err(
            "(top level)",
            "expected an object of channels ({\"NAME\": {\"basePath\": ..., \"notify\": ...}})",
        ));
    };
    let mut out = Vec::new();
    for (name, v) in &channels {
        let Value::Object(ch) = v else {
            return Err(field_err(name.clone(), "expected an object"));
        };
        let base: PathBuf = required(ch, "basePath", name)?;
        let notify: Map<String, Value> = required(ch, "notify", name)?;
        let at = format!("{name}.notify");
        let port: u32 = get(&notify, "port", &at)?.unwrap_or(crate::transport::DEFAULT_PORT);
        let guests: Vec<Value> = required(&notify, "guests", &at)?;
        let mut addrs = Vec::new();
        for (i, g) in guests.iter().enumerate() {
            let here = format!("{at}.guests[{i}]");
            let addr = match g {
                Value::Number(n) => {
                    let cid = n
                        .as_u64()
                        .and_then(|c| u32::try_from(c).ok())
                        .ok_or_else(|| field_err(&here, format!("{n} is not a vsock CID")))?;
                    ConnectAddr::Vsock { cid, port }
                }
                Value::String(s) => {
                    parse_connect(s).map_err(|e| field_err(&here, e.to_string()))?
                }
                other => {
                    return Err(field_err(
                        &here,
                        format!("expected a CID number or an address string, got {other}"),
                    ));
                }
            };
            addrs.push(addr);
        }
        out.push(FileChannel {
            name: name.clone(),
            base,
            guests: addrs,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_format_with_extra_keys() {
        let got = parse(
            br#"{
              "documents": {
                "basePath": "/var/lib/virtiofs/documents",
                "debounceMs": 1000,
                "scan": {"enabled": true},
                "notify": {"guests": [10, 11], "port": 3401, "extra": null}
              },
              "media": {"basePath": "/srv/m", "notify": {"guests": ["unix:/run/g.sock", 12]}}
            }"#,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                FileChannel {
                    name: "documents".into(),
                    base: "/var/lib/virtiofs/documents".into(),
                    guests: vec![
                        ConnectAddr::Vsock {
                            cid: 10,
                            port: 3401
                        },
                        ConnectAddr::Vsock {
                            cid: 11,
                            port: 3401
                        }
                    ],
                },
                FileChannel {
                    name: "media".into(),
                    base: "/srv/m".into(),
                    guests: vec![
                        ConnectAddr::Unix("/run/g.sock".into()),
                        ConnectAddr::Vsock {
                            cid: 12,
                            port: 3401
                        }
                    ],
                }
            ]
        );
    }

    #[test]
    fn bad_fields_are_named() {
        assert!(err("{").contains("not valid JSON"), "{}", err("{"));
        assert!(err("[1]").contains("(top level)"));
        assert!(err(r#"{"d": 3}"#).contains("d: expected an object"));
        assert!(err(r#"{"d": {"notify": {"guests": []}}}"#).contains("d.basePath: missing"));
        assert!(err(r#"{"d": {"basePath": "/x"}}"#).contains("d.notify: missing"));
        assert!(err(r#"{"d": {"basePath": 7, "notify": {"guests": []}}}"#).contains("d.basePath:"));
        assert!(
            err(r#"{"d": {"basePath": "/x", "notify": {"port": 1}}}"#)
                .contains("d.notify.guests: missing")
        );
        assert!(
            err(r#"{"d": {"basePath": "/x", "notify": {"guests": [3], "port": "x"}}}"#)
                .contains("d.notify.port:")
        );
        let e = err(r#"{"d": {"basePath": "/x", "notify": {"guests": [3, -1]}}}"#);
        assert!(e.contains("d.notify.guests[1]"), "{e}");
        let e = err(r#"{"d": {"basePath": "/x", "notify": {"guests": [true]}}}"#);
        assert!(e.contains("d.notify.guests[0]"), "{e}");
        let e = err(r#"{"d": {"basePath": "/x", "notify": {"guests": ["tcp:1"]}}}"#);
        assert!(e.contains("d.notify.guests[0]"), "{e}");
    }
}
