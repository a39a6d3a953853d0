//! CPU priority of host processes we start: work nobody waits for (a removed VM's exit, a
//! standby VM's launch while starts or removals are in flight) runs at SCHED_IDLE, on the
//! cores nothing else wants.

/// Puts every thread of process `pid` at SCHED_IDLE (`background`) or back at the normal
/// policy. Best effort: a process or thread already gone has nothing to change.
pub fn set(pid: u32, background: bool) {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    let policy = match background {
        true => libc::SCHED_IDLE,
        false => libc::SCHED_OTHER,
    };
    for tid in threads
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse::<i32>().ok())
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler(2) only reads the sched_param it is given.
        unsafe { libc::sched_setscheduler(tid, policy, &param) };
    }
}
