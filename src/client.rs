//! A minimal HTTP/1.1 client for the CLI commands that talk to a running
//! node's API on loopback (`pqnode pins` while the node runs): one request
//! per connection, bounded response size and time, the API's JSON error
//! body turned into one clear line.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response read.
pub const MAX_RESPONSE: u64 = 16 << 20;
/// Longest a request may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request to the API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers at the address.
    #[error("no pqnode API answers at {addr} ({source}); is the node running?")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The request or the response failed on the way.
    #[error("API at {addr}: {reason}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The API answered with an error.
    #[error("API answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
}

/// Sends one request and returns the body of a 2xx answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<String, ClientError> {
    tokio::time::timeout(TIMEOUT, request_inner(addr, method, path, token, body))
        .await
        .map_err(|_| ClientError::Io {
            addr,
            reason: format!("no answer within {TIMEOUT:?}"),
        })?
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<String, ClientError> {
    let io = |e: std::io::Error| ClientError::Io {
        addr,
        reason: e.to_string(),
    };
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE + 1)
        .read_to_end(&mut raw)
        .await
        .map_err(io)?;
    if raw.len() as u64 > MAX_RESPONSE {
        return Err(ClientError::Io {
            addr,
            reason: format!("response larger than {MAX_RESPONSE} bytes"),
        });
    }
    let text = String::from_utf8(raw).map_err(|_| ClientError::Io {
        addr,
        reason: "response is not UTF-8".into(),
    })?;
    let (head, rest) = text.split_once("\r\n\r\n").ok_or(ClientError::Io {
        addr,
        reason: "malformed HTTP response".into(),
    })?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(ClientError::Io {
            addr,
            reason: "malformed status line".into(),
        })?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest).ok_or(ClientError::Io {
            addr,
            reason: "malformed chunked body".into(),
        })?
    } else {
        rest.to_owned()
    };
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|j| j["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    Err(ClientError::Status { status, message })
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        s = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn chunked_bodies_are_joined_and_bad_ones_refused() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").as_deref(),
            Some("abcde")
        );
        assert_eq!(dechunk("zz\r\nabc\r\n"), None);
        assert_eq!(dechunk("5\r\nabc\r\n"), None);
    }
}
