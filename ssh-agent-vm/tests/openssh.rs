//! Real OpenSSH against the vault engine: `ssh-add`, `ssh-keygen -Y` (and `ssh` into a loopback
//! `sshd` when installed) talk to Unix sockets that stand in for qrexec calls, one call per
//! connection; confirmations run the project's dom0 service script. Skipped if OpenSSH is absent.

use std::collections::HashMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use platform_api::Instant;
use sim_support::openssh::{have, public, sshd_exe, Sshd, Tools};
use ssh_agent_vm::engine::{ADMIN_SERVICE, CLIENT_SERVICE};
use ssh_agent_vm::{Engine, Io, VaultConfig};
use vault_store::MemDevice;

fn confirm_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../qubes-rpc/dom0-services/qubes.UnikernelConfirm")
}

struct TestIo {
    start: StdInstant,
    out: HashMap<u32, Vec<u8>>,
    finished: HashMap<u32, i32>,
    calls: Vec<(u32, String)>,
    call_input: HashMap<u32, Vec<u8>>,
    next_call: u32,
}

impl Io for TestIo {
    fn now(&self) -> Instant {
        Instant(self.start.elapsed().as_nanos() as u64 + 1)
    }
    fn send(&mut self, id: u32, data: &[u8]) -> bool {
        if self.calls.iter().any(|(c, _)| *c == id) {
            self.call_input
                .entry(id)
                .or_default()
                .extend_from_slice(data);
        } else {
            self.out.entry(id).or_default().extend_from_slice(data);
        }
        true
    }
    fn send_space(&self, id: u32) -> usize {
        65536usize.saturating_sub(self.out.get(&id).map_or(0, Vec::len))
    }
    fn finish(&mut self, id: u32, code: i32) {
        self.finished.insert(id, code);
    }
    fn call(&mut self, target: &str, service: &str) -> Option<u32> {
        assert_eq!(target, "dom0");
        self.next_call += 1;
        self.calls.push((self.next_call, service.into()));
        Some(self.next_call)
    }
    fn end_input(&mut self, _id: u32) {}
    fn log(&mut self, args: fmt::Arguments<'_>) {
        eprintln!("vault: {args}");
    }
    fn entropy(&mut self, buf: &mut [u8]) {
        let mut f = std::fs::File::open("/dev/urandom").unwrap();
        f.read_exact(buf).unwrap();
    }
}

enum Cmd {
    /// The dom0 prompt's answer from now on.
    Answer(&'static str),
    /// Stop and hand the device back.
    Stop(mpsc::Sender<Vec<u8>>),
}

/// The vault serving three sockets in `dir`: `work.sock` (client `work`, keyring `work`),
/// `other.sock` (client `other`, keyring `other`) and `admin.sock` (dom0, keyring `work`).
struct Vault {
    cmds: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
}

impl Vault {
    fn start(dir: &Path, kernelopts: &str, device: Vec<u8>) -> Self {
        let (tx, rx) = mpsc::channel();
        let dir = dir.to_path_buf();
        let opts = kernelopts.to_string();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || serve(&dir, &opts, device, rx, ready_tx));
        ready_rx.recv().unwrap();
        Self {
            cmds: tx,
            thread: Some(thread),
        }
    }

    fn answer(&self, a: &'static str) {
        self.cmds.send(Cmd::Answer(a)).unwrap();
    }

    fn stop(mut self) -> Vec<u8> {
        let (tx, rx) = mpsc::channel();
        self.cmds.send(Cmd::Stop(tx)).unwrap();
        let dev = rx.recv().unwrap();
        self.thread.take().unwrap().join().unwrap();
        dev
    }
}

struct Conn {
    stream: UnixStream,
    unsent: Vec<u8>,
    eof: bool,
}

