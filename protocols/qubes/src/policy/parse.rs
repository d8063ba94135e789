//! Text to values for one line: rules in the R4.1+ format and the old `!include-service` format,
//! and the `!` directives; every refusal is a [`SyntaxError`] naming the offending word.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::rule::{
    is_qube_name, is_service_char, is_tag, is_user, normalize_uuid, Action, ArgPattern, Column,
    QubeRef, QubeType, Rule, ServicePattern, Token, MAX_SERVICE, MAX_WORD,
};

/// Longest offending word an error message quotes; the rest is cut so errors stay one line.
const MAX_QUOTED: usize = 48;

/// A copy of the word a [`SyntaxError`] is about, cut at `MAX_QUOTED` (48) characters. The
/// error must name the word for the administrator, so it owns a (bounded) `String`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word(String);

impl Word {
    /// Copies `s`, cut and escaped for a one-line message.
    pub fn new(s: &str) -> Self {
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i == MAX_QUOTED {
                out.push('…');
                break;
            }
            // Keep the message one printable line whatever the file contained.
            out.extend(c.escape_debug());
        }
        Word(out)
    }

    /// The (possibly cut) word.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.0)
    }
}

/// Why a policy line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxError {
    /// Fewer than five columns (or two/three in the old format).
    WrongFieldCount {
        /// Columns found.
        found: usize,
        /// Columns needed.
        needed: usize,
    },
    /// SERVICE has a character outside `A-Za-z0-9-._` or is too long.
    InvalidService(Word),
    /// ARG is neither `*` nor `+…`.
    ArgumentWithoutPlus(Word),
    /// ARG has a character outside `A-Za-z0-9+-._` or is too long.
    InvalidArgument(Word),
    /// SERVICE is `*` but ARG is not.
    ArgumentForAnyService,
    /// A token starting with `@` (or empty after its prefix) that Qubes does not know.
    UnknownToken {
        /// Where.
        column: Column,
        /// The token.
        token: Word,
    },
    /// A known token in a place that does not accept it (e.g. `@default` as source).
    TokenNotAllowed {
        /// Where.
        column: Column,
        /// The token.
        token: Word,
    },
    /// A literal qube name outside the qube-name charset.
    InvalidQubeName {
        /// Where.
        column: Column,
        /// The name.
        name: Word,
    },
    /// `uuid:` followed by something that is not a uuid.
    InvalidUuid(Word),
    /// `@tag:` followed by an invalid tag.
    InvalidTag(Word),
    /// `@type:` followed by a type Qubes does not have.
    UnknownType(Word),
    /// ACTION is not allow, deny or ask.
    UnknownAction(Word),
    /// A parameter without `=`.
    ParamWithoutValue(Word),
    /// A parameter the action does not take.
    UnknownParam {
        /// The action.
        action: &'static str,
        /// The key.
        key: Word,
    },
    /// A parameter given twice.
    DuplicateParam(Word),
    /// `notify=`/`autostart=` not `yes` or `no`.
    InvalidBool {
        /// The key.
        key: &'static str,
        /// The value.
        value: Word,
    },
    /// `user=` with an invalid user name.
    InvalidUser(Word),
    /// `allow` for TARGET `@default` without `target=`.
    AllowDefaultWithoutTarget,
    /// A line starting with `!` that is not a known directive.
    UnknownDirective(Word),
    /// A directive with the wrong number of parameters.
    DirectiveParams {
        /// The directive.
        directive: &'static str,
        /// Parameters it takes.
        needed: usize,
    },
    /// A directive not allowed in an old-format (`!include-service`) file.
    DirectiveInOldFormat(Word),
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SyntaxError as E;
        match self {
            E::WrongFieldCount { found, needed } => {
                write!(f, "wrong number of fields: {found}, expected at least {needed}")
            }
            E::InvalidService(w) => write!(f, "invalid service name {w}"),
            E::ArgumentWithoutPlus(w) => write!(f, "argument {w} does not start with '+'"),
            E::InvalidArgument(w) => write!(f, "invalid argument {w}"),
            E::ArgumentForAnyService => f.write_str("only '*' argument allowed for '*' service"),
            E::UnknownToken { column, token } => write!(f, "invalid {column} token {token}"),
            E::TokenNotAllowed { column, token } => {
                write!(f, "token {token} is not allowed as {column}")
            }
            E::InvalidQubeName { column, name } => write!(f, "invalid qube name {name} as {column}"),
            E::InvalidUuid(w) => write!(f, "invalid uuid {w}"),
            E::InvalidTag(w) => write!(f, "invalid tag {w}"),
            E::UnknownType(w) => write!(
                f,
                "unknown qube type {w} (expected AppVM, TemplateVM, StandaloneVM, DispVM or AdminVM)"
            ),
            E::UnknownAction(w) => {
                write!(f, "unknown action {w} (expected allow, deny or ask)")
            }
            E::ParamWithoutValue(w) => write!(f, "invalid action parameter {w} (expected key=value)"),
            E::UnknownParam { action, key } => {
                write!(f, "unknown parameter {key} for action {action}")
            }
            E::DuplicateParam(w) => write!(f, "parameter {w} given twice"),
            E::InvalidBool { key, value } => {
                write!(f, "'{key}' is {value}, but can be only 'yes' or 'no'")
            }
            E::InvalidUser(w) => write!(f, "invalid user name {w}"),
            E::AllowDefaultWithoutTarget => {
                f.write_str("allow action for @default target must specify target=")
            }
            E::UnknownDirective(w) => write!(f, "invalid directive {w}"),
            E::DirectiveParams { directive, needed } => {
                write!(f, "{directive} takes {needed} parameter(s)")
            }
            E::DirectiveInOldFormat(w) => {
                write!(f, "directive {w} is not allowed in an old-format file")
            }
        }
    }
}

