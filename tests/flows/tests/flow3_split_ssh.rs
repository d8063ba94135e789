//! Flow 3: split-SSH. `ssh` in `work` logs into an `sshd` in sys-net with an ed25519 key that
//! only the ssh-agent vault unikernel holds (added by dom0 with the installed
//! `qvm-ssh-agent-admin`), through the installed forwarder and profile snippet.

use std::path::Path;
use std::process::Stdio;

use flows::{have, is_root, unikernel_bin, wait_for, Installed, DEADLINE};

const VAULT: &str = "sshagent-unikernel";

/// What systemd does for the installed qubes-ssh-agent.socket (Accept=yes): one
/// instance of the service per connection, the connection as its stdin and stdout.
const ACCEPT_LOOP: &str = r#"
import os, signal, socket, subprocess, sys
path, cmd = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(path)
os.chmod(path, 0o600)
l.listen(32)
while True:
    c, _ = l.accept()
    subprocess.Popen([cmd], stdin=c.fileno(), stdout=c.fileno())
    c.close()
"#;

/// The value of `key=` in an installed unit file.
fn unit_value(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} is not installed: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {}", path.display()))
        .trim()
        .to_string()
}

/// Files under `dir` (recursively) whose contents include `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                if let Ok(data) = std::fs::read(&p) {
                    if data.windows(needle.len()).any(|w| w == needle) {
                        found.push(p.display().to_string());
                    }
                }
            }
        }
    }
    found
}

