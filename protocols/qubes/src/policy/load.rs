//! Files to a rule list: `policy.d` directory selection, `!include*` and `!compat-4.0` resolved
//! through the caller's [`PolicySource`], bounded by [`Limits`]; errors carry `file:line`.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use super::parse::{parse_line, parse_old_line, parse_service_arg, Directive, Line, OldLine};
use super::parse::{SyntaxError, Word};
use super::rule::{is_service_char, ArgPattern, Rule, ServicePattern};

/// Where the packaged policy lives.
pub const POLICY_DIR: &str = "/etc/qubes/policy.d";
/// Runtime policy, read first; a file here shadows the same basename in [`POLICY_DIR`].
pub const RUNTIME_POLICY_DIR: &str = "/run/qubes/policy.d";
/// The R4.0 per-service policy files that `!compat-4.0` imports.
pub const LEGACY_POLICY_DIR: &str = "/etc/qubes-rpc/policy";

/// Why the caller's [`PolicySource`] could not deliver a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceError {
    /// Nothing at that path.
    NotFound,
    /// The path is not a regular file.
    NotAFile,
    /// The path is not a directory.
    NotADirectory,
    /// Reading failed (permissions, I/O, not UTF-8, ...).
    Unreadable,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceError::NotFound => "not found",
            SourceError::NotAFile => "not a file",
            SourceError::NotADirectory => "not a directory",
            SourceError::Unreadable => "unreadable",
        })
    }
}

/// The file system as the policy loader sees it (no_std has none of its own).
pub trait PolicySource {
    /// The text of the file at the absolute, normalized `path`.
    fn read_file(&self, path: &str) -> Result<String, SourceError>;
    /// The names (not paths) of the regular files directly inside `dir`, in any order.
    fn list_dir(&self, dir: &str) -> Result<Vec<String>, SourceError>;
}

/// A source with no files: every include fails. For single-file parsing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFiles;

impl PolicySource for NoFiles {
    fn read_file(&self, _: &str) -> Result<String, SourceError> {
        Err(SourceError::NotFound)
    }
    fn list_dir(&self, _: &str) -> Result<Vec<String>, SourceError> {
        Err(SourceError::NotFound)
    }
}

/// Bounds on what one policy load may read; exceeding one fails the whole load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest chain of nested includes.
    pub max_include_depth: usize,
    /// Rules in the whole policy.
    pub max_rules: usize,
    /// Files read (an include repeated in a diamond counts each time).
    pub max_files: usize,
    /// Bytes of text read in total.
    pub max_bytes: usize,
}

impl Limits {
    /// Far above a real dom0 policy (a few hundred rules in a few dozen files).
    pub const DEFAULT: Limits = Limits {
        max_include_depth: 16,
        max_rules: 20_000,
        max_files: 1024,
        max_bytes: 16 << 20,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where a rule came from. Line 0 marks the implicit deny lines `!compat-4.0` adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file's path as loaded.
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A rule and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// The file and line.
    pub origin: Origin,
    /// The rule.
    pub rule: Rule,
}

/// What went wrong while loading, besides the place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// A line was refused.
    Syntax(SyntaxError),
    /// An included file or directory could not be read.
    Source {
        /// The resolved path.
        path: String,
        /// Why.
        error: SourceError,
    },
    /// A policy file name outside `[0-9a-z_.-]`: Qubes then denies every call.
    InvalidFileName(Word),
    /// A file includes itself, directly or not.
    IncludeCycle(String),
    /// Includes nested deeper than [`Limits::max_include_depth`].
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More rules than [`Limits::max_rules`].
    TooManyRules {
        /// The limit.
        limit: usize,
    },
    /// More files read than [`Limits::max_files`].
    TooManyFiles {
        /// The limit.
        limit: usize,
    },
    /// More text read than [`Limits::max_bytes`].
    TooMuchText {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Syntax(e) => write!(f, "{e}"),
            LoadError::Source { path, error } => {
                write!(f, "cannot read {}: {error}", Word::new(path))
            }
            LoadError::InvalidFileName(w) => {
                write!(
                    f,
                    "invalid policy file name {w} (allowed: 0-9 a-z _ . -); denying all calls"
                )
            }
            LoadError::IncludeCycle(p) => write!(f, "include cycle through {}", Word::new(p)),
            LoadError::TooDeep { limit } => write!(f, "includes nested deeper than {limit}"),
            LoadError::TooManyRules { limit } => write!(f, "more than {limit} rules"),
            LoadError::TooManyFiles { limit } => write!(f, "more than {limit} files read"),
            LoadError::TooMuchText { limit } => write!(f, "more than {limit} bytes of policy"),
        }
    }
}

