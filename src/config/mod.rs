//! The node's configuration: one validated [`Config`].
//!
//! Values come from four layers; the first that sets a key wins:
//!
//! 1. command-line flags ([`Overrides`], filled by the CLI),
//! 2. `PQNODE_*` environment variables (the key in upper case, dots as
//!    underscores: `pq.policy` → `PQNODE_PQ_POLICY`; lists are
//!    comma-separated),
//! 3. the TOML file given with `--config FILE`,
//! 4. the defaults of [`Config::default`].
//!
//! Every error names the key, where the value came from and the reason
//! ([`ConfigError`]). Unknown keys in the file are errors; unknown `PQNODE_*`
//! variables are ignored (other parts of pqnode read their own).
//!
//! In the environment and in flags, lists are comma-separated, booleans are
//! `true|false|1|0|yes|no|on|off`, and `PQNODE_TRUSTED_PEERS` is
//! `PEERID=FINGERPRINT,…`. Durations are whole seconds (keys ending `_secs`).
//!
//! Every key with its default:
//!
//! ```toml
//! data_dir = "~/.local/share/pqnode"        # the platform data dir + "pqnode"
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! api = "127.0.0.1:7777"                   # a loopback address unless api_allow_remote
//! api_allow_remote = false                  # true: any address, and every endpoint needs the token
//! api_allowed_hosts = []                    # with api_allow_remote: DNS names accepted in `Host`
//! publish_private_addrs = false             # true: our records may carry loopback/private addresses,
//!                                           # and they count as reachable (a LAN: Kademlia server mode);
//!                                           # private addresses remote peers give are kept and dialled
//! private = false                           # true: records carry no addresses, nothing announced on gossip,
//!                                           # listen addresses not told to peers, Kademlia client only
//! peers = []                                # dialled at start, redialled with back-off
//! bootstrap = []                            # dialled until min_connected of them are connected
//! min_connected = 3                         # bootstrap peers to keep connected (at most all listed)
//! role = "node"                             # or "bootstrap": Kademlia server from the start, keeps no messages
//! mdns = true
//! relay_server = false
//! idle_timeout_secs = 60
//! log_format = "human"                      # or "json"
//!
//! [pq]
//! policy = "preferred"                      # "required" | "preferred" | "disabled"
//! suites = ["kyber1024-dilithium5", "mlkem1024-mldsa87"]
//! allow_unpinned = true
//! rehandshake_after_secs = 3600             # a new handshake replaces a session after 1 h ...
//! rehandshake_bytes = 4294967296            # ... or 4 GiB in either direction (§5.1)
//!
//! [limits]
//! max_established = 2000
//! max_established_per_peer = 2
//! max_pending_incoming = 128
//! max_pending_outgoing = 128
//! max_connections_per_ip = 8                # concurrent inbound, per remote IP (IPv6: per /64)
//! max_new_connections_per_ip_per_minute = 30
//! max_tracked_ips = 65536                  # IPs whose rate is tracked; when full the least recently seen is forgotten
//! max_concurrent_handshakes = 64
//! handshake_timeout_secs = 10
//! partial_message_timeout_secs = 30        # a message begun must complete within this, or its session is re-established
//! delivery_timeout_secs = 10               # a sent message not answered by a receipt within this is reported not delivered
//! max_message_size = 1048576
//! inbox_per_peer = 1024
//! max_memory_percent = 90
//! low_water = 100                           # trimming: close peers down to this ...
//! high_water = 2000                         # ... when more than this many are connected
//! trim_grace_secs = 20                      # a new connection is never trimmed sooner
//!
//! # [[trusted_peers]]                       # preloaded pins, none by default
//! # peer_id = "12D3KooW…"
//! # fingerprint = "0123 4567 …"             # SHA-256 of the PQ signing key, 64 hex digits
//! # suite = "mlkem1024-mldsa87"             # optional: every suite when absent
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use pqnode_crypto::Suite;

