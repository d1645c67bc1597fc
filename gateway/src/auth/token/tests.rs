use jsonwebtoken::{EncodingKey, Header};
use proptest::prelude::*;
use serde_json::json;

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;

fn hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("signs")
}

fn es256_keys() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    (key.serialize_pem(), key.public_key_pem())
}

fn es256(claims: &serde_json::Value, private_pem: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).expect("EC key"),
    )
    .expect("signs")
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn verifier() -> TokenVerifier {
    TokenVerifier::new(Some(SECRET), None, None, None, 30).expect("verifier")
}

fn claims() -> serde_json::Value {
    json!({"sub": "1001", "exp": NOW + 300, "iat": NOW})
}

#[test]
fn a_valid_hs256_token_gives_its_subject() {
    let token = hs256(&claims(), SECRET);
    let claims = verifier().verify(&token, NOW).expect("valid");
    assert_eq!(claims.subject, "1001");
    assert_eq!(claims.expires_at, NOW + 300);
    assert!(claims.dial.is_none());
}

#[test]
fn a_valid_es256_token_gives_its_subject_and_dial_scope() {
    let (private, public) = es256_keys();
    let verifier =
        TokenVerifier::new(None, Some(public.as_bytes()), None, None, 0).expect("verifier");
    let token = es256(
        &json!({"sub": "1002", "exp": NOW + 60, "dial": ["echo", "10[0-9]{2}"]}),
        &private,
    );
    let claims = verifier.verify(&token, NOW).expect("valid");
    assert_eq!(claims.subject, "1002");
    let dial = claims.dial.expect("dial claim");
    assert!(dial.matches("echo") && dial.matches("1003"));
    assert!(!dial.matches("+84912345678"));
}

#[test]
fn forged_and_unsigned_tokens_are_refused() {
    let forged = hs256(&claims(), b"another secret of at least 32 bytes!!");
    assert_eq!(
        verifier().verify(&forged, NOW).err(),
        Some(TokenError::Signature)
    );

    let payload = b64url(claims().to_string().as_bytes());
    let none = format!("{}.{payload}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
    assert_eq!(
        verifier().verify(&none, NOW).err(),
        Some(TokenError::Algorithm)
    );

    // A tampered payload under a genuine signature.
    let genuine = hs256(&claims(), SECRET);
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let evil = b64url(
        json!({"sub": "9999", "exp": NOW + 300})
            .to_string()
            .as_bytes(),
    );
    parts[1] = &evil;
    assert_eq!(
        verifier().verify(&parts.join("."), NOW).err(),
        Some(TokenError::Signature)
    );
}

#[test]
fn the_algorithm_is_pinned_by_the_key_kind() {
    let (private, public) = es256_keys();
    let es_only =
        TokenVerifier::new(None, Some(public.as_bytes()), None, None, 0).expect("verifier");
    // Alg confusion: an HS256 token "signed" with the public key as HMAC secret.
    let confused = hs256(&claims(), public.as_bytes());
    assert_eq!(
        es_only.verify(&confused, NOW).err(),
        Some(TokenError::Algorithm)
    );
    // An ES256 token where only a secret is configured.
    let es_token = es256(&claims(), &private);
    assert_eq!(
        verifier().verify(&es_token, NOW).err(),
        Some(TokenError::Algorithm)
    );
    // Other algorithms are never accepted.
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims(),
        &EncodingKey::from_secret(SECRET),
    )
    .expect("signs");
    assert_eq!(
        verifier().verify(&hs384, NOW).err(),
        Some(TokenError::Algorithm)
    );
}

#[test]
fn time_claims_are_checked_against_now_with_leeway() {
    let v = verifier();
    let expired = hs256(&json!({"sub": "1001", "exp": NOW - 31}), SECRET);
    assert_eq!(v.verify(&expired, NOW).err(), Some(TokenError::Expired));
    let within_leeway = hs256(&json!({"sub": "1001", "exp": NOW - 29}), SECRET);
    assert!(v.verify(&within_leeway, NOW).is_ok());
    let no_exp = hs256(&json!({"sub": "1001"}), SECRET);
    assert_eq!(
        v.verify(&no_exp, NOW).err(),
        Some(TokenError::MissingExpiry)
    );
    let early = hs256(
        &json!({"sub": "1001", "exp": NOW + 600, "nbf": NOW + 60}),
        SECRET,
    );
    assert_eq!(v.verify(&early, NOW).err(), Some(TokenError::NotYetValid));
    assert!(v.verify(&early, NOW + 40).is_ok(), "nbf minus leeway");
    let bad_exp = hs256(&json!({"sub": "1001", "exp": "tomorrow"}), SECRET);
    assert_eq!(v.verify(&bad_exp, NOW).err(), Some(TokenError::Claims));
    assert!(TokenError::Expired.is_expiry() && !TokenError::Signature.is_expiry());
}

