use super::*;
use crate::cli::{Cli, Command};
use crate::url::Host;
use clap::Parser;

const P: &str = "redis://127.0.0.1:6379";

fn args(extra: &[&str]) -> ConfigArgs {
    let mut argv = vec!["nearby", "run"];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{e}"))
        .command
    {
        Command::Run(a) | Command::CheckConfig(a) => a,
        other => panic!("unexpected {other:?}"),
    }
}

fn from_file(a: &ConfigArgs, toml: &str) -> Result<Config, ConfigError> {
    Config::from_parts(a, Some((Path::new("config/x.toml"), toml)), None)
}

fn file_err(toml: &str) -> String {
    from_file(&ConfigArgs::default(), toml)
        .unwrap_err()
        .to_string()
}

fn flag_err(extra: &[&str]) -> String {
    Config::from_parts(&args(extra), None, None)
        .unwrap_err()
        .to_string()
}

#[test]
fn defaults() {
    let c = Config::from_parts(&args(&["--primary", P]), None, None).unwrap();
    assert_eq!(c.region, None);
    assert_eq!(c.listen, "127.0.0.1:6379".parse().unwrap());
    assert_eq!(c.admin, "127.0.0.1:9121".parse().unwrap());
    assert_eq!(c.primary.region, "primary");
    assert_eq!(c.primary.url.host, Host::Ip("127.0.0.1".parse().unwrap()));
    assert!(c.replicas.is_empty());
    assert_eq!(c.routing, RoutingConfig::default());
    assert_eq!(c.routing.max_staleness_ms, 10_000);
    assert_eq!(c.routing.latency_window_ms, 2);
    assert_eq!(c.routing.read_from, ReadFrom::Nearest);
    assert_eq!(c.routing.subscribe_from, SubscribeFrom::Primary);
    assert_eq!(
        c.health,
        HealthConfig {
            probe_interval_ms: 1000,
            rise: 2,
            fall: 3
        }
    );
    assert_eq!(
        c.timeouts,
        TimeoutConfig {
            connect_timeout_ms: 1000,
            request_timeout_ms: 3000,
            drain_timeout_ms: 5000,
        }
    );
    assert_eq!(
        c.limits,
        LimitsConfig {
            max_clients: 10_000,
            proto_max_bulk_len: 536_870_912,
            max_inflight: 1024,
            max_output_buffer: 64 * 1024 * 1024,
            free_commands_per_day: 10_000,
            client_idle_timeout_s: 0
        }
    );
    assert_eq!(c.security, SecurityConfig::default());
    assert_eq!(c.tls, TlsConfig::default());
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.threads, None);
}

const FULL: &str = r#"
region = "mad"
listen = "127.0.0.1:6380"
admin  = "127.0.0.1:9122"
log_format = "json"
threads = 2

[primary]
url = "redis://default:filesecret@primary.example.internal:6379"
region = "mad"

[[replica]]
region = "ams"
url = "redis://ams.example.internal:6379"

[[replica]]
region = "lhr"
url = "redis://[::1]:6381/2"

[routing]
read_from = "primary"
consistency = "read-your-writes"
consistency_scope = "sidecar"
max_staleness_ms = 5000
latency_window_ms = 4
subscribe_from = "nearest"

[health]
probe_interval_ms = 500
rise = 3
fall = 4

[timeouts]
connect_timeout_ms = 200
request_timeout_ms = 900

[limits]
max_clients = 50
proto_max_bulk_len = 1048576
max_inflight = 1000
client_idle_timeout_s = 60

[security]
requirepass = "clientsecret"
allow_unauthenticated = false

[tls]
ca_file = "/etc/nearby/ca.pem"
cert_file = "/etc/nearby/cert.pem"
key_file = "/etc/nearby/key.pem"
server_name = "redis.example.com"

[dns]
server = "10.0.0.2:5353"
min_ttl_s = 2
max_ttl_s = 120
timeout_ms = 800
"#;

