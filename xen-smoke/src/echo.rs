//! The smallest responder the netfront check needs: ARP replies for our address, ICMP echo
//! replies and UDP echo (port 7), built from the request in place. No IP stack.
#![forbid(unsafe_code)]
#![cfg_attr(not(xen_image), allow(dead_code))]

use alloc::vec::Vec;

/// The UDP port echoed.
pub const ECHO_PORT: u16 = 7;

/// What a frame was answered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// An ARP request for our address.
    Arp,
    /// An ICMP echo request.
    Ping,
    /// A UDP datagram to [`ECHO_PORT`].
    Udp,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        sum += hi | pair.get(1).map_or(0, |&lo| u32::from(lo));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The UDP checksum of `udp` (header with a zero checksum field, and data) from `src` to `dst`;
/// 0 comes out as 0xffff, since 0 means "no checksum".
pub fn udp_checksum(src: &[u8], dst: &[u8], udp: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + udp.len());
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(udp);
    match inet_checksum(&pseudo) {
        0 => 0xffff,
        c => c,
    }
}

/// Builds the answer to `frame` into `out` (cleared first); `None` when the frame is not
/// for us, malformed, or not something we answer. Lengths come from the frame and are checked
/// against it before use.
pub fn respond(frame: &[u8], mac: [u8; 6], ip: [u8; 4], out: &mut Vec<u8>) -> Option<Reply> {
    out.clear();
    let ethertype = be16(frame, 12)?;
    let src_mac = frame.get(6..12)?;
    match ethertype {
        0x0806 => {
            let arp = frame.get(14..42)?;
            // Ethernet/IPv4 request for our address.
            if arp[..8] != [0, 1, 8, 0, 6, 4, 0, 1] || arp[24..28] != ip {
                return None;
            }
            out.extend_from_slice(src_mac);
            out.extend_from_slice(&mac);
            out.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
            out.extend_from_slice(&mac);
            out.extend_from_slice(&ip);
            out.extend_from_slice(&arp[8..18]);
            Some(Reply::Arp)
        }
        0x0800 => {
            let ip_hdr = frame.get(14..34)?;
            let ihl = usize::from(ip_hdr[0] & 0x0f) * 4;
            let total = usize::from(be16(ip_hdr, 2)?);
            if ip_hdr[0] >> 4 != 4 || ihl < 20 || total < ihl || ip_hdr[16..20] != ip {
                return None;
            }
            // Fragments are not reassembled: only whole datagrams are answered.
            if be16(ip_hdr, 6)? & 0x3fff != 0 {
                return None;
            }
            let packet = frame.get(14..14 + total)?;
            let proto = packet[9];
            let payload = packet.get(ihl..)?;
            let kind = match proto {
                1 if payload.first() == Some(&8) && payload.len() >= 8 => Reply::Ping,
                17 if payload.len() >= 8
                    && be16(payload, 2)? == ECHO_PORT
                    && usize::from(be16(payload, 4)?) == payload.len() =>
                {
                    Reply::Udp
                }
                _ => return None,
            };
            out.extend_from_slice(src_mac);
            out.extend_from_slice(&mac);
            out.extend_from_slice(&[0x08, 0x00]);
            // IP header: source and destination swapped (the header checksum is unchanged:
            // the one's-complement sum does not depend on word order).
            out.extend_from_slice(&packet[..12]);
            out.extend_from_slice(&packet[16..20]);
            out.extend_from_slice(&packet[12..16]);
            out.extend_from_slice(&packet[20..ihl]);
            let l4 = out.len();
            match kind {
                Reply::Ping => {
                    out.extend_from_slice(payload);
                    out[l4] = 0;
                    out[l4 + 2] = 0;
                    out[l4 + 3] = 0;
                    let c = inet_checksum(&out[l4..]);
                    out[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
                }
                _ => {
                    out.extend_from_slice(&payload[2..4]);
                    out.extend_from_slice(&payload[0..2]);
                    out.extend_from_slice(&payload[4..6]);
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&payload[8..]);
                    // A full checksum over the pseudo-header (the request's may be a partial
                    // offload sum, and a zero one was not accepted by the lab's dom0).
                    let c = udp_checksum(&ip, &packet[12..16], &out[l4..]);
                    out[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
                }
            }
            Some(kind)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 2];
    const IP: [u8; 4] = [10, 137, 99, 2];
    const PEER_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];
    const PEER_IP: [u8; 4] = [10, 137, 99, 1];

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![];
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[8, 0]);
        let total = (20 + l4.len()) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&PEER_IP);
        h.extend_from_slice(&IP);
        let c = inet_checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&h);
        f.extend_from_slice(l4);
        f
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is 0xddf2, complemented.
        assert_eq!(
            inet_checksum(&[0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn arp_request_for_us_is_answered() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&PEER_IP);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&IP);
        let mut out = vec![];
        assert_eq!(respond(&f, MAC, IP, &mut out), Some(Reply::Arp));
        assert_eq!(out[..6], PEER_MAC);
        assert_eq!(out[20..22], [0, 2], "op = reply");
        assert_eq!(out[22..28], MAC);
        assert_eq!(out[28..32], IP);
        assert_eq!(out[32..38], PEER_MAC);
        assert_eq!(out[38..42], PEER_IP);
        let mut other = f.clone();
        other[41] = 3;
        assert_eq!(respond(&other, MAC, IP, &mut out), None, "not our address");
    }

    #[test]
    fn ping_reply_has_valid_checksums() {
        let mut icmp = vec![8, 0, 0, 0, 0, 1, 0, 7, b'h', b'i', b'!'];
        let c = inet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let f = ipv4(1, &icmp);
        let mut out = vec![];
        assert_eq!(respond(&f, MAC, IP, &mut out), Some(Reply::Ping));
        assert_eq!(out.len(), f.len());
        assert_eq!(
            inet_checksum(&out[14..34]),
            0,
            "IP header checksum still valid"
        );
        assert_eq!(inet_checksum(&out[34..]), 0, "ICMP checksum valid");
        assert_eq!(out[34], 0, "echo reply");
        assert_eq!(out[26..30], IP);
        assert_eq!(out[30..34], PEER_IP);
        assert_eq!(out[38..], icmp[4..], "id, seq and data echoed");
    }

    #[test]
    fn udp_echo_swaps_ports_and_keeps_data() {
        let udp = [0x9c, 0x40, 0, 7, 0, 12, 0xab, 0xcd, 1, 2, 3, 4];
        let f = ipv4(17, &udp);
        let mut out = vec![];
        assert_eq!(respond(&f, MAC, IP, &mut out), Some(Reply::Udp));
        assert_eq!(out[34..40], [0, 7, 0x9c, 0x40, 0, 12]);
        assert_eq!(out[42..], [1, 2, 3, 4]);
        let mut pseudo = vec![];
        pseudo.extend_from_slice(&out[26..34]);
        pseudo.extend_from_slice(&[0, 17, 0, 12]);
        pseudo.extend_from_slice(&out[34..]);
        assert_eq!(inet_checksum(&pseudo), 0, "UDP checksum verifies");
        assert_ne!(out[40..42], [0, 0]);
    }

    #[test]
    fn hostile_frames_never_panic_and_get_no_answer() {
        let mut out = vec![];
        let udp = [0x9c, 0x40, 0, 7, 0, 12, 0xab, 0xcd, 1, 2, 3, 4];
        let good = ipv4(17, &udp);
        for cut in 0..good.len() {
            assert_eq!(
                respond(&good[..cut], MAC, IP, &mut out),
                None,
                "truncated at {cut}"
            );
        }
        let mut lying = good.clone();
        lying[16..18].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(
            respond(&lying, MAC, IP, &mut out),
            None,
            "IP total length past the frame"
        );
        let mut bad_ihl = good.clone();
        bad_ihl[14] = 0x4f;
        assert_eq!(
            respond(&bad_ihl, MAC, IP, &mut out),
            None,
            "IHL past the datagram"
        );
        let mut frag = good;
        frag[20] = 0x20;
        assert_eq!(respond(&frag, MAC, IP, &mut out), None, "fragment");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_frames_never_panic(frame in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut out = vec![];
            let _ = respond(&frame, MAC, IP, &mut out);
        }
    }
}
