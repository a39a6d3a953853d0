//! The node's protection from tenant links (issue 17, finding 3): a guard table hyperd never
//! re-renders keeps containers off the node's own addresses even while hyperd's own tables are
//! gone, and a reconciler puts back whatever of the installed state drifts from the store.
//! Everything happens in the daemon's node namespace and its tenant namespace; hyperd is
//! frozen (SIGSTOP) while things are broken by hand, so that its reconciler cannot repair them
//! before the test has looked.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use e2e::*;

/// How often the firewall daemon compares the kernel with its store.
const RECONCILE_SECS: &str = "2";
/// An address of the node's own (as its LAN address would be), on the node namespace's loopback.
const NODE_ADDRESS: &str = "192.0.2.10";

fn daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        let d = Daemon::start(
            "fw",
            DaemonOpts {
                extra_args: vec![
                    "--net-reconcile-interval".into(),
                    RECONCILE_SECS.into(),
                    "--fip-pool".into(),
                    "198.51.100.0/29".into(),
                ],
                ..DaemonOpts::default()
            },
        );
        d.node
            .ip(&["addr", "add", &format!("{NODE_ADDRESS}/32"), "dev", "lo"]);
        d
    })
}

/// The daemon to one test at a time: each freezes it and breaks its network.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `PROGRAM ARGS` inside the network namespace at `ns`.
fn in_ns(ns: &Path, program: &str, args: &[&str]) -> Out {
    let net = format!("--net={}", ns.display());
    let mut a = vec![net.as_str(), program];
    a.extend_from_slice(args);
    Cmd::new("nsenter", &a).run()
}

fn tables(ns: &Path) -> String {
    in_ns(ns, "nft", &["list", "tables"]).ok().stdout
}

/// The default tenant's namespace (the only tenant of this daemon, so the first link).
fn tenant_ns(d: &Daemon) -> PathBuf {
    d.data.join("net/t0/netns")
}

/// What a new container on the default network gets from `http://NAME/hostname`: the name
/// resolved by the tenant's DNS, the container's answer.
fn hostname_by_name(d: &Daemon, name: &str) -> String {
    let url = format!("http://{name}/hostname");
    d.hyper(&["run", "--rm", "busybox", "wget", "-qO-", &url])
        .timeout(120.0)
        .run()
        .ok()
        .out()
}

/// hyperd stopped (SIGSTOP) until dropped, also when the test fails.
struct Frozen(i32);

impl Frozen {
    fn new(d: &Daemon) -> Frozen {
        let pid = d.pid().expect("hyperd runs") as i32;
        // SAFETY: plain kill(2) on the hyperd this test binary started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A service on every address of the node (its transit ends and [`NODE_ADDRESS`] included),
/// counting the connections it takes.
struct NodeService {
    listener: TcpListener,
    accepted: usize,
}

impl NodeService {
    fn start(d: &Daemon) -> NodeService {
        let listener = d.node.run(|| TcpListener::bind("0.0.0.0:0").unwrap());
        listener.set_nonblocking(true).unwrap();
        NodeService {
            listener,
            accepted: 0,
        }
    }
    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }
    /// Connections taken so far (each closed at once).
    fn accepted(&mut self) -> usize {
        while let Ok((stream, peer)) = self.listener.accept() {
            eprintln!("the node service accepted a connection from {peer}");
            drop(stream);
            self.accepted += 1;
        }
        self.accepted
    }
}

/// A container trying the node service again and again, a line in its log per try.
struct Prober {
    id: String,
    log: PathBuf,
}

impl Prober {
    fn start(d: &Daemon, port: u16) -> Prober {
        let script = format!(
            "while true; do timeout 1 nc {NODE_ADDRESS} {port} </dev/null; echo try; sleep 0.2; done"
        );
        let id = d
            .hyper(&["run", "-d", "busybox", "sh", "-c", &script])
            .timeout(120.0)
            .run()
            .ok()
            .out();
        // Read from the shim's file: it grows while hyperd is frozen too.
        let log = d.cdir(&id).join("ctr.log");
        Prober { id, log }
    }

    fn tries(&self) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.matches("try").count()
    }

