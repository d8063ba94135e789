//! Flow 1: in dom0, install the RPM and create the qubes with one command.

use flows::{built_rpm, Dom0};

/// The setup command's plan for the firewall qube, exactly as `--dry-run` prints it.
const FIREWALL_PLAN: &str = "\
qvm-create --class StandaloneVM --label green fw-unikernel
qvm-features fw-unikernel unikernel-bundle 1
qvm-prefs fw-unikernel kernel unikernel-firewall
qvm-prefs fw-unikernel kernelopts ''
qvm-prefs fw-unikernel virt_mode pvh
qvm-prefs fw-unikernel memory 32
qvm-prefs fw-unikernel maxmem 32
qvm-prefs fw-unikernel vcpus 1
qvm-prefs fw-unikernel netvm sys-net
qvm-prefs fw-unikernel provides_network True
qvm-features fw-unikernel no-default-kernelopts 1
qvm-features fw-unikernel qubes-firewall 1
";

/// (qube, kernel dir, class, memory, netvm, extra prefs, extra features)
type Want = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
);

const WANT: &[Want] = &[
    (
        "fw-unikernel",
        "unikernel-firewall",
        "StandaloneVM",
        "32",
        "sys-net",
        &[("provides_network", "true")],
        &[("qubes-firewall", "1")],
    ),
    (
        "sshagent-unikernel",
        "unikernel-ssh-agent",
        "StandaloneVM",
        "192",
        "",
        &[],
        &[],
    ),
    (
        "passman-unikernel",
        "unikernel-passman",
        "StandaloneVM",
        "192",
        "",
        &[],
        &[],
    ),
    (
        "viewer-unikernel-dvm",
        "unikernel-fb-viewer",
        "AppVM",
        "256",
        "",
        &[("template_for_dispvms", "true"), ("template", "debian-12")],
        &[],
    ),
];

#[test]
fn flow1_rpm_install_then_one_setup_command_creates_the_four_qubes() {
    let dom0 = Dom0::new("flow1");
    let root = dom0.dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let rpm = built_rpm("qubes-unikernel-bundle");
    let root_s = root.to_str().unwrap();
    dom0.ok("rpm", &["--root", root_s, "--initdb"]);
    dom0.ok(
        "rpm",
        &[
            "--root",
            root_s,
            "-i",
            "--nodeps",
            "--noscripts",
            rpm.to_str().unwrap(),
        ],
    );
    let setup = root.join("usr/bin/qubes-unikernel-setup");
    assert!(setup.is_file(), "the RPM did not install the setup command");
    let installed_kernels: Vec<String> = std::fs::read_dir(root.join("var/lib/qubes/vm-kernels"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for k in &installed_kernels {
        assert!(
            WANT.iter().any(|w| w.1 == k),
            "the RPM installs kernel {k}, which no qube uses"
        );
        assert!(root
            .join("var/lib/qubes/vm-kernels")
            .join(k)
            .join("vmlinuz")
            .is_file());
    }

    // A dom0 as a fresh Qubes has it: a template and sys-net.
    dom0.ok(
        "qvm-create",
        &["--class", "TemplateVM", "--label", "black", "debian-12"],
    );
    dom0.ok(
        "qvm-create",
        &["--class", "StandaloneVM", "--label", "red", "sys-net"],
    );
    dom0.ok("qvm-prefs", &["sys-net", "provides_network", "True"]);

    // --dry-run prints the exact commands and changes nothing.
    let dry = dom0.ok(&setup, &["--dry-run", "--template", "debian-12"]);
    assert!(
        dry.starts_with(FIREWALL_PLAN),
        "dry run plan differs:\n{dry}"
    );
    assert!(dry.contains(
        "qvm-create --class AppVM --label red --template debian-12 viewer-unikernel-dvm\n"
    ));
    assert!(dry.contains("qvm-prefs viewer-unikernel-dvm template_for_dispvms True\n"));
    assert!(
        dry.ends_with("qubes-unikernel-setup: would run 43 command(s) for 4 qube(s)\n"),
        "{dry}"
    );
    let (code, _, _) = dom0.run("qvm-prefs", &["fw-unikernel", "name"]);
    assert_ne!(code, 0, "--dry-run created a qube");

    // The one command.
    let out = dom0.ok(&setup, &["--template", "debian-12"]);
    assert!(out.ends_with("ran 43 command(s) for 4 qube(s)\n"), "{out}");
    for (name, kernel, class, mem, netvm, prefs, feats) in WANT {
        let pref = |p: &str| dom0.ok("qvm-prefs", &[name, p]).trim().to_string();
        assert_eq!(pref("kernel"), *kernel, "{name} kernel");
        assert_eq!(pref("class"), *class, "{name} class");
        assert_eq!(pref("virt_mode"), "pvh", "{name} virt_mode");
        assert_eq!(pref("memory"), *mem, "{name} memory");
        assert_eq!(pref("maxmem"), *mem, "{name} maxmem");
        assert_eq!(pref("vcpus"), "1", "{name} vcpus");
        assert_eq!(pref("netvm"), *netvm, "{name} netvm");
        for (p, v) in prefs.iter() {
            assert_eq!(pref(p).to_lowercase(), *v, "{name} {p}");
        }
        let feat = |f: &str| dom0.ok("qvm-features", &[name, f]).trim().to_string();
        assert_eq!(feat("no-default-kernelopts"), "1", "{name}");
        assert_eq!(feat("unikernel-bundle"), "1", "{name}");
        for (f, v) in feats.iter() {
            assert_eq!(feat(f), *v, "{name} feature {f}");
        }
    }

    // Idempotent: a second run runs nothing.
    let again = dom0.ok(&setup, &["--template", "debian-12"]);
    assert!(
        again.ends_with("ran 0 command(s) for 4 qube(s)\n"),
        "{again}"
    );

    // A same-named qube it did not create is refused with one line, then adopted on request.
    dom0.ok("qvm-remove", &["-f", "passman-unikernel"]);
    dom0.ok(
        "qvm-create",
        &[
            "--class",
            "StandaloneVM",
            "--label",
            "red",
            "passman-unikernel",
        ],
    );
    let (code, _, err) = dom0.run(&setup, &["--template", "debian-12"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("passman-unikernel exists and was not created by"),
        "{err}"
    );
    assert!(err.contains("--adopt"), "{err}");
    let adopted = dom0.ok(&setup, &["--template", "debian-12", "--adopt"]);
    assert!(adopted.contains("qvm-prefs passman-unikernel kernel unikernel-passman\n"));
    assert_eq!(
        dom0.ok("qvm-prefs", &["passman-unikernel", "memory"])
            .trim(),
        "192"
    );

    flows::report(&format!(
        "flow 1: the dom0 RPM installed into a scratch root ({} kernel(s)); one qubes-unikernel-setup created the four qubes with their properties, a second run changed nothing, a foreign same-named qube was refused",
        installed_kernels.len()
    ));
}
