//! `cargo run -p vm --example mkinitrd -- AGENT MODULES_DIR OUT`
fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    vm::build_initramfs(a[0].as_ref(), a[1].as_ref(), a[2].as_ref()).expect("initramfs");
}
