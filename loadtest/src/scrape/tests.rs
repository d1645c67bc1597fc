use super::*;

const TEXT: &str = "# HELP callgate_calls Calls.\n# TYPE callgate_calls counter\n\
callgate_calls_total{result=\"answered\"} 20\n\
callgate_media_errors_total{kind=\"no_target\"} 1\n\
callgate_media_errors_total{kind=\"unknown_source\"} 0\n\
callgate_ws_connections 3\n";

#[test]
fn counters_are_read_and_their_growth_computed() {
    let after = counters(TEXT);
    assert_eq!(after.len(), 3);
    assert_eq!(
        after.get("callgate_calls_total{result=\"answered\"}"),
        Some(&20.0)
    );
    let before = counters("callgate_calls_total{result=\"answered\"} 5\n");
    let grown = increase(&before, &after);
    assert_eq!(
        grown.into_iter().collect::<Vec<_>>(),
        [
            (
                "callgate_calls_total{result=\"answered\"}".to_string(),
                15.0
            ),
            (
                "callgate_media_errors_total{kind=\"no_target\"}".to_string(),
                1.0
            ),
        ]
    );
}

#[test]
fn chunked_bodies_are_joined() {
    assert_eq!(
        dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "hello world"
    );
    assert_eq!(dechunk("zz\r\n"), "");
}

#[test]
fn the_http_authority_comes_from_the_ws_url() {
    let url = WsUrl::parse("ws://127.0.0.1:8080/ws").expect("valid");
    assert_eq!(url.authority(), "127.0.0.1:8080");
}
