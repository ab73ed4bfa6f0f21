//! The HTTP client the forge clients share: `hyper-util`'s pooled client over `hyper-rustls`
//! (ring, the system's certificates; plain `http://` for a stand-in or a proxy on loopback),
//! one request at a time with a time limit, answers read up to a limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{COMMENT_MARKER, ForgeRefs, SendError};
use crate::Error;

/// The most of an answer's body read (a page of 100 long comments fits).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// A pooled HTTP(S) client.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for `base` (`http://` or `https://`), or what is wrong with it.
pub(crate) fn client(forge: &str, base: &str) -> Result<HttpClient, Error> {
    let err = |message: String| Error::Forge {
        forge: forge.into(),
        message,
    };
    // Credentials go in headers, never in the URL, where messages would show them.
    let authority = base
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    if authority.contains('@') {
        return Err(err(
            "the URL holds credentials (user:password@): give the token in its variable instead"
                .to_owned(),
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if base.starts_with("https://") {
        builder
            .with_provider_and_native_roots(provider)
            .map_err(|e| err(format!("no system certificates: {e}")))?
    } else if base.starts_with("http://") {
        // Plain http (a stand-in, a proxy on loopback): TLS is never used.
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        builder.with_tls_config(tls)
    } else {
        return Err(err(format!(
            "the URL \"{base}\" is not http:// or https://"
        )));
    };
    let connector = builder.https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// What an answer means: delivered, worth a retry (when), or refused for good; given the
/// status, headers, body and the time now (Unix seconds).
pub(crate) type Judge = fn(StatusCode, &HeaderMap, &[u8], u64) -> Result<(), SendError>;

/// A forge's REST API: its base, the headers every request carries, and how its answers are
/// judged. The credentials are given per request (they may differ by repository).
#[derive(Clone)]
pub(crate) struct Rest {
    client: HttpClient,
    base: String,
    timeout: Duration,
    forge: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    user_agent: String,
    judge: Judge,
    /// What the comment's marker is keyed with (see [`tagged_marker`]).
    marker_key: Vec<u8>,
}

/// Where a pull request's comment lives on a forge: how to list, edit and create it.
pub(crate) struct CommentPlace {
    /// The ledger's key for its id.
    pub key: String,
    /// The list's path; `page` and `per_page` are added.
    pub list: String,
    /// The path of comment `{id}`, without the id.
    pub edit: String,
    /// The method that edits (`PATCH`, `PUT`).
    pub edit_method: Method,
    /// The path that creates one.
    pub create: String,
    /// How the forge pages its lists: the page size's parameter (`per_page`, Gitea's `limit`,
    /// Bitbucket's `pagelen`) and the size asked for (at most what the forge gives).
    pub page_size: (&'static str, usize),
    /// Where a comment's text is, in the forge's JSON: `body` (GitHub, GitLab, Gitea) or
    /// `content.raw` (Bitbucket), for reading and writing it.
    pub text_at: &'static [&'static str],
}

impl CommentPlace {
    /// The JSON body that sets a comment's text.
    fn body(&self, text: &str) -> serde_json::Value {
        self.text_at.iter().rev().fold(
            serde_json::Value::String(text.to_owned()),
            |inner, key| serde_json::json!({ *key: inner }),
        )
    }
}

impl Rest {
    /// The API at `base` of `forge` (its name in messages), sending `headers` with every
    /// request, judging answers with `judge`.
    pub fn new(
        forge: &'static str,
        base: &str,
        timeout: Duration,
        headers: Vec<(&'static str, &'static str)>,
        judge: Judge,
    ) -> Result<Rest, Error> {
        Ok(Rest {
            client: client(&forge.to_ascii_lowercase(), base)?,
            base: base.to_owned(),
            timeout,
            forge,
            headers,
            user_agent: format!("gitops/{}", env!("CARGO_PKG_VERSION")),
            judge,
            marker_key: Vec::new(),
        })
    }

    /// Keys the pull request comment's marker with `credential` (the token): see
    /// [`tagged_marker`].
    pub fn with_marker_key(mut self, credential: &[u8]) -> Self {
        self.marker_key = credential.to_vec();
        self
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with the credentials header `auth`; the answer's body when the forge
    /// took it.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        auth: (&'static str, &HeaderValue),
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes, SendError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(auth.0, auth.1.clone())
            .header(USER_AGENT, &self.user_agent);
        for (name, value) in &self.headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unmakeable(path, e))?;
        let (status, headers, body) =
            exchange(&self.client, request, self.timeout, self.forge).await?;
        (self.judge)(status, &headers, &body, unix_now()).map(|()| body)
    }

    /// `POST`s what answers an object with an `id`; that id.
    pub async fn create(
        &self,
        path: &str,
        auth: (&'static str, &HeaderValue),
        body: &serde_json::Value,
    ) -> Result<String, SendError> {
        let answer = self.request(Method::POST, path, auth, Some(body)).await?;
        created_id(&answer).ok_or_else(|| SendError::Retry {
            message: format!("{}'s answer to POST {path} has no id", self.forge),
            after: None,
        })
    }

    /// Edits the pull request's comment (known by its id in the ledger, or found by its
    /// marker among the first 1,000), or creates it; records its id.
    pub async fn upsert_comment(
        &self,
        place: &CommentPlace,
        auth: (&'static str, &HeaderValue),
        refs: &ForgeRefs,
        text: &str,
    ) -> Result<(), SendError> {
        let marker = tagged_marker(&self.marker_key, &place.key);
        let text = match text.strip_prefix(COMMENT_MARKER) {
            Some(rest) => format!("{marker}{rest}"),
            None => text.to_owned(),
        };
        let known = match refs.get(&place.key)?.filter(|id| !id.is_empty()) {
            Some(id) => Some(id),
            None => self.find_marked(place, &marker, auth).await?,
        };
        let body = place.body(&text);
        if let Some(id) = known {
            let path = format!("{}/{}", place.edit, numeric(&id)?);
            match self
                .request(place.edit_method.clone(), &path, auth, Some(&body))
                .await
            {
                Ok(_) => return refs.set(&place.key, &id),
                // Deleted since, or not ours (someone else's comment copying the marker): a
                // new one is made.
                Err(SendError::Final {
                    status: Some(403 | 404),
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        let id = self.create(&place.create, auth, &body).await?;
        refs.set(&place.key, &id)
    }

    async fn find_marked(
        &self,
        place: &CommentPlace,
        marker: &str,
        auth: (&'static str, &HeaderValue),
    ) -> Result<Option<String>, SendError> {
        let join = if place.list.contains('?') { '&' } else { '?' };
        let (size, per_page) = place.page_size;
        for page in 1..=10 {
            let path = format!("{}{join}{size}={per_page}&page={page}", place.list);
            let answer = self.request(Method::GET, &path, auth, None).await?;
            let (found, listed) = marked(&answer, place.text_at, marker);
            if found.is_some() || listed < per_page {
                return Ok(found);
            }
        }
        Ok(None)
    }
}

/// The first line of gitops' comment on a pull request as sent: [`COMMENT_MARKER`] with a tag,
/// HMAC-SHA256 of `place` (`comment:{repo}:{number}`) keyed with the credential. A comment is
/// taken as gitops' own only with this line: someone who writes a comment starting with the
/// plain marker (before gitops' first) cannot have gitops edit theirs, and cannot make the tag
/// of a pull request without the credential.
pub fn tagged_marker(credential: &[u8], place: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(credential)
        .expect("HMAC takes a key of any length");
    mac.update(place.as_bytes());
    let tag: String = mac.finalize().into_bytes()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let open = COMMENT_MARKER.trim_end_matches("-->").trim_end();
    format!("{open} {tag} -->")
}

/// Whether `s` may be one part of a repository's path (`owner`, `name`, a group): nothing that
/// would change the request's path or query.
pub(crate) fn path_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `{prefix}/{owner}/{name}` of `repo` ("owner/name"), refusing names that would change the
/// request's path; `what` names the forge's terms in the refusal ("GitHub owner/name").
pub(crate) fn owner_name_path(repo: &str, prefix: &str, what: &str) -> Result<String, SendError> {
    match repo.split_once('/') {
        Some((owner, name)) if path_part_ok(owner) && path_part_ok(name) => {
            Ok(format!("{prefix}/{owner}/{name}"))
        }
        _ => Err(refused(format!("\"{repo}\" is not a {what}"))),
    }
}

/// The judgement of a forge without rate-limit headers of its own (Gitea, Bitbucket): success;
/// 429, 408 and 5xx worth a retry (after `Retry-After` when it says); anything else final.
pub(crate) fn judge_plain(
    forge: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let message = format!(
        "{forge} answered {}: {}",
        status.as_u16(),
        forge_message(body)
    );
    let after = header_u64(headers, "retry-after").map(Duration::from_secs);
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        return Err(SendError::Retry { message, after });
    }
    Err(SendError::Final {
        status: Some(status.as_u16()),
        message,
    })
}

/// `value` as a header value that is never logged (`HeaderValue::set_sensitive`).
pub(crate) fn sensitive(value: &str) -> Result<HeaderValue, hyper::header::InvalidHeaderValue> {
    let mut value = HeaderValue::from_str(value)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Sends `request` and reads the answer within `timeout`: its status, headers and body (empty
/// when unreadable). Unreachable or too slow is worth a retry.
pub(crate) async fn exchange(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
    forge: &str,
) -> Result<(StatusCode, HeaderMap, Bytes), SendError> {
    let host = request.uri().authority().map(|a| a.to_string());
    let host = host.unwrap_or_default();
    let exchange = async {
        let answer = client
            .request(request)
            .await
            .map_err(|e| SendError::Retry {
                message: format!("cannot reach {host}: {}", crate::ErrorChain(&e)),
                after: None,
            })?;
        let (parts, body) = answer.into_parts();
        // A body over the limit is not read as an empty answer (a list without the comment,
        // an object without its id): it is worth another try.
        let body = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| SendError::Retry {
                message: format!(
                    "{host} answered {}, and its body could not be read: {e}",
                    parts.status.as_u16()
                ),
                after: None,
            })?
            .to_bytes();
        Ok::<_, SendError>((parts.status, parts.headers, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SendError::Retry {
            message: format!("{forge} did not answer within {timeout:?}"),
            after: None,
        })?
}

/// A request that cannot be made (a bad header value): final.
pub(crate) fn unmakeable(path: &str, e: impl std::fmt::Display) -> SendError {
    SendError::Final {
        status: None,
        message: format!("cannot make the request to {path}: {e}"),
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The forge's `message` (and `errors`) from an error body, else the start of the body.
pub(crate) fn forge_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let message = json.get("message").or_else(|| json.get("error"));
        let text = match message {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // GitLab's validation errors: `{"message": {"field": ["is invalid"]}}`.
            Some(other) => Some(other.to_string()),
            None => None,
        };
        if let Some(text) = text {
            return match json.get("errors") {
                Some(errors) => super::truncate_chars(&format!("{text} {errors}"), 500),
                None => super::truncate_chars(&text, 500),
            };
        }
    }
    super::truncate_chars(String::from_utf8_lossy(body).trim(), 200)
}

/// The `id` of a created object.
pub(crate) fn created_id(answer: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(answer).ok()?;
    json.get("id")?.as_u64().map(|id| id.to_string())
}

/// A refusal made before sending: the update cannot be a valid request.
pub(crate) fn refused(message: String) -> SendError {
    SendError::Final {
        status: None,
        message,
    }
}

/// A commit sha, refused unless hexadecimal.
pub(crate) fn sha(sha: &str) -> Result<&str, SendError> {
    if sha.is_empty() || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(refused(format!("\"{sha}\" is not a commit sha")));
    }
    Ok(sha)
}

/// An id a forge gave, refused unless a number (it goes into a path).
pub(crate) fn numeric(id: &str) -> Result<&str, SendError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(refused(format!("\"{id}\" is not an id")));
    }
    Ok(id)
}

/// The id of the first comment of a list (a JSON array, or Bitbucket's page: `values`) whose
/// text (at `text_at`) starts with `marker`, and how many the list held.
fn marked(list: &[u8], text_at: &[&str], marker: &str) -> (Option<String>, usize) {
    let json: serde_json::Value = serde_json::from_slice(list).unwrap_or_default();
    let items = match json {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut page) => match page.remove("values") {
            Some(serde_json::Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let text = |c: &serde_json::Value| {
        text_at
            .iter()
            .try_fold(c, |v, key| v.get(key))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
    };
    let found = items
        .iter()
        .find(|c| text(c).is_some_and(|t| t.starts_with(marker)));
    let id = found
        .and_then(|c| c.get("id"))
        .and_then(|id| id.as_u64())
        .map(|id| id.to_string());
    (id, items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_name_from_an_event_cannot_change_the_request_path() {
        assert_eq!(
            owner_name_path("o/r.js", "/repos", "GitHub owner/name").unwrap(),
            "/repos/o/r.js"
        );
        for hostile in [
            "",
            "o",
            "o/",
            "/r",
            "../x",
            "o/..",
            "./r",
            "o/r/x",
            "o/r?per_page=1",
            "o/r#x",
            "o/r%2F..",
            "o /r",
            "o/r\n",
            "ö/r",
        ] {
            match owner_name_path(hostile, "/repos", "GitHub owner/name") {
                Err(SendError::Final { message, .. }) => {
                    assert!(message.contains("is not a GitHub owner/name"), "{message}")
                }
                other => panic!("{hostile:?}: {other:?}"),
            }
        }
    }
}
