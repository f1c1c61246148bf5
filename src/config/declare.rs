//! The `settings!` macro: from the one table in `settings.rs` it declares
//! [`ConfigArgs`] (clap: flag, env twin, help, a redacting `Debug`),
//! `FileConfig` and its section tables (serde: the file keys), [`Config`]
//! with its table-driven sections and their defaults, the merge (flags >
//! env > file > default, in the order errors are reported), the printed
//! config, and `SETTINGS`, the descriptors the README test checks.
//!
//! Two kinds of rows:
//!
//! - scalar rows (`top` and `sections`) are driven entirely by the table:
//!   `name: Type = default, min N => "flag", "ENV", "VALUE", "help";` where
//!   `Type` is a [`Value`] and the flag, env twin and file key hold its `Raw`;
//! - `flags` rows only declare a clap field and its descriptor:
//!   `name: ArgType ["file.key"] = shown_default or "readme_default" =>
//!   "flag", "ENV", "help", [clap attributes] debug redact_fn;` — their
//!   merge, checks and printing are hand-written (`merge.rs`, `rules.rs`,
//!   `print.rs`) because they are structurally special (URLs, secrets,
//!   TLS paths, DNS).
//!
//! The blocks come in a fixed order, which is the order of `--help`.
//!
//! [`ConfigArgs`]: crate::cli::ConfigArgs
//! [`Config`]: super::Config
//! [`Value`]: super::Value

/// `Some(min)` when a row has `, min N`.
macro_rules! at_least {
    () => {
        None
    };
    ($min:literal) => {
        Some($min)
    };
}

/// A field for `Debug`, through the row's redacting function if it has one.
macro_rules! debug_field {
    ($v:expr) => {
        &$v
    };
    ($v:expr, $redact:path) => {
        &$redact(&$v)
    };
}

