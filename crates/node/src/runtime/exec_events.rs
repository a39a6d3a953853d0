//! Docker's exec events: `exec_create: CMD ARGS` and `exec_start: CMD ARGS` (the command is
//! part of the action, as Docker writes it: entrypoint, a space, the arguments), then
//! `exec_die` with the exit code. Each carries the exec's id as `execID`.

use super::{ExecInfo, Runtime};
use crate::events::Event;
use crate::model::Container;

/// `exec_create: sh -c date`: Docker's action, with its trailing space when there are no
/// arguments (`exec_create: ls `).
fn action(kind: &str, cmd: &[String]) -> String {
    let (entrypoint, args) = cmd
        .split_first()
        .map_or(("", &[][..]), |(e, a)| (e.as_str(), a));
    format!("{kind}: {entrypoint} {}", args.join(" "))
}

impl Runtime {
    pub(super) fn emit_exec_event(&self, c: &Container, info: &ExecInfo, kind: &str) {
        self.events.emit(
            &c.tenant,
            Event::container(
                c,
                &action(kind, &info.config.cmd),
                &[("execID", info.id.clone())],
            ),
        );
    }

    /// `exec_die` of a finished exec (none when its container is gone already).
    pub(super) fn emit_exec_die(&self, info: &ExecInfo, exit_code: i64) {
        let Ok(c) = self.get(&info.tenant, &info.container_id) else {
            return;
        };
        self.events.emit(
            &info.tenant,
            Event::container(
                &c,
                "exec_die",
                &[
                    ("execID", info.id.clone()),
                    ("exitCode", exit_code.to_string()),
                ],
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::action;

    #[test]
    fn actions_read_like_dockers() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            action("exec_start", &v(&["sh", "-c", "echo hi"])),
            "exec_start: sh -c echo hi"
        );
        assert_eq!(action("exec_create", &v(&["ls"])), "exec_create: ls ");
    }
}
