//! ed25519 signatures per second through a Unix socket: the vault engine (memory-only store)
//! against OpenSSH's `ssh-agent` on the same machine, one run, same key, same client.
//! `cargo run --release -p ssh-agent-vm --example sign_bench [SIGNATURES]` prints one table and
//! the ratio ours / OpenSSH (target >= 1.0). Meant for `cargo xtask bench ssh-agent`.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

use platform_api::Instant;
use ssh_agent_vm::engine::{ADMIN_SERVICE, CLIENT_SERVICE};
use ssh_agent_vm::{Engine, Io, VaultConfig};
use vault_store::MemDevice;

/// Measured rounds per agent; the best is reported (least disturbed by other load).
const ROUNDS: usize = 3;

struct BenchIo {
    start: StdInstant,
    out: Vec<u8>,
    finished: bool,
}

impl Io for BenchIo {
    fn now(&self) -> Instant {
        Instant(self.start.elapsed().as_nanos() as u64 + 1)
    }
    fn send(&mut self, _id: u32, data: &[u8]) -> bool {
        self.out.extend_from_slice(data);
        true
    }
    fn send_space(&self, _id: u32) -> usize {
        1 << 20
    }
    fn finish(&mut self, _id: u32, _code: i32) {
        self.finished = true;
    }
    fn call(&mut self, _target: &str, _service: &str) -> Option<u32> {
        None
    }
    fn end_input(&mut self, _id: u32) {}
    fn log(&mut self, args: fmt::Arguments<'_>) {
        eprintln!("vault: {args}");
    }
    fn entropy(&mut self, buf: &mut [u8]) {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .expect("urandom");
    }
}

/// Serves `admin.sock` (keyring `bench`, dom0) and `client.sock` (keyring `bench`), one
/// connection at a time with blocking reads, as the run loop would deliver them.
fn serve_ours(dir: &Path) {
    let admin = UnixListener::bind(dir.join("admin.sock")).unwrap();
    let client = UnixListener::bind(dir.join("client.sock")).unwrap();
    std::thread::spawn(move || {
        let mut engine: Engine<MemDevice> =
            Engine::new(VaultConfig::default(), None, &[1; 32]).unwrap();
        let mut io = BenchIo {
            start: StdInstant::now(),
            out: Vec::new(),
            finished: false,
        };
        let mut id = 0;
        let mut serve_one = |l: &UnixListener, service: &str, source: &str| {
            let (mut s, _) = l.accept().unwrap();
            id += 1;
            assert!(engine.call(&mut io, id, service, "bench", source));
            let mut buf = vec![0u8; 65536];
            loop {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    engine.input_end(&mut io, id);
                } else {
                    engine.input(&mut io, id, &buf[..n]);
                }
                if !io.out.is_empty() {
                    s.write_all(&io.out).unwrap();
                    io.out.clear();
                }
                if n == 0 || io.finished {
                    io.finished = false;
                    return;
                }
            }
        };
        serve_one(&admin, ADMIN_SERVICE, "dom0");
        loop {
            serve_one(&client, CLIENT_SERVICE, "work");
        }
    });
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn string(b: &[u8]) -> Vec<u8> {
    frame(b)
}

fn read_frame(s: &mut UnixStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    body
}

/// The public key blob of the agent's only key.
fn first_key(sock: &Path) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(&frame(&[11])).unwrap();
    let body = read_frame(&mut s);
    assert_eq!(body[0], 12, "identities answer");
    assert!(
        u32::from_be_bytes(body[1..5].try_into().unwrap()) >= 1,
        "a key listed"
    );
    let n = u32::from_be_bytes(body[5..9].try_into().unwrap()) as usize;
    body[9..9 + n].to_vec()
}

/// Signatures per second: `count` sequential SIGN_REQUESTs on one connection.
fn sigs_per_s(sock: &Path, key: &[u8], count: usize) -> f64 {
    let mut data = string(&[0x5a; 32]); // a session id
    data.push(50); // SSH2_MSG_USERAUTH_REQUEST-shaped payload
    data.extend_from_slice(&[0xa5; 64]);
    let mut req = vec![13];
    req.extend(string(key));
    req.extend(string(&data));
    req.extend([0, 0, 0, 0]);
    let req = frame(&req);
    let mut s = UnixStream::connect(sock).unwrap();
    let t = StdInstant::now();
    for _ in 0..count {
        s.write_all(&req).unwrap();
        let body = read_frame(&mut s);
        assert_eq!(body[0], 14, "sign response");
    }
    count as f64 / t.elapsed().as_secs_f64()
}

fn wait_for(p: &Path) {
    let end = StdInstant::now() + Duration::from_secs(10);
    while !p.exists() {
        assert!(StdInstant::now() < end, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ssh_add(sock: &Path, key: &Path) {
    let ok = Command::new("ssh-add")
        .arg(key)
        .env("SSH_AUTH_SOCK", sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ssh-add into {}", sock.display());
}

/// Runs the comparison; returns (ours, OpenSSH) signatures per second.
pub fn run(count: usize) -> (f64, f64) {
    let dir: PathBuf = std::env::temp_dir().join(format!("ssh-agent-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id_ed25519");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ssh-keygen");

    serve_ours(&dir);
    ssh_add(&dir.join("admin.sock"), &key);
    let theirs_sock = dir.join("openssh.sock");
    let mut agent: Child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&theirs_sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    wait_for(&theirs_sock);
    ssh_add(&theirs_sock, &key);

    let ours_sock = dir.join("client.sock");
    let (k1, k2) = (first_key(&ours_sock), first_key(&theirs_sock));
    assert_eq!(k1, k2, "same key in both agents");
    // Warm-up, then interleaved rounds so that outside load hits both alike.
    sigs_per_s(&ours_sock, &k1, count / 10 + 1);
    sigs_per_s(&theirs_sock, &k2, count / 10 + 1);
    let (mut ours, mut theirs) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        ours = ours.max(sigs_per_s(&ours_sock, &k1, count));
        theirs = theirs.max(sigs_per_s(&theirs_sock, &k2, count));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
    (ours, theirs)
}

fn main() {
    let count = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let (ours, theirs) = run(count);
    println!(
        "ed25519 signatures through a Unix socket, {count} per round, best of {ROUNDS} rounds"
    );
    println!("{:<28} {:>12}", "agent", "sigs/s");
    println!("{:<28} {:>12.0}", "ssh-agent-vm engine", ours);
    println!("{:<28} {:>12.0}", "OpenSSH ssh-agent", theirs);
    println!("ratio ours/OpenSSH: {:.2}", ours / theirs);
}
