//! `docker commit --change`: the Dockerfile instructions a commit may apply to the new image's
//! config (Docker's list: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR,
//! and STOPSIGNAL), read as Docker's builder reads them.

use serde_json::{json, Map, Value};

use crate::{Result, RuntimeError};

fn bad(line: &str, why: &str) -> RuntimeError {
    RuntimeError::Invalid(format!("invalid --change \"{line}\": {why}"))
}

/// `["a", "b"]` (exec form) or a line for `/bin/sh -c` (shell form).
fn command(line: &str, rest: &str) -> Result<Value> {
    if rest.trim_start().starts_with('[') {
        let list: Vec<String> = serde_json::from_str(rest)
            .map_err(|_| bad(line, "the exec form is a JSON array of strings"))?;
        return Ok(json!(list));
    }
    Ok(json!(["/bin/sh", "-c", rest]))
}

/// Words as a shell splits them (quotes kept together, then removed).
fn words(line: &str, rest: &str) -> Result<Vec<String>> {
    shlex::split(rest).ok_or_else(|| bad(line, "unbalanced quotes"))
}

/// `K=V K2="v 2"`, or the old `K the value`.
fn pairs(line: &str, rest: &str) -> Result<Vec<(String, String)>> {
    let words = words(line, rest)?;
    if words.first().is_some_and(|w| !w.contains('=')) {
        let (k, v) = rest
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((rest.trim(), ""));
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(bad(line, "expected KEY=VALUE")),
        })
        .collect()
}

fn object<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    if !config.get(key).is_some_and(Value::is_object) {
        config.insert(key.into(), json!({}));
    }
    config[key].as_object_mut().expect("made an object")
}

/// Applies each instruction of `lines` to `config` (an image config's `config` object).
pub fn apply(config: &mut Map<String, Value>, lines: &[String]) -> Result<()> {
    for line in lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(bad(line, "the instruction has no argument"));
        }
        match word.to_ascii_uppercase().as_str() {
            "CMD" => {
                config.insert("Cmd".into(), command(line, rest)?);
            }
            "ENTRYPOINT" => {
                config.insert("Entrypoint".into(), command(line, rest)?);
                // A new entrypoint drops the image's command, as Docker's builder does.
                config.insert("Cmd".into(), Value::Null);
            }
            "ENV" => {
                let env = config
                    .entry("Env")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .ok_or_else(|| bad(line, "the image's Env is not a list"))?;
                for (k, v) in pairs(line, rest)? {
                    env.retain(|e| e.as_str().and_then(|e| e.split('=').next()) != Some(&k));
                    env.push(json!(format!("{k}={v}")));
                }
            }
            "LABEL" => {
                for (k, v) in pairs(line, rest)? {
                    object(config, "Labels").insert(k, json!(v));
                }
            }
            "EXPOSE" => {
                for port in words(line, rest)? {
                    let (number, proto) = port.split_once('/').unwrap_or((&port, "tcp"));
                    if number.parse::<u16>().map_or(true, |n| n == 0)
                        || !matches!(proto, "tcp" | "udp" | "sctp")
                    {
                        return Err(bad(line, "expected PORT or PORT/PROTOCOL"));
                    }
                    object(config, "ExposedPorts").insert(format!("{number}/{proto}"), json!({}));
                }
            }
            "VOLUME" => {
                let paths: Vec<String> = if rest.starts_with('[') {
                    serde_json::from_str(rest)
                        .map_err(|_| bad(line, "expected a JSON array of paths"))?
                } else {
                    words(line, rest)?
                };
                for p in paths {
                    if !p.starts_with('/') {
                        return Err(bad(line, "volume paths are absolute"));
                    }
                    object(config, "Volumes").insert(p, json!({}));
                }
            }
            "USER" => {
                config.insert("User".into(), json!(rest));
            }
            "WORKDIR" => {
                if !rest.starts_with('/') {
                    return Err(bad(line, "the working directory is an absolute path"));
                }
                config.insert("WorkingDir".into(), json!(rest));
            }
            "STOPSIGNAL" => {
                config.insert("StopSignal".into(), json!(rest));
            }
            "ONBUILD" => {
                config
                    .entry("OnBuild")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .ok_or_else(|| bad(line, "the image's OnBuild is not a list"))?
                    .push(json!(rest));
            }
            other => {
                return Err(bad(
                    line,
                    &format!(
                        "{other} is not a valid change command (use CMD, ENTRYPOINT, ENV, \
                         EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR)"
                    ),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(lines: &[&str]) -> Result<Value> {
        let mut c = json!({"Env": ["PATH=/bin", "A=old"], "Cmd": ["sh"]});
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        apply(c.as_object_mut().unwrap(), &lines)?;
        Ok(c)
    }

    #[test]
    fn instructions_set_the_config_as_dockerfiles_do() {
        let c = applied(&[
            r#"CMD ["echo", "hi"]"#,
            "ENV A=new B=\"two words\"",
            "env C the rest of it",
            "EXPOSE 80 53/udp",
            "LABEL team=web",
            "WORKDIR /srv",
            "USER 1000:1000",
            "VOLUME /data",
            "STOPSIGNAL SIGINT",
        ])
        .unwrap();
        assert_eq!(c["Cmd"], json!(["echo", "hi"]));
        assert_eq!(
            c["Env"],
            json!(["PATH=/bin", "A=new", "B=two words", "C=the rest of it"])
        );
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Labels"], json!({"team": "web"}));
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!(c["StopSignal"], "SIGINT");
    }

    #[test]
    fn shell_form_and_entrypoint() {
        let c = applied(&["ENTRYPOINT top -b"]).unwrap();
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "top -b"]));
        assert_eq!(c["Cmd"], Value::Null);
    }

    #[test]
    fn bad_instructions_are_refused_with_the_reason() {
        for (line, why) in [
            ("RUN make", "RUN is not a valid change command"),
            ("EXPOSE http", "PORT/PROTOCOL"),
            ("WORKDIR srv", "absolute"),
            ("CMD", "no argument"),
            ("ENV A=\"open", "unbalanced"),
            (r#"CMD ["a", 1]"#, "JSON array"),
        ] {
            let e = applied(&[line]).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(line), "{line}: {e}");
        }
    }
}
