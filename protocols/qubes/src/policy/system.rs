//! The caller's model of the system for policy evaluation: which qubes exist, their type,
//! tags, uuid, default disposable template and power state (\[QX\] `system_info`).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use super::rule::{QubeRef, QubeType, DOM0_UUID};

/// One qube as the policy sees it (\[QX\] `system_info['domains']`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qube {
    /// Its name.
    pub name: String,
    /// Its uuid, lower-case, without `uuid:`.
    pub uuid: Option<String>,
    /// Its type.
    pub kind: QubeType,
    /// Its tags.
    pub tags: Vec<String>,
    /// The disposable template `@dispvm` means when this qube calls.
    pub default_dispvm: Option<String>,
    /// Whether disposables may be started from it (`template_for_dispvms`).
    pub template_for_dispvms: bool,
    /// Whether it runs now (matters for `autostart=no`).
    pub running: bool,
    /// Internal qubes are never offered in an `ask` dialog.
    pub internal: bool,
}

impl Qube {
    /// A running qube with no uuid, tags or default disposable.
    pub fn new(name: &str, kind: QubeType) -> Self {
        Qube {
            name: name.into(),
            uuid: None,
            kind,
            tags: Vec::new(),
            default_dispvm: None,
            template_for_dispvms: false,
            running: true,
            internal: false,
        }
    }

    /// With a tag added.
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// With this uuid.
    pub fn uuid(mut self, uuid: &str) -> Self {
        self.uuid = Some(uuid.to_ascii_lowercase());
        self
    }

    /// With this default disposable template.
    pub fn default_dispvm(mut self, template: &str) -> Self {
        self.default_dispvm = Some(template.into());
        self
    }

    /// Marked as a disposable template.
    pub fn dispvm_template(mut self) -> Self {
        self.template_for_dispvms = true;
        self
    }

    /// Marked as halted.
    pub fn halted(mut self) -> Self {
        self.running = false;
        self
    }

    pub(super) fn is_dom0(&self) -> bool {
        self.name == "dom0"
    }
}

/// The qubes that exist. Always holds `dom0` (AdminVM, the all-zero uuid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct System {
    pub(super) qubes: BTreeMap<String, Qube>,
}

impl Default for System {
    fn default() -> Self {
        Self::new()
    }
}

impl System {
    /// Only dom0.
    pub fn new() -> Self {
        let mut qubes = BTreeMap::new();
        qubes.insert(
            "dom0".into(),
            Qube::new("dom0", QubeType::AdminVM).uuid(DOM0_UUID),
        );
        System { qubes }
    }

    /// Adds or replaces a qube (by name).
    pub fn add(&mut self, qube: Qube) -> &mut Self {
        self.qubes.insert(qube.name.clone(), qube);
        self
    }

    /// The qube called `name`.
    pub fn get(&self, name: &str) -> Option<&Qube> {
        self.qubes.get(name)
    }

    /// The qube `s` names: a name or `uuid:…`.
    pub fn lookup(&self, s: &str) -> Option<&Qube> {
        match s.strip_prefix("uuid:") {
            Some(u) => self.by_uuid(u),
            None => self.get(s),
        }
    }

    fn by_uuid(&self, uuid: &str) -> Option<&Qube> {
        self.qubes.values().find(|q| {
            q.uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
        })
    }

    pub(super) fn by_ref(&self, r: &QubeRef) -> Option<&Qube> {
        match r {
            QubeRef::Name(n) => self.get(n),
            QubeRef::Uuid(u) => self.by_uuid(u),
        }
    }

    pub(super) fn dom0(&self) -> Option<&Qube> {
        self.get("dom0")
    }

    pub(super) fn dispvm_template(&self, r: &QubeRef) -> Option<&Qube> {
        self.by_ref(r).filter(|q| q.template_for_dispvms)
    }
}
