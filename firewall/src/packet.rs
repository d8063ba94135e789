//! Ethernet frames -> [`Parsed`] (ARP, IPv4/IPv6 with TCP, UDP, ICMP) and in-place rewrites for NAT
//! and local replies, on smoltcp wire views; every offset kept in `Parsed` was checked by the parser.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{
    checksum, EthernetFrame, Icmpv6Packet, IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

/// Our MAC on every client link (firewall-netvm.md §3).
pub const GATEWAY_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

const ETH_LEN: usize = 14;
const ETH_ARP: u16 = 0x0806;
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const IP_TCP: u8 = 6;
const IP_UDP: u8 = 17;
const IP_ICMP: u8 = 1;
const IP_ICMPV6: u8 = 58;

/// The transport protocols that NAT and connection tracking follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    Tcp,
    Udp,
    /// ICMP / ICMPv6 echo; the identifier sits in `sport` (request) or `dport` (reply).
    Echo,
}

/// One direction of a flow as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub proto: L4,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl FlowKey {
    /// The same flow seen from the other end.
    pub fn reverse(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// The packet an ICMP error quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub key: FlowKey,
    /// Absolute offsets of the quoted IP header and its transport header.
    ip_off: usize,
    l4_off: usize,
}

/// What rides on IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Echo {
        request: bool,
        id: u16,
    },
    /// Destination unreachable, time exceeded, parameter problem (and packet too big for v6).
    IcmpError(Quoted),
    /// ICMPv6 neighbour discovery (types 133–137).
    Ndp {
        ty: u8,
    },
    IcmpOther {
        ty: u8,
    },
    Other {
        proto: u8,
    },
}

/// A parsed IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    l4_off: usize,
    l4_end: usize,
}

impl IpPacket {
    /// The flow key for TCP, UDP and echo.
    pub fn key(&self) -> Option<FlowKey> {
        let (proto, sport, dport) = match self.transport {
            Transport::Tcp { sport, dport } => (L4::Tcp, sport, dport),
            Transport::Udp { sport, dport } => (L4::Udp, sport, dport),
            Transport::Echo { request: true, id } => (L4::Echo, id, 0),
            Transport::Echo { request: false, id } => (L4::Echo, 0, id),
            _ => return None,
        };
        Some(FlowKey {
            proto,
            src: self.src,
            sport,
            dst: self.dst,
            dport,
        })
    }

    /// The ICMP type, for ICMP and ICMPv6 packets.
    pub fn icmp_type(&self) -> Option<u8> {
        let v4 = self.src.is_ipv4();
        match self.transport {
            Transport::Echo { request, .. } => Some(match (v4, request) {
                (true, true) => 8,
                (true, false) => 0,
                (false, true) => 128,
                (false, false) => 129,
            }),
            Transport::IcmpOther { ty } | Transport::Ndp { ty } => Some(ty),
            Transport::IcmpError(_) => None,
            _ => None,
        }
    }

    /// The transport payload (the bytes after the TCP/UDP header are not separated out).
    pub fn l4_range(&self) -> core::ops::Range<usize> {
        self.l4_off..self.l4_end
    }
}

/// An ARP packet (Ethernet/IPv4 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub request: bool,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// A parsed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    Arp(Arp),
    Ip(IpPacket),
}

/// Why a frame was not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    Ethernet,
    EtherType(u16),
    Arp,
    Ipv4Header,
    Ipv4Checksum,
    /// IPv4 fragments are not reassembled.
    Fragment,
    Ipv6Header,
    /// IPv6 extension headers are not followed.
    Ipv6Extension(u8),
    Transport,
    QuotedPacket,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Ethernet => f.write_str("short Ethernet frame"),
            WireError::EtherType(t) => write!(f, "unsupported ethertype {t:#06x}"),
            WireError::Arp => f.write_str("malformed or non-IPv4 ARP"),
            WireError::Ipv4Header => f.write_str("malformed IPv4 header"),
            WireError::Ipv4Checksum => f.write_str("bad IPv4 header checksum"),
            WireError::Fragment => f.write_str("IPv4 fragment"),
            WireError::Ipv6Header => f.write_str("malformed IPv6 header"),
            WireError::Ipv6Extension(n) => write!(f, "IPv6 extension header {n}"),
            WireError::Transport => f.write_str("malformed transport header"),
            WireError::QuotedPacket => f.write_str("malformed packet quoted in ICMP error"),
        }
    }
}

