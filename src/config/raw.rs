//! Raw values from the file, the environment and flags, and their typed
//! readers; every error names the key and where the value came from.

use std::collections::BTreeMap;
use std::str::FromStr;

use libp2p::{Multiaddr, PeerId};
use pqnode_crypto::Suite;

use super::{ConfigError, KEYS, TrustedPeer};

/// A raw value before validation.
#[derive(Clone, Debug)]
pub(super) enum Raw {
    /// From the TOML file, typed.
    Toml(toml::Value),
    /// From an environment variable or a flag: text.
    Text(String),
    /// From a repeatable flag.
    List(Vec<String>),
}

/// Values set on the command line; they win over everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub(super) values: BTreeMap<&'static str, Raw>,
}

pub(super) fn known_key(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(k, _)| *k)
}

impl Overrides {
    /// Sets `key` to a text value, parsed like an environment variable.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> Result<(), ConfigError> {
        let key = known_key(key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.to_owned(),
            origin: "flags".to_owned(),
        })?;
        self.values.insert(key, Raw::Text(value.into()));
        Ok(())
    }

    /// Sets a list-valued `key` (from a repeatable flag). An empty list leaves
    /// the key unset.
    pub fn set_list(&mut self, key: &str, values: Vec<String>) -> Result<(), ConfigError> {
        let key = known_key(key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.to_owned(),
            origin: "flags".to_owned(),
        })?;
        if !values.is_empty() {
            self.values.insert(key, Raw::List(values));
        }
        Ok(())
    }
}

/// One layer's values, with where they came from.
pub(super) struct Layers {
    pub(super) flags: BTreeMap<&'static str, Raw>,
    pub(super) env: BTreeMap<&'static str, (String, Raw)>,
    pub(super) file: BTreeMap<String, Raw>,
    pub(super) file_origin: String,
}

impl Layers {
    pub(super) fn get(&self, key: &'static str) -> Option<(String, &Raw)> {
        if let Some(v) = self.flags.get(key) {
            return Some(("flag".to_owned(), v));
        }
        if let Some((name, v)) = self.env.get(key) {
            return Some((format!("env {name}"), v));
        }
        self.file.get(key).map(|v| (self.file_origin.clone(), v))
    }
}

pub(super) fn invalid(key: &str, origin: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        origin: origin.to_owned(),
        reason: reason.into(),
    }
}

pub(super) fn as_text(key: &str, origin: &str, raw: &Raw) -> Result<String, ConfigError> {
    match raw {
        Raw::Text(s) => Ok(s.trim().to_owned()),
        Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
        Raw::Toml(other) => Err(invalid(
            key,
            origin,
            format!("expected a string, found {}", other.type_str()),
        )),
        Raw::List(_) => Err(invalid(key, origin, "expected one value, found a list")),
    }
}

pub(super) fn as_list(key: &str, origin: &str, raw: &Raw) -> Result<Vec<String>, ConfigError> {
    match raw {
        Raw::Text(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        Raw::List(items) => Ok(items.iter().map(|s| s.trim().to_owned()).collect()),
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(invalid(
                    key,
                    origin,
                    format!("item {i}: expected a string, found {}", other.type_str()),
                )),
            })
            .collect(),
        Raw::Toml(other) => Err(invalid(
            key,
            origin,
            format!("expected an array of strings, found {}", other.type_str()),
        )),
    }
}

pub(super) fn as_bool(key: &str, origin: &str, raw: &Raw) -> Result<bool, ConfigError> {
    match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
        Raw::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            other => Err(invalid(
                key,
                origin,
                format!("expected true or false, got {other:?}"),
            )),
        },
        Raw::Toml(other) => Err(invalid(
            key,
            origin,
            format!("expected a boolean, found {}", other.type_str()),
        )),
        Raw::List(_) => Err(invalid(key, origin, "expected a boolean, found a list")),
    }
}

pub(super) fn as_int(
    key: &str,
    origin: &str,
    raw: &Raw,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let n: i128 = match raw {
        Raw::Toml(toml::Value::Integer(i)) => i128::from(*i),
        Raw::Text(s) => s
            .trim()
            .replace('_', "")
            .parse::<i128>()
            .map_err(|_| invalid(key, origin, format!("expected an integer, got {s:?}")))?,
        Raw::Toml(other) => {
            return Err(invalid(
                key,
                origin,
                format!("expected an integer, found {}", other.type_str()),
            ));
        }
        Raw::List(_) => return Err(invalid(key, origin, "expected an integer, found a list")),
    };
    if n < i128::from(min) || n > i128::from(max) {
        return Err(invalid(
            key,
            origin,
            format!("{n} is out of range {min}..={max}"),
        ));
    }
    u64::try_from(n).map_err(|_| invalid(key, origin, format!("{n} is out of range")))
}

