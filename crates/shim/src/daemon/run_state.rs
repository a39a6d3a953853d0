//! Pause and resume of the whole VM (`docker pause`): QMP `stop` halts every vCPU and QEMU's
//! virtual clock, so nothing in the guest runs (its processes, its kernel, its agent) until
//! `cont`. The truth is QEMU's run state (`query-status`): the recorded `paused` follows it on
//! every `State` request, so a VM resumed or stopped behind the shim's back is reported as it is.
//!
//! QEMU's `stop` stops the guest's clock too: on resume the agent is sent the host's time.
//!
//! While paused the agent cannot answer: requests to it fail at once ("container is paused"),
//! except `Stats`, which repeats the last sample (a paused VM uses no CPU), and signals, which
//! wait in the port until the VM runs again.

use std::time::Duration;

use agent_proto::{Frame, HostMsg};
use serde_json::json;
use vm::Qmp;

use super::{now, Shim};
use crate::{Response, State, Status};

/// How long a QMP round trip may take: QEMU answers its monitor even while the VM is stopped.
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

/// Stop (`paused`) or resume the VM of a running container and record it.
pub(super) async fn set_paused(shim: &Shim, paused: bool) -> Response {
    let _one_at_a_time = shim.run_state.lock().await;
    if shim.state().status != Status::Running {
        return Response::err("container is not running");
    }
    let qmp = shim.dir.join(vm::QMP_SOCK);
    let done = tokio::task::spawn_blocking(move || {
        let mut q = Qmp::connect(&qmp, QMP_TIMEOUT)?;
        q.execute(if paused { "stop" } else { "cont" }, json!({}))
    })
    .await;
    match done {
        Ok(Ok(_)) => {
            let st = shim.update(|s| s.paused = paused);
            slog!("{}", if paused { "VM paused" } else { "VM resumed" });
            if !paused {
                set_guest_clock(shim);
            }
            Response::with_state(st)
        }
        Ok(Err(e)) => Response::err(format!(
            "cannot {} the VM: {e}",
            if paused { "pause" } else { "resume" }
        )),
        Err(e) => Response::err(format!("run state task: {e}")),
    }
}

/// The container's state with `paused` as QEMU has it now (recorded when it changed). When
/// QEMU cannot be asked, the recorded value stands.
pub(super) async fn current(shim: &Shim) -> State {
    let _one_at_a_time = shim.run_state.lock().await;
    let st = shim.state();
    if st.status != Status::Running {
        return st;
    }
    let qmp = shim.dir.join(vm::QMP_SOCK);
    let running = tokio::task::spawn_blocking(move || {
        let mut q = Qmp::connect(&qmp, QMP_TIMEOUT)?;
        q.execute("query-status", json!({}))
    })
    .await;
    let Ok(Ok(v)) = running else { return st };
    // QEMU stopped the VM itself for a write that failed on a full host disk: that is no
    // `docker pause` but `disk_full` (resumed by `crate::disk_full::watch`, or by an unpause).
    let disk_full = v.get("status").and_then(|s| s.as_str()) == Some("io-error");
    let st = if disk_full != st.disk_full {
        shim.update(|s| s.disk_full = disk_full)
    } else {
        st
    };
    match v.get("running").and_then(|r| r.as_bool()) {
        Some(running) if !disk_full && running == st.paused => {
            slog!("the VM is {} (changed outside the shim)", run_word(running));
            if running {
                set_guest_clock(shim);
            }
            shim.update(|s| s.paused = !running)
        }
        _ => st,
    }
}

/// The guest's clock stood still while the VM was stopped: give it the host's.
fn set_guest_clock(shim: &Shim) {
    shim.send(Frame::host(&HostMsg::SetClock {
        realtime_ns: crate::identity::realtime_ns(),
    }));
}

fn run_word(running: bool) -> &'static str {
    if running {
        "running"
    } else {
        "paused"
    }
}

/// Resume the VM if it is paused, so that what was just queued for the guest reaches it.
pub(super) async fn resume_if_paused(shim: &Shim) {
    if shim.state().paused {
        let r = set_paused(shim, false).await;
        if let Some(e) = r.error {
            slog!("resuming before a stop: {e}");
        }
    }
}
