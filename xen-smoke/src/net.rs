//! The echo responder on any [`NetDevice`]: platform-xen's netfront (our link to dom0) and its
//! netback (serving a Linux domU's netfront), answering ARP, ICMP echo and UDP echo.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use platform_api::NetDevice;
use platform_xen::println;

use crate::echo::{respond, Reply};

/// Largest frame we handle.
const MAX_FRAME: usize = 1536;

/// One link and what was answered on it.
pub struct Link<N: NetDevice> {
    /// The device.
    pub dev: N,
    name: &'static str,
    ip: [u8; 4],
    frame: Vec<u8>,
    reply: Vec<u8>,
    /// Answers sent, by kind: ARP, ping, UDP.
    pub answered: [u64; 3],
    /// Frames not answered, replies refused for a full ring.
    pub ignored: [u64; 2],
}

/// The first bytes of a frame in hex, for the console.
fn hex_head(frame: &[u8]) -> String {
    frame.iter().take(64).map(|b| format!("{b:02x}")).collect()
}

/// `a.b.c.d` from the command line's `<key>=` word.
pub fn parse_ip(cmdline: &str, key: &str) -> Option<[u8; 4]> {
    let v = cmdline
        .split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
    let mut ip = [0u8; 4];
    let mut parts = v.split('.');
    for b in ip.iter_mut() {
        *b = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(ip)
}

/// `xx:xx:..` for the console.
pub fn mac_text(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

impl<N: NetDevice> Link<N> {
    /// A responder for `ip` on `dev`.
    pub fn new(dev: N, name: &'static str, ip: [u8; 4]) -> Self {
        Self {
            dev,
            name,
            ip,
            frame: vec![0; MAX_FRAME],
            reply: Vec::with_capacity(MAX_FRAME),
            answered: [0; 3],
            ignored: [0; 2],
        }
    }

    /// Answers every frame waiting; `Err` when the device broke.
    pub fn serve(&mut self) -> Result<(), String> {
        let mac = self.dev.mac();
        while let Some(len) = self.dev.recv(&mut self.frame).map_err(|e| format!("{e}"))? {
            let frame = self.frame.get(..len).unwrap_or(&[]);
            let Some(kind) = respond(frame, mac, self.ip, &mut self.reply) else {
                self.ignored[0] += 1;
                if self.ignored[0] <= 3 {
                    println!(
                        "xen-smoke: {} unanswered frame len={len} {}",
                        self.name,
                        hex_head(frame)
                    );
                }
                continue;
            };
            if !self.dev.send(&self.reply).map_err(|e| format!("{e}"))? {
                self.ignored[1] += 1;
                continue;
            }
            let slot = match kind {
                Reply::Arp => 0,
                Reply::Ping => 1,
                Reply::Udp => 2,
            };
            if self.answered[slot] == 0 {
                println!(
                    "xen-smoke: {} first {kind:?} in={} out={}",
                    self.name,
                    hex_head(frame),
                    hex_head(&self.reply)
                );
            }
            self.answered[slot] += 1;
        }
        Ok(())
    }

    /// One summary line.
    pub fn summary(&self) {
        let [arp, ping, udp] = self.answered;
        let [other, full] = self.ignored;
        println!(
            "xen-smoke: {} answered arp={arp} ping={ping} udp={udp}; unanswered={other} tx-full={full}",
            self.name
        );
    }
}
