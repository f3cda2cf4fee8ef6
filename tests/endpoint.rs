//! Endpoint strings through the public API: the parsing table, resolution,
//! and validation before any socket is made.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ringnet::blocking::{Server, Stream};
use ringnet::endpoint::{EndpointError, ToEndpoint};
use ringnet::{Endpoint, ListenOptions};

#[test]
fn good_endpoints_parse() {
    let table: &[(&str, &str, u16)] = &[
        ("127.0.0.1:80", "127.0.0.1", 80),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("localhost:0", "localhost", 0),
        ("my-host.example:65535", "my-host.example", 65535),
        ("[::1]:443", "::1", 443),
        ("[::]:0", "::", 0),
        ("[fe80::1:2]:9", "fe80::1:2", 9),
    ];
    for &(input, host, port) in table {
        let ep: Endpoint = input
            .parse()
            .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        assert_eq!(ep.host(), host, "{input:?}");
        assert_eq!(ep.port(), port, "{input:?}");
    }
}

#[test]
fn bad_endpoints_give_the_exact_error() {
    use EndpointError::*;
    let table: Vec<(&str, EndpointError)> = vec![
        ("localhost", MissingPort),
        ("host:", MissingPort),
        ("[::1]", MissingPort),
        (":80", EmptyHost),
        ("[]:80", EmptyHost),
        ("[::1:80", UnbalancedBrackets),
        ("::1]:80", UnbalancedBrackets),
        ("::1:80", Ipv6NeedsBrackets),
        ("[not-v6]:80", BadIpv6("not-v6".into())),
        ("host:65536", BadPort("65536".into())),
        ("host:-1", BadPort("-1".into())),
        ("host:abc", BadPort("abc".into())),
    ];
    for (input, want) in table {
        let got = Endpoint::parse(input);
        assert_eq!(got, Err(want.clone()), "{input:?}");
        // The message is meant for people: not empty, not Debug output.
        assert!(!want.to_string().is_empty());
    }
    assert!(BadPort("abc".into()).to_string().contains("abc"));
}

#[test]
fn localhost_resolves_to_loopback_and_v6_literal_to_itself() {
    let addrs = Endpoint::parse("localhost:0")
        .expect("parse")
        .resolve()
        .expect("resolve localhost");
    assert!(!addrs.is_empty());
    assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    let v6 = Endpoint::parse("[::1]:0")
        .expect("parse")
        .resolve()
        .expect("resolve");
    assert_eq!(v6, vec!["[::1]:0".parse::<SocketAddr>().expect("addr")]);
}

#[test]
fn every_address_form_converts() {
    let a: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let b: SocketAddr = "[::1]:9".parse().expect("addr");
    assert_eq!(a.to_addrs().expect("addr"), vec![a]);
    assert_eq!("127.0.0.1:9".to_addrs().expect("str"), vec![a]);
    assert_eq!(
        String::from("127.0.0.1:9").to_addrs().expect("String"),
        vec![a]
    );
    assert_eq!(("127.0.0.1", 9).to_addrs().expect("pair"), vec![a]);
    assert_eq!(("::1", 9).to_addrs().expect("v6 pair"), vec![b]);
    assert_eq!((a.ip(), 9).to_addrs().expect("ip pair"), vec![a]);
    assert_eq!(Endpoint::from(b).to_addrs().expect("endpoint"), vec![b]);
    assert_eq!([a, b].to_addrs().expect("array"), vec![a, b]);
    let slice: &[SocketAddr] = &[a, b];
    assert_eq!(slice.to_addrs().expect("slice"), vec![a, b]);
    assert_eq!(vec![b, a].to_addrs().expect("vec"), vec![b, a]);
}

fn endpoint_error(e: &io::Error) -> Option<&EndpointError> {
    e.get_ref().and_then(|inner| inner.downcast_ref())
}

#[test]
fn bad_strings_fail_before_any_socket() {
    let err = Stream::connect("localhost", Some(Duration::from_secs(1))).expect_err("no port");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(endpoint_error(&err), Some(&EndpointError::MissingPort));

    let err = Stream::connect("127.0.0.1:99999", None).expect_err("bad port");
    assert_eq!(
        endpoint_error(&err),
        Some(&EndpointError::BadPort("99999".into()))
    );

    match Server::bind("::1:0", ListenOptions::default()) {
        Err(e @ ringnet::Error::Endpoint(EndpointError::Ipv6NeedsBrackets)) => {
            assert!(e.to_string().contains("brackets"), "{e}");
        }
        other => panic!("expected Error::Endpoint(Ipv6NeedsBrackets), got {other:?}"),
    }
}
