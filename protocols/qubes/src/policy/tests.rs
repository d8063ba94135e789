//! Policy tests: a decision table over one small system, includes through an in-memory file
//! tree, refusals with `file:line`, and properties (no panics, render/parse round trip).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

extern crate std;

/// An in-memory file tree: absolute path → text.
#[derive(Default)]
struct MemFs(BTreeMap<String, String>);

impl MemFs {
    fn with(files: &[(&str, &str)]) -> Self {
        MemFs(
            files
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        )
    }
}

impl PolicySource for MemFs {
    fn read_file(&self, path: &str) -> Result<String, SourceError> {
        self.0.get(path).cloned().ok_or(SourceError::NotFound)
    }
    fn list_dir(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let names: Vec<String> = self
            .0
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(|n| n.to_string())
            .collect();
        if names.is_empty() && !self.0.keys().any(|p| p.starts_with(&prefix)) {
            return Err(SourceError::NotFound);
        }
        Ok(names)
    }
}

const WORK_UUID: &str = "11111111-2222-3333-4444-555555555555";

fn system() -> System {
    let mut s = System::new();
    s.add(
        Qube::new("work", QubeType::AppVM)
            .tag("work")
            .uuid(WORK_UUID)
            .default_dispvm("default-dvm"),
    )
    .add(Qube::new("personal", QubeType::AppVM).default_dispvm("default-dvm"))
    .add(Qube::new("untrusted", QubeType::AppVM).tag("risky"))
    .add(Qube::new("vault", QubeType::AppVM).tag("vault").halted())
    .add(Qube::new("ssh-vault", QubeType::AppVM).tag("vault"))
    .add(
        Qube::new("default-dvm", QubeType::AppVM)
            .dispvm_template()
            .tag("dvm"),
    )
    .add(
        Qube::new("fb-viewer-dvm", QubeType::AppVM)
            .dispvm_template()
            .tag("viewer")
            .uuid("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
    )
    .add(Qube::new("notdvm", QubeType::AppVM).default_dispvm("work"))
    .add(Qube::new("fedora-41", QubeType::TemplateVM))
    .add(Qube::new("disp42", QubeType::DispVM))
    .add(Qube::new("standalone", QubeType::StandaloneVM))
    .add(Qube::new("sys-firewall", QubeType::AppVM).tag("work"));
    let mut fw = Qube::new("sys-firewall", QubeType::AppVM).tag("work");
    fw.internal = true;
    s.add(fw);
    s
}

/// A decision as one comparable line.
fn render(d: &Decision) -> String {
    match d {
        Decision::Allow {
            target,
            user,
            autostart,
            notify,
            ..
        } => {
            let mut s = format!("allow {target}");
            if let Some(u) = user {
                s += &format!(" user={u}");
            }
            if *notify {
                s += " notify";
            }
            if !*autostart {
                s += " noautostart";
            }
            s
        }
        Decision::Ask {
            targets,
            default_target,
            user,
            ..
        } => {
            let t: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
            let mut s = format!("ask [{}]", t.join(","));
            if let Some(d) = default_target {
                s += &format!(" default={d}");
            }
            if let Some(u) = user {
                s += &format!(" user={u}");
            }
            s
        }
        Decision::Deny { notify, reason } => {
            format!("deny{} ({reason})", if *notify { "" } else { " quiet" })
        }
    }
}

fn decide(policy: &Policy, call: &str, source: &str, target: &str) -> String {
    render(&policy.evaluate(&system(), &Request::from_call(call, source, target)))
}

/// (case, policy text, call, source, target, expected decision)
const TABLE: &[(&str, &str, &str, &str, &str, &str)] = &[
    ("allow_exact", "svc * work vault allow", "svc", "work", "vault", "allow vault"),
    ("no_rule_denies", "svc * work vault allow", "other", "work", "vault", "deny (no matching rule found)"),
    ("deny_rule_notifies", "svc * @anyvm @anyvm deny", "svc", "work", "vault", "deny (denied by policy t.policy:1)"),
    ("deny_notify_no", "svc * @anyvm @anyvm deny notify=no", "svc", "work", "vault", "deny quiet (denied by policy t.policy:1)"),
    ("arg_star_matches_none", "svc * work vault allow", "svc", "work", "vault", "allow vault"),
    ("arg_star_matches_some", "svc * work vault allow", "svc+x", "work", "vault", "allow vault"),
    ("arg_plus_matches_empty", "svc + work vault allow", "svc+", "work", "vault", "allow vault"),
    ("arg_plus_matches_missing", "svc + work vault allow", "svc", "work", "vault", "allow vault"),
    ("arg_plus_not_value", "svc + work vault allow", "svc+x", "work", "vault", "deny (no matching rule found)"),
    ("arg_value_matches", "svc +github work vault allow", "svc+github", "work", "vault", "allow vault"),
    ("arg_value_other", "svc +github work vault allow", "svc+gitlab", "work", "vault", "deny (no matching rule found)"),
    ("service_star", "* * work vault allow", "any.Thing+x", "work", "vault", "allow vault"),
    ("first_match_wins", "svc * work vault deny\nsvc * work vault allow", "svc", "work", "vault", "deny (denied by policy t.policy:1)"),
    ("first_match_allow_before_deny", "svc +a work vault allow\nsvc * @anyvm @anyvm deny", "svc+a", "work", "vault", "allow vault"),
    ("later_rule_after_nonmatch", "svc +a work vault allow\nsvc * @anyvm @anyvm deny", "svc+b", "work", "vault", "deny (denied by policy t.policy:2)"),
    ("anyvm_not_dom0_target", "svc * @anyvm @anyvm allow", "svc", "work", "dom0", "deny (no matching rule found)"),
    ("anyvm_not_dom0_source", "svc * @anyvm @anyvm allow", "svc", "dom0", "work", "deny (no matching rule found)"),
    ("star_matches_dom0", "svc * * * allow", "svc", "work", "dom0", "allow dom0"),
    ("adminvm_target", "svc * work @adminvm allow", "svc", "work", "dom0", "allow dom0"),
    ("adminvm_requested_as_keyword", "svc * work dom0 allow", "svc", "work", "@adminvm", "allow dom0"),
    ("dom0_zero_uuid_target", "svc * work uuid:00000000-0000-0000-0000-000000000000 allow", "svc", "work", "dom0", "allow dom0"),
    ("uuid_source", "svc * uuid:11111111-2222-3333-4444-555555555555 vault allow", "svc", "work", "vault", "allow vault"),
    ("uuid_request_target", "svc * work vault allow", "svc", "work", "uuid:00000000-0000-0000-0000-000000000000", "deny (no matching rule found)"),
    ("uuid_rule_target", "svc * personal uuid:11111111-2222-3333-4444-555555555555 allow", "svc", "personal", "work", "allow work"),
    ("tag_source", "svc * @tag:work vault allow", "svc", "work", "vault", "allow vault"),
    ("tag_source_other", "svc * @tag:work vault allow", "svc", "personal", "vault", "deny (no matching rule found)"),
    ("tag_target", "svc * @anyvm @tag:vault allow", "svc", "work", "ssh-vault", "allow ssh-vault"),
    ("type_source", "svc * @type:TemplateVM dom0 allow", "svc", "fedora-41", "dom0", "allow dom0"),
    ("type_target_dispvm", "svc * @anyvm @type:DispVM allow", "svc", "work", "disp42", "allow disp42"),
    ("type_adminvm_is_dom0", "svc * work @type:AdminVM allow", "svc", "work", "dom0", "allow dom0"),
    ("default_needs_redirect", "svc * work @default allow target=vault", "svc", "work", "", "allow vault"),
    ("default_keyword_request", "svc * work @default allow target=vault", "svc", "work", "@default", "allow vault"),
    ("anyvm_matches_default_no_target", "svc * @anyvm @anyvm allow", "svc", "work", "", "deny (policy t.policy:1 allows, but no target is given by caller or policy)"),
    ("unknown_target_is_default", "svc * work @default allow target=vault", "svc", "work", "no-such-qube", "allow vault"),
    ("redirect_to_missing_denied", "svc * work @default allow target=ghost", "svc", "work", "", "deny (policy t.policy:1 allows, but no target is given by caller or policy)"),
    ("redirect_target", "svc * @anyvm @anyvm allow target=vault", "svc", "work", "personal", "allow vault"),
    ("redirect_adminvm", "svc * @anyvm @default allow target=@adminvm", "svc", "work", "", "allow dom0"),
    ("user_and_notify", "svc * work vault allow user=root notify=yes", "svc", "work", "vault", "allow vault user=root notify"),
    ("autostart_no_halted", "svc * work vault allow autostart=no", "svc", "work", "vault", "deny quiet (policy t.policy:1 has autostart=no and the target is not running)"),
    ("autostart_no_running", "svc * work ssh-vault allow autostart=no", "svc", "work", "ssh-vault", "allow ssh-vault noautostart"),
    ("dispvm_default", "svc * work @dispvm allow", "svc", "work", "@dispvm", "allow @dispvm:default-dvm"),
    ("dispvm_no_default", "svc * @anyvm @dispvm allow", "svc", "untrusted", "@dispvm", "deny (policy t.policy:1 allows @dispvm, but the source has no default disposable template)"),
    ("dispvm_default_not_template", "svc * @anyvm @dispvm allow", "svc", "notdvm", "@dispvm", "deny (policy t.policy:1 allows @dispvm, but the source has no default disposable template)"),
    ("dispvm_vm_request", "svc * @anyvm @dispvm:fb-viewer-dvm allow", "svc", "work", "@dispvm:fb-viewer-dvm", "allow @dispvm:fb-viewer-dvm"),
    ("dispvm_vm_matches_default", "svc * @anyvm @dispvm:default-dvm allow", "svc", "work", "@dispvm", "allow @dispvm:default-dvm"),
    ("dispvm_vm_not_template", "svc * @anyvm * allow", "svc", "work", "@dispvm:vault", "deny (not a template for disposables)"),
    ("dispvm_tag", "svc * @anyvm @dispvm:@tag:viewer allow", "svc", "work", "@dispvm:fb-viewer-dvm", "allow @dispvm:fb-viewer-dvm"),
    ("dispvm_tag_other", "svc * @anyvm @dispvm:@tag:viewer allow", "svc", "work", "@dispvm:default-dvm", "deny (no matching rule found)"),
    ("dispvm_redirect", "svc * @anyvm @default allow target=@dispvm:fb-viewer-dvm", "svc", "work", "", "allow @dispvm:fb-viewer-dvm"),
    ("dispvm_source_never_matches", "svc * @dispvm:default-dvm vault allow", "svc", "disp42", "vault", "deny (no matching rule found)"),
    ("anyvm_matches_dispvm_target", "svc * @anyvm @anyvm allow", "svc", "work", "@dispvm", "allow @dispvm:default-dvm"),
    ("unknown_source", "svc * * * allow", "svc", "ghost", "vault", "deny (unknown source qube)"),
    ("bad_request_token", "svc * * * allow", "svc", "work", "@bogus", "deny (invalid target)"),
    ("ask_collects", "svc * work @default ask\nsvc * work vault allow\nsvc * work ssh-vault ask\nsvc * work personal deny", "svc", "work", "", "ask [ssh-vault,vault]"),
    ("ask_default_target", "svc * @anyvm ssh-vault ask default_target=ssh-vault", "svc", "work", "ssh-vault", "ask [ssh-vault] default=ssh-vault"),
    ("ask_deny_removes", "svc * work @default ask\nsvc * work @tag:vault deny\nsvc * work @anyvm allow", "svc", "work", "", "ask [default-dvm,disp42,fb-viewer-dvm,fedora-41,notdvm,personal,standalone,untrusted,@dispvm:default-dvm,@dispvm:fb-viewer-dvm]"),
    ("ask_redirect_single", "svc * @anyvm @default ask target=vault default_target=vault", "svc", "work", "", "ask [vault] default=vault"),
    ("ask_default_not_offered", "svc * work @default ask default_target=personal\nsvc * work vault allow", "svc", "work", "", "ask [vault]"),
    ("ask_nothing_to_offer", "svc * work @default ask", "svc", "work", "", "deny (policy t.policy:1 asks, but offers no target)"),
    ("ask_autostart_filters", "svc * work @default ask autostart=no\nsvc * work @tag:vault allow", "svc", "work", "", "ask [ssh-vault]"),
    ("ask_dispvm_default", "svc * work @default ask default_target=@dispvm\nsvc * work @dispvm allow", "svc", "work", "", "ask [@dispvm:default-dvm] default=@dispvm:default-dvm"),
    ("ask_user", "svc * work vault ask user=user", "svc", "work", "vault", "ask [vault] user=user"),
    ("redirect_dispvm_not_template", "svc * @anyvm @default allow target=@dispvm:vault", "svc", "work", "", "deny (not a template for disposables)"),
    ("redirect_uuid", "svc * @anyvm @default allow target=uuid:11111111-2222-3333-4444-555555555555", "svc", "personal", "", "allow work"),
    ("dispvm_uuid_token_upper_case", "svc * @anyvm @dispvm:uuid:AAAAAAAA-bbbb-cccc-dddd-eeeeeeeeeeee allow", "svc", "work", "@dispvm:fb-viewer-dvm", "allow @dispvm:fb-viewer-dvm"),
    ("dispvm_uuid_request", "svc * @anyvm @dispvm:fb-viewer-dvm allow", "svc", "work", "@dispvm:uuid:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "allow @dispvm:fb-viewer-dvm"),
    ("ask_redirect_dispvm_no_default", "svc * untrusted @default ask target=@dispvm", "svc", "untrusted", "", "deny (policy t.policy:1 asks, but offers no target)"),
    ("adminvm_source", "svc * @adminvm work allow", "svc", "dom0", "work", "allow work"),
    ("type_adminvm_source", "svc * @type:AdminVM work allow", "svc", "dom0", "work", "allow work"),
    ("star_source_dom0", "svc * * work allow", "svc", "dom0", "work", "allow work"),
    ("arg_with_plus_inside", "svc +a+b work vault allow", "svc+a+b", "work", "vault", "allow vault"),
    ("dom0_source_never_offered_itself", "svc * dom0 @default ask\nsvc * dom0 * allow", "svc", "dom0", "", "ask [default-dvm,disp42,fb-viewer-dvm,fedora-41,notdvm,personal,ssh-vault,standalone,untrusted,vault,work,@dispvm:default-dvm,@dispvm:fb-viewer-dvm]"),
];

#[test]
fn decision_table() {
    let mut failures = Vec::new();
    for (name, text, call, source, target, want) in TABLE {
        let policy = Policy::parse("t.policy", text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = decide(&policy, call, source, target);
        if got != *want {
            failures.push(format!("{name}: got `{got}`, want `{want}`"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(TABLE.len() >= 40);
}

/// (case, line, expected error)
const REFUSED: &[(&str, &str, &str)] = &[
    ("unknown_action", "svc * work vault alow", "t.policy:3: unknown action 'alow' (expected allow, deny or ask)"),
    ("too_few_fields", "svc * work vault", "t.policy:3: wrong number of fields: 4, expected at least 5"),
    ("arg_without_plus", "svc foo work vault allow", "t.policy:3: argument 'foo' does not start with '+'"),
    ("arg_for_any_service", "* +x work vault allow", "t.policy:3: only '*' argument allowed for '*' service"),
    ("bad_service_char", "sv/c * work vault allow", "t.policy:3: invalid service name 'sv/c'"),
    ("plus_in_service", "svc+x * work vault allow", "t.policy:3: invalid service name 'svc+x'"),
    ("bad_arg_char", "svc +a/b work vault allow", "t.policy:3: invalid argument '+a/b'"),
    ("unknown_token", "svc * @anyvmm vault allow", "t.policy:3: invalid source token '@anyvmm'"),
    ("default_as_source", "svc * @default vault allow", "t.policy:3: token '@default' is not allowed as source"),
    ("dispvm_as_source", "svc * @dispvm vault allow", "t.policy:3: token '@dispvm' is not allowed as source"),
    ("bad_qube_name", "svc * 9work vault allow", "t.policy:3: invalid qube name '9work' as source"),
    ("long_qube_name", "svc * work abcdefghijabcdefghijabcdefghijab allow", "t.policy:3: invalid qube name 'abcdefghijabcdefghijabcdefghijab' as target"),
    ("bad_uuid", "svc * uuid:1234 vault allow", "t.policy:3: invalid uuid 'uuid:1234'"),
    ("empty_tag", "svc * @tag: vault allow", "t.policy:3: invalid tag '@tag:'"),
    ("unknown_type", "svc * @type:AppVm vault allow", "t.policy:3: unknown qube type 'AppVm' (expected AppVM, TemplateVM, StandaloneVM, DispVM or AdminVM)"),
    ("dispvm_at_other", "svc * work @dispvm:@type:AppVM allow", "t.policy:3: invalid target token '@dispvm:@type:AppVM'"),
    ("allow_default_no_target", "svc * work @default allow", "t.policy:3: allow action for @default target must specify target="),
    ("unknown_param", "svc * work vault deny target=vault", "t.policy:3: unknown parameter 'target' for action deny"),
    ("default_target_on_allow", "svc * work vault allow default_target=vault", "t.policy:3: unknown parameter 'default_target' for action allow"),
    ("param_without_eq", "svc * work vault allow notify", "t.policy:3: invalid action parameter 'notify' (expected key=value)"),
    ("duplicate_param", "svc * work vault allow user=a user=b", "t.policy:3: parameter 'user' given twice"),
    ("bad_bool", "svc * work vault allow notify=true", "t.policy:3: 'notify' is 'true', but can be only 'yes' or 'no'"),
    ("redirect_to_set", "svc * work @default allow target=@anyvm", "t.policy:3: token '@anyvm' is not allowed as target="),
    ("bad_user", "svc * work vault allow user=-rf", "t.policy:3: invalid user name '-rf'"),
    ("unknown_directive", "!inclde foo", "t.policy:3: invalid directive '!inclde'"),
    ("include_params", "!include a b", "t.policy:3: !include takes 1 parameter(s)"),
    ("compat_params", "!compat-4.0 x", "t.policy:3: !compat-4.0 takes 0 parameter(s)"),
    ("include_without_files", "!include x.policy", "t.policy:3: cannot read 'x.policy': not found"),
    ("inline_comment", "svc * work vault allow # no", "t.policy:3: invalid action parameter '#' (expected key=value)"),
    ("control_chars_escaped", "svc * work vault al\u{1b}low", "t.policy:3: unknown action 'al\\u{1b}low' (expected allow, deny or ask)"),
];

#[test]
fn refused_lines_name_file_and_line() {
    let mut failures = Vec::new();
    for (name, line, want) in REFUSED {
        let text = format!("# header\n\n{line}\nsvc * work vault allow\n");
        match Policy::parse("t.policy", &text) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) if e.to_string() != *want => failures.push(format!("{name}: got `{e}`")),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hostile_long_token_error_stays_short() {
    let line = format!("svc * work vault {}\n", "x".repeat(100_000));
    let e = Policy::parse("t.policy", &line).unwrap_err().to_string();
    assert!(e.len() < 120 && !e.contains('\n'), "{e}");
    assert!(e.starts_with("t.policy:1: unknown action 'xxxx"), "{e}");
}

#[test]
fn empty_policy_denies_everything() {
    let p = Policy::default();
    assert_eq!(
        render(&p.evaluate(&system(), &Request::from_call("svc", "work", "vault"))),
        "deny (no matching rule found)"
    );
}

#[test]
fn comments_blank_lines_and_whitespace() {
    let p = Policy::parse(
        "t.policy",
        "\n# c\n   # indented comment\n\t\nsvc\t*   work\tvault   allow  \n",
    )
    .unwrap();
    assert_eq!(p.rules().len(), 1);
    assert_eq!(p.rules()[0].origin.line, 5);
}

fn tree() -> MemFs {
    MemFs::with(&[
        ("/etc/qubes/policy.d/30-user.policy", "!include include/vault\nsvc * @anyvm @anyvm deny\n"),
        ("/etc/qubes/policy.d/include/vault", "svc +get work vault allow\n"),
        ("/etc/qubes/policy.d/50-dir.policy", "!include-dir include/dir\n"),
        ("/etc/qubes/policy.d/include/dir/b.policy", "dir.B * work vault allow\n"),
        ("/etc/qubes/policy.d/include/dir/a.policy", "dir.A * work vault allow\n"),
        ("/etc/qubes/policy.d/include/dir/ignored.txt", "garbage\n"),
        ("/etc/qubes/policy.d/include/dir/.hidden.policy", "garbage\n"),
        ("/etc/qubes/policy.d/60-old.policy", "!include-service old.Svc * include/old.Svc\n"),
        ("/etc/qubes/policy.d/include/old.Svc", "# old\n$anyvm $dispvm:fb-viewer-dvm allow,user=root\nwork vault ask,default_target=vault\n$include:more\n"),
        ("/etc/qubes/policy.d/include/more", "$anyvm $anyvm deny\n"),
        ("/etc/qubes/policy.d/90-default.policy", "* * @anyvm @anyvm deny\n"),
        ("/run/qubes/policy.d/90-default.policy", "* * @anyvm @anyvm deny notify=no\n"),
        ("/etc/qubes/policy.d/README", "not policy"),
    ])
}

#[test]
fn include_and_include_dir_in_order() {
    let p = Policy::load(&tree(), &[RUNTIME_POLICY_DIR, POLICY_DIR], Limits::DEFAULT).unwrap();
    let origins: Vec<String> = p.rules().iter().map(|r| r.origin.to_string()).collect();
    assert_eq!(
        origins,
        [
            "/etc/qubes/policy.d/include/vault:1",
            "/etc/qubes/policy.d/30-user.policy:2",
            "/etc/qubes/policy.d/include/dir/a.policy:1",
            "/etc/qubes/policy.d/include/dir/b.policy:1",
            "/etc/qubes/policy.d/include/old.Svc:2",
            "/etc/qubes/policy.d/include/old.Svc:3",
            "/etc/qubes/policy.d/include/more:1",
            "/run/qubes/policy.d/90-default.policy:1",
        ]
    );
    let sys = system();
    let d = |c, s, t| render(&p.evaluate(&sys, &Request::from_call(c, s, t)));
    assert_eq!(d("svc+get", "work", "vault"), "allow vault");
    assert_eq!(d("dir.B", "work", "vault"), "allow vault");
    // Runtime 90-default shadows /etc's: its deny is quiet.
    assert_eq!(
        d("x", "work", "vault"),
        "deny quiet (denied by policy /run/qubes/policy.d/90-default.policy:1)"
    );
}

#[test]
fn include_service_old_format() {
    let p = Policy::load(&tree(), &[POLICY_DIR], Limits::DEFAULT).unwrap();
    let sys = system();
    let d = |c, s, t| render(&p.evaluate(&sys, &Request::from_call(c, s, t)));
    assert_eq!(
        d("old.Svc+anything", "personal", "@dispvm:fb-viewer-dvm"),
        "allow @dispvm:fb-viewer-dvm user=root"
    );
    // The choices come from every old.Svc rule for this source, not only the matching one.
    assert_eq!(
        d("old.Svc", "work", "vault"),
        "ask [vault,@dispvm:fb-viewer-dvm] default=vault"
    );
    assert_eq!(
        d("old.Svc", "personal", "vault"),
        "deny (denied by policy /etc/qubes/policy.d/include/more:1)"
    );
    let rule = &p.rules()[4].rule;
    assert_eq!(
        rule.to_string(),
        "old.Svc\t*\t@anyvm\t@dispvm:fb-viewer-dvm\tallow user=root"
    );
}

#[test]
fn compat40_imports_legacy_files() {
    let fs = MemFs::with(&[
        ("/etc/qubes/policy.d/35-compat.policy", "!compat-4.0\n"),
        (
            "/etc/qubes-rpc/policy/qubes.Filecopy",
            "$anyvm $anyvm ask\n",
        ),
        (
            "/etc/qubes-rpc/policy/qubes.Filecopy+work",
            "work vault allow\n",
        ),
        ("/etc/qubes-rpc/policy/qubes.Filecopy.rpmnew", "garbage\n"),
        ("/etc/qubes-rpc/policy/.swp", "garbage\n"),
    ]);
    let p = Policy::load(&fs, &[POLICY_DIR], Limits::DEFAULT).unwrap();
    let lines: Vec<String> = p.rules().iter().map(|r| r.rule.to_string()).collect();
    assert_eq!(
        lines,
        [
            "qubes.Filecopy\t+work\twork\tvault\tallow",
            "qubes.Filecopy\t+work\t@anyvm\t@anyvm\tdeny",
            "qubes.Filecopy\t+work\t@anyvm\t@adminvm\tdeny",
            "qubes.Filecopy\t*\t@anyvm\t@anyvm\task",
        ]
    );
}

#[test]
fn include_cycle_refused() {
    let fs = MemFs::with(&[
        ("/p/a.policy", "!include b\n"),
        ("/p/b", "\n!include a.policy\n"),
    ]);
    let e = Policy::load(&fs, &["/p"], Limits::DEFAULT).unwrap_err();
    assert_eq!(e.to_string(), "/p/b:2: include cycle through '/p/a.policy'");
}

#[test]
fn include_depth_bounded() {
    let files: Vec<(String, String)> = (0..40)
        .map(|i| (format!("/p/f{i}"), format!("!include f{}\n", i + 1)))
        .collect();
    let mut fs = MemFs(files.into_iter().collect());
    fs.0.insert("/p/a.policy".into(), "!include f0\n".into());
    let e = Policy::load(&fs, &["/p"], Limits::DEFAULT).unwrap_err();
    assert!(matches!(e.kind, LoadError::TooDeep { limit: 16 }), "{e}");
}

#[test]
fn rule_count_bounded() {
    let text = "svc * work vault allow\n".repeat(11);
    let limits = Limits {
        max_rules: 10,
        ..Limits::DEFAULT
    };
    let e = Policy::parse_with("t.policy", &text, &NoFiles, limits).unwrap_err();
    assert_eq!(e.to_string(), "t.policy:11: more than 10 rules");
}

#[test]
fn diamond_includes_bounded_by_file_count() {
    // Each level includes the next twice: 2^20 reads without a bound.
    let mut fs = MemFs::default();
    for i in 0..20 {
        fs.0.insert(
            format!("/p/f{i}"),
            format!("!include f{0}\n!include f{0}\n", i + 1),
        );
    }
    fs.0.insert("/p/f20".into(), String::new());
    fs.0.insert("/p/a.policy".into(), "!include f0\n".into());
    let limits = Limits {
        max_include_depth: 64,
        ..Limits::DEFAULT
    };
    let e = Policy::load(&fs, &["/p"], limits).unwrap_err();
    assert!(matches!(e.kind, LoadError::TooManyFiles { .. }), "{e}");
}

#[test]
fn invalid_file_name_denies_all() {
    let names = ["30-user.policy".to_string(), "Bad.policy".to_string()];
    let e = select_policy_files(&[("/etc/qubes/policy.d", &names)]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/qubes/policy.d/Bad.policy: invalid policy file name 'Bad.policy' (allowed: 0-9 a-z _ . -); denying all calls"
    );
}

#[test]
fn file_selection_sorts_and_shadows() {
    let run = [
        "50-b.policy".to_string(),
        ".x.policy".to_string(),
        "README".to_string(),
    ];
    let etc = [
        "50-b.policy".to_string(),
        "10-a.policy".to_string(),
        "50-B.txt".to_string(),
        "9.policy".to_string(),
    ];
    let files =
        select_policy_files(&[("/run/qubes/policy.d", &run), ("/etc/qubes/policy.d", &etc)])
            .unwrap();
    let paths: Vec<String> = files.iter().map(PolicyFile::path).collect();
    assert_eq!(
        paths,
        [
            "/etc/qubes/policy.d/10-a.policy",
            "/run/qubes/policy.d/50-b.policy",
            "/etc/qubes/policy.d/9.policy"
        ]
    );
}

#[test]
fn paths_resolve() {
    assert_eq!(
        resolve_path("/etc/qubes/policy.d", "include/x"),
        "/etc/qubes/policy.d/include/x"
    );
    assert_eq!(
        resolve_path("/etc/qubes/policy.d", "../x/./y"),
        "/etc/qubes/x/y"
    );
    assert_eq!(resolve_path("/etc/qubes/policy.d", "/abs//p"), "/abs/p");
    assert_eq!(resolve_path("/", "../../x"), "/x");
}

#[test]
fn shipped_example_split_ssh() {
    let p = Policy::parse(
        "t.policy",
        "qubes.SshAgent  *  @anyvm  ssh-vault  ask default_target=ssh-vault\n",
    )
    .unwrap();
    assert_eq!(
        decide(&p, "qubes.SshAgent", "work", "ssh-vault"),
        "ask [ssh-vault] default=ssh-vault"
    );
    assert_eq!(
        decide(&p, "qubes.SshAgent", "work", "vault"),
        "deny (no matching rule found)"
    );
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,12}"
}

fn arb_ref() -> impl Strategy<Value = QubeRef> {
    prop_oneof![
        arb_name().prop_map(QubeRef::Name),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".prop_map(QubeRef::Uuid),
    ]
}

fn arb_token() -> impl Strategy<Value = Token> {
    prop_oneof![
        arb_ref().prop_map(Token::Qube),
        Just(Token::AdminVm),
        Just(Token::AnyVm),
        Just(Token::Wildcard),
        Just(Token::Default),
        Just(Token::DispVm),
        "[a-z_-]{1,8}".prop_map(Token::Tag),
        "[a-z_-]{1,8}".prop_map(Token::DispVmTag),
        (0..5usize).prop_map(|i| Token::Type(QubeType::ALL[i])),
        arb_ref().prop_map(Token::DispVmOf),
    ]
}

fn arb_redirect() -> impl Strategy<Value = Option<Token>> {
    proptest::option::of(arb_token().prop_filter("redirect", |t| Column::Redirect.accepts(t)))
}

fn arb_action() -> impl Strategy<Value = Action> {
    let b = || proptest::option::of(any::<bool>());
    let user = || proptest::option::of("[a-z][a-z0-9]{0,6}");
    prop_oneof![
        (arb_redirect(), user(), b(), b()).prop_map(|(target, user, notify, autostart)| {
            Action::Allow {
                target,
                user,
                notify,
                autostart,
            }
        }),
        b().prop_map(|notify| Action::Deny { notify }),
        (arb_redirect(), arb_redirect(), user(), b(), b()).prop_map(
            |(target, default_target, user, notify, autostart)| Action::Ask {
                target,
                default_target,
                user,
                notify,
                autostart
            }
        ),
    ]
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    let svc = prop_oneof![Just(None), "[A-Za-z0-9._-]{1,16}".prop_map(Some)];
    let arg = prop_oneof![Just(None), "[A-Za-z0-9._+-]{0,10}".prop_map(Some)];
    (svc, arg, arb_token(), arb_token(), arb_action()).prop_map(|(s, a, source, target, action)| {
        let service = s.map_or(ServicePattern::Any, ServicePattern::Exact);
        let argument = match (&service, a) {
            (ServicePattern::Exact(_), Some(a)) => ArgPattern::Exact(a),
            _ => ArgPattern::Any,
        };
        Rule {
            service,
            argument,
            source,
            target,
            action,
        }
    })
}

proptest! {
    #[test]
    fn parse_never_panics(text in "(?s).{0,400}") {
        let _ = Policy::parse("p.policy", &text);
    }

    #[test]
    fn parse_never_panics_on_policy_like_lines(
        lines in proptest::collection::vec(
            "(svc|\\*|!include|!compat-4.0|#)( +(\\*|\\+|\\+x|@anyvm|@dispvm|@dispvm:@tag:t|@default|@tag:|uuid:|work|allow|deny|ask|target=@dispvm|notify=yes|x=|=))*",
            0..8)
    ) {
        let text = lines.join("\n");
        if let Ok(p) = Policy::parse("p.policy", &text) {
            let _ = p.evaluate(&system(), &Request::from_call("svc+x", "work", "@dispvm"));
        }
    }

    #[test]
    fn render_then_parse_is_identity(rule in arb_rule()) {
        // Rules the parser refuses (e.g. `@default` source) are not renderings of parsed rules.
        let text = rule.to_string();
        if let Ok(Line::Rule(again)) = parse_line(&text) {
            prop_assert_eq!(again, rule);
        }
    }

    #[test]
    fn parsed_rules_round_trip(rule in arb_rule()) {
        if let Ok(parsed) = parse_rule(&rule.to_string()) {
            let again = parse_rule(&parsed.to_string());
            prop_assert_eq!(again, Ok(parsed));
        }
    }

    #[test]
    fn evaluation_never_panics_and_asks_offer_valid_choices(
        rules in proptest::collection::vec(arb_rule(), 0..6),
        source in prop_oneof![Just("work"), Just("dom0"), Just("untrusted"), Just("disp42")],
        target in prop_oneof![Just(""), Just("vault"), Just("dom0"), Just("@dispvm"), Just("@dispvm:default-dvm"), Just("ghost")],
    ) {
        let text: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        if let Ok(p) = Policy::parse("p.policy", &text.join("\n")) {
            let d = p.evaluate(&system(), &Request { service: "svc", argument: "", source, target });
            if let Decision::Ask { targets, default_target, .. } = d {
                prop_assert!(!targets.is_empty());
                prop_assert!(default_target.is_none_or(|t| targets.contains(&t)));
                prop_assert!(!targets.contains(&CallTarget::Qube(source.into())));
            }
        }
    }
}
