//! `docker cp` end to end (issue 15): `GET`/`PUT`/`HEAD /containers/{id}/archive` through
//! the guest agent, with the stock Docker CLI, `hyper cp` and curl; on running containers (a
//! volume included) and on stopped ones (served by a short-lived helper VM that must not be
//! left behind); ownership and modes kept; `..` and symlinks kept inside the container's root;
//! 404s for missing paths and for another tenant's container; a big file with its checksum;
//! `commit` of a running and of a stopped container, and `import` of an export, run as images
//! of their own.

use std::path::{Path, PathBuf};

use e2e::*;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        ("cp_running_both_ways", cp_running_both_ways),
        (
            "cp_paths_stay_inside_the_container",
            cp_paths_stay_inside_the_container,
        ),
        ("cp_refusals_and_tenants", cp_refusals_and_tenants),
        ("cp_stopped_container", cp_stopped_container),
        ("cp_big_file_round_trip", cp_big_file_round_trip),
        ("export_running_and_stopped", export_running_and_stopped),
        ("diff_running_and_stopped", diff_running_and_stopped),
        ("start_waits_for_a_copy", start_waits_for_a_copy),
        ("commit_running_and_stopped", commit_running_and_stopped),
        ("import_an_export", import_an_export),
    ];
    std::process::exit(run_tests(tests));
}

/// A scratch directory on the host for one test.
fn scratch(d: &Daemon, tag: &str) -> PathBuf {
    let p = d.data.join(format!("cp-{tag}"));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `sh -c SCRIPT` with the stock docker CLI pointed at the daemon (for pipes and redirects).
fn docker_sh(d: &Daemon, script: &str) -> Out {
    Cmd::new("sh", &["-c", script])
        .env("DOCKER_HOST", d.unix_host())
        .env("DOCKER_CONFIG", d.data.join("docker-config"))
        .timeout(300.0)
        .run()
}

fn exec(d: &Daemon, c: &str, script: &str) -> String {
    d.hyper(&["exec", c, "sh", "-c", script]).run().ok().out()
}

/// `uid/gid mode-string` of each entry of a tar file, by name (GNU tar's verbose listing).
fn tar_listing(tar: &Path) -> String {
    Cmd::new("tar", &["--numeric-owner", "-tvf", tar.to_str().unwrap()])
        .run()
        .ok()
        .stdout
}

/// The decoded `X-Docker-Container-Path-Stat` of a HEAD, and the status line.
fn head_stat(d: &Daemon, c: &str, path: &str) -> (u32, serde_json::Value) {
    let o = d.api(
        "HEAD",
        &format!("/v1.44/containers/{c}/archive?path={path}"),
        &["-I"],
    );
    let status: u32 = o.stdout.lines().last().unwrap().trim().parse().unwrap();
    let header = o
        .stdout
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-docker-container-path-stat")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let json = if header.is_empty() {
        serde_json::Value::Null
    } else {
        let decoded = Cmd::new("base64", &["-d"])
            .stdin(header.as_bytes())
            .run()
            .ok()
            .stdout;
        serde_json::from_str(&decoded).unwrap_or_else(|e| panic!("{e}: {decoded}"))
    };
    (status, json)
}

