//! TOML errors: one line, naming the key path and the line.

use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::settings::FILE_TYPE_NAMES;

pub(super) fn toml_error(
    name: &str,
    text: &str,
    tree: &DeTable<'_>,
    e: &toml::de::Error,
) -> ConfigError {
    let mut message = e.message().replace('\n', " ");
    for name in FILE_TYPE_NAMES {
        message = message.replace(&format!("struct {name}"), "a table");
    }
    let message = message.trim();
    match e.span() {
        Some(span) => {
            let pos = span.start.min(text.len());
            let (line, column) = line_column(text, pos);
            let key = find_key(tree, pos, "")
                .or_else(|| key_on_line(text, pos))
                .or_else(|| enclosing_header(text, pos))
                .unwrap_or_else(|| "(top level)".to_owned());
            ConfigError::new(
                name,
                key,
                format!("{message} (line {line}, column {column})"),
            )
        }
        None => ConfigError::new(name, "(top level)", message),
    }
}

fn line_column(text: &str, pos: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..pos];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

fn span_has(span: std::ops::Range<usize>, pos: usize) -> bool {
    span.start <= pos && pos < span.end.max(span.start + 1)
}

/// The deepest key whose name or value covers `pos`: `routing.rise`,
/// `replica[1].url`.
fn find_key(table: &DeTable<'_>, pos: usize, prefix: &str) -> Option<String> {
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        match v.get_ref() {
            DeValue::Table(t) => {
                if let Some(p) = find_key(t, pos, &path) {
                    return Some(p);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    if let DeValue::Table(t) = item.get_ref()
                        && let Some(p) = find_key(t, pos, &item_path)
                    {
                        return Some(p);
                    }
                    if span_has(item.span(), pos) {
                        return Some(item_path);
                    }
                }
            }
            _ => {}
        }
        if span_has(k.span(), pos) || span_has(v.span(), pos) {
            return Some(path);
        }
    }
    None
}

/// Fallback for syntax errors the tree cannot place: the header or
/// `key = ...` on the error's line (qualified by the table in scope).
fn key_on_line(text: &str, pos: usize) -> Option<String> {
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("").trim();
    if let Some(header) = line.strip_prefix('[') {
        let name = header
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim();
        return valid_key_path(name).then(|| name.to_owned());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if !valid_key_path(key) {
        return None;
    }
    Some(match enclosing_header(text, start) {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    })
}

fn valid_key_path(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Fallback for errors the tree cannot place: the `[table]` in scope at
/// byte `pos` (headers on earlier lines only).
fn enclosing_header(text: &str, pos: usize) -> Option<String> {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    text[..line_start].lines().rev().find_map(|line| {
        let line = line.trim();
        let inner = line
            .strip_prefix("[[")
            .and_then(|l| l.split("]]").next())
            .or_else(|| line.strip_prefix('[').and_then(|l| l.split(']').next()))?;
        Some(inner.trim().to_owned())
    })
}