#[test]
fn full_file() {
    let c = from_file(&ConfigArgs::default(), FULL).unwrap();
    assert_eq!(c.region.as_deref(), Some("mad"));
    assert_eq!(c.listen.port(), 6380);
    assert_eq!(c.admin.port(), 9122);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.threads, Some(2));
    assert_eq!(c.primary.region, "mad");
    assert_eq!(
        c.primary.url.password.as_ref().map(Secret::expose),
        Some("filesecret")
    );
    assert_eq!(c.replicas.len(), 2);
    assert_eq!(c.replicas[0].region, "ams");
    assert_eq!(c.replicas[1].url.host_port(), "[::1]:6381");
    assert_eq!(c.replicas[1].url.db, 2);
    assert_eq!(
        c.routing,
        RoutingConfig {
            read_from: ReadFrom::Primary,
            consistency: Consistency::ReadYourWrites,
            consistency_scope: ConsistencyScope::Sidecar,
            max_staleness_ms: 5000,
            latency_window_ms: 4,
            subscribe_from: SubscribeFrom::Nearest,
        }
    );
    assert_eq!(
        c.health,
        HealthConfig {
            probe_interval_ms: 500,
            rise: 3,
            fall: 4
        }
    );
    assert_eq!(
        c.timeouts,
        TimeoutConfig {
            connect_timeout_ms: 200,
            request_timeout_ms: 900,
            drain_timeout_ms: 5000,
        }
    );
    assert_eq!(c.limits.max_inflight, 1000);
    assert_eq!(c.limits.client_idle_timeout_s, 60);
    assert_eq!(
        c.security.requirepass.as_ref().map(Secret::expose),
        Some("clientsecret")
    );
    assert_eq!(
        c.tls.ca_file.as_deref(),
        Some(Path::new("/etc/nearby/ca.pem"))
    );
    assert_eq!(c.tls.server_name.as_deref(), Some("redis.example.com"));
}

#[test]
fn precedence_flag_over_file_over_fly_region() {
    let file =
        format!("region = \"ams\"\n[primary]\nurl = \"{P}\"\n[health]\nrise = 5\nfall = 6\n");
    let path = Some((Path::new("f.toml"), file.as_str()));
    // flag wins over file and FLY_REGION
    let c = Config::from_parts(
        &args(&["--region", "mad", "--rise", "9"]),
        path,
        Some("lhr".into()),
    )
    .unwrap();
    assert_eq!(c.region.as_deref(), Some("mad"));
    assert_eq!(c.health.rise, 9);
    assert_eq!(c.health.fall, 6);
    // file wins over FLY_REGION
    let c = Config::from_parts(&args(&[]), path, Some("lhr".into())).unwrap();
    assert_eq!(c.region.as_deref(), Some("ams"));
    assert_eq!(c.health.rise, 5);
    // FLY_REGION only when nothing else sets it
    let c = Config::from_parts(&args(&["--primary", P]), None, Some("lhr".into())).unwrap();
    assert_eq!(c.region.as_deref(), Some("lhr"));
    let c = Config::from_parts(&args(&["--primary", P]), None, Some(String::new())).unwrap();
    assert_eq!(c.region, None);
}

#[test]
fn replica_flags_replace_file_list() {
    let file =
        format!("[primary]\nurl = \"{P}\"\n[[replica]]\nregion = \"ams\"\nurl = \"redis://a:1\"\n");
    let c = from_file(
        &args(&["--replica", "lhr=redis://l:2,fra=rediss://:pw@f:3/1"]),
        &file,
    )
    .unwrap();
    let regions: Vec<&str> = c.replicas.iter().map(|r| r.region.as_str()).collect();
    assert_eq!(regions, ["lhr", "fra"]);
    assert!(c.replicas[1].url.tls);
    assert_eq!(c.replicas[1].url.db, 1);
    let c = from_file(&args(&[]), &file).unwrap();
    assert_eq!(c.replicas[0].region, "ams");
    assert_eq!(c.replicas[0].url.host_port(), "a:1");
}

