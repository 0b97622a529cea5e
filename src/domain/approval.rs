use serde::{Deserialize, Serialize};

use super::Person;

/// N approvals from one group. A target's rules combine with AND.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    pub group: String,
    pub count: u32,
}

impl std::fmt::Display for ApprovalRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {}", self.count, self.group)
    }
}

/// Renders rules the way people say them: "2 from approvers AND 1 from security".
pub fn describe(rules: &[ApprovalRule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// How far a request's approvals go towards its rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApprovalTally {
    pub satisfied: bool,
    pub rules: Vec<RuleProgress>,
}

impl ApprovalTally {
    /// How many of the required approvals are in.
    pub fn counted(&self) -> u32 {
        self.rules
            .iter()
            .map(|r| {
                u32::try_from(r.counted.len())
                    .unwrap_or(u32::MAX)
                    .min(r.required)
            })
            .sum()
    }

    /// How many approvals the rules need in all.
    pub fn required(&self) -> u32 {
        self.rules.iter().map(|r| r.required).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleProgress {
    pub group: String,
    pub required: u32,
    /// The names of the approvers counted for this group.
    pub counted: Vec<String>,
}

/// May this person approve or reject a request filed by `requester`?
pub fn may_decide(rules: &[ApprovalRule], requester_subject: &str, person: &Person) -> bool {
    person.subject != requester_subject && rules.iter().any(|r| person.in_group(&r.group))
}

/// Counts approvals against the rules.
///
/// The requester never counts, and each approver counts once, for one group. Which group a
/// person in several groups counts for is chosen to fill as many required slots as possible
/// (a bipartite matching), so the outcome never depends on the order of approvals.
///
/// `requester` is (display name, subject): the requester never counts, and is named beside
/// the approvers so that someone else with their name never reads as them.
pub fn tally(
    rules: &[ApprovalRule],
    requester: (&str, &str),
    approvers: &[Person],
) -> ApprovalTally {
    let (_, requester_subject) = requester;
    let eligible: Vec<&Person> = approvers
        .iter()
        .filter(|p| p.subject != requester_subject)
        .fold(Vec::new(), |mut seen, p| {
            if !seen.iter().any(|q: &&Person| q.subject == p.subject) {
                seen.push(p);
            }
            seen
        });
    // One slot per required approval; slot i belongs to rule slot_rule[i].
    let slot_rule: Vec<usize> = rules
        .iter()
        .enumerate()
        .flat_map(|(i, r)| std::iter::repeat_n(i, r.count as usize))
        .collect();
    let mut slot_holder: Vec<Option<usize>> = vec![None; slot_rule.len()];
    for person in 0..eligible.len() {
        let mut visited = vec![false; slot_rule.len()];
        augment(
            person,
            &eligible,
            rules,
            &slot_rule,
            &mut slot_holder,
            &mut visited,
        );
    }
    let names = super::person::Names::new(
        std::iter::once(requester).chain(
            eligible
                .iter()
                .map(|p| (p.name.as_str(), p.subject.as_str())),
        ),
    );
    let progress: Vec<RuleProgress> = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| RuleProgress {
            group: rule.group.clone(),
            required: rule.count,
            counted: slot_rule
                .iter()
                .zip(&slot_holder)
                .filter(|(r, holder)| **r == i && holder.is_some())
                .filter_map(|(_, holder)| {
                    holder.map(|p| names.show(&eligible[p].name, &eligible[p].subject))
                })
                .collect(),
        })
        .collect();
    ApprovalTally {
        // Fail closed: with no approval required (no rules, or a target no longer configured)
        // nothing is ever approved, rather than everything at once.
        satisfied: !slot_holder.is_empty() && slot_holder.iter().all(Option::is_some),
        rules: progress,
    }
}

/// Kuhn's augmenting path: tries to give `person` a slot, moving earlier holders if needed.
fn augment(
    person: usize,
    people: &[&Person],
    rules: &[ApprovalRule],
    slot_rule: &[usize],
    slot_holder: &mut [Option<usize>],
    visited: &mut [bool],
) -> bool {
    for slot in 0..slot_rule.len() {
        if visited[slot] || !people[person].in_group(&rules[slot_rule[slot]].group) {
            continue;
        }
        visited[slot] = true;
        let free = match slot_holder[slot] {
            None => true,
            Some(holder) => augment(holder, people, rules, slot_rule, slot_holder, visited),
        };
        if free {
            slot_holder[slot] = Some(person);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_any_required_approval_nothing_is_ever_approved() {
        let bob = Person {
            issuer: "https://issuer.example".into(),
            subject: "bob".into(),
            name: "bob".into(),
            groups: vec!["sre".into()],
        };
        assert!(!tally(&[], ("alice", "alice"), &[]).satisfied);
        assert!(!tally(&[], ("alice", "alice"), &[bob]).satisfied);
    }

    fn person(name: &str, groups: &[&str]) -> Person {
        Person {
            issuer: "https://issuer.example".into(),
            subject: name.to_owned(),
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn rules(spec: &[(&str, u32)]) -> Vec<ApprovalRule> {
        spec.iter()
            .map(|(g, c)| ApprovalRule {
                group: (*g).to_owned(),
                count: *c,
            })
            .collect()
    }

    #[test]
    fn one_from_sre_and_one_from_security_needs_both_groups() {
        let rules = rules(&[("sre", 1), ("security", 1)]);
        let sre = person("sam", &["sre"]);
        let sec = person("sue", &["security"]);
        assert!(!tally(&rules, ("alice", "alice"), std::slice::from_ref(&sre)).satisfied);
        assert!(tally(&rules, ("alice", "alice"), &[sre, sec]).satisfied);
    }

    #[test]
    fn the_count_says_how_many_of_the_required_approvals_are_in() {
        let rules = rules(&[("sre", 1), ("security", 1)]);
        let none = tally(&rules, ("alice", "alice"), &[]);
        assert_eq!((none.counted(), none.required()), (0, 2));
        let one = tally(
            &rules,
            ("alice", "alice"),
            &[person("sam", &["sre"]), person("sid", &["sre"])],
        );
        assert_eq!((one.counted(), one.required()), (1, 2));
    }

    #[test]
    fn a_person_in_both_groups_counts_once() {
        let rules = rules(&[("sre", 1), ("security", 1)]);
        let both = person("bea", &["sre", "security"]);
        let t = tally(&rules, ("alice", "alice"), &[both.clone(), both.clone()]);
        assert!(!t.satisfied);
        let sec = person("sue", &["security"]);
        // Whatever the order, bea moves to sre so that sue can fill security.
        assert!(tally(&rules, ("alice", "alice"), &[both.clone(), sec.clone()]).satisfied);
        assert!(tally(&rules, ("alice", "alice"), &[sec, both]).satisfied);
    }

    #[test]
    fn requester_who_is_also_an_approver_does_not_count() {
        let rules = rules(&[("approvers", 2)]);
        let erin = person("erin", &["oncall", "approvers"]);
        let bob = person("bob", &["approvers"]);
        let t = tally(&rules, ("erin", "erin"), &[erin.clone(), bob.clone()]);
        assert!(!t.satisfied);
        assert_eq!(t.rules[0].counted, vec!["bob".to_owned()]);
        assert!(!may_decide(&rules, "erin", &erin));
        assert!(may_decide(&rules, "erin", &bob));
    }

    #[test]
    fn two_of_a_group_needs_two_different_people() {
        let rules = rules(&[("approvers", 2)]);
        let bob = person("bob", &["approvers"]);
        let carol = person("carol", &["approvers"]);
        assert!(!tally(&rules, ("alice", "alice"), &[bob.clone(), bob.clone()]).satisfied);
        assert!(tally(&rules, ("alice", "alice"), &[bob, carol]).satisfied);
    }

    #[test]
    fn each_rule_lists_only_the_approvers_counted_for_its_own_group() {
        let rules = rules(&[("sre", 1), ("security", 1)]);
        let t = tally(
            &rules,
            ("alice", "alice"),
            &[person("sam", &["sre"]), person("sue", &["security"])],
        );
        assert!(t.satisfied);
        assert_eq!(t.rules[0].counted, vec!["sam".to_owned()]);
        assert_eq!(t.rules[1].counted, vec!["sue".to_owned()]);
    }

    #[test]
    fn someone_outside_every_group_neither_counts_nor_decides() {
        let rules = rules(&[("approvers", 1)]);
        let mallory = person("mallory", &[]);
        assert!(!tally(&rules, ("alice", "alice"), std::slice::from_ref(&mallory)).satisfied);
        assert!(!may_decide(&rules, "alice", &mallory));
        assert_eq!(describe(&rules), "1 from approvers");
    }
}
