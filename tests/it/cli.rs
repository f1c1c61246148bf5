//! The `nearby` binary's command line: `check-config` output, precedence of
//! flags, environment and file, secret redaction, config errors (exit 2, one
//! line naming the key), and `--help`.
//!
//! Every case runs the real binary with every `NEARBY_*` variable and
//! `FLY_REGION` removed from its environment, then sets exactly the ones the
//! case is about.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Bound for any one run of the binary: `check-config` and a failing `run`
/// are expected to finish well within this.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary with a clean environment: no `NEARBY_*`, no `FLY_REGION`, then
/// `env` set.
fn nearby(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nearby"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("NEARBY_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("FLY_REGION");
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the binary to completion (killing it after [`RUN_TIMEOUT`]) and
/// returns its output plus how long it took.
fn run_bounded(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = nearby(args, env).spawn().expect("spawn nearby");
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait nearby") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nearby {args:?} did not exit within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    (
        Output {
            status,
            stdout,
            stderr,
        },
        elapsed,
    )
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let (out, _) = run_bounded(args, env);
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `check-config` that must succeed: returns stdout parsed as TOML.
fn effective(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let mut all = vec!["check-config"];
    all.extend_from_slice(args);
    let r = run(&all, env);
    assert_eq!(
        r.code,
        Some(0),
        "check-config {args:?} {env:?} failed:\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stderr, "", "check-config wrote to stderr");
    r.stdout
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("check-config output is not TOML ({e}):\n{}", r.stdout))
}

/// `check-config` that must fail: asserts exit 2 and exactly one stderr line,
/// and returns that line.
fn config_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["check-config"];
    all.extend_from_slice(args);
    let r = run(&all, env);
    assert_eq!(
        r.code,
        Some(2),
        "check-config {args:?} {env:?} should exit 2:\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout, "", "nothing on stdout for an invalid config");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one stderr line, got {:?}",
        r.stderr
    );
    assert!(r.stderr.ends_with('\n'), "{:?}", r.stderr);
    lines[0].to_owned()
}

fn get<'a>(t: &'a toml::Table, path: &str) -> &'a toml::Value {
    let mut parts = path.split('.');
    let mut v = t
        .get(parts.next().unwrap())
        .unwrap_or_else(|| panic!("no {path} in {t:#?}"));
    for p in parts {
        v = v.get(p).unwrap_or_else(|| panic!("no {path} in {t:#?}"));
    }
    v
}

