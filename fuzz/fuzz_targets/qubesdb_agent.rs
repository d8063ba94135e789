//! Hostile dom0 bytes into the VM side of QubesDB: chunked as the first byte says, with local
//! writes and watches interleaved; the queues must stay within their bounds and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qubes::qubesdb::{Agent, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else { return };
    let limits = Limits { max_entries: 64, max_bytes: 16 * 1024, max_out: 8 * 1024, ..Limits::DEFAULT };
    let mut a = Agent::new(limits);
    let _ = a.watch("/qubes-firewall/");
    let _ = a.watch("/");
    a.connect();
    let chunk = usize::from(mode % 32) + 1;
    let mut out = [0u8; 4096];
    let mut rest = stream;
    let mut stalls = 0;
    let mut step = 0u32;
    while !rest.is_empty() && stalls < 4 {
        let n = rest.len().min(chunk);
        match a.handle_input(&rest[..n]) {
            Ok(used) => {
                assert!(used <= n);
                rest = &rest[used..];
                stalls = if used == 0 { stalls + 1 } else { 0 };
            }
            Err(_) => {
                // Sticky: the next call fails the same way; a reconnect starts clean.
                assert!(a.handle_input(rest).is_err());
                if mode & 0x80 == 0 {
                    break;
                }
                a.connect();
            }
        }
        let mut queued = 0;
        while let Some(k) = a.poll_transmit(&mut out) {
            queued += k;
        }
        assert!(queued <= 8 * 1024 + 2 * 3143);
        let mut events = 0;
        while a.poll_event().is_some() {
            events += 1;
        }
        assert!(events <= 4096);
        step += 1;
        if mode & 0x40 != 0 && step % 7 == 0 {
            let _ = a.write("/qubes-iptables-error", b"");
        }
    }
    assert!(a.len() <= 64);
    let _ = a.list("/").count();
});
