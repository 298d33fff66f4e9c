//! Unit tests of the configuration.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

#[test]
fn empty_file_gives_defaults() {
    let c = Config::from_toml_str("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.limits.max_established, 2000);
    assert_eq!(c.limits.max_established_per_peer, 2);
    assert_eq!(c.limits.max_connections_per_ip, 8);
    assert_eq!(c.limits.max_new_connections_per_ip_per_minute, 30);
    assert_eq!(c.pq.policy, PqPolicy::Preferred);
    assert_eq!(c.api.to_string(), "127.0.0.1:7777");
    assert_eq!(c.listen[1].to_string(), "/ip4/0.0.0.0/udp/4001/quic-v1");
}

#[test]
fn file_values_are_read() {
    let c = Config::from_toml_str(
        r#"
        listen = ["/ip4/127.0.0.1/tcp/0"]
        role = "bootstrap"
        mdns = false
        [pq]
        policy = "required"
        suites = ["mlkem1024-mldsa87"]
        [limits]
        max_connections_per_ip = 3
        handshake_timeout_secs = 5
        partial_message_timeout_secs = 7
        delivery_timeout_secs = 3
        [[trusted_peers]]
        peer_id = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
        fingerprint = "0001 0203 0405 0607 0809 0a0b 0c0d 0e0f 1011 1213 1415 1617 1819 1a1b 1c1d 1e1f"
        "#,
    )
    .unwrap();
    assert_eq!(c.role, Role::Bootstrap);
    assert!(!c.mdns);
    assert_eq!(c.pq.policy, PqPolicy::Required);
    assert_eq!(c.pq.suites, vec![Suite::Mlkem1024Mldsa87]);
    assert_eq!(c.limits.max_connections_per_ip, 3);
    assert_eq!(c.limits.handshake_timeout, Duration::from_secs(5));
    assert_eq!(c.limits.partial_message_timeout, Duration::from_secs(7));
    assert_eq!(c.limits.delivery_timeout, Duration::from_secs(3));
    assert_eq!(c.trusted_peers[0].fingerprint[31], 0x1f);
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("[pq]\npolicy = \"sometimes\"", "pq.policy"),
        ("[pq]\nsuites = [\"rot13\"]", "pq.suites"),
        ("[pq]\nsuites = []", "pq.suites"),
        ("listen = [\"not an addr\"]", "listen"),
        ("api = \"localhost\"", "api"),
        (
            "[limits]\nmax_connections_per_ip = 0",
            "limits.max_connections_per_ip",
        ),
        (
            "[limits]\nmax_established = \"many\"",
            "limits.max_established",
        ),
        ("colour = \"blue\"", "colour"),
        ("[limits]\nfoo = 1", "limits.foo"),
        ("mdns = \"perhaps\"", "mdns"),
        (
            "[[trusted_peers]]\npeer_id = \"x\"\nfingerprint = \"00\"",
            "trusted_peers[0].fingerprint",
        ),
        (
            "[[trusted_peers]]\npeer_id = \"x\"\nfingerprint = \"0000000000000000000000000000000000000000000000000000000000000000\"",
            "trusted_peers[0].peer_id",
        ),
    ];
    for (text, key) in cases {
        let err = Config::from_toml_str(text).unwrap_err();
        assert_eq!(err.key(), Some(key), "{text}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn flags_beat_env_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "api = \"127.0.0.1:1\"\nrole = \"bootstrap\"\nmdns = false\n",
    )
    .unwrap();
    let e = env(&[
        ("PQNODE_API", "127.0.0.1:2"),
        ("PQNODE_ROLE", "node"),
        ("PQNODE_UNRELATED", "x"),
    ]);
    let mut o = Overrides::default();
    o.set("api", "127.0.0.1:3").unwrap();
    let c = Config::load_from(Some(&path), e, &o).unwrap();
    assert_eq!(c.api.port(), 3);
    assert_eq!(c.role, Role::Node);
    assert!(!c.mdns);
}

#[test]
fn env_error_names_key_and_variable() {
    let err = Config::load_from(
        None,
        env(&[("PQNODE_PQ_POLICY", "maybe")]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("pq.policy"));
    assert!(err.to_string().contains("PQNODE_PQ_POLICY"));
}

#[test]
fn env_lists_are_comma_separated() {
    let c = Config::load_from(
        None,
        env(&[(
            "PQNODE_LISTEN",
            "/ip4/127.0.0.1/tcp/0, /ip4/127.0.0.1/udp/0/quic-v1",
        )]),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.listen.len(), 2);
}

#[test]
fn documented_example_is_the_default() {
    // The module documentation's TOML block, with the platform data dir.
    let doc = include_str!("mod.rs");
    let block: String = doc
        .lines()
        .skip_while(|l| !l.starts_with("//! ```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("//! ```"))
        .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
        .filter(|l| !l.starts_with("data_dir"))
        .collect::<Vec<_>>()
        .join("\n");
    let c = Config::from_toml_str(&block).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn a_remote_api_address_needs_api_allow_remote() {
    let err = Config::from_toml_str("api = \"0.0.0.0:7777\"").unwrap_err();
    assert_eq!(err.key(), Some("api"));
    assert!(err.to_string().contains("--api-allow-remote"), "{err}");
    let err = Config::from_toml_str("api = \"[::]:7777\"").unwrap_err();
    assert_eq!(err.key(), Some("api"));
    let c = Config::from_toml_str("api = \"0.0.0.0:7777\"\napi_allow_remote = true").unwrap();
    assert!(c.api_allow_remote);
    let c = Config::from_toml_str("api = \"[::1]:7777\"").unwrap();
    assert!(!c.api_allow_remote);
    // A flag allows it too.
    let mut o = Overrides::default();
    o.set("api", "10.1.2.3:7777").unwrap();
    assert!(Config::load_from(None, env(&[]), &o).is_err());
    o.set("api_allow_remote", "true").unwrap();
    assert!(
        Config::load_from(None, env(&[]), &o)
            .unwrap()
            .api_allow_remote
    );
}

#[test]
fn api_allowed_hosts_are_names_and_need_api_allow_remote() {
    let err = Config::from_toml_str("api_allowed_hosts = [\"node.example.org\"]").unwrap_err();
    assert_eq!(err.key(), Some("api_allowed_hosts"));
    assert!(err.to_string().contains("api_allow_remote"), "{err}");
    let remote = "api = \"0.0.0.0:7777\"\napi_allow_remote = true\n";
    let c = Config::from_toml_str(&format!(
        "{remote}api_allowed_hosts = [\"Node.Example.org\", \"other.example\"]"
    ))
    .unwrap();
    assert_eq!(c.api_allowed_hosts, ["node.example.org", "other.example"]);
    for bad in [
        "node.example.org:7777",
        "192.0.2.1",
        "bad_name",
        "-x.example",
        "",
    ] {
        let err =
            Config::from_toml_str(&format!("{remote}api_allowed_hosts = [{bad:?}]")).unwrap_err();
        assert_eq!(err.key(), Some("api_allowed_hosts"), "{bad}: {err}");
    }
    let c = Config::load_from(
        None,
        env(&[
            ("PQNODE_API", "0.0.0.0:7777"),
            ("PQNODE_API_ALLOW_REMOTE", "true"),
            ("PQNODE_API_ALLOWED_HOSTS", "a.example, b.example"),
        ]),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.api_allowed_hosts, ["a.example", "b.example"]);
}

#[test]
fn bootstrap_list_and_min_connected() {
    let c = Config::load_from(
        None,
        env(&[
            (
                "PQNODE_BOOTSTRAP",
                "/ip4/127.0.0.1/tcp/1,/dnsaddr/bootstrap.example.org",
            ),
            ("PQNODE_MIN_CONNECTED", "2"),
        ]),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.bootstrap.len(), 2);
    assert_eq!(c.min_connected, 2);
    let err = Config::from_toml_str("min_connected = 0").unwrap_err();
    assert_eq!(err.key(), Some("min_connected"));
    let err = Config::from_toml_str("bootstrap = [\"nonsense\"]").unwrap_err();
    assert_eq!(err.key(), Some("bootstrap"));
}

#[test]
fn water_marks_are_ordered() {
    let c = Config::from_toml_str("[limits]\nlow_water = 5\nhigh_water = 6\ntrim_grace_secs = 0")
        .unwrap();
    assert_eq!((c.limits.low_water, c.limits.high_water), (5, 6));
    assert_eq!(c.limits.trim_grace, Duration::ZERO);
    let err = Config::from_toml_str("[limits]\nlow_water = 6\nhigh_water = 6").unwrap_err();
    assert_eq!(err.key(), Some("limits.low_water"));
}