/// Out of and into a running container, with the Docker CLI and `hyper cp`: contents, modes
/// and numeric owners kept both ways; HEAD's stat; a copy into a volume's path lands on the
/// volume the container sees.
fn cp_running_both_ways() {
    let d = main_daemon();
    let dir = scratch(d, "run");
    d.hyper(&[
        "run",
        "-d",
        "--name",
        "cprun",
        "-v",
        "cpvol:/data",
        "busybox",
        "sleep",
        "3600",
    ])
    .timeout(120.0)
    .run()
    .ok();
    exec(
        d,
        "cprun",
        "mkdir -p /srv/tree/sub && echo hello > /srv/f && chown 1234:5678 /srv/f && chmod 640 /srv/f \
         && echo deep > /srv/tree/sub/g && ln -s sub/g /srv/tree/link",
    );

    // Out: the file and a tree, with the Docker CLI.
    d.docker(&["cp", "cprun:/srv/f", dir.to_str().unwrap()])
        .run()
        .ok();
    assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "hello\n");
    d.docker(&["cp", "cprun:/srv/tree", dir.join("t").to_str().unwrap()])
        .run()
        .ok();
    assert_eq!(
        std::fs::read_to_string(dir.join("t/sub/g")).unwrap(),
        "deep\n"
    );
    assert_eq!(
        std::fs::read_link(dir.join("t/link")).unwrap(),
        PathBuf::from("sub/g")
    );
    // The raw archive keeps the numeric owner and the mode.
    let tar = dir.join("f.tar");
    docker_sh(d, &format!("docker cp cprun:/srv/f - > {}", tar.display())).ok();
    let listing = tar_listing(&tar);
    assert!(
        listing.contains("-rw-r----- 1234/5678") && listing.contains(" f\n"),
        "{listing}"
    );

    // HEAD: Docker's stat header.
    let (status, stat) = head_stat(d, "cprun", "/srv/f");
    assert_eq!(status, 200);
    assert_eq!(stat["name"], "f");
    assert_eq!(stat["size"], 6);
    assert_eq!(stat["mode"], 0o640);
    let (_, stat) = head_stat(d, "cprun", "/srv/tree");
    assert_eq!(
        stat["mode"].as_u64().unwrap() >> 31,
        1,
        "a directory: {stat}"
    );
    let (_, stat) = head_stat(d, "cprun", "/srv/tree/link");
    assert_eq!(stat["linkTarget"], "/srv/tree/sub/g", "{stat}");

    // In: a tar on stdin, owners and modes from the tar.
    let src = dir.join("in");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/x"), "from the host\n").unwrap();
    let tar_in = dir.join("in.tar");
    Cmd::new(
        "tar",
        &[
            "--owner=4321",
            "--group=8765",
            "--mode=u=rw,g=r,o=",
            "-cf",
            tar_in.to_str().unwrap(),
            "-C",
            src.to_str().unwrap(),
            "d",
        ],
    )
    .run()
    .ok();
    let bytes = std::fs::read(&tar_in).unwrap();
    d.docker(&["cp", "-", "cprun:/tmp"])
        .stdin(&bytes)
        .run()
        .ok();
    assert_eq!(
        exec(d, "cprun", "stat -c '%u:%g %a' /tmp/d/x; cat /tmp/d/x"),
        "4321:8765 640\nfrom the host"
    );
    // A local directory with the Docker CLI.
    d.docker(&["cp", src.join("d").to_str().unwrap(), "cprun:/srv/"])
        .run()
        .ok();
    assert_eq!(exec(d, "cprun", "cat /srv/d/x"), "from the host");
    // Into a volume's path: the container sees it on its volume.
    d.docker(&["cp", dir.join("f").to_str().unwrap(), "cprun:/data/"])
        .run()
        .ok();
    assert_eq!(
        exec(d, "cprun", "cat /data/f; grep -c ' /data ' /proc/mounts"),
        "hello\n1"
    );

    // `hyper cp`, both ways, with a rename.
    d.hyper(&[
        "cp",
        "cprun:/srv/tree/sub/g",
        dir.join("renamed").to_str().unwrap(),
    ])
    .run()
    .ok();
    assert_eq!(
        std::fs::read_to_string(dir.join("renamed")).unwrap(),
        "deep\n"
    );
    // -L: the link's target, under the link's name.
    let followed = dir.join("followed");
    std::fs::create_dir_all(&followed).unwrap();
    d.hyper(&[
        "cp",
        "-L",
        "cprun:/srv/tree/link",
        followed.to_str().unwrap(),
    ])
    .run()
    .ok();
    assert_eq!(
        std::fs::read_to_string(followed.join("link")).unwrap(),
        "deep\n"
    );
    d.hyper(&["cp", src.to_str().unwrap(), "cprun:/srv/copied"])
        .run()
        .ok();
    assert_eq!(
        exec(
            d,
            "cprun",
            "cat /srv/copied/d/x; stat -c %u:%g /srv/copied/d/x"
        ),
        "from the host\n0:0"
    );
    d.hyper(&["rm", "-f", "cprun"]).run().ok();
    d.hyper(&["volume", "rm", "cpvol"]).run().ok();
}

