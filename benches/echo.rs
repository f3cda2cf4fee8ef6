//! Echo round trips per second: the io_uring backend against the epoll one.
//!
//! For every number of connections (1, 32) and message size (64 B, 4096 B)
//! there is a criterion group `echo/{conns}conn/{size}B` with two contenders,
//! `io_uring` and `epoll`: a ringnet engine on that backend, one worker pinned
//! to CPU 0, the echo handler (`common::Echo`). The client runs on the
//! bench thread, pinned to CPU 1, with `conns` blocking `TcpStream`s
//! (`TCP_NODELAY` on) opened once per bench. One iteration is one round trip
//! on every connection: write `size` bytes to each stream, then read `size`
//! bytes back from each (so with 32 connections 32 requests are in flight at
//! once) and check that they are the bytes sent. Throughput is reported in
//! elements per second, one element being one round trip.
//!
//! `RINGNET_BACKEND` is removed from the environment first, and each engine
//! must report the backend that was asked for, so both contenders really run
//! on their own backend.
//!
//! Run with `cargo bench --bench echo` (add `-- 32conn` or any other regex to
//! run only the matching benches). The HTML report lands in
//! `target/criterion/report/index.html`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{start_engine, CLIENT_CPU};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringnet::{Backend, Engine};

const CONNS: [usize; 2] = [1, 32];
const SIZES: [usize; 2] = [64, 4096];

/// `conns` connections to one server and the bytes that go over them.
struct Client {
    streams: Vec<TcpStream>,
    /// The message each connection sends (it differs per connection, so
    /// crossed replies are caught).
    sent: Vec<Vec<u8>>,
    recv: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr, conns: usize, size: usize) -> Client {
        let streams: Vec<TcpStream> = (0..conns)
            .map(|_| {
                let s = TcpStream::connect(addr).expect("connect to the server");
                s.set_nodelay(true).expect("TCP_NODELAY");
                // A server that stops answering fails the bench, not hangs it.
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("read timeout");
                s
            })
            .collect();
        let sent = (0..conns)
            .map(|i| (0..size).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        let mut client = Client {
            streams,
            sent,
            recv: vec![0; size],
        };
        // Every connection is accepted and served once before measuring.
        client.round_trip();
        client
    }

    /// Write the message on every connection, then read every echo back.
    fn round_trip(&mut self) {
        for (stream, msg) in self.streams.iter_mut().zip(&self.sent) {
            stream.write_all(msg).expect("write the message");
        }
        for (stream, msg) in self.streams.iter_mut().zip(&self.sent) {
            stream.read_exact(&mut self.recv).expect("read the echo");
            assert!(self.recv == *msg, "the server echoed something else");
        }
    }
}

fn echo(c: &mut Criterion) {
    ringnet::pin_current_thread(CLIENT_CPU).expect("pin the client thread");

    for conns in CONNS {
        for size in SIZES {
            let mut group = c.benchmark_group(format!("echo/{conns}conn/{size}B"));
            group
                .throughput(Throughput::Elements(conns as u64))
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(3));
            for backend in [Backend::Uring, Backend::Epoll] {
                // Started on the first call of the routine, so a bench that
                // the filter leaves out starts no engine.
                let mut running: Option<(Engine, Client)> = None;
                group.bench_function(backend.to_string(), |b| {
                    let (_engine, client) = running.get_or_insert_with(|| {
                        let engine = start_engine(backend, true);
                        let client = Client::connect(engine.local_addr(), conns, size);
                        (engine, client)
                    });
                    b.iter(|| client.round_trip());
                });
                if let Some((engine, client)) = running {
                    drop(client);
                    engine
                        .shutdown()
                        .unwrap_or_else(|e| panic!("shutting the {backend} engine down: {e}"));
                }
            }
            group.finish();
        }
    }
}

criterion_group!(benches, echo);
criterion_main!(benches);