impl core::error::Error for SyntaxError {}

/// A non-rule line of a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive<'a> {
    /// `!include PATH`.
    Include(&'a str),
    /// `!include-dir DIR`.
    IncludeDir(&'a str),
    /// `!include-service SERVICE ARG PATH`.
    IncludeService {
        /// The service every line of the file applies to.
        service: ServicePattern,
        /// The argument every line of the file applies to.
        argument: ArgPattern,
        /// The old-format file.
        path: &'a str,
    },
    /// `!compat-4.0`.
    Compat40,
}

/// What one line of a new-format file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// Blank or `#` comment.
    Empty,
    /// A directive.
    Directive(Directive<'a>),
    /// A rule.
    Rule(Rule),
}

/// Reads one line of a new-format (R4.1+) policy file.
pub fn parse_line(line: &str) -> Result<Line<'_>, SyntaxError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Empty);
    }
    if line.starts_with('!') {
        return parse_directive(line).map(Line::Directive);
    }
    parse_rule(line).map(Line::Rule)
}

fn parse_directive(line: &str) -> Result<Directive<'_>, SyntaxError> {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or_default();
    let params: Vec<&str> = words.take(4).collect();
    let wrong = |directive: &'static str, needed: usize| {
        Err(SyntaxError::DirectiveParams { directive, needed })
    };
    match (name, params.as_slice()) {
        ("!include", [path]) => Ok(Directive::Include(path)),
        ("!include", _) => wrong("!include", 1),
        ("!include-dir", [dir]) => Ok(Directive::IncludeDir(dir)),
        ("!include-dir", _) => wrong("!include-dir", 1),
        ("!include-service", [service, argument, path]) => {
            let (service, argument) = parse_service_arg(service, argument)?;
            Ok(Directive::IncludeService {
                service,
                argument,
                path,
            })
        }
        ("!include-service", _) => wrong("!include-service", 3),
        ("!compat-4.0", []) => Ok(Directive::Compat40),
        ("!compat-4.0", _) => wrong("!compat-4.0", 0),
        (other, _) => Err(SyntaxError::UnknownDirective(Word::new(other))),
    }
}

/// Reads one rule line `SERVICE ARG SOURCE TARGET ACTION [key=value …]`.
pub fn parse_rule(line: &str) -> Result<Rule, SyntaxError> {
    let mut words = line.split_whitespace();
    let mut head = [""; 5];
    for (i, slot) in head.iter_mut().enumerate() {
        *slot = words.next().ok_or(SyntaxError::WrongFieldCount {
            found: i,
            needed: 5,
        })?;
    }
    let [service, argument, source, target, action] = head;
    let (service, argument) = parse_service_arg(service, argument)?;
    build_rule(service, argument, source, target, action, words)
}