#[test]
fn primary_from_flag_overrides_file() {
    let file = "[primary]\nurl = \"redis://file:1\"\nregion = \"ams\"\n";
    let c = from_file(
        &args(&["--primary", "redis://flag:2", "--primary-region", "mad"]),
        file,
    )
    .unwrap();
    assert_eq!(c.primary.url.host_port(), "flag:2");
    assert_eq!(c.primary.region, "mad");
}

#[test]
fn primary_required() {
    assert_eq!(
        Config::from_parts(&ConfigArgs::default(), None, None)
            .unwrap_err()
            .to_string(),
        "--primary: primary.url: required (--primary, NEARBY_PRIMARY or [primary] url; or --sentinel)"
    );
    assert_eq!(
        file_err("region = \"mad\"\n"),
        "config/x.toml: primary.url: required (--primary, NEARBY_PRIMARY or [primary] url; or --sentinel)"
    );
}

#[test]
fn url_errors_name_the_key() {
    assert_eq!(
        flag_err(&["--primary", "http://h"]),
        "--primary: primary.url: unsupported scheme 'http' (expected redis:// or rediss://)"
    );
    assert_eq!(
        file_err("[primary]\nurl = \"redis://h:99999\"\n"),
        "config/x.toml: primary.url: invalid port '99999'"
    );
    assert_eq!(
        file_err(&format!(
            "[primary]\nurl = \"{P}\"\n[[replica]]\nregion = \"ams\"\nurl = \"redis://h/x\"\n"
        )),
        "config/x.toml: replica[0].url: invalid database '/x'"
    );
    assert_eq!(
        flag_err(&[
            "--primary",
            P,
            "--replica",
            "ams=redis://a",
            "--replica",
            "lhr=redis://"
        ]),
        "--replica: replica[1].url: missing host"
    );
}

#[test]
fn replica_entry_errors() {
    assert_eq!(
        flag_err(&[
            "--primary",
            P,
            "--replica",
            "ams=redis://a",
            "--replica",
            "foo"
        ]),
        "--replica: replica[1]: expected REGION=URL, got 'foo'"
    );
    // A malformed entry never echoes a password.
    assert_eq!(
        flag_err(&["--primary", P, "--replica", "ams:redis://u:hunter2@h"]),
        "--replica: replica[0]: expected REGION=URL, got 'ams:redis://***@h'"
    );
    assert_eq!(
        flag_err(&["--primary", P, "--replica", "=redis://a"]),
        "--replica: replica[0].region: must not be empty"
    );
    assert_eq!(
        flag_err(&["--primary", P, "--replica", "a.b=redis://a"]),
        "--replica: replica[0].region: invalid region 'a.b' (use letters, digits, '-' and '_')"
    );
    let base = format!("[primary]\nurl = \"{P}\"\n");
    assert_eq!(
        file_err(&format!("{base}[[replica]]\nurl = \"redis://a\"\n")),
        "config/x.toml: replica[0].region: required"
    );
    assert_eq!(
        file_err(&format!("{base}[[replica]]\nregion = \"ams\"\n")),
        "config/x.toml: replica[0].url: required"
    );
}

#[test]
fn region_errors() {
    assert_eq!(
        flag_err(&["--primary", P, "--region", "m d"]),
        "--region: region: invalid region 'm d' (use letters, digits, '-' and '_')"
    );
    assert_eq!(
        Config::from_parts(&args(&["--primary", P]), None, Some("a/b".into()))
            .unwrap_err()
            .to_string(),
        "FLY_REGION: region: invalid region 'a/b' (use letters, digits, '-' and '_')"
    );
    assert_eq!(
        flag_err(&["--primary", P, "--primary-region", ""]),
        "--primary-region: primary.region: must not be empty"
    );
}

