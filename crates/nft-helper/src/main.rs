//! hyper-nft: runs hyperd's nftables commands through libnftables, keeping one context (and so
//! one netlink socket) open per network namespace.
//!
//! Why not the `nft` program: it opens a netlink socket per run, and the kernel, releasing an
//! nfnetlink socket while nf_tables has objects waiting to be freed, waits for an RCU grace
//! period first. Any transaction that deletes something (every replacement of a tenant's
//! tables does) leaves such objects: a run of `nft -f` took ~25 ms here, half of it in that
//! `close`, and 50-160 ms while 100 containers were removed at once, each removal waiting for
//! its tenant's rules. Through an open context the same replacement takes a few ms.
//!
//! A program of its own rather than a library in hyperd: libnftables is GPL-2.0-only.
//!
//! Protocol, one JSON object per line each way (stdin, stdout):
//! - `{"netns": PATH, "commands": TEXT}` runs TEXT (nft syntax) in the namespace at PATH and
//!   answers `{"ok": true, "output": TEXT}` or `{"ok": false, "error": TEXT}`;
//! - `{"forget": PATH}` closes the context of that namespace (it is going away: an open socket
//!   would keep it alive) and answers `{"ok": true}`.
//!
//! It exits when stdin closes, i.e. when hyperd is gone.

mod libnftables;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};

use libnftables::Context;

/// A namespace as the kernel knows it (nsfs device and inode): a path can come to hold another
/// namespace (a tenant's taken down and made again).
type NamespaceId = (u64, u64);

struct Namespace {
    path: PathBuf,
    /// Open so that we can enter it for each run (libnftables may open sockets again).
    file: File,
    context: Context,
}

struct Helper {
    /// Our own namespace, which we return to after each run.
    home: File,
    namespaces: HashMap<NamespaceId, Namespace>,
}

fn identity(path: &Path) -> std::io::Result<NamespaceId> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

impl Helper {
    fn run(&mut self, path: &Path, commands: &str) -> Result<String, String> {
        let id = identity(path)
            .map_err(|e| format!("open network namespace {}: {e}", path.display()))?;
        // What this path held before is gone.
        self.namespaces
            .retain(|other, ns| *other == id || ns.path != path);
        if !self.namespaces.contains_key(&id) {
            let file = File::open(path)
                .map_err(|e| format!("open network namespace {}: {e}", path.display()))?;
            let context = self.inside(&file, Context::new)??;
            self.namespaces.insert(
                id,
                Namespace {
                    path: path.to_path_buf(),
                    file,
                    context,
                },
            );
        }
        let ns = &self.namespaces[&id];
        self.inside(&ns.file, || ns.context.run(commands))?
    }

    fn forget(&mut self, path: &Path) {
        self.namespaces.retain(|_, ns| ns.path != path);
    }

    /// Runs `f` inside the namespace `netns`, then comes back home.
    fn inside<R>(&self, netns: &File, f: impl FnOnce() -> R) -> Result<R, String> {
        setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter network namespace: {e}"))?;
        let result = f();
        // Staying in a tenant's namespace would be wrong for every later request: give up.
        setns(self.home.as_fd(), CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("return to our own network namespace: {e}"));
        Ok(result)
    }

    fn answer(&mut self, request: &Value) -> Value {
        if let Some(path) = request["forget"].as_str() {
            self.forget(Path::new(path));
            return json!({"ok": true});
        }
        let (Some(path), Some(commands)) =
            (request["netns"].as_str(), request["commands"].as_str())
        else {
            return json!({"ok": false, "error": format!("not a request: {request}")});
        };
        match self.run(Path::new(path), commands) {
            Ok(output) => json!({"ok": true, "output": output}),
            Err(error) => json!({"ok": false, "error": error}),
        }
    }
}

fn main() {
    let home = File::open("/proc/self/ns/net").unwrap_or_else(|e| {
        eprintln!("hyper-nft: open our network namespace: {e}");
        std::process::exit(1)
    });
    let mut helper = Helper {
        home,
        namespaces: HashMap::new(),
    };
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(request) => helper.answer(&request),
            Err(e) => json!({"ok": false, "error": format!("not JSON: {e}")}),
        };
        if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
}