/// At most this many `peers` may be configured (each is redialled).
pub const MAX_PEERS: usize = 256;
/// Most names in `api_allowed_hosts`.
pub const MAX_ALLOWED_HOSTS: usize = 32;

/// A DNS name for `api_allowed_hosts`: letters, digits, `-` and `.`, at
/// most 253 characters, no port, compared in lower case.
fn parse_host_name(name: &str) -> Result<String, String> {
    let lower = name.trim().to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower.len() <= 253
        && lower
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'))
        && lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!(
            "{name:?} is not a DNS name (letters, digits, '-' and '.', no port)"
        ));
    }
    if lower.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an address, not a name: addresses need no entry"
        ));
    }
    Ok(lower)
}

/// Every key a configuration may set, with its environment variable.
pub const KEYS: &[(&str, &str)] = &[
    ("data_dir", "PQNODE_DATA_DIR"),
    ("listen", "PQNODE_LISTEN"),
    ("api", "PQNODE_API"),
    ("api_allow_remote", "PQNODE_API_ALLOW_REMOTE"),
    ("api_allowed_hosts", "PQNODE_API_ALLOWED_HOSTS"),
    ("publish_private_addrs", "PQNODE_PUBLISH_PRIVATE_ADDRS"),
    ("private", "PQNODE_PRIVATE"),
    ("peers", "PQNODE_PEERS"),
    ("bootstrap", "PQNODE_BOOTSTRAP"),
    ("min_connected", "PQNODE_MIN_CONNECTED"),
    ("role", "PQNODE_ROLE"),
    ("pq.policy", "PQNODE_PQ_POLICY"),
    ("pq.suites", "PQNODE_PQ_SUITES"),
    ("pq.allow_unpinned", "PQNODE_PQ_ALLOW_UNPINNED"),
    (
        "pq.rehandshake_after_secs",
        "PQNODE_PQ_REHANDSHAKE_AFTER_SECS",
    ),
    ("pq.rehandshake_bytes", "PQNODE_PQ_REHANDSHAKE_BYTES"),
    ("trusted_peers", "PQNODE_TRUSTED_PEERS"),
    ("mdns", "PQNODE_MDNS"),
    ("relay_server", "PQNODE_RELAY_SERVER"),
    ("limits.max_established", "PQNODE_LIMITS_MAX_ESTABLISHED"),
    (
        "limits.max_established_per_peer",
        "PQNODE_LIMITS_MAX_ESTABLISHED_PER_PEER",
    ),
    (
        "limits.max_pending_incoming",
        "PQNODE_LIMITS_MAX_PENDING_INCOMING",
    ),
    (
        "limits.max_pending_outgoing",
        "PQNODE_LIMITS_MAX_PENDING_OUTGOING",
    ),
    (
        "limits.max_connections_per_ip",
        "PQNODE_LIMITS_MAX_CONNECTIONS_PER_IP",
    ),
    (
        "limits.max_new_connections_per_ip_per_minute",
        "PQNODE_LIMITS_MAX_NEW_CONNECTIONS_PER_IP_PER_MINUTE",
    ),
    ("limits.max_tracked_ips", "PQNODE_LIMITS_MAX_TRACKED_IPS"),
    (
        "limits.max_concurrent_handshakes",
        "PQNODE_LIMITS_MAX_CONCURRENT_HANDSHAKES",
    ),
    (
        "limits.handshake_timeout_secs",
        "PQNODE_LIMITS_HANDSHAKE_TIMEOUT_SECS",
    ),
    (
        "limits.partial_message_timeout_secs",
        "PQNODE_LIMITS_PARTIAL_MESSAGE_TIMEOUT_SECS",
    ),
    (
        "limits.delivery_timeout_secs",
        "PQNODE_LIMITS_DELIVERY_TIMEOUT_SECS",
    ),
    ("limits.max_message_size", "PQNODE_LIMITS_MAX_MESSAGE_SIZE"),
    ("limits.inbox_per_peer", "PQNODE_LIMITS_INBOX_PER_PEER"),
    (
        "limits.max_memory_percent",
        "PQNODE_LIMITS_MAX_MEMORY_PERCENT",
    ),
    ("limits.low_water", "PQNODE_LIMITS_LOW_WATER"),
    ("limits.high_water", "PQNODE_LIMITS_HIGH_WATER"),
    ("limits.trim_grace_secs", "PQNODE_LIMITS_TRIM_GRACE_SECS"),
    ("idle_timeout_secs", "PQNODE_IDLE_TIMEOUT_SECS"),
    ("log_format", "PQNODE_LOG_FORMAT"),
];

