use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

/// Someone signed in: the stable subject from the identity provider, the name people read, and
/// the groups that give them roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Person {
    /// The issuer that vouches for the subject: a person is (issuer, subject).
    pub issuer: String,
    pub subject: String,
    pub name: String,
    pub groups: Vec<String>,
}

impl Person {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    pub fn in_any(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.in_group(g))
    }
}

/// How the people in one view (a page, a list, the stamp on an object) are named: by their
/// display name, and where two different people in it share one, by the name and as much of
/// each one's subject as tells them apart. Anyone can call themselves anything at most
/// providers, so a name alone must never make two people read as one.
#[derive(Debug, Default)]
pub struct Names {
    /// For each name that two or more subjects share: how many characters of a subject show.
    shared: HashMap<String, usize>,
}

/// The fewest characters of a subject shown beside a shared name.
const SUBJECT_SHOWN: usize = 8;

impl Names {
    /// The names of everyone in view, as (display name, subject).
    pub fn new<'a>(people: impl IntoIterator<Item = (&'a str, &'a str)>) -> Names {
        let mut subjects: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for (name, subject) in people {
            subjects.entry(name).or_default().insert(subject);
        }
        let shared = subjects
            .into_iter()
            .filter(|(_, subjects)| subjects.len() > 1)
            .map(|(name, subjects)| (name.to_owned(), distinguishing_length(&subjects)))
            .collect();
        Names { shared }
    }

    /// How `name` (of the person with `subject`) reads in this view. The broker itself has no
    /// subject and reads as its name. A name that could pass for another (see
    /// [`could_mislead`]) always shows the start of its subject too.
    pub fn show(&self, name: &str, subject: &str) -> String {
        let shown = self
            .shared
            .get(name)
            .copied()
            .or_else(|| could_mislead(name).then_some(SUBJECT_SHOWN));
        match shown {
            _ if subject.is_empty() => name.to_owned(),
            None => name.to_owned(),
            Some(shown) => {
                let prefix: String = subject.chars().take(shown).collect();
                let more = if subject.chars().count() > shown {
                    "…"
                } else {
                    ""
                };
                format!("{name} ({prefix}{more})")
            }
        }
    }
}

/// Whether a name could be read as someone else's: it looks like a name already told apart
/// (`bob (bob)`), a list (`carol, erin`), the broker itself, or uses letters beyond ASCII that
/// may look like others (`аlice` with a Cyrillic а). Such a name is always shown with its
/// subject.
pub fn could_mislead(name: &str) -> bool {
    name == BROKER_NAME || !name.is_ascii() || name.contains(['(', ')', ',', '[', ']'])
}

/// The name the broker acts under in the audit history.
pub const BROKER_NAME: &str = "breakglass-broker";

/// The most characters of a display name the broker keeps.
const NAME_CHARS: usize = 64;

/// A provider's name claim made fit to show: no control or invisible formatting characters
/// (zero-width, bidirectional overrides), one line, no commas (the stamp on objects lists
/// names with them), whitespace collapsed, at most 64 characters. None if nothing is left.
pub fn display_name(raw: &str) -> Option<String> {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c,
                '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
                | '\u{E000}'..='\u{F8FF}')
    };
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c == ',' || c.is_whitespace() {
                ' '
            } else {
                c
            }
        })
        .filter(|c| !invisible(*c))
        .collect();
    let name: String = cleaned
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(NAME_CHARS)
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The shortest length (at least [`SUBJECT_SHOWN`]) at which these subjects all differ.
fn distinguishing_length(subjects: &BTreeSet<&str>) -> usize {
    let longest = subjects
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0);
    (SUBJECT_SHOWN..=longest.max(SUBJECT_SHOWN))
        .find(|&n| {
            let prefixes: BTreeSet<String> = subjects
                .iter()
                .map(|s| s.chars().take(n).collect())
                .collect();
            prefixes.len() == subjects.len()
        })
        .unwrap_or(longest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_two_people_share_shows_enough_of_each_subject_to_tell_them_apart() {
        let names = Names::new([
            ("bob", "1234567890-first"),
            ("bob", "1234567890-second"),
            ("carol", "c1"),
            ("bob", "1234567890-first"),
        ]);
        assert_eq!(names.show("carol", "c1"), "carol");
        let first = names.show("bob", "1234567890-first");
        let second = names.show("bob", "1234567890-second");
        assert_ne!(first, second);
        assert_eq!(first, "bob (1234567890-f…)");
        assert_eq!(second, "bob (1234567890-s…)");
    }

    #[test]
    fn a_name_that_could_pass_for_another_always_shows_its_subject() {
        let names = Names::new([
            ("bob (bob)", "mimic-1"),
            ("аlice", "x1"),
            ("breakglass-broker", "b"),
        ]);
        assert_eq!(names.show("bob (bob)", "mimic-1"), "bob (bob) (mimic-1)");
        assert_eq!(names.show("аlice", "x1"), "аlice (x1)");
        assert_eq!(
            names.show("breakglass-broker", "b"),
            "breakglass-broker (b)"
        );
        assert_eq!(
            names.show("breakglass-broker", ""),
            "breakglass-broker",
            "the broker itself"
        );
    }

    #[test]
    fn a_display_name_is_one_visible_line_without_commas_and_not_too_long() {
        assert_eq!(
            display_name("carol,erin,dave").as_deref(),
            Some("carol erin dave")
        );
        assert_eq!(display_name("bo\u{200B}b").as_deref(), Some("bob"));
        assert_eq!(
            display_name("ev\u{202E}il\nname\tx").as_deref(),
            Some("evil name x")
        );
        assert_eq!(display_name(" \u{200B} "), None);
        assert_eq!(
            display_name(&"x".repeat(5000)).map(|n| n.chars().count()),
            Some(64)
        );
    }

    #[test]
    fn short_subjects_show_whole_and_a_lone_name_shows_alone() {
        let names = Names::new([("alice", "alice"), ("alice", "x")]);
        assert_eq!(names.show("alice", "alice"), "alice (alice)");
        assert_eq!(names.show("alice", "x"), "alice (x)");
        let alone = Names::new([("alice", "alice"), ("bob", "bob")]);
        assert_eq!(alone.show("alice", "alice"), "alice");
    }

    #[test]
    fn a_person_holds_a_role_through_any_one_of_its_groups_and_only_so() {
        let erin = Person {
            issuer: "https://issuer.example".into(),
            subject: "erin".into(),
            name: "Erin".into(),
            groups: vec!["oncall".into(), "approvers".into()],
        };
        let role = |groups: &[&str]| groups.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>();
        assert!(erin.in_any(&role(&["auditors", "approvers"])));
        assert!(!erin.in_any(&role(&["auditors", "security"])));
        assert!(!erin.in_any(&[]));
    }
}
