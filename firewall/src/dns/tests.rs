use super::*;
use proptest::prelude::*;

const SEC: u64 = 1_000_000_000;

fn put_name(out: &mut Vec<u8>, name: &str) {
    for l in name.split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

/// A DNS response to `qname` with the given answers (`owner`, type, ttl, rdata); owners equal to
/// `qname` are written as a pointer to the question.
pub(crate) fn response(qname: &str, answers: &[(&str, u16, u32, Vec<u8>)]) -> Vec<u8> {
    let mut m = alloc::vec![0x12, 0x34, 0x81, 0x80, 0, 1];
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    put_name(&mut m, qname);
    m.extend_from_slice(&[0, 1, 0, 1]);
    for (owner, t, ttl, rdata) in answers {
        if *owner == qname {
            m.extend_from_slice(&[0xc0, 12]);
        } else {
            put_name(&mut m, owner);
        }
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(rdata);
    }
    m
}

pub(crate) fn a_response(qname: &str, addr: [u8; 4], ttl: u32) -> Vec<u8> {
    response(qname, &[(qname, 1, ttl, addr.to_vec())])
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn learns_a_and_aaaa_and_respects_ttl() {
    let mut c = DnsCache::new(16);
    let six: Ipv6Addr = "2001:db8::5".parse().unwrap();
    let msg = response(
        "Example.COM",
        &[
            ("Example.COM", 1, 60, alloc::vec![93, 184, 216, 34]),
            ("Example.COM", 28, 30, six.octets().to_vec()),
        ],
    );
    assert_eq!(c.learn_from_response(&msg, Instant(0)), Ok(2));
    let t = Instant(10 * SEC);
    assert_eq!(
        c.resolves_to("example.com", ip("93.184.216.34"), t),
        Resolution::Match
    );
    assert_eq!(
        c.resolves_to("example.com", ip("2001:db8::5"), t),
        Resolution::Match
    );
    assert_eq!(
        c.resolves_to("example.com", ip("1.1.1.1"), t),
        Resolution::NoMatch
    );
    assert_eq!(
        c.resolves_to("other.com", ip("1.1.1.1"), t),
        Resolution::Unknown
    );
    // AAAA expired at 30 s, A lives to 60 s.
    let t = Instant(45 * SEC);
    assert_eq!(
        c.resolves_to("example.com", ip("2001:db8::5"), t),
        Resolution::NoMatch
    );
    let t = Instant(61 * SEC);
    assert_eq!(
        c.resolves_to("example.com", ip("93.184.216.34"), t),
        Resolution::Unknown
    );
}

#[test]
fn follows_cname_chain_but_ignores_unrelated_records() {
    let mut c = DnsCache::new(16);
    let mut target = Vec::new();
    put_name(&mut target, "cdn.example.net");
    let msg = response(
        "www.example.com",
        &[
            ("www.example.com", 5, 300, target),
            ("cdn.example.net", 1, 300, alloc::vec![10, 0, 0, 1]),
            ("bank.example.org", 1, 300, alloc::vec![6, 6, 6, 6]),
        ],
    );
    assert_eq!(c.learn_from_response(&msg, Instant(0)), Ok(1));
    assert_eq!(
        c.resolves_to("www.example.com", ip("10.0.0.1"), Instant(0)),
        Resolution::Match
    );
    assert_eq!(
        c.resolves_to("cdn.example.net", ip("10.0.0.1"), Instant(0)),
        Resolution::Match
    );
    assert_eq!(
        c.resolves_to("bank.example.org", ip("6.6.6.6"), Instant(0)),
        Resolution::Unknown
    );
}

#[test]
fn hostile_answer_rejected_pointer_loop() {
    // Question name is a pointer to itself.
    let mut m = alloc::vec![0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
    let c = &mut DnsCache::new(4);
    assert_eq!(
        c.learn_from_response(&m, Instant(0)),
        Err(DnsError::BadPointer)
    );
    m[12] = 0xc0;
    m[13] = 200;
    assert_eq!(
        c.learn_from_response(&m, Instant(0)),
        Err(DnsError::BadPointer)
    );
}

#[test]
fn hostile_answer_rejected_not_a_response() {
    let mut m = a_response("a.b", [1, 2, 3, 4], 5);
    m[2] = 0x01; // QR clear: a query
    let c = &mut DnsCache::new(4);
    assert_eq!(
        c.learn_from_response(&m, Instant(0)),
        Err(DnsError::NotAnswer)
    );
    let mut m = a_response("a.b", [1, 2, 3, 4], 5);
    m[3] = 0x83; // NXDOMAIN
    assert_eq!(
        c.learn_from_response(&m, Instant(0)),
        Err(DnsError::NotAnswer)
    );
    let m = a_response("a.b", [1, 2, 3, 4], 5);
    assert_eq!(
        c.learn_from_response(&m[..m.len() - 1], Instant(0)),
        Err(DnsError::Truncated)
    );
    assert!(c.is_empty());
}

#[test]
fn bound_evicts_soonest_expiry_then_expired() {
    let mut c = DnsCache::new(3);
    c.insert("a", ip("1.0.0.1"), 100, Instant(0));
    c.insert("b", ip("1.0.0.2"), 10, Instant(0));
    c.insert("c", ip("1.0.0.3"), 200, Instant(0));
    c.insert("d", ip("1.0.0.4"), 300, Instant(0));
    assert_eq!(c.len(), 3);
    assert_eq!(
        c.resolves_to("b", ip("1.0.0.2"), Instant(0)),
        Resolution::Unknown
    );
    assert_eq!(
        c.resolves_to("a", ip("1.0.0.1"), Instant(0)),
        Resolution::Match
    );
    // At 150 s "a" has expired and is purged first.
    c.insert("e", ip("1.0.0.5"), 300, Instant(150 * SEC));
    assert_eq!(c.len(), 3);
    assert_eq!(
        c.resolves_to("c", ip("1.0.0.3"), Instant(150 * SEC)),
        Resolution::Match
    );
}

#[test]
fn ttl_is_capped() {
    let mut c = DnsCache::new(3);
    c.insert("a", ip("1.0.0.1"), u32::MAX, Instant(0));
    let later = Instant(u64::from(MAX_TTL_SECS) * SEC + 1);
    assert_eq!(
        c.resolves_to("a", ip("1.0.0.1"), later),
        Resolution::Unknown
    );
}

proptest! {
    #[test]
    fn learn_never_panics_and_stays_bounded(msg in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut c = DnsCache::new(4);
        let _ = c.learn_from_response(&msg, Instant(0));
        prop_assert!(c.len() <= 4);
    }

    #[test]
    fn mutated_answers_never_panic(flip in 0usize..64, val in any::<u8>()) {
        let mut m = response("x.example", &[("x.example", 1, 9, alloc::vec![1, 2, 3, 4])]);
        if let Some(b) = m.get_mut(flip) { *b = val; }
        let mut c = DnsCache::new(2);
        let _ = c.learn_from_response(&m, Instant(0));
        prop_assert!(c.len() <= 2);
    }
}

#[test]
fn zero_ttl_kept_for_the_minimum() {
    let mut c = DnsCache::new(4);
    let msg = a_response("local.test", [192, 0, 2, 80], 0);
    assert_eq!(c.learn_from_response(&msg, Instant(0)), Ok(1));
    let a = ip("192.0.2.80");
    let min = u64::from(MIN_TTL_SECS) * SEC;
    assert_eq!(
        c.resolves_to("local.test", a, Instant(min - 1)),
        Resolution::Match
    );
    assert_eq!(
        c.resolves_to("local.test", a, Instant(min)),
        Resolution::Unknown
    );
}