/// A configuration error. Each variant about a value names its key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key that pqnode does not know.
    #[error("unknown config key `{key}` (in {origin})")]
    UnknownKey {
        /// The key as written.
        key: String,
        /// Where it was found.
        origin: String,
    },
    /// A value that is not acceptable for its key.
    #[error("invalid value for `{key}` (from {origin}): {reason}")]
    Invalid {
        /// The key, e.g. `pq.policy`.
        key: String,
        /// Where the value came from: `default`, a file, `env PQNODE_…` or `flag`.
        origin: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl ConfigError {
    /// The key this error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

/// The node's role in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An ordinary node: Kademlia client until an external address is confirmed.
    Node,
    /// A bootstrap node: Kademlia server from the start.
    Bootstrap,
}

impl Role {
    /// The name used in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Bootstrap => "bootstrap",
        }
    }
}

/// The PQ policy (PROTOCOL.md §8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PqPolicy {
    /// Peers without PQ are disconnected; local PQ unavailability is fatal.
    Required,
    /// PQ when possible, classical (visibly) otherwise.
    Preferred,
    /// No PQ handshake is attempted.
    Disabled,
}

impl PqPolicy {
    /// The name used in configuration and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            PqPolicy::Required => "required",
            PqPolicy::Preferred => "preferred",
            PqPolicy::Disabled => "disabled",
        }
    }
}

impl fmt::Display for PqPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name used in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

/// The PQ settings (`[pq]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PqConfig {
    /// `pq.policy`: `required | preferred | disabled`. Default `preferred`.
    pub policy: PqPolicy,
    /// `pq.suites`: suites in preference order, no duplicates, at least one.
    /// Default `["kyber1024-dilithium5", "mlkem1024-mldsa87"]`.
    pub suites: Vec<Suite>,
    /// `pq.allow_unpinned`: whether peers without a preloaded pin may be
    /// accepted (pinned on first use). Default `true`.
    pub allow_unpinned: bool,
    /// `pq.rehandshake_after_secs`: a session is replaced by a new
    /// handshake after this long (PROTOCOL.md §5.1). Default 3600 s.
    pub rehandshake_after: Duration,
    /// `pq.rehandshake_bytes`: ... or after this many bytes in either
    /// direction. Default 4 GiB.
    pub rehandshake_bytes: u64,
}

/// A preloaded pin (`[[trusted_peers]]`, PROTOCOL.md §8.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedPeer {
    /// `peer_id`: the peer's libp2p PeerId.
    pub peer_id: PeerId,
    /// `fingerprint`: SHA-256 of the peer's PQ signing public key; written as
    /// 64 hex digits, spaces allowed (the display format groups them by 4).
    pub fingerprint: [u8; 32],
    /// `suite` (optional): the suite this pin is for; every suite when absent.
    pub suite: Option<Suite>,
}

