//! Command line: `nearby run`, `check-config`, `status` and `lab`.
//!
//! Every option of [`ConfigArgs`] has an environment twin `NEARBY_<NAME>`
//! (clap folds the environment in, flags win). Values are parsed only to their
//! primitive type here; meaning (addresses, URLs, enums, ranges) is checked in
//! [`crate::config`] so that errors name the config key.

use std::fmt;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;

use crate::url::{Secret, redact_loose};

#[derive(clap::Parser, Debug)]
#[command(name = "nearby", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Run the sidecar
    Run(ConfigArgs),
    /// Validate a config and print the effective config (secrets redacted)
    CheckConfig(ConfigArgs),
    /// Show this region, the primary and read regions, each upstream's
    /// health, RTT and lag, and where reads go now (from a running sidecar)
    Status(StatusArgs),
    /// Start a local lab: real redis-servers in simulated regions, nearby in front
    Lab(LabArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Admin address of the running sidecar
    #[arg(
        long,
        env = "NEARBY_ADMIN",
        default_value = "127.0.0.1:9121",
        value_name = "ADDR"
    )]
    pub admin: String,
    /// Print the raw JSON of /status
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LabArgs {
    /// Address the lab's sidecar listens on
    #[arg(long, default_value = "127.0.0.1:6379", value_name = "ADDR")]
    pub listen: String,
    /// Admin address of the lab's sidecar
    #[arg(long, default_value = "127.0.0.1:9121", value_name = "ADDR")]
    pub admin: String,
    /// Regions as NAME=RTT_MS, the first one the primary's
    #[arg(long, default_value = "iad=80,ams=5,syd=150", value_name = "LIST")]
    pub regions: String,
    /// The region the sidecar (and the app) is in
    #[arg(long, default_value = "ams", value_name = "NAME")]
    pub region: String,
    /// Stop by itself after this many seconds (0: run until Ctrl-C)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub duration_s: u64,
    /// Print the table this often, in ms (0: never)
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub table_ms: u64,
}

/// Options shared by `run` and `check-config`. Every field is optional: what
/// is unset comes from the config file, then from the defaults.
#[derive(clap::Args, Default, Clone)]
pub struct ConfigArgs {
    /// TOML config file
    #[arg(long, env = "NEARBY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address clients connect to [default: 127.0.0.1:6379]
    #[arg(long, env = "NEARBY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Admin HTTP address (/metrics, /healthz, /readyz, /status) [default: 127.0.0.1:9121]
    #[arg(long, env = "NEARBY_ADMIN", value_name = "ADDR")]
    pub admin: Option<String>,

    /// Region this sidecar runs in [default: $FLY_REGION]
    #[arg(long, env = "NEARBY_REGION", value_name = "NAME")]
    pub region: Option<String>,

