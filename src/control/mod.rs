//! The local control socket.

/// `vfnotify notify`.
pub fn notify_main(args: crate::cli::NotifyArgs) -> u8 {
    let _ = args;
    crate::cli::EXIT_FAILURE
}

/// `vfnotify status`.
pub fn status_main(args: crate::cli::StatusArgs) -> u8 {
    let _ = args;
    crate::cli::EXIT_FAILURE
}

/// `vfnotify watch`.
pub fn watch_main(args: crate::cli::WatchArgs) -> u8 {
    let _ = args;
    crate::cli::EXIT_FAILURE
}