impl core::error::Error for WireError {}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn ip4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(s))
}

fn ip6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let s: [u8; 16] = b.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(Ipv6Addr::from(s))
}

/// Parses an Ethernet frame.
pub fn parse(frame: &[u8]) -> Result<Parsed, WireError> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| WireError::Ethernet)?;
    let ethertype = u16::from(eth.ethertype());
    match ethertype {
        ETH_ARP => parse_arp(eth.payload()).map(Parsed::Arp),
        ETH_IPV4 => parse_ipv4(frame).map(Parsed::Ip),
        ETH_IPV6 => parse_ipv6(frame).map(Parsed::Ip),
        t => Err(WireError::EtherType(t)),
    }
}

fn parse_arp(p: &[u8]) -> Result<Arp, WireError> {
    // htype 1, ptype IPv4, hlen 6, plen 4.
    if p.get(..6) != Some(&[0, 1, 8, 0, 6, 4][..]) {
        return Err(WireError::Arp);
    }
    let request = match be16(p, 6) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err(WireError::Arp),
    };
    Ok(Arp {
        request,
        sender_ip: ip4_at(p, 14).ok_or(WireError::Arp)?,
        target_ip: ip4_at(p, 24).ok_or(WireError::Arp)?,
    })
}

fn parse_ipv4(frame: &[u8]) -> Result<IpPacket, WireError> {
    let body = frame.get(ETH_LEN..).ok_or(WireError::Ethernet)?;
    let ip = Ipv4Packet::new_checked(body).map_err(|_| WireError::Ipv4Header)?;
    if ip.version() != 4 {
        return Err(WireError::Ipv4Header);
    }
    if !ip.verify_checksum() {
        return Err(WireError::Ipv4Checksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(WireError::Fragment);
    }
    let l4_off = ETH_LEN + usize::from(ip.header_len());
    let l4_end = ETH_LEN + usize::from(ip.total_len());
    let src = IpAddr::V4(ip.src_addr());
    let dst = IpAddr::V4(ip.dst_addr());
    let seg = frame.get(l4_off..l4_end).ok_or(WireError::Ipv4Header)?;
    let transport = parse_transport(u8::from(ip.next_header()), seg, l4_off, false)?;
    Ok(IpPacket {
        src,
        dst,
        transport,
        l4_off,
        l4_end,
    })
}

fn parse_ipv6(frame: &[u8]) -> Result<IpPacket, WireError> {
    let body = frame.get(ETH_LEN..).ok_or(WireError::Ethernet)?;
    let ip = Ipv6Packet::new_checked(body).map_err(|_| WireError::Ipv6Header)?;
    if ip.version() != 6 {
        return Err(WireError::Ipv6Header);
    }
    let l4_off = ETH_LEN + 40;
    let l4_end = l4_off + usize::from(ip.payload_len());
    let next = u8::from(ip.next_header());
    if !matches!(next, IP_TCP | IP_UDP | IP_ICMPV6 | 59) && is_v6_extension(next) {
        return Err(WireError::Ipv6Extension(next));
    }
    let seg = frame.get(l4_off..l4_end).ok_or(WireError::Ipv6Header)?;
    let transport = parse_transport(next, seg, l4_off, true)?;
    Ok(IpPacket {
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        transport,
        l4_off,
        l4_end,
    })
}

fn is_v6_extension(n: u8) -> bool {
    matches!(n, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

fn parse_transport(proto: u8, seg: &[u8], off: usize, v6: bool) -> Result<Transport, WireError> {
    Ok(match (proto, v6) {
        (IP_TCP, _) => {
            let t = TcpPacket::new_checked(seg).map_err(|_| WireError::Transport)?;
            Transport::Tcp {
                sport: t.src_port(),
                dport: t.dst_port(),
            }
        }
        (IP_UDP, _) => {
            let u = UdpPacket::new_checked(seg).map_err(|_| WireError::Transport)?;
            Transport::Udp {
                sport: u.src_port(),
                dport: u.dst_port(),
            }
        }
        (IP_ICMP, false) | (IP_ICMPV6, true) => {
            if seg.len() < 8 {
                return Err(WireError::Transport);
            }
            let ty = seg.first().copied().unwrap_or(0);
            let id = be16(seg, 4).unwrap_or(0);
            match (ty, v6) {
                (8, false) | (128, true) => Transport::Echo { request: true, id },
                (0, false) | (129, true) => Transport::Echo { request: false, id },
                (3 | 11 | 12, false) | (1..=4, true) => {
                    Transport::IcmpError(parse_quoted(seg, off + 8, v6)?)
                }
                (133..=137, true) => Transport::Ndp { ty },
                _ => Transport::IcmpOther { ty },
            }
        }
        (p, _) => Transport::Other { proto: p },
    })
}

/// Parses the packet an ICMP error quotes (`seg[8..]`, absolute offset `ip_off`); only its
/// addresses and the first 8 transport bytes are needed.
fn parse_quoted(seg: &[u8], ip_off: usize, v6: bool) -> Result<Quoted, WireError> {
    let q = seg.get(8..).ok_or(WireError::QuotedPacket)?;
    let bad = WireError::QuotedPacket;
    let (src, dst, proto, hl) = if v6 {
        if q.first().map(|b| b >> 4) != Some(6) {
            return Err(bad);
        }
        let (s, d) = (ip6_at(q, 8).ok_or(bad)?, ip6_at(q, 24).ok_or(bad)?);
        (IpAddr::V6(s), IpAddr::V6(d), *q.get(6).ok_or(bad)?, 40)
    } else {
        let b0 = *q.first().ok_or(bad)?;
        let hl = usize::from(b0 & 0x0f) * 4;
        if b0 >> 4 != 4 || hl < 20 {
            return Err(bad);
        }
        let (s, d) = (ip4_at(q, 12).ok_or(bad)?, ip4_at(q, 16).ok_or(bad)?);
        (IpAddr::V4(s), IpAddr::V4(d), *q.get(9).ok_or(bad)?, hl)
    };
    let l4 = q.get(hl..hl + 8).ok_or(bad)?;
    let (a, b) = (be16(l4, 0).ok_or(bad)?, be16(l4, 2).ok_or(bad)?);
    let id = be16(l4, 4).ok_or(bad)?;
    let (l4p, sport, dport) = match (proto, v6, l4.first()) {
        (IP_TCP, _, _) => (L4::Tcp, a, b),
        (IP_UDP, _, _) => (L4::Udp, a, b),
        (IP_ICMP, false, Some(8)) | (IP_ICMPV6, true, Some(128)) => (L4::Echo, id, 0),
        (IP_ICMP, false, Some(0)) | (IP_ICMPV6, true, Some(129)) => (L4::Echo, 0, id),
        _ => return Err(bad),
    };
    Ok(Quoted {
        key: FlowKey {
            proto: l4p,
            src,
            sport,
            dst,
            dport,
        },
        ip_off,
        l4_off: ip_off + hl,
    })
}

fn set_ip(frame: &mut [u8], src: IpAddr, dst: IpAddr) -> Option<()> {
    let body = frame.get_mut(ETH_LEN..)?;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = Ipv4Packet::new_checked(body).ok()?;
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            ip.fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = Ipv6Packet::new_checked(body).ok()?;
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
        }
        _ => return None,
    }
    Some(())
}

/// Recomputes the transport checksum (needed anyway: netfront may hand us a blank checksum).
fn fill_l4_checksum(frame: &mut [u8], p: &IpPacket, src: IpAddr, dst: IpAddr) -> Option<()> {
    let seg = frame.get_mut(p.l4_off..p.l4_end)?;
    let (s, d) = (IpAddress::from(src), IpAddress::from(dst));
    match p.transport {
        Transport::Tcp { .. } => TcpPacket::new_checked(seg).ok()?.fill_checksum(&s, &d),
        Transport::Udp { .. } => UdpPacket::new_checked(seg).ok()?.fill_checksum(&s, &d),
        _ => fill_icmp_checksum(seg, src, dst)?,
    }
    Some(())
}

fn fill_icmp_checksum(seg: &mut [u8], src: IpAddr, dst: IpAddr) -> Option<()> {
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            Icmpv6Packet::new_checked(seg).ok()?.fill_checksum(&s, &d)
        }
        _ => {
            seg.get_mut(2..4)?.copy_from_slice(&[0, 0]);
            let c = !checksum::data(seg);
            seg.get_mut(2..4)?.copy_from_slice(&c.to_be_bytes());
        }
    }
    Some(())
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

