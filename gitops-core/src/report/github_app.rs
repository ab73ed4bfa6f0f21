//! How the GitHub client authenticates: with a token, or as a GitHub App whose RS256 JWT is
//! exchanged for an installation token per repository, cached until shortly before it expires.
//!
//! The JWT is signed with `ring` (already in the tree through rustls: no RSA or JWT crate); the
//! key file's PEM is read with rustls' `pki_types`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::SendError;
use super::http::{Rest, sensitive, unix_now};
use sha2::Digest;

use crate::Error;
use crate::secret::Secret;

/// How far in the past a JWT's `iat` is set, for clocks that run behind GitHub's.
const JWT_BACKDATE_SECS: u64 = 60;
/// How long after `iat` a JWT expires: GitHub allows at most 10 minutes, and clocks drift.
const JWT_LIFETIME_SECS: u64 = 9 * 60;
/// An installation token is fetched again this long before it expires.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The lifetime GitHub documents for an installation token, assumed when it names no expiry.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The most bytes read from a key file (a 4096-bit PEM key is about 3.3 KiB).
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// The most repositories (and installations) remembered; past it the caches start over.
const MAX_CACHED: usize = 1024;

/// A GitHub App's credentials: its ID (or client ID) and its RSA private key. `Debug` shows the
/// ID only.
#[derive(Clone)]
pub struct GitHubApp {
    id: String,
    key: Arc<RsaKeyPair>,
    /// SHA-256 of the key file: what the pull request comment's marker is keyed with.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubApp")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl GitHubApp {
    /// The App `id` (its App ID, or its client ID) with the key in `pem`: an RSA private key,
    /// PKCS#1 (`RSA PRIVATE KEY`, as GitHub gives it) or PKCS#8 (`PRIVATE KEY`).
    pub fn from_pem(id: &str, pem: &[u8]) -> Result<Self, Error> {
        let err = |message: String| Error::Forge {
            forge: "github".into(),
            message,
        };
        let id_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if id.is_empty() || id.len() > 100 || !id.chars().all(id_ok) {
            return Err(err(format!("\"{id}\" is not a GitHub App ID or client ID")));
        }
        // The PEM parser's errors are not shown: they could quote a line of the file.
        let key = match PrivateKeyDer::from_pem_slice(pem) {
            Ok(PrivateKeyDer::Pkcs1(der)) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
            Ok(PrivateKeyDer::Pkcs8(der)) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            Ok(PrivateKeyDer::Sec1(_)) => {
                return Err(err("the key is an EC key, not an RSA key".into()));
            }
            Ok(_) | Err(_) => {
                return Err(err(
                    "no PEM private key (\"RSA PRIVATE KEY\" or \"PRIVATE KEY\") in it".into(),
                ));
            }
        }
        .map_err(|e| err(format!("not a usable RSA private key: {e}")))?;
        Ok(GitHubApp {
            id: id.to_owned(),
            key: Arc::new(key),
            fingerprint: sha2::Sha256::digest(pem).into(),
        })
    }

