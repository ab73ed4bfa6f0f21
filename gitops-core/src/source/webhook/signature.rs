//! Webhook authenticity: the HMACs of GitHub (`X-Hub-Signature-256`), Bitbucket Cloud
//! (`X-Hub-Signature`) and Gitea/Forgejo (`X-Gitea-Signature`), and GitLab's `X-Gitlab-Token`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a webhook was not accepted as authentic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The request carries no signature or token header.
    #[error("missing {header} header")]
    Missing {
        /// The header that was expected.
        header: &'static str,
    },
    /// The header is not of the form the forge sends.
    #[error("malformed {header} header: {reason}")]
    Malformed {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signature or token does not match the configured secret.
    #[error("{header} does not match the configured secret")]
    Mismatch {
        /// The header.
        header: &'static str,
    },
}

const GITHUB_HEADER: &str = "X-Hub-Signature-256";
const GITLAB_HEADER: &str = "X-Gitlab-Token";
const BITBUCKET_HEADER: &str = "X-Hub-Signature";
const GITEA_HEADER: &str = "X-Gitea-Signature";

/// Checks GitHub's `X-Hub-Signature-256` header (`sha256=<hex HMAC-SHA256 of the body>`).
///
/// The comparison takes the same time whatever the signature, so that it leaks nothing.
///
/// ```
/// use gitops_core::source::webhook::verify_github_signature;
/// // The example from GitHub's documentation.
/// let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
/// assert!(verify_github_signature(b"It's a Secret to Everybody", b"Hello, World!", Some(sig)).is_ok());
/// ```
pub fn verify_github_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    verify_prefixed(GITHUB_HEADER, secret, body, header)
}

/// Checks Bitbucket Cloud's `X-Hub-Signature` header (`sha256=<hex HMAC-SHA256 of the body>`,
/// the same form as GitHub's), in constant time.
pub fn verify_bitbucket_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    verify_prefixed(BITBUCKET_HEADER, secret, body, header)
}

/// Checks Gitea's `X-Gitea-Signature` (or Forgejo's `X-Forgejo-Signature`) header: the bare hex
/// HMAC-SHA256 of the body, without a prefix. In constant time.
pub fn verify_gitea_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing {
        header: GITEA_HEADER,
    })?;
    verify_hex(
        GITEA_HEADER,
        "expected 64 hexadecimal digits",
        secret,
        body,
        header.trim(),
    )
}

/// `sha256=<hex>` headers (GitHub, Bitbucket).
fn verify_prefixed(
    name: &'static str,
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing { header: name })?;
    let hex = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed {
            header: name,
            reason: "expected sha256=<hex>",
        })?;
    verify_hex(
        name,
        "expected 64 hexadecimal digits after sha256=",
        secret,
        body,
        hex,
    )
}

fn verify_hex(
    name: &'static str,
    malformed: &'static str,
    secret: &[u8],
    body: &[u8],
    hex: &str,
) -> Result<(), SignatureError> {
    let expected = decode_hex(hex).ok_or(SignatureError::Malformed {
        header: name,
        reason: malformed,
    })?;
    let mismatch = SignatureError::Mismatch { header: name };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| mismatch.clone())?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| mismatch)
}

