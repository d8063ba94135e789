//! `gui-test-agent`: a tiny GUI agent run inside a qube for tests. It serves port 6000 to the
//! GUI domain QubesDB names, shows one window with a known pattern and reports its input.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use platform_api::{DomId, Events, Grants, SharedMem};
use qubes::gui::wire::WindowId;
use qubes::gui::{Agent, AgentLimits, Event};
use vchan::{Interest, PeerState};

use crate::chan::{Hosted, TxQueue, Vchan, TICK};

/// The test window's size.
pub const SIZE: (u32, u32) = (64, 48);

/// The RGB colour of pixel (x, y) of the test pattern (`inverted` after a key press).
pub fn pattern(x: u32, y: u32, inverted: bool) -> [u8; 3] {
    let p = [
        ((x ^ y) & 0xff) as u8,
        ((y * 5) & 0xff) as u8,
        ((x * 3) & 0xff) as u8,
    ];
    if inverted {
        p.map(|c| 255 - c)
    } else {
        p
    }
}

fn fill(mem: &impl SharedMem, inverted: bool) -> Result<()> {
    let (w, h) = SIZE;
    let mut buf = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = pattern(x, y, inverted);
            buf.extend_from_slice(&[b, g, r, 0]);
        }
    }
    mem.write(0, &buf).map_err(|e| anyhow!("framebuffer: {e}"))
}

/// Runs the agent until the window is closed (exit 0) or the daemon goes away.
pub fn run() -> Result<i32> {
    let gui_dom = {
        let q = crate::qdb_vm::QdbClient::connect()?;
        let xid = q
            .read("/qubes-gui-domain-xid")
            .ok_or_else(|| anyhow!("no /qubes-gui-domain-xid: GUI disabled for this qube"))?;
        let n: u32 = xid
            .trim()
            .parse()
            .map_err(|_| anyhow!("bad gui domain {xid:?}"))?;
        DomId::new(n).map_err(|e| anyhow!("bad gui domain {xid:?}: {e}"))?
    };
    let mut h = Hosted::from_env()?;
    let mut v = Vchan::serve(&mut h, gui_dom, crate::gui::PORT, 4096, 4096)?;
    // Wait for the GUI daemon to attach (it retries), then withdraw the advertisement.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while matches!(v.peer_state(), Ok(PeerState::Waiting)) {
        if std::time::Instant::now() >= deadline {
            bail!("no GUI daemon connected");
        }
        v.wait(&mut h, Interest::default(), TICK)?;
    }
    v.tidy(&mut h);
    let mut a = Agent::new(AgentLimits::DEFAULT);
    let win = WindowId(1);
    let (w, ht) = SIZE;
    let (mem, refs) = h
        .grants
        .share(gui_dom, Agent::pages_for(w, ht), false)
        .context("share the framebuffer")?;
    fill(&mem, false)?;
    let mut inverted = false;
    let mut out = TxQueue::new(64 * 1024);
    let mut inbuf = vec![0u8; 8192];
    let mut in_len = 0;
    let mut stdout = std::io::stdout();
    let say = |s: &mut std::io::Stdout, line: String| -> Result<()> {
        writeln!(s, "{line}")?;
        s.flush()?;
        Ok(())
    };
    let mut shown = false;
    loop {
        let mut progress = false;
        if in_len < inbuf.len() {
            match v.read(&mut inbuf[in_len..]) {
                Ok(n) => {
                    in_len += n;
                    progress |= n > 0;
                }
                Err(vchan::Error::PeerClosed) => bail!("the GUI daemon went away"),
                Err(e) => bail!("vchan: {e}"),
            }
        }
        if in_len > 0 {
            let n = a
                .handle_input(&inbuf[..in_len])
                .map_err(|e| anyhow!("daemon broke the protocol: {e}"))?;
            inbuf.copy_within(n..in_len, 0);
            in_len -= n;
            progress |= n > 0;
        }
        while let Some(ev) = a.poll_event() {
            progress = true;
            let e = |e: qubes::gui::LocalError| anyhow!("{e}");
            match ev {
                Event::Connected { .. } if !shown => {
                    shown = true;
                    a.create_window(win, 10, 20, w, ht).map_err(e)?;
                    a.set_title(win, "sim test").map_err(e)?;
                    a.configure(win, 10, 20, w, ht).map_err(e)?;
                    a.window_dump(win, w, ht, &refs).map_err(e)?;
                    a.map(win).map_err(e)?;
                    a.shm_image(win, 0, 0, w, ht).map_err(e)?;
                }
                Event::DumpAcked(_) => say(&mut stdout, "ready".into())?,
                Event::Focus(_, f) => say(&mut stdout, format!("focus {}", f.ty))?,
                Event::Key(_, k) => {
                    let what = if k.ty == 2 { "press" } else { "release" };
                    say(
                        &mut stdout,
                        format!("key {} {what} state {}", k.keycode, k.state),
                    )?;
                    if k.ty == 2 {
                        inverted = !inverted;
                        fill(&mem, inverted)?;
                        a.shm_image(win, 0, 0, w, ht).map_err(e)?;
                    }
                }
                Event::Button(_, b) => {
                    let what = if b.ty == 4 { "press" } else { "release" };
                    say(
                        &mut stdout,
                        format!("button {} {what} {} {}", b.button, b.x, b.y),
                    )?;
                }
                Event::Close(_) => {
                    say(&mut stdout, "close".into())?;
                    a.destroy(win).map_err(e)?;
                }
                Event::Destroyed(_) => {
                    out.fill(|b| a.poll_transmit(b));
                    let _ = out.flush(&mut v);
                    return Ok(0);
                }
                _ => {}
            }
        }
        out.fill(|b| a.poll_transmit(b));
        progress |= out.flush(&mut v).map_err(|e| anyhow!("vchan: {e}"))?;
        if !progress {
            let interest = Interest {
                read: true,
                write: out.pending() > 0,
            };
            if v.prepare_wait(interest)
                .map_err(|e| anyhow!("vchan: {e}"))?
            {
                h.events.wait(Some(TICK)).context("event wait")?;
            }
            if !h.domain_alive(DomId::DOM0) {
                bail!("dom0 is gone");
            }
        }
    }
}
