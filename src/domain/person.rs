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