    /// Primary URL: redis://[user:pass@]host[:port][/db] or rediss://
    #[arg(
        long,
        env = "NEARBY_PRIMARY",
        value_name = "URL",
        hide_env_values = true
    )]
    pub primary: Option<String>,

    /// Region of the primary [default: primary]
    #[arg(long, env = "NEARBY_PRIMARY_REGION", value_name = "NAME")]
    pub primary_region: Option<String>,

    /// Read replica as REGION=URL; repeat, or comma-separate (percent-encode ',' in passwords)
    #[arg(
        long = "replica",
        env = "NEARBY_REPLICAS",
        value_name = "REGION=URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub replicas: Vec<String>,

    /// Where reads go: nearest | primary [default: nearest]
    #[arg(long, env = "NEARBY_READ_FROM", value_name = "MODE")]
    pub read_from: Option<String>,

    /// Read consistency: eventual | read-your-writes [default: eventual]
    #[arg(long, env = "NEARBY_CONSISTENCY", value_name = "MODE")]
    pub consistency: Option<String>,

    /// Read-your-writes tracked per connection | sidecar [default: connection]
    #[arg(long, env = "NEARBY_CONSISTENCY_SCOPE", value_name = "SCOPE")]
    pub consistency_scope: Option<String>,

    /// Skip replicas lagging more than this [default: 10000]
    #[arg(long, env = "NEARBY_MAX_STALENESS_MS", value_name = "MS")]
    pub max_staleness_ms: Option<u64>,

    /// Upstreams within this RTT of the nearest share reads [default: 2]
    #[arg(long, env = "NEARBY_LATENCY_WINDOW_MS", value_name = "MS")]
    pub latency_window_ms: Option<u64>,

    /// Health probe period per upstream [default: 1000]
    #[arg(long, env = "NEARBY_PROBE_INTERVAL_MS", value_name = "MS")]
    pub probe_interval_ms: Option<u64>,

    /// Consecutive good probes to mark an upstream up [default: 2]
    #[arg(long, env = "NEARBY_RISE", value_name = "N")]
    pub rise: Option<u32>,

    /// Consecutive failed probes to mark an upstream down [default: 3]
    #[arg(long, env = "NEARBY_FALL", value_name = "N")]
    pub fall: Option<u32>,

    /// Upstream connect timeout [default: 1000]
    #[arg(long, env = "NEARBY_CONNECT_TIMEOUT_MS", value_name = "MS")]
    pub connect_timeout_ms: Option<u64>,

    /// Upstream request timeout [default: 3000]
    #[arg(long, env = "NEARBY_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// On SIGTERM, how long in-flight requests may take to finish [default: 5000]
    #[arg(long, env = "NEARBY_DRAIN_TIMEOUT_MS", value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,

    /// Maximum concurrent client connections [default: 10000]
    #[arg(long, env = "NEARBY_MAX_CLIENTS", value_name = "N")]
    pub max_clients: Option<usize>,

    /// Largest bulk string accepted from a client, in bytes [default: 536870912]
    #[arg(long, env = "NEARBY_PROTO_MAX_BULK_LEN", value_name = "BYTES")]
    pub proto_max_bulk_len: Option<usize>,

    /// Maximum pipelined requests in flight per client [default: 1024]
    #[arg(long, env = "NEARBY_MAX_INFLIGHT", value_name = "N")]
    pub max_inflight: Option<usize>,

    /// Reply bytes buffered per client before its requests stop being read [default: 67108864]
    #[arg(long, env = "NEARBY_MAX_OUTPUT_BUFFER", value_name = "BYTES")]
    pub max_output_buffer: Option<usize>,

    /// Free commands per day before usage counts as billable [default: 10000]
    #[arg(long, env = "NEARBY_FREE_COMMANDS_PER_DAY", value_name = "N")]
    pub free_commands_per_day: Option<u64>,

    /// Close clients idle this long, 0 = never [default: 0]
    #[arg(long, env = "NEARBY_CLIENT_IDLE_TIMEOUT_S", value_name = "SECONDS")]
    pub client_idle_timeout_s: Option<u64>,

    /// Password clients must AUTH with
    #[arg(
        long,
        env = "NEARBY_REQUIREPASS",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub requirepass: Option<Secret>,

    /// File holding the client password (trailing newline ignored)
    #[arg(long, env = "NEARBY_REQUIREPASS_FILE", value_name = "PATH")]
    pub requirepass_file: Option<PathBuf>,

    /// Allow listening beyond loopback without --requirepass
    #[arg(
        long,
        env = "NEARBY_ALLOW_UNAUTHENTICATED",
        value_parser = BoolishValueParser::new()
    )]
    pub allow_unauthenticated: bool,

    /// CA bundle to verify rediss:// upstreams
    #[arg(long, env = "NEARBY_TLS_CA_FILE", value_name = "PATH")]
    pub tls_ca_file: Option<PathBuf>,

    /// Client certificate for rediss:// upstreams (needs --tls-key-file)
    #[arg(long, env = "NEARBY_TLS_CERT_FILE", value_name = "PATH")]
    pub tls_cert_file: Option<PathBuf>,

    /// Client private key for rediss:// upstreams (needs --tls-cert-file)
    #[arg(long, env = "NEARBY_TLS_KEY_FILE", value_name = "PATH")]
    pub tls_key_file: Option<PathBuf>,

    /// Server name to verify instead of the URL host
    #[arg(long, env = "NEARBY_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Nameserver for upstream host names, IP[:PORT] over UDP and TCP [default: /etc/resolv.conf]
    #[arg(long, env = "NEARBY_DNS_SERVER", value_name = "ADDR")]
    pub dns_server: Option<String>,

    /// Re-resolve upstream names at most this often, whatever their TTL [default: 5]
    #[arg(long, env = "NEARBY_DNS_MIN_TTL_S", value_name = "SECONDS")]
    pub dns_min_ttl_s: Option<u64>,

    /// Re-resolve upstream names at least this often, whatever their TTL [default: 300]
    #[arg(long, env = "NEARBY_DNS_MAX_TTL_S", value_name = "SECONDS")]
    pub dns_max_ttl_s: Option<u64>,

    /// Time allowed for one DNS lookup [default: 2000]
    #[arg(long, env = "NEARBY_DNS_TIMEOUT_MS", value_name = "MS")]
    pub dns_timeout_ms: Option<u64>,

    /// Log format: text | json [default: text]
    #[arg(long, env = "NEARBY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Record and serve Prometheus metrics: on or off [default: on]
    #[arg(long, env = "NEARBY_METRICS", value_name = "on|off")]
    pub metrics: Option<String>,

    /// Runtime threads: 1 = a current-thread runtime, more = work-stealing [default: 1]
    #[arg(long, env = "NEARBY_THREADS", value_name = "N")]
    pub threads: Option<usize>,

    /// Where SUBSCRIBE goes: primary | nearest [default: primary]
    #[arg(long, env = "NEARBY_SUBSCRIBE_FROM", value_name = "MODE")]
    pub subscribe_from: Option<String>,
}

