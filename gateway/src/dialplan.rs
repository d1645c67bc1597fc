//! The dial plan: which numbers each agent may call (toll-fraud protection). Pure: compiled
//! once from the settings, asked once per `call` and `transfer`.

use std::collections::HashMap;

use regex::Regex;

use crate::config::DialplanSettings;

/// Compiled allow-lists.
#[derive(Debug, Clone, Default)]
pub struct Dialplan {
    default: Vec<Regex>,
    agents: HashMap<String, Vec<Regex>>,
}

impl Dialplan {
    /// Compiles the patterns; each must match the whole number.
    pub fn new(settings: &DialplanSettings) -> Result<Dialplan, regex::Error> {
        let compile = |patterns: &[String]| -> Result<Vec<Regex>, regex::Error> {
            patterns
                .iter()
                .map(|p| Regex::new(&format!("^(?:{p})$")))
                .collect()
        };
        let mut agents = HashMap::new();
        for (extension, patterns) in &settings.agents {
            agents.insert(extension.clone(), compile(patterns)?);
        }
        Ok(Dialplan {
            default: compile(&settings.allow)?,
            agents,
        })
    }

    /// Whether `extension` may dial `number`. An agent with its own list uses only that list;
    /// with no list at all every number is allowed.
    pub fn allows(&self, extension: &str, number: &str) -> bool {
        let patterns = self.agents.get(extension).unwrap_or(&self.default);
        patterns.is_empty() || patterns.iter().any(|p| p.is_match(number))
    }
}

/// A list of whole-number patterns in the dial plan's syntax, as carried by a token's `dial`
/// claim: the session may dial a number only when one of them matches it (an empty list
/// matches nothing). Compiled with a size limit, since the patterns come from outside.
#[derive(Debug, Clone, Default)]
pub struct Patterns(Vec<Regex>);

impl Patterns {
    /// Compiles each pattern anchored to the whole number.
    pub fn new(patterns: &[String]) -> Result<Patterns, regex::Error> {
        patterns
            .iter()
            .map(|p| {
                regex::RegexBuilder::new(&format!("^(?:{p})$"))
                    .size_limit(64 * 1024)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Patterns)
    }

    /// Whether one of the patterns matches the whole `number`.
    pub fn matches(&self, number: &str) -> bool {
        self.0.iter().any(|p| p.is_match(number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_numbers_and_agents_override() {
        let mut settings = DialplanSettings {
            allow: vec!["1[0-9]{3}".into(), "echo".into()],
            ..Default::default()
        };
        settings
            .agents
            .insert("2001".into(), vec!["\\+?84[0-9]{9}".into()]);
        let plan = Dialplan::new(&settings).expect("compiles");
        assert!(plan.allows("1001", "1002"));
        assert!(plan.allows("1001", "echo"));
        assert!(!plan.allows("1001", "10021"), "whole number only");
        assert!(!plan.allows("1001", "+84912345678"));
        assert!(plan.allows("2001", "+84912345678"));
        assert!(
            !plan.allows("2001", "1002"),
            "an agent's own list replaces the default"
        );
        assert!(Dialplan::default().allows("1001", "anything"));
        let token = Patterns::new(&["100[0-9]".into()]).expect("compiles");
        assert!(token.matches("1002") && !token.matches("10021") && !token.matches("2000"));
        assert!(
            !Patterns::default().matches("1002"),
            "an empty list allows nothing"
        );
        assert!(
            Dialplan::new(&DialplanSettings {
                allow: vec!["(".into()],
                ..Default::default()
            })
            .is_err()
        );
    }
}
