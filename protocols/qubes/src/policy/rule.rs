//! One policy rule as values (service, argument, source, target, action) and its canonical
//! text form; the checked constructors for qube names, tags, users and uuids live here.

use alloc::string::String;
use core::fmt;

/// The dom0 uuid: `uuid:00000000-0000-0000-0000-000000000000` means dom0 (\[QX\] `is_dom0`).
pub const DOM0_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// Longest qube name Qubes accepts (`qubes.vm.validate_name`).
pub const MAX_QUBE_NAME: usize = 31;

/// Longest service name a rule may hold (the agent's `NAME_MAX`).
pub const MAX_SERVICE: usize = 255;

/// Longest tag, user or argument a rule may hold; longer ones cannot come from a real call.
pub const MAX_WORD: usize = 255;

/// The SERVICE column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServicePattern {
    /// `*`: any service (then the argument must be `*`).
    Any,
    /// One exact service name.
    Exact(String),
}

/// The ARG column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ArgPattern {
    /// `*`: any argument, including none.
    Any,
    /// `+value` (or `+` alone for the empty argument): exactly this argument, stored without `+`.
    Exact(String),
}

/// The kinds of qube Qubes knows (`@type:` values and the system model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QubeType {
    /// A qube based on a template.
    AppVM,
    /// A template.
    TemplateVM,
    /// A qube with its own root image.
    StandaloneVM,
    /// A disposable.
    DispVM,
    /// dom0.
    AdminVM,
}

impl QubeType {
    /// Every type, in the order error messages list them.
    pub const ALL: [QubeType; 5] = [
        QubeType::AppVM,
        QubeType::TemplateVM,
        QubeType::StandaloneVM,
        QubeType::DispVM,
        QubeType::AdminVM,
    ];

    /// The type's name as written after `@type:`.
    pub fn as_str(self) -> &'static str {
        match self {
            QubeType::AppVM => "AppVM",
            QubeType::TemplateVM => "TemplateVM",
            QubeType::StandaloneVM => "StandaloneVM",
            QubeType::DispVM => "DispVM",
            QubeType::AdminVM => "AdminVM",
        }
    }

    /// The type named `s`, if Qubes has one by that name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A qube named by the policy: a literal name or a uuid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QubeRef {
    /// A qube name (`dom0` included).
    Name(String),
    /// `uuid:<uuid>`, stored lower-case without the prefix.
    Uuid(String),
}

impl QubeRef {
    /// Whether this names dom0 (`dom0` or the all-zero uuid).
    pub fn is_dom0(&self) -> bool {
        match self {
            QubeRef::Name(n) => n == "dom0",
            QubeRef::Uuid(u) => u == DOM0_UUID,
        }
    }
}

impl fmt::Display for QubeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QubeRef::Name(n) => f.write_str(n),
            QubeRef::Uuid(u) => write!(f, "uuid:{u}"),
        }
    }
}

/// A SOURCE or TARGET column token, or a `target=`/`default_target=` value. Which kinds each
/// place accepts is checked by the parser ([`Column`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Token {
    /// A literal qube name or `uuid:`.
    Qube(QubeRef),
    /// `@adminvm` (dom0).
    AdminVm,
    /// `@anyvm`: every qube except dom0.
    AnyVm,
    /// `*`: everything, dom0 included.
    Wildcard,
    /// `@tag:T`.
    Tag(String),
    /// `@type:T`.
    Type(QubeType),
    /// `@dispvm:VM`: a new disposable from that disposable template.
    DispVmOf(QubeRef),
    /// `@dispvm:@tag:T`: a new disposable from a disposable template carrying the tag.
    DispVmTag(String),
    /// `@default`: the caller named no target (TARGET column only).
    Default,
    /// `@dispvm`: a new disposable from the source's `default_dispvm` (TARGET, redirects).
    DispVm,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Qube(q) => write!(f, "{q}"),
            Token::AdminVm => f.write_str("@adminvm"),
            Token::AnyVm => f.write_str("@anyvm"),
            Token::Wildcard => f.write_str("*"),
            Token::Tag(t) => write!(f, "@tag:{t}"),
            Token::Type(t) => write!(f, "@type:{}", t.as_str()),
            Token::DispVmOf(q) => write!(f, "@dispvm:{q}"),
            Token::DispVmTag(t) => write!(f, "@dispvm:@tag:{t}"),
            Token::Default => f.write_str("@default"),
            Token::DispVm => f.write_str("@dispvm"),
        }
    }
}

/// Where a token appears; each place accepts a different set of token kinds (\[QX\] the
/// `Source`/`Target`/`Redirect` classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The SOURCE column.
    Source,
    /// The TARGET column.
    Target,
    /// A `target=` parameter.
    Redirect,
    /// A `default_target=` parameter.
    DefaultTarget,
}

impl Column {
    /// Whether a token of this kind may appear here.
    pub fn accepts(self, t: &Token) -> bool {
        match self {
            Column::Source => !matches!(t, Token::Default | Token::DispVm),
            Column::Target => true,
            // A redirect names one concrete destination, never a set of qubes.
            Column::Redirect | Column::DefaultTarget => {
                matches!(
                    t,
                    Token::Qube(_) | Token::AdminVm | Token::DispVm | Token::DispVmOf(_)
                )
            }
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Column::Source => "source",
            Column::Target => "target",
            Column::Redirect => "target=",
            Column::DefaultTarget => "default_target=",
        })
    }
}