/// `..` and symlinks resolve inside the container's root: nothing of the host is read or
/// written, whatever the path or the archive says.
fn cp_paths_stay_inside_the_container() {
    let d = main_daemon();
    let dir = scratch(d, "esc");
    // A file on the host that no container has.
    let marker = d.data.join("cp-host-secret");
    std::fs::write(&marker, "host only\n").unwrap();
    d.hyper(&["run", "-d", "--name", "cpesc", "busybox", "sleep", "3600"])
        .timeout(120.0)
        .run()
        .ok();
    exec(
        d,
        "cpesc",
        "mkdir -p /srv && echo inside > /etc/where && ln -s / /srv/root && ln -s ../../../../../.. /srv/up",
    );
    let marker_rel = marker.to_str().unwrap().trim_start_matches('/').to_string();
    for (i, path) in [
        format!("/../../../../{marker_rel}"),
        format!("/srv/root/{marker_rel}"),
        format!("/srv/up/{marker_rel}"),
    ]
    .iter()
    .enumerate()
    {
        let o = d.docker(&["cp", &format!("cpesc:{path}"), "-"]).run();
        assert_ne!(o.code, 0, "test[{i}] {o}");
        assert!(
            o.stderr.contains("Could not find the file"),
            "test[{i}] {o}"
        );
    }
    // `..` above the root is the root: the container's file, not the host's.
    let out = dir.join("where");
    d.docker(&["cp", "cpesc:/../../etc/where", out.to_str().unwrap()])
        .run()
        .ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "inside\n");
    d.docker(&["cp", "cpesc:/srv/up/etc/where", out.to_str().unwrap()])
        .run()
        .ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "inside\n");

    // An archive whose entries climb out, or go through a symlink to `/`, writes only inside.
    let evil = dir.join("evil.tar");
    let py = format!(
        r#"
import io, tarfile
t = tarfile.open({evil:?}, "w")
def add(name, data=b"pwned\n", kind=tarfile.REGTYPE, link=""):
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = link; i.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
add("../../../../../{marker_rel}-up")
add("rootlink", kind=tarfile.SYMTYPE, link="/")
add("rootlink/{marker_rel}-via-link")
t.close()
"#,
        evil = evil.to_str().unwrap(),
    );
    Cmd::new("python3", &["-c", &py]).run().ok();
    // The Docker CLI's own checks aside, straight to the API.
    let o = d.api(
        "PUT",
        "/v1.44/containers/cpesc/archive?path=/tmp",
        &[
            "--data-binary",
            &format!("@{}", evil.display()),
            "-H",
            "Content-Type: application/x-tar",
        ],
    );
    assert!(o.stdout.ends_with("200"), "{o}");
    for suffix in ["-up", "-via-link"] {
        let host = PathBuf::from(format!("{}{suffix}", marker.display()));
        assert!(!host.exists(), "{} was written on the host", host.display());
    }
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "host only\n");
    // What the symlink entry led to is inside the container.
    let inside = exec(
        d,
        "cpesc",
        &format!("cat /{marker_rel}-via-link; ls /tmp/rootlink >/dev/null && echo link-kept"),
    );
    assert_eq!(inside, "pwned\nlink-kept");
    d.hyper(&["rm", "-f", "cpesc"]).run().ok();
}

