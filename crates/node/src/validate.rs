//! Checks on what users send, with Docker's rules and messages.

use crate::RuntimeError;

/// Docker's container name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, an optional leading slash.
pub fn container_name(name: &str) -> Result<String, RuntimeError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let ok = bare.len() >= 2
        && bare.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(bare.to_string())
    } else {
        Err(RuntimeError::Invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// Docker's network name rule: letters, digits, `_`, `.`, `-`, starting with a letter or digit.
pub fn network_name(name: &str) -> Result<(), RuntimeError> {
    let mut chars = name.chars();
    let ok = !name.is_empty()
        && name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// `KEY=value` or `KEY` (Docker then drops it); the key must be non-empty.
pub fn env(vars: &[String]) -> Result<(), RuntimeError> {
    for var in vars {
        let key = var.split('=').next().unwrap_or("");
        if key.is_empty() || key.contains(char::is_whitespace) || key.contains('\0') {
            return Err(RuntimeError::Invalid(format!(
                "invalid environment variable: {var}"
            )));
        }
    }
    Ok(())
}

/// A signal by name (`SIGTERM`, `TERM`, `term`) or number, as `docker kill -s` takes it.
pub fn signal(spec: &str) -> Result<i32, RuntimeError> {
    let invalid = || RuntimeError::Invalid(format!("Invalid signal: {spec}"));
    if let Ok(n) = spec.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(invalid())
        };
    }
    let upper = spec.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rt) = name.strip_prefix("RTMIN+") {
        return rt
            .parse::<i32>()
            .ok()
            .filter(|n| (0..=30).contains(n))
            .map(|n| 34 + n)
            .ok_or_else(invalid);
    }
    const NAMES: [&str; 31] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as i32 + 1)
        .ok_or_else(invalid)
}

/// A random Docker-style name, `adjective_surname`.
pub fn random_name() -> String {
    use rand::seq::SliceRandom;
    const LEFT: [&str; 16] = [
        "admiring", "brave", "clever", "dazzling", "eager", "festive", "gallant", "happy", "jolly",
        "keen", "lucid", "nifty", "quirky", "serene", "trusting", "vibrant",
    ];
    const RIGHT: [&str; 16] = [
        "babbage", "curie", "darwin", "euler", "fermi", "galois", "hopper", "lovelace", "noether",
        "pascal", "ritchie", "shannon", "thompson", "turing", "wozniak", "yonath",
    ];
    let mut rng = rand::thread_rng();
    format!(
        "{}_{}{}",
        LEFT.choose(&mut rng).expect("non-empty"),
        RIGHT.choose(&mut rng).expect("non-empty"),
        rand::Rng::gen_range(&mut rng, 0..100)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases = [
            ("web", true),
            ("/web", true),
            ("a", false),
            ("-x", false),
            ("my app", false),
            ("x_1.2-3", true),
        ];
        for (i, (name, ok)) in cases.iter().enumerate() {
            assert_eq!(container_name(name).is_ok(), *ok, "test[{i}] {name}");
        }
        assert_eq!(container_name("/web").unwrap(), "web");
    }

    #[test]
    fn signals() {
        let cases = [
            ("SIGTERM", Some(15)),
            ("term", Some(15)),
            ("KILL", Some(9)),
            ("10", Some(10)),
            ("USR1", Some(10)),
            ("SIGRTMIN+1", Some(35)),
            ("0", None),
            ("FOO", None),
            ("99", None),
        ];
        for (i, (spec, want)) in cases.iter().enumerate() {
            assert_eq!(signal(spec).ok(), *want, "test[{i}] {spec}");
        }
    }

    #[test]
    fn env_rules() {
        assert!(env(&["A=1".into(), "B".into(), "C=".into()]).is_ok());
        assert!(env(&["=x".into()]).is_err());
        assert!(env(&["A B=1".into()]).is_err());
    }
}
