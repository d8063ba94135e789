//! The vault as a `runloop` app: opens the private volume's blkfront at start and hands every
//! qrexec event to the [`Engine`] through a [`Cx`]-backed [`Io`].

use core::fmt;

use platform_api::{Entropy as _, Instant, Platform};
use runloop::{Admit, App, AppError, Call, CallId, Cx};

use crate::config::VaultConfig;
use crate::engine::{Engine, Io, SERVICES};
use vault_store::PlatformDevice;

/// The private volume (`xvdb`), where Qubes attaches a qube's private storage.
pub const PRIVATE_DEVID: u32 = 51728;

/// The run loop's bounds for this configuration: every session and one prompt per session.
pub fn runloop_config(cfg: &VaultConfig) -> runloop::Config {
    runloop::Config {
        max_calls: cfg.max_sessions.saturating_mul(2),
        ..runloop::Config::default()
    }
}

/// The app.
pub struct VaultApp<P: Platform> {
    cfg: VaultConfig,
    engine: Option<Engine<PlatformDevice<P::Block>>>,
}

impl<P: Platform> fmt::Debug for VaultApp<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultApp")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> VaultApp<P> {
    /// The vault with this configuration (the engine is built at start).
    pub fn new(cfg: VaultConfig) -> Self {
        Self { cfg, engine: None }
    }
}

struct CxIo<'a, 'b, P: Platform>(&'a mut Cx<'b, P>);

impl<P: Platform> Io for CxIo<'_, '_, P> {
    fn now(&self) -> Instant {
        self.0.now()
    }
    fn send(&mut self, id: u32, data: &[u8]) -> bool {
        self.0.send(CallId(id), data).is_ok()
    }
    fn send_space(&self, id: u32) -> usize {
        self.0.send_space(CallId(id))
    }
    fn finish(&mut self, id: u32, code: i32) {
        self.0.finish(CallId(id), code);
    }
    fn call(&mut self, target: &str, service_and_arg: &str) -> Option<u32> {
        match self.0.call(target, service_and_arg) {
            Ok(id) => Some(id.0),
            Err(e) => {
                self.0.log(format_args!(
                    "call {service_and_arg} to {target} failed: {e}"
                ));
                None
            }
        }
    }
    fn end_input(&mut self, id: u32) {
        self.0.end_input(CallId(id));
    }
    fn log(&mut self, args: fmt::Arguments<'_>) {
        self.0.log(args);
    }
    fn entropy(&mut self, buf: &mut [u8]) {
        self.0.env.entropy.fill(buf);
    }
}

impl<P: Platform> App<P> for VaultApp<P> {
    fn services(&self) -> &[&str] {
        SERVICES
    }

    fn start(&mut self, cx: &mut Cx<'_, P>) -> Result<(), AppError> {
        let dev = match P::blkfront(cx.env, PRIVATE_DEVID) {
            Ok(d) => Some(PlatformDevice(d)),
            Err(e) => {
                cx.log(format_args!(
                    "no private volume ({e}): keys are kept in memory only"
                ));
                None
            }
        };
        for word in &self.cfg.ignored {
            cx.log(format_args!("kernel option {word:?} is not ours: ignored"));
        }
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        cx.env.entropy.fill(seed.as_mut());
        let engine = Engine::new(self.cfg.clone(), dev, &seed)
            .map_err(|_| AppError::Failed("private volume unreadable"))?;
        cx.log(format_args!(
            "ssh-agent vault ready, key store {}",
            engine.store_state()
        ));
        self.engine = Some(engine);
        Ok(())
    }

    fn call(&mut self, cx: &mut Cx<'_, P>, id: CallId, call: &Call<'_>) -> Admit {
        let Some(e) = self.engine.as_mut() else {
            return Admit::Refuse;
        };
        if e.call(
            &mut CxIo(cx),
            id.0,
            call.service,
            call.argument,
            call.source,
        ) {
            Admit::Accept
        } else {
            Admit::Refuse
        }
    }

    fn input(&mut self, cx: &mut Cx<'_, P>, id: CallId, data: &[u8]) {
        if let Some(e) = self.engine.as_mut() {
            e.input(&mut CxIo(cx), id.0, data);
        }
    }

    fn input_end(&mut self, cx: &mut Cx<'_, P>, id: CallId) {
        if let Some(e) = self.engine.as_mut() {
            e.input_end(&mut CxIo(cx), id.0);
        }
    }

    fn output(&mut self, _cx: &mut Cx<'_, P>, id: CallId, data: &[u8]) {
        if let Some(e) = self.engine.as_mut() {
            e.output(id.0, data);
        }
    }

    fn closed(&mut self, cx: &mut Cx<'_, P>, id: CallId, exit: Option<i32>) {
        if let Some(e) = self.engine.as_mut() {
            e.closed(&mut CxIo(cx), id.0, exit);
        }
    }

    fn poll(&mut self, cx: &mut Cx<'_, P>) -> Option<Instant> {
        self.engine.as_mut().and_then(|e| e.poll(&mut CxIo(cx)))
    }
}