fn serve(
    dir: &Path,
    opts: &str,
    device: Vec<u8>,
    cmds: mpsc::Receiver<Cmd>,
    ready: mpsc::Sender<()>,
) {
    let cfg = VaultConfig::parse(opts).unwrap();
    let dev = MemDevice::from_bytes(512, device);
    let mut engine = Engine::new(cfg, Some(dev), &[7; 32]).unwrap();
    let mut io = TestIo {
        start: StdInstant::now(),
        out: HashMap::new(),
        finished: HashMap::new(),
        calls: Vec::new(),
        call_input: HashMap::new(),
        next_call: 1_000_000,
    };
    let mut listeners = Vec::new();
    for (name, service, ring, source) in [
        ("work.sock", CLIENT_SERVICE, "work", "work"),
        ("other.sock", CLIENT_SERVICE, "other", "other"),
        ("admin.sock", ADMIN_SERVICE, "work", "dom0"),
    ] {
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        let l = UnixListener::bind(&p).unwrap();
        l.set_nonblocking(true).unwrap();
        listeners.push((l, service, ring, source));
    }
    ready.send(()).unwrap();
    let mut conns: HashMap<u32, Conn> = HashMap::new();
    let mut next = 1u32;
    let mut answer = "deny";
    let mut buf = vec![0u8; 65536];
    loop {
        let mut busy = false;
        match cmds.try_recv() {
            Ok(Cmd::Answer(a)) => answer = a,
            Ok(Cmd::Stop(tx)) => {
                let dev = engine.with_device(|d| d.as_bytes().to_vec()).unwrap();
                tx.send(dev).unwrap();
                return;
            }
            Err(_) => {}
        }
        for (l, service, ring, source) in &listeners {
            while let Ok((s, _)) = l.accept() {
                busy = true;
                s.set_nonblocking(true).unwrap();
                next += 1;
                if engine.call(&mut io, next, service, ring, source) {
                    conns.insert(
                        next,
                        Conn {
                            stream: s,
                            unsent: Vec::new(),
                            eof: false,
                        },
                    );
                }
            }
        }
        let ids: Vec<u32> = conns.keys().copied().collect();
        for id in ids {
            let c = conns.get_mut(&id).unwrap();
            if c.eof {
                continue;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    c.eof = true;
                    busy = true;
                    engine.input_end(&mut io, id);
                }
                Ok(n) => {
                    busy = true;
                    engine.input(&mut io, id, &buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    conns.remove(&id);
                    engine.closed(&mut io, id, None);
                }
            }
        }
        // The dom0 prompt: the project's service script, answered through the sim's variable.
        for (call, service) in std::mem::take(&mut io.calls) {
            busy = true;
            let arg = service.split_once('+').map_or("", |(_, a)| a).to_string();
            let mut child = Command::new("sh")
                .arg(confirm_script())
                .env("QUBES_SIM_CONFIRM_ANSWER", answer)
                .env("QREXEC_REMOTE_DOMAIN", "sshagent-unikernel")
                .env("QREXEC_SERVICE_ARGUMENT", arg)
                .env_remove("QUBES_SIM_DIR")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let text = io.call_input.remove(&call).unwrap_or_default();
            child.stdin.take().unwrap().write_all(&text).unwrap();
            let out = child.wait_with_output().unwrap();
            engine.output(call, &out.stdout);
            engine.closed(&mut io, call, out.status.code());
        }
        engine.poll(&mut io);
        for (id, data) in io.out.drain() {
            if let Some(c) = conns.get_mut(&id) {
                c.unsent.extend_from_slice(&data);
            }
        }
        let ids: Vec<u32> = conns.keys().copied().collect();
        for id in ids {
            let c = conns.get_mut(&id).unwrap();
            while !c.unsent.is_empty() {
                match c.stream.write(&c.unsent) {
                    Ok(n) => {
                        busy = true;
                        c.unsent.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.unsent.clear();
                        break;
                    }
                }
            }
            if c.unsent.is_empty() && io.finished.remove(&id).is_some() {
                conns.remove(&id);
                engine.closed(&mut io, id, Some(0));
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

struct Env {
    dir: PathBuf,
    ssh: Tools,
}

impl Env {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ssh-agent-vm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ssh = Tools::new(&dir);
        Self { dir, ssh }
    }

    fn keygen(&self, kind: &str, bits: Option<&str>) -> PathBuf {
        self.keygen_named(&format!("id_{kind}{}", bits.unwrap_or("")), kind, bits)
    }

    fn keygen_named(&self, name: &str, kind: &str, bits: Option<&str>) -> PathBuf {
        self.ssh.keygen(name, kind, bits)
    }

    /// Runs an OpenSSH tool against socket `sock`; passphrase prompts answer `pass`.
    fn run(&self, sock: &str, pass: &str, tool: &str, args: &[&str]) -> Output {
        self.ssh.run(&self.dir.join(sock), pass, tool, args)
    }

    fn ok(&self, sock: &str, pass: &str, tool: &str, args: &[&str]) -> String {
        self.ssh.ok(&self.dir.join(sock), pass, tool, args)
    }

    /// The keys `sock` lists, sorted.
    fn listed(&self, sock: &str) -> Vec<String> {
        self.ssh.listed(&self.dir.join(sock))
    }

    fn public(&self, key: &Path) -> String {
        public(key)
    }

    /// `ssh-keygen -Y sign` through the agent, then `-Y verify` against the public key.
    fn sign_verify(&self, sock: &str, key: &Path) -> bool {
        self.ssh.sign_verify(&self.dir.join(sock), key)
    }

    /// `ssh` into the loopback sshd on `port` through `sock` with the key `key.pub`.
    fn login(&self, sock: &str, key: &Path, port: u16) -> Command {
        self.ssh.login(&self.dir.join(sock), key, port)
    }
}

const OPTS: &str = "rsa=work kdf=argon2id:64:1:1";

#[test]
fn openssh_tools_through_the_vault() {
    if !have("ssh-add") || !have("ssh-keygen") {
        eprintln!("skipped: OpenSSH client tools not installed");
        return;
    }
    let env = Env::new("tools");
    let vault = Vault::start(&env.dir, OPTS, vec![0; 512 * 4096]);
    let ed = env.keygen("ed25519", None);
    let ec = env.keygen("ecdsa", Some("256"));
    let ec384 = env.keygen("ecdsa", Some("384"));
    let rsa = env.keygen("rsa", Some("3072"));

    // Sealed store: nothing can be added until the owner opens (here: formats) it.
    assert!(!env
        .run("admin.sock", "", "ssh-add", &[ed.to_str().unwrap()])
        .status
        .success());
    env.ok("admin.sock", "store-pass", "ssh-add", &["-X"]);
    for k in [&ed, &ec, &ec384, &rsa] {
        env.ok("admin.sock", "", "ssh-add", &[k.to_str().unwrap()]);
    }
    // ssh-keygen -Y sign falls back to the private key file: from here on only the vault has them.
    let ed_private = std::fs::read(&ed).unwrap();
    for k in [&ed, &ec, &ec384, &rsa] {
        std::fs::remove_file(k).unwrap();
    }

    // ssh-add -l / -L from the client: exactly the keys, in the keyring named by the call.
    let l = env.ok("work.sock", "", "ssh-add", &["-l"]);
    assert_eq!(l.lines().count(), 4, "{l}");
    let mut listed = env.listed("work.sock");
    let mut want: Vec<String> = [&ed, &ec, &ec384, &rsa]
        .iter()
        .map(|k| env.public(k))
        .collect();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
    assert!(
        env.listed("other.sock").is_empty(),
        "another keyring sees nothing"
    );

    // Signatures made in the vault verify with OpenSSH.
    for k in [&ed, &ec, &ec384, &rsa] {
        assert!(env.sign_verify("work.sock", k), "sign with {}", k.display());
    }
    assert!(
        !env.sign_verify("other.sock", &ed),
        "other keyring cannot sign"
    );

    // A client cannot add, remove or lock.
    let fresh = env.keygen_named("id_fresh", "ed25519", None);
    assert!(!env
        .run("work.sock", "", "ssh-add", &[fresh.to_str().unwrap()])
        .status
        .success());
    std::fs::write(&ed, &ed_private).unwrap();
    std::fs::set_permissions(&ed, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(!env
        .run("work.sock", "", "ssh-add", &[ed.to_str().unwrap()])
        .status
        .success());
    std::fs::remove_file(&ed).unwrap();
    assert!(!env
        .run("work.sock", "", "ssh-add", &["-D"])
        .status
        .success());
    assert!(!env
        .run("work.sock", "pw", "ssh-add", &["-x"])
        .status
        .success());
    assert_eq!(env.listed("work.sock").len(), 4);

    // Lock and unlock (admin): a locked keyring lists nothing and signs nothing.
    env.ok("admin.sock", "lockpw", "ssh-add", &["-x"]);
    assert!(env.listed("work.sock").is_empty());
    assert!(!env.sign_verify("work.sock", &ed));
    assert!(!env
        .run("admin.sock", "wrong", "ssh-add", &["-X"])
        .status
        .success());
    env.ok("admin.sock", "lockpw", "ssh-add", &["-X"]);
    assert_eq!(env.listed("work.sock").len(), 4);

    // Confirmation through the dom0 script: denied, then allowed.
    let conf = env.keygen_named("id_confirm", "ed25519", None);
    env.ok("admin.sock", "", "ssh-add", &["-c", conf.to_str().unwrap()]);
    std::fs::remove_file(&conf).unwrap();
    vault.answer("deny");
    assert!(
        !env.sign_verify("work.sock", &conf),
        "denied confirmation signs nothing"
    );
    vault.answer("allow");
    assert!(
        env.sign_verify("work.sock", &conf),
        "allowed confirmation signs"
    );

    // Lifetime: listed while it lives (checked only when the listing came back within the
    // lifetime: a loaded machine may take longer), then gone.
    let short = env.keygen_named("id_short", "ed25519", None);
    let life = Duration::from_secs(2);
    let added = StdInstant::now();
    env.ok(
        "admin.sock",
        "",
        "ssh-add",
        &["-t", "2", short.to_str().unwrap()],
    );
    std::fs::remove_file(&short).unwrap();
    let listed = env.listed("work.sock");
    if added.elapsed() < life {
        assert!(
            listed.contains(&env.public(&short)),
            "alive within its lifetime"
        );
    }
    std::thread::sleep(life.saturating_sub(added.elapsed()));
    sim_support::wait_until(
        "the 2 s key expires",
        Duration::from_millis(100),
        || !env.listed("work.sock").contains(&env.public(&short)),
        String::new,
    );
    assert!(!env.sign_verify("work.sock", &short));

    // Remove one (admin).
    env.ok(
        "admin.sock",
        "",
        "ssh-add",
        &["-d", ec384.with_extension("pub").to_str().unwrap()],
    );
    assert_eq!(env.listed("work.sock").len(), 4, "ed, ec, rsa, confirm");

    // Restart: the store comes back sealed; the owner's passphrase brings the keys back.
    let device = vault.stop();
    let vault = Vault::start(&env.dir, OPTS, device);
    assert!(env.listed("work.sock").is_empty(), "sealed after restart");
    assert!(!env
        .run("admin.sock", "bad", "ssh-add", &["-X"])
        .status
        .success());
    env.ok("admin.sock", "store-pass", "ssh-add", &["-X"]);
    let mut after = env.listed("work.sock");
    after.sort();
    let mut want: Vec<String> = [&ed, &ec, &rsa, &conf]
        .iter()
        .map(|k| env.public(k))
        .collect();
    want.sort();
    assert_eq!(
        after, want,
        "stored keys back, lifetime and removed keys not"
    );
    assert!(env.sign_verify("work.sock", &rsa));
    vault.answer("deny");
    assert!(
        !env.sign_verify("work.sock", &conf),
        "confirm constraint survived the restart"
    );
    vault.stop();
}

#[test]
fn rsa_is_refused_where_the_keyring_does_not_allow_it() {
    if !have("ssh-add") || !have("ssh-keygen") {
        eprintln!("skipped: OpenSSH client tools not installed");
        return;
    }
    let env = Env::new("norsa");
    let vault = Vault::start(&env.dir, "kdf=argon2id:64:1:1", vec![0; 512 * 4096]);
    let rsa = env.keygen("rsa", Some("2048"));
    env.ok("admin.sock", "pw", "ssh-add", &["-X"]);
    assert!(!env
        .run("admin.sock", "", "ssh-add", &[rsa.to_str().unwrap()])
        .status
        .success());
    assert!(env.listed("work.sock").is_empty());
    vault.stop();
}

#[test]
fn ssh_login_into_a_loopback_sshd_with_vault_keys() {
    if sshd_exe().is_none() {
        eprintln!("skipped: sshd not installed (Debian package openssh-server)");
        return;
    }
    let env = Env::new("login");
    let vault = Vault::start(&env.dir, OPTS, vec![0; 512 * 4096]);
    env.ok("admin.sock", "pw", "ssh-add", &["-X"]);
    let keys = [
        env.keygen("ed25519", None),
        env.keygen("ecdsa", Some("256")),
        env.keygen("rsa", Some("3072")),
    ];
    for k in &keys {
        env.ok("admin.sock", "", "ssh-add", &[k.to_str().unwrap()]);
    }
    // Private keys exist only in the vault from here on.
    for k in &keys {
        std::fs::remove_file(k).unwrap();
    }
    let sshd = Sshd::start(&env.dir, "login", &keys).unwrap();
    for k in &keys {
        let out = env.login("work.sock", k, sshd.port).output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("logged-in"),
            "login with {}: {}\nsshd:\n{}",
            k.display(),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&sshd.log).unwrap_or_default()
        );
    }
    // 32 parallel logins with the ed25519 key, each its own agent session in the vault.
    let children: Vec<_> = (0..32)
        .map(|_| env.login("work.sock", &keys[0], sshd.port).spawn().unwrap())
        .collect();
    let ok = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("logged-in"))
        .count();
    assert_eq!(ok, 32, "parallel logins");
    drop(sshd);
    vault.stop();
}

#[test]
fn destination_constrained_key_logs_in_only_where_it_may() {
    if sshd_exe().is_none() {
        eprintln!("skipped: sshd not installed (Debian package openssh-server)");
        return;
    }
    let env = Env::new("dest");
    let vault = Vault::start(&env.dir, OPTS, vec![0; 512 * 4096]);
    env.ok("admin.sock", "pw", "ssh-add", &["-X"]);
    let key = env.keygen("ed25519", None);
    let allowed = Sshd::start(&env.dir, "allowed", std::slice::from_ref(&key)).unwrap();
    let other = Sshd::start(&env.dir, "other", std::slice::from_ref(&key)).unwrap();
    // ssh-add -h looks the destination's host keys up in known_hosts.
    let kh = env.dir.join("known_hosts_for_add");
    std::fs::write(&kh, format!("127.0.0.1 {}\n", allowed.host_pub)).unwrap();
    env.ok(
        "admin.sock",
        "",
        "ssh-add",
        &[
            "-H",
            kh.to_str().unwrap(),
            "-h",
            "127.0.0.1",
            key.to_str().unwrap(),
        ],
    );
    let private = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let login = |port: u16| {
        let o = env.login("work.sock", &key, port).output().unwrap();
        String::from_utf8_lossy(&o.stdout).contains("logged-in")
    };
    assert!(
        login(allowed.port),
        "the permitted host (session-bind + hostbound userauth)"
    );
    assert!(!login(other.port), "another host key: the agent refuses");
    // The same key re-added without the constraint: the other host works, so the refusal
    // above was the constraint's doing.
    std::fs::write(&key, &private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.ok("admin.sock", "", "ssh-add", &[key.to_str().unwrap()]);
    std::fs::remove_file(&key).unwrap();
    assert!(login(other.port), "unconstrained key");
    drop((allowed, other));
    vault.stop();
}
