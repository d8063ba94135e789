//! dom0's per-qube daemons beside qrexec: QubesDB (served before the qube runs) and the GUI
//! daemon (qubes with the `gui` feature), and the sim's calls into them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use platform_api::DomId;

use crate::daemon::{Power, Sim};
use crate::gui::GuiInput;
use crate::qdb::QdbCmd;
use crate::registry::Registry;

/// A running qube's helper daemons; their threads end with the qube's `stop` flag.
#[derive(Debug, Default)]
pub struct Helpers {
    /// Its QubesDB daemon.
    pub qdb: Option<Sender<QdbCmd>>,
    /// Its GUI daemon.
    pub gui: Option<Sender<GuiInput>>,
    /// Its network namespace, if it has one.
    pub netns: Option<String>,
    /// The netvm its `eth0` leads to.
    pub linked: Option<String>,
    threads: Vec<JoinHandle<()>>,
}

impl Helpers {
    /// No more requests (the qube is gone; its threads see `stop`).
    pub fn disconnect(&mut self) {
        self.qdb = None;
        self.gui = None;
    }

    /// Disconnects and joins the threads (the caller has set `stop`).
    pub fn stop(&mut self) {
        self.disconnect();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Sim {
    /// Starts `name`'s QubesDB daemon and waits until its port is advertised.
    pub(crate) fn start_helpers(
        &self,
        reg: &Registry,
        name: &str,
        domid: DomId,
        stop: &Arc<AtomicBool>,
    ) -> Result<Helpers> {
        let (qdb_tx, qdb_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let entries = crate::qdb::entries(reg, name, crate::firewall::now())?;
        let (run, vm, halt) = (self.run.clone(), name.to_string(), stop.clone());
        let t = std::thread::spawn(move || {
            crate::qdb::run(&run, &vm, domid, entries, &halt, &qdb_rx, ready_tx)
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Helpers {
                qdb: Some(qdb_tx),
                gui: None,
                netns: None,
                linked: None,
                threads: vec![t],
            }),
            r => {
                stop.store(true, Ordering::Relaxed);
                let _ = t.join();
                let why = match r {
                    Ok(Err(e)) => e,
                    _ => "no answer".into(),
                };
                bail!("QubesDB of '{name}': {why}");
            }
        }
    }

    /// Starts `name`'s GUI daemon if it has the `gui` feature.
    pub(crate) fn start_gui(
        &self,
        reg: &Registry,
        name: &str,
        domid: DomId,
        stop: &Arc<AtomicBool>,
        helpers: &mut Helpers,
    ) -> Result<()> {
        if crate::qdb::gui_enabled(reg.get(name)?) {
            let (gtx, grx) = mpsc::channel();
            let (run, vm, halt) = (self.run.clone(), name.to_string(), stop.clone());
            helpers.threads.push(std::thread::spawn(move || {
                crate::gui::run(&run, &vm, domid, &halt, &grx)
            }));
            helpers.gui = Some(gtx);
        }
        Ok(())
    }

    /// `vm`'s firewall changed (or it starts): if its netvm runs, dom0's reload sequence goes
    /// to the netvm's QubesDB.
    pub fn reload_firewall(&self, vm: &str) -> Result<()> {
        let reg = Registry::load(&self.state)?;
        self.reload_firewall_in(&reg, vm)
    }

    pub(crate) fn reload_firewall_in(&self, reg: &Registry, vm: &str) -> Result<()> {
        let d = reg.get(vm)?;
        if d.prefs.netvm.is_empty() || d.ip.is_empty() {
            return Ok(());
        }
        let qdb = self
            .vms()
            .get(&d.prefs.netvm)
            .filter(|v| v.power != Power::Crashed)
            .and_then(|v| v.helpers.qdb.clone());
        let Some(qdb) = qdb else { return Ok(()) };
        // The IPv4 directory, then the IPv6 one when IPv6 is on (dom0's order).
        for (ip, rules) in crate::qdb::firewall_reloads(reg, vm, crate::firewall::now()) {
            let (tx, rx) = mpsc::channel();
            qdb.send(QdbCmd::Firewall {
                ip,
                rules,
                reply: tx,
            })
            .map_err(|_| anyhow!("netvm '{}' is going down", d.prefs.netvm))?;
            rx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| anyhow!("QubesDB of '{}' did not answer", d.prefs.netvm))?;
        }
        Ok(())
    }

    /// Input for `vm`'s focused window.
    pub fn gui_input(&self, vm: &str, input: &[String]) -> Result<String> {
        let tx = self
            .vms()
            .get(vm)
            .and_then(|v| v.helpers.gui.clone())
            .ok_or_else(|| anyhow!("qube '{vm}' is not running with a GUI (feature gui)"))?;
        let (reply, rx) = mpsc::channel();
        tx.send(crate::gui::GuiInput {
            words: input.to_vec(),
            reply,
        })
        .map_err(|_| anyhow!("qube '{vm}' is going down"))?;
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => bail!("qube '{vm}': {e}"),
            Err(_) => bail!("qube '{vm}': its GUI daemon did not answer"),
        }
    }

    /// Creates the namespace a qube runs in (`None` without the plumbing); on
    /// failure the helpers are stopped.
    pub(crate) fn netns_for(
        &self,
        domid: DomId,
        stop: &Arc<AtomicBool>,
        helpers: &mut Helpers,
    ) -> Result<Option<String>> {
        // Every qube gets one: a qube without a netvm has only its loopback, as in Qubes.
        if !self.netns {
            return Ok(None);
        }
        let ns = crate::netns::ns_name(&self.state, u32::from(domid.get()));
        if let Err(e) = crate::netns::create(&ns) {
            stop.store(true, Ordering::Relaxed);
            helpers.stop();
            return Err(e);
        }
        helpers.netns = Some(ns.clone());
        Ok(Some(ns))
    }

    /// Makes every running qube's link match the registry: linked to its netvm if both run
    /// (after a start, a netvm change, a netvm restart), unlinked otherwise.
    pub(crate) fn plumb(&self, reg: &Registry) {
        if !self.netns {
            return;
        }
        let running: BTreeMap<String, (String, Option<String>)> = self
            .vms()
            .iter()
            .filter(|(_, v)| v.power != Power::Crashed)
            .filter_map(|(n, v)| {
                let ns = v.helpers.netns.clone()?;
                Some((n.clone(), (ns, v.helpers.linked.clone())))
            })
            .collect();
        for (name, (cns, linked)) in &running {
            let Ok(c) = reg.get(name) else { continue };
            // A unikernel end makes its own TAP device (contract §3): the sim neither links
            // nor unlinks that client's `eth0`.
            let netvm_unikernel = reg
                .get(&c.prefs.netvm)
                .is_ok_and(crate::devices::is_unikernel);
            if crate::devices::is_unikernel(c) || netvm_unikernel {
                // A veth the sim made while the netvm was a Linux qube goes, so that the
                // unikernel's TAP device can take the name.
                if linked.is_some() {
                    crate::netns::unlink(cns);
                    if let Some(v) = self.vms().get_mut(name) {
                        v.helpers.linked = None;
                    }
                }
                continue;
            }
            let want = Some(c.prefs.netvm.as_str())
                .filter(|n| !n.is_empty() && !c.ip.is_empty())
                .and_then(|n| Some((n, running.get(n)?, reg.get(n).ok()?)));
            let up = crate::netns::has_link(cns);
            let ok = match &want {
                Some((n, ..)) => up && linked.as_deref() == Some(*n),
                None => !up,
            };
            if ok {
                continue;
            }
            if up {
                crate::netns::unlink(cns);
            }
            let mut now_linked = None;
            if let Some((netvm, (nns, _), n)) = want {
                let client = crate::netns::End {
                    ns: cns,
                    domid: c.domid,
                    ip: &c.ip,
                };
                let nv = crate::netns::End {
                    ns: nns,
                    domid: n.domid,
                    ip: &n.ip,
                };
                match crate::netns::connect(&self.state, &client, &crate::qdb::mac(c.domid), &nv) {
                    Ok(()) => {
                        eprintln!("qubes-sim: linked '{name}' to netvm '{netvm}'");
                        now_linked = Some(netvm.to_string());
                    }
                    Err(e) => eprintln!("qubes-sim: cannot link '{name}' to '{netvm}': {e:#}"),
                }
            }
            if let Some(v) = self.vms().get_mut(name) {
                v.helpers.linked = now_linked;
            }
        }
    }

    /// Brings every running qube's QubesDB in line with the registry (after `qvm-prefs` or
    /// `qvm-features` changed it).
    pub fn refresh_qdb(&self) -> Result<()> {
        let reg = Registry::load(&self.state)?;
        let running: Vec<(String, Sender<QdbCmd>)> = self
            .vms()
            .iter()
            .filter(|(_, v)| v.power != Power::Crashed)
            .filter_map(|(n, v)| Some((n.clone(), v.helpers.qdb.clone()?)))
            .collect();
        let now = crate::firewall::now();
        for (name, qdb) in running {
            let Ok(entries) = crate::qdb::entries(&reg, &name, now) else {
                continue;
            };
            let (reply, rx) = mpsc::channel();
            if qdb.send(QdbCmd::Sync { entries, reply }).is_ok() {
                rx.recv_timeout(Duration::from_secs(10))
                    .map_err(|_| anyhow!("QubesDB of '{name}' did not answer"))?;
            }
        }
        self.plumb(&reg);
        self.sync_vifs();
        Ok(())
    }
}
