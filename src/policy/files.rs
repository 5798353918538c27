//! Checks of the model and policy files before casbin sees them, with file:line messages.
//! casbin compiles a glob pattern on every match and panics on a malformed one, so every
//! policy field the matcher passes to globMatch is compiled here first.

use std::path::Path;

use globset::GlobBuilder;

use super::PolicyError;

/// What the policy file must look like, read from the model.
#[derive(Debug)]
pub(super) struct Shape {
    /// Field names of `p` (`sub, db, tbl, col, act, eft`).
    fields: Vec<String>,
    /// Indexes into `fields` that globMatch compiles as patterns.
    globbed: Vec<usize>,
    /// Number of fields of each `g`-type line, by its name (`g`, `g2`...).
    roles: Vec<(String, usize)>,
}

pub(super) fn error(path: &Path, line: Option<usize>, message: impl ToString) -> PolicyError {
    PolicyError {
        path: path.to_owned(),
        line,
        message: message.to_string(),
    }
}

pub(super) fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|e| error(path, None, e))
}

/// The `key = value` lines of the model, with their section and line number.
fn model_lines(text: &str) -> impl Iterator<Item = (String, usize, &str, &str)> {
    let mut section = String::new();
    text.lines().enumerate().filter_map(move |(i, line)| {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].trim().to_owned();
            return None;
        }
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (key, value) = line.split_once('=')?;
        Some((section.clone(), i + 1, key.trim(), value.trim()))
    })
}

pub(super) fn check_model(path: &Path, text: &str) -> Result<Shape, PolicyError> {
    let mut request = None;
    let mut fields = None;
    let mut matcher = None;
    let mut roles = Vec::new();
    for (section, line, key, value) in model_lines(text) {
        let names = || {
            value
                .split(',')
                .map(|f| f.trim().to_owned())
                .collect::<Vec<_>>()
        };
        match (section.as_str(), key) {
            ("request_definition", "r") => request = Some((line, names())),
            ("policy_definition", "p") => fields = Some(names()),
            ("matchers", "m") => matcher = Some(value.to_owned()),
            ("role_definition", name) => roles.push((name.to_owned(), names().len())),
            _ => {}
        }
    }
    let missing = |what: &str| error(path, None, format!("missing {what}"));
    let (line, request) = request.ok_or_else(|| missing("[request_definition] r"))?;
    if request.len() != 5 {
        return Err(error(
            path,
            Some(line),
            "pgward sends requests of five fields (sub, db, tbl, col, act); r must have five",
        ));
    }
    let fields = fields.ok_or_else(|| missing("[policy_definition] p"))?;
    let matcher = matcher.ok_or_else(|| missing("[matchers] m"))?;
    let globbed = glob_arguments(&matcher)
        .filter_map(|name| fields.iter().position(|f| *f == name))
        .collect();
    Ok(Shape {
        fields,
        globbed,
        roles,
    })
}

/// The `p.X` names passed as the pattern (second argument) of globMatch in a matcher.
fn glob_arguments(matcher: &str) -> impl Iterator<Item = String> + '_ {
    matcher.split("globMatch(").skip(1).filter_map(|call| {
        let args = call.split(')').next()?;
        let pattern = args.split(',').nth(1)?.trim();
        pattern.strip_prefix("p.").map(str::to_owned)
    })
}

pub(super) fn check_policy(path: &Path, text: &str, shape: &Shape) -> Result<(), PolicyError> {
    for (i, line) in text.lines().enumerate() {
        let line_no = Some(i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (kind, values) = fields.split_first().expect("split yields one field");
        if *kind == "p" {
            if values.len() != shape.fields.len() {
                return Err(error(
                    path,
                    line_no,
                    format!(
                        "a p line has {} fields ({}), this one has {}",
                        shape.fields.len(),
                        shape.fields.join(", "),
                        values.len()
                    ),
                ));
            }
            for &index in &shape.globbed {
                let pattern = values[index];
                if let Err(e) = GlobBuilder::new(pattern).literal_separator(true).build() {
                    return Err(error(
                        path,
                        line_no,
                        format!(
                            "{} {pattern:?} is not a valid glob pattern: {e}",
                            shape.fields[index]
                        ),
                    ));
                }
            }
            if let Some(eft) = shape.fields.iter().position(|f| f == "eft") {
                if !matches!(values[eft], "allow" | "deny") {
                    return Err(error(
                        path,
                        line_no,
                        format!("eft must be allow or deny, not {:?}", values[eft]),
                    ));
                }
            }
            if values.iter().any(|v| v.is_empty()) {
                return Err(error(path, line_no, "empty field"));
            }
        } else if let Some((_, arity)) = shape.roles.iter().find(|(name, _)| name == kind) {
            if values.len() < *arity || values.iter().any(|v| v.is_empty()) {
                return Err(error(
                    path,
                    line_no,
                    format!("a {kind} line has {arity} non-empty fields"),
                ));
            }
        } else {
            return Err(error(
                path,
                line_no,
                format!("unknown line type {kind:?} (expected p or a role definition)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = include_str!("../../policies/model.conf");

    fn check(policy: &str) -> Result<(), String> {
        let path = Path::new("policy.csv");
        let shape = check_model(Path::new("model.conf"), MODEL).map_err(|e| e.to_string())?;
        check_policy(path, policy, &shape).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_files_pass() {
        check(include_str!("../../policies/policy.csv")).unwrap();
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let bad_glob =
            "p, a, *, public.*, *, select, allow\np, a, *, public.[x, *, select, allow\n";
        let e = check(bad_glob).unwrap_err();
        assert!(e.starts_with("policy.csv:2: tbl \"public.[x\""), "{e}");
        assert!(check("p, a, *, t, *, select\n")
            .unwrap_err()
            .starts_with("policy.csv:1:"));
        assert!(check("p, a, *, t, *, select, maybe\n")
            .unwrap_err()
            .contains("allow or deny"));
        assert!(check("x, a, b\n")
            .unwrap_err()
            .contains("unknown line type"));
        assert!(check("g, alice\n")
            .unwrap_err()
            .starts_with("policy.csv:1:"));
        assert!(check("# comment\n\ng, alice, reader\n").is_ok());
    }

    #[test]
    fn glob_arguments_are_found_in_the_matcher() {
        let found: Vec<String> =
            glob_arguments("g(r.sub, p.sub) && globMatch(r.tbl, p.tbl) && globMatch(r.col, p.col)")
                .collect();
        assert_eq!(found, ["tbl", "col"]);
    }

    #[test]
    fn a_model_with_another_request_shape_is_refused() {
        let model = MODEL.replace("r = sub, db, tbl, col, act", "r = sub, obj, act");
        let e = check_model(Path::new("m.conf"), &model)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.conf:2:"), "{e}");
    }
}
