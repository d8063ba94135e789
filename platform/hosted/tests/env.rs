//! `env_from_environment` as a hosted process sees it: the `QUBES_HOSTED_*` variables, the name
//! from xenstore when `QUBES_HOSTED_NAME` is unset. One test, so no other test shares the env.

use std::path::PathBuf;

use platform_api::{DomId, PlatformError, Store, Tx};
use platform_hosted::store::{connect, Daemon};
use platform_hosted::{env_from_environment, ENV_CMDLINE, ENV_NAME};

#[test]
fn env_from_environment_reads_the_variables_and_falls_back_to_xenstore_name() {
    let dir: PathBuf = std::env::temp_dir().join(format!("hosted-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::env::remove_var("QUBES_HOSTED_DIR");
    assert!(matches!(
        env_from_environment(),
        Err(PlatformError::Unsupported(
            "running outside the sim (QUBES_HOSTED_DIR unset)"
        ))
    ));
    let d0 = DomId::new(0).unwrap();
    let d9 = DomId::new(9).unwrap();
    let xs = Daemon::spawn(&dir, &[d0, d9]).unwrap();
    connect(&dir, d0)
        .unwrap()
        .write(Tx::NONE, "/local/domain/9/name", b"fw-unikernel")
        .unwrap();
    std::env::set_var("QUBES_HOSTED_DIR", &dir);
    std::env::set_var("QUBES_HOSTED_DOMID", "nine");
    assert!(matches!(
        env_from_environment(),
        Err(PlatformError::Unsupported("QUBES_HOSTED_DOMID invalid"))
    ));
    std::env::set_var("QUBES_HOSTED_DOMID", "9");
    std::env::remove_var(ENV_NAME);
    std::env::set_var(ENV_CMDLINE, "--limits=small");
    let env = env_from_environment().unwrap();
    assert_eq!(env.domid, d9);
    assert_eq!(env.name, "fw-unikernel");
    assert_eq!(env.cmdline, "--limits=small");
    drop(env);
    std::env::set_var(ENV_NAME, "given");
    std::env::remove_var(ENV_CMDLINE);
    let mut env = env_from_environment().unwrap();
    assert_eq!((env.name.as_str(), env.cmdline.as_str()), ("given", ""));
    assert_eq!(env.store.read(Tx::NONE, "name").unwrap(), b"fw-unikernel");
    drop(env);
    drop(xs);
    let _ = std::fs::remove_dir_all(&dir);
}