/// Resource limits (`[limits]`). PROTOCOL.md §9 and the connection limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// `limits.max_established`: established connections in total. Default 2000.
    pub max_established: u32,
    /// `limits.max_established_per_peer`: established connections per peer. Default 2.
    pub max_established_per_peer: u32,
    /// `limits.max_pending_incoming`: inbound connections still in their
    /// handshake. Default 128.
    pub max_pending_incoming: u32,
    /// `limits.max_pending_outgoing`: outbound connections being dialled. Default 128.
    pub max_pending_outgoing: u32,
    /// `limits.max_connections_per_ip`: concurrent inbound connections from one
    /// remote IP (pending and established). Default 8.
    pub max_connections_per_ip: u32,
    /// `limits.max_new_connections_per_ip_per_minute`: new inbound connections
    /// per remote IP per minute. Default 30.
    pub max_new_connections_per_ip_per_minute: u32,
    /// `limits.max_tracked_ips`: distinct IPs (IPv6: /64s) whose connection
    /// rate is tracked at once; when full, the least recently seen is
    /// forgotten (counted in `pqnode_node_ip_limit_evicted`). Default 65,536.
    pub max_tracked_ips: u32,
    /// `limits.max_concurrent_handshakes`: concurrent inbound PQ handshakes
    /// (beyond: Reject busy). Default 64.
    pub max_concurrent_handshakes: u32,
    /// `limits.handshake_timeout_secs`: PQ handshake duration limit. Default 10 s.
    pub handshake_timeout: Duration,
    /// `limits.partial_message_timeout_secs`: a message whose first
    /// fragment arrived must complete within this, or its session ends and
    /// is re-established (§9 rev 3). Default 30 s.
    pub partial_message_timeout: Duration,
    /// `limits.delivery_timeout_secs`: a sent message whose receipt has not
    /// arrived within this is reported not delivered (`no_receipt`, §7 rev
    /// 4). Default 10 s.
    pub delivery_timeout: Duration,
    /// `limits.max_message_size`: application message size in bytes. Default 1 MiB.
    pub max_message_size: usize,
    /// `limits.inbox_per_peer`: undelivered inbound messages kept per peer,
    /// then the oldest are dropped. Default 1024.
    pub inbox_per_peer: usize,
    /// `limits.max_memory_percent`: no new connections once the process uses
    /// this share of the system's memory (1–100). Default 90.
    pub max_memory_percent: u8,
    /// `limits.low_water`: connection trimming closes peers down to this
    /// many. Default 100.
    pub low_water: u32,
    /// `limits.high_water`: trimming starts above this many connected
    /// peers (it only acts when below `max_established`). Default 2000.
    pub high_water: u32,
    /// `limits.trim_grace_secs`: a new connection is not trimmed sooner.
    /// Default 20 s.
    pub trim_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_established: 2000,
            max_established_per_peer: 2,
            max_pending_incoming: 128,
            max_pending_outgoing: 128,
            max_connections_per_ip: 8,
            max_new_connections_per_ip_per_minute: 30,
            max_tracked_ips: 65_536,
            max_concurrent_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            partial_message_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(10),
            max_message_size: 1024 * 1024,
            inbox_per_peer: 1024,
            max_memory_percent: 90,
            low_water: 100,
            high_water: 2000,
            trim_grace: Duration::from_secs(20),
        }
    }
}

