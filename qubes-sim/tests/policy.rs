//! Policy as the sim applies it: the project's `qubes-rpc/policy.d` loads with no error, and a
//! table of decisions through the sim's glue (registry → policy system, the state directory's
//! files merged with another directory by file name, power state for `autostart=no`).
//! The evaluator's own table (75 decisions, 30 refused lines) is in protocols/qubes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::State;
use qubes::policy::{Decision, Request};
use qubes_sim::registry::{Class, Registry};

fn render(d: &Decision) -> String {
    match d {
        Decision::Allow { target, user, .. } => match user {
            Some(u) => format!("allow {target} user={u}"),
            None => format!("allow {target}"),
        },
        Decision::Ask {
            targets,
            default_target,
            ..
        } => {
            let t: Vec<String> = targets.iter().map(ToString::to_string).collect();
            match default_target {
                Some(d) => format!("ask [{}] default={d}", t.join(",")),
                None => format!("ask [{}]", t.join(",")),
            }
        }
        Decision::Deny { .. } => "deny".into(),
    }
}

#[test]
fn the_projects_policy_files_load() {
    let dir = qubes_sim::policy::project_rpc_dir().join("policy.d");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".policy"))
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        eprintln!("no policy files in {} yet", dir.display());
        return;
    }
    // Each file on its own, then all of them as the sim loads them.
    for f in &files {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        qubes::policy::Policy::parse(f, &text).unwrap_or_else(|e| panic!("{e}"));
    }
    let state = State::new("policy-project");
    std::fs::create_dir_all(state.path().join("policy.d")).unwrap();
    let policy = qubes_sim::policy::load_with(state.path(), std::slice::from_ref(&dir))
        .unwrap_or_else(|e| panic!("{e}"));
    let rules = policy.rules().len();
    let commented_only = files.iter().all(|f| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    });
    assert!(commented_only || rules >= 1, "{files:?} gave no rules");
    eprintln!("{} files, {rules} rules", files.len());
}

#[test]
fn a_broken_project_file_is_refused_with_its_file_and_line() {
    let state = State::new("policy-broken");
    std::fs::create_dir_all(state.path().join("policy.d")).unwrap();
    let extra = state.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("90-x.policy"),
        "svc * work vault allow\nsvc * work\n",
    )
    .unwrap();
    let e = load_with(state.path(), &extra).unwrap_err().to_string();
    assert!(e.contains("90-x.policy:2"), "{e}");
}

fn load_with(
    state: &Path,
    extra: &Path,
) -> Result<qubes::policy::Policy, qubes::policy::PolicyError> {
    qubes_sim::policy::load_with(state, &[extra.to_path_buf()])
}

fn registry() -> Registry {
    let mut r = Registry::default();
    r.create("fedora", Class::TemplateVM, "black").unwrap();
    r.create("work", Class::AppVM, "blue").unwrap();
    r.create("personal", Class::AppVM, "yellow").unwrap();
    r.create("sshagent-unikernel", Class::StandaloneVM, "black")
        .unwrap();
    r.create("passman-unikernel", Class::StandaloneVM, "black")
        .unwrap();
    r.create("viewer-unikernel-dvm", Class::AppVM, "red")
        .unwrap();
    r.set_pref("viewer-unikernel-dvm", "template_for_dispvms", "True")
        .unwrap();
    r.set_pref("work", "default_dispvm", "viewer-unikernel-dvm")
        .unwrap();
    r.domains
        .get_mut("work")
        .unwrap()
        .tags
        .push("trusted".into());
    r.domains
        .get_mut("sshagent-unikernel")
        .unwrap()
        .tags
        .push("vault".into());
    r.domains
        .get_mut("passman-unikernel")
        .unwrap()
        .tags
        .push("vault".into());
    let disp = r.create_dispvm("viewer-unikernel-dvm").unwrap();
    assert_eq!(disp, "disp1");
    r
}

/// The state directory's file (read first: `30-` sorts before `90-`).
const USER: &str = "\
qubes.SshAgent +work work sshagent-unikernel ask default_target=sshagent-unikernel
qubes.PassmanGet +github.com @tag:trusted passman-unikernel allow
test.Shadowed * @anyvm @anyvm deny
";

/// The other directory's files.
const BUNDLE: &[(&str, &str)] = &[
    (
        "90-bundle.policy",
        "\
qubes.SshAgent * @anyvm @anyvm deny
qubes.PassmanGet * @anyvm @anyvm deny
qubes.OpenInVM * @anyvm @dispvm:viewer-unikernel-dvm allow
qubes.OpenInVM * @dispvm:viewer-unikernel-dvm @anyvm deny
qubes.UnikernelConfirm * sshagent-unikernel @adminvm allow
qubes.UnikernelConfirm * @anyvm @anyvm deny
qubes.SshAgentAdmin * @adminvm sshagent-unikernel allow
qubes.SshAgentAdmin * @anyvm @anyvm deny
test.Vaults * work @tag:vault allow autostart=no
test.Vaults * @anyvm @default ask default_target=passman-unikernel
test.Vaults * @anyvm @tag:vault allow
test.Types * @type:TemplateVM @adminvm allow
test.Types * @anyvm @type:StandaloneVM allow user=root
test.Dispvm * work @dispvm allow
test.Redirect * personal @default allow target=sshagent-unikernel
",
    ),
    // Same name as the state directory's file: the state directory's copy wins.
    ("30-user.policy", "test.Shadowed * @anyvm @anyvm allow\n"),
];

