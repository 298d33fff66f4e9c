//! The API's bearer token: created at first start in the data directory
//! (file `api-token`, mode 0600, written atomically), like a cookie file.
//! Endpoints that change state require `Authorization: Bearer <token>`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
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
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the token from `data_dir`, creating the directory (mode 0700) and
/// the token (mode 0600, temporary file + fsync + rename) on first start. A
/// token file that exists but is invalid is an error, never replaced.
pub fn load_or_create_token(data_dir: &Path) -> Result<ApiToken, TokenError> {
    create_private_dir(data_dir)?;
    let path = data_dir.join(TOKEN_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let token = Zeroizing::new(text.trim().to_owned());
            if token.len() != 2 * TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TokenError::Invalid(path));
            }
            Ok(ApiToken(token))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_token(data_dir, &path),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), TokenError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_err(dir))
}

fn create_token(dir: &Path, path: &Path) -> Result<ApiToken, TokenError> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    pqnode_crypto::rng::system_rng()
        .0
        .try_fill_bytes(bytes.as_mut())
        .map_err(|_| TokenError::Random)?;
    let token = Zeroizing::new(hex::encode(bytes.as_ref()));
    let tmp = dir.join(format!(".{TOKEN_FILE}.tmp-{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
        file.write_all(token.as_bytes()).map_err(io_err(&tmp))?;
        file.write_all(b"\n").map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        // Never replace a token another process created meanwhile.
        fs::hard_link(&tmp, path).map_err(io_err(path))?;
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(ApiToken(token))
        }
        Err(TokenError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            load_or_create_token(dir)
        }
        Err(e) => Err(e),
    }
}

/// An extractor that succeeds only with the right bearer token.
#[derive(Debug, Clone, Copy)]
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(AppError::Unauthorized)?;
        if state.token.verify(presented) {
            Ok(Authorized)
        } else {
            Err(AppError::Unauthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let a = load_or_create_token(&data).unwrap();
        let b = load_or_create_token(&data).unwrap();
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
        assert!(matches!(
            load_or_create_token(dir.path()),
            Err(TokenError::Invalid(_))
        ));
        assert_eq!(
            fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap(),
            "garbage"
        );
    }
}
