use serde::Serialize;

/// Someone signed in: the stable subject from the identity provider, the name people read, and
/// the groups that give them roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Person {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_holds_a_role_through_any_one_of_its_groups_and_only_so() {
        let erin = Person {
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
