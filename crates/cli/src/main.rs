fn main() {
    // Like any Unix filter (`hyper ps | head`), die quietly when the reader goes away instead
    // of panicking on a closed pipe.
    // SAFETY: resetting a signal disposition to its default before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::process::exit(cli::main());
}
