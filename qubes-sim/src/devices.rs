//! The toolstack's device entries for hosted unikernels (contract §3): a vbd backed by an image
//! file in the qube's state directory, and vif backend/frontend pairs to or from a unikernel netvm.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use platform_api::{Access, DomId, Perm, Store, StoreError};
use platform_hosted::store::{with_transaction, HostedStore};

use crate::registry::{Domain, Registry};

/// The private volume's device id: `xvdb`, as Qubes attaches it (`xvda` is root).
pub const PRIVATE_DEVID: u32 = 51728;
/// A client's only network interface.
pub const VIF_DEVID: u32 = 0;
/// Bytes per sector in the vbd entries.
pub const SECTOR_SIZE: u64 = 512;
/// Transaction retries for one device's entries.
const TX_ATTEMPTS: u32 = 16;

/// Whether a qube runs a hosted unikernel (its `kernel` is an absolute path).
pub fn is_unikernel(d: &Domain) -> bool {
    d.prefs.kernel.starts_with('/')
}

/// The image file of a qube's private volume: `<state>/vms/<name>/private.img`.
pub fn private_image(state: &Path, name: &str) -> PathBuf {
    state.join("vms").join(name).join("private.img")
}

/// Creates the private image at the volume's size if missing, or grows it to that size (an
/// image is never shrunk: its data is the qube's). Sparse, so large volumes cost nothing.
pub fn ensure_private_image(state: &Path, d: &Domain) -> Result<Option<(PathBuf, u64)>> {
    let Some(vol) = d.volumes.get("private").filter(|v| v.size > 0) else {
        return Ok(None);
    };
    let path = private_image(state, &d.name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata()?.len();
    if len < vol.size {
        f.set_len(vol.size)
            .with_context(|| format!("cannot size {}", path.display()))?;
    }
    Ok(Some((path, len.max(vol.size))))
}

/// `(path, value)` pairs under one directory, written in one transaction.
type Entries = Vec<(String, String)>;

fn owned_by(owner: DomId, reader: DomId) -> [Perm; 2] {
    [
        Perm {
            domid: owner,
            access: Access::None,
        },
        Perm {
            domid: reader,
            access: Access::Read,
        },
    ]
}

/// Writes `dirs` (directory, owner, reader, entries) in one transaction: a watcher sees the
/// device whole or not at all.
fn write_dirs(store: &mut HostedStore, dirs: &[(String, DomId, DomId, Entries)]) -> Result<()> {
    with_transaction(store, TX_ATTEMPTS, |s, tx| {
        for (dir, owner, reader, entries) in dirs {
            s.mkdir(tx, dir)?;
            s.set_perms(tx, dir, &owned_by(*owner, *reader))?;
            for (k, v) in entries {
                let path = format!("{dir}/{k}");
                s.write(tx, &path, v.as_bytes())?;
                s.set_perms(tx, &path, &owned_by(*owner, *reader))?;
            }
        }
        Ok(())
    })
    .map_err(|e: StoreError| anyhow::anyhow!("xenstore: {e}"))
}

/// Writes the private volume's vbd for a starting hosted unikernel (backend in dom0).
pub fn write_vbd(store: &mut HostedStore, domid: DomId, image: &Path, size: u64) -> Result<()> {
    let fe = format!("/local/domain/{domid}/device/vbd/{PRIVATE_DEVID}");
    let be = format!("/local/domain/0/backend/vbd/{domid}/{PRIVATE_DEVID}");
    let backend = vec![
        ("frontend".into(), fe.clone()),
        ("frontend-id".into(), domid.to_string()),
        ("params".into(), image.to_string_lossy().into_owned()),
        ("sectors".into(), (size / SECTOR_SIZE).to_string()),
        ("sector-size".into(), SECTOR_SIZE.to_string()),
        ("mode".into(), "w".into()),
        ("state".into(), "4".into()),
    ];
    let frontend = vec![
        ("backend".into(), be.clone()),
        ("backend-id".into(), "0".into()),
        ("virtual-device".into(), PRIVATE_DEVID.to_string()),
        ("device-type".into(), "disk".into()),
    ];
    write_dirs(
        store,
        &[
            (be, DomId::DOM0, domid, backend),
            (fe, domid, DomId::DOM0, frontend),
        ],
    )
}

/// One client–netvm link the toolstack describes in xenstore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vif {
    /// The client (frontend).
    pub client: DomId,
    /// The netvm (backend).
    pub netvm: DomId,
    /// Client's IPv4.
    pub ip: String,
    /// Client's IPv6, when IPv6 is on for it.
    pub ip6: Option<String>,
    /// The netvm's address, the client's gateway.
    pub gateway: String,
    /// The client's IPv6 gateway (its `/qubes-gateway6`).
    pub gateway6: Option<String>,
    /// The client's MAC.
    pub mac: String,
    /// The client's netns name (with `QUBES_SIM_NETNS`).
    pub client_netns: Option<String>,
    /// The netvm's netns name, written for the frontend when the netvm is a Linux qube.
    pub netvm_netns: Option<String>,
}

