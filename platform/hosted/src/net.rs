//! Hosted network devices: a TAP moved into the peer qube's netns and set up there as Qubes sets
//! up the other end; all of it (netdev, addresses, routes, proxy ARP) vanishes with the fd.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use platform_api::{DomId, EvtchnPort, NetDevice, OutOfBounds, PlatformError, Store, StoreError};

use crate::block::read_str;
use crate::events::{FdPort, HostedEvents};
use crate::sys;

/// The MAC Qubes gives every client's netfront.
pub const CLIENT_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x00];
/// The MAC of the backend end of a vif (Xen's `vif-*` scripts use it for the netvm side).
pub const BACKEND_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];
/// The MTU of a Qubes vif.
pub const MTU: usize = 1500;
/// Ethernet header length.
const ETH_HLEN: usize = 14;
/// Largest frame a TAP can hand us (its MTU could be raised inside the namespace).
const MAX_READ: usize = 65535 + ETH_HLEN;
/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// How often, and how far apart, naming the TAP in the namespace is tried.
const RENAME_TRIES: u32 = 10;
const RENAME_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

static TAP_SEQ: AtomicU32 = AtomicU32::new(0);

fn os(what: &'static str, e: &io::Error) -> PlatformError {
    PlatformError::Os {
        what,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

fn bad(what: &'static str) -> PlatformError {
    PlatformError::Store(StoreError::BadReply(what))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// A namespace name as `ip netns` takes it: no path separators, nothing `ip` would read as
/// an option.
fn valid_netns(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The addresses of a vif's `ip` node: IPv4, then optionally IPv6 after a space.
fn parse_ips(s: &str) -> Option<(Ipv4Addr, Option<Ipv6Addr>)> {
    let mut it = s.split_ascii_whitespace();
    let v4 = it.next()?.parse().ok()?;
    let v6 = match it.next() {
        Some(v) => Some(v.parse().ok()?),
        None => None,
    };
    it.next().is_none().then_some((v4, v6))
}

/// The `ip` binary (sbin is often not on a qube process's PATH).
fn ip_binary() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ip")
}

/// Runs `ip <args>`; on failure, its error output.
fn run_ip(args: &[&str]) -> Result<(), String> {
    match Command::new(ip_binary()).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `ip <args>`; on failure writes its error output as one line to stderr.
fn ip(what: &'static str, args: &[&str]) -> Result<(), PlatformError> {
    run_ip(args).map_err(|msg| {
        let _ = writeln!(io::stderr(), "{what}: ip {} failed: {msg}", args.join(" "));
        PlatformError::Os {
            what,
            errno: libc::EIO,
        }
    })
}

/// Sets `/proc/sys/<key>` inside namespace `ns`, from a helper thread that enters it (setns
/// moves only the calling thread, and that thread ends right after).
fn sysctl_in(ns: &str, key: &str, value: &str) -> Result<(), PlatformError> {
    let nsfile = File::open(Path::new(NETNS_DIR).join(ns)).map_err(|e| os("open netns", &e))?;
    let path = PathBuf::from("/proc/sys").join(key);
    let value = value.to_owned();
    let r = std::thread::spawn(move || -> Result<(), PlatformError> {
        sys::setns_net(nsfile.as_fd()).map_err(|e| os("enter netns", &e))?;
        std::fs::write(&path, value).map_err(|e| os("write sysctl in netns", &e))
    })
    .join();
    r.unwrap_or(Err(PlatformError::Os {
        what: "sysctl helper thread",
        errno: libc::EIO,
    }))
}

/// A vif's optional `gateway6` node under `dir`: absent means no IPv6 gateway.
fn read_gateway6(store: &mut impl Store, dir: &str) -> Result<Option<Ipv6Addr>, PlatformError> {
    match read_str(store, &format!("{dir}/gateway6")) {
        Ok(g) => g
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad("vif gateway6 is not an IPv6 address")),
        Err(PlatformError::Store(StoreError::Xs(platform_api::XsErrno::Enoent))) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether this kernel has IPv6 at all (`ipv6.disable=1` on its command line removes it);
/// without it the link carries IPv4 only, as a Qubes VM without the `ipv6` feature.
fn kernel_has_ipv6() -> bool {
    Path::new("/proc/sys/net/ipv6").exists()
}

/// Qubes' setup-ip for IPv6 in the client: its /128 without DAD (the link is
/// point-to-point), the gateway on-link and the default route via it.
fn setup_client_ipv6(
    ns: &str,
    dev: &str,
    addr: Ipv6Addr,
    gateway6: Option<Ipv6Addr>,
) -> Result<(), PlatformError> {
    if !kernel_has_ipv6() {
        return Ok(());
    }
    let a = format!("{addr}/128");
    ip(
        "add client IPv6 address",
        &["-n", ns, "-6", "addr", "add", &a, "dev", dev, "nodad"],
    )?;
    if let Some(g) = gateway6 {
        let g = g.to_string();
        ip(
            "add IPv6 gateway route",
            &["-n", ns, "-6", "route", "add", &g, "dev", dev],
        )?;
        ip(
            "add IPv6 default route",
            &[
                "-n", ns, "-6", "route", "add", "default", "via", &g, "dev", dev,
            ],
        )?;
    }
    Ok(())
}

/// vif-route-qubes for IPv6 in the netvm: the /128 route to the client, the gateway address
/// on the link (what the client's default route points at), proxy NDP on the vif.
fn setup_netvm_ipv6(
    ns: &str,
    dev: &str,
    client: Ipv6Addr,
    gateway6: Option<Ipv6Addr>,
) -> Result<(), PlatformError> {
    if !kernel_has_ipv6() {
        return Ok(());
    }
    let route = format!("{client}/128");
    ip(
        "add client IPv6 route",
        &["-n", ns, "-6", "route", "add", &route, "dev", dev],
    )?;
    if let Some(g) = gateway6 {
        let g = format!("{g}/128");
        ip(
            "add IPv6 gateway address",
            &["-n", ns, "-6", "addr", "add", &g, "dev", dev, "nodad"],
        )?;
    }
    // The IPv6 counterpart of proxy ARP on the vif.
    sysctl_in(ns, &format!("net/ipv6/conf/{dev}/proxy_ndp"), "1")
}

/// How one TAP is set up inside the peer's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSetup {
    /// The namespace (`ip netns` name) the netdev goes into.
    pub netns: String,
    /// Its name there.
    pub ifname: String,
    /// The kernel side's MAC.
    pub kernel_mac: [u8; 6],
    /// Our MAC (the frames we send carry it).
    pub our_mac: [u8; 6],
    /// What to configure on the kernel side.
    pub role: Role,
}

/// The kernel side of the link, as Qubes would configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// We are the netvm's backend; the kernel side is the client's `eth0` (setup-ip): its
    /// addresses, a route to the gateway on the link, and the default route via it.
    ClientEth0 {
        /// The client's addresses.
        ip: Ipv4Addr,
        /// The client's IPv6 address, if any.
        ip6: Option<Ipv6Addr>,
        /// The netvm's gateway address.
        gateway: Ipv4Addr,
        /// The netvm's IPv6 gateway (`/qubes-gateway6`), if any.
        gateway6: Option<Ipv6Addr>,
    },
    /// We are the client's frontend; the kernel side is the netvm's `vifD.V`
    /// (vif-route-qubes): a /32 route to the client, proxy ARP, the gateway address.
    NetvmVif {
        /// The client's (our) address.
        ip: Ipv4Addr,
        /// The client's IPv6 address, if any.
        ip6: Option<Ipv6Addr>,
        /// The gateway address put on the link.
        gateway: Ipv4Addr,
        /// The IPv6 gateway address put on the link, if any.
        gateway6: Option<Ipv6Addr>,
    },
}

/// A TAP device standing in for a vif; dropping it removes the netdev and all set up on it.
#[derive(Debug)]
pub struct HostedNet {
    tap: File,
    pseudo: FdPort,
    setup: TapSetup,
    /// The name the TAP was created under in our own namespace, before the move.
    created_as: String,
    dead: bool,
    /// Frames dropped because they were longer than the caller's buffer.
    oversized: u64,
    buf: Vec<u8>,
}

impl HostedNet {
    /// The netback for `frontend`'s vif `devid`, from our `backend/vif/<fe>/<devid>`: a TAP
    /// in the client's namespace as its `eth0`.
    pub fn netback(
        store: &mut impl Store,
        events: &HostedEvents,
        frontend: DomId,
        devid: u32,
    ) -> Result<Self, PlatformError> {
        let dir = format!("backend/vif/{frontend}/{devid}");
        let netns = read_str(store, &format!("{dir}/hosted-netns"))?;
        let mac = match read_str(store, &format!("{dir}/mac")) {
            Ok(m) => parse_mac(&m).ok_or(bad("vif mac is not a MAC address"))?,
            Err(PlatformError::Store(StoreError::Xs(platform_api::XsErrno::Enoent))) => CLIENT_MAC,
            Err(e) => return Err(e),
        };
        let (ip, ip6) =
            parse_ips(&read_str(store, &format!("{dir}/ip"))?).ok_or(bad("vif ip is malformed"))?;
        let gateway = read_str(store, &format!("{dir}/gateway"))?
            .trim()
            .parse()
            .map_err(|_| bad("vif gateway is not an IPv4 address"))?;
        let gateway6 = read_gateway6(store, &dir)?;
        Self::create(
            events,
            TapSetup {
                netns,
                ifname: "eth0".into(),
                kernel_mac: mac,
                our_mac: BACKEND_MAC,
                role: Role::ClientEth0 {
                    ip,
                    ip6,
                    gateway,
                    gateway6,
                },
            },
        )
    }

    /// Our netfront `device/vif/<devid>` (domain `me`): a TAP in the netvm's namespace (the
    /// frontend's `hosted-netns`) as `vif<me>.<devid>`.
    pub fn netfront(
        store: &mut impl Store,
        events: &HostedEvents,
        me: DomId,
        devid: u32,
    ) -> Result<Self, PlatformError> {
        let fe = format!("device/vif/{devid}");
        let backend = read_str(store, &format!("{fe}/backend"))?;
        let netns = read_str(store, &format!("{fe}/hosted-netns"))?;
        let mac_s = match read_str(store, &format!("{fe}/mac")) {
            Ok(m) => Some(m),
            Err(PlatformError::Store(StoreError::Xs(platform_api::XsErrno::Enoent))) => {
                read_str(store, &format!("{backend}/mac")).ok()
            }
            Err(e) => return Err(e),
        };
        let mac = match mac_s {
            Some(m) => parse_mac(&m).ok_or(bad("vif mac is not a MAC address"))?,
            None => CLIENT_MAC,
        };
        let (ip, ip6) = parse_ips(&read_str(store, &format!("{backend}/ip"))?)
            .ok_or(bad("vif ip is malformed"))?;
        let gateway = read_str(store, &format!("{backend}/gateway"))?
            .trim()
            .parse()
            .map_err(|_| bad("vif gateway is not an IPv4 address"))?;
        let gateway6 = read_gateway6(store, &backend)?;
        Self::create(
            events,
            TapSetup {
                netns,
                ifname: format!("vif{me}.{devid}"),
                kernel_mac: BACKEND_MAC,
                our_mac: mac,
                role: Role::NetvmVif {
                    ip,
                    ip6,
                    gateway,
                    gateway6,
                },
            },
        )
    }

    /// Creates the TAP, moves it into `setup.netns` and configures it there.
    pub fn create(events: &HostedEvents, setup: TapSetup) -> Result<Self, PlatformError> {
        if !valid_netns(&setup.netns) {
            return Err(bad("hosted-netns is not a namespace name"));
        }
        if !Path::new(NETNS_DIR).join(&setup.netns).exists() {
            return Err(PlatformError::Os {
                what: "find the peer's netns",
                errno: libc::ENOENT,
            });
        }
        if setup.ifname.is_empty() || setup.ifname.len() >= libc::IFNAMSIZ {
            return Err(PlatformError::Unsupported(
                "an interface name over 15 bytes",
            ));
        }
        // A name unique in our own namespace, only until the move and rename.
        let seq = TAP_SEQ.fetch_add(1, Ordering::Relaxed) % 100_000;
        let tmp = format!("qh{}t{seq}", std::process::id() % 10_000_000);
        let tap: File = sys::tap_open(&tmp)
            .map_err(|e| os("create TAP device", &e))?
            .into();
        // From here on an error drops `tap`, which removes the netdev wherever it is.
        let ns = setup.netns.as_str();
        let name = setup.ifname.as_str();
        ip(
            "move TAP into netns",
            &["link", "set", "dev", &tmp, "netns", ns],
        )?;
        let mac = fmt_mac(setup.kernel_mac);
        let rename = [
            "-n", ns, "link", "set", "dev", &tmp, "name", name, "address", &mac,
        ];
        // The previous device of this name may still be closing (its last fd reference can
        // sit in a child between fork and exec for a moment): retry briefly.
        for attempt in 1..=RENAME_TRIES {
            match run_ip(&rename) {
                Ok(()) => break,
                Err(_) if attempt < RENAME_TRIES => std::thread::sleep(RENAME_PAUSE),
                Err(_) => ip("name TAP in netns", &rename)?,
            }
        }
        ip(
            "bring TAP up",
            &["-n", ns, "link", "set", "dev", name, "up"],
        )?;
        match &setup.role {
            Role::ClientEth0 {
                ip: a,
                ip6,
                gateway,
                gateway6,
            } => {
                let a = format!("{a}/32");
                let gw = gateway.to_string();
                ip(
                    "add client address",
                    &["-n", ns, "addr", "add", &a, "dev", name],
                )?;
                ip(
                    "add gateway route",
                    &["-n", ns, "route", "add", &gw, "dev", name],
                )?;
                ip(
                    "add default route",
                    &["-n", ns, "route", "add", "default", "via", &gw, "dev", name],
                )?;
                if let Some(v6) = ip6 {
                    setup_client_ipv6(ns, name, *v6, *gateway6)?;
                }
            }
            Role::NetvmVif {
                ip: a,
                ip6,
                gateway,
                gateway6,
            } => {
                let a = format!("{a}/32");
                let gw = format!("{gateway}/32");
                ip(
                    "add client route",
                    &["-n", ns, "route", "add", &a, "dev", name],
                )?;
                sysctl_in(ns, &format!("net/ipv4/conf/{name}/proxy_arp"), "1")?;
                ip(
                    "add gateway address",
                    &["-n", ns, "addr", "add", &gw, "dev", name],
                )?;
                if let Some(v6) = ip6 {
                    setup_netvm_ipv6(ns, name, *v6, *gateway6)?;
                }
            }
        }
        let pseudo = events.register_fd(tap.as_fd())?;
        Ok(Self {
            tap,
            pseudo,
            setup,
            created_as: tmp,
            dead: false,
            oversized: 0,
            buf: vec![0; MAX_READ],
        })
    }

    /// What this device set up (namespace, interface name, addresses).
    pub fn setup(&self) -> &TapSetup {
        &self.setup
    }

    /// The name the TAP had in our namespace before it moved (`qh<pid>t<n>`).
    pub fn created_as(&self) -> &str {
        &self.created_as
    }

    /// Frames dropped because they did not fit the caller's buffer.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    fn gone(e: &io::Error) -> bool {
        // EBADFD: the netdev was deleted (or its namespace died) under our fd.
        matches!(e.raw_os_error(), Some(libc::EBADFD) | Some(libc::ENODEV))
    }
}

impl NetDevice for HostedNet {
    fn mac(&self) -> [u8; 6] {
        self.setup.our_mac
    }

    fn mtu(&self) -> usize {
        MTU
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        if self.dead {
            return Ok(None);
        }
        loop {
            match self.tap.read(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(n) => match (buf.get_mut(..n), self.buf.get(..n)) {
                    (Some(dst), Some(src)) => {
                        dst.copy_from_slice(src);
                        return Ok(Some(n));
                    }
                    _ => self.oversized += 1,
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if Self::gone(&e) => {
                    self.dead = true;
                    return Ok(None);
                }
                Err(e) => return Err(os("read TAP", &e)),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> Result<bool, PlatformError> {
        if frame.len() < ETH_HLEN || frame.len() > MTU + ETH_HLEN {
            return Err(PlatformError::OutOfBounds(OutOfBounds {
                offset: 0,
                len: frame.len(),
                size: MTU + ETH_HLEN,
            }));
        }
        if self.dead {
            // Like a cable pulled: the frame is lost, `is_up` tells the owner.
            return Ok(true);
        }
        loop {
            match self.tap.write(frame) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if Self::gone(&e) => {
                    self.dead = true;
                    return Ok(true);
                }
                // The netdev is down in the namespace: the frame is dropped, as on a wire.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(true),
                Err(e) => return Err(os("write TAP", &e)),
            }
        }
    }

    fn port(&self) -> EvtchnPort {
        self.pseudo.port()
    }

    fn is_up(&self) -> bool {
        !self.dead && Path::new(NETNS_DIR).join(&self.setup.netns).exists()
    }
}

#[cfg(test)]
mod tests;
