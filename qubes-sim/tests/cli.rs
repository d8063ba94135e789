//! The qvm-* stand-ins as separate processes sharing one state directory.

mod common;

use common::State;

#[test]
fn create_then_list_in_a_second_invocation() {
    let s = State::new("cli");
    s.ok(
        "qvm-create",
        &["--class", "TemplateVM", "--label", "black", "fedora"],
    );
    s.ok("qvm-create", &["-l", "red", "-t", "fedora", "work"]);
    s.ok("qvm-create", &["--label=black", "vault"]);
    let ls = s.ok("qvm-ls", &[]);
    let lines: Vec<&str> = ls.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{ls}");
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from\n{ls}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("dom0")[..3], ["dom0", "Running", "AdminVM"]);
    assert_eq!(
        row("work"),
        ["work", "Halted", "AppVM", "red", "fedora", "-"]
    );
    assert_eq!(row("fedora")[2], "TemplateVM");
    assert_eq!(row("vault")[3], "black");
}

#[test]
fn duplicate_name_is_a_one_line_error() {
    let s = State::new("dup");
    s.ok("qvm-create", &["-l", "red", "x"]);
    let (code, out, err) = s.run("qvm-create", &["-l", "red", "x"]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(err, "qvm-create: error: VM name 'x' already exists\n");
    let (code, _, err) = s.run("qvm-create", &["x2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("qvm-create: error: --label"), "{err}");
    let (code, _, err) = s.run("qvm-create", &["-l", "red", "9lives"]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
}

#[test]
fn prefs_get_set_reset_and_validate() {
    let s = State::new("prefs");
    s.ok("qvm-create", &["-l", "green", "work"]);
    assert_eq!(s.ok("qvm-prefs", &["work", "memory"]), "400\n");
    s.ok("qvm-prefs", &["work", "memory", "1024"]);
    assert_eq!(s.ok("qvm-prefs", &["work", "memory"]), "1024\n");
    s.ok("qvm-prefs", &["work", "kernelopts", "console=hvc0 quiet"]);
    assert_eq!(
        s.ok("qvm-prefs", &["work", "kernelopts"]),
        "console=hvc0 quiet\n"
    );
    s.ok("qvm-prefs", &["-D", "work", "memory"]);
    assert_eq!(s.ok("qvm-prefs", &["work", "memory"]), "400\n");
    let (code, _, err) = s.run("qvm-prefs", &["work", "memory", "lots"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "qvm-prefs: error: invalid value for property \"memory\": \"lots\"\n"
    );
    let (code, _, err) = s.run("qvm-prefs", &["work", "netvm", "ghost"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = s.run("qvm-prefs", &["nosuch", "memory"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "qvm-prefs: error: no such domain: \"nosuch\"\n")
    );
    let all = s.ok("qvm-prefs", &["work"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with("virt_mode") && l.ends_with("pvh")),
        "{all}"
    );
    s.ok(
        "qvm-create",
        &["-l", "red", "-P", "provides_network=True", "sys-net"],
    );
    s.ok("qvm-prefs", &["work", "netvm", "sys-net"]);
    assert_eq!(s.ok("qvm-prefs", &["work", "netvm"]), "sys-net\n");
}

#[test]
fn failed_property_at_create_leaves_no_qube() {
    let s = State::new("createprop");
    let (code, _, _) = s.run("qvm-create", &["-l", "red", "-P", "memory=x", "bad"]);
    assert_eq!(code, 1);
    let (code, _, _) = s.run("qvm-prefs", &["bad", "memory"]);
    assert_eq!(code, 1);
}

#[test]
fn features_set_get_unset() {
    let s = State::new("feat");
    s.ok("qvm-create", &["-l", "blue", "work"]);
    s.ok("qvm-features", &["work", "gui", "1"]);
    s.ok("qvm-features", &["work", "service.crond", ""]);
    assert_eq!(s.ok("qvm-features", &["work", "gui"]), "1\n");
    let all = s.ok("qvm-features", &["work"]);
    assert_eq!(all.lines().count(), 2, "{all}");
    s.ok("qvm-features", &["--unset", "work", "gui"]);
    let (code, out, _) = s.run("qvm-features", &["work", "gui"]);
    assert_eq!((code, out.as_str()), (1, ""));
    let (code, _, _) = s.run("qvm-features", &["work", "bad name", "1"]);
    assert_eq!(code, 1);
}

#[test]
fn volumes_list_and_grow_only() {
    let s = State::new("vol");
    s.ok("qvm-create", &["-l", "blue", "work"]);
    let list = s.ok("qvm-volume", &["list", "work"]);
    assert!(
        list.contains("vm-pool:work/private") && list.contains("2GiB"),
        "{list}"
    );
    s.ok("qvm-volume", &["resize", "work:private", "5G"]);
    let info = s.ok("qvm-volume", &["info", "work:private"]);
    assert!(info.contains(&format!("{}", 5u64 << 30)), "{info}");
    let (code, _, err) = s.run("qvm-volume", &["resize", "work:private", "1G"]);
    assert_eq!(code, 1);
    assert!(err.contains("shrinking"), "{err}");
    let (code, _, _) = s.run("qvm-volume", &["resize", "work:kernel", "1G"]);
    assert_eq!(code, 1);
    let (code, _, _) = s.run("qvm-volume", &["resize", "work:nosuch", "1G"]);
    assert_eq!(code, 1);
}

#[test]
fn remove_refuses_qubes_in_use_and_frees_the_name() {
    let s = State::new("rm");
    s.ok("qvm-create", &["-C", "TemplateVM", "-l", "black", "tpl"]);
    s.ok("qvm-create", &["-l", "red", "-t", "tpl", "app"]);
    let (code, _, err) = s.run("qvm-remove", &["-f", "tpl"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "qvm-remove: error: qube 'tpl' is in use by: app\n")
    );
    let (code, _, _) = s.run("qvm-remove", &["app"]);
    assert_eq!(code, 1, "no confirmation on stdin: nothing removed");
    s.ok("qvm-prefs", &["app", "memory"]);
    s.ok("qvm-remove", &["--force", "app", "tpl"]);
    let (code, _, _) = s.run("qvm-prefs", &["app", "memory"]);
    assert_eq!(code, 1);
    let (code, _, _) = s.run("qvm-remove", &["-f", "dom0"]);
    assert_eq!(code, 1);
    s.ok("qvm-create", &["-l", "red", "app"]);
    assert_eq!(
        s.ok("qvm-prefs", &["app", "qid"]),
        "1\n",
        "the lowest free id again"
    );
}

#[test]
fn registry_is_json_with_domids() {
    let s = State::new("json");
    s.ok("qvm-create", &["-l", "red", "a"]);
    s.ok("qvm-create", &["-l", "red", "b"]);
    let text = std::fs::read_to_string(s.path().join("qubes.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["domains"]["dom0"]["domid"], 0);
    assert_eq!(v["domains"]["a"]["domid"], 1);
    assert_eq!(v["domains"]["b"]["domid"], 2);
    assert_eq!(v["domains"]["b"]["class"], "AppVM");
}
