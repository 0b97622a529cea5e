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
    /// subject and reads as its name.
    pub fn show(&self, name: &str, subject: &str) -> String {
        match self.shared.get(name) {
            _ if subject.is_empty() => name.to_owned(),
            None => name.to_owned(),
            Some(&shown) => {
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
