//! The `hyper` binary: all the work is in the `cli` library.
fn main() {
    std::process::exit(cli::main());
}
