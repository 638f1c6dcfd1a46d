//! systemd `Type=notify` readiness, without libsystemd: one datagram to `$NOTIFY_SOCKET`.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`. Returns `Ok(false)` when the variable is
/// unset. Abstract socket names start with `@`.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    send_to(&target, state)?;
    Ok(true)
}

/// Send `state` to the notify socket named `target` (a path, or `@name` for an abstract one).
pub fn send_to(target: &OsStr, state: &str) -> io::Result<()> {
    let bytes = target.as_bytes();
    let sock = UnixDatagram::unbound()?;
    match bytes.split_first() {
        Some((b'@', name)) => {
            let addr = SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some((b'/', _)) => {
            sock.send_to(state.as_bytes(), target)?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET must be an absolute path or start with @",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_and_path_sockets() {
        let name = format!("vfnotify-ut-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(send_to(OsStr::new("relative"), "READY=1").is_err());
    }
}
