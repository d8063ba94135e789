//! Ethernet frame helpers for the net drivers: MAC addresses as xenstore writes them, and the
//! IPv4 TCP/UDP checksum a netfront leaves blank (`NETTXF_csum_blank`) filled in.
#![forbid(unsafe_code)]

/// `xx:xx:xx:xx:xx:xx`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Why a blank checksum was left as it was (the frame is passed on unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumSkip {
    /// Not IPv4 TCP or UDP (netfront offloads only those without IPv6 offload negotiated).
    NotTcpUdpV4,
    /// A header or length field points outside the frame.
    Truncated,
}

/// Computes the TCP or UDP checksum of an IPv4 frame in place, from scratch (the field's
/// old contents, a partial sum for offloading, are ignored). Lengths come from the IP header
/// and are checked against the frame.
pub fn fill_l4_checksum(frame: &mut [u8]) -> Result<(), CsumSkip> {
    if frame.get(12..14) != Some(&[0x08, 0x00][..]) {
        return Err(CsumSkip::NotTcpUdpV4);
    }
    let ip = frame.get(14..).ok_or(CsumSkip::Truncated)?;
    let vihl = *ip.first().ok_or(CsumSkip::Truncated)?;
    if vihl >> 4 != 4 {
        return Err(CsumSkip::NotTcpUdpV4);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([
        *ip.get(2).ok_or(CsumSkip::Truncated)?,
        *ip.get(3).ok_or(CsumSkip::Truncated)?,
    ]));
    if ihl < 20 || total < ihl || total > ip.len() {
        return Err(CsumSkip::Truncated);
    }
    let proto = ip[9];
    let field = match proto {
        6 => 16,
        17 => 6,
        _ => return Err(CsumSkip::NotTcpUdpV4),
    };
    let l4_len = total - ihl;
    if l4_len < field + 2 {
        return Err(CsumSkip::Truncated);
    }
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&ip[12..20]);
    pseudo[9] = proto;
    pseudo[10..].copy_from_slice(&(l4_len as u16).to_be_bytes());
    let l4 = frame
        .get_mut(14 + ihl..14 + total)
        .ok_or(CsumSkip::Truncated)?;
    l4[field] = 0;
    l4[field + 1] = 0;
    let mut c = fold(sum16(l4, sum16(&pseudo, 0)));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    l4[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_exactly_six_pairs() {
        assert_eq!(
            parse_mac("00:16:3e:5a:00:02\n"),
            Some([0, 0x16, 0x3e, 0x5a, 0, 2])
        );
        assert_eq!(parse_mac("00:16:3e:5a:00"), None);
        assert_eq!(parse_mac("00:16:3e:5a:00:02:03"), None);
        assert_eq!(parse_mac("0:16:3e:5a:00:02"), None);
        assert_eq!(parse_mac("zz:16:3e:5a:00:02"), None);
    }

    /// A UDP datagram 10.0.0.1:1234 -> 10.0.0.2:7 carrying "hi", checksum worked out by hand:
    /// pseudo 0a00+0001+0a00+0002+0011+000a = 0x141e; UDP 04d2+0007+000a+6869 = 0x6d4c;
    /// sum 0x816a, complement 0x7e95.
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 8;
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x04, 0xd2, 0, 7, 0, 10, 0xab, 0xcd, b'h', b'i']);
        f
    }

    #[test]
    fn udp_checksum_filled_from_scratch() {
        let mut f = udp_frame();
        fill_l4_checksum(&mut f).unwrap();
        assert_eq!(&f[40..42], &[0x7e, 0x95]);
    }

    #[test]
    fn hostile_lengths_refused_not_panicking() {
        let mut f = udp_frame();
        f[17] = 200; // IP total length past the frame
        assert_eq!(fill_l4_checksum(&mut f), Err(CsumSkip::Truncated));
        let mut f = udp_frame();
        f[14] = 0x41; // IHL 4 bytes
        assert_eq!(fill_l4_checksum(&mut f), Err(CsumSkip::Truncated));
        let mut f = udp_frame();
        f.truncate(20);
        assert_eq!(fill_l4_checksum(&mut f), Err(CsumSkip::Truncated));
        let mut f = udp_frame();
        f[23] = 1; // ICMP
        assert_eq!(fill_l4_checksum(&mut f), Err(CsumSkip::NotTcpUdpV4));
        assert_eq!(fill_l4_checksum(&mut []), Err(CsumSkip::NotTcpUdpV4));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(mut f in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = fill_l4_checksum(&mut f);
        }
    }
}
