//! A tenant's tool policy: which tool calls its agents may make at once,
//! which wait for a person's approval, and which are refused. Rules are read
//! in order; the first whose pattern matches the tool's name (and, when it
//! names roles, the caller's role) decides; when none does, the policy's
//! default does. Patterns are exact names or globs (`*` any run of
//! characters, `?` one): `github.*`, `shell`, `*.delete`; names and patterns
//! are compared without case and without surrounding spaces, so `Shell ` is
//! `shell`.

use crate::Role;
use serde::{Deserialize, Serialize};

/// The most rules a policy holds.
pub const MAX_RULES: usize = 200;
/// The longest rule name and tool pattern.
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_PATTERN_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolAction {
    Allow,
    RequireApproval,
    Deny,
}

impl ToolAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolAction::Allow => "allow",
            ToolAction::RequireApproval => "require_approval",
            ToolAction::Deny => "deny",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "allow" => Some(ToolAction::Allow),
            "require_approval" => Some(ToolAction::RequireApproval),
            "deny" => Some(ToolAction::Deny),
            _ => None,
        }
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    /// Unique in the policy; refusals and approvals name it.
    pub name: String,
    /// The tool names it matches: exact, or a glob with `*` and `?`.
    pub tool: String,
    pub action: ToolAction,
    /// The callers it applies to (`owner`, `admin`, `member`, `service` for
    /// API keys); every caller when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    /// For `require_approval`: the roles whose people may decide (`owner`,
    /// `admin`, `member`); owners and admins when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<Role>>,
}

impl ToolRule {
    /// Who may decide an approval this rule asks for.
    pub fn approver_roles(&self) -> Vec<Role> {
        self.approvers.clone().unwrap_or_else(|| vec![Role::Owner, Role::Admin])
    }

    /// `tool` is already folded (see [`fold`]).
    fn applies(&self, tool: &str, caller: Role) -> bool {
        glob_match(&fold(&self.tool), tool) && self.roles.as_ref().is_none_or(|roles| roles.contains(&caller))
    }
}

/// The name a refusal or an approval gives when no rule matched and the
/// policy's default decided; no rule may take it.
pub const DEFAULT_RULE: &str = "default";

/// A tool name or pattern as rules compare them: no surrounding spaces, no
/// case.
fn fold(name: &str) -> String {
    name.trim().to_lowercase()
}

/// A tenant's rules and default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPolicy {
    pub rules: Vec<ToolRule>,
    pub default_action: ToolAction,
}

impl Default for ToolPolicy {
    /// No rules: every tool call is allowed, as before a tenant writes any.
    fn default() -> Self {
        Self { rules: Vec::new(), default_action: ToolAction::Allow }
    }
}

/// What a policy says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'a> {
    pub action: ToolAction,
    /// The rule that decided; `None` when the default did.
    pub rule: Option<&'a ToolRule>,
}

impl ToolPolicy {
    pub fn decide(&self, tool: &str, caller: Role) -> Verdict<'_> {
        let tool = fold(tool);
        match self.rules.iter().find(|r| r.applies(&tool, caller)) {
            Some(rule) => Verdict { action: rule.action, rule: Some(rule) },
            None => Verdict { action: self.default_action, rule: None },
        }
    }

    /// Each problem with the policy, as (field, message); empty when it is
    /// sound.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.rules.len() > MAX_RULES {
            out.push(("rules".to_owned(), format!("at most {MAX_RULES} rules")));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            let name_len = rule.name.chars().count();
            if name_len == 0
                || name_len > MAX_NAME_CHARS
                || rule.name.trim() != rule.name
                || rule.name.chars().any(char::is_control)
            {
                out.push((
                    at("name"),
                    format!("1 to {MAX_NAME_CHARS} printable characters, no surrounding spaces"),
                ));
            } else if rule.name == DEFAULT_RULE {
                out.push((
                    at("name"),
                    format!("`{DEFAULT_RULE}` names the policy's default; choose another"),
                ));
            } else if !seen.insert(rule.name.as_str()) {
                out.push((at("name"), format!("`{}` names two rules", rule.name)));
            }
            let pattern_len = rule.tool.chars().count();
            if pattern_len == 0 || pattern_len > MAX_PATTERN_CHARS || rule.tool.chars().any(char::is_control)
            {
                out.push((at("tool"), format!("1 to {MAX_PATTERN_CHARS} printable characters")));
            }
            if let Some(roles) = &rule.roles
                && roles.is_empty()
            {
                out.push((at("roles"), "name at least one role, or leave it out for everyone".to_owned()));
            }
            match (&rule.approvers, rule.action) {
                (Some(_), ToolAction::Allow | ToolAction::Deny) => {
                    out.push((at("approvers"), "only a require_approval rule has approvers".to_owned()));
                }
                (Some(a), ToolAction::RequireApproval) if a.is_empty() || a.contains(&Role::Service) => {
                    out.push((at("approvers"), "one or more of owner, admin, member".to_owned()));
                }
                _ => {}
            }
        }
        out
    }
}