/// What one line of an old-format (`!include-service`) file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldLine {
    /// Blank or comment.
    Empty,
    /// `$include:PATH` or `!include PATH`: another old-format file for the same service.
    Include(String),
    /// `SRC DST ACTION[,key=value…]`, applied to the including directive's service and argument.
    Rule(alloc::boxed::Box<Rule>),
}

/// Reads one line of an old-format file (R4.0 `/etc/qubes-rpc/policy/SERVICE`), with the R4.0
/// spellings translated as the R4.1 daemon does: `$include:` → `!include `, `$` → `@`, `,` → space.
pub fn parse_old_line(
    service: &ServicePattern,
    argument: &ArgPattern,
    line: &str,
) -> Result<OldLine, SyntaxError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(OldLine::Empty);
    }
    let line = line
        .replace("$include:", "!include ")
        .replace('$', "@")
        .replace(',', " ");
    if line.starts_with('!') {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        if name != "!include" {
            return Err(SyntaxError::DirectiveInOldFormat(Word::new(name)));
        }
        let params: Vec<&str> = words.take(2).collect();
        return match params.as_slice() {
            [path] => Ok(OldLine::Include((*path).to_string())),
            _ => Err(SyntaxError::DirectiveParams {
                directive: "!include",
                needed: 1,
            }),
        };
    }
    let mut words = line.split_whitespace();
    let mut head = [""; 3];
    for (i, slot) in head.iter_mut().enumerate() {
        *slot = words.next().ok_or(SyntaxError::WrongFieldCount {
            found: i,
            needed: 3,
        })?;
    }
    let [source, target, action] = head;
    build_rule(
        service.clone(),
        argument.clone(),
        source,
        target,
        action,
        words,
    )
    .map(|r| OldLine::Rule(r.into()))
}

/// Checks SERVICE and ARG (\[QX\] `validate_service_and_argument`).
pub fn parse_service_arg(
    service: &str,
    argument: &str,
) -> Result<(ServicePattern, ArgPattern), SyntaxError> {
    let service = if service == "*" {
        ServicePattern::Any
    } else if !service.is_empty()
        && service.len() <= MAX_SERVICE
        && service.chars().all(is_service_char)
    {
        ServicePattern::Exact(service.to_string())
    } else {
        return Err(SyntaxError::InvalidService(Word::new(service)));
    };
    let argument = if argument == "*" {
        ArgPattern::Any
    } else if let Some(value) = argument.strip_prefix('+') {
        if value.len() > MAX_WORD || !value.chars().all(|c| is_service_char(c) || c == '+') {
            return Err(SyntaxError::InvalidArgument(Word::new(argument)));
        }
        ArgPattern::Exact(value.to_string())
    } else {
        return Err(SyntaxError::ArgumentWithoutPlus(Word::new(argument)));
    };
    if service == ServicePattern::Any && argument != ArgPattern::Any {
        return Err(SyntaxError::ArgumentForAnyService);
    }
    Ok((service, argument))
}

/// Reads a token and checks that `column` accepts it.
pub fn parse_token(s: &str, column: Column) -> Result<Token, SyntaxError> {
    let unknown = || SyntaxError::UnknownToken {
        column,
        token: Word::new(s),
    };
    let token = match s {
        "*" => Token::Wildcard,
        "@adminvm" => Token::AdminVm,
        "@anyvm" => Token::AnyVm,
        "@default" => Token::Default,
        "@dispvm" => Token::DispVm,
        _ => {
            if let Some(tag) = s.strip_prefix("@dispvm:@tag:") {
                Token::DispVmTag(parse_tag(tag, s)?)
            } else if let Some(vm) = s.strip_prefix("@dispvm:") {
                if vm.starts_with('@') {
                    return Err(unknown());
                }
                Token::DispVmOf(parse_qube_ref(vm, column)?)
            } else if let Some(tag) = s.strip_prefix("@tag:") {
                Token::Tag(parse_tag(tag, s)?)
            } else if let Some(ty) = s.strip_prefix("@type:") {
                Token::Type(QubeType::from_name(ty).ok_or(SyntaxError::UnknownType(Word::new(ty)))?)
            } else if s.starts_with('@') {
                return Err(unknown());
            } else {
                Token::Qube(parse_qube_ref(s, column)?)
            }
        }
    };
    if !column.accepts(&token) {
        return Err(SyntaxError::TokenNotAllowed {
            column,
            token: Word::new(s),
        });
    }
    Ok(token)
}