/// Missing paths are 404 with Docker's message; a put into a file is 400; bad query values are
/// refused; another tenant's container does not exist for a tenant.
fn cp_refusals_and_tenants() {
    let d = main_daemon();
    d.hyper(&["run", "-d", "--name", "cpref", "busybox", "sleep", "3600"])
        .timeout(120.0)
        .run()
        .ok();
    let o = d.api("GET", "/v1.44/containers/cpref/archive?path=/nope", &[]);
    assert!(o.stdout.ends_with("404"), "{o}");
    assert!(
        o.stdout
            .contains("Could not find the file /nope in container cpref"),
        "{o}"
    );
    let (status, _) = head_stat(d, "cpref", "/nope");
    assert_eq!(status, 404);
    let o = d.api("GET", "/v1.44/containers/cpref/archive", &[]);
    assert!(o.stdout.ends_with("400"), "{o}");
    let o = d.api(
        "PUT",
        "/v1.44/containers/cpref/archive?path=/etc/passwd",
        &["--data-binary", "x"],
    );
    assert!(o.stdout.ends_with("400"), "{o}");
    assert!(o.stdout.contains("not a directory"), "{o}");
    // A big body too gets the answer, not a reset: it is read before the refusal.
    let body = d.data.join("cp-4mib");
    std::fs::write(&body, vec![0u8; 4 << 20]).unwrap();
    let o = d.api(
        "PUT",
        "/v1.44/containers/cpref/archive?path=/no/such/dir",
        &["--data-binary", &format!("@{}", body.display())],
    );
    assert!(o.stdout.ends_with("404"), "{o}");
    assert!(
        o.stdout.contains("Could not find the file /no/such/dir"),
        "{o}"
    );
    let o = d.docker(&["cp", "cpref:/nope", "/tmp/"]).run();
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("Could not find the file /nope"), "{o}");
    let o = d.hyper(&["cp", "cpref:/nope", "/tmp/"]).run();
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("Could not find the file /nope"), "{o}");

    // Another tenant: no such container, whichever way.
    let (other, _) = d.new_tenant("cpother");
    let id = d.id_of("cpref");
    let o = d
        .hyper_tcp(&other, &["cp", "cpref:/etc/hostname", "/tmp/"])
        .run();
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("No such container"), "{o}");
    let target = format!("{id}:/tmp");
    let o = d.hyper_tcp(&other, &["cp", "/etc/hostname", &target]).run();
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("No such container"), "{o}");
    d.hyper(&["rm", "-f", "cpref"]).run().ok();
}

/// A stopped container is read and written through a helper VM: its disk is never mounted on
/// the host, the helper is gone after each copy, what was copied in is there when the
/// container starts again.
fn cp_stopped_container() {
    let d = main_daemon();
    let dir = scratch(d, "stop");
    d.hyper(&["run", "-d", "--name", "cpstop", "busybox", "sleep", "3600"])
        .timeout(120.0)
        .run()
        .ok();
    exec(
        d,
        "cpstop",
        "echo before > /made && chown 7:8 /made && sync",
    );
    d.hyper(&["stop", "-t", "1", "cpstop"])
        .timeout(120.0)
        .run()
        .ok();
    let helper = format!("{}/", d.cdir(&d.id_of("cpstop")).join("cp").display());
    let no_helper = || {
        wait_for("the helper VM gone", secs(60.0), || {
            let left = processes_mentioning(&helper);
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("\n"))
            }
        })
    };

    let tar = dir.join("made.tar");
    docker_sh(d, &format!("docker cp cpstop:/made - > {}", tar.display())).ok();
    assert!(tar_listing(&tar).contains("7/8"), "{}", tar_listing(&tar));
    no_helper();
    let (status, stat) = head_stat(d, "cpstop", "/made");
    assert_eq!((status, stat["size"].as_u64()), (200, Some(7)));
    no_helper();
    std::fs::write(dir.join("in"), "copied while stopped\n").unwrap();
    d.docker(&["cp", dir.join("in").to_str().unwrap(), "cpstop:/tmp/in"])
        .timeout(300.0)
        .run()
        .ok();
    no_helper();
    let o = d.api("GET", "/v1.44/containers/cpstop/archive?path=/nope", &[]);
    assert!(o.stdout.ends_with("404"), "{o}");
    no_helper();
    assert!(
        !Path::new(&helper).exists(),
        "the helper's directory is left"
    );
    // No mount of the tenant's disk on the host, ever.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(d.data.join("c").to_str().unwrap()),
        "{mounts}"
    );

    d.hyper(&["start", "cpstop"]).timeout(120.0).run().ok();
    assert_eq!(
        exec(d, "cpstop", "cat /tmp/in /made"),
        "copied while stopped\nbefore"
    );
    d.hyper(&["rm", "-f", "cpstop"]).run().ok();
}

