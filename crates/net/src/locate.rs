//! Where Hyper's own helper programs are found: hyperd checks for them at start and runs them,
//! and this crate runs `hyper-nft`.

use std::path::PathBuf;

/// Where `scripts/setup` installs the helpers that are not commands of their own.
const LIB_DIR: &str = "/usr/local/lib/hyper";

/// `name` next to the running program (hyperd in cargo's target dir or /usr/local/bin), one
/// directory up (a test binary in target/*/deps), or in /usr/local/lib/hyper.
pub fn our_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        Some(dir.join(name)),
        dir.parent().map(|d| d.join(name)),
        Some(PathBuf::from(LIB_DIR).join(name)),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
}