pub(super) fn parse_multiaddr(key: &str, origin: &str, s: &str) -> Result<Multiaddr, ConfigError> {
    Multiaddr::from_str(s)
        .map_err(|e| invalid(key, origin, format!("{s:?} is not a multiaddr: {e}")))
}

/// Parses a fingerprint: 64 hex digits, spaces allowed.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = hex::decode(&compact).map_err(|e| format!("not hex: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "expected 64 hex digits (32 bytes), got {} bytes",
            bytes.len()
        )
    })
}

pub(super) fn parse_suite(s: &str) -> Result<Suite, String> {
    Suite::from_str(s.trim()).map_err(|e| e.to_string())
}

/// Flattens the TOML document into `key → value`, rejecting unknown keys.
pub(super) fn flatten_file(
    table: toml::Table,
    origin: &str,
) -> Result<BTreeMap<String, Raw>, ConfigError> {
    let mut out = BTreeMap::new();
    for (k, v) in table {
        match (k.as_str(), v) {
            (section @ ("pq" | "limits"), toml::Value::Table(inner)) => {
                for (ik, iv) in inner {
                    let full = format!("{section}.{ik}");
                    if known_key(&full).is_none() {
                        return Err(ConfigError::UnknownKey {
                            key: full,
                            origin: origin.to_owned(),
                        });
                    }
                    out.insert(full, Raw::Toml(iv));
                }
            }
            (section @ ("pq" | "limits"), other) => {
                return Err(invalid(
                    section,
                    origin,
                    format!("expected a table, found {}", other.type_str()),
                ));
            }
            (key, value) => {
                if known_key(key).is_none() || key.contains('.') {
                    return Err(ConfigError::UnknownKey {
                        key: key.to_owned(),
                        origin: origin.to_owned(),
                    });
                }
                out.insert(key.to_owned(), Raw::Toml(value));
            }
        }
    }
    Ok(out)
}

pub(super) fn parse_trusted_peers(
    origin: &str,
    raw: &Raw,
) -> Result<Vec<TrustedPeer>, ConfigError> {
    const KEY: &str = "trusted_peers";
    let items = match raw {
        Raw::Toml(toml::Value::Array(items)) => items.clone(),
        Raw::Toml(other) => {
            return Err(invalid(
                KEY,
                origin,
                format!("expected an array of tables, found {}", other.type_str()),
            ));
        }
        Raw::Text(s) => {
            // `PEERID=FINGERPRINT` pairs, comma-separated.
            let mut out = Vec::new();
            for (i, pair) in s
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .enumerate()
            {
                let Some((peer, fp)) = pair.split_once('=') else {
                    return Err(invalid(
                        KEY,
                        origin,
                        format!("item {i}: expected PEERID=FINGERPRINT"),
                    ));
                };
                let mut t = toml::Table::new();
                t.insert("peer_id".into(), toml::Value::String(peer.trim().into()));
                t.insert("fingerprint".into(), toml::Value::String(fp.trim().into()));
                out.push(toml::Value::Table(t));
            }
            out
        }
        Raw::List(_) => return Err(invalid(KEY, origin, "expected an array of tables")),
    };
    let mut peers = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("trusted_peers[{i}]");
        let toml::Value::Table(t) = item else {
            return Err(invalid(&key, origin, "expected a table"));
        };
        let mut peer_id = None;
        let mut fingerprint = None;
        let mut suite = None;
        for (k, v) in t {
            let field = format!("{key}.{k}");
            let toml::Value::String(s) = v else {
                return Err(invalid(&field, origin, "expected a string"));
            };
            match k.as_str() {
                "peer_id" => {
                    peer_id = Some(PeerId::from_str(s.trim()).map_err(|e| {
                        invalid(&field, origin, format!("{s:?} is not a PeerId: {e}"))
                    })?);
                }
                "fingerprint" => {
                    fingerprint =
                        Some(parse_fingerprint(&s).map_err(|r| invalid(&field, origin, r))?);
                }
                "suite" => {
                    suite = Some(parse_suite(&s).map_err(|r| invalid(&field, origin, r))?);
                }
                _ => {
                    return Err(ConfigError::UnknownKey {
                        key: field,
                        origin: origin.to_owned(),
                    });
                }
            }
        }
        let peer_id =
            peer_id.ok_or_else(|| invalid(&format!("{key}.peer_id"), origin, "missing"))?;
        let fingerprint =
            fingerprint.ok_or_else(|| invalid(&format!("{key}.fingerprint"), origin, "missing"))?;
        peers.push(TrustedPeer {
            peer_id,
            fingerprint,
            suite,
        });
    }
    Ok(peers)
}
