use std::path::Path;

use proptest::prelude::*;

use crate::parse::KNOWN_TYPES;
use crate::*;

fn fixtures(side: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(side);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("fixture directory exists")
        .map(|entry| {
            let path = entry.expect("readable fixture entry").path();
            let text = std::fs::read_to_string(&path).expect("readable fixture");
            (path.display().to_string(), text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn client_fixtures_round_trip() {
    let files = fixtures("client");
    assert!(
        files.len() >= KNOWN_TYPES.len(),
        "one fixture per client message type"
    );
    for (name, text) in files {
        let parsed = parse_client_message(&text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let back = serde_json::to_value(&parsed).expect("serializes");
        let original: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
        assert_eq!(back, original, "{name} round-trips");
    }
}

#[test]
fn server_fixtures_round_trip() {
    let files = fixtures("server");
    assert!(files.len() >= 17);
    for (name, text) in files {
        let parsed: ServerMessage =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = serde_json::to_value(&parsed).expect("serializes");
        let original: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
        assert_eq!(back, original, "{name} round-trips");
    }
}

#[test]
fn every_client_type_has_a_fixture_and_is_known() {
    let names: Vec<String> = fixtures("client")
        .iter()
        .map(|(_, text)| {
            let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
            v["type"].as_str().expect("type tag").to_string()
        })
        .collect();
    for kind in KNOWN_TYPES {
        assert!(names.iter().any(|n| n == kind), "fixture for {kind}");
    }
    for name in &names {
        assert!(
            KNOWN_TYPES.contains(&name.as_str()),
            "{name} listed in KNOWN_TYPES"
        );
    }
}

#[test]
fn error_codes_table_is_complete_and_spelled_as_serde() {
    for code in ErrorCode::ALL {
        let json = serde_json::to_value(code).expect("serializes");
        assert_eq!(json.as_str(), Some(code.as_str()));
    }
    let mut spellings: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    spellings.sort();
    spellings.dedup();
    assert_eq!(spellings.len(), ErrorCode::ALL.len(), "no duplicate codes");
}

#[test]
fn malformed_frames_get_precise_codes() {
    let cases: &[(&str, ErrorCode, Option<u64>)] = &[
        ("{", ErrorCode::BadJson, None),
        ("[1,2]", ErrorCode::BadJson, None),
        ("\"hello\"", ErrorCode::BadJson, None),
        (r#"{"request_id":5}"#, ErrorCode::UnknownType, Some(5)),
        (
            r#"{"type":"dance","request_id":6}"#,
            ErrorCode::UnknownType,
            Some(6),
        ),
        (
            r#"{"type":7,"request_id":6}"#,
            ErrorCode::UnknownType,
            Some(6),
        ),
        (
            r#"{"type":"call","request_id":7}"#,
            ErrorCode::InvalidMessage,
            Some(7),
        ),
        (
            r#"{"type":"ping","request_id":8,"surprise":true}"#,
            ErrorCode::InvalidMessage,
            Some(8),
        ),
        (
            r#"{"type":"hangup","request_id":"x","call_id":"c"}"#,
            ErrorCode::InvalidMessage,
            None,
        ),
    ];
    for (text, code, id) in cases {
        let err = parse_client_message(text).expect_err(text);
        assert_eq!(err.code, *code, "{text}");
        assert_eq!(err.request_id, *id, "{text}");
        assert!(!err.message.is_empty());
    }
}

#[test]
fn oversized_frame_is_refused_before_parsing() {
    let text = format!(
        r#"{{"type":"ping","request_id":1,"pad":"{}"}}"#,
        "a".repeat(MAX_MESSAGE_BYTES)
    );
    assert_eq!(
        parse_client_message(&text).expect_err("too big").code,
        ErrorCode::MessageTooLarge
    );
}

#[test]
fn password_never_appears_in_debug_output() {
    let auth = Auth::SipCredentials {
        extension: "1001".into(),
        password: "hunter2".into(),
    };
    let text = format!("{auth:?}");
    assert!(text.contains("1001"));
    assert!(!text.contains("hunter2"));
    let auth = Auth::Token {
        extension: Some("1001".into()),
        token: "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl".into(),
    };
    let text = format!("{auth:?}");
    assert!(text.contains("1001"));
    assert!(!text.contains("eyJ"), "the token is redacted: {text}");
}

proptest! {
    #[test]
    fn parser_never_panics_on_arbitrary_text(text in ".{0,512}") {
        let _ = parse_client_message(&text);
    }

    #[test]
    fn parser_never_panics_on_json_shaped_text(
        kind in prop::sample::select(vec!["hello", "call", "hangup", "ping", "x"]),
        body in "[a-z_\":,0-9{}\\[\\] ]{0,128}",
    ) {
        let _ = parse_client_message(&format!(r#"{{"type":"{kind}",{body}}}"#));
    }
}
