//! The layering rule of `lib.rs`, checked: a module imports only modules of
//! a lower layer (or itself). Scans `crate::` paths in every source file, so
//! an upward import, and with it any import cycle between modules, fails
//! here.

use std::path::Path;

/// Layers from the bottom. Modules on one line share a layer and may not
/// import each other.
const LAYERS: &[&[&str]] = &[
    &["url"],
    &["config"],
    &["cli"],
    &["proto"],
    &["route"],
    &["metrics"],
    &["model"],
    &["conn"],
    &["session", "control", "ops"],
    &["app"],
    &["lab"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `crate::<module>` a line of code names (comments skipped).
fn imports(line: &str) -> Vec<&str> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    code.match_indices("crate::")
        .map(|(i, _)| {
            let rest = &code[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// A file that holds only a test module (`tests.rs`, `*_tests.rs`).
fn is_test_file(rel: &Path) -> bool {
    rel.file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s == "tests" || s.ends_with("_tests"))
}

/// `(file, line, from, to)` for each import that breaks the rule.
fn violations(src: &Path) -> Vec<(String, usize, String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|s| s.trim_end_matches(".rs").to_string())
                .unwrap_or_default();
            if matches!(top.as_str(), "lib" | "main" | "layering") || is_test_file(rel) {
                continue;
            }
            let from = layer(&top).unwrap_or_else(|| panic!("{top} is in no layer of LAYERS"));
            let text = std::fs::read_to_string(&path).expect("read source");
            // Test modules may reach up (e.g. to parse a command line).
            let code = text.split("\n#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                for to in imports(line) {
                    if to == top {
                        continue;
                    }
                    let ok = layer(to).is_some_and(|l| l < from);
                    if !ok {
                        out.push((
                            rel.display().to_string(),
                            n + 1,
                            top.clone(),
                            to.to_string(),
                        ));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn modules_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "upward or sideways imports (see LAYERS in src/layering.rs):\n{}",
        bad.iter()
            .map(|(f, n, a, b)| format!("  {f}:{n}: {a} -> {b}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_scanner_sees_upward_imports() {
    assert_eq!(imports("use crate::app::Context;"), ["app"]);
    assert_eq!(
        imports("    // crate::app in a comment"),
        Vec::<&str>::new()
    );
    assert_eq!(
        imports("let x = crate::conn::net::listen(crate::config::X);"),
        ["conn", "config"]
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model")).unwrap();
    std::fs::write(
        dir.path().join("model/topology.rs"),
        "use crate::conn::pipe::PipeHandle;\nuse crate::route::select;\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("session.rs"), "use crate::ops::admin;\n").unwrap();
    let bad = violations(dir.path());
    assert_eq!(
        bad,
        [
            ("model/topology.rs".into(), 1, "model".into(), "conn".into()),
            ("session.rs".into(), 1, "session".into(), "ops".into()),
        ]
    );
}

#[test]
fn readme_and_lib_docs_name_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let layout = readme
        .split("## Layout")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Layout section in README.md");
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("src/lib.rs");
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        let dir = root.join("src").join(module).is_dir();
        let named = if dir {
            format!("src/{module}/")
        } else {
            format!("{module}.rs")
        };
        assert!(
            layout.contains(&named),
            "README's Layout does not name {named}"
        );
        assert!(
            lib.lines()
                .any(|l| l.starts_with("//!") && l.split([' ', ',']).any(|w| w == *module)),
            "lib.rs's layer map does not name {module}"
        );
        assert!(
            lib.contains(&format!("pub mod {module};")),
            "{module} is not in lib.rs"
        );
    }
}
