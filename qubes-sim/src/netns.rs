//! Optional Linux network plumbing (`QUBES_SIM_NETNS=1`, root only): each networked qube's
//! processes run in their own network namespace, joined to their netvm's by a veth pair.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::{Command, Stdio};

use std::io::Read;

use anyhow::{bail, Context, Result};

/// Set to `1` in the sim daemon's environment to give networked qubes namespaces.
pub const ENV_NETNS: &str = "QUBES_SIM_NETNS";

/// Whether the plumbing is asked for and possible (root, `ip` present).
pub fn wanted() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::env::var(ENV_NETNS).is_ok_and(|v| v == "1")
        && std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The namespace prefix of one state directory: `qs<6 hex>-`, so that sims on different
/// state directories never touch each other's namespaces.
pub fn prefix(state: &Path) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state.hash(&mut h);
    format!("qs{:06x}-", h.finish() & 0xff_ffff)
}

/// The namespace of domain `domid`.
pub fn ns_name(state: &Path, domid: u32) -> String {
    format!("{}{domid}", prefix(state))
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates `ns` (replacing a stale one of the same name) with its loopback up.
pub fn create(ns: &str) -> Result<()> {
    let _ = ip(&["netns", "del", ns]);
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])
}

/// Deletes `ns` and with it its ends of every veth pair.
pub fn delete(ns: &str) {
    let _ = ip(&["netns", "del", ns]);
}

/// Deletes every namespace of this state directory (a killed sim leaves them behind).
pub fn delete_all(state: &Path) {
    let p = prefix(state);
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.split_whitespace().next().filter(|n| n.starts_with(&p)) {
            delete(name);
        }
    }
}

/// `program args…` run inside `ns` (`ip netns exec` execs it: the pid stays the program's).
pub fn wrap(ns: &str, program: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Whether `ns` has its `eth0` (a link to a netvm).
pub fn has_link(ns: &str) -> bool {
    ip(&["-n", ns, "link", "show", "eth0"]).is_ok()
}

/// Removes `ns`'s link (both ends of the veth pair go).
pub fn unlink(ns: &str) {
    let _ = ip(&["-n", ns, "link", "del", "eth0"]);
}

/// A qube's end of a link.
#[derive(Debug, Clone)]
pub struct End<'a> {
    /// Its namespace.
    pub ns: &'a str,
    /// Its domid.
    pub domid: u32,
    /// Its address.
    pub ip: &'a str,
}

/// Joins `client` to `netvm` as Qubes' vif scripts do: the client's `eth0` has its address
/// /32, the MAC from QubesDB and a default route via the gateway; the netvm's `vif<D>.0` has
/// the gateway address /32 and a host route to the client, with forwarding on.
pub fn connect(state: &Path, client: &End<'_>, mac: &str, netvm: &End<'_>) -> Result<()> {
    let tag = format!("{}{}", &prefix(state)[..8], client.domid);
    let (a, b) = (format!("{tag}a"), format!("{tag}b"));
    let vif = format!("vif{}.0", client.domid);
    let _ = ip(&["link", "del", &a]);
    let _ = ip(&["-n", netvm.ns, "link", "del", &vif]);
    ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
    let r = (|| -> Result<()> {
        ip(&["link", "set", &a, "netns", client.ns, "name", "eth0"])?;
        ip(&["link", "set", &b, "netns", netvm.ns, "name", &vif])?;
        let c = client.ns;
        ip(&["-n", c, "link", "set", "eth0", "address", mac])?;
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{}/32", client.ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", c, "link", "set", "eth0", "up"])?;
        ip(&["-n", c, "route", "add", netvm.ip, "dev", "eth0"])?;
        ip(&["-n", c, "route", "add", "default", "via", netvm.ip])?;
        let n = netvm.ns;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/32", netvm.ip),
            "dev",
            &vif,
        ])?;
        ip(&["-n", n, "link", "set", &vif, "up"])?;
        ip(&[
            "-n",
            n,
            "route",
            "add",
            &format!("{}/32", client.ip),
            "dev",
            &vif,
        ])?;
        // Forwarding for traffic beyond the netvm; failure only limits that.
        let _ = Command::new("ip")
            .args(["netns", "exec", n, "sh", "-c"])
            .arg("echo 1 > /proc/sys/net/ipv4/ip_forward")
            .status();
        Ok(())
    })();
    if r.is_err() {
        let _ = ip(&["link", "del", &a]);
        let _ = ip(&["-n", client.ns, "link", "del", "eth0"]);
    }
    r
}

/// `net-probe listen PORT` (one TCP connection: prints its line and peer, answers `pong`) or
/// `net-probe connect IP PORT MSG` (prints the answer): a hidden tool for the tests.
pub fn probe(args: &[String]) -> Result<i32> {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["listen", port] => {
            let l = TcpListener::bind(("0.0.0.0", port.parse::<u16>()?))?;
            println!("listening");
            std::io::stdout().flush()?;
            let (s, peer) = l.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut line = String::new();
            BufReader::new(&s).take(4096).read_line(&mut line)?;
            println!("got {} from {}", line.trim_end(), peer.ip());
            (&s).write_all(b"pong\n")?;
        }
        ["connect", ip, port, msg] => {
            let addr = SocketAddr::new(ip.parse()?, port.parse()?);
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            (&s).write_all(format!("{msg}\n").as_bytes())?;
            let mut line = String::new();
            BufReader::new(&s).take(4096).read_line(&mut line)?;
            print!("{line}");
        }
        _ => bail!("usage: net-probe listen PORT | connect IP PORT MSG"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_differ_per_state_dir() {
        let (a, b) = (Path::new("/tmp/one"), Path::new("/tmp/two"));
        assert_ne!(prefix(a), prefix(b));
        assert_eq!(prefix(a), prefix(a));
        assert!(ns_name(a, 32767).starts_with(&prefix(a)));
        // veth temporaries: 8 + 5 digits + 1 <= 15 (IFNAMSIZ - 1).
        assert!(format!("{}{}a", &prefix(a)[..8], 32767).len() <= 15);
    }
}