/// The validated configuration of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `data_dir`: keys, pins, peer cache and the API token. Default: the
    /// platform data directory joined with `pqnode` (e.g.
    /// `~/.local/share/pqnode`), or `./pqnode-data` where there is none.
    pub data_dir: PathBuf,
    /// `listen`: multiaddrs to listen on (TCP or QUIC-v1; port 0 allowed).
    /// Default `/ip4/0.0.0.0/tcp/4001` and `/ip4/0.0.0.0/udp/4001/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// `api`: the HTTP API's socket address. Default `127.0.0.1:7777`. It
    /// must be a loopback address unless `api_allow_remote` is set.
    pub api: SocketAddr,
    /// `api_allow_remote`: allow a non-loopback `api` address; every
    /// endpoint then requires the bearer token, reads included. Default
    /// `false`.
    pub api_allow_remote: bool,
    /// `api_allowed_hosts`: with `api_allow_remote`, the DNS names (lower
    /// case, without port) a request's `Host` may carry besides the bind
    /// address, IP literals on a wildcard bind, `localhost` and loopback
    /// addresses; anything else gets 421 (DNS rebinding). At most
    /// [`MAX_ALLOWED_HOSTS`]. Default none.
    pub api_allowed_hosts: Vec<String>,
    /// `publish_private_addrs`: let our signed records carry loopback,
    /// private (RFC 1918, fc00::/7) and link-local addresses, and keep and
    /// dial such addresses when remote peers give them. Default `false`:
    /// such addresses are left out of what we publish, and only the
    /// operator's own (`peers`, `bootstrap`, the API) are dialled.
    pub publish_private_addrs: bool,
    /// `private`: our records carry no addresses, we announce nothing on
    /// gossip, identify does not tell peers our listen addresses, and
    /// Kademlia stays a client (nobody routes to us). We still dial out,
    /// handshake and look records up.
    pub private: bool,
    /// `peers`: bootstrap or manual peers, dialled at start and redialled
    /// with back-off (1 s doubling to 5 min) while disconnected; at most
    /// [`MAX_PEERS`]. Default none.
    pub peers: Vec<Multiaddr>,
    /// `bootstrap`: bootstrap peers (multiaddrs, `/dnsaddr` allowed),
    /// dialled until `min_connected` of them are connected; a failed one is
    /// retried after 30 s doubling to 10 min, with jitter. At most
    /// [`MAX_PEERS`]. Default none.
    pub bootstrap: Vec<Multiaddr>,
    /// `min_connected`: bootstrap peers to keep connected (capped at the
    /// number listed). Default 3.
    pub min_connected: u32,
    /// `role`: `node | bootstrap`. Default `node`.
    pub role: Role,
    /// `[pq]`: the PQ layer.
    pub pq: PqConfig,
    /// `[[trusted_peers]]`: preloaded pins. Default none.
    pub trusted_peers: Vec<TrustedPeer>,
    /// `mdns`: local discovery with mDNS. Default `true`.
    pub mdns: bool,
    /// `relay_server`: act as a circuit relay for others. Default `false`.
    pub relay_server: bool,
    /// `[limits]`: resource limits.
    pub limits: Limits,
    /// `idle_timeout_secs`: how long a connection without open streams is
    /// kept. Default 60 s.
    pub idle_timeout: Duration,
    /// `log_format`: `human | json`. Default `human`.
    pub log_format: LogFormat,
}

/// The default data directory (see [`Config::data_dir`]).
pub fn default_data_dir() -> PathBuf {
    match dirs::data_dir() {
        Some(dir) => dir.join("pqnode"),
        None => PathBuf::from("pqnode-data"),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            listen: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Tcp(4001)),
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Udp(4001))
                    .with(Protocol::QuicV1),
            ],
            api: SocketAddr::from(([127, 0, 0, 1], 7777)),
            api_allow_remote: false,
            api_allowed_hosts: Vec::new(),
            publish_private_addrs: false,
            private: false,
            peers: Vec::new(),
            bootstrap: Vec::new(),
            min_connected: 3,
            role: Role::Node,
            pq: PqConfig {
                policy: PqPolicy::Preferred,
                suites: Suite::DEFAULT_PREFERENCE.to_vec(),
                allow_unpinned: true,
                rehandshake_after: Duration::from_secs(3600),
                rehandshake_bytes: 4 << 30,
            },
            trusted_peers: Vec::new(),
            mdns: true,
            relay_server: false,
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(60),
            log_format: LogFormat::Human,
        }
    }
}

mod raw;

use raw::{
    Layers, Raw, as_bool, as_int, as_list, as_text, flatten_file, invalid, parse_multiaddr,
    parse_suite, parse_trusted_peers,
};
pub use raw::{Overrides, parse_fingerprint};

