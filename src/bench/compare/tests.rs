//! Reading a contender's start-up line, medians, the contenders of each
//! mode, `--against`, and round-by-round ratios.

use super::*;

#[test]
fn start_up_lines_give_the_address() {
    assert_eq!(
        parse_addr("ringnet: serving echo on 127.0.0.1:4567 (io_uring backend, 1 workers)\n"),
        Some("127.0.0.1:4567".parse().expect("addr"))
    );
    assert_eq!(
        parse_addr("ringnet: serving tokio-echo on [::1]:80\n"),
        Some("[::1]:80".parse().expect("addr"))
    );
    assert_eq!(parse_addr("garbage"), None);
}

#[test]
fn medians() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median(vec![]), None);
}

#[test]
fn contenders_per_mode() {
    let names = |m| {
        contenders(m, 0, &[], None)
            .into_iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(Mode::Echo), ["io_uring", "epoll", "tokio"]);
    assert_eq!(names(Mode::Http), ["io_uring", "epoll"]);
}

#[test]
fn against_needs_a_name_and_a_place_to_listen() {
    let c = Contender::against("py=python3 -m x --port {port}").expect("ok");
    assert_eq!(c.name, "py");
    for bad in [
        "no-equals",
        "=cmd {port}",
        "two words=cmd {port}",
        "x=cmd without port",
    ] {
        assert!(
            matches!(Contender::against(bad), Err(BenchError::Usage(_))),
            "{bad}"
        );
    }
}

/// A run whose server used `cpu_us` µs for 1000 operations.
fn run_using(cpu_us: u64) -> RunResult {
    crate::bench::report::test_run(Duration::from_micros(cpu_us * 1000), 1000)
}

#[test]
fn the_round_by_round_ratio_pairs_runs_of_one_round() {
    // The machine flips between a fast and a slow mode between rounds:
    // the medians compare a slow run with a fast one, the rounds don't.
    let cmp = Comparison {
        mode: Mode::Echo,
        results: vec![
            (
                "io_uring".into(),
                vec![run_using(10), run_using(20), run_using(20)],
            ),
            (
                "floor".into(),
                vec![run_using(9), run_using(19), run_using(9)],
            ),
        ],
    };
    let paired = cmp.cpu_ratio_by_round("floor").expect("a ratio");
    // The medians (20 and 9) would say 2.2.
    assert!((paired - 10.0 / 9.0).abs() < 1e-9, "{paired}");
    assert!(
        cmp.to_table().contains("1.111 io_uring/floor"),
        "{}",
        cmp.to_table()
    );
    assert_eq!(cmp.cpu_ratio_by_round("tokio"), None);
    let json = cmp.to_json();
    assert!(
        json["cpu_ratio_by_round"]["floor"].as_f64().is_some(),
        "{json}"
    );
}