/// Whether `name` matches `pattern`: `*` any run of characters (none
/// included), `?` exactly one, anything else itself. Only the last `*` is
/// ever returned to, so the work is at most the product of the two lengths
/// (200 × 200 characters at the limits), never exponential.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_shells_do() {
        assert!(glob_match("shell", "shell"));
        assert!(!glob_match("shell", "shell2"));
        assert!(glob_match("github.*", "github.create_issue"));
        assert!(glob_match("github.*", "github."));
        assert!(!glob_match("github.*", "gitlab.create_issue"));
        assert!(glob_match("*.delete", "files.delete"));
        assert!(!glob_match("*.delete", "files.delete_all"));
        assert!(glob_match("*", ""));
        assert!(glob_match("db.?et", "db.get"));
        assert!(!glob_match("db.?et", "db.et"));
        assert!(glob_match("a*b*c", "aXXbYYbZc"));
        assert!(!glob_match("a*b*c", "aXXbYYbZ"));
        // Many stars and a long name stay fast (no backtracking blow-up).
        let long = "a".repeat(10_000);
        assert!(!glob_match(&format!("{}b", "*a".repeat(50)), &long));
    }

    fn rule(name: &str, tool: &str, action: ToolAction) -> ToolRule {
        ToolRule { name: name.into(), tool: tool.into(), action, roles: None, approvers: None }
    }

    #[test]
    fn the_first_matching_rule_decides_then_the_default() {
        let policy = ToolPolicy {
            rules: vec![
                ToolRule {
                    roles: Some(vec![Role::Owner]),
                    ..rule("owners-shell", "shell", ToolAction::Allow)
                },
                rule("no-shell", "shell", ToolAction::Deny),
                rule("github-writes", "github.*", ToolAction::RequireApproval),
            ],
            default_action: ToolAction::Allow,
        };
        let v = policy.decide("shell", Role::Owner);
        assert_eq!((v.action, v.rule.map(|r| r.name.as_str())), (ToolAction::Allow, Some("owners-shell")));
        let v = policy.decide("shell", Role::Service);
        assert_eq!((v.action, v.rule.map(|r| r.name.as_str())), (ToolAction::Deny, Some("no-shell")));
        let v = policy.decide("github.merge", Role::Service);
        assert_eq!(v.action, ToolAction::RequireApproval);
        assert_eq!(v.rule.map(ToolRule::approver_roles), Some(vec![Role::Owner, Role::Admin]));
        let v = policy.decide("search", Role::Member);
        assert_eq!((v.action, v.rule), (ToolAction::Allow, None));
        // Case and surrounding spaces do not get a name past a rule.
        for disguised in ["Shell", " shell", "SHELL\t"] {
            assert_eq!(policy.decide(disguised, Role::Service).action, ToolAction::Deny, "{disguised:?}");
        }
        assert_eq!(policy.decide("GitHub.Merge", Role::Service).action, ToolAction::RequireApproval);
    }

    #[test]
    fn unsound_policies_name_each_problem() {
        let policy = ToolPolicy {
            rules: vec![
                rule("a", "x", ToolAction::Allow),
                rule("a", "", ToolAction::Deny),
                ToolRule { approvers: Some(vec![Role::Admin]), ..rule("b", "y", ToolAction::Deny) },
                ToolRule {
                    approvers: Some(vec![Role::Service]),
                    ..rule("c", "z", ToolAction::RequireApproval)
                },
                ToolRule { roles: Some(vec![]), ..rule(" d", "w", ToolAction::Allow) },
                rule("default", "v", ToolAction::Allow),
            ],
            default_action: ToolAction::Deny,
        };
        let fields: Vec<String> = policy.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "rules[1].name",
                "rules[1].tool",
                "rules[2].approvers",
                "rules[3].approvers",
                "rules[4].name",
                "rules[4].roles",
                "rules[5].name"
            ]
        );
    }
}
