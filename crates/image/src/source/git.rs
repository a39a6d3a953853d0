//! Shallow clones of a tenant's git repository, for [`fetch_into`](super::fetch_into).
//!
//! git runs as a child process (its network code and its checkout are its own, and proven),
//! boxed in by its command line and environment:
//! - the host is resolved and checked by us, and git is pinned to the checked address: for
//!   `git://` the URL's host is replaced by the address; for `http(s)://` curl is told the
//!   name's address (`http.curloptResolve`, git >= 2.37), so TLS still checks the name;
//! - only the scheme asked for is allowed (`protocol.allow=never`, then that one), redirects are
//!   not followed (they would lead to unchecked hosts), bundle URIs (which the server names) are
//!   off, and submodules are not fetched;
//! - no configuration but ours: an empty `HOME`, no system or global config, a cleared
//!   environment (no proxy variables, no `GIT_SSH`, no askpass), no credential helper, no
//!   prompt, no hooks, no templates;
//! - its own process group, killed whole when the clone overruns [`FETCH_TIMEOUT`] or grows
//!   past twice the volume (the checkout plus its packed history), checked every second;
//! - of its stderr only the `fatal:`/`error:` lines reach the tenant, shortened, with a
//!   protocol error's echo of what answered cut off and URL credentials masked.
//!
//! The `.git` directory is removed afterwards: the volume gets the files.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use reqwest::Url;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::{resolve_checked, scratch_beside, tree_size, SourceError, Target, FETCH_TIMEOUT};
use crate::policy::AddressPolicy;

/// The git protocol's port.
pub(super) const DEFAULT_PORT: u16 = 9418;

/// How often the size of a running clone is checked.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Bytes of git's stderr kept (the rest is read and dropped, so git never blocks on it).
const STDERR_KEPT: usize = 16 * 1024;

/// What of git's error reaches the tenant: lines, and characters per line.
const MESSAGE_LINES: usize = 4;
const MESSAGE_LINE_CHARS: usize = 200;

/// Clones `url` (a `#fragment` names the branch or tag) into `tree` and returns its size
/// without `.git`.
pub(super) async fn clone(
    url: Url,
    tree: &Path,
    limit: u64,
    policy: &AddressPolicy,
) -> Result<u64, SourceError> {
    let branch = url.fragment().map(branch_name).transpose()?;
    let mut url = url;
    url.set_fragment(None);
    let target = resolve_checked(&url, policy).await?;
    let home = scratch_beside(tree, "git-home")?;
    std::fs::create_dir(home.path()).map_err(SourceError::io(format!(
        "creating {}",
        home.path().display()
    )))?;
    let cmd = command(&url, &target, branch.as_deref(), tree, home.path())?;
    run(cmd, tree, limit, &secrets(&url)).await?;
    let t = tree.to_path_buf();
    let size = super::blocking(move || {
        let dot_git = t.join(".git");
        std::fs::remove_dir_all(&dot_git)
            .map_err(SourceError::io(format!("removing {}", dot_git.display())))?;
        tree_size(&t)
    })
    .await?;
    if size > limit {
        return Err(SourceError::TooLarge {
            what: "the git checkout",
            size,
            limit,
        });
    }
    Ok(size)
}

/// The branch or tag a URL fragment names, if it is a plain ref name: git would refuse odd
/// ones anyway, and nothing here may look like an option.
fn branch_name(fragment: &str) -> Result<String, SourceError> {
    let ok = !fragment.is_empty()
        && !fragment.starts_with(['-', '.', '/'])
        && !fragment.contains("..")
        && fragment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if !ok {
        return Err(SourceError::InvalidUrl {
            reason: format!("#{fragment} is not a branch or tag name git accepts here"),
        });
    }
    Ok(fragment.to_string())
}

/// The URL git is given: for `git://` the host is the checked address itself (git resolves
/// nothing then); for http(s) it stays, pinned by [`config`].
fn pinned_url(url: &Url, target: &Target) -> Result<Url, SourceError> {
    let mut url = url.clone();
    if url.scheme() == "git" {
        url.set_ip_host(target.addrs[0].ip())
            .map_err(|()| SourceError::InvalidUrl {
                reason: "the git:// URL cannot take an address as its host".into(),
            })?;
    }
    Ok(url)
}