fn sha256(path: &Path) -> String {
    let o = Cmd::new("sha256sum", &[path.to_str().unwrap()]).run().ok();
    o.stdout.split_whitespace().next().unwrap().to_string()
}

/// The peak resident memory (VmHWM) of a process, in KiB.
fn peak_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Tens of MB in and out with the same checksum, streamed: neither hyperd nor the VM's
/// supervisor holds the file in memory.
fn cp_big_file_round_trip() {
    let d = main_daemon();
    let dir = scratch(d, "big");
    let big = dir.join("big.bin");
    Cmd::new(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", big.display()),
            "bs=1M",
            "count=48",
        ],
    )
    .run()
    .ok();
    let sum = sha256(&big);
    d.hyper(&["run", "-d", "--name", "cpbig", "busybox", "sleep", "3600"])
        .timeout(120.0)
        .run()
        .ok();
    let hyperd = d.pid().expect("hyperd's pid").to_string();
    let shim = std::fs::read_to_string(d.cdir(&d.id_of("cpbig")).join("shim.pid")).unwrap();
    let (hyperd_before, shim_before) = (peak_kib(&hyperd), peak_kib(&shim));

    d.docker(&["cp", big.to_str().unwrap(), "cpbig:/tmp/"])
        .timeout(600.0)
        .run()
        .ok();
    let inside = exec(d, "cpbig", "sha256sum /tmp/big.bin");
    assert!(inside.starts_with(&sum), "{inside} vs {sum}");
    let back = dir.join("back");
    std::fs::create_dir_all(&back).unwrap();
    d.docker(&["cp", "cpbig:/tmp/big.bin", back.to_str().unwrap()])
        .timeout(600.0)
        .run()
        .ok();
    assert_eq!(sha256(&back.join("big.bin")), sum);
    // 48 MiB went through each way; the peaks grew by far less.
    let grew = |before: u64, pid: &str| peak_kib(pid).saturating_sub(before);
    assert!(
        grew(hyperd_before, &hyperd) < 24 * 1024,
        "hyperd's peak grew by {} KiB",
        grew(hyperd_before, &hyperd)
    );
    assert!(
        grew(shim_before, &shim) < 24 * 1024,
        "the shim's peak grew by {} KiB",
        grew(shim_before, &shim)
    );
    d.hyper(&["rm", "-f", "cpbig"]).run().ok();
}

/// `docker export` and `hyper export`: the container's root file system (what the container
/// wrote included, its volumes left out), running or stopped.
fn export_running_and_stopped() {
    let d = main_daemon();
    let dir = scratch(d, "export");
    d.hyper(&[
        "run",
        "-d",
        "--name",
        "cpexp",
        "-v",
        "expvol:/data",
        "busybox",
        "sleep",
        "3600",
    ])
    .timeout(120.0)
    .run()
    .ok();
    exec(
        d,
        "cpexp",
        "echo here > /etc/where && echo vol > /data/v && sync",
    );
    let running = dir.join("running.tar");
    d.docker(&["export", "-o", running.to_str().unwrap(), "cpexp"])
        .timeout(300.0)
        .run()
        .ok();
    let names = Cmd::new("tar", &["-tf", running.to_str().unwrap()])
        .run()
        .ok()
        .stdout;
    let has = |n: &str| names.lines().any(|l| l == n);
    assert!(
        has("etc/where") && has("bin/busybox") && has("data/"),
        "{names}"
    );
    assert!(!names.lines().any(|l| l.starts_with("data/v")), "{names}");
    assert!(
        !names
            .lines()
            .any(|l| l.starts_with("./") || l.starts_with('/')),
        "{names}"
    );

    d.hyper(&["stop", "-t", "1", "cpexp"])
        .timeout(120.0)
        .run()
        .ok();
    let stopped = dir.join("stopped.tar");
    d.hyper(&["export", "-o", stopped.to_str().unwrap(), "cpexp"])
        .timeout(300.0)
        .run()
        .ok();
    let o = Cmd::new("tar", &["-xOf", stopped.to_str().unwrap(), "etc/where"])
        .run()
        .ok();
    assert_eq!(o.stdout, "here\n");
    let helper = format!("{}/", d.cdir(&d.id_of("cpexp")).join("cp").display());
    wait_for("the helper VM gone", secs(60.0), || {
        let left = processes_mentioning(&helper);
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("\n"))
        }
    });
    d.hyper(&["rm", "-f", "cpexp"]).run().ok();
    d.hyper(&["volume", "rm", "expvol"]).run().ok();
}

