//! Integration tests for the io_uring capability probe and `ringnet probe`.
//!
//! They expect a kernel with io_uring enabled (the development machine runs 6.18
//! as root). Where io_uring cannot be set up at all (old kernel, seccomp, the
//! `kernel.io_uring_disabled` sysctl) they print the reason and skip.

mod util;

use ringnet::uring::probe::{probe, ProbeReport};
use util::Echo;

/// The probe report, or `None` (after saying why) when io_uring is unavailable.
fn report_or_skip(test: &str) -> Option<ProbeReport> {
    let report = probe();
    match &report.uring {
        Ok(()) => Some(report),
        Err(err) => {
            eprintln!("skipping {test}: {err} (kernel {})", report.kernel);
            None
        }
    }
}

#[test]
fn probe_finds_the_features_the_engine_needs() {
    let Some(report) = report_or_skip("probe_finds_the_features_the_engine_needs") else {
        return;
    };
    eprintln!("{}", report.to_table());
    for name in [
        "multishot accept",
        "multishot recv",
        "provided buffer rings",
        "NODROP",
    ] {
        let feature = report
            .feature(name)
            .unwrap_or_else(|| panic!("feature {name:?} missing from the report"));
        assert!(
            feature.supported,
            "{name} should be supported here: {}",
            feature.detail
        );
    }
}

/// The engine's closes post no completion when they succeed: the probe
/// closes a socket through the engine's submission path and checks that
/// nothing completed, that the socket's peer saw the end, and that a close
/// that fails still completes (EBADF). A kernel with multishot recv (6.0,
/// which the engine needs) has CQE_SKIP_SUCCESS (5.17).
#[test]
fn probe_finds_closes_complete_only_on_failure() {
    let Some(report) = report_or_skip("probe_finds_closes_complete_only_on_failure") else {
        return;
    };
    let recv = report
        .feature("multishot recv")
        .expect("multishot recv listed");
    if !recv.supported {
        eprintln!(
            "skipped: no multishot recv (Linux 6.0) here: {}",
            recv.detail
        );
        return;
    }
    let skip = report
        .feature("CQE_SKIP_SUCCESS")
        .expect("CQE_SKIP_SUCCESS listed");
    assert_eq!(skip.since, "5.17");
    assert!(skip.supported, "{}", skip.detail);
    assert!(skip.detail.contains("EBADF"), "{}", skip.detail);
}

#[cfg(feature = "tools")]
#[test]
fn probe_cli_prints_json() {
    if report_or_skip("probe_cli_prints_json").is_none() {
        return;
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringnet"))
        .args(["probe", "--json"])
        .output()
        .expect("running `ringnet probe --json`");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`ringnet probe --json` failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(r#""name":"multishot accept","supported":true"#),
        "unexpected `ringnet probe --json` output:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// A blocking receive with a timeout on `s` that must run the whole timeout
/// out: `Interrupted` means the kernel sent this thread a notification.
fn quiet_wait(s: &std::net::UdpSocket, after: &str) {
    let mut buf = [0u8; 16];
    match s.recv(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a blocking recv on the caller's thread after {after}: {other:?}"),
    }
}

/// Starting an io_uring engine (or probing) must not disturb the calling
/// thread. A thread that submitted to a ring is sent a task-work
/// notification when that ring is torn down, and that notification turns a
/// blocking call with a timeout (SO_RCVTIMEO) into EINTR. The probe rings
/// live on a throwaway thread, so the caller's blocking sockets are safe.
#[test]
fn starting_an_engine_does_not_interrupt_the_callers_blocking_calls() {
    if report_or_skip("starting_an_engine_does_not_interrupt_the_callers_blocking_calls").is_none()
    {
        return;
    }
    let idle = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    idle.set_read_timeout(Some(std::time::Duration::from_millis(250)))
        .expect("timeout");
    for round in 0..3 {
        let _ = probe();
        quiet_wait(&idle, &format!("probe() (round {round})"));
        ringnet::uring::probe::engine_requirements().expect("io_uring engine requirements");
        quiet_wait(&idle, &format!("engine_requirements() (round {round})"));
        let cfg = ringnet::Config {
            listeners: vec![ringnet::listener::ListenerSpec::bind(
                "127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"),
            )],
            workers: 1,
            backend: ringnet::BackendChoice::Uring,
            ..ringnet::Config::default()
        };
        let engine = ringnet::Engine::start(cfg.clone(), |_| Echo).expect("engine");
        quiet_wait(&idle, &format!("Engine::start (round {round})"));
        engine.shutdown().expect("shutdown");
        let udp = ringnet::udp::engine::UdpEngine::start(cfg, |_| ringnet::udp::engine::UdpEcho)
            .expect("udp engine");
        quiet_wait(&idle, &format!("UdpEngine::start (round {round})"));
        udp.shutdown().expect("shutdown");
    }
}
