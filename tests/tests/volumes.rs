//! Volumes end to end (issue 14): data that outlives containers and hyperd, snapshots, the
//! Docker and Hyper volume APIs and CLIs, docker-compose with a named volume, and the refusals.
//! Real VMs: a volume is a further disk of the container's VM, mounted by the guest agent.

use std::os::unix::process::CommandExt;
use std::sync::{Arc, OnceLock};

use e2e::*;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        ("rbd_volumes", rbd_volumes),
        ("volumes_outlive_hyperd", volumes_outlive_hyperd),
        ("data_outlives_containers", data_outlives_containers),
        ("snapshots", snapshots),
        ("compose_named_volume", compose_named_volume),
        ("volume_api_and_refusals", volume_api_and_refusals),
        ("tenants_and_usage", tenants_and_usage),
        ("volumes_from_sources", volumes_from_sources),
    ];
    std::process::exit(run_tests(tests));
}

fn daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        Daemon::start(
            "v",
            DaemonOpts {
                // The git server of `volumes_from_sources` listens on loopback, which tenant
                // input may reach only when the operator allows it.
                extra_args: vec!["--allow-fetch".into(), "127.0.0.1/32".into()],
                ..DaemonOpts::default()
            },
        )
    })
}

/// `hyper run --rm -v SPEC busybox sh -c SCRIPT`, its stdout.
fn run_with(d: &Daemon, volume: &str, script: &str) -> String {
    d.hyper(&["run", "--rm", "-v", volume, "busybox", "sh", "-c", script])
        .timeout(120.0)
        .run()
        .ok()
        .stdout
}

/// The names `hyper volume ls -q` lists.
fn volume_names(d: &Daemon) -> String {
    d.hyper(&["volume", "ls", "-q"]).run().ok().stdout
}

/// `hyper volume create --name NAME EXTRA...`.
fn create_volume(d: &Daemon, name: &str, extra: &[&str]) {
    let mut args = vec!["volume", "create", "--name", name];
    args.extend_from_slice(extra);
    assert_eq!(d.hyper(&args).run().ok().out(), name);
}

fn create_volume_as(d: &Daemon, tenant: &std::path::Path, name: &str) {
    let o = d
        .hyper_tcp(tenant, &["volume", "create", "--name", name])
        .run()
        .ok();
    assert_eq!(o.out(), name);
}