/// `docker diff` and `hyper diff`: added, changed and deleted paths against the image, parent
/// directories marked changed, nothing the VM's start wrote; running or stopped.
fn diff_running_and_stopped() {
    let d = main_daemon();
    d.hyper(&["run", "-d", "--name", "cpdiff", "busybox", "sleep", "3600"])
        .timeout(120.0)
        .run()
        .ok();
    exec(
        d,
        "cpdiff",
        "echo x > /added && echo y >> /etc/passwd && mkdir -p /newdir/sub && touch /newdir/sub/f \
         && rm /bin/ls && sync",
    );
    let want = "A /added\nC /bin\nD /bin/ls\nC /etc\nC /etc/passwd\nA /newdir\nA /newdir/sub\nA /newdir/sub/f";
    let sorted = |s: String| {
        let mut l: Vec<_> = s.lines().map(str::to_string).collect();
        l.sort_by(|a, b| a[2..].cmp(&b[2..]));
        l.join("\n")
    };
    let running = d
        .docker(&["diff", "cpdiff"])
        .timeout(300.0)
        .run()
        .ok()
        .stdout;
    assert_eq!(sorted(running), want);
    d.hyper(&["stop", "-t", "1", "cpdiff"])
        .timeout(120.0)
        .run()
        .ok();
    let stopped = d
        .hyper(&["diff", "cpdiff"])
        .timeout(300.0)
        .run()
        .ok()
        .stdout;
    assert_eq!(sorted(stopped), want);
    d.hyper(&["rm", "-f", "cpdiff"]).run().ok();
}

/// A `start` while a helper VM has the stopped container's disk waits for the copy to end (two
/// VMs never write one disk): when it returns the helper is gone, the copy is whole, and the
/// container runs on an intact disk.
fn start_waits_for_a_copy() {
    let d = main_daemon();
    let dir = scratch(d, "wait");
    d.hyper(&["run", "-d", "--name", "cpwait", "busybox", "sleep", "3600"])
        .timeout(120.0)
        .run()
        .ok();
    let sum = exec(
        d,
        "cpwait",
        "dd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null && sync && sha256sum /big",
    );
    d.hyper(&["stop", "-t", "1", "cpwait"])
        .timeout(120.0)
        .run()
        .ok();
    let helper = format!("{}/", d.cdir(&d.id_of("cpwait")).join("cp").display());
    // A slow reader keeps the copy, and so the helper VM, going for a while.
    let out = dir.join("big.tar");
    let (sock, out2) = (d.sock.clone(), out.clone());
    let copy = std::thread::spawn(move || {
        Cmd::new(
            "curl",
            &[
                "-sf",
                "--limit-rate",
                "1M",
                "--unix-socket",
                sock.to_str().unwrap(),
                "-o",
                out2.to_str().unwrap(),
                "http://hyper/v1.44/containers/cpwait/archive?path=/big",
            ],
        )
        .timeout(300.0)
        .run()
    });
    wait_for(
        "the helper VM up",
        secs(120.0),
        || match processes_mentioning(&helper).is_empty() {
            true => Err("no helper yet".to_string()),
            false => Ok(()),
        },
    );
    d.hyper(&["start", "cpwait"]).timeout(300.0).run().ok();
    let left = processes_mentioning(&helper);
    assert!(
        left.is_empty(),
        "the start did not wait for the helper VM: {left:?}"
    );
    copy.join().unwrap().ok();
    let copied = Cmd::new(
        "sh",
        &["-c", &format!("tar -xOf {} big | sha256sum", out.display())],
    )
    .run()
    .ok()
    .out();
    let hash = |s: &str| s.split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(hash(&copied), hash(&sum));
    assert_eq!(hash(&exec(d, "cpwait", "sha256sum /big")), hash(&sum));
    d.hyper(&["rm", "-f", "cpwait"]).run().ok();
}