/// Hand-written so that URLs (which may carry passwords) and the client
/// password never reach a log line.
impl fmt::Debug for ConfigArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let replicas: Vec<String> = self.replicas.iter().map(|r| redact_loose(r)).collect();
        f.debug_struct("ConfigArgs")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .field("region", &self.region)
            .field("primary", &self.primary.as_deref().map(redact_loose))
            .field("primary_region", &self.primary_region)
            .field("replicas", &replicas)
            .field("read_from", &self.read_from)
            .field("consistency", &self.consistency)
            .field("consistency_scope", &self.consistency_scope)
            .field("max_staleness_ms", &self.max_staleness_ms)
            .field("latency_window_ms", &self.latency_window_ms)
            .field("probe_interval_ms", &self.probe_interval_ms)
            .field("rise", &self.rise)
            .field("fall", &self.fall)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("drain_timeout_ms", &self.drain_timeout_ms)
            .field("max_clients", &self.max_clients)
            .field("proto_max_bulk_len", &self.proto_max_bulk_len)
            .field("max_inflight", &self.max_inflight)
            .field("max_output_buffer", &self.max_output_buffer)
            .field("free_commands_per_day", &self.free_commands_per_day)
            .field("client_idle_timeout_s", &self.client_idle_timeout_s)
            .field("requirepass", &self.requirepass)
            .field("requirepass_file", &self.requirepass_file)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("dns_server", &self.dns_server)
            .field("dns_min_ttl_s", &self.dns_min_ttl_s)
            .field("dns_max_ttl_s", &self.dns_max_ttl_s)
            .field("dns_timeout_ms", &self.dns_timeout_ms)
            .field("log_format", &self.log_format)
            .field("metrics", &self.metrics)
            .field("threads", &self.threads)
            .field("subscribe_from", &self.subscribe_from)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn run_args(args: &[&str]) -> ConfigArgs {
        let mut argv = vec!["nearby", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .command
        {
            Command::Run(a) => a,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_help_and_nearby_env_twin() {
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        let mut seen = 0;
        for arg in run.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            seen += 1;
            let expected = if long == "replica" {
                "NEARBY_REPLICAS".to_owned()
            } else {
                format!("NEARBY_{}", long.replace('-', "_").to_ascii_uppercase())
            };
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long}"
            );
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                !help.is_empty() && !help.contains('\n'),
                "--{long} help: {help:?}"
            );
        }
        assert_eq!(seen, 39);
    }

    #[test]
    fn secrets_hidden_in_help() {
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        for name in ["requirepass", "primary", "replicas"] {
            let arg = run.get_arguments().find(|a| a.get_id() == name).unwrap();
            assert!(arg.is_hide_env_values_set(), "{name}");
        }
    }

    #[test]
    fn parses_all_flags() {
        let a = run_args(&[
            "--config",
            "x.toml",
            "--listen",
            "0.0.0.0:6380",
            "--admin",
            "127.0.0.1:9000",
            "--region",
            "mad",
            "--primary",
            "redis://:pw@p:6379",
            "--primary-region",
            "mad",
            "--replica",
            "ams=redis://a:6379",
            "--replica",
            "lhr=redis://l:6379",
            "--read-from",
            "primary",
            "--consistency",
            "read-your-writes",
            "--consistency-scope",
            "sidecar",
            "--max-staleness-ms",
            "500",
            "--latency-window-ms",
            "3",
            "--probe-interval-ms",
            "250",
            "--rise",
            "4",
            "--fall",
            "5",
            "--connect-timeout-ms",
            "111",
            "--request-timeout-ms",
            "222",
            "--max-clients",
            "7",
            "--proto-max-bulk-len",
            "1048576",
            "--max-inflight",
            "64",
            "--client-idle-timeout-s",
            "30",
            "--requirepass",
            "hunter2",
            "--allow-unauthenticated",
            "--tls-ca-file",
            "/ca.pem",
            "--tls-cert-file",
            "/c.pem",
            "--tls-key-file",
            "/k.pem",
            "--tls-server-name",
            "redis.example.com",
            "--dns-server",
            "127.0.0.1:5353",
            "--dns-min-ttl-s",
            "2",
            "--dns-max-ttl-s",
            "60",
            "--dns-timeout-ms",
            "700",
            "--log-format",
            "json",
            "--threads",
            "4",
            "--subscribe-from",
            "nearest",
        ]);
        assert_eq!(a.config, Some(PathBuf::from("x.toml")));
        assert_eq!(a.listen.as_deref(), Some("0.0.0.0:6380"));
        assert_eq!(a.replicas, vec!["ams=redis://a:6379", "lhr=redis://l:6379"]);
        assert_eq!(a.read_from.as_deref(), Some("primary"));
        assert_eq!(a.consistency.as_deref(), Some("read-your-writes"));
        assert_eq!(a.consistency_scope.as_deref(), Some("sidecar"));
        assert_eq!(a.max_staleness_ms, Some(500));
        assert_eq!((a.rise, a.fall), (Some(4), Some(5)));
        assert_eq!(a.max_inflight, Some(64));
        assert_eq!(a.requirepass.as_ref().map(Secret::expose), Some("hunter2"));
        assert!(a.allow_unauthenticated);
        assert_eq!(a.tls_server_name.as_deref(), Some("redis.example.com"));
        assert_eq!(a.threads, Some(4));
        assert_eq!(a.subscribe_from.as_deref(), Some("nearest"));
        assert_eq!(a.dns_server.as_deref(), Some("127.0.0.1:5353"));
        assert_eq!(
            (a.dns_min_ttl_s, a.dns_max_ttl_s, a.dns_timeout_ms),
            (Some(2), Some(60), Some(700))
        );
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("pw@"), "{dbg}");
    }

    #[test]
    fn replica_comma_list_like_env() {
        // NEARBY_REPLICAS uses the same delimiter as the flag.
        let a = run_args(&["--replica", "ams=redis://a:1,lhr=redis://:p@l:2/1"]);
        assert_eq!(a.replicas, vec!["ams=redis://a:1", "lhr=redis://:p@l:2/1"]);
    }

    #[test]
    fn check_config_and_defaults() {
        let cli = Cli::try_parse_from(["nearby", "check-config", "--config", "c.toml"]).unwrap();
        let Command::CheckConfig(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.config, Some(PathBuf::from("c.toml")));
        assert!(a.replicas.is_empty());
        assert!(!a.allow_unauthenticated);
        assert_eq!(a.listen, None);
    }

    #[test]
    fn type_errors_are_rejected_by_clap() {
        assert!(Cli::try_parse_from(["nearby", "run", "--rise", "x"]).is_err());
        assert!(Cli::try_parse_from(["nearby", "run", "--max-clients", "-1"]).is_err());
        assert!(Cli::try_parse_from(["nearby", "run", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["nearby", "run", "--dns-min-ttl-s", "-1"]).is_err());
        assert!(Cli::try_parse_from(["nearby", "run", "--dns-timeout-ms", "2s"]).is_err());
        assert!(Cli::try_parse_from(["nearby"]).is_err());
    }
}
