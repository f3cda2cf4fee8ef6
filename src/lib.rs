//! ringnet: a Linux-only TCP server engine on io_uring.
//!
//! One worker thread per ring. Each worker keeps a multishot accept on the
//! listening socket and one multishot recv per connection, with buffers
//! taken from provided buffer rings; connections live in a slab, and every
//! completion is matched to its connection by a token carrying the slab
//! key and a generation (handlers see it as a [`ConnId`]). User code implements
//! [`Handler`]; see the [`handler`] module for the contract.
//!
//! ```no_run
//! use ringnet::{Config, Conn, Engine, Handler};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     type State = ();
//!     fn on_open(&mut self, _conn: &mut Conn<'_>) {}
//!     fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
//!         conn.send(data);
//!         data.len()
//!     }
//! }
//!
//! let engine = Engine::start(Config::default(), |_worker| Echo)?;
//! println!("listening on {}", engine.local_addr());
//! engine.shutdown()?;
//! # Ok::<(), ringnet::Error>(())
//! ```
//!
//! # Cargo features
//!
//! * `tools` (default): the `ringnet` command and what it runs besides the
//!   engine: the load generator (`bench`), the tokio reference server
//!   (`reference`) and the demo handlers behind `ringnet serve` (`app`).
//!   They bring clap, tokio, hdrhistogram, serde_json, httparse, env_logger
//!   and anyhow; with `default-features = false` the crate is the engine
//!   alone.
//!
//! The library never prints: it logs through the [`log`](https://docs.rs/log)
//! facade (falling back to epoll is a warning), so the application decides
//! where messages go; the `ringnet` command shows warnings on stderr and
//! takes its level from `RUST_LOG`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
#[cfg(feature = "tools")]
pub mod app;
#[cfg(feature = "tools")]
pub mod bench;
pub mod blocking;
mod bus;
mod config;
mod conn;
pub mod connect;
mod driver;
pub mod endpoint;
mod engine;
mod error;
pub mod framing;
pub mod handler;
pub mod listener;
pub mod message;
mod reason;
#[cfg(feature = "tools")]
pub mod reference;
mod reply;
mod stats;
#[allow(unsafe_code)]
mod sys;
pub mod timer;
pub mod tls;
mod token;
pub mod udp;
#[allow(unsafe_code)]
pub mod uring;
mod worker;

pub use address::{Address, PeerCredentials, UnixAddr};
pub use bus::SendError;
pub use config::{Backend, BackendChoice, BufferMode, Config, ListenerMode};
pub use connect::ConnectError;
pub use endpoint::Endpoint;
pub use engine::{Engine, ShutdownReport};
pub use error::Error;
pub use handler::{CloseReason, Conn, Ctx, Handler};
pub use listener::ListenOptions;
pub use stats::Stats;
pub use token::ConnId;

/// Wait for SIGINT, SIGTERM or SIGHUP (blocked first with
/// [`block_stop_signals`]); returns the signal number. `ringnet serve`
/// stops on the first two and reloads its TLS certificate on SIGHUP.
pub fn wait_for_stop_signal() -> std::io::Result<i32> {
    sys::wait_for_stop_signal()
}

/// Wait up to `timeout` for SIGINT, SIGTERM or SIGHUP (blocked first with
/// [`block_stop_signals`]); `Ok(None)` when none came.
pub fn wait_for_stop_signal_timeout(timeout: std::time::Duration) -> std::io::Result<Option<i32>> {
    sys::wait_for_stop_signal_timeout(timeout)
}

/// Pin the calling thread to CPU `cpu` (for benchmarks and load generators;
/// workers are pinned through [`Config::cpus`]).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    sys::pin_current_thread(cpu)
}

/// Block SIGINT, SIGTERM and SIGHUP in the calling thread and the threads it starts
/// afterwards, so that [`wait_for_stop_signal`] receives them.
pub fn block_stop_signals() -> std::io::Result<()> {
    sys::block_stop_signals()
}

/// The README's examples, compiled as doc tests so they keep up with the
/// API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