/// `commit` of a running container (its processes stopped for the copy, then going on) with
/// the Docker CLI and of a stopped one with `hyper commit`: the new image runs with the files
/// added, changed and deleted, the container's settings and the `--change`s; it is one layer
/// over its parent's; a bad change is a 400 naming it; another tenant sees neither the
/// container nor the image.
fn commit_running_and_stopped() {
    let d = main_daemon();
    d.hyper(&[
        "run", "-d", "--name", "cmt", "-e", "FOO=bar", "busybox", "sleep", "3600",
    ])
    .timeout(120.0)
    .run()
    .ok();
    exec(
        d,
        "cmt",
        "mkdir -p /srv && echo made > /srv/new && chmod 600 /srv/new && chown 7:8 /srv/new \
         && rm /bin/ls && echo extra >> /etc/passwd && sync",
    );
    let id = d
        .docker(&[
            "commit",
            "--change",
            r#"CMD ["cat", "/srv/new"]"#,
            "--change",
            "ENV MODE=committed",
            "-m",
            "first commit",
            "-a",
            "tester",
            "cmt",
            "committed:v1",
        ])
        .timeout(300.0)
        .run()
        .ok()
        .out();
    assert!(id.starts_with("sha256:"), "{id}");
    // The container went on running: its processes were continued after the copy.
    assert_eq!(exec(d, "cmt", "echo alive"), "alive");
    assert_eq!(
        d.hyper(&["run", "--rm", "committed:v1"])
            .timeout(120.0)
            .run()
            .ok()
            .out(),
        "made"
    );
    assert_eq!(
        d.hyper(&[
            "run",
            "--rm",
            "committed:v1",
            "sh",
            "-c",
            "test -e /bin/ls || echo ls gone; echo $FOO $MODE; stat -c '%a %u:%g' /srv/new; \
             tail -n1 /etc/passwd",
        ])
        .timeout(120.0)
        .run()
        .ok()
        .out(),
        "ls gone\nbar committed\n600 7:8\nextra"
    );
    let inspect = |image: &str, f: &str| {
        d.docker(&["image", "inspect", "-f", f, image])
            .run()
            .ok()
            .out()
    };
    assert_eq!(inspect("committed:v1", "{{.Author}}"), "tester");
    let layers = |image: &str| {
        inspect(image, "{{len .RootFS.Layers}}")
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(layers("committed:v1"), layers("busybox") + 1);

    // Stopped, with hyper's own CLI: read by a helper VM, gone after.
    d.hyper(&["stop", "-t", "1", "cmt"])
        .timeout(120.0)
        .run()
        .ok();
    d.hyper(&["commit", "--change", "WORKDIR /srv", "cmt", "committed:v2"])
        .timeout(300.0)
        .run()
        .ok();
    assert_eq!(
        d.hyper(&["run", "--rm", "committed:v2", "sh", "-c", "pwd; cat new"])
            .timeout(120.0)
            .run()
            .ok()
            .out(),
        "/srv\nmade"
    );

    // Refusals: a change that is no config instruction, an unknown container.
    let o = d
        .docker(&["commit", "--change", "RUN make", "cmt", "bad:one"])
        .timeout(120.0)
        .run();
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("RUN is not a valid change command"),
        "{o}"
    );
    let o = d.api("POST", "/v1.44/commit?container=nosuch&repo=x", &[]);
    assert!(o.stdout.ends_with("404"), "{o}");

    // Another tenant: no such container, no such image.
    let (other, _) = d.new_tenant("cmtother");
    let o = d.hyper_tcp(&other, &["commit", "cmt", "theirs:v1"]).run();
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("No such container"), "{o}");
    let o = d
        .hyper_tcp(&other, &["image", "inspect", "committed:v1"])
        .run();
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("No such image"), "{o}");
    d.hyper(&["rm", "-f", "cmt"]).run().ok();
    d.hyper(&["rmi", "committed:v1", "committed:v2"]).run().ok();
}

