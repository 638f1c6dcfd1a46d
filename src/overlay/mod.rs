//! The passthrough FUSE overlay.

/// `vfnotify mount`.
pub fn main(args: crate::cli::MountArgs) -> u8 {
    let _ = args;
    crate::cli::EXIT_FAILURE
}
