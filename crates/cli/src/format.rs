//! A small evaluator for the Go-template forms `--format` takes in docker: literal text,
//! `{{.Field}}`, `{{.A.B}}`, `{{.}}`, `{{json .}}`, `{{json .Field}}`, pipelines
//! (`{{.Name | upper}}`), a few of docker's functions (json, upper, lower, title, join, split,
//! index, len, truncate, pad, println) and the `table` prefix. Data is a `serde_json::Value`.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FormatError {
    #[error("template: unclosed action in {0:?}")]
    Unclosed(String),
    #[error("template: unterminated quoted string in {0:?}")]
    Quote(String),
    #[error("template: function {0:?} not defined")]
    UnknownFunction(String),
    #[error("template: wrong number of args for {0}")]
    Args(&'static str),
    #[error("template: empty command")]
    Empty,
    #[error("template: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `.A.B` (empty path is `.`).
    Field(Vec<String>),
    Str(String),
    Num(i64),
}

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Operand(Operand),
    Call(String, Vec<Operand>),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Vec<Command>),
}

/// A parsed `--format` string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
    /// The string began with `table `: print a header row and align columns.
    pub table: bool,
}

impl Template {
    pub fn parse(src: &str) -> Result<Self, FormatError> {
        let (table, body) = match src.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, src),
        };
        let body = unescape(body);
        let mut nodes = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            let mut text = rest[..start].to_owned();
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| FormatError::Unclosed(src.to_owned()))?;
            let mut inner = &after[..end];
            let mut next = &after[end + 2..];
            if let Some(s) = inner.strip_prefix("- ") {
                inner = s;
                text = text.trim_end().to_owned();
            }
            if let Some(s) = inner.strip_suffix(" -") {
                inner = s;
                next = next.trim_start();
            }
            if !text.is_empty() {
                nodes.push(Node::Text(text));
            }
            nodes.push(Node::Action(parse_pipeline(inner)?));
            rest = next;
        }
        if !rest.is_empty() {
            nodes.push(Node::Text(rest.to_owned()));
        }
        Ok(Self { nodes, table })
    }

    /// Renders the template against `data`.
    pub fn render(&self, data: &Value) -> Result<String, FormatError> {
        let mut out = String::new();
        for node in &self.nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(cmds) => {
                    let mut acc: Option<Value> = None;
                    for cmd in cmds {
                        acc = Some(eval_command(cmd, data, acc)?);
                    }
                    out.push_str(&display(&acc.unwrap_or(Value::Null)));
                }
            }
        }
        Ok(out)
    }
}

/// Docker passes `\t` and `\n` typed literally on the command line through as escapes.
fn unescape(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

fn tokenize(src: &str) -> Result<Vec<String>, FormatError> {
    let mut tokens = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == '(' || c == ')' {
            chars.next();
        } else if c == '|' {
            chars.next();
            tokens.push("|".into());
        } else if c == '"' || c == '`' {
            chars.next();
            let mut s = String::from('"');
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == c {
                    closed = true;
                    break;
                }
                if ch == '\\' && c == '"' {
                    match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(o) => s.push(o),
                        None => break,
                    }
                } else {
                    s.push(ch);
                }
            }
            if !closed {
                return Err(FormatError::Quote(src.to_owned()));
            }
            tokens.push(s);
        } else {
            let mut s = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '|' || ch == '(' || ch == ')' {
                    break;
                }
                s.push(ch);
                chars.next();
            }
            tokens.push(s);
        }
    }
    Ok(tokens)
}

fn parse_operand(tok: &str) -> Result<Operand, FormatError> {
    if let Some(s) = tok.strip_prefix('"') {
        return Ok(Operand::Str(s.to_owned()));
    }
    if tok == "." {
        return Ok(Operand::Field(Vec::new()));
    }
    if let Some(path) = tok.strip_prefix('.') {
        return Ok(Operand::Field(path.split('.').map(str::to_owned).collect()));
    }
    if let Ok(n) = tok.parse::<i64>() {
        return Ok(Operand::Num(n));
    }
    Err(FormatError::Invalid(format!("unexpected {tok:?}")))
}

const FUNCTIONS: [&str; 11] = [
    "json", "upper", "lower", "title", "join", "split", "index", "len", "truncate", "pad",
    "println",
];

fn parse_pipeline(src: &str) -> Result<Vec<Command>, FormatError> {
    let tokens = tokenize(src)?;
    let mut cmds = Vec::new();
    for part in tokens.split(|t| t == "|") {
        let (first, args) = part.split_first().ok_or(FormatError::Empty)?;
        if first.starts_with('.') || first.starts_with('"') || first.parse::<i64>().is_ok() {
            if !args.is_empty() {
                return Err(FormatError::Invalid(format!(
                    "can't give argument to non-function {first}"
                )));
            }
            cmds.push(Command::Operand(parse_operand(first)?));
        } else if FUNCTIONS.contains(&first.as_str()) {
            let args = args
                .iter()
                .map(|a| parse_operand(a))
                .collect::<Result<_, _>>()?;
            cmds.push(Command::Call(first.clone(), args));
        } else {
            return Err(FormatError::UnknownFunction(first.clone()));
        }
    }
    if cmds.is_empty() {
        return Err(FormatError::Empty);
    }
    Ok(cmds)
}

fn lookup(data: &Value, path: &[String]) -> Value {
    let mut cur = data;
    for key in path {
        match cur.get(key.as_str()) {
            Some(v) => cur = v,
            None => return Value::String("<no value>".into()),
        }
    }
    cur.clone()
}