    /// Waits for two more tries than now: the second of them started after this call did.
    fn two_more_tries(&self) {
        let now = self.tries();
        wait_for("the prober to try twice more", secs(60.0), || {
            let n = self.tries();
            if n >= now + 2 {
                Ok(())
            } else {
                Err(format!("{n} tries"))
            }
        });
    }
}

fn wait_for_log(d: &Daemon, needle: &str) {
    wait_for(&format!("hyperd to log {needle:?}"), secs(60.0), || {
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        if log.contains(needle) {
            Ok(())
        } else {
            Err(d.log_tail(5))
        }
    });
}

/// With hyperd's node table deleted by hand, a container still cannot reach a service on the
/// node's own addresses: the guard holds (and without it too the node would be open, so the
/// probe does probe). Once hyperd runs again, its reconciler puts both tables back and says so.
pub fn guard_outlives_hyperds_tables() {
    let _alone = exclusive();
    let d = daemon();
    let node = d.node.path();
    let mut service = NodeService::start(d);
    let prober = Prober::start(d, service.port());
    prober.two_more_tries();
    assert_eq!(
        service.accepted(),
        0,
        "a container reached the node with every table in place"
    );
    // hyperd's own table is there too (the first tenant link of a fresh hyperd, with no port
    // published, once rendered the same as the removal before it, and was never applied).
    assert!(
        tables(&node).contains("table inet hyper\n"),
        "{}",
        tables(&node)
    );
    let guard = in_ns(&node, "nft", &["list", "table", "inet", "hyper-guard"]).ok();
    assert!(
        guard.stdout.contains("iifname \"hv-*\" drop"),
        "the guard has no drop rule: {guard}"
    );

    let frozen = Frozen::new(d);
    in_ns(&node, "nft", &["delete", "table", "inet", "hyper"]).ok();
    prober.two_more_tries();
    assert!(!tables(&node).contains("table inet hyper\n"));
    assert_eq!(
        service.accepted(),
        0,
        "a container reached the node while hyperd's table was gone"
    );
    in_ns(&node, "nft", &["delete", "table", "inet", "hyper-guard"]).ok();
    wait_for(
        "the container to reach the node with the guard gone too",
        secs(60.0),
        || match service.accepted() {
            0 => Err("no connection".to_string()),
            _ => Ok(()),
        },
    );
    drop(frozen);

    wait_for("the node's tables to be back", secs(60.0), || {
        let now = tables(&node);
        if now.contains("table inet hyper\n") && now.contains("table inet hyper-guard\n") {
            Ok(())
        } else {
            Err(now)
        }
    });
    wait_for_log(
        d,
        "network drift in the node's guard: nftables table inet hyper-guard is missing",
    );
    wait_for_log(
        d,
        "network drift in the node: nftables table inet hyper is missing",
    );
    let before = service.accepted();
    prober.two_more_tries();
    assert_eq!(
        service.accepted(),
        before,
        "the node is open after the repair"
    );
    d.hyper(&["rm", "-f", &prober.id]).timeout(60.0).run().ok();
}