impl Vif {
    /// `/local/domain/<client>/device/vif/0`.
    pub fn frontend_dir(&self) -> String {
        format!("/local/domain/{}/device/vif/{VIF_DEVID}", self.client)
    }

    /// The backend's `ip` node: the IPv4, then the IPv6 after a space if any (as libxl's).
    pub fn ip_entry(&self) -> String {
        match &self.ip6 {
            Some(a) => format!("{} {a}", self.ip),
            None => self.ip.clone(),
        }
    }

    /// `/local/domain/<netvm>/backend/vif/<client>/0`.
    pub fn backend_dir(&self) -> String {
        format!(
            "/local/domain/{}/backend/vif/{}/{VIF_DEVID}",
            self.netvm, self.client
        )
    }
}

/// The vif entries `reg` calls for between running qubes: a client whose netvm runs, where the
/// client or the netvm is a hosted unikernel (Linux pairs get a veth instead). `running` maps
/// names to (domid, netns).
pub fn wanted_vifs(
    reg: &Registry,
    running: &BTreeMap<String, (DomId, Option<String>)>,
) -> BTreeMap<String, Vif> {
    let mut out = BTreeMap::new();
    for (name, (cdom, cns)) in running {
        let Ok(c) = reg.get(name) else { continue };
        if c.prefs.netvm.is_empty() || c.ip.is_empty() {
            continue;
        }
        let Some((ndom, nns)) = running.get(&c.prefs.netvm) else {
            continue;
        };
        let Ok(n) = reg.get(&c.prefs.netvm) else {
            continue;
        };
        if !is_unikernel(c) && !is_unikernel(n) {
            continue;
        }
        out.insert(
            name.clone(),
            Vif {
                client: *cdom,
                netvm: *ndom,
                ip: c.ip.clone(),
                ip6: crate::qdb::ip6(reg, name).map(|a| a.to_string()),
                gateway: n.ip.clone(),
                gateway6: crate::qdb::visible_gateway6(reg, name).map(|a| a.to_string()),
                mac: crate::qdb::mac(c.domid),
                client_netns: cns.clone(),
                netvm_netns: nns.clone().filter(|_| !is_unikernel(n)),
            },
        );
    }
    out
}

/// Writes one link's backend and frontend directories.
pub fn write_vif(store: &mut HostedStore, v: &Vif) -> Result<()> {
    let (fe, be) = (v.frontend_dir(), v.backend_dir());
    let mut backend: Entries = vec![
        ("frontend".into(), fe.clone()),
        ("frontend-id".into(), v.client.to_string()),
        ("mac".into(), v.mac.clone()),
        ("ip".into(), v.ip_entry()),
        ("gateway".into(), v.gateway.clone()),
        ("handle".into(), VIF_DEVID.to_string()),
        ("state".into(), "4".into()),
    ];
    if let Some(g) = &v.gateway6 {
        backend.push(("gateway6".into(), g.clone()));
    }
    if let Some(ns) = &v.client_netns {
        backend.push(("hosted-netns".into(), ns.clone()));
    }
    let mut frontend: Entries = vec![
        ("backend".into(), be.clone()),
        ("backend-id".into(), v.netvm.to_string()),
        ("mac".into(), v.mac.clone()),
        ("handle".into(), VIF_DEVID.to_string()),
        ("state".into(), "4".into()),
    ];
    if let Some(ns) = &v.netvm_netns {
        frontend.push(("hosted-netns".into(), ns.clone()));
    }
    write_dirs(
        store,
        &[
            (be, v.netvm, v.client, backend),
            (fe, v.client, v.netvm, frontend),
        ],
    )
}

