//! A call request against the loaded rules and the caller's model of the system: the first
//! matching rule decides; the outcome is a [`Decision`] the policy daemon acts on.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::load::{Origin, PolicyRule};
use super::rule::{Action, ArgPattern, ServicePattern, Token};
use super::system::{Qube, System};

/// One call: `service+argument` from `source` to the target the caller named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The service name.
    pub service: &'a str,
    /// The argument without `+`; a missing argument is the empty one.
    pub argument: &'a str,
    /// The calling qube (name or `uuid:`).
    pub source: &'a str,
    /// What the caller asked for: a name, `uuid:`, `@dispvm[:VM]`, `@adminvm`, or empty for
    /// `@default`.
    pub target: &'a str,
}

impl<'a> Request<'a> {
    /// Splits `service[+argument]` as the daemon receives it.
    pub fn from_call(call: &'a str, source: &'a str, target: &'a str) -> Self {
        let (service, argument) = call.split_once('+').unwrap_or((call, ""));
        Request {
            service,
            argument,
            source,
            target,
        }
    }
}

/// A destination a call may go to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallTarget {
    /// dom0.
    Dom0,
    /// An existing qube.
    Qube(String),
    /// A new disposable from this disposable template.
    NewDisposable(String),
}

impl fmt::Display for CallTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallTarget::Dom0 => f.write_str("dom0"),
            CallTarget::Qube(n) => f.write_str(n),
            CallTarget::NewDisposable(t) => write!(f, "@dispvm:{t}"),
        }
    }
}

/// Why a call is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// No rule matched.
    NoMatchingRule,
    /// A `deny` rule matched.
    ByRule(Origin),
    /// The source is not a qube of the system.
    UnknownSource,
    /// The requested target is not a valid target token.
    InvalidTarget,
    /// `@dispvm:VM` (requested or redirected) where VM is not a disposable template.
    NotADispVmTemplate,
    /// An `allow` matched but neither the caller nor the rule names a target.
    NoTarget(Origin),
    /// `@dispvm` but the source has no (valid) default disposable template.
    NoDefaultDispVm(Origin),
    /// `autostart=no` and the target is not running (or is a new disposable).
    AutostartRequired(Origin),
    /// An `ask` matched but there is nothing to offer.
    NoAskTargets(Origin),
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NoMatchingRule => f.write_str("no matching rule found"),
            DenyReason::ByRule(o) => write!(f, "denied by policy {o}"),
            DenyReason::UnknownSource => f.write_str("unknown source qube"),
            DenyReason::InvalidTarget => f.write_str("invalid target"),
            DenyReason::NotADispVmTemplate => f.write_str("not a template for disposables"),
            DenyReason::NoTarget(o) => {
                write!(
                    f,
                    "policy {o} allows, but no target is given by caller or policy"
                )
            }
            DenyReason::NoDefaultDispVm(o) => {
                write!(
                    f,
                    "policy {o} allows @dispvm, but the source has no default disposable template"
                )
            }
            DenyReason::AutostartRequired(o) => {
                write!(
                    f,
                    "policy {o} has autostart=no and the target is not running"
                )
            }
            DenyReason::NoAskTargets(o) => write!(f, "policy {o} asks, but offers no target"),
        }
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Run the call.
    Allow {
        /// Where.
        target: CallTarget,
        /// As which user (`None`: the target's default).
        user: Option<String>,
        /// Whether the target may be started.
        autostart: bool,
        /// Whether to tell the user.
        notify: bool,
        /// The deciding rule.
        rule: Origin,
    },
    /// Ask the user to pick one of `targets` (or refuse).
    Ask {
        /// The choices, sorted.
        targets: Vec<CallTarget>,
        /// The preselected choice, always one of `targets`.
        default_target: Option<CallTarget>,
        /// As which user.
        user: Option<String>,
        /// Whether the chosen target may be started.
        autostart: bool,
        /// Whether to tell the user.
        notify: bool,
        /// The deciding rule.
        rule: Origin,
    },
    /// Refuse the call.
    Deny {
        /// Whether to tell the user.
        notify: bool,
        /// Why.
        reason: DenyReason,
    },
}

