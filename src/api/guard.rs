//! Checks in front of every route.
//!
//! - **Host** (DNS rebinding): a web page can make a browser send requests
//!   to `127.0.0.1:7777` under a name the attacker controls. Such a request
//!   carries that name in `Host`, so only the bind address, `localhost` and
//!   loopback addresses are accepted; anything else gets 421. With
//!   `api_allow_remote`, the names in `api_allowed_hosts` are accepted too,
//!   and on an unspecified bind address (`0.0.0.0`, `::`) any IP literal
//!   (a page whose origin is an IP address is same-origin with the API
//!   there, so it cannot rebind): other names still get 421.
//! - **Token everywhere** when `api_allow_remote` is set: reads too need
//!   `Authorization: Bearer <token>`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::bearer_matches;
use super::error::AppError;

/// Where the API listens and who may reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposure {
    /// The bound socket address.
    pub bind: SocketAddr,
    /// `api_allow_remote`: any address, token on every endpoint.
    pub remote: bool,
    /// `api_allowed_hosts` (lower case): names accepted in `Host` when
    /// `remote`.
    pub allowed_hosts: std::sync::Arc<[String]>,
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`).
fn host_part(value: &str) -> Option<&str> {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        return (after.is_empty() || after.starts_with(':')).then_some(inside);
    }
    match value.rsplit_once(':') {
        // A bare IPv6 address without brackets is not a valid Host.
        Some((host, _)) if host.contains(':') => None,
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => Some(host),
        Some(_) => None,
        None => Some(value),
    }
}

/// Whether a request naming `host` may be served.
pub fn host_allowed(host: Option<&str>, exposure: &Exposure) -> bool {
    let Some(name) = host.and_then(host_part) else {
        return false;
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ip == exposure.bind.ip()
                || (exposure.remote && exposure.bind.ip().is_unspecified())
        }
        Err(_) => {
            exposure.remote
                && exposure
                    .allowed_hosts
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(name))
        }
    }
}

fn host_of(req: &Request) -> Option<String> {
    let headers: &HeaderMap = req.headers();
    match headers.get(HOST) {
        Some(v) => v.to_str().ok().map(str::to_owned),
        None => req.uri().authority().map(|a| a.as_str().to_owned()),
    }
}

/// The middleware: 421 for a foreign `Host`, 401 without the token when
/// the API is exposed remotely.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = host_of(&req);
    if !host_allowed(host.as_deref(), &state.exposure) {
        return AppError::MisdirectedHost(host.unwrap_or_default()).into_response();
    }
    if state.exposure.remote && !bearer_matches(req.headers(), &state.token) {
        return AppError::Unauthorized.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> Exposure {
        Exposure {
            bind: SocketAddr::from(([127, 0, 0, 1], port)),
            remote: false,
            allowed_hosts: std::sync::Arc::from(vec!["node.example.org".to_owned()]),
        }
    }

    #[test]
    fn hosts_table() {
        let e = local(7777);
        for ok in [
            "127.0.0.1:7777",
            "127.0.0.1",
            "127.5.6.7:1",
            "localhost:7777",
            "LOCALHOST",
            "[::1]:7777",
            "[::1]",
        ] {
            assert!(host_allowed(Some(ok), &e), "{ok} should pass");
        }
        for bad in [
            "attacker.example:7777",
            "attacker.example",
            "localhost.attacker.example",
            "10.0.0.1:7777",
            "[2001:db8::1]:7777",
            "::1",
            "127.0.0.1:77x",
            "",
            // allowed names count only when the API is exposed remotely
            "node.example.org",
        ] {
            assert!(!host_allowed(Some(bad), &e), "{bad} should fail");
        }
        assert!(!host_allowed(None, &e), "a missing Host fails");
    }

    #[test]
    fn remote_exposure() {
        let names: std::sync::Arc<[String]> =
            std::sync::Arc::from(vec!["node.example.org".to_owned()]);
        let specific = Exposure {
            bind: "192.0.2.10:7777".parse().unwrap(),
            remote: true,
            allowed_hosts: names.clone(),
        };
        assert!(host_allowed(Some("192.0.2.10:7777"), &specific));
        assert!(host_allowed(Some("localhost"), &specific));
        assert!(host_allowed(Some("NODE.example.org:7777"), &specific));
        assert!(host_allowed(Some("node.example.org."), &specific));
        assert!(!host_allowed(Some("attacker.example"), &specific));
        assert!(!host_allowed(Some("192.0.2.11:7777"), &specific));
        let any = Exposure {
            bind: "0.0.0.0:7777".parse().unwrap(),
            remote: true,
            allowed_hosts: names,
        };
        assert!(host_allowed(Some("node.example.org:7777"), &any));
        assert!(
            host_allowed(Some("198.51.100.7:7777"), &any),
            "IP literals on a wildcard bind"
        );
        assert!(host_allowed(Some("[2001:db8::7]:7777"), &any));
        assert!(
            !host_allowed(Some("attacker.example:7777"), &any),
            "a rebinding name gets 421 even on a wildcard bind"
        );
    }
}
