//! The API's bearer token: created at first start in the data directory
//! (file `api-token`, mode 0600, written atomically), like a cookie file,
//! and read with the key files' rules.
//! Endpoints that change state require `Authorization: Bearer <token>`.

use std::path::{Path, PathBuf};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use pqnode_keys::fsutil::{self, FsError};
use rand_core::TryRng;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::AppState;
use super::error::AppError;

/// The token file's name inside the data directory.
pub const TOKEN_FILE: &str = "api-token";
/// Random bytes in a token (written as 64 hex digits).
const TOKEN_BYTES: usize = 32;

/// Errors loading or creating the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The file or the data directory was refused or could not be used
    /// (a symbolic link, group/other access, too large, I/O).
    #[error(transparent)]
    File(#[from] FsError),
    /// The file exists but does not hold a token; it is left alone.
    #[error("{0}: not a valid API token (64 hex digits); fix or delete it")]
    Invalid(PathBuf),
    /// The OS gave no randomness.
    #[error("no randomness for the API token")]
    Random,
}

/// The API token. Its `Debug` does not print it.
pub struct ApiToken(Zeroizing<String>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// Wraps a token (for tests and tools).
    pub fn new(token: String) -> Self {
        ApiToken(Zeroizing::new(token))
    }

    /// The token text, for clients on this machine.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token (constant time in its content).
    pub fn verify(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// Reads the token in `data_dir`, like a key file: a symbolic link, a
/// non-regular file, group or other access (unless `insecure`) or more
/// than a few KiB is refused; `None` when there is none yet.
pub fn read_token(data_dir: &Path, insecure: bool) -> Result<Option<ApiToken>, TokenError> {
    let path = data_dir.join(TOKEN_FILE);
    let Some(bytes) = fsutil::read_private(&path, insecure)? else {
        return Ok(None);
    };
    let bytes = Zeroizing::new(bytes);
    let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::Invalid(path.clone()))?;
    let token = Zeroizing::new(text.trim().to_owned());
    if token.len() != 2 * TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Invalid(path));
    }
    Ok(Some(ApiToken(token)))
}

/// Reads the token from `data_dir`, creating the directory (mode 0700) and
/// the token on first start: mode 0600, written to a temporary file, synced
/// and linked into place, so a crash leaves no half-written token and a
/// token another process created meanwhile is never replaced. A token file
/// that exists but is invalid or refused is an error, never replaced.
pub fn load_or_create_token(data_dir: &Path, insecure: bool) -> Result<ApiToken, TokenError> {
    fsutil::ensure_private_dir(data_dir, insecure)?;
    if let Some(token) = read_token(data_dir, insecure)? {
        return Ok(token);
    }
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    pqnode_crypto::rng::system_rng()
        .0
        .try_fill_bytes(bytes.as_mut())
        .map_err(|_| TokenError::Random)?;
    let mut text = Zeroizing::new(hex::encode(bytes.as_ref()));
    text.push('\n');
    let path = data_dir.join(TOKEN_FILE);
    if fsutil::write_new_atomic(&path, text.as_bytes())? {
        text.pop();
        return Ok(ApiToken(text));
    }
    // Another process created it first: use theirs.
    read_token(data_dir, insecure)?.ok_or(TokenError::Invalid(path))
}

/// An extractor that succeeds only with the right bearer token.
#[derive(Debug, Clone, Copy)]
pub struct Authorized;

/// Whether `headers` carry `Authorization: Bearer <token>` with this token.
pub fn bearer_matches(headers: &axum::http::HeaderMap, token: &ApiToken) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .is_some_and(|presented| token.verify(presented))
}

impl FromRequestParts<AppState> for Authorized {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if bearer_matches(&parts.headers, &state.token) {
            Ok(Authorized)
        } else {
            Err(AppError::Unauthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn token_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let a = load_or_create_token(&data, false).unwrap();
        let b = load_or_create_token(&data, false).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 64);
        assert!(a.verify(b.expose()));
        assert!(!a.verify("nope"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(data.join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn invalid_token_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOKEN_FILE), "garbage").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(
                dir.path().join(TOKEN_FILE),
                fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        assert!(matches!(
            load_or_create_token(dir.path(), false),
            Err(TokenError::Invalid(_))
        ));
        assert_eq!(
            fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap(),
            "garbage"
        );
    }

    #[cfg(unix)]
    #[test]
    fn token_file_is_read_like_a_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = load_or_create_token(dir.path(), false).unwrap();
        let path = dir.path().join(TOKEN_FILE);
        // Readable by others: refused, named, left alone.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_token(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("api-token"), "{err}");
        assert!(matches!(
            err,
            TokenError::File(FsError::InsecureFile { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        // A symbolic link: refused, even to a valid token.
        let other = tempfile::tempdir().unwrap();
        let link_dir = other.path().join("d");
        fs::create_dir(&link_dir).unwrap();
        fs::set_permissions(&link_dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&path, link_dir.join(TOKEN_FILE)).unwrap();
        assert!(matches!(
            load_or_create_token(&link_dir, false),
            Err(TokenError::File(FsError::NotRegularFile { .. }))
        ));
        // A huge file: refused without reading it all.
        let big = tempfile::tempdir().unwrap();
        let f = fs::File::create(big.path().join(TOKEN_FILE)).unwrap();
        f.set_len(64 << 20).unwrap();
        fs::set_permissions(
            big.path().join(TOKEN_FILE),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(matches!(
            load_or_create_token(big.path(), false),
            Err(TokenError::File(FsError::TooLarge { .. }))
        ));
        // A group-writable data directory: refused.
        let open = tempfile::tempdir().unwrap();
        fs::set_permissions(open.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            load_or_create_token(open.path(), false),
            Err(TokenError::File(FsError::InsecureDir { .. }))
        ));
        assert_eq!(
            read_token(dir.path(), false).unwrap().unwrap().expose(),
            token.expose()
        );
    }
}
