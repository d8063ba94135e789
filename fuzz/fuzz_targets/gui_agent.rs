//! Hostile GUI daemon bytes into the VM agent (handshake included): windows 1 and 29360135
//! exist once connected; nothing panics, errors are sticky, the queue stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qubes::gui::wire::WindowId;
use qubes::gui::{Agent, AgentLimits, Event};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else { return };
    let mut a = Agent::new(AgentLimits { max_out: 4096, max_events: 64, ..AgentLimits::DEFAULT });
    let chunk = usize::from(mode % 32) + 1;
    let mut out = [0u8; 1024];
    let mut rest = stream;
    let mut stalls = 0;
    let mut made = false;
    while !rest.is_empty() && stalls < 4 {
        let n = rest.len().min(chunk);
        match a.handle_input(&rest[..n]) {
            Ok(used) => {
                assert!(used <= n);
                rest = &rest[used..];
                stalls = if used == 0 { stalls + 1 } else { 0 };
            }
            Err(e) => {
                assert_eq!(a.handle_input(rest), Err(e));
                assert!(a.create_window(WindowId(3), 0, 0, 1, 1).is_err());
                break;
            }
        }
        if a.is_ready() && !made {
            made = true;
            let _ = a.create_window(WindowId(1), 0, 0, 64, 48);
            let _ = a.create_window(WindowId(29360135), 0, 0, 32, 32);
        }
        let mut queued = 0;
        while let Some(k) = a.poll_transmit(&mut out) {
            queued += k;
        }
        assert!(queued <= 4096 + 64);
        while let Some(ev) = a.poll_event() {
            match ev {
                Event::Close(w) if mode & 0x40 != 0 => {
                    let _ = a.destroy(w);
                }
                Event::ClipboardRequest(w) => {
                    let _ = a.clipboard_data(w, b"text");
                }
                Event::ClipboardData(_, d) => assert!(d.len() <= 256_001),
                _ => {}
            }
        }
    }
});
