//! Hostile agent bytes into the GUI daemon decoder (handshake included): every qubes-guid rule
//! violation must end the connection with a sticky error, never a panic or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qubes::gui::wire::{Configure, XConf};
use qubes::gui::{Daemon, DaemonEvent, DaemonLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else { return };
    let mut d = Daemon::new(DaemonLimits { max_windows: 8, max_events: 64, max_event_bytes: 1 << 20, max_out: 4096 }, XConf::for_screen(1920, 1080));
    let chunk = usize::from(mode % 64) + 1;
    let mut out = [0u8; 1024];
    let mut rest = stream;
    let mut stalls = 0;
    while !rest.is_empty() && stalls < 4 {
        let n = rest.len().min(chunk);
        match d.handle_input(&rest[..n]) {
            Ok(used) => {
                assert!(used <= n);
                rest = &rest[used..];
                stalls = if used == 0 { stalls + 1 } else { 0 };
            }
            Err(e) => {
                assert_eq!(d.handle_input(rest), Err(e));
                assert_eq!(d.error(), Some(e));
                break;
            }
        }
        while d.poll_transmit(&mut out).is_some() {}
        while let Some(ev) = d.poll_event() {
            match ev {
                DaemonEvent::Created(w, c) => {
                    assert!(w.0 != 0 && c.width <= 16384 && c.height <= 6144);
                    if mode & 0x40 != 0 {
                        let _ = d.configure(w, Configure { x: 1, y: 1, width: 10, height: 10, override_redirect: 0 });
                    }
                }
                DaemonEvent::Dump(w, h, refs) => {
                    assert!(refs.len() <= 98304 && h.width <= 16384 && h.height <= 6144);
                    assert!(refs.len() as u64 * 4096 >= u64::from(h.width) * u64::from(h.height) * 4);
                    let _ = d.ack_dump(w);
                }
                DaemonEvent::ClipboardData(c) => assert!(c.len() <= 256_001),
                _ => {}
            }
        }
    }
});