fn put_ip(b: &mut [u8], at: usize, ip: IpAddr) -> Option<()> {
    match ip {
        IpAddr::V4(a) => b.get_mut(at..at + 4)?.copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b.get_mut(at..at + 16)?.copy_from_slice(&a.octets()),
    }
    Some(())
}

/// Rewrites addresses and ports (echo: identifier) of a TCP/UDP/echo packet to `to`, fixing checksums.
/// Returns `None` only if `p` was not parsed from this frame.
pub fn rewrite(frame: &mut [u8], p: &IpPacket, to: &FlowKey) -> Option<()> {
    set_ip(frame, to.src, to.dst)?;
    let seg = frame.get_mut(p.l4_off..p.l4_end)?;
    match p.transport {
        Transport::Tcp { .. } | Transport::Udp { .. } => {
            put16(seg, 0, to.sport)?;
            put16(seg, 2, to.dport)?;
        }
        Transport::Echo { request, .. } => {
            put16(seg, 4, if request { to.sport } else { to.dport })?
        }
        _ => return None,
    }
    fill_l4_checksum(frame, p, to.src, to.dst)
}

/// Rewrites an ICMP error: the outer addresses to `src`/`dst` and the quoted packet to `quoted`.
/// The quoted transport checksum is left as is (it covers bytes the error does not carry).
pub fn rewrite_icmp_error(
    frame: &mut [u8],
    p: &IpPacket,
    src: IpAddr,
    dst: IpAddr,
    quoted: &FlowKey,
) -> Option<()> {
    let Transport::IcmpError(q) = p.transport else {
        return None;
    };
    set_ip(frame, src, dst)?;
    let inner = frame.get_mut(q.ip_off..p.l4_end)?;
    let v6 = quoted.src.is_ipv6();
    let (s_at, d_at) = if v6 { (8, 24) } else { (12, 16) };
    put_ip(inner, s_at, quoted.src)?;
    put_ip(inner, d_at, quoted.dst)?;
    if !v6 {
        let hl = q.l4_off - q.ip_off;
        put16(inner, 10, 0)?;
        let c = !checksum::data(inner.get(..hl)?);
        put16(inner, 10, c)?;
    }
    let l4 = frame.get_mut(q.l4_off..p.l4_end)?;
    match quoted.proto {
        L4::Tcp | L4::Udp => {
            put16(l4, 0, quoted.sport)?;
            put16(l4, 2, quoted.dport)?;
        }
        L4::Echo => put16(l4, 4, quoted.sport | quoted.dport)?,
    }
    let seg = frame.get_mut(p.l4_off..p.l4_end)?;
    fill_icmp_checksum(seg, src, dst)
}

