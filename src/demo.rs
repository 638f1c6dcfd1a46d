//! TODO
/// `vfnotify demo`.
pub fn main(args: crate::cli::DemoArgs) -> u8 {
    let _ = args;
    eprintln!("vfnotify demo: not built yet");
    crate::cli::EXIT_FAILURE
}
