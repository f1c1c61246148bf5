//! The value types of settings and how each is read from its raw form (what
//! a flag, its env twin or the file carries) and printed back.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Where reads go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The nearest healthy, fresh-enough replica (or the primary if nearer).
    #[default]
    Nearest,
    /// Always the primary.
    Primary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Eventual,
    /// After a write, read from a replica only once it has caught up.
    ReadYourWrites,
}

/// Whose writes a read must observe under read-your-writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConsistencyScope {
    /// The same client connection's writes.
    #[default]
    Connection,
    /// Any write that went through this sidecar.
    Sidecar,
}

/// Where SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SubscribeFrom {
    #[default]
    Primary,
    Nearest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Whether Prometheus metrics are recorded and served (off: every metric
/// handle is a no-op; used to measure what metrics cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Metrics {
    #[default]
    On,
    Off,
}

/// Whether writes follow the server that says `role:master` (without
/// Sentinel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FollowRole {
    #[default]
    On,
    Off,
}

/// Whether hot reads are answered from the sidecar's near-cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NearCache {
    On,
    #[default]
    Off,
}

/// Names for the enums, shared by parsing and printing.
pub(super) trait Named: Sized + Copy + PartialEq + 'static {
    const CHOICES: &'static [(&'static str, Self)];

    fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .expect("every variant is named")
    }

    fn parse_named(s: &str) -> Result<Self, String> {
        Self::CHOICES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::CHOICES.iter().map(|(n, _)| *n).collect();
                format!("invalid value '{s}' (expected {})", names.join(" or "))
            })
    }
}

impl Named for ReadFrom {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("nearest", ReadFrom::Nearest),
        ("primary", ReadFrom::Primary),
    ];
}
impl Named for Consistency {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("eventual", Consistency::Eventual),
        ("read-your-writes", Consistency::ReadYourWrites),
    ];
}
impl Named for ConsistencyScope {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("connection", ConsistencyScope::Connection),
        ("sidecar", ConsistencyScope::Sidecar),
    ];
}
impl Named for SubscribeFrom {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("primary", SubscribeFrom::Primary),
        ("nearest", SubscribeFrom::Nearest),
    ];
}
impl Named for Metrics {
    const CHOICES: &'static [(&'static str, Self)] = &[("on", Metrics::On), ("off", Metrics::Off)];
}
impl Named for FollowRole {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("on", FollowRole::On), ("off", FollowRole::Off)];
}
impl Named for NearCache {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("on", NearCache::On), ("off", NearCache::Off)];
}
impl Named for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

macro_rules! display_named {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_named!(
    ReadFrom,
    Consistency,
    ConsistencyScope,
    SubscribeFrom,
    LogFormat,
    FollowRole,
    NearCache
);

/// The type of a table-driven setting (see `settings.rs`): what its flag,
/// env twin and file key carry (`Raw`), how that is checked, and how the
/// effective value is printed back. Public only because [`ConfigArgs`]'s
/// fields are spelled `Option<<T as Value>::Raw>`.
///
/// [`ConfigArgs`]: crate::cli::ConfigArgs
pub trait Value: Sized {
    type Raw: Clone + FromStr;

    /// Checks a raw value; the message becomes a [`super::ConfigError`]'s.
    /// `min` is a lower bound (numbers only).
    fn from_raw(raw: Self::Raw, min: Option<Self::Raw>) -> Result<Self, String>;

    /// The value as the file spells it; `None` is left out of the file.
    fn to_raw(&self) -> Option<Self::Raw>;

    /// The default, from its documented text in the settings table.
    fn from_default(text: &str) -> Self {
        let raw = text
            .parse::<Self::Raw>()
            .unwrap_or_else(|_| panic!("default '{text}' does not parse"));
        Self::from_raw(raw, None).unwrap_or_else(|e| panic!("default '{text}': {e}"))
    }
}

/// Numbers have a lower bound, and the TOML integer range as upper bound
/// (so the effective config can always be printed back).
macro_rules! value_number {
    ($($t:ty),*) => {$(
        impl Value for $t {
            type Raw = $t;

            fn from_raw(v: $t, min: Option<$t>) -> Result<$t, String> {
                if let Some(min) = min
                    && v < min
                {
                    return Err(format!("must be at least {min}, got {v}"));
                }
                if i64::try_from(v).is_err() {
                    return Err(format!("must be at most {}, got {v}", i64::MAX));
                }
                Ok(v)
            }

            fn to_raw(&self) -> Option<$t> {
                Some(*self)
            }
        }
    )*};
}
value_number!(u32, u64, usize);

macro_rules! value_named {
    ($($t:ty),*) => {$(
        impl Value for $t {
            type Raw = String;

            fn from_raw(s: String, _: Option<String>) -> Result<$t, String> {
                <$t>::parse_named(&s)
            }

            fn to_raw(&self) -> Option<String> {
                Some(self.as_str().to_owned())
            }
        }
    )*};
}
value_named!(
    ReadFrom,
    Consistency,
    ConsistencyScope,
    SubscribeFrom,
    LogFormat,
    Metrics,
    FollowRole,
    NearCache
);

impl Value for SocketAddr {
    type Raw = String;

    fn from_raw(s: String, _: Option<String>) -> Result<SocketAddr, String> {
        s.trim().parse::<SocketAddr>().map_err(|_| {
            format!(
                "invalid socket address '{s}' (expected IP:PORT, e.g. 127.0.0.1:6379 or [::1]:6379)"
            )
        })
    }

    fn to_raw(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// An optional setting: unset by default, whatever its documented default
/// (which says what unset means, e.g. `threads`: 1).
impl<T: Value> Value for Option<T> {
    type Raw = T::Raw;

    fn from_raw(raw: T::Raw, min: Option<T::Raw>) -> Result<Option<T>, String> {
        T::from_raw(raw, min).map(Some)
    }

    fn to_raw(&self) -> Option<T::Raw> {
        self.as_ref().and_then(T::to_raw)
    }

    fn from_default(_: &str) -> Option<T> {
        None
    }
}