    /// [`from_pem`](Self::from_pem) with the key read from `path`; errors name the file.
    pub fn from_key_file(id: &str, path: &Path) -> Result<Self, Error> {
        let err = |message: String| Error::Forge {
            forge: "github".into(),
            message: format!("the App key file {}: {message}", path.display()),
        };
        let mut pem = Vec::new();
        let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open it: {e}")))?;
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_KEY_FILE_BYTES + 1),
            &mut pem,
        )
        .map_err(|e| err(format!("cannot read it: {e}")))?;
        if pem.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(err(format!(
                "larger than {MAX_KEY_FILE_BYTES} bytes: not a key"
            )));
        }
        GitHubApp::from_pem(id, &pem).map_err(|e| match e {
            Error::Forge { message, .. } => err(message),
            other => other,
        })
    }

    /// A JWT that authenticates as the App, issued at `now` (Unix seconds).
    fn jwt(&self, now: u64) -> Result<Secret, SendError> {
        let iat = now.saturating_sub(JWT_BACKDATE_SECS);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims =
            serde_json::json!({"iat": iat, "exp": iat + JWT_LIFETIME_SECS, "iss": self.id});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let mut signature = vec![0; self.key.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        self.key
            .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature)
            .map_err(|_| SendError::Final {
                status: None,
                message: "cannot sign the GitHub App's JWT".into(),
            })?;
        Ok(Secret::new(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// What the client authenticates with, as the builder holds it.
#[derive(Debug)]
pub(super) enum Credentials {
    Token(Secret),
    App(GitHubApp),
}

impl Credentials {
    /// Checks what can be checked before any request.
    pub(super) fn check(&self) -> Result<(), String> {
        match self {
            Credentials::Token(token) => bearer(token)
                .map(|_| ())
                .map_err(|_| "the token is not a valid header value".into()),
            Credentials::App(_) => Ok(()),
        }
    }

    /// What the pull request comment's marker is keyed with: the token, or the App's key.
    pub(super) fn marker_key(&self) -> Vec<u8> {
        match self {
            Credentials::Token(token) => token.expose().as_bytes().to_vec(),
            Credentials::App(app) => app.fingerprint.to_vec(),
        }
    }

    /// The authentication of a client that makes its requests with `api`.
    pub(super) fn connect(self, api: Rest) -> Auth {
        match self {
            Credentials::Token(token) => Auth::Token(token),
            Credentials::App(app) => Auth::App(Box::new(AppAuth {
                app,
                api,
                installations: Mutex::default(),
                tokens: Mutex::default(),
            })),
        }
    }
}

/// How a client authenticates its requests.
pub(super) enum Auth {
    Token(Secret),
    App(Box<AppAuth>),
}

/// The `Authorization` of one request, and where it came from.
pub(super) struct Authorization {
    pub(super) header: HeaderValue,
    /// The installation whose token was taken from the cache.
    cached: Option<u64>,
}

impl Auth {
    /// The `Authorization` for a request to `path`: the token, or the installation token of the
    /// repository that `path` (`/repos/{owner}/{repo}/...`) names.
    pub(super) async fn authorization(&self, path: &str) -> Result<Authorization, SendError> {
        match self {
            Auth::Token(token) => Ok(Authorization {
                header: bearer(token).map_err(|_| final_error("the token is not a header"))?,
                cached: None,
            }),
            Auth::App(app) => app.authorization(path).await,
        }
    }

    /// What GitHub's answer to a request made with `used` means: as `judged`, except that a 401
    /// to a cached installation token forgets that token and is worth another try (with a new
    /// one).
    pub(super) fn judged(
        &self,
        used: &Authorization,
        judged: Result<(), SendError>,
    ) -> Result<(), SendError> {
        match (self, used.cached, judged) {
            (
                Auth::App(app),
                Some(installation),
                Err(SendError::Final {
                    status: Some(401),
                    message,
                }),
            ) => {
                lock(&app.tokens).remove(&installation);
                Err(SendError::Retry {
                    message: format!("{message} (the cached installation token is dropped)"),
                    after: None,
                })
            }
            (_, _, judged) => judged,
        }
    }
}

/// An installation token and when it stops being used (Unix seconds).
struct Cached {
    token: Secret,
    until: u64,
}

pub(super) struct AppAuth {
    app: GitHubApp,
    /// The client's API, for the App's own requests.
    api: Rest,
    /// `owner/repo` → installation id.
    installations: Mutex<HashMap<String, u64>>,
    /// Installation id → token.
    tokens: Mutex<HashMap<u64, Cached>>,
}

impl AppAuth {
    async fn authorization(&self, path: &str) -> Result<Authorization, SendError> {
        let repo = repo_of(path)?;
        let known = lock(&self.installations).get(&repo).copied();
        let installation = match known {
            Some(id) => id,
            None => self.installation(&repo).await?,
        };
        let now = unix_now();
        let cached = lock(&self.tokens)
            .get(&installation)
            .filter(|c| c.until > now)
            .map(|c| c.token.clone());
        if let Some(token) = cached {
            return Ok(Authorization {
                header: bearer(&token).map_err(|_| final_error("the token is not a header"))?,
                cached: Some(installation),
            });
        }
        let token = match self.exchange(installation).await {
            Ok(token) => token,
            Err(e) => {
                // The App may have been uninstalled and installed again: look it up anew, and
                // try again when the installation known was an old one.
                lock(&self.installations).remove(&repo);
                return Err(match e {
                    SendError::Final {
                        status: Some(404),
                        message,
                    } if known.is_some() => SendError::Retry {
                        message: format!("{message} (the installation is looked up again)"),
                        after: None,
                    },
                    e => e,
                });
            }
        };
        let header = bearer(&token.token)
            .map_err(|_| final_error("GitHub's installation token is not a header"))?;
        insert_bounded(&mut lock(&self.tokens), installation, token);
        Ok(Authorization {
            header,
            cached: None,
        })
    }

    /// The installation id of the App on `repo`, looked up and cached.
    async fn installation(&self, repo: &str) -> Result<u64, SendError> {
        let path = format!("/repos/{repo}/installation");
        let body = self.call(Method::GET, &path).await.map_err(|e| match e {
            SendError::Final {
                status: Some(404),
                message,
            } => SendError::Final {
                status: Some(404),
                message: format!("the GitHub App is not installed on {repo}: {message}"),
            },
            e => context(
                e,
                &format!("cannot find the GitHub App's installation on {repo}"),
            ),
        })?;
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id")?.as_u64())
            .ok_or_else(|| SendError::Retry {
                message: format!("GitHub's answer to GET {path} has no installation id"),
                after: None,
            })?;
        insert_bounded(&mut lock(&self.installations), repo.to_owned(), id);
        Ok(id)
    }

    /// A new token of `installation`.
    async fn exchange(&self, installation: u64) -> Result<Cached, SendError> {
        let path = format!("/app/installations/{installation}/access_tokens");
        let doing = format!("cannot get a token of the GitHub App's installation {installation}");
        let body = (self.call(Method::POST, &path).await).map_err(|e| context(e, &doing))?;
        // The answer holds the token: it is never quoted in a message.
        #[derive(serde::Deserialize)]
        struct Answer {
            token: String,
            expires_at: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| SendError::Retry {
            message: format!("{doing}: GitHub's answer has no token"),
            after: None,
        })?;
        let now = unix_now();
        let expires = (answer.expires_at)
            .and_then(|at| at.parse::<jiff::Timestamp>().ok())
            .and_then(|at| u64::try_from(at.as_second()).ok())
            .unwrap_or(now + TOKEN_LIFETIME.as_secs());
        Ok(Cached {
            token: Secret::new(answer.token),
            until: expires.saturating_sub(TOKEN_REFRESH_MARGIN.as_secs()),
        })
    }

    /// A request authenticated with a new JWT; its body when GitHub took it.
    async fn call(&self, method: Method, path: &str) -> Result<Bytes, SendError> {
        let jwt = self.app.jwt(unix_now())?;
        let header = bearer(&jwt).map_err(|_| final_error("bad JWT"))?;
        self.api
            .request(method, path, ("authorization", &header), None)
            .await
    }
}

fn bearer(token: &Secret) -> Result<HeaderValue, hyper::header::InvalidHeaderValue> {
    sensitive(&format!("Bearer {}", token.expose()))
}

fn final_error(message: &str) -> SendError {
    SendError::Final {
        status: None,
        message: message.to_owned(),
    }
}

/// `e` with what was being done in front of its message.
fn context(e: SendError, doing: &str) -> SendError {
    match e {
        SendError::Retry { message, after } => SendError::Retry {
            message: format!("{doing}: {message}"),
            after,
        },
        SendError::Final { status, message } => SendError::Final {
            status,
            message: format!("{doing}: {message}"),
        },
    }
}

/// `owner/repo` of a path `/repos/{owner}/{repo}/...` (the caller checked the names).
fn repo_of(path: &str) -> Result<String, SendError> {
    let mut parts = path.split('/').skip(1);
    match (parts.next(), parts.next(), parts.next()) {
        (Some("repos"), Some(owner), Some(repo)) if !owner.is_empty() && !repo.is_empty() => {
            Ok(format!("{owner}/{repo}"))
        }
        _ => Err(final_error(&format!(
            "{path} names no repository, so no GitHub App installation"
        ))),
    }
}

/// Inserts into a cache of at most [`MAX_CACHED`] entries, which starts over when full.
fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= MAX_CACHED && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, value);
}

/// The guarded map, even if a thread panicked while holding it (a cache is never half-written).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS1: &[u8] = include_bytes!("../../tests/data/test-only-github-app-key.pkcs1.pem");
    const PKCS8: &[u8] = include_bytes!("../../tests/data/test-only-github-app-key.pkcs8.pem");
    const EC: &[u8] = include_bytes!("../../tests/data/test-only-ec-key.pem");

    fn message(result: Result<GitHubApp, Error>) -> String {
        match result {
            Err(Error::Forge { message, .. }) => message,
            other => panic!("not a forge error: {other:?}"),
        }
    }

    #[test]
    fn both_pem_forms_of_an_rsa_key_sign_the_same_jwt() {
        let pkcs1 = GitHubApp::from_pem("12345", PKCS1).unwrap();
        let pkcs8 = GitHubApp::from_pem("12345", PKCS8).unwrap();
        // PKCS#1 v1.5 signatures are deterministic: one key, one signature.
        let jwt = pkcs1.jwt(1_000_000).unwrap();
        assert_eq!(jwt.expose(), pkcs8.jwt(1_000_000).unwrap().expose());
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iat": 999_940, "exp": 999_940 + 540, "iss": "12345"})
        );
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            pkcs1.key.public().as_ref().to_vec(),
        );
        let input = format!("{}.{}", parts[0], parts[1]);
        public.verify(input.as_bytes(), &decode(parts[2])).unwrap();
        assert!(!format!("{pkcs1:?}").contains("MII"), "{pkcs1:?}");
    }

    #[test]
    fn a_key_that_is_not_rsa_or_not_a_key_is_refused_without_quoting_it() {
        assert_eq!(
            message(GitHubApp::from_pem("1", EC)),
            "the key is an EC key, not an RSA key"
        );
        let garbage =
            b"-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LXZhbHVl\n-----END RSA PRIVATE KEY-----\n";
        let said = message(GitHubApp::from_pem("1", garbage));
        assert!(said.starts_with("not a usable RSA private key"), "{said}");
        assert!(!said.contains("c2VjcmV0"), "{said}");
        let said = message(GitHubApp::from_pem("1", b"ghp_not-a-key"));
        assert!(said.starts_with("no PEM private key"), "{said}");
        assert!(!said.contains("ghp_"), "{said}");
        let said = message(GitHubApp::from_pem("1/../x", PKCS1));
        assert!(said.contains("not a GitHub App ID"), "{said}");
    }

    #[test]
    fn a_key_file_error_names_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let said = message(GitHubApp::from_key_file("1", &missing));
        assert!(said.contains("missing.pem: cannot open it"), "{said}");
        let at_limit = dir.path().join("at-limit.pem");
        let mut pem = PKCS1.to_vec();
        pem.resize(MAX_KEY_FILE_BYTES as usize, b'\n');
        std::fs::write(&at_limit, &pem).unwrap();
        GitHubApp::from_key_file("1", &at_limit).unwrap();
        pem.push(b'\n');
        std::fs::write(&at_limit, &pem).unwrap();
        let said = message(GitHubApp::from_key_file("1", &at_limit));
        assert!(
            said.contains("at-limit.pem: larger than 65536 bytes"),
            "{said}"
        );
        let ec = dir.path().join("ec.pem");
        std::fs::write(&ec, EC).unwrap();
        let said = message(GitHubApp::from_key_file("1", &ec));
        assert!(
            said.ends_with("ec.pem: the key is an EC key, not an RSA key"),
            "{said}"
        );
    }

    #[test]
    fn a_cache_holds_at_most_its_limit_and_starts_over_past_it() {
        let mut cache = HashMap::new();
        for i in 0..MAX_CACHED {
            insert_bounded(&mut cache, i, i);
        }
        assert_eq!(cache.len(), MAX_CACHED);
        insert_bounded(&mut cache, 0, 7);
        assert_eq!((cache.len(), cache[&0]), (MAX_CACHED, 7));
        insert_bounded(&mut cache, MAX_CACHED, 0);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn only_repository_paths_have_an_installation() {
        assert_eq!(repo_of("/repos/o/r/statuses/ab").unwrap(), "o/r");
        for path in ["/app/installations", "/repos/o", "/repos//r/x", "/user"] {
            assert!(repo_of(path).is_err(), "{path}");
        }
    }
}
