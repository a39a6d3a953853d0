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

/// `KEY=value` or `KEY` (Docker then drops it); the key must be non-empty, and neither key nor
/// value may hold a NUL byte (see [`process`]).
pub fn env(vars: &[String]) -> Result<(), RuntimeError> {
    for var in vars {
        let (key, value) = var.split_once('=').unwrap_or((var, ""));
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(RuntimeError::Invalid(format!(
                "invalid environment variable: {}",
                var.escape_debug()
            )));
        }
        if key.contains('\0') || value.contains('\0') {
            return Err(RuntimeError::Invalid(format!(
                "invalid environment variable {}: it contains a NUL byte",
                key.escape_debug()
            )));
        }
    }
    Ok(())
}

/// What becomes the container's process in the guest (its command, environment, working
/// directory, user, host and domain names) crosses to the agent as C strings, which end at a
/// NUL byte: one inside would be accepted here and fail every start. Refused at create (and at
/// exec create, [`exec`]), naming where it is.
pub fn process(
    command: &[String],
    env_vars: &[String],
    working_dir: &str,
    user: &str,
    names: &[(&str, &str)],
) -> Result<(), RuntimeError> {
    env(env_vars)?;
    if let Some(i) = command.iter().position(|a| a.contains('\0')) {
        return Err(RuntimeError::Invalid(format!(
            "invalid command: argument {i} ({}) contains a NUL byte",
            command[i].escape_debug()
        )));
    }
    for (what, value) in [("working directory", working_dir), ("user", user)]
        .into_iter()
        .chain(names.iter().copied())
    {
        if value.contains('\0') {
            return Err(RuntimeError::Invalid(format!(
                "invalid {what} {}: it contains a NUL byte",
                value.escape_debug()
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
        assert!(env(&["A=1".into(), "B".into(), "C=".into(), "D=a=b".into()]).is_ok());
        assert!(env(&["=x".into()]).is_err());
        assert!(env(&["A B=1".into()]).is_err());
        let cases = [
            ("GOOD=1\0", "GOOD"),
            ("BAD=a\0b", "BAD"),
            ("NUL\0KEY=x", "NUL\\0KEY"),
            ("ONLY\0", "ONLY\\0"),
        ];
        for (i, (var, named)) in cases.iter().enumerate() {
            let err = env(&["OK=1".into(), var.to_string()])
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!("invalid environment variable {named}: it contains a NUL byte"),
                "test[{i}]"
            );
        }
    }

    #[test]
    fn nul_bytes_in_what_reaches_the_guest() {
        let ok = |cmd: &[&str], wd: &str, user: &str, host: &str| {
            let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            process(&cmd, &["A=1".into()], wd, user, &[("hostname", host)])
        };
        assert!(ok(&["sh", "-c", "true"], "/", "root", "web").is_ok());
        let cases = [
            (ok(&["sh", "-c", "a\0b"], "/", "", ""), "argument 2"),
            (ok(&["sh"], "/tmp\0x", "", ""), "working directory"),
            (ok(&["sh"], "", "root\0", ""), "user"),
            (ok(&["sh"], "", "", "we\0b"), "hostname"),
        ];
        for (i, (got, word)) in cases.into_iter().enumerate() {
            let err = got.unwrap_err().to_string();
            assert!(
                err.contains(word) && err.contains("NUL"),
                "test[{i}]: {err}"
            );
        }
    }
}
