//! What the criterion benches share: CPU placement and the engine under test.
// Each bench uses the parts it needs.
#![allow(dead_code)]

use std::net::SocketAddr;

use ringnet::{Backend, Config, Conn, Engine, Handler};

/// The server under test: echoes every byte.
pub struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}

/// CPU the server (engine worker or other runtime) runs on.
pub const SERVER_CPU: usize = 0;
/// CPU the client (the bench thread) runs on.
pub const CLIENT_CPU: usize = 1;

/// Loopback port 0, one worker pinned to the server CPU, on `backend`
/// (`RINGNET_BACKEND` is cleared: it would override the contender's choice).
pub fn bench_config(backend: Backend) -> Config {
    std::env::remove_var("RINGNET_BACKEND");
    Config {
        listeners: vec![ringnet::listener::ListenerSpec::bind(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        )))],
        workers: 1,
        backend: backend.into(),
        cpus: vec![SERVER_CPU],
        ..Config::default()
    }
}

/// A ringnet echo engine on `backend` with one worker pinned to the server
/// CPU; `defer_taskrun` picks the io_uring ring setup. Panics unless the
/// engine runs on the backend asked for, so a contender cannot quietly
/// measure the other backend.
pub fn start_engine(backend: Backend, defer_taskrun: bool) -> Engine {
    start_engine_with(
        backend,
        Config {
            defer_taskrun,
            ..bench_config(backend)
        },
    )
}

/// [`start_engine`] with a whole configuration (its backend must be
/// `backend`).
pub fn start_engine_with(backend: Backend, cfg: Config) -> Engine {
    let engine = Engine::start(cfg, |_worker| Echo)
        .unwrap_or_else(|e| panic!("starting the {backend} engine failed: {e}"));
    assert_eq!(
        engine.backend(),
        backend,
        "asked for the {backend} backend, the engine runs on {}",
        engine.backend()
    );
    engine
}
