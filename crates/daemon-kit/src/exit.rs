//! The process's exit status and, on failure, why.

use std::process::ExitCode;

/// 0, or 1 with the reason on stderr: once `logging::init` ran that is the `--log` file, where
/// hyperd looks when a `--daemon` launcher exits 1.
pub fn exit_code(program: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{program}: {err:#}");
            ExitCode::FAILURE
        }
    }
}
