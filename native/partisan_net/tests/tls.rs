//! TLS between real nodes over loopback in one process: mutual TLS carries messages of every
//! size in order (the writer-only path), a certificate of another CA is refused and counted, and
//! a reload picks up new files. Certificates are made here with rcgen (test-only keys).

mod common;
use common::stat;
use bytes::Bytes;
use partisan_core::channel::ChannelSpec;
use partisan_core::frame::Dest;
use partisan_net::tls::{TlsOptions, TlsSide, Verify};
use partisan_net::{Config, DeliverError, Event, Node, Sink};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Collect(Mutex<Sender<Bytes>>);

impl Sink for Collect {
    fn deliver(&self, _from: &str, _dest: &Dest, payload: Bytes) -> Result<(), DeliverError> {
        let _ = self.0.lock().unwrap().send(payload);
        Ok(())
    }
    fn event(&self, _: Event) {}
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    Ca { cert: p.self_signed(&key).unwrap(), key }
}

/// Writes `name.pem`, `name.key` (signed by `ca`) and `name-ca.pem` into `dir`.
fn identity(dir: &Path, name: &str, ca: &Ca) -> TlsSide {
    identity_for(dir, name, ca, true)
}

/// The same; the certificate names `localhost`, and `127.0.0.1` too when `with_ip`.
fn identity_for(dir: &Path, name: &str, ca: &Ca, with_ip: bool) -> TlsSide {
    let mut p = CertificateParams::new(vec!["localhost".into()]).unwrap();
    if with_ip {
        p.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let f = |ext: &str| dir.join(format!("{name}.{ext}"));
    std::fs::write(f("pem"), cert.pem()).unwrap();
    std::fs::write(f("key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca.cert.pem()).unwrap();
    side(dir, name)
}

fn side(dir: &Path, name: &str) -> TlsSide {
    TlsSide {
        certfile: Some(dir.join(format!("{name}.pem"))),
        keyfile: Some(dir.join(format!("{name}.key"))),
        cacertfile: Some(dir.join(format!("{name}-ca.pem"))),
        verify: Verify::VerifyPeer,
        fail_if_no_peer_cert: true,
        ..TlsSide::default()
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("partisan_tls_test_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn node(name: &str, tls: &TlsSide) -> (Node, Receiver<Bytes>) {
    let (tx, rx) = channel();
    let mut cfg = Config::new(name, b"cookie");
    cfg.channels = vec![ChannelSpec::new("data", 2, false)];
    cfg.node.timing.connection_interval = 100;
    cfg.node.timing.connection_jitter = 20;
    cfg.handshake_timeout = Duration::from_secs(2);
    cfg.tls = Some(Box::new(TlsOptions { server: tls.clone(), client: tls.clone() }));
    (Node::start(cfg, Arc::new(Collect(Mutex::new(tx)))).unwrap(), rx)
}

fn wait(what: &str, f: impl Fn() -> bool) {
    common::wait_within(what, Duration::from_secs(15), f)
}

#[test]
fn mutual_tls_carries_every_size_in_order() {
    let dir = tmpdir("mtls");
    let ca = ca("test ca");
    let (a, _) = node("ta@127.0.0.1", &identity(&dir, "a", &ca));
    let (b, b_rx) = node("tb@127.0.0.1", &identity(&dir, "b", &ca));
    b.join(a.spec().clone()).unwrap();
    wait("mutual TLS links", || a.is_fully_connected("tb@127.0.0.1") && b.is_fully_connected("ta@127.0.0.1"));
    let data = a.channels().index_of("data").unwrap();
    let sizes = [1usize, 100, 16 * 1024, 17 * 1024, 300 * 1024, 2 << 20, 10];
    for round in 0..20u8 {
        for (i, n) in sizes.iter().enumerate() {
            let payload = Bytes::from(vec![round.wrapping_add(i as u8); *n]);
            a.send("tb@127.0.0.1", data, 7, Dest::Name("x".into()), payload).unwrap();
        }
    }
    for round in 0..20u8 {
        for (i, n) in sizes.iter().enumerate() {
            let got = b_rx.recv_timeout(Duration::from_secs(20)).expect("delivered");
            assert_eq!(got.len(), *n);
            assert!(got.iter().all(|x| *x == round.wrapping_add(i as u8)), "round {round} message {i} out of order or corrupt");
        }
    }
    assert_eq!(stat(&a, "tls_failures") + stat(&b, "tls_failures"), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn another_ca_is_refused_then_accepted_after_reload() {
    let dir = tmpdir("ca");
    let (ca1, ca2) = (ca("ca one"), ca("ca two"));
    let (a, _) = node("ra@127.0.0.1", &identity(&dir, "a", &ca1));
    let (b, _) = node("rb@127.0.0.1", &identity(&dir, "b", &ca2));
    b.join(a.spec().clone()).unwrap();
    wait("refusals counted on both sides", || stat(&a, "tls_failures") > 0 && stat(&b, "tls_failures") > 0);
    assert!(!b.is_connected("ra@127.0.0.1", None));
    assert!(a.members() == vec!["ra@127.0.0.1".to_string()], "a never saw b: {:?}", a.members());
    // b gets a certificate of a's CA (same file names, rewritten) and reloads.
    identity(&dir, "b", &ca1);
    b.reload_tls(&TlsOptions { server: side(&dir, "b"), client: side(&dir, "b") }).unwrap();
    wait("links after the reload", || a.is_fully_connected("rb@127.0.0.1") && b.is_fully_connected("ra@127.0.0.1"));
    // A reload with a missing file fails and leaves the files in use.
    let mut missing = side(&dir, "b");
    missing.certfile = Some(dir.join("nope.pem"));
    let err = b.reload_tls(&TlsOptions { server: missing.clone(), client: missing }).unwrap_err();
    assert_eq!(err.key, "tls_server_options");
    assert!(err.why.contains("nope.pem"), "{}", err.why);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_files_are_config_errors() {
    let mut cfg = Config::new("x@127.0.0.1", b"c");
    cfg.tls = Some(Box::default());
    assert_eq!(cfg.validate().unwrap_err().key, "tls_server_options");
    let side = TlsSide { certfile: Some("/nonexistent/c.pem".into()), keyfile: Some("/nonexistent/k.pem".into()), ..TlsSide::default() };
    cfg.tls = Some(Box::new(TlsOptions { server: side.clone(), client: side }));
    let e = cfg.validate().unwrap_err();
    assert!(e.why.contains("/nonexistent/c.pem"), "{e}");
}

fn start(name: &str, server: TlsSide, client: TlsSide) -> Node {
    let (tx, _rx) = channel();
    std::mem::forget(_rx);
    let mut cfg = Config::new(name, b"cookie");
    cfg.node.timing.connection_interval = 100;
    cfg.node.timing.connection_jitter = 20;
    cfg.handshake_timeout = Duration::from_secs(2);
    cfg.tls = Some(Box::new(TlsOptions { server, client }));
    Node::start(cfg, Arc::new(Collect(Mutex::new(tx)))).unwrap()
}

/// The name the dialer checks: the address dialed by default (a certificate without it is
/// refused), a DNS name given as `server_name_indication`, or none with `disable` (the chain is
/// still checked); `verify_none` accepts any listener.
#[test]
fn server_name_checks() {
    use partisan_net::tls::Sni;
    let dir = tmpdir("sni");
    let cluster_ca = ca("sni ca");
    let listener = identity_for(&dir, "l", &cluster_ca, false); // names localhost only
    let dialer = identity(&dir, "d", &cluster_ca);
    let case = |tag: &str, client: TlsSide| {
        let a = start(&format!("l{tag}@127.0.0.1"), listener.clone(), listener.clone());
        let b = start(&format!("d{tag}@127.0.0.1"), dialer.clone(), client);
        b.join(a.spec().clone()).unwrap();
        let peer = format!("l{tag}@127.0.0.1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !b.is_connected(&peer, None) && stat(&b, "tls_failures") == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        (b.is_connected(&peer, None), stat(&b, "tls_failures"))
    };
    let (up, failures) = case("ip", dialer.clone());
    assert!(!up && failures > 0, "a certificate without the address dialed must be refused");
    let (up, _) = case("dns", TlsSide { server_name_indication: Sni::Name("localhost".into()), ..dialer.clone() });
    assert!(up, "server_name_indication localhost");
    let (up, _) = case("off", TlsSide { server_name_indication: Sni::Disable, ..dialer.clone() });
    assert!(up, "server_name_indication disable");
    let other = ca("other ca");
    identity(&dir, "o", &other);
    let (up, failures) = case("oca", TlsSide { server_name_indication: Sni::Disable, cacertfile: Some(dir.join("o-ca.pem")), ..dialer.clone() });
    assert!(!up && failures > 0, "disable still checks the chain");
    let (up, _) = case("none", TlsSide { verify: Verify::VerifyNone, cacertfile: None, ..dialer.clone() });
    assert!(up, "verify_none");
    let _ = std::fs::remove_dir_all(dir);
}