#[test]
fn socket_address_errors() {
    assert_eq!(
        flag_err(&["--primary", P, "--listen", "localhost:6379"]),
        "--listen: listen: invalid socket address 'localhost:6379' (expected IP:PORT, e.g. 127.0.0.1:6379 or [::1]:6379)"
    );
    assert_eq!(
        file_err(&format!("admin = \"9121\"\n[primary]\nurl = \"{P}\"\n")),
        "config/x.toml: admin: invalid socket address '9121' (expected IP:PORT, e.g. 127.0.0.1:6379 or [::1]:6379)"
    );
    let c = Config::from_parts(
        &args(&["--primary", P, "--listen", "[::1]:7000"]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.listen, "[::1]:7000".parse().unwrap());
}

#[test]
fn non_loopback_listen_needs_auth() {
    assert_eq!(
        flag_err(&["--primary", P, "--listen", "0.0.0.0:6379"]),
        "--listen: listen: 0.0.0.0:6379 is not a loopback address; set --requirepass or --allow-unauthenticated"
    );
    assert_eq!(
        file_err(&format!(
            "listen = \"[::]:6379\"\n[primary]\nurl = \"{P}\"\n"
        )),
        "config/x.toml: listen: [::]:6379 is not a loopback address; set --requirepass or --allow-unauthenticated"
    );
    let ok = Config::from_parts(
        &args(&[
            "--primary",
            P,
            "--listen",
            "0.0.0.0:6379",
            "--requirepass",
            "x",
        ]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        ok.security.requirepass.as_ref().map(Secret::expose),
        Some("x")
    );
    let ok = Config::from_parts(
        &args(&[
            "--primary",
            P,
            "--listen",
            "0.0.0.0:6379",
            "--allow-unauthenticated",
        ]),
        None,
        None,
    )
    .unwrap();
    assert!(ok.security.allow_unauthenticated);
    let ok = from_file(
        &args(&["--listen", "0.0.0.0:1"]),
        &format!("[primary]\nurl = \"{P}\"\n[security]\nallow_unauthenticated = true\n"),
    )
    .unwrap();
    assert!(ok.security.allow_unauthenticated);
}

#[test]
fn numeric_bounds() {
    let base = ["--primary", P];
    let e = |extra: &[&str]| flag_err(&[&base[..], extra].concat());
    assert_eq!(
        e(&["--rise", "0"]),
        "--rise: health.rise: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--fall", "0"]),
        "--fall: health.fall: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--probe-interval-ms", "9"]),
        "--probe-interval-ms: health.probe_interval_ms: must be at least 10, got 9"
    );
    assert_eq!(
        e(&["--connect-timeout-ms", "0"]),
        "--connect-timeout-ms: timeouts.connect_timeout_ms: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--request-timeout-ms", "0"]),
        "--request-timeout-ms: timeouts.request_timeout_ms: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--max-clients", "0"]),
        "--max-clients: limits.max_clients: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--proto-max-bulk-len", "0"]),
        "--proto-max-bulk-len: limits.proto_max_bulk_len: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--max-inflight", "0"]),
        "--max-inflight: limits.max_inflight: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--threads", "0"]),
        "--threads: threads: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--max-staleness-ms", "18446744073709551615"]),
        "--max-staleness-ms: routing.max_staleness_ms: must be at most 9223372036854775807, got 18446744073709551615"
    );
    assert_eq!(
        file_err(&format!("[primary]\nurl = \"{P}\"\n[health]\nrise = 0\n")),
        "config/x.toml: health.rise: must be at least 1, got 0"
    );
    let c = Config::from_parts(
        &args(
            &[
                &base[..],
                &["--latency-window-ms", "0", "--max-staleness-ms", "0"],
            ]
            .concat(),
        ),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        (c.routing.latency_window_ms, c.routing.max_staleness_ms),
        (0, 0)
    );
}

