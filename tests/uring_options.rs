//! The io_uring options for experimenters: SQPOLL, a registered ring
//! descriptor, buffer rings on huge pages, incremental buffer consumption,
//! fixed send buffers. Each serves echo correctly on
//! its own and all together, says in the counters that it is in effect, and
//! a setting the kernel refuses (or that makes no sense) stops the engine
//! from starting with a reason, never silently. The epoll backend ignores
//! them and serves as usual.

#[macro_use]
mod util;

use std::time::Duration;

use ringnet::{Backend, Config, Engine};

fn serve_and_check(cfg: Config, what: &str) -> ringnet::Stats {
    let engine = util::echo_engine(cfg);
    let addr = engine.local_addr();
    let clients: Vec<_> = (0..4u64)
        .map(|i| std::thread::spawn(move || util::echo_roundtrip(addr, util::pattern(i, 200_000))))
        .collect();
    for c in clients {
        c.join()
            .unwrap_or_else(|_| panic!("{what}: a client failed"));
    }
    let mut s = util::connect(addr);
    for i in 0..100u64 {
        util::ping(&mut s, &util::pattern(100 + i, 64));
    }
    drop(s);
    let stats = util::wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
    stats
}

fn with(backend: Backend, f: impl FnOnce(&mut Config)) -> Config {
    let mut cfg = util::config(backend);
    f(&mut cfg);
    cfg
}

/// Each option alone and all of them together serve every byte; on
/// io_uring the counters say they took effect.
fn each_option_serves_and_says_so(backend: Backend) {
    let uring = backend == Backend::Uring;
    let s = serve_and_check(
        with(backend, |c| c.sqpoll_idle = Some(Duration::from_millis(20))),
        "sqpoll",
    );
    assert_eq!(s.accepted, 5);
    let s = serve_and_check(with(backend, |c| c.register_ring = true), "register ring");
    assert_eq!(s.registered_rings, u64::from(uring), "{s:?}");
    let s = serve_and_check(with(backend, |c| c.buf_huge_pages = true), "huge pages");
    assert_eq!(s.huge_page_rings + s.thp_rings, u64::from(uring), "{s:?}");
    let s = serve_and_check(
        with(backend, |c| c.fixed_send_buffers = true),
        "fixed send buffers",
    );
    if uring {
        // Replies from the registered buffers went with SEND_ZC, each
        // buffer back only after its notification (the baseline wait).
        assert!(
            s.buffer_replies > 0 && s.zc_sends == s.buffer_replies,
            "{s:?}"
        );
    }
    let s = serve_and_check(
        with(backend, |c| {
            c.sqpoll_idle = Some(Duration::from_millis(20));
            c.sqpoll_cpu = Some(0);
            c.fixed_send_buffers = true;
            c.register_ring = true;
            c.buf_huge_pages = true;
        }),
        "all together",
    );
    assert_eq!(s.registered_rings, u64::from(uring), "{s:?}");
}

/// Incremental buffer consumption with 64 KiB buffers: many clients'
/// small messages share buffers, bulk streams fill them, every byte comes
/// back in order and every buffer is back at the end.
fn incremental_buffers_carry_small_and_bulk_input(backend: Backend) {
    let cfg = with(backend, |c| {
        c.buf_incremental = true;
        c.buf_size = 64 << 10;
        c.buf_count = 16;
    });
    let engine = util::echo_engine(cfg);
    let addr = engine.local_addr();
    let mut clients: Vec<_> = (0..20u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = util::connect(addr);
                for j in 0..50u64 {
                    util::ping(
                        &mut s,
                        &util::pattern(i * 100 + j, 1 + (j as usize * 13) % 200),
                    );
                }
            })
        })
        .collect();
    clients.extend((0..3u64).map(|i| {
        std::thread::spawn(move || util::echo_roundtrip(addr, util::pattern(1000 + i, 1 << 20)))
    }));
    for c in clients {
        c.join().expect("client");
    }
    let s = util::wait_baseline(&engine);
    if backend == Backend::Uring {
        assert!(s.partial_buffers > 100, "buffers were not shared: {s:?}");
    }
    engine.shutdown().expect("shutdown");
}

/// Settings that make no sense are refused before anything starts, naming
/// the setting.
fn nonsense_settings_are_refused(backend: Backend) {
    for (cfg, needle) in [
        (with(backend, |c| c.sqpoll_cpu = Some(0)), "sqpoll_cpu"),
        (
            with(backend, |c| c.sqpoll_idle = Some(Duration::ZERO)),
            "sqpoll_idle",
        ),
        (
            with(backend, |c| {
                c.buf_incremental = true;
                c.recv_bundle = true;
            }),
            "buf_incremental and recv_bundle",
        ),
    ] {
        match Engine::start(cfg, |_| util::Echo) {
            Err(ringnet::Error::Config(why)) => assert!(why.contains(needle), "{why}"),
            Err(e) => panic!("{needle}: {e}"),
            Ok(_) => panic!("{needle}: accepted"),
        }
    }
}

/// An SQPOLL thread pinned to a CPU that does not exist: the kernel
/// refuses the ring, and the engine says so instead of starting.
#[test]
fn sqpoll_on_a_cpu_that_does_not_exist_is_an_error() {
    let cfg = with(Backend::Uring, |c| {
        c.sqpoll_idle = Some(Duration::from_millis(20));
        c.sqpoll_cpu = Some(4095);
    });
    match Engine::start(cfg, |_| util::Echo) {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("SQPOLL"), "{text}");
        }
        Ok(_) => panic!("a ring with SQPOLL on CPU 4095 was accepted"),
    }
}

both!(
    each_option_serves_and_says_so,
    incremental_buffers_carry_small_and_bulk_input,
    nonsense_settings_are_refused
);
