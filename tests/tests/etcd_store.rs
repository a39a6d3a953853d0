//! hyperd on etcd (`--store etcd://`, issue 18's first brick): a real etcd (Debian's
//! etcd-server) on loopback, started here and stopped after the daemon; containers run, the
//! state lives in etcd and survives a hyperd restart, and an etcd outage is a clear error that
//! ends when etcd is back, without restarting hyperd.

use std::sync::{Mutex, OnceLock};

use e2e::*;
use store::etcd_server::EtcdServer;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[("hyperd_runs_on_etcd", hyperd_runs_on_etcd)];
    std::process::exit(run_tests(tests));
}

/// The test's etcd, stopped at teardown once the daemon (which needs it to remove its
/// containers) is gone.
fn etcd() -> &'static Mutex<Option<EtcdServer>> {
    static E: OnceLock<Mutex<Option<EtcdServer>>> = OnceLock::new();
    E.get_or_init(|| {
        // Fails loudly, with how to install it, on a machine without etcd.
        let server = EtcdServer::start();
        at_teardown(|| drop(etcd().lock().unwrap().take()));
        Mutex::new(Some(server))
    })
}

fn endpoint() -> String {
    etcd().lock().unwrap().as_ref().unwrap().endpoint()
}

fn hyperd_runs_on_etcd() {
    let url = format!("etcd://{}/hyper", endpoint());
    let d = Daemon::start(
        "etcd",
        DaemonOpts {
            extra_args: vec!["--store".into(), url.clone()],
            ..Default::default()
        },
    );
    assert!(
        d.log_tail(200).contains(&format!("state store: {url}")),
        "{}",
        d.log_tail(40)
    );
    assert!(
        !d.data.join("store.redb").exists(),
        "the state went to etcd, not to the embedded store"
    );

    let o = d
        .hyper(&["run", "--rm", "busybox", "echo", "hi"])
        .timeout(180.0)
        .run()
        .ok();
    assert_eq!(o.out(), "hi");

    // State in etcd outlives hyperd: a running container, the image, the default tenant.
    let id = d
        .hyper(&["run", "-d", "--name", "kept", "busybox", "sleep", "600"])
        .timeout(180.0)
        .run()
        .ok()
        .out();
    d.restart();
    let ps = d
        .hyper(&["ps", "--format", "{{.Names}} {{.Status}}"])
        .run()
        .ok()
        .out();
    assert!(
        ps.lines()
            .any(|l| l.starts_with("kept ") && l.contains("Up")),
        "{ps}"
    );
    assert_eq!(d.inspect("kept")["Id"], id.as_str());
    let o = d
        .hyper(&["exec", "kept", "echo", "adopted"])
        .timeout(60.0)
        .run()
        .ok();
    assert_eq!(o.out(), "adopted");
    let images = d
        .hyper(&["images", "--format", "{{.Repository}}"])
        .run()
        .ok()
        .out();
    assert!(images.lines().any(|l| l == "busybox"), "{images}");

    // etcd down: requests that need the store fail, saying so, instead of hanging.
    etcd().lock().unwrap().as_mut().unwrap().kill();
    // Whatever happens below, the daemon's teardown needs etcd back.
    struct Revive;
    impl Drop for Revive {
        fn drop(&mut self) {
            if let Some(e) = etcd().lock().unwrap().as_mut() {
                if !e.is_running() {
                    e.restart();
                }
            }
        }
    }
    let _revive = Revive;
    // (`ps` answers from hyperd's memory; creating a volume counts it against the quota in
    // the store.)
    let o = d.hyper(&["volume", "create", "v1"]).timeout(60.0).run();
    assert_ne!(o.code, 0, "{o}");
    assert!(o.stderr.contains("etcd"), "the error names etcd: {o}");
    // Back: the same hyperd serves again.
    etcd().lock().unwrap().as_mut().unwrap().restart();
    wait_for("hyperd to reach etcd again", secs(60.0), || {
        let o = d.hyper(&["volume", "create", "v1"]).run();
        (o.code == 0).then_some(()).ok_or(o.to_string())
    });
    let volumes = d.hyper(&["volume", "ls", "-q"]).run().ok().out();
    assert_eq!(volumes, "v1");
    d.hyper(&["rm", "-f", "kept"]).timeout(60.0).run().ok();
    d.hyper(&["volume", "rm", "v1"]).run().ok();
}