#[test]
fn dns_defaults_file_and_flags() {
    let c = Config::from_parts(&args(&["--primary", P]), None, None).unwrap();
    assert_eq!(c.dns, DnsConfig::default());
    assert_eq!(
        (c.dns.min_ttl_s, c.dns.max_ttl_s, c.dns.timeout_ms),
        (5, 300, 2000)
    );
    let text = c.to_redacted_toml();
    assert!(
        text.contains("[dns]\nmin_ttl_s = 5\nmax_ttl_s = 300\ntimeout_ms = 2000\n"),
        "{text}"
    );
    assert!(!text.contains("server = "), "{text}");
    assert_eq!(from_file(&ConfigArgs::default(), &text).unwrap().dns, c.dns);

    let c = from_file(&ConfigArgs::default(), FULL).unwrap();
    assert_eq!(
        c.dns,
        DnsConfig {
            server: Some("10.0.0.2:5353".parse().unwrap()),
            min_ttl_s: 2,
            max_ttl_s: 120,
            timeout_ms: 800,
        }
    );
    // Flags win over the file, key by key.
    let c = from_file(
        &args(&["--dns-server", "[::1]:53", "--dns-min-ttl-s", "1"]),
        FULL,
    )
    .unwrap();
    assert_eq!(c.dns.server, Some("[::1]:53".parse().unwrap()));
    assert_eq!((c.dns.min_ttl_s, c.dns.max_ttl_s), (1, 120));
    // A bare IP means port 53.
    let c = Config::from_parts(
        &args(&["--primary", P, "--dns-server", " 127.0.0.53 "]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.dns.server, Some("127.0.0.53:53".parse().unwrap()));
    // A floor above the default ceiling lifts the ceiling with it.
    let c = Config::from_parts(
        &args(&["--primary", P, "--dns-min-ttl-s", "600"]),
        None,
        None,
    )
    .unwrap();
    assert_eq!((c.dns.min_ttl_s, c.dns.max_ttl_s), (600, 600));
}

#[test]
fn dns_errors_name_the_key() {
    let base = ["--primary", P];
    let e = |extra: &[&str]| flag_err(&[&base[..], extra].concat());
    assert_eq!(
        e(&["--dns-server", "dns.internal:53"]),
        "--dns-server: dns.server: invalid nameserver address 'dns.internal:53' (expected IP or IP:PORT, e.g. 127.0.0.1:53 or [::1]:5353)"
    );
    assert_eq!(
        e(&["--dns-min-ttl-s", "0"]),
        "--dns-min-ttl-s: dns.min_ttl_s: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--dns-max-ttl-s", "0"]),
        "--dns-max-ttl-s: dns.max_ttl_s: must be at least 1, got 0"
    );
    assert_eq!(
        e(&["--dns-min-ttl-s", "10", "--dns-max-ttl-s", "9"]),
        "--dns-max-ttl-s: dns.max_ttl_s: must be at least dns.min_ttl_s (10), got 9"
    );
    assert_eq!(
        e(&["--dns-max-ttl-s", "86401"]),
        "--dns-max-ttl-s: dns.max_ttl_s: must be at most 86400, got 86401"
    );
    assert_eq!(
        e(&["--dns-timeout-ms", "0"]),
        "--dns-timeout-ms: dns.timeout_ms: must be at least 1, got 0"
    );
    assert_eq!(
        file_err(&format!(
            "[primary]\nurl = \"{P}\"\n[dns]\nmin_ttl_s = 100000\n"
        )),
        "config/x.toml: dns.min_ttl_s: must be at most 86400, got 100000"
    );
    assert_eq!(
        file_err(&format!(
            "[primary]\nurl = \"{P}\"\n[dns]\nmin_ttl_s = 30\nmax_ttl_s = 20\n"
        )),
        "config/x.toml: dns.max_ttl_s: must be at least dns.min_ttl_s (30), got 20"
    );
    assert_eq!(
        file_err(&format!(
            "[primary]\nurl = \"{P}\"\n[dns]\nserver = \"x\"\n"
        )),
        "config/x.toml: dns.server: invalid nameserver address 'x' (expected IP or IP:PORT, e.g. 127.0.0.1:53 or [::1]:5353)"
    );
    let e = file_err(&format!("[primary]\nurl = \"{P}\"\n[dns]\nttl = 3\n"));
    assert!(
        e.starts_with("config/x.toml: dns.ttl: unknown field `ttl`, expected one of `server`, `min_ttl_s`, `max_ttl_s`, `timeout_ms`"),
        "{e}"
    );
}

