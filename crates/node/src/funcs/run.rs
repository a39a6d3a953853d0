//! One call in a microVM of its own: an ordinary container of the tenant (labelled as a call,
//! so it is counted against the quotas and billed per second like any container), started
//! through the runtime's usual path (a standby VM when one is ready), the payload as its
//! stdin, its stdout the result. The container goes when the call ends, whatever the end:
//! VM, tap, disk and records with it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::record::FuncRecord;
use crate::model::{ContainerConfig, HostConfig};
use crate::{sizes, Runtime, WaitCondition};

/// The label a call's container carries: the function's name.
pub const FUNC_LABEL: &str = "sh_hyper_func";
/// The label a call's container carries: the call's id.
pub const CALL_LABEL: &str = "sh_hyper_func_call";
/// How much of stderr is kept (for the logs' ShortStderr).
const STDERR_KEPT: usize = 4096;
/// After the process exited, how long its last output may take to arrive.
const DRAIN: Duration = Duration::from_secs(5);

/// How a call went.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: Option<i64>,
    /// Why it failed (empty: it ran and exited 0).
    pub error: String,
    pub timed_out: bool,
    /// The call's container, still to be removed (its process has ended, or been killed by a
    /// timeout or a cancel: the removal takes its VM down).
    pub container: Option<String>,
}

/// The container a call of `f` runs in.
fn container_config(f: &FuncRecord, call_id: &str) -> (ContainerConfig, HostConfig) {
    let s = &f.spec;
    let mut labels = s.labels.clone();
    labels.insert(sizes::SIZE_LABEL.into(), s.size.clone());
    labels.insert(FUNC_LABEL.into(), f.name.clone());
    labels.insert(CALL_LABEL.into(), call_id.into());
    let config = ContainerConfig {
        image: s.image.clone(),
        cmd: s.cmd.clone(),
        entrypoint: s.entrypoint.clone(),
        env: s.env.clone(),
        working_dir: s.working_dir.clone(),
        tty: s.tty,
        labels,
        exposed_ports: s.exposed_ports.clone(),
        stop_signal: (!s.stop_signal.is_empty()).then(|| s.stop_signal.clone()),
        open_stdin: true,
        stdin_once: true,
        attach_stdin: true,
        attach_stdout: true,
        attach_stderr: true,
        ..ContainerConfig::default()
    };
    let host = HostConfig {
        links: s.links.clone(),
        ..HostConfig::default()
    };
    (config, host)
}

/// The container's name: the function's (cut short) and the call's first characters.
fn container_name(func: &str, call_id: &str) -> String {
    let mut base: String = func.chars().take(48).collect();
    while base.ends_with('-') {
        base.pop();
    }
    format!("{base}-call-{}", &call_id[..8.min(call_id.len())])
}

