//! The harness's check of the sidecar's log: a WARN or ERROR line the test
//! did not declare fails it when the sidecar stops; a declared one does not.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::common::log_check::{Expected, level_of, unexpected};
use crate::common::{Nearby, RedisServer, free_port, wait_until};

#[test]
fn levels_are_read_from_text_and_json_lines() {
    let text = "2026-12-01T22:40:16.123456Z  WARN nearby::health: upstream is down upstream=r1";
    assert_eq!(level_of(text), Some("WARN"));
    assert_eq!(
        level_of("2026-12-01T22:40:16.123456Z ERROR nearby: nearby stopped"),
        Some("ERROR")
    );
    assert_eq!(
        level_of("2026-12-01T22:40:16.123456Z  INFO nearby: listening"),
        Some("INFO")
    );
    assert_eq!(level_of(" WARN nearby: no timestamp"), Some("WARN"));
    let json = r#"{"timestamp":"2026-12-01T22:40:16Z","level":"ERROR","fields":{"message":"x"},"target":"nearby"}"#;
    assert_eq!(level_of(json), Some("ERROR"));
    assert_eq!(level_of("thread 'main' panicked at src/main.rs:1:1:"), None);
    assert_eq!(level_of("  WARNING: not a tracing line"), None);
    assert_eq!(level_of(""), None);

    let log = format!("{text}\n2026-12-01T22:40:17Z ERROR nearby: boom\nplain line\n");
    assert_eq!(unexpected(&log, &[]).len(), 2);
    assert_eq!(
        unexpected(&log, &[Expected::new("WARN", "upstream is down")]),
        ["2026-12-01T22:40:17Z ERROR nearby: boom"]
    );
    // The level must match too.
    assert_eq!(
        unexpected(&log, &[Expected::new("ERROR", "upstream is down")]).len(),
        2
    );
}

fn with_a_dead_replica() -> (RedisServer, Vec<String>) {
    let primary = RedisServer::start();
    let args = vec![
        "--primary".to_string(),
        primary.url(),
        "--primary-region".to_string(),
        "primary".to_string(),
        "--replica".to_string(),
        format!("gone=redis://127.0.0.1:{}", free_port()),
    ];
    (primary, args)
}

#[test]
fn an_undeclared_warning_fails_the_test_and_a_declared_one_does_not() {
    let (_primary, args) = with_a_dead_replica();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut nearby = Nearby::start(&args);
    assert!(wait_until(Duration::from_secs(10), || nearby
        .log()
        .contains("upstream is down")));
    let failed = catch_unwind(AssertUnwindSafe(|| nearby.stop()))
        .expect_err("stop() passed with an undeclared WARN line");
    let msg = failed
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(msg.contains("did not expect"), "{msg}");
    assert!(msg.contains("upstream is down"), "{msg}");
    // Checked once: the drop does not fail again.
    drop(nearby);

    let mut nearby = Nearby::start(&args);
    nearby.expect_log("WARN", "upstream is down");
    assert!(wait_until(Duration::from_secs(10), || nearby
        .log()
        .contains("upstream is down")));
    nearby.stop();
}