/// Whether a signature header's value has the form the forge sends (`sha256=` and 64 hex
/// digits for GitHub and Bitbucket, the bare 64 digits for Gitea), before the body is read.
pub fn signature_well_formed(prefixed: bool, header: &str) -> bool {
    let header = header.trim();
    let hex = if prefixed {
        header.strip_prefix("sha256=")
    } else {
        Some(header)
    };
    hex.is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks GitLab's `X-Gitlab-Token` header, which carries the secret token itself.
///
/// Both sides are hashed before comparing, in constant time, so that neither the token's
/// content nor its length leaks through timing.
pub fn verify_gitlab_token(expected: &str, header: Option<&str>) -> Result<(), SignatureError> {
    let given = header.ok_or(SignatureError::Missing {
        header: GITLAB_HEADER,
    })?;
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    if bool::from(a.as_slice().ct_eq(b.as_slice())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch {
            header: GITLAB_HEADER,
        })
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    s.as_bytes()
        .chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    #[test]
    fn github_signature_accepts_the_right_one_only() {
        let sig = sign(b"s3cret", b"{}");
        assert_eq!(
            verify_github_signature(b"s3cret", b"{}", Some(&sig)),
            Ok(())
        );
        assert_eq!(
            verify_github_signature(b"other", b"{}", Some(&sig)),
            Err(SignatureError::Mismatch {
                header: GITHUB_HEADER
            })
        );
        assert_eq!(
            verify_github_signature(b"s3cret", b"{ }", Some(&sig)),
            Err(SignatureError::Mismatch {
                header: GITHUB_HEADER
            })
        );
        assert!(matches!(
            verify_github_signature(b"s3cret", b"{}", Some("sha1=abc")),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            verify_github_signature(b"s3cret", b"{}", Some("sha256=zz")),
            Err(SignatureError::Malformed { .. })
        ));
        let upper = sig.replacen("sha256=", "", 1).to_uppercase();
        assert_eq!(
            verify_github_signature(b"s3cret", b"{}", Some(&format!("sha256={upper}"))),
            Ok(())
        );
        assert_eq!(
            verify_github_signature(b"s3cret", b"{}", None),
            Err(SignatureError::Missing {
                header: GITHUB_HEADER
            })
        );
        let non_ascii = format!("sha256={}", "é".repeat(32));
        assert!(verify_github_signature(b"s3cret", b"{}", Some(&non_ascii)).is_err());
    }

    const BITBUCKET_SIGNED: &str =
        "f205c729821c6954aff2afe72b965c34015b4baf96ea8ddc2cc44999c014a035";

    fn bitbucket_signed_body() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/webhooks/bitbucket/signed.json"
        );
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
    }

    #[test]
    fn bitbucket_real_signature_is_accepted_and_one_character_off_is_not() {
        let body = bitbucket_signed_body();
        let secret = b"Gkvl$k$wyNpQAF42";
        let header = format!("sha256={BITBUCKET_SIGNED}");
        assert_eq!(
            verify_bitbucket_signature(secret, &body, Some(&header)),
            Ok(())
        );
        let mismatch = Err(SignatureError::Mismatch {
            header: BITBUCKET_HEADER,
        });
        // One character of the body changed, anywhere.
        for at in [0, body.len() / 2, body.len() - 1] {
            let mut changed = body.clone();
            changed[at] ^= 1;
            assert_eq!(
                verify_bitbucket_signature(secret, &changed, Some(&header)),
                mismatch
            );
        }
        // One character of the signature changed.
        for at in [7, 30, header.len() - 1] {
            let mut changed = header.clone().into_bytes();
            changed[at] = if changed[at] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(changed).unwrap();
            assert_eq!(
                verify_bitbucket_signature(secret, &body, Some(&changed)),
                mismatch
            );
        }
        assert_eq!(
            verify_bitbucket_signature(b"Gkvl$k$wyNpQAF43", &body, Some(&header)),
            mismatch
        );
        // The bare hex is Gitea's form, not Bitbucket's.
        assert!(matches!(
            verify_bitbucket_signature(secret, &body, Some(BITBUCKET_SIGNED)),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(signature_well_formed(true, &header));
        assert!(!signature_well_formed(true, BITBUCKET_SIGNED));
    }

    #[test]
    fn gitea_signature_is_bare_hex() {
        let sig = sign(b"s3cret", b"{}");
        let bare = sig.strip_prefix("sha256=").unwrap();
        assert_eq!(verify_gitea_signature(b"s3cret", b"{}", Some(bare)), Ok(()));
        assert_eq!(
            verify_gitea_signature(b"s3cret", b"{ }", Some(bare)),
            Err(SignatureError::Mismatch {
                header: GITEA_HEADER
            })
        );
        assert!(matches!(
            verify_gitea_signature(b"s3cret", b"{}", Some(&sig)),
            Err(SignatureError::Malformed { .. })
        ));
        assert_eq!(
            verify_gitea_signature(b"s3cret", b"{}", None),
            Err(SignatureError::Missing {
                header: GITEA_HEADER
            })
        );
        assert!(signature_well_formed(false, bare));
        assert!(!signature_well_formed(false, &sig));
    }

    #[test]
    fn gitlab_token_must_match_exactly() {
        assert_eq!(verify_gitlab_token("tok", Some("tok")), Ok(()));
        assert!(verify_gitlab_token("tok", Some("tok ")).is_err());
        assert!(verify_gitlab_token("tok", Some("")).is_err());
        assert!(verify_gitlab_token("tok", None).is_err());
    }
}