/// (call, source, target, expected)
const TABLE: &[(&str, &str, &str, &str)] = &[
    (
        "qubes.SshAgent+work",
        "work",
        "sshagent-unikernel",
        "ask [sshagent-unikernel] default=sshagent-unikernel",
    ),
    (
        "qubes.SshAgent+work",
        "personal",
        "sshagent-unikernel",
        "deny",
    ),
    ("qubes.SshAgent+git", "work", "sshagent-unikernel", "deny"),
    ("qubes.SshAgent", "work", "sshagent-unikernel", "deny"),
    (
        "qubes.PassmanGet+github.com",
        "work",
        "passman-unikernel",
        "allow passman-unikernel",
    ),
    (
        "qubes.PassmanGet+github.com",
        "personal",
        "passman-unikernel",
        "deny",
    ),
    (
        "qubes.PassmanGet+gitlab.com",
        "work",
        "passman-unikernel",
        "deny",
    ),
    (
        "qubes.PassmanGet+github.com",
        "work",
        "sshagent-unikernel",
        "deny",
    ),
    (
        "qubes.OpenInVM",
        "work",
        "@dispvm:viewer-unikernel-dvm",
        "allow @dispvm:viewer-unikernel-dvm",
    ),
    (
        "qubes.OpenInVM",
        "work",
        "@dispvm",
        "allow @dispvm:viewer-unikernel-dvm",
    ),
    ("qubes.OpenInVM", "personal", "@dispvm", "deny"),
    (
        "qubes.OpenInVM",
        "personal",
        "@dispvm:viewer-unikernel-dvm",
        "allow @dispvm:viewer-unikernel-dvm",
    ),
    ("qubes.OpenInVM", "work", "personal", "deny"),
    ("qubes.OpenInVM", "disp1", "work", "deny"),
    (
        "qubes.UnikernelConfirm",
        "sshagent-unikernel",
        "dom0",
        "allow dom0",
    ),
    (
        "qubes.UnikernelConfirm",
        "sshagent-unikernel",
        "@adminvm",
        "allow dom0",
    ),
    ("qubes.UnikernelConfirm", "work", "dom0", "deny"),
    (
        "qubes.UnikernelConfirm",
        "passman-unikernel",
        "dom0",
        "deny",
    ),
    (
        "qubes.SshAgentAdmin",
        "dom0",
        "sshagent-unikernel",
        "allow sshagent-unikernel",
    ),
    ("qubes.SshAgentAdmin", "work", "sshagent-unikernel", "deny"),
    ("qubes.SshAgentAdmin", "dom0", "passman-unikernel", "deny"),
    ("test.Shadowed", "work", "personal", "deny"),
    (
        "test.Vaults",
        "work",
        "sshagent-unikernel",
        "allow sshagent-unikernel",
    ),
    ("test.Vaults", "work", "passman-unikernel", "deny"),
    (
        "test.Vaults",
        "personal",
        "passman-unikernel",
        "allow passman-unikernel",
    ),
    (
        "test.Vaults",
        "personal",
        "",
        "ask [passman-unikernel,sshagent-unikernel] default=passman-unikernel",
    ),
    ("test.Vaults", "personal", "work", "deny"),
    ("test.Types", "fedora", "dom0", "allow dom0"),
    ("test.Types", "work", "dom0", "deny"),
    (
        "test.Types",
        "work",
        "sshagent-unikernel",
        "allow sshagent-unikernel user=root",
    ),
    ("test.Types", "work", "personal", "deny"),
    (
        "test.Dispvm",
        "work",
        "@dispvm",
        "allow @dispvm:viewer-unikernel-dvm",
    ),
    ("test.Dispvm", "personal", "@dispvm", "deny"),
    ("test.Redirect", "personal", "", "allow sshagent-unikernel"),
    ("test.Redirect", "personal", "work", "deny"),
    ("test.Redirect", "work", "", "deny"),
    ("test.Missing", "work", "personal", "deny"),
    ("qubes.SshAgent+work", "ghost", "sshagent-unikernel", "deny"),
    ("qubes.SshAgent+work", "work", "ghost", "deny"),
    (
        "qubes.PassmanGet+github.com",
        "dom0",
        "passman-unikernel",
        "deny",
    ),
];

#[test]
fn decisions_through_the_sims_registry_and_directories() {
    let state = State::new("policy-table");
    let pd = state.path().join("policy.d");
    std::fs::create_dir_all(&pd).unwrap();
    std::fs::write(pd.join("30-user.policy"), USER).unwrap();
    let extra = state.path().join("bundle");
    std::fs::create_dir_all(&extra).unwrap();
    for (name, text) in BUNDLE {
        std::fs::write(extra.join(name), text).unwrap();
    }
    let policy = load_with(state.path(), &extra).unwrap_or_else(|e| panic!("{e}"));
    let reg = registry();
    // sshagent-unikernel runs; passman-unikernel does not (autostart=no matters).
    let running: BTreeMap<String, bool> = [("sshagent-unikernel".to_string(), true)].into();
    let system = qubes_sim::policy::system(&reg, &running);
    let mut failures = Vec::new();
    for (call, source, target, want) in TABLE {
        let got = render(&policy.evaluate(&system, &Request::from_call(call, source, target)));
        if got != *want {
            failures.push(format!(
                "{call} {source} -> {target:?}: got `{got}`, want `{want}`"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(TABLE.len() >= 40);
}
