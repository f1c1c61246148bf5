//! README.md's flag table (under "## Running it") against the settings
//! table: every row is a setting and every setting a row, with the same
//! flag, env twin, file key and default. The "meaning" column is prose.

use super::settings::{SETTINGS, Setting};

const README: &str = include_str!("../../README.md");

/// What one README row says about one setting.
#[derive(Debug)]
struct Documented {
    row: usize,
    flag: String,
    env: String,
    key: String,
    default: String,
}

/// The table's rows, each split into cells (`\|` is a literal `|`).
fn table_rows() -> Vec<Vec<String>> {
    let header = "| flag | env | file key | default | meaning |";
    let start = README
        .lines()
        .position(|l| l.trim() == header)
        .expect("README has the flag table");
    README
        .lines()
        .skip(start + 2)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let mut cells = vec![String::new()];
            let mut chars = line.trim().trim_matches('|').chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&'|') => {
                        cells.last_mut().unwrap().push('|');
                        chars.next();
                    }
                    '|' => cells.push(String::new()),
                    c => cells.last_mut().unwrap().push(c),
                }
            }
            cells.iter().map(|c| c.trim().to_owned()).collect()
        })
        .collect()
}

/// The text of each `code span` in a cell.
fn spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The first word of each code span: `--rise N` / `--fall N` gives both flags.
fn words(cell: &str) -> Vec<String> {
    spans(cell)
        .iter()
        .filter_map(|s| s.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// File keys as dotted paths: `[health] rise`, `fall` gives health.rise and
/// health.fall; `[[replica]] region, url` gives replica; `[tls]` gives
/// `tls.` (every key of the table); `—` gives "" (no file key).
fn keys(cell: &str) -> Vec<String> {
    if cell == "—" {
        return vec![String::new()];
    }
    let mut section = None;
    let mut keys = Vec::new();
    for span in spans(cell) {
        if let Some(array) = span.strip_prefix("[[") {
            keys.push(array.split("]]").next().unwrap().to_owned());
        } else if let Some(table) = span.strip_prefix('[') {
            let (name, rest) = table.split_once(']').unwrap();
            section = Some(name.to_owned());
            keys.push(format!("{name}.{}", rest.trim()));
        } else {
            keys.push(match &section {
                Some(s) => format!("{s}.{span}"),
                None => span.to_owned(),
            });
        }
    }
    keys
}

/// Defaults: the code spans (`2` / `3`; `0` (off) gives 0), else the word.
fn defaults(cell: &str) -> Vec<String> {
    let spans = spans(cell);
    if spans.is_empty() {
        vec![cell.to_owned()]
    } else {
        spans.into_iter().map(str::to_owned).collect()
    }
}

fn documented() -> Vec<Documented> {
    let mut out = Vec::new();
    for (row, cells) in table_rows().iter().enumerate() {
        assert_eq!(cells.len(), 5, "README row {row}: {cells:?}");
        let (flags, envs, keys, defaults) = (
            words(&cells[0]),
            words(&cells[1]),
            keys(&cells[2]),
            defaults(&cells[3]),
        );
        let default = |i: usize| defaults[if defaults.len() == 1 { 0 } else { i }].clone();
        // A family row (`--tls-ca-file` etc. | `NEARBY_TLS_*` | `[tls]`)
        // stands for every setting with that env prefix.
        if let [env] = envs.as_slice()
            && let Some(prefix) = env.strip_suffix('*')
        {
            assert!(cells[0].ends_with("etc."), "README row {row}: {cells:?}");
            let family: Vec<&Setting> = SETTINGS
                .iter()
                .filter(|s| s.env.starts_with(prefix))
                .collect();
            assert!(
                family.iter().any(|s| flags.contains(&s.flag.to_owned())),
                "README row {row}: {flags:?} is not in the {prefix}* family"
            );
            for s in family {
                out.push(Documented {
                    row,
                    flag: s.flag.to_owned(),
                    env: s.env.to_owned(),
                    key: keys[0].clone() + s.key.strip_prefix(&keys[0]).unwrap_or("?"),
                    default: default(0),
                });
            }
            continue;
        }
        assert!(
            envs.len() == flags.len()
                && keys.len() == flags.len()
                && (defaults.len() == 1 || defaults.len() == flags.len()),
            "README row {row}: flags, envs, keys and defaults do not pair up: {cells:?}"
        );
        for (i, flag) in flags.iter().enumerate() {
            out.push(Documented {
                row,
                flag: flag.clone(),
                env: envs[i].clone(),
                key: keys[i].clone(),
                default: default(i),
            });
        }
    }
    out
}

#[test]
fn readme_table_parses_as_expected() {
    let doc = documented();
    let rise = doc.iter().find(|d| d.flag == "--fall").unwrap();
    assert_eq!(
        (rise.env.as_str(), rise.key.as_str(), rise.default.as_str()),
        ("NEARBY_FALL", "health.fall", "3")
    );
    let replica = doc.iter().find(|d| d.flag == "--replica").unwrap();
    assert_eq!(
        (replica.env.as_str(), replica.key.as_str()),
        ("NEARBY_REPLICAS", "replica")
    );
    let idle = doc
        .iter()
        .find(|d| d.flag == "--client-idle-timeout-s")
        .unwrap();
    assert_eq!(idle.default, "0");
    assert!(doc.iter().any(|d| d.flag == "--tls-key-file"));
}

#[test]
fn every_readme_row_is_a_setting() {
    for d in documented() {
        let s = SETTINGS
            .iter()
            .find(|s| s.flag == d.flag)
            .unwrap_or_else(|| panic!("README row {}: no setting {}", d.row, d.flag));
        assert_eq!(
            (d.env.as_str(), d.key.as_str(), d.default.as_str()),
            (s.env, s.key, s.default),
            "README row {} ({}) vs the settings table",
            d.row,
            d.flag
        );
    }
}

#[test]
fn every_setting_is_in_the_readme() {
    let doc = documented();
    for s in SETTINGS {
        let n = doc.iter().filter(|d| d.flag == s.flag).count();
        assert_eq!(n, 1, "{} is documented {n} times in README.md", s.flag);
    }
}

#[test]
fn descriptors_match_clap() {
    use clap::CommandFactory;
    let cmd = crate::cli::Cli::command();
    let run = cmd.find_subcommand("run").unwrap();
    let args: Vec<_> = run
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| l != "help"))
        .collect();
    assert_eq!(args.len(), SETTINGS.len());
    for s in SETTINGS {
        let arg = args
            .iter()
            .find(|a| a.get_long().map(|l| format!("--{l}")).as_deref() == Some(s.flag))
            .unwrap_or_else(|| panic!("no clap arg for {}", s.flag));
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(s.env));
        let help = arg.get_help().unwrap().to_string();
        assert_eq!(help, s.help, "{}", s.flag);
        if help.contains("[default: ") {
            assert!(
                help.ends_with(&format!("[default: {}]", s.default)),
                "{help}"
            );
        }
    }
}

/// Every descriptor's file key is one the file accepts (the special
/// sections' file shapes are hand-written in file.rs).
#[test]
fn descriptor_keys_are_file_keys() {
    use super::file::parse_file;
    for s in SETTINGS.iter().filter(|s| !s.key.is_empty()) {
        let text = match s.key.split_once('.') {
            _ if s.key == "replica" => "[[replica]]\n".to_owned(),
            Some((table, key)) => format!("[{table}]\n{key} = []\n"),
            None => format!("{} = []\n", s.key),
        };
        let err = match parse_file("x.toml", &text) {
            Ok(_) => continue,
            Err(e) => e.to_string(),
        };
        assert!(
            !err.contains("unknown field"),
            "{}: not a file key: {err}",
            s.key
        );
    }
}
