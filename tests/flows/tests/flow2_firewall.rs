//! Flow 2: an AppVM behind the firewall unikernel reaches sys-net's HTTP server; a
//! `qvm-firewall` rule blocks it at once; deleting the rule lets it through again.

use std::time::Instant;

use flows::{have, is_root, unikernel_bin, wait_for, Installed, DEADLINE};

/// `curl` in `work`, typed there: the body on success, the exit status otherwise.
fn curl(q: &Installed, url: &str) -> Result<String, i32> {
    let (code, out, _) = q.in_vm("work", &format!("curl -sS -m 3 {url}"));
    if code == 0 {
        Ok(out)
    } else {
        Err(code)
    }
}

#[test]
fn flow2_firewall_unikernel_forwards_and_qvm_firewall_blocks_at_once() {
    if !is_root() || !have("ip") || !have("curl") {
        assert!(
            std::env::var_os("CI").is_none(),
            "flow 2 needs root, ip and curl (network namespaces and TAP devices); CI must provide them"
        );
        flows::report("flow 2: skipped: needs root, ip and curl for the qubes' network namespaces");
        return;
    }
    let fw = unikernel_bin("firewall");
    let mut q = Installed::new("flow2");

    // dom0: the bundle's setup makes fw-unikernel (netvm sys-net); work goes behind it.
    let out = q.setup(&[("firewall", &fw, "")]);
    assert!(
        out.contains("qvm-prefs fw-unikernel netvm sys-net"),
        "{out}"
    );
    q.ok("qvm-prefs", &["work", "netvm", "fw-unikernel"]);
    q.start(true);
    for vm in ["sys-net", "fw-unikernel", "work"] {
        q.ok("qvm-start", &[vm]);
    }
    wait_for(
        "the firewall's uplink and work's vif are up",
        DEADLINE,
        || {
            let c = q.console("fw-unikernel");
            c.contains("uplink up: ") && c.contains("client vif")
        },
        || q.diag(),
    );

    // sys-net: a tiny HTTP server on its own address, port 80 and 8080.
    let net_ip = q
        .in_vm_ok("sys-net", "qubesdb-read /qubes-netvm-gateway")
        .trim()
        .to_string();
    let www = q.vm_dir("sys-net").join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from sys-net\n").unwrap();
    for port in ["80", "8080"] {
        let pid = q.pid_file("sys-net", &format!("http-{port}.pid"));
        q.spawn_in(
            "sys-net",
            &format!(
                "echo $$ > {}; cd \"$QUBES_SIM_VM_DIR/www\" && exec python3 -m http.server {port} --bind {net_ip}",
                pid.display()
            ),
        );
    }
    for port in ["80", "8080"] {
        wait_for(
            &format!("sys-net's HTTP server on port {port}"),
            DEADLINE,
            || {
                q.in_vm("sys-net", &format!("curl -sS -m 2 http://{net_ip}:{port}/"))
                    .0
                    == 0
            },
            || q.diag(),
        );
    }

    // work: curl through the firewall.
    let url = format!("http://{net_ip}/");
    let url_8080 = format!("http://{net_ip}:8080/");
    let first = std::cell::RefCell::new(Err(0));
    wait_for(
        "work reaches sys-net through fw-unikernel",
        DEADLINE,
        || {
            *first.borrow_mut() = curl(&q, &url);
            first.borrow().is_ok()
        },
        || format!("last curl: {:?}\n{}", first.borrow(), q.diag()),
    );
    assert_eq!(first.borrow().as_deref(), Ok("hello from sys-net\n"));

    // dom0: drop tcp/80 to sys-net for work; the very next connection is dropped.
    let t = Instant::now();
    q.ok(
        "qvm-firewall",
        &[
            "work",
            "add",
            "--before",
            "0",
            "action=drop",
            &format!("dsthost={net_ip}"),
            "proto=tcp",
            "dstports=80",
        ],
    );
    let rule_took = t.elapsed();
    let blocked = curl(&q, &url);
    assert!(
        blocked.is_err(),
        "the first connection after qvm-firewall's drop rule got through: {blocked:?}\n{}",
        q.diag()
    );
    // Only that port: the firewall still forwards work's other traffic to sys-net.
    assert_eq!(
        curl(&q, &url_8080).as_deref(),
        Ok("hello from sys-net\n"),
        "port 8080 is not covered by the rule\n{}",
        q.diag()
    );
    let listed = q.ok("qvm-firewall", &["work", "list"]);
    assert!(listed.contains("drop"), "{listed}");

    // dom0: delete the rule; work reaches port 80 again.
    q.ok("qvm-firewall", &["work", "del", "--rule-no", "0"]);
    let again = curl(&q, &url);
    assert_eq!(
        again.as_deref(),
        Ok("hello from sys-net\n"),
        "not allowed again after the rule was removed\n{}",
        q.diag()
    );

    flows::report(&format!(
        "flow 2: work (netvm fw-unikernel, made by the installed qubes-unikernel-setup) fetched sys-net's HTTP page at {net_ip} through the hosted firewall unikernel; `qvm-firewall work add --before 0 action=drop dsthost={net_ip} proto=tcp dstports=80` (returned in {} ms) blocked the very next curl (exit {}) while :8080 still worked; deleting the rule let it through again",
        rule_took.as_millis(),
        blocked.err().unwrap_or(0)
    ));
}
