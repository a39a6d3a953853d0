//! Writing sysctls of a network namespace: /proc/sys/net is resolved against the netns of the
//! thread that opens it, so call these from a thread inside the right namespace.

use std::fs;

use crate::error::NetError;

/// Sets `/proc/sys/<key>` (key with slashes, e.g. `net/ipv4/ip_forward`).
pub(crate) fn set(key: &str, value: &str) -> Result<(), NetError> {
    let path = format!("/proc/sys/{key}");
    let current =
        fs::read_to_string(&path).map_err(|e| NetError::io(format!("read sysctl {key}"), e))?;
    if current.trim() == value {
        return Ok(());
    }
    fs::write(&path, value).map_err(|e| NetError::io(format!("set sysctl {key}={value}"), e))
}
