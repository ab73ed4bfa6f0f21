//! Webhook authenticity: GitHub's `X-Hub-Signature-256` HMAC and GitLab's `X-Gitlab-Token`.

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
    let header = header.ok_or(SignatureError::Missing {
        header: GITHUB_HEADER,
    })?;
    let hex = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed {
            header: GITHUB_HEADER,
            reason: "expected sha256=<hex>",
        })?;
    let expected = decode_hex(hex).ok_or(SignatureError::Malformed {
        header: GITHUB_HEADER,
        reason: "expected 64 hexadecimal digits after sha256=",
    })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch {
        header: GITHUB_HEADER,
    })?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch {
            header: GITHUB_HEADER,
        })
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

    #[test]
    fn gitlab_token_must_match_exactly() {
        assert_eq!(verify_gitlab_token("tok", Some("tok")), Ok(()));
        assert!(verify_gitlab_token("tok", Some("tok ")).is_err());
        assert!(verify_gitlab_token("tok", Some("")).is_err());
        assert!(verify_gitlab_token("tok", None).is_err());
    }
}