fn swap_macs(frame: &mut [u8], mac: [u8; 6]) -> Option<()> {
    let mut eth = EthernetFrame::new_checked(frame).ok()?;
    let from = eth.src_addr();
    eth.set_dst_addr(from);
    eth.set_src_addr(smoltcp::wire::EthernetAddress(mac));
    Some(())
}

/// Sets a frame's Ethernet destination and source.
pub fn set_macs(frame: &mut [u8], dst: [u8; 6], src: [u8; 6]) -> Option<()> {
    frame.get_mut(..6)?.copy_from_slice(&dst);
    frame.get_mut(6..12)?.copy_from_slice(&src);
    Some(())
}

/// The sender hardware address of a parsed ARP frame.
pub fn arp_sender_mac(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(ETH_LEN + 8..ETH_LEN + 14)?.try_into().ok()
}

/// Turns an ARP request into our reply (`GATEWAY_MAC` owns `target_ip`).
pub fn make_arp_reply(frame: &mut [u8], arp: &Arp) -> Option<()> {
    make_arp_reply_from(frame, arp, GATEWAY_MAC)
}

/// Turns an ARP request into our reply: `mac` owns `target_ip`.
pub fn make_arp_reply_from(frame: &mut [u8], arp: &Arp, mac: [u8; 6]) -> Option<()> {
    let p = frame.get_mut(ETH_LEN..ETH_LEN + 28)?;
    let sender_mac: [u8; 6] = p.get(8..14)?.try_into().ok()?;
    put16(p, 6, 2)?;
    p.get_mut(8..14)?.copy_from_slice(&mac);
    put_ip(p, 14, IpAddr::V4(arp.target_ip))?;
    p.get_mut(18..24)?.copy_from_slice(&sender_mac);
    put_ip(p, 24, IpAddr::V4(arp.sender_ip))?;
    swap_macs(frame, mac)
}

