//! Bearer-token authentication of the admin API (issue 14, item 5): replay and snapshot
//! can fill the outbox and pause every watch, so only a caller holding the token may ask.
//!
//! The token comes from `admin.tokenFile` when it is set (e.g. a mounted Secret), else
//! from `{state.path}/admin.token`, which the running instance generates at its first
//! start (32 random bytes, hex, mode 0600) and the CLI on the same host reads
//! ([`AdminToken::for_client`]). Every admin request carries
//! `Authorization: Bearer <token>`; [`require_token`] answers 401 to the others.

use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Name of the generated token file inside the state directory.
pub const TOKEN_FILE_NAME: &str = "admin.token";

/// Random bytes in a generated token: 256 bits, beyond any guessing over the network.
const TOKEN_BYTES: usize = 32;

/// Why the admin token could not be read or created. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Reading the token file failed.
    #[error("cannot read the admin token file {}: {source}", path.display())]
    Read {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The token file holds nothing but whitespace.
    #[error("the admin token file {} is empty (expected a token on one line)", path.display())]
    Empty {
        /// The token file.
        path: PathBuf,
    },
    /// The token cannot travel in an `Authorization` header.
    #[error(
        "the admin token file {} holds characters a bearer token cannot carry (expected printable ASCII without spaces)",
        path.display()
    )]
    Invalid {
        /// The token file.
        path: PathBuf,
    },
    /// The CLI found no generated token: no instance has started with this state directory.
    #[error(
        "the admin token file {} does not exist: the running instance creates it at start \
         (is crbridge running with this state.path? or set admin.tokenFile)",
        path.display()
    )]
    Missing {
        /// The token file that was looked for.
        path: PathBuf,
    },
    /// Writing the generated token failed.
    #[error("cannot create the admin token file {}: {source}", path.display())]
    Create {
        /// The token file (or its temporary sibling).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A generated token file readable by others could not be restricted to its owner.
    #[error("cannot restrict the admin token file {} to mode 0600: {source}", path.display())]
    Restrict {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// The shared secret of the admin API. `Debug` hides it; there is no `Display`.
#[derive(Clone)]
pub struct AdminToken {
    secret: String,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// The token a starting instance serves with: `token_file` when given (read, never
    /// written), else `{state_dir}/admin.token`, generated when absent and restricted to
    /// mode 0600 when found readable by others.
    pub fn load_or_create(
        token_file: Option<&Path>,
        state_dir: &Path,
    ) -> Result<AdminToken, AuthError> {
        if let Some(path) = token_file {
            return read(path);
        }
        let path = state_dir.join(TOKEN_FILE_NAME);
        match fs::metadata(&path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(
                        |source| AuthError::Restrict {
                            path: path.clone(),
                            source,
                        },
                    )?;
                    tracing::warn!(
                        path = %path.display(),
                        mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                        "admin token file was readable by others; restricted it to mode 0600"
                    );
                }
                read(&path)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let token = AdminToken::generate();
                write_private(state_dir, &path, &token.secret)?;
                tracing::info!(path = %path.display(), "generated the admin token");
                Ok(token)
            }
            Err(source) => Err(AuthError::Read { path, source }),
        }
    }

    /// The token a CLI sends to a running instance: `token_file` when given, else
    /// `{state_dir}/admin.token`. Never creates anything.
    pub fn for_client(
        token_file: Option<&Path>,
        state_dir: &Path,
    ) -> Result<AdminToken, AuthError> {
        if let Some(path) = token_file {
            return read(path);
        }
        let path = state_dir.join(TOKEN_FILE_NAME);
        match read(&path) {
            Err(AuthError::Read { path, source }) if source.kind() == io::ErrorKind::NotFound => {
                Err(AuthError::Missing { path })
            }
            other => other,
        }
    }

    /// Whether `presented` is this token, in time that depends only on the lengths (a
    /// generated token's length is public anyway: 64 hex digits).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.secret.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        let difference = expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keeps the optimizer from turning the fold into an early exit.
        std::hint::black_box(difference) == 0
    }

    /// The value of the `Authorization` header a client sends: `Bearer <token>`.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.secret)
    }

    /// 32 bytes from the thread-local generator (ChaCha, seeded from the OS: a
    /// cryptographically secure generator), hex-encoded.
    fn generate() -> AdminToken {
        let bytes: [u8; TOKEN_BYTES] = rand::random();
        let secret = bytes.iter().map(|b| format!("{b:02x}")).collect();
        AdminToken { secret }
    }
}

/// Reads a token file: surrounding whitespace (the trailing newline of `echo` or of a
/// Secret) is not part of the token.
fn read(path: &Path) -> Result<AdminToken, AuthError> {
    let text = fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        source,
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(AuthError::Empty {
            path: path.to_owned(),
        });
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::Invalid {
            path: path.to_owned(),
        });
    }
    Ok(AdminToken {
        secret: secret.to_owned(),
    })
}