fn parse_tag(tag: &str, whole: &str) -> Result<String, SyntaxError> {
    if is_tag(tag) {
        Ok(tag.to_string())
    } else {
        Err(SyntaxError::InvalidTag(Word::new(whole)))
    }
}

fn parse_qube_ref(s: &str, column: Column) -> Result<QubeRef, SyntaxError> {
    if let Some(uuid) = s.strip_prefix("uuid:") {
        normalize_uuid(uuid)
            .map(QubeRef::Uuid)
            .ok_or(SyntaxError::InvalidUuid(Word::new(s)))
    } else if is_qube_name(s) {
        Ok(QubeRef::Name(s.to_string()))
    } else {
        Err(SyntaxError::InvalidQubeName {
            column,
            name: Word::new(s),
        })
    }
}

/// Parameters seen so far; one slot per key so duplicates are caught.
#[derive(Default)]
struct Params {
    target: Option<Token>,
    default_target: Option<Token>,
    user: Option<String>,
    notify: Option<bool>,
    autostart: Option<bool>,
}

fn build_rule<'a>(
    service: ServicePattern,
    argument: ArgPattern,
    source: &str,
    target: &str,
    action: &str,
    params: impl Iterator<Item = &'a str>,
) -> Result<Rule, SyntaxError> {
    let source = parse_token(source, Column::Source)?;
    let target = parse_token(target, Column::Target)?;
    let (name, keys): (&'static str, &[&str]) = match action {
        "allow" => ("allow", &["target", "user", "notify", "autostart"]),
        "deny" => ("deny", &["notify"]),
        "ask" => (
            "ask",
            &["target", "default_target", "user", "notify", "autostart"],
        ),
        other => return Err(SyntaxError::UnknownAction(Word::new(other))),
    };
    let mut p = Params::default();
    for param in params {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| SyntaxError::ParamWithoutValue(Word::new(param)))?;
        if !keys.contains(&key) {
            return Err(SyntaxError::UnknownParam {
                action: name,
                key: Word::new(key),
            });
        }
        let dup = || SyntaxError::DuplicateParam(Word::new(key));
        match key {
            "target" => {
                let t = parse_token(value, Column::Redirect)?;
                p.target.replace(t).map_or(Ok(()), |_| Err(dup()))?;
            }
            "default_target" => {
                let t = parse_token(value, Column::DefaultTarget)?;
                p.default_target.replace(t).map_or(Ok(()), |_| Err(dup()))?;
            }
            "user" => {
                if !is_user(value) {
                    return Err(SyntaxError::InvalidUser(Word::new(value)));
                }
                p.user
                    .replace(value.to_string())
                    .map_or(Ok(()), |_| Err(dup()))?;
            }
            "notify" => {
                let b = parse_bool("notify", value)?;
                p.notify.replace(b).map_or(Ok(()), |_| Err(dup()))?;
            }
            _ => {
                let b = parse_bool("autostart", value)?;
                p.autostart.replace(b).map_or(Ok(()), |_| Err(dup()))?;
            }
        }
    }
    let action = match name {
        "allow" => Action::Allow {
            target: p.target,
            user: p.user,
            notify: p.notify,
            autostart: p.autostart,
        },
        "deny" => Action::Deny { notify: p.notify },
        _ => Action::Ask {
            target: p.target,
            default_target: p.default_target,
            user: p.user,
            notify: p.notify,
            autostart: p.autostart,
        },
    };
    if target == Token::Default && matches!(action, Action::Allow { target: None, .. }) {
        return Err(SyntaxError::AllowDefaultWithoutTarget);
    }
    Ok(Rule {
        service,
        argument,
        source,
        target,
        action,
    })
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, SyntaxError> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(SyntaxError::InvalidBool {
            key,
            value: Word::new(value),
        }),
    }
}
