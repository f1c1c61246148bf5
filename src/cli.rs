//! Command line: `nearby run`, `check-config`, `status` and `lab`.
//!
//! Every option of [`ConfigArgs`] has an environment twin `NEARBY_<NAME>`
//! (clap folds the environment in, flags win). Values are parsed only to their
//! primitive type here; meaning (addresses, URLs, enums, ranges) is checked in
//! [`crate::config`] so that errors name the config key. [`ConfigArgs`] is
//! declared by the settings table in `config/settings.rs`.

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
#[command(args_conflicts_with_subcommands = true)]
pub struct LabArgs {
    /// Act on a running lab instead of starting one
    #[command(subcommand)]
    pub action: Option<LabAction>,
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
    /// Also start three Redis Sentinels watching the primary as `mymaster`; the sidecar follows them
    #[arg(long)]
    pub sentinel: bool,
    /// Port of the first sentinel; the other two take the next two ports
    #[arg(
        long,
        default_value_t = 26379,
        value_name = "N",
        requires = "sentinel",
        value_parser = clap::value_parser!(u16).range(1..=65533)
    )]
    pub sentinel_port: u16,
    /// Start a three-shard Redis Cluster instead (primaries in the first region, a replica per shard in each other)
    #[arg(long, conflicts_with = "sentinel")]
    pub cluster: bool,
    /// Run the sidecar with its near-cache on (hot reads answered locally)
    #[arg(long, conflicts_with = "cluster")]
    pub near_cache: bool,
}

/// What `nearby lab <action>` does to a running lab.
#[derive(clap::Subcommand, Debug, Clone, PartialEq)]
pub enum LabAction {
    /// Ask a lab sentinel to fail the primary over (SENTINEL FAILOVER mymaster)
    Failover {
        /// The sentinel to ask, HOST:PORT
        #[arg(long, default_value = "127.0.0.1:26379", value_name = "ADDR")]
        sentinel: String,
    },
}

pub use crate::config::ConfigArgs;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::Secret;
    use clap::{CommandFactory, Parser};
    use std::path::PathBuf;

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
            // Repeatable flags have plural env twins (comma lists).
            let expected = if long == "replica" || long == "sentinel" {
                format!("NEARBY_{}S", long.to_ascii_uppercase())
            } else if long == "cluster" {
                "NEARBY_CLUSTER".to_owned()
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
        assert_eq!(seen, 49);
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

    fn lab_args(args: &[&str]) -> Result<LabArgs, clap::Error> {
        let mut argv = vec!["nearby", "lab"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Lab(a) => Ok(a),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn lab_sentinel_flags_and_failover_action() {
        let a = lab_args(&[]).unwrap();
        assert!(!a.sentinel && a.action.is_none());
        assert_eq!(a.sentinel_port, 26379);
        let a = lab_args(&["--sentinel", "--sentinel-port", "27000"]).unwrap();
        assert!(a.sentinel);
        assert_eq!(a.sentinel_port, 27000);
        // --sentinel-port means nothing without --sentinel; the three ports
        // must fit.
        assert!(lab_args(&["--sentinel-port", "27000"]).is_err());
        assert!(lab_args(&["--sentinel", "--sentinel-port", "65534"]).is_err());
        assert!(lab_args(&["--sentinel", "--sentinel-port", "0"]).is_err());

        let a = lab_args(&["failover"]).unwrap();
        assert_eq!(
            a.action,
            Some(LabAction::Failover {
                sentinel: "127.0.0.1:26379".into()
            })
        );
        let a = lab_args(&["failover", "--sentinel", "127.0.0.1:27001"]).unwrap();
        assert_eq!(
            a.action,
            Some(LabAction::Failover {
                sentinel: "127.0.0.1:27001".into()
            })
        );
        // Options that start a lab do not go with an action.
        assert!(lab_args(&["--regions", "a=1,b=2", "failover"]).is_err());
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
