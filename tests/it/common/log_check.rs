//! The sidecar's log, checked when a test stops it: every WARN or ERROR line
//! must have been declared by the test (see `Nearby::expect_log`), in the
//! spirit of shotover's `shutdown_and_then_consume_events(&[EventMatcher])`.
//!
//! Understands both of nearby's formats: text (`<timestamp>  WARN
//! <target>: <message> <fields>`, no colours when not on a terminal) and JSON
//! (`{"timestamp":..,"level":"WARN",..}`). Lines that are neither (a panic
//! message, a continuation line) have no level and are not checked.

/// A log line a test expects: its level and a substring of its text.
#[derive(Clone, Debug)]
pub struct Expected {
    pub level: &'static str,
    pub substring: String,
}

impl Expected {
    /// `level` is `"WARN"` or `"ERROR"` (case-insensitive); panics otherwise.
    pub fn new(level: &str, substring: &str) -> Expected {
        let level = match level.to_ascii_uppercase().as_str() {
            "WARN" => "WARN",
            "ERROR" => "ERROR",
            other => panic!("expect_log: level must be WARN or ERROR, not {other:?}"),
        };
        assert!(
            !substring.is_empty(),
            "expect_log: give a substring of the message, not an empty one"
        );
        Expected {
            level,
            substring: substring.to_string(),
        }
    }

    fn matches(&self, level: &str, line: &str) -> bool {
        self.level == level && line.contains(&self.substring)
    }
}

/// The level of one log line (`"TRACE"` .. `"ERROR"`), if it is one.
pub fn level_of(line: &str) -> Option<&str> {
    const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
    let line = line.trim_start();
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let level = v.get("level")?.as_str()?;
        return LEVELS.into_iter().find(|l| *l == level);
    }
    // Text: `<timestamp> <LEVEL> ...`, or `<LEVEL> ...` without a timestamp.
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let word = if first.starts_with(|c: char| c.is_ascii_digit()) {
        words.next()?
    } else {
        first
    };
    LEVELS.into_iter().find(|l| *l == word)
}

/// The WARN and ERROR lines of `log` that no entry of `expected` matches.
pub fn unexpected<'a>(log: &'a str, expected: &[Expected]) -> Vec<&'a str> {
    log.lines()
        .filter(|line| match level_of(line) {
            Some(level @ ("WARN" | "ERROR")) => !expected.iter().any(|e| e.matches(level, line)),
            _ => false,
        })
        .collect()
}
