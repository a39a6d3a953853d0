//! `hyper-shim --dir DIR`: see `docs/internals.md`.
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(name = "hyper-shim", about = "Supervisor of one Hyper microVM")]
struct Args {
    /// Container directory holding spec.json.
    #[arg(long)]
    dir: PathBuf,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = shim::daemon::main(&args.dir) {
        eprintln!("hyper-shim: {e:#}");
        std::process::exit(1);
    }
}
