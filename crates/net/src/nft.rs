//! nftables through `hyper-nft` (crates/nft-helper), one process for all of hyperd that keeps a
//! libnftables context open per network namespace: a run of the `nft` program pays for a new
//! netlink socket and, closing it after a transaction that deleted anything, an RCU grace
//! period (see the helper's docs). Started on first use, in the process's own namespace; it
//! exits when we do (its stdin closes). One that died is started again on the next request.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::error::NetError;
use crate::exec::command_in_netns;

const PROGRAM: &str = "hyper-nft";

struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

static HELPER: Mutex<Option<Helper>> = Mutex::new(None);

/// Runs `commands` (nft syntax, as `nft -f` reads them) in the namespace at `netns`, the
/// calling thread's when `None`; their output. `what` says which step this is in the error.
pub(crate) fn run(netns: Option<&Path>, what: &str, commands: &str) -> Result<String, NetError> {
    let netns = match netns {
        Some(path) => path.to_path_buf(),
        None => PathBuf::from(format!(
            "/proc/{}/task/{}/ns/net",
            std::process::id(),
            nix::unistd::gettid()
        )),
    };
    let request = json!({"netns": netns, "commands": commands});
    let answer = ask(&request, true).map_err(|e| NetError::io(format!("{what}: {PROGRAM}"), e))?;
    match answer["ok"].as_bool() {
        Some(true) => Ok(answer["output"].as_str().unwrap_or_default().to_string()),
        _ => Err(NetError::Command {
            what: what.to_string(),
            command: format!("nft {}", commands.lines().next().unwrap_or_default()),
            status: format!("refused in {}", netns.display()),
            stderr: answer["error"].as_str().unwrap_or_default().to_string(),
        }),
    }
}

/// Closes the helper's context of the namespace at `netns` (going away: an open socket would
/// keep it alive). Nothing to do when the helper is not running; one that fails to answer is
/// ended, and its contexts with it.
pub(crate) fn forget(netns: &Path) -> std::io::Result<()> {
    ask(&json!({"forget": netns}), false).map(drop)
}

/// Sends `request` and reads its answer, starting the helper if `start` (else a helper that is
/// not running answers nothing, which is fine). A helper that fails mid-request is replaced
/// and asked once more: every request is idempotent (a table replaced whole, a listing).
fn ask(request: &Value, start: bool) -> std::io::Result<Value> {
    let mut helper = HELPER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut line = request.to_string();
    line.push('\n');
    let mut tries = 0;
    loop {
        tries += 1;
        if helper.is_none() {
            if !start {
                return Ok(json!({"ok": true}));
            }
            *helper = Some(spawn()?);
        }
        let h = helper.as_mut().expect("started above");
        match exchange(h, &line) {
            Ok(answer) => return Ok(answer),
            Err(e) => {
                let mut dead = helper.take().expect("started above");
                let _ = dead.child.kill();
                let _ = dead.child.wait();
                if tries == 2 || !start {
                    return Err(e);
                }
            }
        }
    }
}

fn exchange(h: &mut Helper, line: &str) -> std::io::Result<Value> {
    h.stdin.write_all(line.as_bytes())?;
    h.stdin.flush()?;
    let mut answer = String::new();
    if h.stdout.read_line(&mut answer)? == 0 {
        return Err(std::io::Error::other("it exited"));
    }
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

fn spawn() -> std::io::Result<Helper> {
    let program = crate::our_binary(PROGRAM).ok_or_else(|| {
        std::io::Error::other(format!(
            "{PROGRAM} not found next to this program or in /usr/local/lib/hyper: run scripts/build"
        ))
    })?;
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // In the process's own namespace (its main thread's), whichever thread asks first: it
    // goes into each request's namespace by itself.
    command_in_netns(Path::new("/proc/self/ns/net"), &mut cmd)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    Ok(Helper {
        child,
        stdin,
        stdout,
    })
}