/// Links, addresses, routes and the tenant's tables removed by hand come back: the published
/// port answers again, and the log names each repair.
pub fn drifted_links_are_repaired() {
    let _alone = exclusive();
    let d = daemon();
    let (node, tenant) = (d.node.path(), tenant_ns(d));
    let id = d
        .hyper(&[
            "run", "-d", "--name", "drifty", "-p", "18095:80", "busybox", "httpd", "-f", "-p",
            "80", "-h", "/etc",
        ])
        .timeout(120.0)
        .run()
        .ok()
        .out();
    let fip = d.hyper(&["fip", "allocate", "1"]).run().ok().out();
    d.hyper(&["fip", "attach", &fip, &id]).run().ok();
    let answers = || {
        wait_for("the published port to answer", secs(60.0), || {
            d.node.run(|| http_get("127.0.0.1:18095", "/hostname"))
        })
    };
    assert_eq!(answers().trim(), &id[..12]);
    let tap = format!("tap{}", &id[..12]);
    let fip_route = || {
        in_ns(&node, "ip", &["route", "show", "proto", "213"])
            .ok()
            .stdout
    };
    assert!(fip_route().contains(&fip), "{}", fip_route());

    {
        let _frozen = Frozen::new(d);
        in_ns(
            &node,
            "ip",
            &["route", "del", &format!("{fip}/32"), "proto", "213"],
        )
        .ok();
        in_ns(&node, "ip", &["link", "set", "hv-0", "down"]).ok();
        in_ns(
            &tenant,
            "ip",
            &["addr", "del", "172.16.0.1/16", "dev", "br0"],
        )
        .ok();
        in_ns(&tenant, "ip", &["link", "set", &tap, "nomaster"]).ok();
        in_ns(&tenant, "ip", &["route", "del", "default"]).ok();
        in_ns(&tenant, "nft", &["delete", "table", "bridge", "hyper"]).ok();
        assert!(
            d.node
                .run(|| http_get("127.0.0.1:18095", "/hostname"))
                .is_err(),
            "the published port answered with its path broken"
        );
    }
    assert_eq!(answers().trim(), &id[..12]);
    wait_for("the FIP route to be back", secs(60.0), || {
        let routes = fip_route();
        if routes.contains(&fip) {
            Ok(())
        } else {
            Err(routes)
        }
    });
    assert!(tables(&tenant).contains("table bridge hyper\n"));
    for drift in [
        "link hv-0 is down".to_string(),
        "br0 lacks address 172.16.0.1/16".to_string(),
        format!("{tap} is not a port of br0"),
        "route default via 100.127.0.0 dev up0 is missing".to_string(),
        "nftables table bridge hyper is missing".to_string(),
        format!("route {fip} via 100.127.0.1 dev hv-0 is missing"),
    ] {
        wait_for_log(d, &drift);
    }

    // The whole transit link (its tenant end goes with it), with hyperd running.
    in_ns(&node, "ip", &["link", "del", "hv-0"]).ok();
    assert_eq!(answers().trim(), &id[..12]);
    wait_for_log(d, "(t0): link hv-0 is missing");

    // The tenant's DNS server killed, with nothing changed in the store: the reconciler starts
    // it again and names resolve.
    let pidfile = d.data.join("net/t0/dns.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: plain kill(2) of the tenant's hyper-dns, read from hyperd's pidfile.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // Whichever pass finds it gone says so: the one repairing the link above may be it.
    wait_for_log(
        d,
        &format!(
            "the dns server in {} (pid {pid}) is not running; starting it",
            d.data.join("net/t0").display()
        ),
    );
    assert_eq!(hostname_by_name(d, "drifty"), &id[..12]);
    d.hyper(&["rm", "-f", &id]).timeout(60.0).run().ok();
    d.hyper(&["fip", "release", &fip]).run().ok();
}

/// A clean stop leaves the tenant's namespace up, idle or not, and hands what it was built
/// from to the next hyperd: after the restart the same DNS server serves (nothing was built
/// again), what was changed by hand meanwhile is repaired by the reconciler, and the network
/// works.
pub fn idle_network_outlives_hyperd() {
    let _x = exclusive();
    let d = daemon();
    let serve = ["busybox", "httpd", "-f", "-p", "80", "-h", "/etc"];
    let run = |name: &str| {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(&serve);
        d.hyper(&args).timeout(120.0).run().ok().out()
    };
    let id = run("idle1");
    d.hyper(&["rm", "-f", &id]).timeout(60.0).run().ok();
    let ns = tenant_ns(d);
    let dns_pid = || std::fs::read_to_string(d.data.join("net/t0/dns.pid")).unwrap_or_default();
    let before = dns_pid();
    assert!(!before.is_empty(), "no DNS server for the tenant");
    d.terminate();
    let handover = d.data.join("net/t0/applied.json");
    assert!(handover.exists(), "hyperd handed nothing over");
    in_ns(&ns, "nft", &["delete", "table", "inet", "hyper"]).ok();
    d.start_again();
    assert!(
        !handover.exists(),
        "the next hyperd did not take the handover"
    );
    assert_eq!(dns_pid(), before, "the tenant's namespace was built again");
    wait_for("the table deleted meanwhile to be back", secs(30.0), || {
        let t = tables(&ns);
        if t.contains("table inet hyper") {
            Ok(())
        } else {
            Err(t)
        }
    });
    let id = run("idle2");
    assert_eq!(hostname_by_name(d, "idle2"), &id[..12]);
    d.hyper(&["rm", "-f", &id]).timeout(60.0).run().ok();
}