/// Writes `secret` to `path` atomically with mode 0600: a temporary sibling created 0600
/// (never readable by others, not even for a moment), synced, then renamed over `path`,
/// so a crash leaves either no token file or a whole one.
fn write_private(dir: &Path, path: &Path, secret: &str) -> Result<(), AuthError> {
    let create = |path: &Path| {
        let path = path.to_owned();
        move |source| AuthError::Create { path, source }
    };
    fs::create_dir_all(dir).map_err(create(dir))?;
    let temp = dir.join(format!(".{TOKEN_FILE_NAME}.{}.tmp", std::process::id()));
    // Left over by a crash of a process with the same pid: never ours to keep.
    match fs::remove_file(&temp) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(create(&temp)(err)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(create(&temp))?;
    let written = file
        .write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, path));
    if let Err(source) = written {
        let _ = fs::remove_file(&temp);
        return Err(AuthError::Create {
            path: path.to_owned(),
            source,
        });
    }
    // The rename is durable once the directory is synced.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(create(dir))
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC
/// 7235 section 2.1), or `None` without one.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Axum middleware (`axum::middleware::from_fn_with_state`) letting through only
/// requests that carry the admin token; the others get 401 with `WWW-Authenticate: Bearer`.
/// The presented token is never echoed nor logged.
pub async fn require_token(
    State(token): State<Arc<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    let refused = match bearer(request.headers()) {
        Some(presented) if token.matches(presented) => None,
        Some(_) => Some("wrong bearer token"),
        None => Some("no bearer token"),
    };
    let Some(reason) = refused else {
        return next.run(request).await;
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    tracing::warn!(
        method = %request.method(),
        path = request.uri().path(),
        peer = ?peer,
        reason,
        "refused an admin request"
    );
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token (expected Authorization: Bearer <admin token>)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use axum::http::HeaderValue;
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn token(secret: &str) -> AdminToken {
        AdminToken {
            secret: secret.to_owned(),
        }
    }

    #[test]
    fn generated_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = AdminToken::load_or_create(None, &state).unwrap();
        let path = state.join(TOKEN_FILE_NAME);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(first.secret.len(), 2 * TOKEN_BYTES);
        assert!(first.secret.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", first.secret)
        );
        let entries: Vec<_> = fs::read_dir(&state).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file left: {entries:?}");

        let second = AdminToken::load_or_create(None, &state).unwrap();
        assert_eq!(second.secret, first.secret);
        let client = AdminToken::for_client(None, &state).unwrap();
        assert_eq!(client.secret, first.secret);
        assert_ne!(
            AdminToken::load_or_create(None, dir.path()).unwrap().secret,
            first.secret,
            "each state directory its own random token"
        );
    }

    #[test]
    fn a_generated_file_readable_by_others_is_restricted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE_NAME);
        fs::write(&path, "abc\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let token = AdminToken::load_or_create(None, dir.path()).unwrap();
        assert_eq!(token.secret, "abc");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn an_explicit_token_file_is_read_trimmed_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        fs::write(&file, "  s3cret-token \n\n").unwrap();
        fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        let token = AdminToken::load_or_create(Some(&file), dir.path()).unwrap();
        assert_eq!(token.secret, "s3cret-token");
        assert_eq!(mode(&file), 0o644, "an operator's file is left alone");
        assert!(!dir.path().join(TOKEN_FILE_NAME).exists());
        let client = AdminToken::for_client(Some(&file), Path::new("/nonexistent")).unwrap();
        assert_eq!(client.secret, "s3cret-token");
    }

    #[test]
    fn unusable_token_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        fs::write(&file, " \n").unwrap();
        let err = AdminToken::load_or_create(Some(&file), dir.path()).unwrap_err();
        assert!(matches!(err, AuthError::Empty { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );

        fs::write(&file, "two words\n").unwrap();
        let err = AdminToken::load_or_create(Some(&file), dir.path()).unwrap_err();
        assert!(matches!(err, AuthError::Invalid { .. }), "{err:?}");

        let absent = dir.path().join("absent");
        let err = AdminToken::load_or_create(Some(&absent), dir.path()).unwrap_err();
        assert!(matches!(err, AuthError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&absent.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn the_client_never_creates_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let err = AdminToken::for_client(None, dir.path()).unwrap_err();
        let path = dir.path().join(TOKEN_FILE_NAME);
        assert!(matches!(err, AuthError::Missing { .. }), "{err:?}");
        let line = err.to_string();
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(
            line.contains("the running instance creates it at start"),
            "{line}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", token("hunter2-secret"));
        assert_eq!(shown, "AdminToken(<redacted>)");
        assert_eq!(token("t0k").authorization(), "Bearer t0k");
    }

    #[test]
    fn matches_only_the_same_bytes() {
        let t = token("0123abcd");
        assert!(t.matches(b"0123abcd"));
        assert!(!t.matches(b"0123abce"));
        assert!(!t.matches(b"1123abcd"));
        assert!(!t.matches(b"0123abc"), "a prefix");
        assert!(!t.matches(b"0123abcd0"), "longer");
        assert!(!t.matches(b""));
    }

    #[test]
    fn bearer_parsing() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            bearer(&headers).map(<[u8]>::to_vec)
        };
        assert_eq!(with("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(with("bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(with("BEARER   abc"), Some(b"abc".to_vec()));
        assert_eq!(with("Bearer"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Basic dXNlcjpwYXNz"), None);
        assert_eq!(with("Bearerabc"), None);
        assert_eq!(with("abc"), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    async fn call(authorization: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let app = Router::new()
            .route("/admin/status", get(|| async { "ok" }))
            .layer(from_fn_with_state(
                Arc::new(token("right-token")),
                require_token,
            ));
        let mut request = axum::http::Request::get("/admin/status");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, 4096).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_middleware_lets_only_the_token_through() {
        for authorization in [None, Some("Bearer wrong-token"), Some("Basic right-token")] {
            let (status, headers, body) = call(authorization).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
            assert_eq!(headers[WWW_AUTHENTICATE], "Bearer");
            assert!(!body.contains("wrong-token"), "never echoed: {body}");
        }
        let (status, _, body) = call(Some("Bearer right-token")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
}