/// The target of a request after resolution: an existing qube, or a keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Intended {
    Dom0,
    Qube(String),
    Default,
    DispVm,
    DispVmOf(String),
}

fn deny(reason: DenyReason) -> Decision {
    Decision::Deny {
        notify: true,
        reason,
    }
}

/// Resolves what the caller asked for. A name that does not exist becomes `@default`, as the
/// real daemon does, so a caller cannot probe which qubes exist (\[QX\] `IntendedTarget.verify`).
fn resolve_intended(sys: &System, s: &str) -> Result<Intended, DenyReason> {
    match s {
        "" | "@default" => return Ok(Intended::Default),
        "@adminvm" | "dom0" => return Ok(Intended::Dom0),
        "@dispvm" => return Ok(Intended::DispVm),
        _ => {}
    }
    if let Some(vm) = s.strip_prefix("@dispvm:") {
        return match sys.lookup(vm) {
            Some(q) if q.template_for_dispvms => Ok(Intended::DispVmOf(q.name.clone())),
            _ => Err(DenyReason::NotADispVmTemplate),
        };
    }
    if s.starts_with('@') {
        return Err(DenyReason::InvalidTarget);
    }
    Ok(match sys.lookup(s) {
        Some(q) if q.is_dom0() => Intended::Dom0,
        Some(q) => Intended::Qube(q.name.clone()),
        None => Intended::Default,
    })
}

fn same(a: Option<&Qube>, b: &Qube) -> bool {
    a.is_some_and(|a| a.name == b.name)
}

fn matches_source(tok: &Token, sys: &System, src: &Qube) -> bool {
    match tok {
        Token::Wildcard => true,
        Token::AdminVm => src.is_dom0(),
        Token::AnyVm => !src.is_dom0(),
        Token::Qube(r) => same(sys.by_ref(r), src),
        Token::Tag(t) => src.tags.iter().any(|x| x == t),
        Token::Type(t) => src.kind == *t,
        // Qubes accepts `@dispvm:…` as a source but never matches it (the source is a name,
        // never a disposable-template token); so do we. Use `@type:DispVM` or a tag instead.
        Token::DispVmOf(_) | Token::DispVmTag(_) => false,
        Token::Default | Token::DispVm => false,
    }
}

fn matches_target(tok: &Token, sys: &System, src: &Qube, it: &Intended) -> bool {
    let it_qube = || match it {
        Intended::Dom0 => sys.dom0(),
        Intended::Qube(n) => sys.get(n),
        _ => None,
    };
    // `@dispvm` means the source's default disposable template here (\[QX\] `DispVMTemplate.match`).
    let it_template = || match it {
        Intended::DispVm => src.default_dispvm.as_deref().and_then(|d| sys.get(d)),
        Intended::DispVmOf(n) => sys.get(n),
        _ => None,
    };
    match tok {
        Token::Wildcard => true,
        Token::AdminVm => *it == Intended::Dom0,
        Token::AnyVm => *it != Intended::Dom0,
        Token::Qube(r) if r.is_dom0() => *it == Intended::Dom0,
        Token::Qube(r) => it_qube().is_some_and(|q| same(sys.by_ref(r), q)),
        Token::Tag(t) => it_qube().is_some_and(|q| q.tags.iter().any(|x| x == t)),
        Token::Type(t) => it_qube().is_some_and(|q| q.kind == *t),
        Token::Default => *it == Intended::Default,
        Token::DispVm => *it == Intended::DispVm,
        Token::DispVmOf(r) => it_template().is_some_and(|q| same(sys.by_ref(r), q)),
        Token::DispVmTag(t) => {
            it_template().is_some_and(|q| q.template_for_dispvms && q.tags.iter().any(|x| x == t))
        }
    }
}

fn matches_call(r: &PolicyRule, sys: &System, req: &Request<'_>, src: &Qube) -> bool {
    let rule = &r.rule;
    let service_ok = match &rule.service {
        ServicePattern::Any => true,
        ServicePattern::Exact(s) => s == req.service,
    };
    let arg_ok = match &rule.argument {
        ArgPattern::Any => true,
        ArgPattern::Exact(a) => a == req.argument,
    };
    service_ok && arg_ok && matches_source(&rule.source, sys, src)
}

