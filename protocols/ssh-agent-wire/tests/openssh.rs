//! Interop with real OpenSSH clients: `ssh-add` adds ssh-keygen's keys (ed25519, ecdsa, rsa, a
//! certificate) through a Unix socket served by `Session`; `ssh-keygen -Y sign` signs through the
//! agent and `ssh-keygen -Y verify` checks it. Skipped (with the reason printed) if absent.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use platform_api::Instant;
use ssh_agent_wire::agent::{Agent, Config, Event, Keyring, MemoryKeyring, Session};

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-?").output().is_ok()
}

fn now() -> Instant {
    Instant(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    )
}

struct Served {
    dir: PathBuf,
    sock: PathBuf,
    agent: Arc<Mutex<Agent<MemoryKeyring>>>,
    confirms: Arc<Mutex<u32>>,
}

/// Serves one connection at a time, every connection an admin session; confirmations are allowed.
fn serve(name: &str, config: Config) -> Served {
    let dir = std::env::temp_dir().join(format!("ssh-agent-wire-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let agent = Arc::new(Mutex::new(Agent::new(MemoryKeyring::new(16), config)));
    let confirms = Arc::new(Mutex::new(0));
    let (a, c) = (agent.clone(), confirms.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut sess = Session::new(true);
            let mut buf = vec![0u8; 65536];
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let n = match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                let mut agent = a.lock().unwrap();
                loop {
                    let took = sess.handle_input(now(), &mut agent, &pending);
                    pending.drain(..took);
                    while let Some(Event::ConfirmRequest(req)) = sess.poll_event() {
                        *c.lock().unwrap() += 1;
                        sess.confirm(now(), &mut agent, req.id, true);
                    }
                    let mut out = vec![0u8; 4096];
                    while let Some(k) = sess.poll_transmit(&mut out) {
                        if conn.write_all(&out[..k]).is_err() {
                            break;
                        }
                    }
                    if took == 0 || pending.is_empty() {
                        break;
                    }
                }
            }
        }
    });
    Served {
        dir,
        sock,
        agent,
        confirms,
    }
}