#[test]
fn enum_errors() {
    let base = ["--primary", P];
    let e = |extra: &[&str]| flag_err(&[&base[..], extra].concat());
    assert_eq!(
        e(&["--read-from", "replica"]),
        "--read-from: routing.read_from: invalid value 'replica' (expected nearest or primary)"
    );
    assert_eq!(
        e(&["--consistency", "strong"]),
        "--consistency: routing.consistency: invalid value 'strong' (expected eventual or read-your-writes)"
    );
    assert_eq!(
        e(&["--consistency-scope", "global"]),
        "--consistency-scope: routing.consistency_scope: invalid value 'global' (expected connection or sidecar)"
    );
    assert_eq!(
        e(&["--subscribe-from", "x"]),
        "--subscribe-from: routing.subscribe_from: invalid value 'x' (expected primary or nearest)"
    );
    assert_eq!(
        e(&["--log-format", "xml"]),
        "--log-format: log_format: invalid value 'xml' (expected text or json)"
    );
    assert_eq!(
        file_err(&format!(
            "[primary]\nurl = \"{P}\"\n[routing]\nconsistency = \"ryw\"\n"
        )),
        "config/x.toml: routing.consistency: invalid value 'ryw' (expected eventual or read-your-writes)"
    );
}

#[test]
fn requirepass_rules() {
    let dir = std::env::temp_dir().join(format!("nearby-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pass_file = dir.join("pass");
    std::fs::write(&pass_file, "from-file\r\n").unwrap();
    let pf = pass_file.to_str().unwrap();

    let c = Config::from_parts(
        &args(&["--primary", P, "--requirepass-file", pf]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        c.security.requirepass.as_ref().map(Secret::expose),
        Some("from-file")
    );

    assert_eq!(
        flag_err(&[
            "--primary",
            P,
            "--requirepass",
            "x",
            "--requirepass-file",
            pf
        ]),
        "--requirepass: security.requirepass: set either requirepass or requirepass_file, not both"
    );
    let both = format!(
        "[primary]\nurl = \"{P}\"\n[security]\nrequirepass = \"x\"\nrequirepass_file = \"{pf}\"\n"
    );
    assert_eq!(
        file_err(&both),
        "config/x.toml: security.requirepass: set either requirepass or requirepass_file, not both"
    );
    // A flag replaces the file's pair as a whole.
    let c = from_file(&args(&["--requirepass", "flagpass"]), &both).unwrap();
    assert_eq!(
        c.security.requirepass.as_ref().map(Secret::expose),
        Some("flagpass")
    );

    let missing = dir.join("missing");
    let e = flag_err(&[
        "--primary",
        P,
        "--requirepass-file",
        missing.to_str().unwrap(),
    ]);
    assert!(
        e.starts_with(&format!(
            "--requirepass-file: security.requirepass_file: cannot read '{}': ",
            missing.display()
        )),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1);

    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    assert_eq!(
        file_err(&format!(
            "[primary]\nurl = \"{P}\"\n[security]\nrequirepass_file = \"{}\"\n",
            empty.display()
        )),
        format!(
            "config/x.toml: security.requirepass_file: '{}' is empty",
            empty.display()
        )
    );
    assert_eq!(
        flag_err(&["--primary", P, "--requirepass", ""]),
        "--requirepass: security.requirepass: must not be empty"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tls_pairing() {
    assert_eq!(
        flag_err(&["--primary", P, "--tls-cert-file", "/c.pem"]),
        "--tls-cert-file: tls.key_file: required when tls.cert_file is set"
    );
    assert_eq!(
        file_err(&format!(
            "[primary]\nurl = \"{P}\"\n[tls]\nkey_file = \"/k.pem\"\n"
        )),
        "config/x.toml: tls.cert_file: required when tls.key_file is set"
    );
    let c = Config::from_parts(
        &args(&[
            "--primary",
            "rediss://:pw@h:6380",
            "--tls-ca-file",
            "/nonexistent/ca.pem",
        ]),
        None,
        None,
    )
    .unwrap();
    assert!(c.primary.url.tls);
    assert_eq!(
        c.tls.ca_file.as_deref(),
        Some(Path::new("/nonexistent/ca.pem"))
    );
}

#[test]
fn toml_type_errors_name_the_key_and_line() {
    let text = format!(
        "[primary]\nurl = \"{P}\"\n\n[routing]\nread_from = \"nearest\"\nlatency_window_ms = \"x\"\n"
    );
    assert_eq!(
        file_err(&text),
        "config/x.toml: routing.latency_window_ms: invalid type: string \"x\", expected u64 (line 6, column 21)"
    );
    let text = format!(
        "[primary]\nurl = \"{P}\"\n[[replica]]\nregion = \"a\"\nurl = \"redis://a\"\n[[replica]]\nregion = 5\n"
    );
    assert_eq!(
        file_err(&text),
        "config/x.toml: replica[1].region: invalid type: integer `5`, expected a string (line 7, column 10)"
    );
    assert_eq!(
        file_err("threads = -1\n"),
        "config/x.toml: threads: invalid value: integer `-1`, expected usize (line 1, column 11)"
    );
}

#[test]
fn toml_unknown_keys_are_rejected() {
    let e = file_err(&format!(
        "[primary]\nurl = \"{P}\"\n[health]\nrise = 2\nfal = 3\n"
    ));
    assert!(
        e.starts_with("config/x.toml: health.fal: unknown field `fal`, expected one of `probe_interval_ms`, `rise`, `fall` (line 5, column 1)"),
        "{e}"
    );
    let e = file_err("[primary]\nurl = \"redis://h\"\n[healthz]\nrise = 2\n");
    assert!(
        e.starts_with("config/x.toml: healthz: unknown field `healthz`"),
        "{e}"
    );
    assert!(e.ends_with("(line 3, column 2)"), "{e}");
    let e = file_err("replicas = []\n");
    assert!(
        e.starts_with("config/x.toml: replicas: unknown field `replicas`"),
        "{e}"
    );
}

#[test]
fn toml_syntax_errors_are_one_line_with_position() {
    let e = file_err("[primary]\nurl = redis://h\n");
    assert!(e.starts_with("config/x.toml: primary.url: "), "{e}");
    assert!(e.contains("(line 2, column 7)"), "{e}");
    assert_eq!(e.lines().count(), 1);
    let e = file_err("[routing\nread_from = \"nearest\"\n");
    assert!(e.contains("(line 1, "), "{e}");
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn toml_syntax_error_keys() {
    assert_eq!(
        file_err("[routing\nread_from = \"nearest\"\n"),
        "config/x.toml: routing: unclosed table, expected `]` (line 1, column 9)"
    );
    assert_eq!(
        file_err("[health]\nrise = 1\nrise = 2\n"),
        "config/x.toml: health.rise: duplicate key (line 3, column 1)"
    );
    assert_eq!(
        file_err("primary = 5\n"),
        "config/x.toml: primary: invalid type: integer `5`, expected a table (line 1, column 11)"
    );
}

#[test]
fn load_reports_unreadable_config() {
    let a = args(&["--config", "/nonexistent/nearby.toml"]);
    let e = Config::load(&a, None).unwrap_err().to_string();
    assert!(
        e.starts_with("--config: config: cannot read '/nonexistent/nearby.toml': "),
        "{e}"
    );
}

#[test]
fn secrets_never_shown() {
    let c = from_file(
        &args(&["--replica", "ams=redis://u:replicasecret@a:1"]),
        FULL,
    )
    .unwrap();
    for text in [format!("{c:?}"), format!("{c:#?}"), c.to_redacted_toml()] {
        for secret in ["filesecret", "clientsecret", "replicasecret"] {
            assert!(!text.contains(secret), "{secret} leaked in:\n{text}");
        }
        assert!(text.contains("***"));
    }
    let e = flag_err(&["--primary", "redis://u:hunter2@h:99999"]);
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn redacted_toml_round_trips() {
    let c = from_file(&ConfigArgs::default(), FULL).unwrap();
    let text = c.to_redacted_toml();
    assert!(
        text.contains("url = \"redis://default:***@primary.example.internal:6379/0\""),
        "{text}"
    );
    assert!(text.contains("requirepass = \"***\""), "{text}");
    assert!(text.contains("read_from = \"primary\""), "{text}");
    assert!(
        text.contains("consistency = \"read-your-writes\""),
        "{text}"
    );
    let back = from_file(&ConfigArgs::default(), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        back.security.requirepass.as_ref().map(Secret::expose),
        Some("***")
    );
    assert_eq!(
        back.primary.url.password.as_ref().map(Secret::expose),
        Some("***")
    );
    assert_eq!(back.replicas, c.replicas);
    assert_eq!(back.routing, c.routing);
    assert_eq!(back.health, c.health);
    assert_eq!(back.limits, c.limits);
    assert_eq!(back.tls, c.tls);
    assert_eq!(back.dns, c.dns);
    assert!(text.contains("[dns]\nserver = \"10.0.0.2:5353\""), "{text}");
    assert_eq!(
        (back.listen, back.admin, back.threads),
        (c.listen, c.admin, c.threads)
    );

    let minimal = Config::from_parts(&args(&["--primary", P]), None, None).unwrap();
    let text = minimal.to_redacted_toml();
    assert!(!text.contains("region = \"\""), "{text}");
    from_file(&ConfigArgs::default(), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

#[test]
fn example_configs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let fly = Some("lhr".to_owned());
        let c = Config::from_parts(&ConfigArgs::default(), Some((&path, &text)), fly)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.region.is_some(), "{}", path.display());
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for expected in [
        "minimal.toml",
        "fly.toml",
        "tls.toml",
        "read-your-writes.toml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "config/{expected} missing"
        );
    }
}

#[test]
fn sentinel_from_flags_and_file() {
    let c = Config::from_parts(
        &args(&[
            "--sentinel",
            "127.0.0.1:26379,s2.internal:26380",
            "--sentinel-master",
            "mymaster",
            "--sentinel-password",
            "pw",
        ]),
        None,
        None,
    )
    .unwrap();
    let s = c.sentinel.as_ref().expect("sentinel");
    let addrs: Vec<String> = s.addresses.iter().map(|u| u.host_port()).collect();
    assert_eq!(addrs, ["127.0.0.1:26379", "s2.internal:26380"]);
    assert_eq!(s.master_name, "mymaster");
    assert_eq!(s.password.as_ref().map(|p| p.expose()), Some("pw"));
    // Without --primary the address waits for the sentinels.
    assert_eq!(c.primary.url.host_port(), "sentinel-primary.invalid:6379");
    assert_eq!(c.failover.wait_ms, 5000);
    let printed = c.to_redacted_toml();
    assert!(printed.contains("password = \"***\""), "{printed}");
    assert!(!printed.contains("\"pw\""), "{printed}");

    let file = "[sentinel]\naddresses = [\"10.0.0.1:26379\"]\nmaster_name = \"m\"\n\
                [primary]\nurl = \"rediss://u:p@placeholder:6380/2\"\n";
    let c = from_file(&ConfigArgs::default(), file).unwrap();
    assert_eq!(c.sentinel.as_ref().unwrap().master_name, "m");
    assert_eq!(c.primary.url.db, 2);
}

#[test]
fn sentinel_errors_name_the_key() {
    assert_eq!(
        flag_err(&["--sentinel", "127.0.0.1:26379"]),
        "--sentinel: sentinel.master_name: required with --sentinel (--sentinel-master NAME or [sentinel] master_name)"
    );
    assert_eq!(
        flag_err(&["--sentinel", "redis://x:1", "--sentinel-master", "m"]),
        "--sentinel: sentinel.addresses[0]: expected HOST:PORT, got 'redis://x:1'"
    );
    assert_eq!(
        flag_err(&["--primary", P, "--sentinel-master", "m"]),
        "--sentinel-master: sentinel.master_name: set, but no sentinel is (--sentinel HOST:PORT or [sentinel] addresses)"
    );
}
