//! Heap use of the router under hostile load, counted by the hosted allocation meter: a flood of
//! new flows from many clients fills the NAT table to its bound and memory stops growing there.

use std::net::{IpAddr, Ipv4Addr};

use firewall::router::{Link, Router, RouterLimits};
use firewall::rules::RuleSet;
use firewall::{ClientAddrs, ClientId, Firewall, Limits, NetConfig};
use platform_api::Instant;
use platform_hosted::alloc_meter::AllocMeter;

#[global_allocator]
static METER: AllocMeter = AllocMeter::new();

/// The image's memory (image.toml) less room for the run loop, QubesDB copy and the platform.
const BUDGET: usize = 8 * 1024 * 1024;

fn cfg() -> NetConfig {
    NetConfig {
        own_ip: Ipv4Addr::new(10, 138, 5, 9),
        uplink_gateway: Ipv4Addr::new(10, 138, 0, 1),
        upstream_dns: [Some(Ipv4Addr::new(10, 139, 1, 1)), None],
        own_ip6: None,
        uplink_gateway6: None,
        client_gateway: Ipv4Addr::new(10, 138, 5, 9),
        client_gateway6: None,
        client_dns: [Some(Ipv4Addr::new(10, 139, 1, 1)), None],
        connected: Vec::new(),
        mapped: Vec::new(),
    }
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 4];
    f[12..14].copy_from_slice(&[8, 0]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&32u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    let mut sum: u32 = f[14..34]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[38..40].copy_from_slice(&12u16.to_be_bytes());
    f
}

#[test]
fn flood_of_new_flows_stays_within_memory_bound() {
    const CLIENTS: u32 = 16;
    let ((), peak) = METER.peak_during(|| {
        let mut r = Router::new(
            Firewall::new(cfg(), Limits::DEFAULT, 7),
            [0, 0x16, 0x3e, 0x5e, 0x6c, 0x42],
            RouterLimits::DEFAULT,
        );
        for c in 0..CLIENTS {
            let ip = Ipv4Addr::new(10, 137, 0, 10 + c as u8);
            let a = ClientAddrs {
                ip4: Some(ip),
                ip6: None,
            };
            r.add_client(ClientId(c), a, [0, 0x16, 0x3e, 0x5e, 0x6c, 0])
                .unwrap();
            r.firewall_mut()
                .reload(Instant(0), IpAddr::V4(ip), RuleSet::accept_all());
        }
        let mut arp = vec![0xffu8; 6];
        arp.extend_from_slice(&[
            2, 0, 0, 0, 0, 1, 8, 6, 0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 1,
        ]);
        arp.extend_from_slice(&[10, 138, 0, 1, 0, 0, 0, 0, 0, 0, 10, 138, 5, 9]);
        let _ = r.handle(Instant(0), Link::Uplink, &mut arp);
        let mut at_bound = 0;
        for i in 0..200_000u32 {
            let c = i % CLIENTS;
            let src = Ipv4Addr::new(10, 137, 0, 10 + c as u8);
            let dst = Ipv4Addr::new(198, 51, (i >> 8) as u8, i as u8);
            let mut f = udp(src, 1024 + (i % 60000) as u16, dst, 53);
            let to = r.handle(Instant(u64::from(i)), Link::Client(ClientId(c)), &mut f);
            assert_eq!(to, Some(Link::Uplink));
            // Spoofed frames too, filling the drop logs.
            let mut s = udp(Ipv4Addr::new(10, 137, 9, 9), 1, dst, 53);
            let _ = r.handle(Instant(u64::from(i)), Link::Client(ClientId(c)), &mut s);
            assert!(r.firewall().nat().len() <= Limits::DEFAULT.nat_entries);
            if r.firewall().nat().len() == Limits::DEFAULT.nat_entries {
                if at_bound == 0 {
                    at_bound = METER.current();
                }
                // Once full, the table evicts: memory stays where it was when it filled up
                // (hash tables grow in steps, so allow one step).
                assert!(
                    METER.current() <= at_bound + at_bound / 2,
                    "memory grows past the bound"
                );
            }
        }
        assert_eq!(r.firewall().nat().len(), Limits::DEFAULT.nat_entries);
    });
    eprintln!(
        "peak heap with a full NAT table ({} flows): {} KiB",
        Limits::DEFAULT.nat_entries,
        peak / 1024
    );
    assert!(peak < BUDGET, "peak {peak} bytes");
}