fn operand(op: &Operand, data: &Value) -> Value {
    match op {
        Operand::Field(path) => lookup(data, path),
        Operand::Str(s) => Value::String(s.clone()),
        Operand::Num(n) => Value::from(*n),
    }
}

fn eval_command(cmd: &Command, data: &Value, piped: Option<Value>) -> Result<Value, FormatError> {
    let (name, ops) = match cmd {
        Command::Operand(op) => return Ok(operand(op, data)),
        Command::Call(name, ops) => (name.as_str(), ops),
    };
    let mut args: Vec<Value> = ops.iter().map(|o| operand(o, data)).collect();
    args.extend(piped);
    let s = |v: &Value| display(v);
    Ok(match (name, args.as_slice()) {
        ("json", [v]) => Value::String(serde_json::to_string(v).unwrap_or_default()),
        ("json", _) => return Err(FormatError::Args("json")),
        ("upper", [v]) => Value::String(s(v).to_uppercase()),
        ("lower", [v]) => Value::String(s(v).to_lowercase()),
        ("title", [v]) => Value::String(title(&s(v))),
        ("join", [v, sep]) => {
            let items: Vec<String> = match v {
                Value::Array(a) => a.iter().map(display).collect(),
                other => vec![display(other)],
            };
            Value::String(items.join(&s(sep)))
        }
        ("split", [v, sep]) => Value::Array(
            s(v).split(&s(sep))
                .map(|p| Value::String(p.into()))
                .collect(),
        ),
        ("index", [v, key]) => match (v, key) {
            (Value::Array(a), Value::Number(n)) => n
                .as_u64()
                .and_then(|i| a.get(i as usize))
                .cloned()
                .unwrap_or(Value::Null),
            (Value::Object(m), k) => m
                .get(&s(k))
                .cloned()
                .unwrap_or(Value::String(String::new())),
            _ => Value::Null,
        },
        ("len", [v]) => Value::from(match v {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            other => s(other).chars().count(),
        }),
        ("truncate", [v, n]) => {
            let n = n.as_u64().unwrap_or(0) as usize;
            Value::String(s(v).chars().take(n).collect())
        }
        ("pad", [v, l, r]) => {
            let l = l.as_u64().unwrap_or(0) as usize;
            let r = r.as_u64().unwrap_or(0) as usize;
            Value::String(format!("{}{}{}", " ".repeat(l), s(v), " ".repeat(r)))
        }
        ("println", vs) => Value::String(format!(
            "{}\n",
            vs.iter().map(display).collect::<Vec<_>>().join(" ")
        )),
        (
            "upper" | "lower" | "title" | "join" | "split" | "index" | "len" | "truncate" | "pad",
            _,
        ) => return Err(FormatError::Args("function")),
        (other, _) => return Err(FormatError::UnknownFunction(other.to_owned())),
    })
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

/// Prints a value as Go's `%v` does for decoded JSON: strings bare, `[a b]`, `map[k:v]`.
pub fn display(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(display).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", display(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn forms() {
        let v = json!({
            "ID": "abc", "Names": "web",
            "State": {"Status": "running", "Pid": 42, "Running": true},
            "Config": {"Hostname": "h1", "Env": ["A=1", "B=2"], "Labels": {"k": "v"}},
        });
        let cases = [
            ("{{.ID}}", "abc"),
            ("id={{.ID}} name={{ .Names }}", "id=abc name=web"),
            ("{{.State.Status}}", "running"),
            ("{{.State.Pid}}", "42"),
            ("{{.State.Running}}", "true"),
            ("{{.Config.Hostname}}", "h1"),
            ("{{json .Config.Env}}", r#"["A=1","B=2"]"#),
            ("{{json .State.Status}}", r#""running""#),
            ("{{.Config.Env}}", "[A=1 B=2]"),
            ("{{.Config.Labels}}", "map[k:v]"),
            ("{{index .Config.Labels \"k\"}}", "v"),
            ("{{join .Config.Env \",\"}}", "A=1,B=2"),
            ("{{.Names | upper}}", "WEB"),
            ("{{upper .Names}}", "WEB"),
            ("{{len .Config.Env}}", "2"),
            ("{{.Missing}}", "<no value>"),
            ("plain", "plain"),
            ("{{.ID}}\\t{{.Names}}", "abc\tweb"),
            ("{{- .ID -}} x", "abcx"),
        ];
        for (i, (t, want)) in cases.iter().enumerate() {
            assert_eq!(render(t, &v), *want, "test[{i}] {t}");
        }
        assert_eq!(render("{{json .}}", &json!({"a": 1})), r#"{"a":1}"#);
    }

    #[test]
    fn table_prefix() {
        let t = Template::parse("table {{.ID}}\t{{.Names}}").unwrap();
        assert!(t.table);
        assert_eq!(
            t.render(&json!({"ID": "ID", "Names": "NAMES"})).unwrap(),
            "ID\tNAMES"
        );
        assert!(!Template::parse("tables {{.ID}}").unwrap().table);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Template::parse("{{.ID"),
            Err(FormatError::Unclosed(_))
        ));
        assert!(matches!(
            Template::parse("{{nope .ID}}"),
            Err(FormatError::UnknownFunction(_))
        ));
        assert!(matches!(Template::parse("{{}}"), Err(FormatError::Empty)));
    }
}
