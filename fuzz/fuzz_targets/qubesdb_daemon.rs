//! Hostile VM bytes into dom0's QubesDB daemon side, with dom0 pushes and firewall reloads
//! interleaved; errors must be sticky, queues bounded, nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qubes::qubesdb::{Daemon, DaemonLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else { return };
    let limits = DaemonLimits { max_vm_entries: 32, max_vm_bytes: 8 * 1024, max_out: 16 * 1024, ..DaemonLimits::DEFAULT };
    let mut d = Daemon::new(limits);
    let _ = d.write("/name", b"work");
    let _ = d.write("/qubes-ip", b"10.137.0.12");
    let _ = d.reload_firewall("10.137.0.12", &["action=accept proto=tcp dstports=443-443", "action=drop"]);
    d.connect();
    let chunk = usize::from(mode % 32) + 1;
    let mut out = [0u8; 4096];
    let mut rest = stream;
    let mut stalls = 0;
    let mut step = 0u32;
    while !rest.is_empty() && stalls < 4 {
        let n = rest.len().min(chunk);
        match d.handle_input(&rest[..n]) {
            Ok(used) => {
                assert!(used <= n);
                rest = &rest[used..];
                stalls = if used == 0 { stalls + 1 } else { 0 };
            }
            Err(_) => {
                assert!(d.handle_input(rest).is_err());
                assert!(d.error().is_some());
                break;
            }
        }
        while d.poll_transmit(&mut out).is_some() {}
        while d.poll_event().is_some() {}
        step += 1;
        if mode & 0x40 != 0 && step % 5 == 0 {
            let _ = d.reload_firewall("10.137.0.12", &["action=accept"]);
        }
    }
    assert!(d.read_untrusted("/x").is_none_or(|v| v.len() < 3072));
});