#[test]
fn flow3_ssh_from_work_with_a_key_only_the_vault_holds() {
    for tool in ["ssh", "ssh-add", "ssh-keygen", "python3"] {
        if !have(tool) {
            assert!(
                std::env::var_os("CI").is_none(),
                "flow 3 needs {tool}; CI must provide it"
            );
            flows::report(&format!("flow 3: skipped: {tool} is not installed"));
            return;
        }
    }
    let Some(sshd) = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "flow 3 needs sshd (openssh-server); CI must provide it"
        );
        flows::report("flow 3: skipped: sshd (openssh-server) is not installed");
        return;
    };
    let vault_bin = unikernel_bin("ssh-agent-vm");
    let mut q = Installed::new("flow3");
    // Network namespaces need root: then sshd runs on sys-net's own address and work reaches it
    // over its netvm link; otherwise all qubes share the host's network and sshd uses loopback.
    // FLOWS_NO_NETNS=1 tries the loopback variant as root.
    let netns = is_root() && have("ip") && std::env::var_os("FLOWS_NO_NETNS").is_none();

    // dom0: the vault qube from the installed setup (a light KDF: this is a debug build).
    q.setup(&[("ssh-agent", &vault_bin, "kdf=argon2id:1024:1:1")]);
    if netns {
        q.ok("qvm-prefs", &["work", "netvm", "sys-net"]);
    }
    q.start(netns);
    for vm in ["sys-net", "work", VAULT] {
        q.ok("qvm-start", &[vm]);
    }
    wait_for(
        "the vault is ready",
        DEADLINE,
        || q.console(VAULT).contains("ssh-agent vault ready"),
        || q.diag(),
    );

    // dom0: let work use keyring `work`: uncomment the example rule of the installed user
    // policy (an `ask` rule; dom0's prompt is answered "allow").
    let user_policy = q.root.join("etc/qubes/policy.d/30-unikernel-user.policy");
    let text = std::fs::read_to_string(&user_policy).unwrap();
    let rule = text
        .lines()
        .find(|l| l.starts_with("# qubes.SshAgent") && l.contains("+work"))
        .expect("the installed user policy has the split-SSH example")
        .to_string();
    std::fs::write(
        &user_policy,
        text.replace(&rule, rule.trim_start_matches("# ")),
    )
    .unwrap();
    std::fs::write(q.state().join("ask"), "allow\n").unwrap();

    // dom0: a fresh ed25519 key, stored in the vault with the installed qvm-ssh-agent-admin
    // (the first `ssh-add -X` formats the vault's key store with that passphrase), then the
    // private key file is deleted: from here on only the vault has it.
    let keys = q.dom0.dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keys.join("id_ed25519");
    let askpass = keys.join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\necho vault-passphrase\n").unwrap();
    q.ok("chmod", &["755", askpass.to_str().unwrap()]);
    q.ok(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "flow3@work",
            "-f",
            key.to_str().unwrap(),
        ],
    );
    let secret = std::fs::read_to_string(&key).unwrap();
    // A line of the private key's base64 body: searched for in work later.
    let secret_line = secret
        .lines()
        .nth(2)
        .expect("an OpenSSH private key has a body")
        .to_string();
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let fingerprint = q
        .ok("ssh-keygen", &["-l", "-f", key.to_str().unwrap()])
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l prints a fingerprint")
        .to_string();
    for args in [
        &["work", "run", "ssh-add", "-X"][..],
        &["work", "run", "ssh-add", key.to_str().unwrap()],
    ] {
        let o = q
            .cmd("qvm-ssh-agent-admin")
            .args(args)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", "none")
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "qvm-ssh-agent-admin {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            q.diag()
        );
    }
    std::fs::remove_file(&key).unwrap();

    // sys-net: an sshd whose only authorized key is that public key.
    let (addr, port, where_) = if netns {
        let ip = q
            .in_vm_ok("sys-net", "qubesdb-read /qubes-netvm-gateway")
            .trim()
            .to_string();
        (
            ip.clone(),
            22u16,
            format!("in sys-net's network namespace at {ip}:22"),
        )
    } else {
        let port = 20000 + (std::process::id() % 20000) as u16;
        (
            "127.0.0.1".to_string(),
            port,
            format!(
                "on loopback 127.0.0.1:{port} (no network namespaces: not root, or FLOWS_NO_NETNS)"
            ),
        )
    };
    let mut put = q
        .cmd("qvm-run")
        .args([
            "-p",
            "sys-net",
            "cat > \"$QUBES_SIM_VM_DIR/authorized_keys\"",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), pubkey.as_bytes()).unwrap();
    assert!(put.wait().unwrap().success());
    q.in_vm_ok(
        "sys-net",
        "ssh-keygen -q -t ed25519 -N '' -f \"$QUBES_SIM_VM_DIR/ssh_host_ed25519_key\"",
    );
    let pid = q.pid_file("sys-net", "sshd.pid");
    let sshd_log = q.vm_dir("sys-net").join("sshd.log");
    q.spawn_in(
        "sys-net",
        &format!(
            "D=$QUBES_SIM_VM_DIR; mkdir -p /run/sshd; echo $$ > {pid}; exec {sshd} -D -e -f /dev/null \
             -p {port} -o ListenAddress={addr} -h $D/ssh_host_ed25519_key \
             -o AuthorizedKeysFile=$D/authorized_keys -o StrictModes=no -o UsePAM=no \
             -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no 2> {log}",
            pid = pid.display(),
            log = sshd_log.display()
        ),
    );
    wait_for(
        "sshd in sys-net listens",
        DEADLINE,
        || std::fs::read_to_string(&sshd_log).is_ok_and(|l| l.contains("Server listening on")),
        || {
            format!(
                "sshd log:\n{}\n{}",
                std::fs::read_to_string(&sshd_log).unwrap_or_default(),
                q.diag()
            )
        },
    );

    // work: the installed socket unit's job (ListenStream, one ExecStart per connection),
    // with the installed forwarder from the template.
    let t = &q.template_root;
    let listen = unit_value(
        &t.join("usr/lib/systemd/user/qubes-ssh-agent.socket"),
        "ListenStream",
    );
    let exec = unit_value(
        &t.join("usr/lib/systemd/user/qubes-ssh-agent@.service"),
        "ExecStart",
    );
    assert_eq!(exec, "/usr/lib/qubes/qubes-ssh-agent-connect");
    let listen = listen.replace("%t", "$XDG_RUNTIME_DIR");
    // The qube's session: its runtime dir and home in its own directory.
    let session =
        "export XDG_RUNTIME_DIR=\"$QUBES_SIM_VM_DIR/run-user\" HOME=\"$QUBES_SIM_VM_DIR\"";
    std::fs::write(q.vm_dir("work").join("accept.py"), ACCEPT_LOOP).unwrap();
    q.spawn_in(
        "work",
        &format!(
            "{session}; exec python3 \"$QUBES_SIM_VM_DIR/accept.py\" \"{listen}\" \"$QUBES_SIM_TEMPLATE_DIRS{exec}\""
        ),
    );
    let sock = q.vm_dir("work").join("run-user/qubes-ssh-agent/agent.sock");
    wait_for(
        "the agent socket in work",
        DEADLINE,
        || sock.exists(),
        || q.diag(),
    );

    // work: a login shell's profile (the installed snippet) sets SSH_AUTH_SOCK; ssh-add lists
    // the vault's key; ssh logs into sys-net and runs a command there.
    let profile =
        format!("{session}; . \"$QUBES_SIM_TEMPLATE_DIRS/etc/profile.d/qubes-ssh-agent.sh\"");
    let listed = q.in_vm_ok("work", &format!("{profile}; ssh-add -l"));
    assert!(
        listed.contains(&fingerprint) && listed.contains("flow3@work"),
        "work's ssh-add -l: {listed}"
    );
    let ssh = format!(
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p {port} {user}@{addr}",
        user = String::from_utf8_lossy(&std::process::Command::new("id").arg("-un").output().unwrap().stdout).trim()
    );
    let (code, out, err) = q.in_vm(
        "work",
        &format!("{profile}; {ssh} 'echo \"ran as $(id -un): flow3-$((6 * 7))\"'"),
    );
    assert!(
        code == 0 && out.contains("flow3-42"),
        "ssh from work failed ({code}): {out}{err}\nsshd log:\n{}\n{}",
        std::fs::read_to_string(&sshd_log).unwrap_or_default(),
        q.diag()
    );
    let log = std::fs::read_to_string(&sshd_log).unwrap_or_default();
    let accepted = log
        .lines()
        .find(|l| l.contains("Accepted publickey") && l.contains(&fingerprint))
        .unwrap_or_else(|| panic!("sshd did not accept the vault's key:\n{log}"))
        .to_string();
    let from = accepted
        .split(" from ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?")
        .to_string();

    // The key is nowhere in work (nor in its template), and without the agent ssh is refused.
    for dir in [q.vm_dir("work"), q.template_root.clone()] {
        for needle in ["PRIVATE KEY", secret_line.as_str()] {
            let hits = files_containing(&dir, needle.as_bytes());
            assert!(hits.is_empty(), "{needle:?} found in {hits:?}");
        }
    }
    let (code, out, _) = q.in_vm(
        "work",
        &format!("{session}; env -u SSH_AUTH_SOCK {ssh} 'echo \"ran: flow3-$((6 * 7))\"'"),
    );
    assert!(
        code != 0 && !out.contains("flow3-42"),
        "ssh without the vault's agent logged in: {out}"
    );

    flows::report(&format!(
        "flow 3: ssh in work logged into sshd {where_} (sshd saw {from}) and ran a command there with ed25519 key {fingerprint}, held only by the hosted ssh-agent vault unikernel (added by dom0's installed qvm-ssh-agent-admin, dom0's copy deleted), reached through the installed socket unit's forwarder and profile snippet under the installed policy's split-SSH rule; no private key is in work and ssh without the agent is refused"
    ));
}
