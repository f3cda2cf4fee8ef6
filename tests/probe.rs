//! Integration tests for the io_uring capability probe and `ringnet probe`.
//!
//! They expect a kernel with io_uring enabled (the development machine runs 6.18
//! as root). Where io_uring cannot be set up at all (old kernel, seccomp, the
//! `kernel.io_uring_disabled` sysctl) they print the reason and skip.

use std::process::Command;

use ringnet::uring::probe::{probe, ProbeReport};

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

#[test]
fn probe_cli_prints_json() {
    if report_or_skip("probe_cli_prints_json").is_none() {
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_ringnet"))
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