macro_rules! settings {
    // The clap struct, its `Debug` and the descriptors, from uniform rows.
    (@args $(
        { $name:ident: $argty:ty, $key:expr, $default:expr, $flag:literal, $env:literal,
          $help:expr, [$($clap:tt)*], [$($redact:path)?] }
    )*) => {
        /// Options shared by `run` and `check-config`. Every field is
        /// optional: what is unset comes from the config file, then from
        /// the defaults. Declared by the table in `config/settings.rs`.
        #[derive(clap::Args, Default, Clone)]
        pub struct ConfigArgs {
            $(
                #[arg(long = $flag, env = $env, help = $help)]
                #[arg($($clap)*)]
                pub $name: $argty,
            )*
        }

        /// Hand-rolled so that URLs (which may carry passwords) and the
        /// client password never reach a log line.
        impl std::fmt::Debug for ConfigArgs {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("ConfigArgs")
                    $(.field(stringify!($name), debug_field!(self.$name $(, $redact)?)))*
                    .finish()
            }
        }

        /// Every setting, in `--help` order.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                key: $key,
                flag: concat!("--", $flag),
                env: $env,
                default: $default,
                help: $help,
            },
        )*];
    };

    (
        flags { $(
            $f1:ident: $f1ty:ty [$($f1key:literal)?] $(= $f1shown:literal)? $(or $f1note:literal)?
                => $f1flag:literal, $f1env:literal, $f1help:literal, [$($f1clap:tt)*]
                $(debug $f1redact:path)?;
        )* }
        top { $(
            $(#[doc = $t1doc:literal])*
            $t1:ident: $t1ty:ty = $t1default:literal $(, min $t1min:literal)?
                => $t1flag:literal, $t1env:literal, $t1vn:literal, $t1help:literal;
        )* }
        flags { $(
            $f2:ident: $f2ty:ty [$($f2key:literal)?] $(= $f2shown:literal)? $(or $f2note:literal)?
                => $f2flag:literal, $f2env:literal, $f2help:literal, [$($f2clap:tt)*]
                $(debug $f2redact:path)?;
        )* }
        sections { $(
            $(#[doc = $sdoc:literal])*
            $sec:ident: $Sec:ident, $File:ident { $(
                $(#[doc = $doc:literal])*
                $name:ident: $ty:ty = $default:literal $(, min $min:literal)?
                    => $flag:literal, $env:literal, $vn:literal, $help:literal;
            )* }
        )* }
        flags { $(
            $f3:ident: $f3ty:ty [$($f3key:literal)?] $(= $f3shown:literal)? $(or $f3note:literal)?
                => $f3flag:literal, $f3env:literal, $f3help:literal, [$($f3clap:tt)*]
                $(debug $f3redact:path)?;
        )* }
        top { $(
            $(#[doc = $t2doc:literal])*
            $t2:ident: $t2ty:ty = $t2default:literal $(, min $t2min:literal)?
                => $t2flag:literal, $t2env:literal, $t2vn:literal, $t2help:literal;
        )* }
    ) => {
        settings!(@args
            $({ $f1: $f1ty, concat!($($f1key)?), concat!($($f1shown)? $($f1note)?), $f1flag,
                $f1env, concat!($f1help $(, " [default: ", $f1shown, "]")?), [$($f1clap)*],
                [$($f1redact)?] })*
            $({ $t1: Option<<$t1ty as Value>::Raw>, stringify!($t1), concat!($t1default),
                $t1flag, $t1env, concat!($t1help, " [default: ", $t1default, "]"),
                [value_name = $t1vn], [] })*
            $({ $f2: $f2ty, concat!($($f2key)?), concat!($($f2shown)? $($f2note)?), $f2flag,
                $f2env, concat!($f2help $(, " [default: ", $f2shown, "]")?), [$($f2clap)*],
                [$($f2redact)?] })*
            $($({ $name: Option<<$ty as Value>::Raw>,
                concat!(stringify!($sec), ".", stringify!($name)), concat!($default), $flag,
                $env, concat!($help, " [default: ", $default, "]"), [value_name = $vn], [] })*)*
            $({ $f3: $f3ty, concat!($($f3key)?), concat!($($f3shown)? $($f3note)?), $f3flag,
                $f3env, concat!($f3help $(, " [default: ", $f3shown, "]")?), [$($f3clap)*],
                [$($f3redact)?] })*
            $({ $t2: Option<<$t2ty as Value>::Raw>, stringify!($t2), concat!($t2default),
                $t2flag, $t2env, concat!($t2help, " [default: ", $t2default, "]"),
                [value_name = $t2vn], [] })*
        );

        /// The effective configuration. `Debug` never shows a password.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Config {
            /// Where this sidecar runs (`--region`, file, then `$FLY_REGION`).
            pub region: Option<String>,
            $($(#[doc = $t1doc])* pub $t1: $t1ty,)*
            pub primary: UpstreamConfig,
            pub replicas: Vec<UpstreamConfig>,
            $(pub $sec: $Sec,)*
            pub security: SecurityConfig,
            pub tls: TlsConfig,
            pub dns: DnsConfig,
            /// Set when the primary comes from Sentinel.
            pub sentinel: Option<SentinelConfig>,
            /// Set when fronting a Redis Cluster.
            pub cluster: Option<ClusterConfig>,
            $($(#[doc = $t2doc])* pub $t2: $t2ty,)*
        }

        // The file shape. Also used, fully populated, to print the
        // effective config.
        #[derive(Deserialize, Serialize, Default, Debug)]
        #[serde(deny_unknown_fields, default)]
        pub(super) struct FileConfig {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub region: Option<String>,
            $(
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $t1: Option<<$t1ty as Value>::Raw>,
            )*
            $(
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $t2: Option<<$t2ty as Value>::Raw>,
            )*
            pub primary: FileUpstream,
            pub replica: Vec<FileUpstream>,
            $(pub $sec: $File,)*
            pub security: FileSecurity,
            #[serde(skip_serializing_if = "FileTls::is_empty")]
            pub tls: FileTls,
            pub dns: FileDns,
            #[serde(skip_serializing_if = "FileSentinel::is_empty")]
            pub sentinel: FileSentinel,
            #[serde(skip_serializing_if = "FileCluster::is_empty")]
            pub cluster: FileCluster,
        }

        /// Internal type names serde puts in messages (said as "a table").
        pub(super) const FILE_TYPE_NAMES: &[&str] = &[
            "FileConfig", "FileUpstream", $(stringify!($File),)* "FileSecurity", "FileTls",
            "FileDns", "FileSentinel", "FileCluster",
        ];

        $(
            $(#[doc = $sdoc])*
            #[derive(Clone, Debug, PartialEq, Eq)]
            pub struct $Sec {
                $($(#[doc = $doc])* pub $name: $ty,)*
            }

            impl Default for $Sec {
                fn default() -> Self {
                    $Sec { $($name: <$ty as Value>::from_default(concat!($default)),)* }
                }
            }

            #[derive(Deserialize, Serialize, Default, Debug)]
            #[serde(deny_unknown_fields, default)]
            pub(super) struct $File {
                $(
                    #[serde(skip_serializing_if = "Option::is_none")]
                    pub $name: Option<<$ty as Value>::Raw>,
                )*
            }

            impl $Sec {
                fn merge(a: &ConfigArgs, f: &$File, m: &Merger<'_>) -> Result<$Sec, ConfigError> {
                    let d = $Sec::default();
                    Ok($Sec {$(
                        $name: m.setting(
                            a.$name.as_ref(),
                            concat!("--", $flag),
                            f.$name.as_ref(),
                            concat!(stringify!($sec), ".", stringify!($name)),
                            d.$name,
                            at_least!($($min)?),
                        )?,
                    )*})
                }

                fn to_file(&self) -> $File {
                    $File { $($name: self.$name.to_raw(),)* }
                }
            }
        )*

        impl Config {
            /// Every setting, in the order errors are reported: one call per
            /// section or top-level setting.
            pub(super) fn merge(
                a: &ConfigArgs,
                fc: &FileConfig,
                m: &Merger<'_>,
                fly_region: Option<String>,
            ) -> Result<Config, ConfigError> {
                let region = merge::region(a, fc.region.as_ref(), m, fly_region)?;
                $(
                    let $t1 = m.setting(
                        a.$t1.as_ref(),
                        concat!("--", $t1flag),
                        fc.$t1.as_ref(),
                        stringify!($t1),
                        <$t1ty as Value>::from_default(concat!($t1default)),
                        at_least!($($t1min)?),
                    )?;
                )*
                let sentinel = rules::sentinel(a, &fc.sentinel, m)?;
                let cluster = rules::cluster(a, &fc.cluster, m)?;
                let primary =
                    merge::primary(a, &fc.primary, m, sentinel.is_some() || cluster.is_some())?;
                let replicas = merge::replicas(a, &fc.replica, m)?;
                $(let $sec = $Sec::merge(a, &fc.$sec, m)?;)*
                let security = rules::security(a, &fc.security, m)?;
                let tls = rules::tls(a, &fc.tls, m)?;
                let dns = rules::dns(a, &fc.dns, m)?;
                $(
                    let $t2 = m.setting(
                        a.$t2.as_ref(),
                        concat!("--", $t2flag),
                        fc.$t2.as_ref(),
                        stringify!($t2),
                        <$t2ty as Value>::from_default(concat!($t2default)),
                        at_least!($($t2min)?),
                    )?;
                )*
                Ok(Config {
                    region,
                    $($t1,)*
                    primary,
                    replicas,
                    $($sec,)*
                    security,
                    tls,
                    dns,
                    sentinel,
                    cluster,
                    $($t2,)*
                })
            }

            /// The effective config in the file's shape, secrets redacted.
            pub(super) fn to_file(&self) -> FileConfig {
                FileConfig {
                    region: self.region.clone(),
                    $($t1: self.$t1.to_raw(),)*
                    $($t2: self.$t2.to_raw(),)*
                    primary: print::upstream(&self.primary),
                    replica: self.replicas.iter().map(print::upstream).collect(),
                    $($sec: self.$sec.to_file(),)*
                    security: print::security(&self.security),
                    tls: print::tls(&self.tls),
                    dns: print::dns(&self.dns),
                    sentinel: print::sentinel(self.sentinel.as_ref()),
                    cluster: print::cluster(self.cluster.as_ref()),
                }
            }
        }
    };
}
