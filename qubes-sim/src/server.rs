//! The sim's foreground process (`qubes-sim daemon`): the admin socket, the supervisor loop,
//! and the admin requests, including dom0's side of `qvm-run` calls.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use platform_api::DomId;

use crate::admin::{self, Reply, Request};
use crate::agent::DATA_RING;
use crate::chan::{Hosted, Vchan};
use crate::daemon::{Power, Sim, MAX_ADMIN, SUPERVISE_EVERY};
use crate::registry::Registry;

impl Sim {
    fn handle_admin(self: &Arc<Self>, req: Request) -> Reply {
        let r: Result<Reply> = (|| match req {
            Request::Status => {
                let states = self
                    .states()
                    .into_iter()
                    .map(|(n, p)| (n, p.as_str().to_string()))
                    .collect();
                Ok(Reply {
                    states,
                    ..Reply::default()
                })
            }
            Request::Start { vm } => Ok(Reply {
                domid: Some(u32::from(self.start_vm(&vm)?.get())),
                ..Reply::default()
            }),
            Request::Kill { vm } => {
                Registry::load(&self.state)?.get(&vm)?;
                if !self.kill_vm(&vm) {
                    bail!("qube '{vm}' is not running");
                }
                Ok(Reply::default())
            }
            Request::Exec { .. } => bail!("an exec needs its connection"),
            Request::ShutdownVm { vm, timeout } => {
                Registry::load(&self.state)?.get(&vm)?;
                self.shutdown_vm(&vm, Duration::from_secs(timeout.clamp(1, 3600)))?;
                Ok(Reply::default())
            }
            Request::ReloadFirewall { vm } => {
                self.reload_firewall(&vm)?;
                Ok(Reply::default())
            }
            Request::RefreshQdb => {
                self.refresh_qdb()?;
                Ok(Reply::default())
            }
            Request::GuiInput { vm, input } => {
                self.gui_input(&vm, &input)?;
                Ok(Reply::default())
            }
            Request::Shutdown => {
                self.stop.store(true, Ordering::Relaxed);
                Ok(Reply::default())
            }
        })();
        r.unwrap_or_else(|e| Reply::err(format!("{e:#}")))
    }

    /// An Exec request: starts the qube if allowed, sends EXEC_CMDLINE with dom0 as the peer
    /// and serves the data vchan; the reply and the served vchan.
    fn open_call(self: &Arc<Self>, req: Request) -> Result<(Reply, Hosted, Vchan)> {
        let Request::Exec {
            vm,
            cmdline,
            autostart,
        } = req
        else {
            bail!("not an exec request");
        };
        let running = self.states().get(&vm) == Some(&Power::Running);
        if !running && !autostart {
            bail!("qube '{vm}' is not running");
        }
        let domid = self.start_vm(&vm)?;
        if domid == DomId::DOM0 {
            bail!("dom0 runs no qrexec agent in the sim");
        }
        let mut h = Hosted::new(&self.run, DomId::DOM0)?;
        let port = self.exec(&vm, DomId::DOM0, &cmdline)?;
        let v = Vchan::serve(&mut h, domid, port, DATA_RING, DATA_RING)?;
        let reply = Reply {
            domid: Some(u32::from(domid.get())),
            port: Some(port),
            ..Reply::default()
        };
        Ok((reply, h, v))
    }
}

/// `qubes-sim daemon`: runs the sim until `qubes-sim shutdown` (or stdin closes, with
/// `--stdin-lifeline`). Prints `ready <run dir>` once the admin socket listens.
pub fn main(state: &Path, args: &[String]) -> Result<i32> {
    let lifeline = args.iter().any(|a| a == "--stdin-lifeline");
    let sim = Sim::start(state)?;
    // Whatever happens after the run directory exists, it is cleaned up.
    let r = serve(&sim, lifeline);
    sim.shutdown();
    eprintln!("qubes-sim: stopped");
    r.map(|()| 0)
}

fn serve(sim: &Arc<Sim>, lifeline: bool) -> Result<()> {
    let listener = UnixListener::bind(admin::socket_path(&sim.state)).context("admin socket")?;
    listener.set_nonblocking(true)?;
    if lifeline {
        let sim = sim.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            sim.stop.store(true, Ordering::Relaxed);
        });
    }
    let supervisor = {
        let sim = sim.clone();
        std::thread::spawn(move || {
            while !sim.stopping() {
                sim.supervise();
                std::thread::sleep(SUPERVISE_EVERY);
            }
        })
    };
    let autostart: Vec<String> = Registry::load(&sim.state)?
        .domains
        .values()
        .filter(|d| d.prefs.autostart && d.domid != 0)
        .map(|d| d.name.clone())
        .collect();
    for vm in autostart {
        if let Err(e) = sim.start_vm(&vm) {
            eprintln!("qubes-sim: autostart of '{vm}': {e:#}");
        }
    }
    println!("ready {}", sim.run.display());
    let _ = std::io::stdout().flush();
    while !sim.stopping() {
        match listener.accept() {
            Ok((conn, _)) => serve_admin(sim, conn),
            Err(_) => std::thread::sleep(SUPERVISE_EVERY),
        }
    }
    let _ = supervisor.join();
    Ok(())
}

fn serve_admin(sim: &Arc<Sim>, mut conn: UnixStream) {
    if sim.admin_busy.fetch_add(1, Ordering::SeqCst) >= MAX_ADMIN {
        sim.admin_busy.fetch_sub(1, Ordering::SeqCst);
        let _ = writeln!(conn, "{}", serde_json::json!({"error": "sim busy"}));
        return;
    }
    let sim = sim.clone();
    std::thread::spawn(move || {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let req = crate::local::read_line_max(&mut conn, admin::MAX_LINE)
            .and_then(|l| serde_json::from_str::<Request>(&l).map_err(Into::into));
        let mut call = None;
        let reply = match req {
            Ok(req @ Request::Exec { .. }) => match sim.open_call(req) {
                Ok((reply, h, v)) => {
                    call = Some((h, v, reply.domid));
                    reply
                }
                Err(e) => Reply::err(format!("{e:#}")),
            },
            Ok(req) => sim.handle_admin(req),
            Err(e) => Reply::err(format!("bad request: {e:#}")),
        };
        if let Ok(line) = serde_json::to_string(&reply) {
            let _ = writeln!(conn, "{line}");
        }
        // dom0's qrexec-client: the sim serves the data vchan and relays it to the tool, so
        // a killed tool ends the call like a killed client in a qube does.
        if let Some((mut h, mut v, Some(domid))) = call {
            let _ = conn.set_read_timeout(None);
            let r = match DomId::new(domid) {
                Ok(peer) => crate::local::relay(&mut h, &mut v, peer, &conn),
                Err(e) => Err(anyhow::anyhow!("bad domid: {e}")),
            };
            v.shutdown(&mut h);
            if let Err(e) = &r {
                eprintln!("qubes-sim: qvm-run call to domain {domid}: {e:#}");
            }
            crate::local::finish(&conn, &r);
        }
        sim.admin_busy.fetch_sub(1, Ordering::SeqCst);
    });
}