fn run(sock: &Path, cmd: &mut Command) -> Output {
    let out = cmd
        .env("SSH_AUTH_SOCK", sock)
        .env_remove("SSH_AGENT_PID")
        .output()
        .unwrap();
    out
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(args)
        .args(["-q", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    ok(&out, "ssh-keygen");
    path
}

/// `ssh-keygen -Y sign` through the agent (only the public key on disk), then `-Y verify`.
fn sign_and_verify(s: &Served, key: &Path, principal: &str) {
    let msg = s.dir.join("msg");
    std::fs::write(&msg, b"signed through ssh-agent-wire\n").unwrap();
    let pubkey = key.with_extension("pub");
    let only_pub = s.dir.join("only.pub");
    std::fs::copy(&pubkey, &only_pub).unwrap();
    let _ = std::fs::remove_file(s.dir.join("msg.sig"));
    let out = run(
        &s.sock,
        Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(&only_pub)
            .arg(&msg),
    );
    ok(&out, "ssh-keygen -Y sign via agent");
    let allowed = s.dir.join("allowed_signers");
    let pubtext = std::fs::read_to_string(&pubkey).unwrap();
    std::fs::write(&allowed, format!("{principal} {pubtext}")).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", "file", "-I", principal, "-f"])
        .arg(&allowed)
        .arg("-s")
        .arg(s.dir.join("msg.sig"))
        .stdin(std::fs::File::open(&msg).unwrap())
        .output()
        .unwrap();
    ok(&out, "ssh-keygen -Y verify");
}

/// RSA: flags 0 (`ssh-rsa`, SHA-1) refused; flag 2 gives rsa-sha2-256, flag 4 rsa-sha2-512.
fn rsa_flags(s: &Served) {
    use ssh_agent_wire::wire::{frame::frame, Response};
    let mut agent = s.agent.lock().unwrap();
    let blob = (0..agent.keyring().len())
        .filter_map(|i| agent.keyring().get(i))
        .find(|id| id.key.is_rsa())
        .map(|id| id.public().as_bytes().to_vec())
        .expect("rsa key present");
    let mut sess = Session::new(false);
    for (flags, want) in [
        (0u32, None),
        (2, Some("rsa-sha2-256")),
        (4, Some("rsa-sha2-512")),
    ] {
        let mut body = vec![13];
        body.extend((blob.len() as u32).to_be_bytes());
        body.extend(&blob);
        body.extend(4u32.to_be_bytes());
        body.extend(b"data");
        body.extend(flags.to_be_bytes());
        let f = frame(&body);
        assert_eq!(sess.handle_input(now(), &mut agent, &f), f.len());
        let mut out = vec![0u8; 4096];
        let n = sess.poll_transmit(&mut out).unwrap();
        let resp = Response::parse(&out[4..n]).unwrap();
        match want {
            None => assert_eq!(resp, Response::Failure),
            Some(alg) => {
                let Response::SignResponse(sig) = resp else {
                    panic!("{resp:?}")
                };
                let sig = ssh_key::Signature::try_from(sig.as_slice()).unwrap();
                assert_eq!(sig.algorithm().as_str(), alg);
                let kd = ssh_agent_wire::KeyBlob::new(blob.clone())
                    .unwrap()
                    .key_data()
                    .unwrap();
                signature::Verifier::verify(&kd, b"data", &sig).unwrap();
            }
        }
    }
}

#[test]
fn openssh_ssh_add_and_sign_interop() {
    if !have("ssh-keygen") || !have("ssh-add") {
        println!("SKIPPED: ssh-keygen/ssh-add not installed (apt-get install openssh-client)");
        return;
    }
    let s = serve(
        "interop",
        Config {
            allow_rsa: true,
            ..Config::DEFAULT
        },
    );
    let ed = keygen(&s.dir, "ed", &["-t", "ed25519"]);
    let p256 = keygen(&s.dir, "p256", &["-t", "ecdsa", "-b", "256"]);
    let p384 = keygen(&s.dir, "p384", &["-t", "ecdsa", "-b", "384"]);
    let rsa = keygen(&s.dir, "rsa", &["-t", "rsa", "-b", "2048"]);

    for k in [&ed, &p256, &p384, &rsa] {
        ok(&run(&s.sock, Command::new("ssh-add").arg(k)), "ssh-add");
    }
    let listed = ok(
        &run(&s.sock, Command::new("ssh-add").arg("-l")),
        "ssh-add -l",
    );
    for (name, ty) in [
        ("ed", "ED25519"),
        ("p256", "ECDSA"),
        ("p384", "ECDSA"),
        ("rsa", "RSA"),
    ] {
        assert!(
            listed.lines().any(|l| l.contains(name) && l.contains(ty)),
            "{name} missing from:\n{listed}"
        );
    }
    let full = ok(
        &run(&s.sock, Command::new("ssh-add").arg("-L")),
        "ssh-add -L",
    );
    for k in [&ed, &p256, &p384, &rsa] {
        let pubtext = std::fs::read_to_string(k.with_extension("pub")).unwrap();
        let key_part: String = pubtext
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(full.contains(&key_part), "{key_part} missing");
    }
    for k in [&ed, &p256, &p384, &rsa] {
        sign_and_verify(&s, k, "me@example.org");
    }
    rsa_flags(&s);

    // Remove one, then all.
    ok(
        &run(&s.sock, Command::new("ssh-add").arg("-d").arg(&p256)),
        "ssh-add -d",
    );
    assert_eq!(s.agent.lock().unwrap().keyring().len(), 3);
    ok(
        &run(&s.sock, Command::new("ssh-add").arg("-D")),
        "ssh-add -D",
    );
    assert_eq!(s.agent.lock().unwrap().keyring().len(), 0);

    // Lifetime and confirm constraints, as ssh-add encodes them.
    ok(
        &run(
            &s.sock,
            Command::new("ssh-add").args(["-c", "-t", "600"]).arg(&ed),
        ),
        "ssh-add -c -t",
    );
    {
        let agent = s.agent.lock().unwrap();
        let id = agent.keyring().get(0).unwrap();
        assert!(id.confirm);
        assert!(id.expires.is_some());
    }
    sign_and_verify(&s, &ed, "me@example.org");
    assert_eq!(*s.confirms.lock().unwrap(), 1);
    ok(
        &run(&s.sock, Command::new("ssh-add").arg("-D")),
        "ssh-add -D",
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn openssh_certificate_and_destination_constraint_interop() {
    if !have("ssh-keygen") || !have("ssh-add") {
        println!("SKIPPED: ssh-keygen/ssh-add not installed (apt-get install openssh-client)");
        return;
    }
    let s = serve("cert", Config::DEFAULT);
    let ca = keygen(&s.dir, "ca", &["-t", "ed25519"]);
    let user = keygen(&s.dir, "user", &["-t", "ed25519"]);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", "user-id", "-n", "me", "-V", "-5m:+1h"])
        .arg(user.with_extension("pub"))
        .output()
        .unwrap();
    ok(&out, "ssh-keygen -s");
    // ssh-add adds the key and, found beside it, its certificate.
    let added = run(&s.sock, Command::new("ssh-add").arg(&user));
    ok(&added, "ssh-add with certificate");
    let full = ok(
        &run(&s.sock, Command::new("ssh-add").arg("-L")),
        "ssh-add -L",
    );
    assert!(full.contains("ssh-ed25519-cert-v01@openssh.com"), "{full}");
    assert!(
        full.lines().any(|l| l.starts_with("ssh-ed25519 ")),
        "{full}"
    );
    assert_eq!(s.agent.lock().unwrap().keyring().len(), 2);

    // RSA is refused by the default configuration.
    let rsa = keygen(&s.dir, "rsa", &["-t", "rsa", "-b", "2048"]);
    let out = run(&s.sock, Command::new("ssh-add").arg(&rsa));
    assert!(
        !out.status.success(),
        "RSA add must fail when not configured"
    );

    // Destination constraint: OpenSSH's encoding of `-h host`.
    let host = keygen(&s.dir, "hostkey", &["-t", "ed25519"]);
    let known = s.dir.join("known_hosts");
    let hostpub = std::fs::read_to_string(host.with_extension("pub")).unwrap();
    std::fs::write(&known, format!("host.example {hostpub}")).unwrap();
    let d = keygen(&s.dir, "dest", &["-t", "ed25519"]);
    let out = run(
        &s.sock,
        Command::new("ssh-add")
            .arg("-H")
            .arg(&known)
            .args(["-h", "git@host.example"])
            .arg(&d),
    );
    ok(&out, "ssh-add -h");
    let agent = s.agent.lock().unwrap();
    let id = (0..agent.keyring().len())
        .filter_map(|i| agent.keyring().get(i))
        .find(|id| id.comment.contains("dest"))
        .expect("constrained key added");
    assert_eq!(id.destinations.len(), 1);
    assert_eq!(id.destinations[0].to.hostname, "host.example");
    assert_eq!(id.destinations[0].to.user, "git");
    assert_eq!(id.destinations[0].to.keys.len(), 1);
    drop(agent);
    let _ = std::fs::remove_dir_all(&s.dir);
}
