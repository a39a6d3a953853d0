//! The json-file options a container may set (`--log-opt max-size=10m --log-opt max-file=3`):
//! how large each log file grows before it is rotated, and how many are kept. A container's
//! logs may not outgrow what the operator allows one container (hyperd's limits, file size
//! times files), so a tenant cannot fill the node's disk with them.

use crate::model::LogConfig;
use crate::{Result, RuntimeError};

/// Each rotation renames every kept file, and a line may rotate a tiny file: bounds on both keep
/// a tenant's chatter from costing the node a rename storm (`shim::log`).
const MAX_FILES: u32 = 100;
const MIN_FILE_BYTES: u64 = 1 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_files: u32,
}

/// The container's log limits: the operator's unless `max-size` is set (without it Docker
/// does not rotate, so `max-file` alone changes nothing here either).
pub fn limits(config: &LogConfig, operator: Limits) -> Result<Limits> {
    let mut max_bytes = None;
    let mut max_files = 1;
    for (key, value) in &config.config {
        match key.as_str() {
            "max-size" if value == "-1" => {}
            "max-size" => max_bytes = Some(size(value)?),
            "max-file" => {
                max_files = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_FILES).contains(n))
                    .ok_or_else(|| {
                        RuntimeError::Invalid(format!(
                            "invalid max-file {value:?}: a whole number from 1 to {MAX_FILES}"
                        ))
                    })?
            }
            other => {
                return Err(RuntimeError::Unsupported(format!(
                "hyper does not support the log option {other:?}: json-file logs here take max-size and max-file"
            )))
            }
        }
    }
    let Some(max_bytes) = max_bytes else {
        return Ok(operator);
    };
    if max_bytes < MIN_FILE_BYTES {
        return Err(RuntimeError::Invalid(format!(
            "invalid max-size of {max_bytes} bytes: at least 1k"
        )));
    }
    let allowed = operator.max_bytes * u64::from(operator.max_files);
    if max_bytes.saturating_mul(u64::from(max_files)) > allowed {
        return Err(RuntimeError::Invalid(format!(
            "logs of at most {} KiB per container are kept here: lower max-size ({max_bytes} bytes) or max-file ({max_files})",
            allowed >> 10
        )));
    }
    Ok(Limits {
        max_bytes,
        max_files,
    })
}

/// `10m`, `512k`, `1g` or bytes, as Docker's json-file takes it.
fn size(text: &str) -> Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(['b', 'k', 'm', 'g']);
    let shift = match lower.trim_end_matches('b').chars().last() {
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| {
            RuntimeError::Invalid(format!("invalid max-size {text:?}: a size such as 10m"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: Limits = Limits {
        max_bytes: 10 << 20,
        max_files: 3,
    };

    fn config(pairs: &[(&str, &str)]) -> LogConfig {
        LogConfig {
            kind: "json-file".into(),
            config: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn sizes_and_files_within_the_operators_bound() {
        let got = limits(&config(&[("max-size", "1m"), ("max-file", "5")]), OPERATOR).unwrap();
        assert_eq!(
            got,
            Limits {
                max_bytes: 1 << 20,
                max_files: 5
            }
        );
        let got = limits(&config(&[("max-size", "512k")]), OPERATOR).unwrap();
        assert_eq!(
            got,
            Limits {
                max_bytes: 512 << 10,
                max_files: 1
            }
        );
        // max-file without max-size, or max-size -1: no rotation asked, the operator's apply.
        for c in [
            config(&[("max-file", "100")]),
            config(&[("max-size", "-1")]),
            config(&[]),
        ] {
            assert_eq!(limits(&c, OPERATOR).unwrap(), OPERATOR);
        }
    }

    #[test]
    fn bad_and_unhonoured_options_are_named() {
        for (pairs, says) in [
            (vec![("max-size", "lots")], "invalid max-size \"lots\""),
            (
                vec![("max-size", "10m"), ("max-file", "0")],
                "invalid max-file \"0\"",
            ),
            (
                vec![("max-size", "20m"), ("max-file", "2")],
                "at most 30720 KiB per container",
            ),
            (
                vec![("compress", "true")],
                "does not support the log option \"compress\"",
            ),
        ] {
            let e = limits(&config(&pairs), OPERATOR).unwrap_err().to_string();
            assert!(e.contains(says), "{pairs:?}: {e}");
        }
    }
}