/// The concrete destination a redirect or resolved request names, for the given source.
fn call_target(
    sys: &System,
    src: &Qube,
    it: &Intended,
    origin: &Origin,
) -> Result<CallTarget, DenyReason> {
    match it {
        Intended::Dom0 => Ok(CallTarget::Dom0),
        Intended::Qube(n) => Ok(CallTarget::Qube(n.clone())),
        Intended::DispVmOf(n) => Ok(CallTarget::NewDisposable(n.clone())),
        Intended::Default => Err(DenyReason::NoTarget(origin.clone())),
        // Stricter than Qubes, which trusts `default_dispvm` here and lets qubesd refuse later:
        // a default that is not a disposable template is refused now.
        Intended::DispVm => match src.default_dispvm.as_deref().and_then(|d| sys.get(d)) {
            Some(t) if t.template_for_dispvms => Ok(CallTarget::NewDisposable(t.name.clone())),
            _ => Err(DenyReason::NoDefaultDispVm(origin.clone())),
        },
    }
}

/// A redirect token as an intended target: unknown names become `@default` as in a request.
fn redirect_intended(sys: &System, tok: &Token) -> Result<Intended, DenyReason> {
    match tok {
        Token::AdminVm => Ok(Intended::Dom0),
        Token::DispVm => Ok(Intended::DispVm),
        Token::DispVmOf(r) => match sys.dispvm_template(r) {
            Some(q) => Ok(Intended::DispVmOf(q.name.clone())),
            None => Err(DenyReason::NotADispVmTemplate),
        },
        Token::Qube(r) if r.is_dom0() => Ok(Intended::Dom0),
        Token::Qube(r) => Ok(sys
            .by_ref(r)
            .map_or(Intended::Default, |q| Intended::Qube(q.name.clone()))),
        _ => Err(DenyReason::InvalidTarget),
    }
}

fn runs_without_autostart(sys: &System, t: &CallTarget) -> bool {
    match t {
        CallTarget::Dom0 => true,
        CallTarget::Qube(n) => sys.get(n).is_some_and(|q| q.running),
        CallTarget::NewDisposable(_) => false,
    }
}

/// Every destination a token stands for, for the `ask` choices (\[QX\] `expand`). The
/// keywords `@adminvm` and `@dispvm` are resolved at once, so a deny removes a choice
/// whichever spelling it uses.
fn expand(tok: &Token, sys: &System, src: &Qube, out: &mut BTreeSet<CallTarget>, add: bool) {
    let mut put = |t: CallTarget| {
        if add {
            out.insert(t);
        } else {
            out.remove(&t);
        }
    };
    let of = |q: &Qube| {
        if q.is_dom0() {
            CallTarget::Dom0
        } else {
            CallTarget::Qube(q.name.clone())
        }
    };
    let default_dispvm = || {
        src.default_dispvm
            .as_deref()
            .and_then(|d| sys.get(d))
            .filter(|q| q.template_for_dispvms)
            .map(|q| CallTarget::NewDisposable(q.name.clone()))
    };
    match tok {
        Token::Wildcard | Token::AnyVm => {
            for q in sys.qubes.values() {
                if !(q.is_dom0() && *tok == Token::AnyVm) {
                    put(of(q));
                }
                if q.template_for_dispvms {
                    put(CallTarget::NewDisposable(q.name.clone()));
                }
            }
            if let Some(t) = default_dispvm() {
                put(t);
            }
        }
        Token::AdminVm => put(CallTarget::Dom0),
        Token::Qube(r) => {
            if let Some(q) = sys.by_ref(r) {
                put(of(q));
            }
        }
        Token::Tag(t) => sys
            .qubes
            .values()
            .filter(|q| q.tags.contains(t))
            .for_each(|q| put(of(q))),
        Token::Type(t) => sys
            .qubes
            .values()
            .filter(|q| q.kind == *t)
            .for_each(|q| put(of(q))),
        Token::DispVm => {
            if let Some(t) = default_dispvm() {
                put(t);
            }
        }
        Token::DispVmOf(r) => {
            if let Some(q) = sys.dispvm_template(r) {
                put(CallTarget::NewDisposable(q.name.clone()));
            }
        }
        Token::DispVmTag(t) => sys
            .qubes
            .values()
            .filter(|q| q.template_for_dispvms && q.tags.contains(t))
            .for_each(|q| put(CallTarget::NewDisposable(q.name.clone()))),
        Token::Default => {}
    }
}