/// A failed load: the file, the line when one is to blame, and why. Any of these means the
/// policy daemon must deny every call (fail closed), as Qubes does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file being read (or the directory being listed).
    pub file: String,
    /// The 1-based line, if one line is to blame.
    pub line: Option<u32>,
    /// Why.
    pub kind: LoadError,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.kind),
            None => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

impl core::error::Error for PolicyError {}

/// One file picked by [`select_policy_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// Its directory.
    pub dir: String,
    /// Its name.
    pub name: String,
}

impl PolicyFile {
    /// `dir/name`.
    pub fn path(&self) -> String {
        join(&self.dir, &self.name)
    }
}

fn is_policy_file_name_char(c: char) -> bool {
    c.is_ascii_digit() || c.is_ascii_lowercase() || matches!(c, '_' | '.' | '-')
}

/// Picks the files of a policy directory set (\[QX\] `filter_filepaths`, `load_policy_dirs`):
/// per directory, in the order given (runtime first), only `*.policy` names not starting with
/// `.`; any such name outside `[0-9a-z_.-]` fails the whole policy; a basename already taken by
/// an earlier directory is shadowed; the result is sorted by name in byte (C-locale) order.
pub fn select_policy_files(dirs: &[(&str, &[String])]) -> Result<Vec<PolicyFile>, PolicyError> {
    let mut out: Vec<PolicyFile> = Vec::new();
    for (dir, names) in dirs {
        let mut taken_here = Vec::new();
        for name in names.iter() {
            if !name.ends_with(".policy") || name.starts_with('.') {
                continue;
            }
            if !name.chars().all(is_policy_file_name_char) {
                return Err(PolicyError {
                    file: join(dir, name),
                    line: None,
                    kind: LoadError::InvalidFileName(Word::new(name)),
                });
            }
            taken_here.push(name);
        }
        for name in taken_here {
            if !out.iter().any(|f| &f.name == name) {
                out.push(PolicyFile {
                    dir: (*dir).to_string(),
                    name: name.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

/// `base/rel`, or `rel` when absolute, with `.`, `..` and empty components folded away.
pub fn resolve_path(base: &str, rel: &str) -> String {
    let joined = if rel.starts_with('/') {
        rel.to_string()
    } else {
        join(base, rel)
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = String::new();
    if joined.starts_with('/') {
        out.push('/');
    }
    out.push_str(&parts.join("/"));
    out
}

fn join(dir: &str, name: &str) -> String {
    let mut s = String::from(dir.trim_end_matches('/'));
    s.push('/');
    s.push_str(name);
    s
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => path.get(..i).unwrap_or(""),
        None => ".",
    }
}

/// The loader's state for one policy load.
pub(super) struct Loader<'s> {
    src: &'s dyn PolicySource,
    limits: Limits,
    pub(super) rules: Vec<PolicyRule>,
    /// Files being read, outermost first: the include chain, for cycles and depth.
    stack: Vec<String>,
    files: usize,
    bytes: usize,
    /// Directory relative includes resolve against: the top-level file's.
    base: String,
}

/// The place an error is reported at.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    file: &'a str,
    line: Option<u32>,
}

impl At<'_> {
    fn err(self, kind: LoadError) -> PolicyError {
        PolicyError {
            file: self.file.to_string(),
            line: self.line,
            kind,
        }
    }
}

impl<'s> Loader<'s> {
    pub(super) fn new(src: &'s dyn PolicySource, limits: Limits) -> Self {
        Loader {
            src,
            limits,
            rules: Vec::new(),
            stack: Vec::new(),
            files: 0,
            bytes: 0,
            base: String::new(),
        }
    }

    /// Loads the files of `dirs` (e.g. `[RUNTIME_POLICY_DIR, POLICY_DIR]`).
    pub(super) fn load_dirs(&mut self, dirs: &[&str]) -> Result<(), PolicyError> {
        let mut listed: Vec<(&str, Vec<String>)> = Vec::new();
        for dir in dirs {
            let names = self.src.list_dir(dir).map_err(|error| {
                At {
                    file: dir,
                    line: None,
                }
                .err(source_err(dir, error))
            })?;
            listed.push((dir, names));
        }
        let refs: Vec<(&str, &[String])> = listed.iter().map(|(d, n)| (*d, n.as_slice())).collect();
        for file in select_policy_files(&refs)? {
            self.top_level(
                &file.path(),
                At {
                    file: &file.dir,
                    line: None,
                },
            )?;
        }
        Ok(())
    }

    /// Loads one top-level file from the source; includes resolve against its directory.
    fn top_level(&mut self, path: &str, at: At<'_>) -> Result<(), PolicyError> {
        self.base = parent(path).to_string();
        self.include_file(path, at)
    }

    /// Loads one top-level file given as text.
    pub(super) fn top_level_text(&mut self, path: &str, text: &str) -> Result<(), PolicyError> {
        self.base = parent(path).to_string();
        self.enter(
            path,
            At {
                file: path,
                line: None,
            },
        )?;
        self.new_format(path, text)?;
        self.stack.pop();
        Ok(())
    }

    /// Reads and loads a new-format file, checking cycles and depth before reading.
    fn include_file(&mut self, path: &str, at: At<'_>) -> Result<(), PolicyError> {
        self.enter(path, at)?;
        let text = self.read(path, at)?;
        self.new_format(path, &text)?;
        self.stack.pop();
        Ok(())
    }

    fn read(&mut self, path: &str, at: At<'_>) -> Result<String, PolicyError> {
        self.files += 1;
        if self.files > self.limits.max_files {
            return Err(at.err(LoadError::TooManyFiles {
                limit: self.limits.max_files,
            }));
        }
        let text = self
            .src
            .read_file(path)
            .map_err(|e| at.err(source_err(path, e)))?;
        self.bytes = self.bytes.saturating_add(text.len());
        if self.bytes > self.limits.max_bytes {
            return Err(at.err(LoadError::TooMuchText {
                limit: self.limits.max_bytes,
            }));
        }
        Ok(text)
    }

    /// Enters `path` for reading: refuses cycles and too deep nesting.
    fn enter(&mut self, path: &str, at: At<'_>) -> Result<(), PolicyError> {
        if self.stack.iter().any(|p| p == path) {
            return Err(at.err(LoadError::IncludeCycle(path.to_string())));
        }
        if self.stack.len() > self.limits.max_include_depth {
            return Err(at.err(LoadError::TooDeep {
                limit: self.limits.max_include_depth,
            }));
        }
        self.stack.push(path.to_string());
        Ok(())
    }

    fn push_rule(&mut self, file: &Arc<str>, line: u32, rule: Rule) -> Result<(), PolicyError> {
        if self.rules.len() >= self.limits.max_rules {
            let at = At {
                file,
                line: Some(line),
            };
            return Err(at.err(LoadError::TooManyRules {
                limit: self.limits.max_rules,
            }));
        }
        self.rules.push(PolicyRule {
            origin: Origin {
                file: file.clone(),
                line,
            },
            rule,
        });
        Ok(())
    }

    fn new_format(&mut self, path: &str, text: &str) -> Result<(), PolicyError> {
        let file: Arc<str> = Arc::from(path);
        for (n, raw) in text.lines().enumerate() {
            let line = u32::try_from(n + 1).unwrap_or(u32::MAX);
            let at = At {
                file: path,
                line: Some(line),
            };
            match parse_line(raw).map_err(|e| at.err(LoadError::Syntax(e)))? {
                Line::Empty => {}
                Line::Rule(rule) => self.push_rule(&file, line, rule)?,
                Line::Directive(Directive::Include(p)) => {
                    let target = resolve_path(&self.base, p);
                    self.include_file(&target, at)?;
                }
                Line::Directive(Directive::IncludeDir(d)) => self.include_dir(d, at)?,
                Line::Directive(Directive::IncludeService {
                    service,
                    argument,
                    path: p,
                }) => {
                    let target = resolve_path(&self.base, p);
                    self.old_format(&service, &argument, &target, at)?;
                }
                Line::Directive(Directive::Compat40) => self.compat40(at)?,
            }
        }
        Ok(())
    }

    fn include_dir(&mut self, dir: &str, at: At<'_>) -> Result<(), PolicyError> {
        let dir = resolve_path(&self.base, dir);
        let names = self
            .src
            .list_dir(&dir)
            .map_err(|e| at.err(source_err(&dir, e)))?;
        for file in select_policy_files(&[(dir.as_str(), names.as_slice())])? {
            self.include_file(&file.path(), at)?;
        }
        Ok(())
    }

    /// Reads an old-format file for one service (\[QX\] `load_policy_file_service`).
    fn old_format(
        &mut self,
        service: &ServicePattern,
        argument: &ArgPattern,
        path: &str,
        at: At<'_>,
    ) -> Result<(), PolicyError> {
        self.enter(path, at)?;
        let text = self.read(path, at)?;
        let file: Arc<str> = Arc::from(path);
        let dir = parent(path).to_string();
        for (n, raw) in text.lines().enumerate() {
            let line = u32::try_from(n + 1).unwrap_or(u32::MAX);
            let here = At {
                file: path,
                line: Some(line),
            };
            match parse_old_line(service, argument, raw)
                .map_err(|e| here.err(LoadError::Syntax(e)))?
            {
                OldLine::Empty => {}
                OldLine::Rule(rule) => self.push_rule(&file, line, *rule)?,
                // R4.0 `$include:` paths were relative to the including file's directory.
                OldLine::Include(p) => {
                    let target = resolve_path(&dir, &p);
                    self.old_format(service, argument, &target, here)?;
                }
            }
        }
        self.stack.pop();
        Ok(())
    }

    /// `!compat-4.0` (\[QX\] `parser_compat.py`): every legacy file `SERVICE[+ARG]` in
    /// [`LEGACY_POLICY_DIR`], by service then argument (no argument last), each followed, when
    /// it names an argument, by the implicit R4.0 denies so the general file cannot widen it.
    fn compat40(&mut self, at: At<'_>) -> Result<(), PolicyError> {
        let names = self
            .src
            .list_dir(LEGACY_POLICY_DIR)
            .map_err(|e| at.err(source_err(LEGACY_POLICY_DIR, e)))?;
        let mut files: Vec<(ServicePattern, ArgPattern, String)> = Vec::new();
        for name in names {
            let ignored = name.starts_with('.')
                || [".rpmsave", ".rpmnew", ".swp"]
                    .iter()
                    .any(|s| name.ends_with(s))
                || !name.chars().all(|c| is_service_char(c) || c == '+');
            if ignored {
                continue;
            }
            let (svc, arg) = match name.split_once('+') {
                Some((s, a)) => (s, alloc::format!("+{a}")),
                None => (name.as_str(), String::from("*")),
            };
            // A name the new parser refuses (e.g. empty service) is skipped like other junk.
            if let Ok((s, a)) = parse_service_arg(svc, &arg) {
                files.push((s, a, name.clone()));
            }
        }
        files.sort_by(|(s1, a1, _), (s2, a2, _)| {
            let key = |s: &ServicePattern, a: &ArgPattern| {
                let s = match s {
                    ServicePattern::Exact(s) => s.clone(),
                    ServicePattern::Any => String::new(),
                };
                match a {
                    ArgPattern::Exact(a) => (s, false, a.clone()),
                    ArgPattern::Any => (s, true, String::new()),
                }
            };
            key(s1, a1).cmp(&key(s2, a2))
        });
        for (service, argument, name) in files {
            let path = join(LEGACY_POLICY_DIR, &name);
            self.old_format(&service, &argument, &path, at)?;
            if argument != ArgPattern::Any {
                let file: Arc<str> = Arc::from(path.as_str());
                for deny in ["@anyvm @anyvm deny", "@anyvm @adminvm deny"] {
                    if let Ok(OldLine::Rule(rule)) = parse_old_line(&service, &argument, deny) {
                        self.push_rule(&file, 0, *rule)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn source_err(path: &str, error: SourceError) -> LoadError {
    LoadError::Source {
        path: path.to_string(),
        error,
    }
}
