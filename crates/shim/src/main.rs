//! `hyper-shim --dir DIR`: see `docs/internals.md`.
//! `hyper-shim --build-template SPEC.json`: make sure the VM template for that spec's
//! (QEMU, kernel, initramfs, command line, size) exists under its `template_dir`, building it
//! if needed, and print its directory (hyperd runs this ahead of time).
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(name = "hyper-shim", about = "Supervisor of one Hyper microVM")]
struct Args {
    /// Container directory holding spec.json.
    #[arg(long, required_unless_present = "build_template")]
    dir: Option<PathBuf>,
    /// Build the VM template for this spec (its `template_dir` must be set) and exit.
    #[arg(long, conflicts_with = "dir")]
    build_template: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let res = match (&args.dir, &args.build_template) {
        (Some(dir), _) => shim::daemon::main(dir),
        (None, Some(spec)) => build_template(spec),
        (None, None) => unreachable!("clap requires one"),
    };
    if let Err(e) = res {
        eprintln!("hyper-shim: {e:#}");
        std::process::exit(1);
    }
}

fn build_template(spec_path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let spec: shim::Spec = serde_json::from_slice(
        &std::fs::read(spec_path).with_context(|| format!("reading {}", spec_path.display()))?,
    )
    .with_context(|| format!("parsing {}", spec_path.display()))?;
    let dir = spec
        .template_dir
        .clone()
        .context("the spec has no template_dir")?;
    shim::template::kill_build_vm_on_signals();
    let t = shim::template::ensure(&spec, &dir, true)?;
    println!("{}", t.dir.display());
    Ok(())
}