/// The `ask` choices: over the rules for this service, argument and source, last to first,
/// allow/ask targets are added and deny targets removed; the source itself and internal qubes
/// are never offered (\[QX\] `collect_targets_for_ask`).
fn collect_ask_targets(
    rules: &[PolicyRule],
    sys: &System,
    req: &Request<'_>,
    src: &Qube,
) -> Vec<CallTarget> {
    let mut set = BTreeSet::new();
    for r in rules
        .iter()
        .rev()
        .filter(|r| matches_call(r, sys, req, src))
    {
        let tok = r.rule.action.redirect().unwrap_or(&r.rule.target);
        let add = !matches!(r.rule.action, Action::Deny { .. });
        expand(tok, sys, src, &mut set, add);
    }
    set.into_iter()
        .filter(|t| match t {
            CallTarget::Dom0 => !src.is_dom0(),
            CallTarget::Qube(n) | CallTarget::NewDisposable(n) => {
                *n != src.name && !sys.get(n).is_some_and(|q| q.internal)
            }
        })
        .collect()
}

/// Evaluates `req` against `rules` (in policy order) and the system model.
pub fn evaluate(rules: &[PolicyRule], sys: &System, req: &Request<'_>) -> Decision {
    let Some(src) = sys.lookup(req.source) else {
        return deny(DenyReason::UnknownSource);
    };
    let intended = match resolve_intended(sys, req.target) {
        Ok(it) => it,
        Err(reason) => return deny(reason),
    };
    let Some(r) = rules.iter().find(|r| {
        matches_call(r, sys, req, src) && matches_target(&r.rule.target, sys, src, &intended)
    }) else {
        return deny(DenyReason::NoMatchingRule);
    };
    let origin = &r.origin;
    let action = &r.rule.action;
    let (notify, autostart) = (action.notify(), action.autostart());
    match action {
        Action::Deny { .. } => Decision::Deny {
            notify,
            reason: DenyReason::ByRule(origin.clone()),
        },
        Action::Allow { target, user, .. } => {
            let it = match target {
                Some(tok) => match redirect_intended(sys, tok) {
                    Ok(it) => it,
                    Err(reason) => return deny(reason),
                },
                None => intended,
            };
            let target = match call_target(sys, src, &it, origin) {
                Ok(t) => t,
                Err(reason) => return deny(reason),
            };
            if !autostart && !runs_without_autostart(sys, &target) {
                return Decision::Deny {
                    notify,
                    reason: DenyReason::AutostartRequired(origin.clone()),
                };
            }
            Decision::Allow {
                target,
                user: user.clone(),
                autostart,
                notify,
                rule: origin.clone(),
            }
        }
        Action::Ask {
            target,
            default_target,
            user,
            ..
        } => {
            let mut targets = match target {
                // Unlike Qubes, which offers the redirect verbatim, it is resolved (and dropped
                // when it names nothing) so that every offered choice is a real destination.
                Some(tok) => redirect_intended(sys, tok)
                    .and_then(|it| call_target(sys, src, &it, origin))
                    .map_or_else(|_| Vec::new(), |t| alloc::vec![t]),
                None => collect_ask_targets(rules, sys, req, src),
            };
            if !autostart {
                targets.retain(|t| runs_without_autostart(sys, t));
            }
            if targets.is_empty() {
                return deny(DenyReason::NoAskTargets(origin.clone()));
            }
            let default_target = default_target
                .as_ref()
                .and_then(|tok| redirect_intended(sys, tok).ok())
                .and_then(|it| call_target(sys, src, &it, origin).ok())
                .filter(|t| targets.contains(t));
            Decision::Ask {
                targets,
                default_target,
                user: user.clone(),
                autostart,
                notify,
                rule: origin.clone(),
            }
        }
    }
}