/// Runs call `call_id` of `f` with `payload` as stdin; the container is left for the caller
/// to [`remove`] once it has answered (`Outcome::container`). `started` is told the container's id
/// once its process runs. `cancel` given a reason ends the call at once (the function was
/// removed, hyperd is stopping).
pub async fn run(
    rt: &Arc<Runtime>,
    f: &FuncRecord,
    call_id: &str,
    payload: &[u8],
    mut cancel: watch::Receiver<Option<&'static str>>,
    started: impl FnOnce(&str),
) -> Outcome {
    let tenant = f.tenant.as_str();
    let (config, host) = container_config(f, call_id);
    let name = container_name(&f.name, call_id);
    let c = match rt
        .create(tenant, Some(&name), config, host, Vec::new())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                error: format!(
                    "the call's container could not be created: {}",
                    crate::error_chain(&e)
                ),
                ..Outcome::default()
            }
        }
    };
    let mut outcome = Outcome::default();
    let ran = async {
        let exit = rt.wait(tenant, &c.id, WaitCondition::NextExit)?;
        let attach = rt.attach(tenant, &c.id, true, true, true)?;
        rt.start(tenant, &c.id).await?;
        started(&c.id);
        let stream = attach.await?;
        Ok::<_, crate::RuntimeError>((exit, stream))
    };
    let ran = tokio::select! {
        r = ran => Some(r),
        _ = cancel.wait_for(Option::is_some) => None,
    };
    let Some(ran) = ran else {
        outcome.error = cancelled(&cancel);
        remove(rt, tenant, &c.id).await;
        return outcome;
    };
    let (exit, stream) = match ran {
        Ok(pair) => pair,
        Err(e) => {
            outcome.error = format!("the call's VM did not start: {}", crate::error_chain(&e));
            remove(rt, tenant, &c.id).await;
            return outcome;
        }
    };
    let limit = Duration::from_secs(f.timeout_secs);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buffers = Buffers::default();
    let verdict = {
        let feed = async {
            let _ = wr.write_all(payload).await;
            let _ = wr.shutdown().await;
            // Keep the write half (dropping it could end the stream) until the call ends.
            std::future::pending::<()>().await
        };
        let read = read_frames(&mut rd, &mut buffers);
        let io = async {
            tokio::pin!(read);
            tokio::pin!(exit);
            tokio::select! {
                _ = &mut read => exit.await,
                c = &mut exit => {
                    let _ = tokio::time::timeout(DRAIN, &mut read).await;
                    c
                }
            }
        };
        tokio::select! {
            c = tokio::time::timeout(limit, io) => match c {
                Ok(c) => Ok(c),
                Err(_) => Err(true),
            },
            _ = feed => unreachable!("feeding never ends by itself"),
            _ = cancel.wait_for(Option::is_some) => Err(false),
        }
    };
    match verdict {
        Ok(c) => {
            outcome.exit_code = Some(c.state.exit_code);
            if buffers.overflow {
                outcome.error = format!(
                    "the call wrote more than {} bytes to stdout",
                    super::calls::MAX_OUTPUT
                );
            } else if c.state.exit_code != 0 {
                outcome.error = match c.state.error.as_str() {
                    "" => format!("the function exited with code {}", c.state.exit_code),
                    why => format!("the function exited with code {}: {why}", c.state.exit_code),
                };
            }
        }
        Err(true) => {
            outcome.timed_out = true;
            outcome.error = format!(
                "the call timed out after {}s: its VM was killed",
                f.timeout_secs
            );
        }
        Err(false) => outcome.error = cancelled(&cancel),
    }
    outcome.container = Some(c.id.clone());
    outcome.stdout = buffers.stdout;
    outcome.stderr = buffers.stderr;
    outcome
}

fn cancelled(cancel: &watch::Receiver<Option<&'static str>>) -> String {
    let why = (*cancel.borrow()).unwrap_or("cancelled");
    format!("the call was cancelled: {why}")
}

/// The call's container and everything of it: its VM is killed if it still runs.
pub async fn remove(rt: &Arc<Runtime>, tenant: &str, id: &str) {
    if let Err(e) = rt.remove(tenant, id, true, true).await {
        if !matches!(e, crate::RuntimeError::NotFound(_)) {
            tracing::error!("removing the call container {id}: {e}");
        }
    }
}

#[derive(Default)]
struct Buffers {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    overflow: bool,
}

/// The supervisor's frames (`[stream, 0, 0, 0, len BE u32]` + payload) until the stream ends;
/// stdout kept up to [`super::calls::MAX_OUTPUT`], the start of stderr.
async fn read_frames(from: &mut (impl tokio::io::AsyncRead + Unpin), into: &mut Buffers) {
    let mut header = [0u8; 8];
    loop {
        if from.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let mut payload = vec![0u8; len];
        if from.read_exact(&mut payload).await.is_err() {
            return;
        }
        match header[0] {
            1 => {
                let room = super::calls::MAX_OUTPUT.saturating_sub(into.stdout.len());
                if payload.len() > room {
                    into.overflow = true;
                }
                into.stdout
                    .extend_from_slice(&payload[..payload.len().min(room)]);
            }
            2 => {
                let room = STDERR_KEPT.saturating_sub(into.stderr.len());
                into.stderr
                    .extend_from_slice(&payload[..payload.len().min(room)]);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn frames_are_split_and_bounded() {
        let mut input = frame(1, b"out");
        input.extend(frame(2, b"err"));
        input.extend(frame(1, &vec![b'x'; super::super::calls::MAX_OUTPUT]));
        let mut b = Buffers::default();
        read_frames(&mut input.as_slice(), &mut b).await;
        assert_eq!(b.stderr, b"err");
        assert_eq!(b.stdout.len(), super::super::calls::MAX_OUTPUT);
        assert!(b.stdout.starts_with(b"outxx"));
        assert!(b.overflow);
    }

    #[test]
    fn container_names_are_valid() {
        let long = "a".repeat(255);
        for f in ["f", "my-func", long.as_str()] {
            let n = container_name(f, "0123456789abcdef");
            crate::validate::container_name(&n).unwrap();
            assert!(n.ends_with("-call-01234567"), "{n}");
        }
    }
}