/// Data written in one container is read in the next; the image's files are copied into an
/// empty volume mounted over them; `:ro` is read-only; a volume is one running container's at
/// a time; anonymous volumes go with `rm -v`; and a start with a volume claims a standby VM.
fn data_outlives_containers() {
    let d = daemon();
    // Named on first use, as Docker does.
    let out = run_with(d, "notes:/data", "echo kept > /data/f; sync; cat /data/f");
    assert_eq!(out.trim(), "kept");
    assert_eq!(run_with(d, "notes:/data", "cat /data/f").trim(), "kept");
    let ls = volume_names(d);
    assert!(ls.lines().any(|l| l == "notes"), "{ls}");

    // An empty volume over an image directory gets its files once: what the container leaves
    // there (here, after removing everything, lost+found included) is what the next one sees.
    let out = run_with(
        d,
        "etccopy:/etc",
        "cat /etc/passwd | head -1; ls /etc | wc -l",
    );
    assert!(out.starts_with("root:"), "{out}");
    let out = run_with(
        d,
        "etccopy:/etc",
        "rm -rf /etc/*; echo mine > /etc/only; sync",
    );
    assert_eq!(out, "");
    assert_eq!(run_with(d, "etccopy:/etc", "ls /etc").trim(), "only");
    // nocopy: not copied.
    let out = run_with(d, "nocopy:/etc:nocopy", "ls /etc");
    assert_eq!(out.trim(), "lost+found");

    // --mount, read-only; and Hyper's label that turns anonymous volumes off.
    let out = d
        .hyper(&[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=notes,target=/m,readonly",
            "busybox",
            "sh",
            "-c",
            "cat /m/f; touch /m/x 2>&1 | grep -c Read-only",
        ])
        .run()
        .ok()
        .stdout;
    assert_eq!(out, "kept\n1\n");
    let id = d
        .hyper(&[
            "create",
            "-v",
            "/nothing",
            "--label",
            "sh_hyper_noauto_volume=true",
            "busybox",
            "true",
        ])
        .run()
        .ok()
        .out();
    assert_eq!(d.inspect(&id)["Mounts"], serde_json::json!([]));
    d.hyper(&["rm", &id]).run().ok();

    // Read-only.
    let o = d
        .hyper(&[
            "run",
            "--rm",
            "-v",
            "notes:/data:ro",
            "busybox",
            "sh",
            "-c",
            "echo x > /data/g",
        ])
        .run();
    assert_ne!(o.code, 0, "{o}");
    assert!(o.stderr.contains("Read-only file system"), "{o}");

    // One running container at a time; the volume can't be removed while it is used.
    let holder = start_holder_on_a_standby(d);
    let o = d
        .hyper(&["run", "--rm", "-v", "notes:/data", "busybox", "true"])
        .run();
    assert_eq!(o.code, 125, "{o}");
    assert!(
        o.stderr.contains("in use by container") && o.stderr.contains(&holder[..12]),
        "{o}"
    );
    let o = d.hyper(&["volume", "rm", "notes"]).run();
    assert_ne!(o.code, 0, "{o}");
    assert!(o.stderr.contains("in use"), "{o}");
    let inspect = d.inspect("holder");
    assert_eq!(inspect["Mounts"][0]["Name"], "notes", "{inspect}");
    assert_eq!(inspect["Mounts"][0]["Destination"], "/data");
    let ls = d.hyper(&["volume", "ls"]).run().ok().stdout;
    let row = ls
        .lines()
        .find(|l| l.contains("notes"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains(&holder[..12]) && row.contains("10 GB"), "{ls}");
    // --volumes-from a running container is refused the same way.
    let o = d
        .hyper(&["create", "--volumes-from", "holder", "busybox", "true"])
        .run();
    assert_ne!(o.code, 0, "{o}");
    assert!(o.stderr.contains("in use"), "{o}");
    d.hyper(&["rm", "-f", "holder"]).run().ok();
    // Stopped, it frees the volume for --volumes-from.
    d.hyper(&[
        "run",
        "--name",
        "src",
        "-v",
        "notes:/data",
        "busybox",
        "true",
    ])
    .run()
    .ok();
    let out = d
        .hyper(&[
            "run",
            "--rm",
            "--volumes-from",
            "src:ro",
            "busybox",
            "cat",
            "/data/f",
        ])
        .run()
        .ok()
        .stdout;
    assert_eq!(out.trim(), "kept");
    d.hyper(&["rm", "src"]).run().ok();

    // Anonymous volumes: `-v /path` makes one, `rm -v` removes it; --rm too.
    let anon = d
        .hyper(&[
            "run",
            "-d",
            "-v",
            "/scratch",
            "busybox",
            "sh",
            "-c",
            "echo a > /scratch/a",
        ])
        .run()
        .ok()
        .out();
    d.wait_status(&anon, "exited", 60.0);
    let name = d.inspect(&anon)["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(name.len(), 64, "{name}");
    assert!(volume_names(d).contains(&name));
    d.hyper(&["rm", "-v", &anon]).run().ok();
    assert!(!volume_names(d).contains(&name));
    let gone = d
        .hyper(&[
            "run", "-d", "--rm", "-v", "/tmpvol", "busybox", "sleep", "2",
        ])
        .run()
        .ok()
        .out();
    let name = d.inspect(&gone)["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(
        "the --rm container and its anonymous volume to go",
        secs(60.0),
        || {
            let ls = volume_names(d);
            if ls.contains(&name) {
                Err(ls)
            } else {
                Ok(())
            }
        },
    );

    // Discard reaches the host: what the guest deletes and trims, the volume's file gives back.
    let used = |d: &Daemon| -> u64 {
        let o = d.api("GET", "/v1.44/system/df", &[]);
        let df: serde_json::Value = serde_json::from_str(o.stdout.lines().next().unwrap()).unwrap();
        df["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["Name"] == "notes")
            .map(|v| v["UsageData"]["Size"].as_u64().unwrap())
            .unwrap()
    };
    let base = used(d);
    run_with(
        d,
        "notes:/d",
        "dd if=/dev/urandom of=/d/big bs=1M count=64 2>/dev/null; sync",
    );
    let full = used(d);
    assert!(full > base + (60 << 20), "64 MiB written: {base} -> {full}");
    run_with(d, "notes:/d", "rm /d/big; sync; fstrim /d");
    let trimmed = used(d);
    assert!(
        trimmed < base + (8 << 20),
        "trimmed: {base} -> {full} -> {trimmed}"
    );
    let df = d.docker(&["system", "df"]).run().ok().stdout;
    assert!(df.contains("Local Volumes"), "{df}");

    // An image's VOLUMEs are anonymous volumes (none with Hyper's noauto label).
    let tar = short_tmp("imgvol").with_extension("tar");
    Cmd::new(
        workspace_root().join("scripts/make-busybox-image"),
        &[tar.to_str().unwrap(), "busybox-vol:1"],
    )
    .env("IMAGE_VOLUMES", "/data")
    .run()
    .ok();
    d.hyper(&["load", "-i", tar.to_str().unwrap()]).run().ok();
    let _ = std::fs::remove_file(&tar);
    let id = d
        .hyper(&[
            "run",
            "-d",
            "busybox-vol:1",
            "sh",
            "-c",
            "echo x > /data/y; sync",
        ])
        .run()
        .ok()
        .out();
    d.wait_status(&id, "exited", 60.0);
    let m = &d.inspect(&id)["Mounts"];
    assert_eq!(m[0]["Destination"], "/data", "{m}");
    let name = m[0]["Name"].as_str().unwrap().to_string();
    d.hyper(&["rm", "-v", &id]).run().ok();
    assert!(!volume_names(d).contains(&name));
    let id = d
        .hyper(&[
            "create",
            "--label",
            "sh_hyper_noauto_volume=true",
            "busybox-vol:1",
            "true",
        ])
        .run()
        .ok()
        .out();
    assert_eq!(d.inspect(&id)["Mounts"], serde_json::json!([]));
    d.hyper(&["rm", &id]).run().ok();
    d.hyper(&["rmi", "busybox-vol:1"]).run().ok();

    for v in ["notes", "etccopy", "nocopy"] {
        d.hyper(&["volume", "rm", v]).run().ok();
    }
}

/// Starts `holder` with volume `notes` on a standby VM (under templates), asserting that it
/// claimed one: volumes keep starts on the fast path.
fn start_holder_on_a_standby(d: &Daemon) -> String {
    let args = [
        "--name",
        "holder",
        "-v",
        "notes:/data",
        "busybox",
        "sleep",
        "600",
    ];
    d.run_on_the_default_path(&args).0
}

/// Written and synced data survives a `kill -9` of hyperd, and the loss of every process of
/// the node (hyperd, shims, QEMUs); a container running through the first keeps its volume.
fn volumes_outlive_hyperd() {
    let dd = Daemon::start("vk", DaemonOpts::default());
    survives_hyperd_and_node_loss(&dd, "db");
    dd.stop();
}

/// The body of [`volumes_outlive_hyperd`] for volume `volume` of `d`'s default driver.
fn survives_hyperd_and_node_loss(d: &Daemon, volume: &str) {
    let spec = format!("{volume}:/db");
    let id = d
        .hyper(&[
            "run",
            "-d",
            "-v",
            &spec,
            "busybox",
            "sh",
            "-c",
            "echo one > /db/a; sync; echo written; sleep 600",
        ])
        .run()
        .ok()
        .out();
    wait_for("the write", secs(60.0), || {
        let o = d.hyper(&["logs", &id]).run();
        if o.stdout.contains("written") {
            Ok(())
        } else {
            Err(o.to_string())
        }
    });
    d.restart();
    // Still held by the running container after hyperd came back.
    let o = d
        .hyper(&["run", "--rm", "-v", &spec, "busybox", "true"])
        .run();
    assert!(o.stderr.contains("in use"), "{o}");
    d.hyper(&["exec", &id, "sh", "-c", "echo two >> /db/a; sync"])
        .run()
        .ok();
    // Every process of the node goes at once.
    d.kill9();
    for p in container_processes(d, &id) {
        let pid: i32 = p.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: kill(2) of a process of this test's own VM.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_for("the VM to die", secs(20.0), || {
        let p = container_processes(d, &id);
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
    d.restart();
    d.wait_status(&id, "exited", 60.0);
    assert_eq!(run_with(d, &spec, "cat /db/a").trim(), "one\ntwo");
    d.hyper(&["rm", "-f", &id]).run().ok();
    d.hyper(&["volume", "rm", volume]).run().ok();
}

/// Ceph RBD volumes (a real cluster: 1 mon, 1 mgr, 3 OSDs): data outlives containers, hyperd
/// and the node's processes; snapshots and volumes from them; a start claims a standby VM; and
/// writes with fsync go on while an OSD is killed, every block intact once it is back.
fn rbd_volumes() {
    let ceph = Ceph::get();
    let dd = Daemon::start(
        "vr",
        DaemonOpts {
            extra_args: vec![
                "--ceph-conf".into(),
                ceph.conf().to_string_lossy().into_owned(),
                "--volume-driver".into(),
                "rbd".into(),
            ],
            ..DaemonOpts::default()
        },
    );
    let d: &Daemon = &dd;
    // The default driver is rbd; `local` stays selectable.
    assert_eq!(
        run_with(d, "rb:/d", "echo hi > /d/f; sync; cat /d/f"),
        "hi\n"
    );
    let v = d.hyper(&["volume", "inspect", "rb"]).run().ok().json();
    assert_eq!(v[0]["Driver"], "rbd", "{v}");
    // Docker's --volume-driver picks the driver of the volumes a create makes.
    let id = d
        .docker(&[
            "create",
            "--volume-driver",
            "local",
            "-v",
            "bydriver:/d",
            "busybox",
            "true",
        ])
        .run()
        .ok()
        .out();
    assert_eq!(
        d.hyper(&["volume", "inspect", "bydriver"])
            .run()
            .ok()
            .json()[0]["Driver"],
        "local"
    );
    d.hyper(&["rm", "-v", &id]).run().ok();
    d.hyper(&["volume", "rm", "bydriver"]).run().ok();
    let o = d
        .docker(&[
            "create",
            "--volume-driver",
            "nfs",
            "-v",
            "nfsvol:/d",
            "busybox",
            "true",
        ])
        .run();
    assert!(o.code != 0 && o.stderr.contains("the drivers are"), "{o}");
    let images = ceph.rbd(&["ls", "rbd"]).ok().stdout;
    assert_eq!(
        images.lines().filter(|l| l.starts_with("vol-")).count(),
        1,
        "{images}"
    );
    assert_eq!(run_with(d, "rb:/d", "cat /d/f"), "hi\n");
    d.hyper(&["volume", "create", "--name", "loc", "-d", "local"])
        .run()
        .ok();
    assert_eq!(
        d.hyper(&["volume", "inspect", "loc"]).run().ok().json()[0]["Driver"],
        "local"
    );

    // Snapshots are RBD's, and a volume from one is an image of its own.
    d.hyper(&["snapshot", "create", "-v", "rb", "--name", "rs"])
        .run()
        .ok();
    run_with(d, "rb:/d", "echo changed > /d/f; sync");
    d.hyper(&["volume", "create", "--name", "rb2", "--snapshot", "rs"])
        .run()
        .ok();
    assert_eq!(run_with(d, "rb2:/d", "cat /d/f"), "hi\n");
    d.hyper(&["snapshot", "rm", "rs"]).run().ok();
    assert_eq!(
        run_with(d, "rb2:/d", "cat /d/f"),
        "hi\n",
        "a volume outlives its snapshot"
    );

    // A start with an rbd volume claims a standby VM.
    if std::env::var("HYPERD_TEMPLATES").as_deref() != Ok("off") {
        let (id, log) = d.run_on_the_default_path(&["-v", "rb2:/d", "busybox", "sleep", "600"]);
        assert!(log.contains(STANDBY_CLAIMED), "{log}");
        d.hyper(&["rm", "-f", &id]).run().ok();
    }

    // An OSD dies under writes that fsync: they go on (size 3, min_size 2), and every block
    // checks out once it is back.
    let writer = d
        .hyper(&[
            "run",
            "-d",
            "-v",
            "rb:/d",
            "busybox",
            "sh",
            "-c",
            "rm -f /d/blk* /d/sums; i=0; while [ $i -lt 400 ]; do \
             dd if=/dev/urandom of=/d/blk$i bs=64k count=1 conv=fsync 2>/dev/null; \
             md5sum /d/blk$i >> /d/sums; sync; i=$((i+1)); done; echo done",
        ])
        .run()
        .ok()
        .out();
    let written = |d: &Daemon| -> usize {
        let o = d
            .hyper(&["exec", &writer, "sh", "-c", "wc -l < /d/sums"])
            .run();
        o.stdout.trim().parse().unwrap_or(0)
    };
    wait_for("the writer to start", secs(60.0), || {
        if written(d) > 5 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    ceph.script("kill-osd", &["1"]);
    let at_kill = written(d);
    wait_for("writes to go on with an OSD down", secs(60.0), || {
        let n = written(d);
        if n >= at_kill + 20 {
            Ok(())
        } else {
            Err(format!("{n} blocks, {at_kill} at the kill"))
        }
    });
    ceph.script("start-osd", &["1"]);
    wait_for("the writer to finish", secs(300.0), || {
        let o = d.hyper(&["logs", &writer]).run();
        if o.stdout.contains("done") {
            Ok(())
        } else {
            Err(format!("{} blocks", written(d)))
        }
    });
    d.hyper(&["rm", "-f", &writer]).run().ok();
    let check = run_with(
        d,
        "rb:/d",
        "cd /; md5sum -c /d/sums | grep -vc ': OK$'; wc -l < /d/sums",
    );
    assert_eq!(check, "0\n400\n", "every block checks out");

    survives_hyperd_and_node_loss(d, "rbdb");
    for v in ["rb", "rb2", "loc"] {
        d.hyper(&["volume", "rm", v]).run().ok();
    }
    let images = ceph.rbd(&["ls", "rbd"]).ok().stdout;
    assert_eq!(
        images.trim(),
        "",
        "every image went with its volume: {images}"
    );
    d.stop();
}

/// A snapshot keeps the content it had; a volume from it has that content; a snapshot of a
/// volume in use needs --force, and taken under a writer gives a clean file system holding a
/// prefix of the writer's records.
fn snapshots() {
    let d = daemon();
    create_volume(d, "snapsrc", &["--size", "10"]);
    run_with(d, "snapsrc:/d", "echo before > /d/f; sync");
    let snap = d
        .hyper(&["snapshot", "create", "-v", "snapsrc", "--name", "s1"])
        .run()
        .ok()
        .out();
    assert_eq!(snap, "s1");
    run_with(d, "snapsrc:/d", "echo after > /d/f; sync");
    let ls = d.hyper(&["snapshot", "ls"]).run().ok().stdout;
    assert!(ls.contains("s1") && ls.contains("snapsrc"), "{ls}");
    let info = d.hyper(&["snapshot", "inspect", "s1"]).run().ok().json();
    assert_eq!(info[0]["Volume"], "snapsrc", "{info}");
    assert_eq!(info[0]["Size"], 10, "{info}");
    d.hyper(&["volume", "create", "--name", "fromsnap", "--snapshot", "s1"])
        .run()
        .ok();
    let v = d
        .hyper(&["volume", "inspect", "fromsnap"])
        .run()
        .ok()
        .json();
    assert_eq!(v[0]["Options"]["snapshot"], "s1", "{v}");
    assert_eq!(run_with(d, "fromsnap:/d", "cat /d/f").trim(), "before");
    assert_eq!(run_with(d, "snapsrc:/d", "cat /d/f").trim(), "after");
    // A bigger volume from it: the file system grows to the disk.
    d.hyper(&[
        "volume",
        "create",
        "--name",
        "bigger",
        "--snapshot",
        "s1",
        "--size",
        "20",
    ])
    .run()
    .ok();
    let out = run_with(d, "bigger:/d", "cat /d/f; df -k /d | tail -1");
    assert!(out.starts_with("before"), "{out}");
    let blocks: u64 = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(blocks > 15 * 1024 * 1024, "{out}");
    let o = d
        .hyper(&[
            "volume",
            "create",
            "--name",
            "smaller",
            "--snapshot",
            "s1",
            "--size",
            "5",
        ])
        .run();
    assert_ne!(o.code, 0, "{o}");

    // Under a writer: refused without --force, consistent with it.
    let w = d
        .hyper(&[
            "run",
            "-d",
            "-v",
            "snapsrc:/d",
            "busybox",
            "sh",
            "-c",
            "i=0; while :; do echo rec$i >> /d/log; i=$((i+1)); done",
        ])
        .run()
        .ok()
        .out();
    wait_for("the writer to write", secs(60.0), || {
        let o = d.hyper(&["exec", &w, "sh", "-c", "wc -l < /d/log"]).run();
        match o.stdout.trim().parse::<u64>() {
            Ok(n) if n > 100 => Ok(()),
            _ => Err(o.to_string()),
        }
    });
    let o = d
        .hyper(&["snapshot", "create", "-v", "snapsrc", "--name", "live"])
        .run();
    assert_ne!(o.code, 0, "{o}");
    assert!(
        o.stderr.contains("in use") && o.stderr.contains("--force"),
        "{o}"
    );
    d.hyper(&[
        "snapshot", "create", "-v", "snapsrc", "--name", "live", "--force",
    ])
    .timeout(120.0)
    .run()
    .ok();
    // The writer carried on after the thaw.
    let n1: u64 = d
        .hyper(&["exec", &w, "sh", "-c", "wc -l < /d/log"])
        .run()
        .ok()
        .out()
        .parse()
        .unwrap();
    std::thread::sleep(secs(1.0));
    let n2: u64 = d
        .hyper(&["exec", &w, "sh", "-c", "wc -l < /d/log"])
        .run()
        .ok()
        .out()
        .parse()
        .unwrap();
    assert!(
        n2 > n1,
        "the writer stopped after the snapshot: {n1} then {n2}"
    );
    d.hyper(&["rm", "-f", &w]).run().ok();
    let live = d.hyper(&["snapshot", "inspect", "live"]).run().ok().json();
    let file = d
        .data
        .join("volumes/snapshots")
        .join(format!("{}.img", live[0]["ID"].as_str().unwrap()));
    let fsck = Cmd::new("e2fsck", &["-fn", file.to_str().unwrap()]).run();
    assert_eq!(fsck.code, 0, "e2fsck of the snapshot: {fsck}");
    d.hyper(&[
        "volume",
        "create",
        "--name",
        "fromlive",
        "--snapshot",
        "live",
    ])
    .run()
    .ok();
    let log = run_with(d, "fromlive:/d", "cat /d/log");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 100, "{} records", lines.len());
    for (i, l) in lines.iter().enumerate() {
        // Every record whole and in order: a prefix of what the writer wrote (the last one may
        // be cut only if the fs kept a partial write, which a frozen fs does not).
        assert_eq!(*l, format!("rec{i}"), "record {i} of {}", lines.len());
    }

    for s in ["s1", "live"] {
        d.hyper(&["snapshot", "rm", s]).run().ok();
    }
    assert!(!d
        .hyper(&["snapshot", "ls", "-q"])
        .run()
        .ok()
        .stdout
        .contains("live"));
    assert!(!file.exists(), "the snapshot's blocks went with it");
    for v in ["snapsrc", "fromsnap", "bigger", "fromlive"] {
        d.hyper(&["volume", "rm", v]).run().ok();
    }
}

/// docker-compose (Debian's v1) with a named volume: the data is there after `down` and `up`;
/// `down -v` removes the volume.
fn compose_named_volume() {
    let d = daemon();
    let dir = short_tmp("cv");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        "version: \"3\"\nservices:\n  app:\n    image: busybox\n    command: sh -c \"date >> /data/boots; sync; sleep 1000\"\n    volumes:\n      - webdata:/data\nvolumes:\n  webdata: {}\n",
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let mut a = vec![
            "--project-directory",
            dir.to_str().unwrap(),
            "-p",
            "vp",
            "-f",
            file.to_str().unwrap(),
        ];
        a.extend_from_slice(args);
        Cmd::new("docker-compose", &a)
            .env("DOCKER_HOST", d.unix_host())
            .timeout(180.0)
            .run()
    };
    compose(&["up", "-d"]).ok();
    let boots = |n: usize| {
        wait_for(&format!("{n} boots in the volume"), secs(60.0), || {
            let o = d.hyper(&["exec", "vp_app_1", "cat", "/data/boots"]).run();
            if o.stdout.lines().count() == n {
                Ok(())
            } else {
                Err(o.to_string())
            }
        })
    };
    boots(1);
    compose(&["down"]).ok();
    assert!(d
        .docker(&["volume", "ls", "-q"])
        .run()
        .ok()
        .stdout
        .contains("vp_webdata"));
    compose(&["up", "-d"]).ok();
    boots(2);
    compose(&["down", "-v"]).ok();
    assert!(!d
        .docker(&["volume", "ls", "-q"])
        .run()
        .ok()
        .stdout
        .contains("vp_webdata"));
    let _ = std::fs::remove_dir_all(dir);
}

/// The Docker CLI's volume commands, Hyper's table, and bad input with its status.
fn volume_api_and_refusals() {
    let d = daemon();
    // The stock Docker CLI.
    assert_eq!(d.docker(&["volume", "create", "dk"]).run().ok().out(), "dk");
    assert_eq!(
        d.docker(&["volume", "create", "--label", "tier=db", "dk2"])
            .run()
            .ok()
            .out(),
        "dk2"
    );
    let ls = d
        .docker(&[
            "volume",
            "ls",
            "--filter",
            "label=tier=db",
            "--format",
            "{{.Name}} {{.Driver}}",
        ])
        .run()
        .ok()
        .out();
    assert_eq!(ls, "dk2 local");
    let v = d.docker(&["volume", "inspect", "dk"]).run().ok().json();
    assert_eq!(v[0]["Name"], "dk");
    assert_eq!(v[0]["Driver"], "local");
    // Idempotent create.
    assert_eq!(d.docker(&["volume", "create", "dk"]).run().ok().out(), "dk");
    // Dangling: no container uses them.
    let dangling = d
        .docker(&["volume", "ls", "-q", "--filter", "dangling=true"])
        .run()
        .ok()
        .stdout;
    assert!(
        dangling.contains("dk") && dangling.contains("dk2"),
        "{dangling}"
    );
    assert_eq!(
        d.docker(&["volume", "rm", "dk", "dk2"])
            .run()
            .ok()
            .stdout
            .lines()
            .count(),
        2
    );
    let o = d.docker(&["volume", "inspect", "dk"]).run();
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("No such volume: dk"), "{o}");

    // Hyper's CLI: size, table with SIZE and CONTAINER.
    create_volume(d, "sized", &["--size", "20"]);
    let table = d.hyper(&["volume", "ls"]).run().ok().stdout;
    let row = table
        .lines()
        .find(|l| l.contains("sized"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("20 GB"), "{table}");
    // The container sees a file system of 20 GB.
    let df = run_with(d, "sized:/s", "df -k /s | tail -1");
    let kb: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(kb > 19 * 1024 * 1024 && kb <= 20 * 1024 * 1024, "{df}");

    // Refusals, each with its reason.
    let refused: &[(&[&str], &str)] = &[
        (
            &["volume", "create", "-d", "nfs", "x1"],
            "the drivers are: hyper, local",
        ),
        (
            &["volume", "create", "--size", "51", "x2"],
            "out of range: 10 to 50 GB",
        ),
        (&["volume", "create", "--size", "9", "x3"], "out of range"),
        (
            &["volume", "create", "--size", "ten", "x4"],
            "invalid volume size",
        ),
        (
            &["volume", "create", "-o", "type=nfs", "x5"],
            "unknown volume option",
        ),
        (
            &["volume", "create", "--snapshot", "nope", "x6"],
            "No such snapshot: nope",
        ),
        (&["volume", "create", "/bad"], "invalid volume name"),
        (
            &[
                "run", "--rm", "-v", "a1:/a", "-v", "a2:/b", "-v", "a3:/c", "-v", "a4:/d", "-v",
                "a5:/e", "busybox", "true",
            ],
            "at most 4 volumes",
        ),
        (
            &[
                "run", "--rm", "-v", "a1:/a", "-v", "a2:/a", "busybox", "true",
            ],
            "Duplicate mount point",
        ),
        (
            &["run", "--rm", "-v", "a1:/", "busybox", "true"],
            "cannot replace the container's root",
        ),
    ];
    for (i, (args, why)) in refused.iter().enumerate() {
        let o = d.hyper(args).run();
        assert_ne!(o.code, 0, "test[{i}] {args:?}: {o}");
        assert!(o.stderr.contains(why), "test[{i}] {args:?}: {o}");
    }
    // The stock CLI sends a host path as a bind: refused (hyper's CLI uploads it instead).
    let o = d
        .docker(&["run", "--rm", "-v", "/etc:/host", "busybox", "true"])
        .run();
    assert_ne!(o.code, 0, "{o}");
    assert!(
        o.stderr.contains("host bind mounts are not supported"),
        "{o}"
    );
    // Nothing was left by the refused creates and runs.
    let left = volume_names(d);
    for n in ["x1", "x2", "a1", "a2"] {
        assert!(!left.lines().any(|l| l == n), "{n} left behind: {left}");
    }
    // The HTTP statuses.
    let status = |method: &str, path: &str, body: &str| {
        let json = ["-H", "Content-Type: application/json", "-d", body];
        let extra: &[&str] = if body.is_empty() { &[] } else { &json };
        let o = d.api(method, &format!("/v1.44{path}"), extra);
        o.stdout.rsplit('\n').next().unwrap_or("").to_string()
    };
    assert_eq!(
        status("POST", "/volumes/create", r#"{"Name":"x","Driver":"nfs"}"#),
        "400"
    );
    assert_eq!(
        status(
            "POST",
            "/volumes/create",
            r#"{"Name":"x","DriverOpts":{"size":"100"}}"#
        ),
        "400"
    );
    assert_eq!(status("GET", "/volumes/nosuch", ""), "404");
    assert_eq!(status("DELETE", "/volumes/nosuch", ""), "404");
    assert_eq!(status("GET", "/snapshots/nosuch", ""), "404");
    d.hyper(&["volume", "rm", "sized"]).run().ok();
}

/// Another tenant sees none of a tenant's volumes or snapshots; volumes and snapshots are
/// billed on `hyper usage`.
fn tenants_and_usage() {
    let d = daemon();
    let (bob, _) = d.new_tenant("bobv");
    create_volume(d, "private", &[]);
    d.hyper(&["snapshot", "create", "-v", "private", "--name", "psnap"])
        .run()
        .ok();
    let bob_ls = d.hyper_tcp(&bob, &["volume", "ls", "-q"]).run().ok().stdout;
    assert!(!bob_ls.contains("private"), "{bob_ls}");
    for args in [
        &["volume", "inspect", "private"][..],
        &["volume", "rm", "private"],
        &["snapshot", "inspect", "psnap"],
        &["snapshot", "rm", "psnap"],
        &["volume", "create", "--name", "mine", "--snapshot", "psnap"],
    ] {
        let o = d.hyper_tcp(&bob, args).run();
        assert_ne!(o.code, 0, "{args:?}: {o}");
        assert!(o.stderr.contains("No such"), "{args:?}: {o}");
    }
    // Bob's own volume of that name is his, not Alice's.
    create_volume_as(d, &bob, "private");
    // Quotas: counted in the same transaction as the record.
    let q = d.tenant_admin(&["quota", "bobv", "--volumes", "2", "--volume-gb", "25"]);
    assert!(q.stdout.contains("2 volumes, 25 GB of volumes"), "{q}");
    let o = d
        .hyper_tcp(&bob, &["volume", "create", "--name", "big", "--size", "20"])
        .run();
    assert!(
        o.code != 0 && o.stderr.contains("quota exceeded") && o.stderr.contains("GB of volumes"),
        "{o}"
    );
    create_volume_as(d, &bob, "second");
    let o = d
        .hyper_tcp(&bob, &["volume", "create", "--name", "third"])
        .run();
    assert!(o.code != 0 && o.stderr.contains("at most 2 volumes"), "{o}");
    d.hyper_tcp(&bob, &["volume", "rm", "second"]).run().ok();
    assert_eq!(
        d.hyper(&["volume", "ls", "-q"])
            .run()
            .ok()
            .stdout
            .matches("private")
            .count(),
        1
    );
    let usage = d.hyper(&["usage"]).run().ok().stdout;
    assert!(
        usage.contains("volume") && usage.contains("private"),
        "{usage}"
    );
    assert!(
        usage.contains("snapshot") && usage.contains("psnap"),
        "{usage}"
    );
    d.hyper(&["snapshot", "rm", "psnap"]).run().ok();
    d.hyper(&["volume", "rm", "private"]).run().ok();
    d.hyper_tcp(&bob, &["volume", "rm", "private"]).run().ok();
}

/// A git repository served by `git daemon` on a loopback port, killed on drop.
struct GitServer {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl GitServer {
    fn start() -> GitServer {
        let dir = short_tmp("git");
        let repo = dir.join("site.git");
        std::fs::create_dir_all(&repo).unwrap();
        let git = |args: &[&str]| {
            Cmd::new("git", &[&["-C", repo.to_str().unwrap()][..], args].concat())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", dir.to_str().unwrap())
                .run()
                .ok()
        };
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README"), "from git\n").unwrap();
        std::fs::create_dir_all(repo.join("src")).unwrap();
        std::fs::write(repo.join("src/main.c"), "int main(){}\n").unwrap();
        git(&["add", "."]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "one",
        ]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group: `git daemon` runs `git-daemon` as a child, which a kill of
        // `git` alone would leave behind.
        let child = std::process::Command::new("git")
            .process_group(0)
            .args([
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.display()))
            .arg(&dir)
            .spawn()
            .unwrap();
        wait_for("git daemon to listen", secs(20.0), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())
        });
        GitServer { child, port, dir }
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group this server leads.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Volumes filled at creation: from a local directory the CLI uploads (`run -v DIR:/p`, whose
/// volume goes with its container; `volume init`), from a git repository on loopback (allowed
/// by the operator's `--allow-fetch`); and what is refused: a git URL that fails, an address the
/// operator did not allow, a source bigger than the volume, a volume in use.
fn volumes_from_sources() {
    let d = daemon();
    let site = short_tmp("site");
    std::fs::create_dir_all(site.join("img")).unwrap();
    std::fs::write(site.join("index.html"), "hello site\n").unwrap();
    std::fs::write(site.join("img/logo.txt"), "logo\n").unwrap();
    std::os::unix::fs::symlink("index.html", site.join("home.html")).unwrap();
    // Volumes made for a container's source carry `autoremove=true`: none is left after.
    let autoremove = || {
        d.hyper(&["volume", "ls", "-q", "--filter", "label=autoremove=true"])
            .run()
            .ok()
            .stdout
    };
    let spec = format!("{}:/www", site.display());
    let out = run_with(
        d,
        &spec,
        "cat /www/index.html /www/img/logo.txt; readlink /www/home.html",
    );
    assert_eq!(out, "hello site\nlogo\nindex.html\n");
    assert_eq!(
        autoremove(),
        "",
        "the uploaded volume went with its --rm container"
    );

    // `volume init` into a volume of one's own, from a directory and from git.
    create_volume(d, "www", &[]);
    d.hyper(&["volume", "init", &format!("{}:www", site.display())])
        .timeout(120.0)
        .run()
        .ok();
    assert_eq!(run_with(d, "www:/w", "cat /w/index.html"), "hello site\n");
    let git = GitServer::start();
    create_volume(d, "code", &[]);
    d.hyper(&["volume", "init", &format!("{}:code", git.url("site.git"))])
        .timeout(180.0)
        .run()
        .ok();
    let out = run_with(
        d,
        "code:/src",
        "cat /src/README /src/src/main.c; ls -a /src",
    );
    assert!(out.starts_with("from git\nint main(){}\n"), "{out}");
    assert!(
        !out.contains(".git"),
        "the clone's .git stays out of the volume: {out}"
    );

    // `run -v URL:/path`: a volume of its own, gone with the --rm container.
    let spec = format!("{}:/src", git.url("site.git"));
    assert_eq!(run_with(d, &spec, "cat /src/README"), "from git\n");
    assert_eq!(
        autoremove(),
        "",
        "the cloned volume went with its --rm container"
    );

    // Refused, and the volume keeps its content.
    let refused: &[(String, &str)] = &[
        (format!("{}:code", git.url("nosuch.git")), "nosuch"),
        ("git://192.0.2.1/x.git:code".to_string(), "--allow-fetch"),
        ("ftp://127.0.0.1/x:code".to_string(), ""),
    ];
    for (i, (arg, why)) in refused.iter().enumerate() {
        let o = d.hyper(&["volume", "init", arg]).timeout(120.0).run();
        assert_ne!(o.code, 0, "test[{i}] {arg}: {o}");
        assert!(o.stderr.contains(why), "test[{i}] {arg}: {o}");
    }
    assert!(run_with(d, "code:/src", "cat /src/README").starts_with("from git"));
    // A volume in use is not re-initialised under its container.
    let holder = d
        .hyper(&["run", "-d", "-v", "www:/w", "busybox", "sleep", "600"])
        .run()
        .ok()
        .out();
    let o = d
        .hyper(&["volume", "init", &format!("{}:www", site.display())])
        .run();
    assert!(o.stderr.contains("in use"), "{o}");
    d.hyper(&["rm", "-f", &holder]).run().ok();

    // A source bigger than the volume: a tar whose entry claims 11 GB, posted straight to
    // the upload session (hyperd must not trust a tenant's sizes).
    let init = d.api(
        "POST",
        "/v1.23/volumes/initialize",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"Reload":false,"Volume":[{"Name":"www","Source":"/from/client"}]}"#,
        ],
    );
    let init: serde_json::Value =
        serde_json::from_str(init.stdout.lines().next().unwrap()).unwrap();
    let session = init["Session"].as_str().unwrap().to_string();
    let url = init["Uploaders"]["www"].as_str().unwrap().to_string();
    let path = &url[url.find("/volumes/").unwrap()..];
    let tar = site.join("big.tar");
    std::fs::write(&tar, huge_tar_header(11 << 30)).unwrap();
    let cookie = init["Cookie"].as_str().unwrap();
    let data = format!("@{}", tar.display());
    let up = d.api(
        "POST",
        &format!("{path}?cookie={cookie}"),
        &[
            "-H",
            "Content-Type: application/x-tar",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(up.stdout, "\n200", "{up}");
    let finish = d.api(
        "PUT",
        &format!("/v1.23/volumes/uploadfinish?session={session}"),
        &[],
    );
    assert!(finish.stdout.ends_with("400"), "{finish}");
    assert!(finish.stdout.contains("more than the volume"), "{finish}");
    assert_eq!(run_with(d, "www:/w", "cat /w/index.html"), "hello site\n");

    for v in ["www", "code"] {
        d.hyper(&["volume", "rm", v]).run().ok();
    }
    let _ = std::fs::remove_dir_all(&site);
}

/// A ustar header for one regular file of `size` bytes, and no content: what a hostile client
/// can send in 512 bytes.
fn huge_tar_header(size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..8].copy_from_slice(b"big.bin\0");
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    // Past 8 GiB the size field is GNU's base-256: a high bit, then the size big-endian.
    h[124] = 0x80;
    h[128..136].copy_from_slice(&size.to_be_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}
