//! hosted-xenstored: the hosted backend's xenstore daemon. Serves `<run>/xenstore/d<N>.sock`
//! for the domains on the command line and for any `<run>/xenstore/d<N>.want` that appears.
#![forbid(unsafe_code)]

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env_dir = std::env::var_os("QUBES_HOSTED_DIR").map(std::path::PathBuf::from);
    let (dir, domids) = match platform_hosted::store::parse_args(&args, env_dir) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("hosted-xenstored: {e}");
            std::process::exit(2);
        }
    };
    let daemon = match platform_hosted::store::Daemon::spawn(&dir, &domids) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "hosted-xenstored: cannot listen under {}: {e}",
                dir.display()
            );
            std::process::exit(1);
        }
    };
    // One line on stdout tells a parent process the sockets exist.
    println!(
        "hosted-xenstored: ready in {}",
        platform_hosted::store::store_dir(&dir).display()
    );
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
        let _ = &daemon;
    }
}
