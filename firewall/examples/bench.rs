//! `cargo run --release -p firewall --example bench [PACKETS]`: the firewall core's ns/packet
//! (100 rules per client; empty forward, established NAT, new flows) in one run.

fn main() {
    let packets = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let start = std::time::Instant::now();
    let mut now = || start.elapsed().as_nanos() as u64;
    // A short warm-up pass, then the measured one.
    let _ = firewall::bench::run(packets / 10, &mut now);
    let report = firewall::bench::run(packets, &mut now);
    println!("{report}");
}