/// Builds a broadcast ARP request from `mac`/`sender` for `target` into `out` (42 bytes).
pub fn make_arp_request(
    out: &mut [u8],
    mac: [u8; 6],
    sender: Ipv4Addr,
    target: Ipv4Addr,
) -> Result<usize, BufferTooSmall> {
    let out = out.get_mut(..ETH_LEN + 28).ok_or(BufferTooSmall {
        needed: ETH_LEN + 28,
    })?;
    out.fill(0);
    out[..6].copy_from_slice(&[0xff; 6]);
    out[6..12].copy_from_slice(&mac);
    out[12..14].copy_from_slice(&ETH_ARP.to_be_bytes());
    out[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    out[22..28].copy_from_slice(&mac);
    out[28..32].copy_from_slice(&sender.octets());
    out[38..42].copy_from_slice(&target.octets());
    Ok(ETH_LEN + 28)
}

/// Turns an echo request to us into the echo reply, in place.
pub fn make_echo_reply(frame: &mut [u8], p: &IpPacket) -> Option<()> {
    let Transport::Echo { request: true, .. } = p.transport else {
        return None;
    };
    set_ip(frame, p.dst, p.src)?;
    let seg = frame.get_mut(p.l4_off..p.l4_end)?;
    *seg.first_mut()? = if p.src.is_ipv4() { 0 } else { 129 };
    fill_icmp_checksum(seg, p.dst, p.src)?;
    swap_macs(frame, GATEWAY_MAC)
}

/// Turns a neighbour solicitation for `target` that carries a source link-layer option into our
/// advertisement, in place (RFC 4861 §7.2.4).
pub fn make_neighbour_advert(frame: &mut [u8], p: &IpPacket, target: Ipv6Addr) -> Option<()> {
    make_neighbour_advert_from(frame, p, target, GATEWAY_MAC)
}

/// As [`make_neighbour_advert`], with `mac` as the advertised link-layer address.
pub fn make_neighbour_advert_from(
    frame: &mut [u8],
    p: &IpPacket,
    target: Ipv6Addr,
    mac: [u8; 6],
) -> Option<()> {
    let IpAddr::V6(src) = p.src else { return None };
    let seg = frame.get(p.l4_off..p.l4_end)?;
    if seg.first() != Some(&135) || ip6_at(seg, 8) != Some(target) {
        return None;
    }
    // Source link-layer option right after the target: type 1, length 1 (8 bytes).
    if seg.get(24..26) != Some(&[1, 1][..]) {
        return None;
    }
    let dst = if src.is_unspecified() {
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
    } else {
        src
    };
    set_ip(frame, IpAddr::V6(target), IpAddr::V6(dst))?;
    let seg = frame.get_mut(p.l4_off..p.l4_end)?;
    *seg.first_mut()? = 136;
    // Solicited + override.
    seg.get_mut(4..8)?.copy_from_slice(&[0x60, 0, 0, 0]);
    *seg.get_mut(24)? = 2;
    seg.get_mut(26..32)?.copy_from_slice(&mac);
    fill_icmp_checksum(seg, IpAddr::V6(target), IpAddr::V6(dst))?;
    swap_macs(frame, mac)
}

/// `out` cannot hold the frame to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    pub needed: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buffer too small: {} bytes needed", self.needed)
    }
}

impl core::error::Error for BufferTooSmall {}

/// Largest IPv6 packet an ICMPv6 error may make (RFC 4443 §2.4: the minimum MTU).
const MIN_MTU6: usize = 1280;

