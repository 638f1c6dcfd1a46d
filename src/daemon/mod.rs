//! The guest daemon.

/// `vfnotify [daemon]`.
pub fn main(args: crate::cli::DaemonArgs) -> u8 {
    let _ = args;
    crate::cli::EXIT_FAILURE
}

/// `vfnotify send`.
pub fn send_main(args: crate::cli::SendArgs) -> u8 {
    let _ = args;
    crate::cli::EXIT_FAILURE
}