/// The ACTION column with its parameters; absent optional parameters are `None` so that a
/// rendered rule says exactly what the file said.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// `allow [target=] [user=] [notify=] [autostart=]`.
    Allow {
        /// `target=`: where the call really goes.
        target: Option<Token>,
        /// `user=`: the user the service runs as.
        user: Option<String>,
        /// `notify=` (default no).
        notify: Option<bool>,
        /// `autostart=` (default yes).
        autostart: Option<bool>,
    },
    /// `deny [notify=]`.
    Deny {
        /// `notify=` (default yes).
        notify: Option<bool>,
    },
    /// `ask [target=] [default_target=] [user=] [notify=] [autostart=]`.
    Ask {
        /// `target=`: the only choice offered.
        target: Option<Token>,
        /// `default_target=`: the preselected choice.
        default_target: Option<Token>,
        /// `user=`.
        user: Option<String>,
        /// `notify=` (default no).
        notify: Option<bool>,
        /// `autostart=` (default yes).
        autostart: Option<bool>,
    },
}

impl Action {
    /// Whether the user is told about the outcome (deny defaults to yes, the others to no).
    pub fn notify(&self) -> bool {
        match self {
            Action::Allow { notify, .. } | Action::Ask { notify, .. } => notify.unwrap_or(false),
            Action::Deny { notify } => notify.unwrap_or(true),
        }
    }

    /// Whether a halted target may be started (default yes; deny has none).
    pub fn autostart(&self) -> bool {
        match self {
            Action::Allow { autostart, .. } | Action::Ask { autostart, .. } => {
                autostart.unwrap_or(true)
            }
            Action::Deny { .. } => false,
        }
    }

    /// The `target=` redirect, if any.
    pub fn redirect(&self) -> Option<&Token> {
        match self {
            Action::Allow { target, .. } | Action::Ask { target, .. } => target.as_ref(),
            Action::Deny { .. } => None,
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Allow {
                target,
                user,
                notify,
                autostart,
            } => {
                f.write_str("allow")?;
                if let Some(t) = target {
                    write!(f, " target={t}")?;
                }
                if let Some(u) = user {
                    write!(f, " user={u}")?;
                }
                if let Some(n) = notify {
                    write!(f, " notify={}", yes_no(*n))?;
                }
                if let Some(a) = autostart {
                    write!(f, " autostart={}", yes_no(*a))?;
                }
                Ok(())
            }
            Action::Deny { notify } => {
                f.write_str("deny")?;
                if let Some(n) = notify {
                    write!(f, " notify={}", yes_no(*n))?;
                }
                Ok(())
            }
            Action::Ask {
                target,
                default_target,
                user,
                notify,
                autostart,
            } => {
                f.write_str("ask")?;
                if let Some(t) = target {
                    write!(f, " target={t}")?;
                }
                if let Some(t) = default_target {
                    write!(f, " default_target={t}")?;
                }
                if let Some(u) = user {
                    write!(f, " user={u}")?;
                }
                if let Some(n) = notify {
                    write!(f, " notify={}", yes_no(*n))?;
                }
                if let Some(a) = autostart {
                    write!(f, " autostart={}", yes_no(*a))?;
                }
                Ok(())
            }
        }
    }
}

/// One policy line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// SERVICE.
    pub service: ServicePattern,
    /// ARG.
    pub argument: ArgPattern,
    /// SOURCE.
    pub source: Token,
    /// TARGET.
    pub target: Token,
    /// ACTION and its parameters.
    pub action: Action,
}

/// The canonical new-format line, which [`super::parse_rule`] reads back to the same rule.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            ServicePattern::Any => f.write_str("*")?,
            ServicePattern::Exact(s) => f.write_str(s)?,
        }
        match &self.argument {
            ArgPattern::Any => f.write_str("\t*")?,
            ArgPattern::Exact(a) => write!(f, "\t+{a}")?,
        }
        write!(f, "\t{}\t{}\t{}", self.source, self.target, self.action)
    }
}

/// `RPCNAME_ALLOWED_CHARSET` without `+` (\[QX\] `qrexec/__init__.py`).
pub fn is_service_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
}

/// A qube name as Qubes accepts it: a letter, then letters, digits, `_`, `.`, `-`; ≤ 31 bytes.
pub fn is_qube_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && s.len() <= MAX_QUBE_NAME
}

/// A tag as `admin.vm.tag.Set` accepts it: letters, digits, `_`, `-`.
pub fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_WORD
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// A `user=` value: a POSIX-ish user name (letters, digits, `_`, `.`, `-`, not starting with `-`).
pub fn is_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A uuid in 8-4-4-4-12 hex form, returned lower-case (Qubes prints uuids lower-case).
pub fn normalize_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let dash = matches!(i, 8 | 13 | 18 | 23);
        if dash != (*c == b'-') || (!dash && !c.is_ascii_hexdigit()) {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}
