//! The `vfnotify` binary (also installed as `mount.fuse.vfnotify`): parse → validate → run.
fn main() -> std::process::ExitCode {
    vfnotify::cli::main()
}