/// Builds in `out` the ICMP error refusing `p` (IPv4: host prohibited, type 3 code 10, as Linux
/// Qubes does; IPv6: administratively prohibited, type 1 code 1), sent from `from` back to the
/// sender with source MAC `GATEWAY_MAC`; returns the frame length (0 if `from` is of the other
/// family than `p`, as nothing sensible can be built).
pub fn make_reject(
    frame: &[u8],
    p: &IpPacket,
    from: IpAddr,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let v6 = p.src.is_ipv6();
    let (hl, quote_max) = if v6 {
        (40, MIN_MTU6 - 48)
    } else {
        (20, p.l4_off - ETH_LEN + 8)
    };
    let quote = frame
        .get(ETH_LEN..p.l4_end.min(ETH_LEN + quote_max))
        .unwrap_or(&[]);
    let icmp_len = 8 + quote.len();
    let needed = ETH_LEN + hl + icmp_len;
    let out = out.get_mut(..needed).ok_or(BufferTooSmall { needed })?;
    out.fill(0);
    out[..6].copy_from_slice(frame.get(6..12).unwrap_or(&[0; 6]));
    out[6..12].copy_from_slice(&GATEWAY_MAC);
    let (ip, icmp) = out[ETH_LEN..].split_at_mut(hl);
    icmp[8..].copy_from_slice(quote);
    match (from, p.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out[12..14].copy_from_slice(&ETH_IPV4.to_be_bytes());
            let ip = &mut out[ETH_LEN..ETH_LEN + hl];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((hl + icmp_len) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = IP_ICMP;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = !checksum::data(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let icmp = &mut out[ETH_LEN + hl..];
            icmp[0] = 3;
            icmp[1] = 10;
            let _ = fill_icmp_checksum(icmp, from, p.src);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
            ip[6] = IP_ICMPV6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            icmp[0] = 1;
            icmp[1] = 1;
            let _ = fill_icmp_checksum(icmp, from, p.src);
            out[12..14].copy_from_slice(&ETH_IPV6.to_be_bytes());
        }
        _ => return Ok(0),
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn eth(ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn v4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut h =
            alloc::vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        let c = !checksum::data(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(l4);
        eth(ETH_IPV4, &h)
    }

    fn v6(next: u8, l4: &[u8]) -> Vec<u8> {
        let mut h = alloc::vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&[0xfd; 32]);
        h.extend_from_slice(l4);
        eth(ETH_IPV6, &h)
    }

    #[test]
    fn hostile_frames_get_typed_errors() {
        let cases: &[(Vec<u8>, WireError)] = &[
            (alloc::vec![0; 13], WireError::Ethernet),
            (eth(0x88cc, &[0; 40]), WireError::EtherType(0x88cc)),
            (eth(ETH_ARP, &[0, 1, 8, 0, 6, 4, 0, 1]), WireError::Arp),
            (eth(ETH_ARP, &[0, 6, 8, 0, 6, 4, 0, 1]), WireError::Arp),
            (eth(ETH_IPV4, &[0x45, 0, 0, 200]), WireError::Ipv4Header),
            (v4(6, &[0; 10]), WireError::Transport),
            (v4(17, &[0, 1, 0, 2, 0, 99, 0, 0]), WireError::Transport),
            (v4(1, &[8, 0, 0]), WireError::Transport),
            (
                v4(1, &[3, 3, 0, 0, 0, 0, 0, 0, 0x45]),
                WireError::QuotedPacket,
            ),
            (eth(ETH_IPV6, &[0x60, 0, 0, 0, 0, 8]), WireError::Ipv6Header),
            (v6(0, &[0; 8]), WireError::Ipv6Extension(0)),
            (v6(44, &[0; 8]), WireError::Ipv6Extension(44)),
        ];
        for (frame, want) in cases {
            assert_eq!(parse(frame), Err(*want), "{frame:02x?}");
        }
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        // A 60-byte minimum frame: the UDP datagram ends at the IPv4 total length.
        let mut f = v4(17, &[0, 1, 0, 2, 0, 8, 0, 0]);
        f.resize(60, 0xee);
        let Ok(Parsed::Ip(p)) = parse(&f) else {
            panic!()
        };
        assert_eq!(p.l4_range(), 34..42);
        assert_eq!(p.key().map(|k| (k.sport, k.dport)), Some((1, 2)));
    }

    #[test]
    fn other_protocols_parse_but_have_no_key() {
        let Ok(Parsed::Ip(p)) = parse(&v4(47, &[0; 4])) else {
            panic!()
        };
        assert_eq!(p.transport, Transport::Other { proto: 47 });
        assert_eq!(p.key(), None);
        let Ok(Parsed::Ip(p)) = parse(&v6(58, &[135, 0, 0, 0, 0, 0, 0, 0])) else {
            panic!()
        };
        assert_eq!(p.transport, Transport::Ndp { ty: 135 });
    }
}