/// The `-c` settings of a clone of `url`; see the module doc for why each.
pub(super) fn config(url: &Url, target: &Target) -> Vec<String> {
    let mut c = vec![
        "protocol.allow=never".to_string(),
        format!("protocol.{}.allow=always", url.scheme()),
        "http.followRedirects=false".into(),
        "transfer.bundleURI=false".into(),
        "credential.helper=".into(),
        "core.hooksPath=/dev/null".into(),
        "submodule.recurse=false".into(),
    ];
    if url.scheme() != "git" && !target.literal {
        let addrs: Vec<String> = target
            .addrs
            .iter()
            .map(|a| match a.ip() {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            })
            .collect();
        c.push(format!(
            "http.curloptResolve={}:{}:{}",
            target.host,
            target.port,
            addrs.join(",")
        ));
    }
    c
}

/// The whole `git clone` command, environment included.
pub(super) fn command(
    url: &Url,
    target: &Target,
    branch: Option<&str>,
    tree: &Path,
    home: &Path,
) -> Result<Command, SourceError> {
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C");
    for setting in config(url, target) {
        cmd.arg("-c").arg(setting);
    }
    cmd.args(["clone", "--depth=1", "--quiet", "--no-tags", "--template="]);
    if let Some(b) = branch {
        cmd.arg(format!("--branch={b}"));
    }
    cmd.arg("--")
        .arg(pinned_url(url, target)?.as_str())
        .arg(tree)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

/// Strings of `url` that must not reach an error message (its credentials).
fn secrets(url: &Url) -> Vec<String> {
    [url.username(), url.password().unwrap_or("")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Kills a child's whole process group (git runs helpers: remote-https, index-pack) unless
/// disarmed once the child has been reaped.
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) with a negative pid signals the group the child leads; the child
            // has not been reaped (else this was disarmed), so the group is still ours.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Runs the clone to its end, its size watched and its time bounded.
pub(super) async fn run(
    mut cmd: Command,
    tree: &Path,
    limit: u64,
    secrets: &[String],
) -> Result<(), SourceError> {
    let mut child = cmd.spawn().map_err(SourceError::io("starting git"))?;
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
    let stderr = tokio::spawn(read_kept(child.stderr.take().expect("stderr is piped")));
    let watched = tokio::time::timeout(FETCH_TIMEOUT, watch(&mut child, tree, limit)).await;
    let status = match watched {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(SourceError::Timeout {
                limit: FETCH_TIMEOUT,
            })
        }
    };
    group.0 = None;
    let stderr = stderr.await.unwrap_or_default();
    if !status.success() {
        let message = tenant_message(&stderr, secrets)
            .unwrap_or_else(|| format!("git ended ({status}) without saying why"));
        return Err(SourceError::Git { message });
    }
    Ok(())
}

/// Waits for the clone, failing (and leaving the kill to [`Group`]) once it holds more than
/// twice `limit`: a checkout that fits the volume and its packed history cannot.
async fn watch(child: &mut Child, tree: &Path, limit: u64) -> Result<ExitStatus, SourceError> {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            status = child.wait() => return status.map_err(SourceError::io("waiting for git")),
            _ = tick.tick() => {
                let t: PathBuf = tree.to_path_buf();
                let size = super::blocking(move || tree_size(&t)).await?;
                if size > limit.saturating_mul(2) {
                    return Err(SourceError::TooLarge { what: "the git clone", size, limit });
                }
            }
        }
    }
}

/// The first [`STDERR_KEPT`] bytes of `r`, reading on to its end.
async fn read_kept(mut r: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// What of git's stderr a tenant sees: its `fatal:` and `error:` lines (not `remote:` lines or
/// progress), each cut short; a protocol error loses what git quotes of the answer (the first
/// bytes of whatever listens on that port), and `secrets` are masked. `None` if git said
/// nothing of the kind.
pub(super) fn tenant_message(stderr: &str, secrets: &[String]) -> Option<String> {
    let lines: Vec<String> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .map(|l| match l.find("protocol error") {
            Some(i) => format!("{}protocol error: the server does not speak git", &l[..i]),
            None => l.to_string(),
        })
        .map(|l| {
            let masked = secrets.iter().fold(l, |l, s| l.replace(s.as_str(), "***"));
            shorten(&masked, MESSAGE_LINE_CHARS)
        })
        .take(MESSAGE_LINES)
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// `s` cut to at most `max` characters, marked when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