/// Removes one link's directories (either side may be gone already).
pub fn remove_vif(store: &mut HostedStore, v: &Vif) {
    let _ = with_transaction(store, TX_ATTEMPTS, |s, tx| {
        for dir in [v.backend_dir(), v.frontend_dir()] {
            match s.rm(tx, &dir) {
                Ok(()) | Err(StoreError::Xs(platform_api::XsErrno::Enoent)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Class;

    fn reg() -> Registry {
        let mut r = Registry::default();
        r.create("sys-net", Class::AppVM, "red").unwrap();
        r.set_pref("sys-net", "provides_network", "True").unwrap();
        r.create("fw", Class::AppVM, "green").unwrap();
        r.set_pref("fw", "provides_network", "True").unwrap();
        r.set_pref("fw", "kernel", "/bin/fw").unwrap();
        r.set_pref("fw", "netvm", "sys-net").unwrap();
        r.create("work", Class::AppVM, "blue").unwrap();
        r.set_pref("work", "netvm", "fw").unwrap();
        r.create("mail", Class::AppVM, "blue").unwrap();
        r.set_pref("mail", "netvm", "sys-net").unwrap();
        r
    }

    fn running(names: &[&str], reg: &Registry) -> BTreeMap<String, (DomId, Option<String>)> {
        names
            .iter()
            .map(|n| {
                let d = DomId::new(reg.get(n).unwrap().domid).unwrap();
                (n.to_string(), (d, Some(format!("ns-{n}"))))
            })
            .collect()
    }

    #[test]
    fn links_with_a_unikernel_end_get_vif_entries_linux_pairs_do_not() {
        let r = reg();
        let all = running(&["sys-net", "fw", "work", "mail"], &r);
        let v = wanted_vifs(&r, &all);
        assert_eq!(v.keys().collect::<Vec<_>>(), ["fw", "work"]);
        let work = &v["work"];
        assert_eq!(work.backend_dir(), "/local/domain/2/backend/vif/3/0");
        assert_eq!(work.frontend_dir(), "/local/domain/3/device/vif/0");
        assert_eq!(work.gateway, r.get("fw").unwrap().ip);
        assert_eq!(work.client_netns.as_deref(), Some("ns-work"));
        assert_eq!(
            work.netvm_netns, None,
            "a unikernel netvm has no netns to name"
        );
        let fw = &v["fw"];
        assert_eq!(fw.netvm_netns.as_deref(), Some("ns-sys-net"));
        assert_eq!(fw.mac, "00:16:3e:5e:6c:00");
    }

    #[test]
    fn with_ipv6_the_ip_node_carries_both_addresses_and_gateway6_the_netvms() {
        let mut r = reg();
        r.domains
            .get_mut("sys-net")
            .unwrap()
            .features
            .insert("ipv6".into(), "1".into());
        let v = wanted_vifs(&r, &running(&["sys-net", "fw", "work", "mail"], &r));
        let (fw, work) = (&v["fw"], &v["work"]);
        assert_eq!(work.ip_entry(), "10.137.0.3 fd09:24ef:4179::a89:3");
        assert_eq!(work.gateway6.as_deref(), Some("fd09:24ef:4179::a89:2"));
        assert_eq!(fw.ip_entry(), "10.137.0.2 fd09:24ef:4179::a89:2");
        assert_eq!(fw.gateway6.as_deref(), Some("fd09:24ef:4179::a89:1"));
        let plain = wanted_vifs(&reg(), &running(&["sys-net", "fw", "work"], &reg()));
        assert_eq!(plain["work"].ip_entry(), "10.137.0.3");
        assert_eq!(plain["work"].gateway6, None);
    }

    #[test]
    fn a_link_needs_both_ends_running() {
        let r = reg();
        // work's netvm (fw) is down; mail and sys-net are a Linux pair (a veth).
        assert!(wanted_vifs(&r, &running(&["work", "sys-net", "mail"], &r)).is_empty());
        assert!(wanted_vifs(&r, &running(&["fw"], &r)).is_empty());
    }

    #[test]
    fn the_private_image_is_created_grown_and_never_shrunk() {
        let dir = std::env::temp_dir().join(format!("qsim-img-{}", std::process::id()));
        let mut r = reg();
        let (p, size) = ensure_private_image(&dir, r.get("fw").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(size, 64 << 20, "a hosted unikernel's private volume");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 64 << 20);
        std::fs::write(&p, b"data").unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        r.domains
            .get_mut("fw")
            .unwrap()
            .volumes
            .get_mut("private")
            .unwrap()
            .size = 128 << 20;
        let (_, size) = ensure_private_image(&dir, r.get("fw").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(size, 128 << 20);
        assert_eq!(
            &std::fs::read(&p).unwrap()[..4],
            b"data",
            "kept across a resize"
        );
        r.domains
            .get_mut("fw")
            .unwrap()
            .volumes
            .get_mut("private")
            .unwrap()
            .size = 1 << 20;
        let (_, size) = ensure_private_image(&dir, r.get("fw").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(size, 128 << 20, "never shrunk");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
