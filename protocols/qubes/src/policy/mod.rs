//! Qubes R4.1+ qrexec policy (`policy.d`, reference/qrexec.md §7–8): parse, load, evaluate.
//! Fail closed: a load error or no matching rule denies; every refusal names `file:line`.

mod eval;
mod load;
mod parse;
mod rule;
mod system;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;

pub use eval::{CallTarget, Decision, DenyReason, Request};
pub use load::{
    resolve_path, select_policy_files, Limits, LoadError, NoFiles, Origin, PolicyError, PolicyFile,
    PolicyRule, PolicySource, SourceError, LEGACY_POLICY_DIR, POLICY_DIR, RUNTIME_POLICY_DIR,
};
pub use parse::{
    parse_line, parse_old_line, parse_rule, parse_token, Directive, Line, OldLine, SyntaxError,
    Word,
};
pub use rule::{
    Action, ArgPattern, Column, QubeRef, QubeType, Rule, ServicePattern, Token, DOM0_UUID,
};
pub use system::{Qube, System};

/// A loaded policy: its rules in evaluation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<PolicyRule>,
}

impl Policy {
    /// Parses one file's text; any `!include*` or `!compat-4.0` in it fails (no files).
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        Self::parse_with(file, text, &NoFiles, Limits::DEFAULT)
    }

    /// Parses one file's text, reading includes from `src`; relative paths resolve against
    /// the directory of `file`.
    pub fn parse_with(
        file: &str,
        text: &str,
        src: &dyn PolicySource,
        limits: Limits,
    ) -> Result<Policy, PolicyError> {
        let mut loader = load::Loader::new(src, limits);
        loader.top_level_text(file, text)?;
        Ok(Policy {
            rules: loader.rules,
        })
    }

    /// Loads the policy directories, earlier ones shadowing later ones by file name, e.g.
    /// `[RUNTIME_POLICY_DIR, POLICY_DIR]`. On an error the daemon must deny every call, as
    /// Qubes does; [`Policy::default`] (no rules) does exactly that.
    pub fn load(
        src: &dyn PolicySource,
        dirs: &[&str],
        limits: Limits,
    ) -> Result<Policy, PolicyError> {
        let mut loader = load::Loader::new(src, limits);
        loader.load_dirs(dirs)?;
        Ok(Policy {
            rules: loader.rules,
        })
    }

    /// The rules, first match first.
    pub fn rules(&self) -> &[PolicyRule] {
        &self.rules
    }

    /// Decides one call (see [`Decision`]).
    pub fn evaluate(&self, system: &System, request: &Request<'_>) -> Decision {
        eval::evaluate(&self.rules, system, request)
    }
}
