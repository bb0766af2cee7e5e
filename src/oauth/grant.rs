//! The rules of codes and refresh tokens, as pure functions of stored facts and `now`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{ErrorCode, OAuthError, pkce};

/// Authorization codes live about a minute: clients redeem them at once.
pub const CODE_TTL: i64 = 60;
/// Pending authorization requests (consent page, upstream login) live ten minutes.
pub const PENDING_TTL: i64 = 600;

fn invalid_grant(why: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, why)
}

/// What was stored when the code was issued.
pub struct IssuedCode<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub code_challenge: &'a str,
    pub expires_at: i64,
}

/// What the token request presents.
pub struct CodeRedemption<'a> {
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
}

/// Checks a redemption against the issued code: same client, same redirect URI when one is
/// sent, a PKCE verifier matching the challenge, not expired.
pub fn check_code(
    code: &IssuedCode<'_>,
    req: &CodeRedemption<'_>,
    now: i64,
) -> Result<(), OAuthError> {
    if code.client_id != req.client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if now >= code.expires_at {
        return Err(invalid_grant("the code has expired"));
    }
    if req.redirect_uri.is_some_and(|uri| uri != code.redirect_uri) {
        return Err(invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    let verifier = req
        .code_verifier
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is required"))?;
    if !pkce::verify(verifier, code.code_challenge) {
        return Err(invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Current token: rotate it.
    Rotate,
    /// Rotated moments ago: a second server or a lost response; hand out the same successor.
    Grace,
    /// Rotated long ago: someone replays an old token; revoke the whole family.
    Reuse,
    /// Unused for too long.
    Expired,
}

pub fn refresh_outcome(
    rotated_at: Option<i64>,
    idle_expires_at: i64,
    now: i64,
    grace_seconds: i64,
) -> RefreshOutcome {
    match rotated_at {
        None if now >= idle_expires_at => RefreshOutcome::Expired,
        None => RefreshOutcome::Rotate,
        Some(at) if now - at <= grace_seconds => RefreshOutcome::Grace,
        Some(_) => RefreshOutcome::Reuse,
    }
}

fn pad(presented: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"authgate:refresh-successor:");
    h.update(presented.as_bytes());
    h.finalize().into()
}

/// Stores the successor of a rotated refresh token so that only a holder of the old token can
/// recover it (a one-time pad keyed by the old token's hash): the grace window then returns the
/// same successor from any instance without keeping it in the clear.
pub fn seal_successor(presented: &str, successor: &str) -> Option<String> {
    let raw = URL_SAFE_NO_PAD.decode(successor).ok()?;
    let raw: [u8; 32] = raw.try_into().ok()?;
    let pad = pad(presented);
    let sealed: Vec<u8> = raw.iter().zip(pad.iter()).map(|(a, b)| a ^ b).collect();
    Some(URL_SAFE_NO_PAD.encode(sealed))
}

pub fn unseal_successor(presented: &str, sealed: &str) -> Option<String> {
    let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    let raw: [u8; 32] = raw.try_into().ok()?;
    let pad = pad(presented);
    let open: Vec<u8> = raw.iter().zip(pad.iter()).map(|(a, b)| a ^ b).collect();
    Some(URL_SAFE_NO_PAD.encode(open))
}

/// authgate's stable subject for an upstream identity: the same person through the same upstream
/// always gets the same `sub`, and different upstreams can never collide.
pub fn derive_subject(upstream_issuer: &str, upstream_subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(upstream_issuer.as_bytes());
    h.update([0u8]);
    h.update(upstream_subject.as_bytes());
    let digest = h.finalize();
    format!("ag_{}", URL_SAFE_NO_PAD.encode(&digest[..20]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_outcomes() {
        assert_eq!(refresh_outcome(None, 100, 50, 30), RefreshOutcome::Rotate);
        assert_eq!(refresh_outcome(None, 100, 100, 30), RefreshOutcome::Expired);
        assert_eq!(
            refresh_outcome(Some(50), 100, 80, 30),
            RefreshOutcome::Grace
        );
        assert_eq!(
            refresh_outcome(Some(50), 100, 81, 30),
            RefreshOutcome::Reuse
        );
    }

    #[test]
    fn successor_sealing() {
        let old = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let next = URL_SAFE_NO_PAD.encode([9u8; 32]);
        let sealed = seal_successor(&old, &next).unwrap();
        assert_ne!(sealed, next);
        assert_eq!(unseal_successor(&old, &sealed).unwrap(), next);
        assert_ne!(unseal_successor("another", &sealed).unwrap(), next);
    }

    #[test]
    fn code_checks() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = pkce::s256(verifier);
        let code = IssuedCode {
            client_id: "c",
            redirect_uri: "https://a/cb",
            code_challenge: &challenge,
            expires_at: 100,
        };
        let ok = CodeRedemption {
            client_id: "c",
            redirect_uri: Some("https://a/cb"),
            code_verifier: Some(verifier),
        };
        assert!(check_code(&code, &ok, 99).is_ok());
        assert!(
            check_code(
                &code,
                &CodeRedemption {
                    redirect_uri: None,
                    ..ok
                },
                99
            )
            .is_ok()
        );
        assert_eq!(
            check_code(&code, &ok, 100).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            check_code(
                &code,
                &CodeRedemption {
                    client_id: "d",
                    ..ok
                },
                1
            )
            .unwrap_err()
            .code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            check_code(
                &code,
                &CodeRedemption {
                    redirect_uri: Some("https://a/cb/"),
                    ..ok
                },
                1
            )
            .unwrap_err()
            .code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            check_code(
                &code,
                &CodeRedemption {
                    code_verifier: None,
                    ..ok
                },
                1
            )
            .unwrap_err()
            .code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            check_code(
                &code,
                &CodeRedemption {
                    code_verifier: Some("x".repeat(43).as_str()),
                    ..ok
                },
                1
            )
            .unwrap_err()
            .code,
            ErrorCode::InvalidGrant
        );
    }

    #[test]
    fn subjects_are_stable_and_scoped_to_the_issuer() {
        assert_eq!(
            derive_subject("https://a/", "u1"),
            derive_subject("https://a/", "u1")
        );
        assert_ne!(
            derive_subject("https://a/", "u1"),
            derive_subject("https://b/", "u1")
        );
    }
}
