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

#[test]
fn relay_delay_quantiles_come_from_the_buckets_growth() {
    let family = "callgate_media_relay_delay_seconds";
    let before = counters(&format!(
        "{family}_bucket{{le=\"0.0001\"}} 10\n{family}_bucket{{le=\"0.0005\"}} 10\n\
         {family}_bucket{{le=\"0.001\"}} 10\n{family}_bucket{{le=\"+Inf\"}} 10\n\
         {family}_sum 0.0005\n{family}_count 10\n"
    ));
    // 1,000 packets during the run: 600 within 0.1 ms, 390 more within 0.5 ms, 9 more
    // within 1 ms, 1 beyond every bound.
    let after = counters(&format!(
        "{family}_bucket{{le=\"0.0001\"}} 610\n{family}_bucket{{le=\"0.0005\"}} 1000\n\
         {family}_bucket{{le=\"0.001\"}} 1009\n{family}_bucket{{le=\"+Inf\"}} 1010\n\
         {family}_sum 0.2005\n{family}_count 1010\n"
    ));
    let delay = relay_delay(&increase(&before, &after)).expect("packets observed");
    assert_eq!(delay.packets, 1000);
    assert!((delay.mean_ms - 0.2).abs() < 1e-9, "{delay:?}");
    assert_eq!(delay.p50_at_most_ms, Some(0.1));
    assert_eq!(delay.p99_at_most_ms, Some(0.5));
    assert_eq!(delay.p999_at_most_ms, Some(1.0));
    let one_late = counters(&format!(
        "{family}_bucket{{le=\"0.0001\"}} 10\n{family}_bucket{{le=\"+Inf\"}} 12\n\
         {family}_sum 1\n{family}_count 12\n"
    ));
    let delay = relay_delay(&increase(&before, &one_late)).expect("two packets");
    assert_eq!(delay.p99_at_most_ms, None, "beyond the last bound");
    assert!(
        relay_delay(&increase(&after, &after)).is_none(),
        "nothing grew"
    );
}