/// `import` (`POST /images/create?fromSrc=-`) of a container's export, with the Docker CLI and
/// `hyper import` on stdin: one-layer images that run with the exported files and the
/// `--change`s; what is not a tar is refused and stores nothing; another tenant sees neither.
fn import_an_export() {
    let d = main_daemon();
    let dir = scratch(d, "import");
    d.hyper(&["run", "-d", "--name", "imp", "busybox", "sleep", "3600"])
        .timeout(120.0)
        .run()
        .ok();
    exec(d, "imp", "echo from-export > /marker");
    let tar = dir.join("export.tar");
    docker_sh(d, &format!("docker export imp > {}", tar.display())).ok();
    let id = d
        .docker(&[
            "import",
            "-c",
            r#"CMD ["cat", "/marker"]"#,
            "-m",
            "from an export",
            tar.to_str().unwrap(),
            "imported:v1",
        ])
        .timeout(300.0)
        .run()
        .ok()
        .out();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(
        d.hyper(&["run", "--rm", "imported:v1"])
            .timeout(120.0)
            .run()
            .ok()
            .out(),
        "from-export"
    );
    let inspect = |f: &str| {
        d.docker(&["image", "inspect", "-f", f, "imported:v1"])
            .run()
            .ok()
            .out()
    };
    assert_eq!(
        inspect("{{len .RootFS.Layers}} {{.Comment}}"),
        "1 from an export"
    );

    let bytes = std::fs::read(&tar).unwrap();
    d.hyper(&["import", "-c", "ENV X=1", "-", "imported:v2"])
        .stdin(&bytes)
        .timeout(300.0)
        .run()
        .ok();
    assert_eq!(
        d.hyper(&[
            "run",
            "--rm",
            "imported:v2",
            "sh",
            "-c",
            "echo $X; cat /marker"
        ])
        .timeout(120.0)
        .run()
        .ok()
        .out(),
        "1\nfrom-export"
    );

    let images = || d.hyper(&["images", "-q"]).run().ok().stdout;
    let before = images();
    let o = d
        .hyper(&["import", "-", "notatar:v1"])
        .stdin(b"this is no tar archive")
        .run();
    assert_ne!(o.code, 0, "{o}");
    assert_eq!(images(), before);

    let (other, _) = d.new_tenant("impother");
    let o = d
        .hyper_tcp(&other, &["image", "inspect", "imported:v1"])
        .run();
    assert!(o.code != 0 && o.stderr.contains("No such image"), "{o}");
    // The same image content, named by this tenant and loaded untagged by the other: the other
    // learns no name of this tenant's.
    let named = dir.join("named.tar");
    Cmd::new(
        workspace_root()
            .join("scripts/make-busybox-image")
            .to_str()
            .unwrap(),
        &[named.to_str().unwrap(), "private/name:v1"],
    )
    .run()
    .ok();
    d.hyper(&["load", "-i", named.to_str().unwrap()]).run().ok();
    let untagged = dir.join("untagged.tar");
    let id = d
        .hyper(&["image", "inspect", "-f", "{{.Id}}", "private/name:v1"])
        .run()
        .ok()
        .out();
    d.hyper(&["save", "-o", untagged.to_str().unwrap(), &id])
        .run()
        .ok();
    let o = d
        .hyper_tcp(&other, &["load", "-i", untagged.to_str().unwrap()])
        .run()
        .ok();
    assert_eq!(o.out(), format!("Loaded image ID: {id}"));
    let listed = d.hyper_tcp(&other, &["images"]).run().ok().stdout;
    assert!(!listed.contains("private/name"), "{listed}");
    d.hyper(&["rmi", "private/name:v1"]).run().ok();
    d.hyper(&["rm", "-f", "imp"]).run().ok();
    d.hyper(&["rmi", "imported:v1", "imported:v2"]).run().ok();
}