#[test]
fn issuer_and_audience_are_required_when_configured() {
    let v =
        TokenVerifier::new(Some(SECRET), None, Some("crm"), Some("callgate"), 0).expect("verifier");
    let good = hs256(
        &json!({"sub": "1001", "exp": NOW + 60, "iss": "crm", "aud": "callgate"}),
        SECRET,
    );
    assert!(v.verify(&good, NOW).is_ok());
    let wrong_aud = hs256(
        &json!({"sub": "1001", "exp": NOW + 60, "iss": "crm", "aud": "other"}),
        SECRET,
    );
    assert_eq!(v.verify(&wrong_aud, NOW).err(), Some(TokenError::Audience));
    let no_aud = hs256(
        &json!({"sub": "1001", "exp": NOW + 60, "iss": "crm"}),
        SECRET,
    );
    assert_eq!(v.verify(&no_aud, NOW).err(), Some(TokenError::Audience));
    let wrong_iss = hs256(
        &json!({"sub": "1001", "exp": NOW + 60, "iss": "evil", "aud": "callgate"}),
        SECRET,
    );
    assert_eq!(v.verify(&wrong_iss, NOW).err(), Some(TokenError::Issuer));
    let no_iss = hs256(
        &json!({"sub": "1001", "exp": NOW + 60, "aud": "callgate"}),
        SECRET,
    );
    assert_eq!(v.verify(&no_iss, NOW).err(), Some(TokenError::Issuer));
    // Without configured iss/aud, the claims are not checked.
    assert!(verifier().verify(&wrong_aud, NOW).is_ok());
}

#[test]
fn bad_claims_are_refused() {
    let v = verifier();
    let no_sub = hs256(&json!({"exp": NOW + 60}), SECRET);
    assert_eq!(v.verify(&no_sub, NOW).err(), Some(TokenError::Claims));
    let bad_pattern = hs256(
        &json!({"sub": "1001", "exp": NOW + 60, "dial": ["("]}),
        SECRET,
    );
    assert_eq!(v.verify(&bad_pattern, NOW).err(), Some(TokenError::Claims));
    let not_a_list = hs256(
        &json!({"sub": "1001", "exp": NOW + 60, "dial": "1.*"}),
        SECRET,
    );
    assert_eq!(v.verify(&not_a_list, NOW).err(), Some(TokenError::Claims));
    let many: Vec<String> = (0..=MAX_DIAL_PATTERNS).map(|i| i.to_string()).collect();
    let too_many = hs256(
        &json!({"sub": "1001", "exp": NOW + 60, "dial": many}),
        SECRET,
    );
    assert_eq!(v.verify(&too_many, NOW).err(), Some(TokenError::Claims));
    let empty = hs256(&json!({"sub": "1001", "exp": NOW + 60, "dial": []}), SECRET);
    let scope = v.verify(&empty, NOW).expect("valid").dial.expect("scope");
    assert!(!scope.matches("1002"), "an empty dial list allows nothing");
    assert_eq!(v.verify("", NOW).err(), Some(TokenError::Malformed));
    assert_eq!(v.verify("a.b", NOW).err(), Some(TokenError::Malformed));
    assert_eq!(
        v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW).err(),
        Some(TokenError::Malformed)
    );
}

#[test]
fn keys_are_checked_when_built() {
    assert!(TokenVerifier::new(Some(b"short"), None, None, None, 0).is_err());
    assert!(TokenVerifier::new(None, Some(b"not a pem"), None, None, 0).is_err());
    assert!(TokenVerifier::new(None, None, None, None, 0).is_err());
}

proptest! {
    #[test]
    fn verify_never_panics_on_arbitrary_text(text in ".{0,600}") {
        let _ = verifier().verify(&text, NOW);
    }

    #[test]
    fn verify_never_panics_on_jwt_shaped_text(
        header in "[A-Za-z0-9_-]{0,80}",
        payload in "[A-Za-z0-9_-]{0,200}",
        signature in "[A-Za-z0-9_-]{0,90}",
    ) {
        let _ = verifier().verify(&format!("{header}.{payload}.{signature}"), NOW);
    }

    #[test]
    fn verify_never_panics_on_arbitrary_json_payloads(payload in ".{0,200}") {
        let token = format!(
            "{}.{}.{}",
            b64url(br#"{"alg":"HS256"}"#),
            b64url(payload.as_bytes()),
            b64url(b"sig")
        );
        let _ = verifier().verify(&token, NOW);
    }
}
