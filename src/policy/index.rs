//! The rule index: which rules could match a request, without testing them all.
//!
//! Policies with thousands of rules discriminate on the enrollment group and the registration-id prefix.
//! Each rule is filed under a condition it cannot match without: its exact enrollment group(s) if it
//! requires one (`enrollment_group = "x"`, `equals`, `any_of`), else its registration-id prefix (`prefix`
//! or `equals`), else nowhere (tested for every request). A request's candidates are the rules filed
//! under its group, under each prefix of its registration id, and the unfiled ones; they are tested in
//! rule order, so the first match is the one a full scan finds (a rule left out cannot match).

use std::collections::HashMap;

use smallvec::SmallVec;

use super::Rule;
use super::condition::Cond;

/// Below this many rules a plain scan is as fast as the index.
const MIN_RULES: usize = 24;

/// The index.
#[derive(Debug, Default)]
pub struct RuleIndex {
    by_group: HashMap<Box<str>, Vec<u32>>,
    by_prefix: HashMap<Box<[u8]>, Vec<u32>>,
    prefix_lens: Vec<usize>,
    unfiled: Vec<u32>,
    enabled: bool,
}

/// Candidate rule indices, in rule order.
pub type Candidates = SmallVec<[u32; 32]>;

impl RuleIndex {
    /// Files every rule.
    pub fn build(rules: &[Rule]) -> Self {
        let mut index = RuleIndex {
            enabled: rules.len() >= MIN_RULES,
            ..RuleIndex::default()
        };
        for (i, rule) in rules.iter().enumerate() {
            let i = i as u32;
            let conds: Vec<&Cond> = rule.when.conditions().map(|(c, _)| c).collect();
            let groups = conds.iter().find_map(|c| match c {
                Cond::EnrollmentGroup(sc) => sc.required_values(),
                _ => None,
            });
            let prefix = conds.iter().find_map(|c| match c {
                Cond::RegistrationId(sc) => sc.required_prefix(),
                _ => None,
            });
            match (groups, prefix) {
                (Some(groups), _) => {
                    for g in groups {
                        index.by_group.entry(g.into()).or_default().push(i);
                    }
                }
                (None, Some(p)) => {
                    index.by_prefix.entry(p.as_bytes().into()).or_default().push(i);
                    if !index.prefix_lens.contains(&p.len()) {
                        index.prefix_lens.push(p.len());
                    }
                }
                (None, None) => index.unfiled.push(i),
            }
        }
        index.prefix_lens.sort_unstable();
        index
    }

    /// Whether the policy is big enough for the index to pay.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The rules that could match a request with this enrollment group and (lowercased) registration id,
    /// in rule order.
    pub fn candidates(&self, group: Option<&str>, registration_id: &str, out: &mut Candidates) {
        out.clear();
        if let Some(rules) = group.and_then(|g| self.by_group.get(g)) {
            out.extend_from_slice(rules);
        }
        let id = registration_id.as_bytes();
        for &len in &self.prefix_lens {
            let Some(prefix) = id.get(..len) else { break };
            if let Some(rules) = self.by_prefix.get(prefix) {
                out.extend_from_slice(rules);
            }
        }
        out.extend_from_slice(&self.unfiled);
        out.sort_unstable();
        out.dedup();
    }
}
