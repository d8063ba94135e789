//! The qrexec policy of Qubes R4.1+ (`/etc/qubes/policy.d/*.policy`): parser, loader and the
//! evaluator dom0's policy daemon runs for each call (reference/qrexec.md §7–8, \[QX\] `parser.py`).
//!
//! Trust: policy files are admin input, but they are parsed without panics, with bounded
//! includes and rule counts, and every refusal names `file:line`. Requests are peer input.
//! Fail closed: a load error means every call is denied; no matching rule means deny.

mod eval;
mod load;
mod parse;
mod rule;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;

pub use eval::{CallTarget, Decision, DenyReason, Qube, Request, System};
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
    /// `[RUNTIME_POLICY_DIR, POLICY_DIR]`.
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
