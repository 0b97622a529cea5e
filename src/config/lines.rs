//! Where in the file a problem is: `check-config` names the line of the key a problem is
//! about, so the operator goes straight to it.

/// `problem` with the line of the file it is about in front (`line 6: ...`), when it names a
/// key of a table (`oidc.decision_max_age ...`) or a target (`target prod-gke: ...`) that
/// the file spells out.
pub fn with_line(text: &str, problem: &str) -> String {
    let line = if let Some(rest) = problem.strip_prefix("target ") {
        rest.split_once(':')
            .and_then(|(name, _)| target_line(text, name))
    } else {
        problem
            .split_once(' ')
            .and_then(|(path, _)| path.split_once('.'))
            .and_then(|(table, key)| key_line(text, table, key))
    };
    match line {
        Some(n) => format!("line {n}: {problem}"),
        None => problem.to_owned(),
    }
}

/// The 1-based line of `key = ...` inside `[table]`.
fn key_line(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == format!("[{table}]");
        } else if inside && assigns(line, key) {
            return Some(i + 1);
        }
    }
    None
}

/// The 1-based line of `name = "NAME"` inside a `[[targets]]` table.
fn target_line(text: &str, name: &str) -> Option<usize> {
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[[targets]]";
        } else if inside
            && assigns(line, "name")
            && line
                .split_once('=')
                .is_some_and(|(_, v)| v.trim().trim_matches(|c| c == '"' || c == '\'') == name)
        {
            return Some(i + 1);
        }
    }
    None
}

fn assigns(line: &str, key: &str) -> bool {
    line.split_once('=')
        .is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "public_url = \"x\"\n[oidc]\nissuer = \"y\"\ndecision_max_age = \"10s\"\n\n[[targets]]\nname = \"a\"\n\n[[targets]]\nname = \"prod\"\n";

    #[test]
    fn a_problem_with_a_key_or_a_target_names_its_line() {
        assert_eq!(
            with_line(TEXT, "oidc.decision_max_age 10s must be at least 1m"),
            "line 4: oidc.decision_max_age 10s must be at least 1m"
        );
        assert_eq!(
            with_line(TEXT, "target prod: kinds is empty"),
            "line 10: target prod: kinds is empty"
        );
        assert_eq!(
            with_line(TEXT, "oidc.session_max_age 1m must be between 5m and 7d"),
            "oidc.session_max_age 1m must be between 5m and 7d",
            "a default has no line"
        );
    }
}