impl Config {
    /// Loads the configuration from the process: `file` (if any), the
    /// process's `PQNODE_*` environment variables and `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars_os(), overrides)
    }

    /// Loads the configuration from explicit sources (for tests and tools).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let (file_values, file_origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let origin = format!("file {}", path.display());
                (Self::parse_file(&text, path, &origin)?, origin)
            }
            None => (BTreeMap::new(), "file".to_owned()),
        };
        let mut env_values = BTreeMap::new();
        for (name, value) in env {
            let Some(name) = name.to_str() else { continue };
            let Some((key, _)) = KEYS.iter().find(|(_, var)| *var == name) else {
                continue;
            };
            let value = value.into_string().map_err(|_| {
                invalid(key, &format!("env {name}"), "the value is not valid UTF-8")
            })?;
            env_values.insert(*key, (name.to_owned(), Raw::Text(value)));
        }
        Self::build(&Layers {
            flags: overrides.values.clone(),
            env: env_values,
            file: file_values,
            file_origin,
        })
    }

    /// Parses a TOML document (no environment, no flags).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let origin = "config".to_owned();
        let file = Self::parse_file(text, Path::new("<config>"), &origin)?;
        Self::build(&Layers {
            flags: BTreeMap::new(),
            env: BTreeMap::new(),
            file,
            file_origin: origin,
        })
    }

    fn parse_file(
        text: &str,
        path: &Path,
        origin: &str,
    ) -> Result<BTreeMap<String, Raw>, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        flatten_file(table, origin)
    }

    fn build(layers: &Layers) -> Result<Config, ConfigError> {
        let mut c = Config::default();

        if let Some((o, raw)) = layers.get("data_dir") {
            let s = as_text("data_dir", &o, raw)?;
            if s.is_empty() {
                return Err(invalid("data_dir", &o, "must not be empty"));
            }
            c.data_dir = PathBuf::from(s);
        }
        if let Some((o, raw)) = layers.get("listen") {
            let items = as_list("listen", &o, raw)?;
            if items.is_empty() {
                return Err(invalid("listen", &o, "at least one address is needed"));
            }
            c.listen = Vec::with_capacity(items.len());
            for s in items {
                let addr = parse_multiaddr("listen", &o, &s)?;
                let transport_ok = addr
                    .iter()
                    .any(|p| matches!(p, Protocol::Tcp(_) | Protocol::QuicV1));
                if !transport_ok {
                    return Err(invalid(
                        "listen",
                        &o,
                        format!("{s:?}: only TCP and QUIC-v1 addresses can be listened on"),
                    ));
                }
                c.listen.push(addr);
            }
        }
        if let Some((o, raw)) = layers.get("api") {
            let s = as_text("api", &o, raw)?;
            c.api = SocketAddr::from_str(&s).map_err(|e| {
                invalid(
                    "api",
                    &o,
                    format!("{s:?} is not a socket address (IP:PORT): {e}"),
                )
            })?;
        }
        if let Some((o, raw)) = layers.get("api_allow_remote") {
            c.api_allow_remote = as_bool("api_allow_remote", &o, raw)?;
        }
        if !c.api.ip().is_loopback() && !c.api_allow_remote {
            let o = layers
                .get("api")
                .map(|(o, _)| o)
                .unwrap_or_else(|| "default".to_owned());
            return Err(invalid(
                "api",
                &o,
                format!(
                    "{} is not a loopback address, so the API would be reachable from the \
                     network; give --api-allow-remote (api_allow_remote = true) to allow it, \
                     and every endpoint will then require the token",
                    c.api
                ),
            ));
        }
        if let Some((o, raw)) = layers.get("api_allowed_hosts") {
            let names = as_list("api_allowed_hosts", &o, raw)?;
            if !names.is_empty() && !c.api_allow_remote {
                return Err(invalid(
                    "api_allowed_hosts",
                    &o,
                    "names are only accepted with api_allow_remote = true (--api-allow-remote); \
                     a loopback API answers loopback names only",
                ));
            }
            if names.len() > MAX_ALLOWED_HOSTS {
                return Err(invalid(
                    "api_allowed_hosts",
                    &o,
                    format!("{} names given, at most {MAX_ALLOWED_HOSTS}", names.len()),
                ));
            }
            c.api_allowed_hosts = names
                .iter()
                .map(|n| parse_host_name(n).map_err(|r| invalid("api_allowed_hosts", &o, r)))
                .collect::<Result<_, _>>()?;
        }
        if let Some((o, raw)) = layers.get("private") {
            c.private = as_bool("private", &o, raw)?;
        }
        if let Some((o, raw)) = layers.get("publish_private_addrs") {
            c.publish_private_addrs = as_bool("publish_private_addrs", &o, raw)?;
        }
        if let Some((o, raw)) = layers.get("peers") {
            let items = as_list("peers", &o, raw)?;
            if items.len() > MAX_PEERS {
                return Err(invalid(
                    "peers",
                    &o,
                    format!("{} peers given, at most {MAX_PEERS}", items.len()),
                ));
            }
            c.peers = items
                .iter()
                .map(|s| parse_multiaddr("peers", &o, s))
                .collect::<Result<_, _>>()?;
        }
        if let Some((o, raw)) = layers.get("bootstrap") {
            let items = as_list("bootstrap", &o, raw)?;
            if items.len() > MAX_PEERS {
                return Err(invalid(
                    "bootstrap",
                    &o,
                    format!("{} peers given, at most {MAX_PEERS}", items.len()),
                ));
            }
            c.bootstrap = items
                .iter()
                .map(|s| parse_multiaddr("bootstrap", &o, s))
                .collect::<Result<_, _>>()?;
        }
        if let Some((o, raw)) = layers.get("min_connected") {
            c.min_connected = u32::try_from(as_int("min_connected", &o, raw, 1, 1000)?)
                .map_err(|_| invalid("min_connected", &o, "too large"))?;
        }
        if let Some((o, raw)) = layers.get("role") {
            c.role = match as_text("role", &o, raw)?.as_str() {
                "node" => Role::Node,
                "bootstrap" => Role::Bootstrap,
                other => {
                    return Err(invalid(
                        "role",
                        &o,
                        format!("expected node or bootstrap, got {other:?}"),
                    ));
                }
            };
        }
        if let Some((o, raw)) = layers.get("pq.policy") {
            c.pq.policy = match as_text("pq.policy", &o, raw)?.as_str() {
                "required" => PqPolicy::Required,
                "preferred" => PqPolicy::Preferred,
                "disabled" => PqPolicy::Disabled,
                other => {
                    return Err(invalid(
                        "pq.policy",
                        &o,
                        format!("expected required, preferred or disabled, got {other:?}"),
                    ));
                }
            };
        }
        if let Some((o, raw)) = layers.get("pq.suites") {
            let names = as_list("pq.suites", &o, raw)?;
            if names.is_empty() {
                return Err(invalid("pq.suites", &o, "at least one suite is needed"));
            }
            let mut suites = Vec::with_capacity(names.len());
            for name in names {
                let suite = parse_suite(&name).map_err(|r| invalid("pq.suites", &o, r))?;
                if suites.contains(&suite) {
                    return Err(invalid(
                        "pq.suites",
                        &o,
                        format!("{name:?} is listed twice"),
                    ));
                }
                suites.push(suite);
            }
            c.pq.suites = suites;
        }
        if let Some((o, raw)) = layers.get("pq.allow_unpinned") {
            c.pq.allow_unpinned = as_bool("pq.allow_unpinned", &o, raw)?;
        }
        if let Some((o, raw)) = layers.get("pq.rehandshake_after_secs") {
            let n = as_int("pq.rehandshake_after_secs", &o, raw, 1, 7 * 86_400)?;
            c.pq.rehandshake_after = Duration::from_secs(n);
        }
        if let Some((o, raw)) = layers.get("pq.rehandshake_bytes") {
            c.pq.rehandshake_bytes = as_int("pq.rehandshake_bytes", &o, raw, 1, 1 << 50)?;
        }
        if let Some((o, raw)) = layers.get("trusted_peers") {
            c.trusted_peers = parse_trusted_peers(&o, raw)?;
        }
        if let Some((o, raw)) = layers.get("mdns") {
            c.mdns = as_bool("mdns", &o, raw)?;
        }
        if let Some((o, raw)) = layers.get("relay_server") {
            c.relay_server = as_bool("relay_server", &o, raw)?;
        }

        let u32_limit =
            |key: &'static str, min: u64, max: u64| -> Result<Option<u32>, ConfigError> {
                match layers.get(key) {
                    Some((o, raw)) => {
                        let n = as_int(key, &o, raw, min, max)?;
                        Ok(Some(
                            u32::try_from(n).map_err(|_| invalid(key, &o, "too large"))?,
                        ))
                    }
                    None => Ok(None),
                }
            };
        let l = &mut c.limits;
        if let Some(n) = u32_limit("limits.max_established", 1, 1_000_000)? {
            l.max_established = n;
        }
        if let Some(n) = u32_limit("limits.max_established_per_peer", 1, 64)? {
            l.max_established_per_peer = n;
        }
        if let Some(n) = u32_limit("limits.max_pending_incoming", 1, 100_000)? {
            l.max_pending_incoming = n;
        }
        if let Some(n) = u32_limit("limits.max_pending_outgoing", 1, 100_000)? {
            l.max_pending_outgoing = n;
        }
        if let Some(n) = u32_limit("limits.max_connections_per_ip", 1, 100_000)? {
            l.max_connections_per_ip = n;
        }
        if let Some(n) = u32_limit("limits.max_new_connections_per_ip_per_minute", 1, 1_000_000)? {
            l.max_new_connections_per_ip_per_minute = n;
        }
        if let Some(n) = u32_limit("limits.max_tracked_ips", 1, 4_194_304)? {
            l.max_tracked_ips = n;
        }
        if let Some(n) = u32_limit("limits.max_concurrent_handshakes", 1, 100_000)? {
            l.max_concurrent_handshakes = n;
        }
        if let Some(n) = u32_limit("limits.handshake_timeout_secs", 1, 300)? {
            l.handshake_timeout = Duration::from_secs(u64::from(n));
        }
        if let Some(n) = u32_limit("limits.partial_message_timeout_secs", 1, 3600)? {
            l.partial_message_timeout = Duration::from_secs(u64::from(n));
        }
        if let Some(n) = u32_limit("limits.delivery_timeout_secs", 1, 600)? {
            l.delivery_timeout = Duration::from_secs(u64::from(n));
        }
        if let Some(n) = u32_limit("limits.max_message_size", 1, 64 * 1024 * 1024)? {
            l.max_message_size = n as usize;
        }
        if let Some(n) = u32_limit("limits.inbox_per_peer", 1, 1_000_000)? {
            l.inbox_per_peer = n as usize;
        }
        if let Some(n) = u32_limit("limits.max_memory_percent", 1, 100)? {
            l.max_memory_percent = u8::try_from(n).unwrap_or(100);
        }
        if let Some(n) = u32_limit("limits.low_water", 0, 1_000_000)? {
            l.low_water = n;
        }
        if let Some(n) = u32_limit("limits.high_water", 1, 1_000_000)? {
            l.high_water = n;
        }
        if let Some(n) = u32_limit("limits.trim_grace_secs", 0, 86_400)? {
            l.trim_grace = Duration::from_secs(u64::from(n));
        }
        if c.limits.low_water >= c.limits.high_water {
            let o = layers
                .get("limits.low_water")
                .map(|(o, _)| o)
                .unwrap_or_else(|| "default".to_owned());
            return Err(invalid(
                "limits.low_water",
                &o,
                "must be below limits.high_water",
            ));
        }
        if c.limits.max_established_per_peer > c.limits.max_established {
            let o = layers
                .get("limits.max_established_per_peer")
                .map(|(o, _)| o)
                .unwrap_or_else(|| "default".to_owned());
            return Err(invalid(
                "limits.max_established_per_peer",
                &o,
                "must not exceed limits.max_established",
            ));
        }
        if let Some(n) = u32_limit("idle_timeout_secs", 1, 86_400)? {
            c.idle_timeout = Duration::from_secs(u64::from(n));
        }
        if let Some((o, raw)) = layers.get("log_format") {
            c.log_format = match as_text("log_format", &o, raw)?.as_str() {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        "log_format",
                        &o,
                        format!("expected human or json, got {other:?}"),
                    ));
                }
            };
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests;