fn get_str<'a>(t: &'a toml::Table, path: &str) -> &'a str {
    get(t, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {t:#?}"))
}

fn get_int(t: &toml::Table, path: &str) -> i64 {
    get(t, path)
        .as_integer()
        .unwrap_or_else(|| panic!("{path} is not an integer in {t:#?}"))
}

fn replicas(t: &toml::Table) -> Vec<(String, String)> {
    match t.get("replica") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .expect("replica is an array")
            .iter()
            .map(|r| {
                (
                    r["region"].as_str().unwrap().to_owned(),
                    r["url"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    }
}

struct TempConfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        let dir = tempfile::Builder::new()
            .prefix("nearby-cli-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("nearby.toml");
        std::fs::write(&path, text).unwrap();
        TempConfig { _dir: dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

// ---------------------------------------------------------------------------
// check-config with a valid config

const PRIMARY_PW: &str = "pr1mary-pw-7f3a";
const REPLICA_PW: &str = "rep1ica-pw-91bc";
const CLIENT_PW: &str = "s3cr3t-value";

#[test]
fn check_config_prints_effective_config_with_secrets_redacted() {
    let file = TempConfig::new(&format!(
        r#"
region = "mad"
listen = "127.0.0.1:6380"
admin = "127.0.0.1:9122"

[primary]
url = "redis://default:{PRIMARY_PW}@127.0.0.1:6379"
region = "iad"

[[replica]]
region = "ams"
url = "redis://:{REPLICA_PW}@127.0.0.1:6381/2"

[routing]
read_from = "primary"
latency_window_ms = 7

[health]
rise = 4
"#
    ));
    let args = [
        "--config",
        file.path(),
        "--requirepass",
        CLIENT_PW,
        "--max-staleness-ms",
        "1234",
    ];
    let mut all = vec!["check-config"];
    all.extend_from_slice(&args);
    let r = run(&all, &[]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.stderr, "");
    for secret in [PRIMARY_PW, REPLICA_PW, CLIENT_PW] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "{secret} leaked:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }

    let t: toml::Table = r.stdout.parse().expect("stdout is TOML");
    assert_eq!(get_str(&t, "region"), "mad");
    assert_eq!(get_str(&t, "listen"), "127.0.0.1:6380");
    assert_eq!(get_str(&t, "admin"), "127.0.0.1:9122");
    assert_eq!(
        get_str(&t, "primary.url"),
        "redis://default:***@127.0.0.1:6379/0"
    );
    assert_eq!(get_str(&t, "primary.region"), "iad");
    assert_eq!(
        replicas(&t),
        vec![("ams".to_owned(), "redis://:***@127.0.0.1:6381/2".to_owned())]
    );
    assert_eq!(get_str(&t, "routing.read_from"), "primary");
    assert_eq!(get_int(&t, "routing.latency_window_ms"), 7);
    assert_eq!(get_int(&t, "routing.max_staleness_ms"), 1234);
    assert_eq!(get_int(&t, "health.rise"), 4);
    // Defaults fill in what nobody set.
    assert_eq!(get_int(&t, "health.fall"), 3);
    assert_eq!(get_int(&t, "health.probe_interval_ms"), 1000);
    assert_eq!(get_str(&t, "routing.consistency"), "eventual");
    assert_eq!(get_int(&t, "limits.proto_max_bulk_len"), 536_870_912);
    assert_eq!(get_str(&t, "security.requirepass"), "***");

    // The printed config is itself a valid config file.
    let again = TempConfig::new(&r.stdout);
    let t2 = effective(&["--config", again.path()], &[]);
    assert_eq!(t2, t, "re-checking the printed config changes it");
}

#[test]
fn secrets_from_env_never_printed() {
    let primary = format!("redis://app:{PRIMARY_PW}@127.0.0.1:6379/1");
    let replicas_env = format!("ams=redis://:{REPLICA_PW}@127.0.0.1:6381");
    let env = [
        ("NEARBY_PRIMARY", primary.as_str()),
        ("NEARBY_REPLICAS", replicas_env.as_str()),
        ("NEARBY_REQUIREPASS", CLIENT_PW),
    ];
    let r = run(&["check-config"], &env);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    for secret in [PRIMARY_PW, REPLICA_PW, CLIENT_PW] {
        assert!(!r.stdout.contains(secret), "{secret} leaked:\n{}", r.stdout);
    }
    let t: toml::Table = r.stdout.parse().unwrap();
    assert_eq!(
        get_str(&t, "primary.url"),
        "redis://app:***@127.0.0.1:6379/1"
    );
    assert_eq!(get_str(&t, "security.requirepass"), "***");

    // `run --help` shows env names but hides secret env values.
    let r = run(&["run", "--help"], &env);
    assert_eq!(r.code, Some(0));
    for secret in [PRIMARY_PW, REPLICA_PW, CLIENT_PW] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "{secret} leaked in --help:\n{}",
            r.stdout
        );
    }

    // An invalid URL carrying a password does not echo it either.
    let bad = format!("redis://u:{PRIMARY_PW}@127.0.0.1:99999");
    let line = config_error(&["--primary", &bad], &[]);
    assert!(!line.contains(PRIMARY_PW), "{line}");
    let bad_replica = format!("ams:redis://u:{REPLICA_PW}@h");
    let line = config_error(
        &[
            "--primary",
            "redis://127.0.0.1:1",
            "--replica",
            &bad_replica,
        ],
        &[],
    );
    assert!(!line.contains(REPLICA_PW), "{line}");
}

// ---------------------------------------------------------------------------
// Precedence: flag > env > file > FLY_REGION

#[test]
fn precedence_flag_over_env_over_file_over_fly_region() {
    let file = TempConfig::new(
        r#"
region = "file-region"
listen = "127.0.0.1:7001"

[primary]
url = "redis://127.0.0.1:6001"

[health]
rise = 5
fall = 6
"#,
    );
    let cfg = file.path();

    // File only (FLY_REGION present but the file's region wins).
    let t = effective(&["--config", cfg], &[("FLY_REGION", "fly-region")]);
    assert_eq!(get_str(&t, "region"), "file-region");
    assert_eq!(get_str(&t, "listen"), "127.0.0.1:7001");
    assert_eq!(get_str(&t, "primary.url"), "redis://127.0.0.1:6001/0");
    assert_eq!(get_int(&t, "health.rise"), 5);
    assert_eq!(get_int(&t, "health.fall"), 6);

    // Env over file.
    let env = [
        ("FLY_REGION", "fly-region"),
        ("NEARBY_REGION", "env-region"),
        ("NEARBY_LISTEN", "127.0.0.1:7002"),
        ("NEARBY_PRIMARY", "redis://127.0.0.1:6002"),
        ("NEARBY_RISE", "7"),
    ];
    let t = effective(&["--config", cfg], &env);
    assert_eq!(get_str(&t, "region"), "env-region");
    assert_eq!(get_str(&t, "listen"), "127.0.0.1:7002");
    assert_eq!(get_str(&t, "primary.url"), "redis://127.0.0.1:6002/0");
    assert_eq!(get_int(&t, "health.rise"), 7);
    assert_eq!(get_int(&t, "health.fall"), 6, "file value kept");

    // Flag over env.
    let t = effective(
        &[
            "--config",
            cfg,
            "--region",
            "flag-region",
            "--listen",
            "127.0.0.1:7003",
            "--primary",
            "redis://127.0.0.1:6003",
            "--rise",
            "8",
        ],
        &env,
    );
    assert_eq!(get_str(&t, "region"), "flag-region");
    assert_eq!(get_str(&t, "listen"), "127.0.0.1:7003");
    assert_eq!(get_str(&t, "primary.url"), "redis://127.0.0.1:6003/0");
    assert_eq!(get_int(&t, "health.rise"), 8);
    assert_eq!(get_int(&t, "health.fall"), 6);

    // The config file path itself may come from the env.
    let t = effective(&[], &[("NEARBY_CONFIG", cfg)]);
    assert_eq!(get_str(&t, "listen"), "127.0.0.1:7001");

    // FLY_REGION is the default for `region` when nothing else sets it.
    let t = effective(
        &["--primary", "redis://127.0.0.1:6004"],
        &[("FLY_REGION", "fly-region")],
    );
    assert_eq!(get_str(&t, "region"), "fly-region");
    assert_eq!(get_str(&t, "listen"), "127.0.0.1:6379", "default listen");
    assert_eq!(get_str(&t, "admin"), "127.0.0.1:9121", "default admin");

    // No region anywhere: none printed.
    let t = effective(&["--primary", "redis://127.0.0.1:6004"], &[]);
    assert!(t.get("region").is_none(), "{t:#?}");
}

#[test]
fn replicas_from_env_comma_list() {
    let t = effective(
        &[],
        &[
            ("NEARBY_PRIMARY", "redis://primary.example.internal:6379"),
            ("NEARBY_REPLICAS", "a=redis://127.0.0.1:1,b=redis://[::1]:2"),
        ],
    );
    assert_eq!(
        get_str(&t, "primary.url"),
        "redis://primary.example.internal:6379/0",
        "a hostname URL is accepted as is"
    );
    assert_eq!(
        replicas(&t),
        vec![
            ("a".to_owned(), "redis://127.0.0.1:1/0".to_owned()),
            ("b".to_owned(), "redis://[::1]:2/0".to_owned()),
        ]
    );

    // --replica flags replace the env list (and the file's), they don't merge.
    let t = effective(
        &[
            "--replica",
            "c=redis://cache.example.internal:6380/3",
            "--replica",
            "d=rediss://127.0.0.1:6390",
        ],
        &[
            ("NEARBY_PRIMARY", "redis://127.0.0.1:6379"),
            ("NEARBY_REPLICAS", "a=redis://127.0.0.1:1,b=redis://[::1]:2"),
        ],
    );
    assert_eq!(
        replicas(&t),
        vec![
            (
                "c".to_owned(),
                "redis://cache.example.internal:6380/3".to_owned()
            ),
            ("d".to_owned(), "rediss://127.0.0.1:6390/0".to_owned()),
        ]
    );
}

// ---------------------------------------------------------------------------
// Invalid configs: exit 2, one line naming the key

const ERR: &str = "nearby: invalid config: ";
const P: &str = "redis://127.0.0.1:6379";

#[test]
fn missing_primary() {
    assert_eq!(
        config_error(&[], &[]),
        format!(
            "{ERR}--primary: primary.url: required (--primary, NEARBY_PRIMARY or [primary] url; or --sentinel)"
        )
    );
    let file = TempConfig::new("region = \"mad\"\n");
    assert_eq!(
        config_error(&["--config", file.path()], &[]),
        format!(
            "{ERR}{}: primary.url: required (--primary, NEARBY_PRIMARY or [primary] url; or --sentinel)",
            path_str(&file.path)
        )
    );
}

#[test]
fn bad_url_scheme_and_port() {
    assert_eq!(
        config_error(&["--primary", "http://127.0.0.1:6379"], &[]),
        format!(
            "{ERR}--primary: primary.url: unsupported scheme 'http' (expected redis:// or rediss://)"
        )
    );
    assert_eq!(
        config_error(&[], &[("NEARBY_PRIMARY", "redis://127.0.0.1:99999")]),
        format!("{ERR}--primary: primary.url: invalid port '99999'")
    );
    assert_eq!(
        config_error(&["--primary", "redis://127.0.0.1:port"], &[]),
        format!("{ERR}--primary: primary.url: invalid port 'port'")
    );
    let file = TempConfig::new("[primary]\nurl = \"redis://127.0.0.1:65536\"\n");
    assert_eq!(
        config_error(&["--config", file.path()], &[]),
        format!(
            "{ERR}{}: primary.url: invalid port '65536'",
            path_str(&file.path)
        )
    );
    assert_eq!(
        config_error(
            &["--primary", P, "--replica", "ams=http://127.0.0.1:1"],
            &[]
        ),
        format!(
            "{ERR}--replica: replica[0].url: unsupported scheme 'http' (expected redis:// or rediss://)"
        )
    );
}

#[test]
fn bad_replica_entry() {
    assert_eq!(
        config_error(&["--primary", P, "--replica", "foo"], &[]),
        format!("{ERR}--replica: replica[0]: expected REGION=URL, got 'foo'")
    );
    assert_eq!(
        config_error(
            &["--primary", P],
            &[(
                "NEARBY_REPLICAS",
                "a=redis://127.0.0.1:1,redis://127.0.0.1:2"
            )]
        ),
        format!("{ERR}--replica: replica[1]: expected REGION=URL, got 'redis://127.0.0.1:2'")
    );
}

#[test]
fn unknown_toml_key() {
    let file = TempConfig::new(&format!(
        "[primary]\nurl = \"{P}\"\n[health]\nrise = 2\nfal = 3\n"
    ));
    let line = config_error(&["--config", file.path()], &[]);
    let prefix = format!(
        "{ERR}{}: health.fal: unknown field `fal`",
        path_str(&file.path)
    );
    assert!(line.starts_with(&prefix), "{line}");
    assert!(line.ends_with("(line 5, column 1)"), "{line}");

    let file = TempConfig::new(&format!("[primary]\nurl = \"{P}\"\nregoin = \"mad\"\n"));
    let line = config_error(&["--config", file.path()], &[]);
    // A top-level key written after [primary] belongs to that table.
    let prefix = format!(
        "{ERR}{}: primary.regoin: unknown field `regoin`",
        path_str(&file.path)
    );
    assert!(line.starts_with(&prefix), "{line}");
}

#[test]
fn wrong_type_in_toml() {
    let file = TempConfig::new(&format!(
        "[primary]\nurl = \"{P}\"\n\n[routing]\nlatency_window_ms = \"x\"\n"
    ));
    assert_eq!(
        config_error(&["--config", file.path()], &[]),
        format!(
            "{ERR}{}: routing.latency_window_ms: invalid type: string \"x\", expected u64 (line 5, column 21)",
            path_str(&file.path)
        )
    );
}

#[test]
fn non_loopback_listen_needs_auth() {
    assert_eq!(
        config_error(&["--primary", P, "--listen", "0.0.0.0:6379"], &[]),
        format!(
            "{ERR}--listen: listen: 0.0.0.0:6379 is not a loopback address; set --requirepass or --allow-unauthenticated"
        )
    );
    assert_eq!(
        config_error(&["--primary", P], &[("NEARBY_LISTEN", "[::]:6379")]),
        format!(
            "{ERR}--listen: listen: [::]:6379 is not a loopback address; set --requirepass or --allow-unauthenticated"
        )
    );
    // Either opt-in makes it valid.
    let t = effective(
        &[
            "--primary",
            P,
            "--listen",
            "0.0.0.0:6379",
            "--requirepass",
            CLIENT_PW,
        ],
        &[],
    );
    assert_eq!(get_str(&t, "listen"), "0.0.0.0:6379");
    let t = effective(
        &["--primary", P, "--listen", "0.0.0.0:6379"],
        &[("NEARBY_ALLOW_UNAUTHENTICATED", "true")],
    );
    assert_eq!(get_str(&t, "listen"), "0.0.0.0:6379");
    assert_eq!(
        get(&t, "security.allow_unauthenticated").as_bool(),
        Some(true)
    );
}

#[test]
fn rise_zero() {
    let file = TempConfig::new(&format!("[primary]\nurl = \"{P}\"\n[health]\nrise = 0\n"));
    assert_eq!(
        config_error(&["--config", file.path()], &[]),
        format!(
            "{ERR}{}: health.rise: must be at least 1, got 0",
            path_str(&file.path)
        )
    );
    assert_eq!(
        config_error(&["--primary", P], &[("NEARBY_RISE", "0")]),
        format!("{ERR}--rise: health.rise: must be at least 1, got 0")
    );
}

#[test]
fn unreadable_config_file() {
    let line = config_error(&["--config", "/nonexistent/nearby-cli-test.toml"], &[]);
    assert!(
        line.starts_with(&format!(
            "{ERR}--config: config: cannot read '/nonexistent/nearby-cli-test.toml': "
        )),
        "{line}"
    );
}

// ---------------------------------------------------------------------------
// `run` validates before binding

/// Arguments after `run`, environment, expected stderr line.
type RunCase<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, String);

#[test]
fn run_with_invalid_config_exits_2_before_binding() {
    // Hold the listen and admin ports: a `run` that tried to bind them would
    // fail with "address in use" instead of the config error.
    let listen = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen_addr = listen.local_addr().unwrap().to_string();
    let admin_addr = admin.local_addr().unwrap().to_string();

    let cases: Vec<RunCase> = vec![
        (
            vec!["--listen", &listen_addr, "--admin", &admin_addr],
            vec![],
            format!(
                "{ERR}--primary: primary.url: required (--primary, NEARBY_PRIMARY or [primary] url; or --sentinel)"
            ),
        ),
        (
            vec![
                "--listen",
                &listen_addr,
                "--admin",
                &admin_addr,
                "--primary",
                "redis://127.0.0.1:1",
                "--rise",
                "0",
            ],
            vec![],
            format!("{ERR}--rise: health.rise: must be at least 1, got 0"),
        ),
        (
            vec!["--admin", &admin_addr],
            vec![
                ("NEARBY_LISTEN", listen_addr.as_str()),
                ("NEARBY_PRIMARY", "redis://127.0.0.1:1"),
                ("NEARBY_REPLICAS", "nonsense"),
            ],
            format!("{ERR}--replica: replica[0]: expected REGION=URL, got 'nonsense'"),
        ),
    ];
    for (args, env, expected) in cases {
        let mut all = vec!["run"];
        all.extend_from_slice(&args);
        let (out, elapsed) = run_bounded(&all, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "run {args:?}: stderr {stderr}");
        assert_eq!(stderr, format!("{expected}\n"), "run {args:?}");
        assert!(out.stdout.is_empty(), "run {args:?}: stdout not empty");
        assert!(
            elapsed < Duration::from_secs(3),
            "run {args:?} took {elapsed:?} to reject its config"
        );
    }
    drop((listen, admin));
}

// ---------------------------------------------------------------------------
// Help

#[test]
fn help_lists_subcommands_and_env_names() {
    let r = run(&["--help"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for sub in ["run", "check-config"] {
        assert!(
            r.stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help does not list {sub}:\n{}",
            r.stdout
        );
    }

    let r = run(&["run", "--help"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for name in [
        "NEARBY_PRIMARY",
        "NEARBY_REPLICAS",
        "NEARBY_LISTEN",
        "NEARBY_ADMIN",
        "NEARBY_REGION",
        "NEARBY_REQUIREPASS",
        "NEARBY_PROTO_MAX_BULK_LEN",
    ] {
        assert!(
            r.stdout.contains(&format!("[env: {name}]"))
                || r.stdout.contains(&format!("[env: {name}=")),
            "run --help lacks {name}:\n{}",
            r.stdout
        );
    }

    let r = run(&["check-config", "--help"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("--config"), "{}", r.stdout);

    // No subcommand is a usage error (clap's exit code 2), not a crash.
    let r = run(&[], &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("Usage"), "{}", r.stderr);
}
