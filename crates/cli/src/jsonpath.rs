//! kubectl's `-o jsonpath=TEMPLATE`, the subset scripts use: text with `{...}` expressions
//! of `.field`, `..field` (recursive), `[N]`, `[*]` and `[?(@.field=="value")]`. Results of
//! one expression are joined with spaces, as kubectl prints them.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Recursive(String),
    Index(i64),
    All,
    Filter(Vec<String>, String),
}

/// Renders `template` against `data`, or says what in the template is wrong.
pub fn render(template: &str, data: &Value) -> Result<String, String> {
    let template = template
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(template);
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in jsonpath template {template:?}"))?;
        let expr = rest[start + 1..start + end].trim();
        if let Some(lit) = expr.strip_prefix('"').and_then(|e| e.strip_suffix('"')) {
            // A literal, e.g. {"\n"}.
            out.push_str(&lit.replace("\\n", "\n").replace("\\t", "\t"));
            rest = &rest[start + end + 1..];
            continue;
        }
        if expr.starts_with("range ") || expr == "end" {
            return Err(format!(
                "jsonpath {{{expr}}}: range/end is not supported; use {{.items[*].FIELD}} or -o json"
            ));
        }
        let values = eval(&parse(expr)?, data);
        let texts: Vec<String> = values.iter().map(|v| text(v)).collect();
        out.push_str(&texts.join(" "));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse(expr: &str) -> Result<Vec<Step>, String> {
    let bad = |why: &str| format!("jsonpath {{{expr}}}: {why}");
    let mut steps = Vec::new();
    let s = expr.trim();
    let s = s.strip_prefix('$').unwrap_or(s);
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && chars[*i] != '.' && chars[*i] != '[' {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    while i < chars.len() {
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                i += 2;
                let name = ident(&mut i);
                if name.is_empty() {
                    return Err(bad("'..' must be followed by a field name"));
                }
                steps.push(Step::Recursive(name));
            }
            '.' => {
                i += 1;
                let name = ident(&mut i);
                if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                let close = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .ok_or_else(|| bad("unclosed '['"))?;
                let inner: String = chars[i + 1..i + close].iter().collect();
                i += close + 1;
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                    let (lhs, rhs) = f
                        .split_once("==")
                        .ok_or_else(|| bad("only ?(@.field==\"value\") filters are supported"))?;
                    let path = lhs
                        .trim()
                        .strip_prefix("@.")
                        .ok_or_else(|| bad("a filter starts with @."))?;
                    let value = rhs.trim().trim_matches(|c| c == '"' || c == '\'');
                    steps.push(Step::Filter(
                        path.split('.').map(str::to_string).collect(),
                        value.to_string(),
                    ));
                } else {
                    let n: i64 = inner
                        .parse()
                        .map_err(|_| bad("an index must be a number, * or a ?() filter"))?;
                    steps.push(Step::Index(n));
                }
            }
            _ => {
                let name = ident(&mut i);
                steps.push(Step::Field(name));
            }
        }
    }
    Ok(steps)
}

fn descend<'a>(v: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(name) {
                out.push(x);
            }
            for (k, x) in m {
                if k != name {
                    descend(x, name, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| descend(x, name, out)),
        _ => {}
    }
}

fn eval<'a>(steps: &[Step], data: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![data];
    for step in steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(name) => {
                    if let Some(x) = v.get(name) {
                        next.push(x);
                    }
                }
                Step::Recursive(name) => descend(v, name, &mut next),
                Step::Index(n) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                        if let Some(x) = usize::try_from(idx).ok().and_then(|i| a.get(i)) {
                            next.push(x);
                        }
                    }
                }
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(path, value) => {
                    if let Some(a) = v.as_array() {
                        next.extend(a.iter().filter(|x| {
                            let mut cur = Some(*x);
                            for p in path {
                                cur = cur.and_then(|c| c.get(p));
                            }
                            cur.is_some_and(|c| text(c) == *value)
                        }));
                    }
                }
            }
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> Value {
        json!({"kind": "List", "items": [
            {"metadata": {"name": "sleep-1"}, "spec": {"ports": [{"name": "http2", "nodePort": 31380}, {"name": "https", "nodePort": 31390}]}},
            {"metadata": {"name": "sleep-2"}}
        ]})
    }

    #[test]
    fn the_expressions_the_seeds_use() {
        let d = pods();
        assert_eq!(
            render("{.items..metadata.name}", &d).unwrap(),
            "sleep-1 sleep-2"
        );
        assert_eq!(
            render("'{.items[0].metadata.name}'", &d).unwrap(),
            "sleep-1"
        );
        assert_eq!(render("{.items[0]..metadata.name}", &d).unwrap(), "sleep-1");
        assert_eq!(
            render(r#"{.items[0].spec.ports[?(@.name=="https")].nodePort}"#, &d).unwrap(),
            "31390"
        );
        assert_eq!(render("{.items[-1].metadata.name}", &d).unwrap(), "sleep-2");
        assert_eq!(
            render("name={.items[*].metadata.name}!", &d).unwrap(),
            "name=sleep-1 sleep-2!"
        );
        assert_eq!(render("{.items[5].metadata.name}", &d).unwrap(), "");
    }

    #[test]
    fn literals_and_unsupported_range() {
        let d = pods();
        assert_eq!(
            render(r#"{.items[0].metadata.name}{"\n"}"#, &d).unwrap(),
            "sleep-1\n"
        );
        assert!(render("{range .items[*]}{.metadata.name}{end}", &d)
            .unwrap_err()
            .contains("range/end is not supported"));
    }

    #[test]
    fn bad_templates_say_why() {
        assert!(render("{.items[", &pods())
            .unwrap_err()
            .contains("unclosed"));
        assert!(render("{.items[x]}", &pods())
            .unwrap_err()
            .contains("index"));
    }
}
