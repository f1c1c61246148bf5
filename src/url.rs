//! Upstream URLs: `redis://[user:pass@]host[:port][/db]` and `rediss://` (TLS).
//!
//! The parser is deliberately small and strict: anything it does not
//! understand (query strings, fragments, bare IPv6, junk after the database)
//! is an error with a precise, one-line message. Error messages never echo
//! the user-info part of the URL, so a typo cannot leak a password into logs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Port used when a URL does not name one.
pub const DEFAULT_PORT: u16 = 6379;

/// The host part of an upstream URL.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub enum Host {
    /// A literal IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name (may resolve to many addresses).
    Name(String),
}

impl fmt::Display for Host {
    /// The bare host: an IPv6 address is printed without brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A secret string (a password). `Debug` and `Display` print `***`; the value
/// is only reachable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Why a URL was rejected. Messages never contain the password.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    #[error("missing scheme (expected redis:// or rediss://)")]
    MissingScheme,
    #[error("unsupported scheme '{0}' (expected redis:// or rediss://)")]
    UnsupportedScheme(String),
    #[error("missing host")]
    MissingHost,
    #[error("invalid host '{0}'")]
    InvalidHost(String),
    #[error("invalid IPv6 address '{0}'")]
    InvalidIpv6(String),
    #[error("IPv6 address '{0}' must be written in brackets, e.g. [::1]:6379")]
    UnbracketedIpv6(String),
    #[error("invalid port '{0}'")]
    InvalidPort(String),
    #[error("invalid database '{0}'")]
    InvalidDatabase(String),
    #[error("query parameters ('?...') are not supported")]
    QueryUnsupported,
    #[error("fragments ('#...') are not supported")]
    FragmentUnsupported,
    #[error("invalid percent-encoding in {0}")]
    InvalidPercentEncoding(&'static str),
    #[error(
        "a username was given without a password (use redis://USER:PASSWORD@host or redis://:PASSWORD@host)"
    )]
    UsernameWithoutPassword,
}

/// A parsed upstream URL.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RedisUrl {
    /// `rediss://`: connect with TLS.
    pub tls: bool,
    pub host: Host,
    pub port: u16,
    /// ACL user (`AUTH user pass`); `None` means `AUTH pass` (the default user).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Database number (`SELECT`), 0 when absent.
    pub db: u32,
}

impl RedisUrl {
    /// The URL with the password replaced by `***`:
    /// `redis://user:***@host:port/db`. Always names the port and database.
    pub fn redacted(&self) -> String {
        let mut out = String::new();
        out.push_str(if self.tls { "rediss://" } else { "redis://" });
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => {
                out.push_str(&percent_encode(user));
                out.push_str(":***@");
            }
            (None, Some(_)) => out.push_str(":***@"),
            (Some(user), None) => {
                out.push_str(&percent_encode(user));
                out.push('@');
            }
            (None, None) => {}
        }
        out.push_str(&self.host_port());
        out.push('/');
        out.push_str(&self.db.to_string());
        out
    }

    /// `"127.0.0.1:6379"`, `"[::1]:6379"` or `"name:6379"`: what a socket
    /// connect or a resolver wants.
    pub fn host_port(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => format!("{ip}:{}", self.port),
            Host::Name(name) => format!("{name}:{}", self.port),
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl FromStr for RedisUrl {
    type Err = UrlError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let input = input.trim();
        let (scheme, rest) = input.split_once("://").ok_or(UrlError::MissingScheme)?;
        let tls = if scheme.eq_ignore_ascii_case("redis") {
            false
        } else if scheme.eq_ignore_ascii_case("rediss") {
            true
        } else {
            return Err(UrlError::UnsupportedScheme(scheme.to_owned()));
        };
        if rest.contains('#') {
            return Err(UrlError::FragmentUnsupported);
        }
        if rest.contains('?') {
            return Err(UrlError::QueryUnsupported);
        }

        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };

        // User info: everything before the last '@' (a raw '@' in a password
        // is tolerated; it should be written %40).
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user =
                    percent_decode(user).ok_or(UrlError::InvalidPercentEncoding("username"))?;
                let pass = match pass {
                    Some(p) => Some(
                        percent_decode(p).ok_or(UrlError::InvalidPercentEncoding("password"))?,
                    ),
                    None => None,
                };
                let user = (!user.is_empty()).then_some(user);
                let pass = pass.filter(|p| !p.is_empty()).map(Secret);
                if user.is_some() && pass.is_none() {
                    return Err(UrlError::UsernameWithoutPassword);
                }
                (user, pass)
            }
        };

        let (host, port) = parse_host_port(hostport)?;
        let db = parse_db(path)?;
        Ok(RedisUrl {
            tls,
            host,
            port,
            username,
            password,
            db,
        })
    }
}

/// `host:port` as `RedisUrl::host_port` writes it (IPv6 in brackets), for
/// an address a server reported as text (`INFO`, Sentinel, `MOVED`).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn parse_host_port(s: &str) -> Result<(Host, u16), UrlError> {
    if s.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let (host, port) = if let Some(after) = s.strip_prefix('[') {
        let close = after
            .find(']')
            .ok_or_else(|| UrlError::InvalidIpv6(s.to_owned()))?;
        let inner = &after[..close];
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| UrlError::InvalidIpv6(format!("[{inner}]")))?;
        let tail = &after[close + 1..];
        let port = match tail {
            "" => None,
            t => match t.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(UrlError::InvalidHost(s.to_owned())),
            },
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        if s.matches(':').count() > 1 {
            return Err(UrlError::UnbracketedIpv6(s.to_owned()));
        }
        let (name, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if name.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let host = if let Ok(ip) = name.parse::<Ipv4Addr>() {
            Host::Ip(IpAddr::V4(ip))
        } else if valid_hostname(name) {
            Host::Name(name.to_owned())
        } else {
            return Err(UrlError::InvalidHost(name.to_owned()));
        };
        (host, port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => parse_port(p)?,
    };
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, UrlError> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::InvalidPort(p.to_owned()));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(UrlError::InvalidPort(p.to_owned())),
        Ok(port) => Ok(port),
    }
}

fn parse_db(path: &str) -> Result<u32, UrlError> {
    let digits = match path {
        "" | "/" => return Ok(0),
        p => &p[1..],
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::InvalidDatabase(path.to_owned()));
    }
    digits
        .parse::<u32>()
        .map_err(|_| UrlError::InvalidDatabase(path.to_owned()))
}

/// Letters, digits, '-', '_' and '.', with no empty label (a single trailing
/// dot, as in a fully qualified name, is allowed).
fn valid_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Decode `%XX` escapes. `None` on a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Encode everything but RFC 3986 unreserved characters, so a user name
/// printed back into a URL parses to the same value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Best-effort redaction of a string that may hold a URL with a password,
/// for use in error messages about input that failed to parse.
pub fn redact_loose(s: &str) -> String {
    let (prefix, rest) = match s.find("://") {
        Some(i) => s.split_at(i + 3),
        None => ("", s),
    };
    let authority_end = if prefix.is_empty() {
        rest.len()
    } else {
        rest.find('/').unwrap_or(rest.len())
    };
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{prefix}***{}", &rest[at..]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> RedisUrl {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        s.parse::<RedisUrl>().unwrap_err().to_string()
    }

    #[test]
    fn ipv4_with_port() {
        let u = parse("redis://127.0.0.1:6380");
        assert_eq!(
            u,
            RedisUrl {
                tls: false,
                host: Host::Ip("127.0.0.1".parse().unwrap()),
                port: 6380,
                username: None,
                password: None,
                db: 0,
            }
        );
        assert_eq!(u.host_port(), "127.0.0.1:6380");
        assert_eq!(u.redacted(), "redis://127.0.0.1:6380/0");
    }

    #[test]
    fn default_port_and_db() {
        let u = parse("redis://cache.example.com");
        assert_eq!(u.host, Host::Name("cache.example.com".into()));
        assert_eq!(u.port, 6379);
        assert_eq!(u.db, 0);
        assert_eq!(u.host_port(), "cache.example.com:6379");
        assert_eq!(parse("redis://cache.example.com/").db, 0);
    }

    #[test]
    fn ipv6_bracketed() {
        let u = parse("redis://[::1]:7000/2");
        assert_eq!(u.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(u.port, 7000);
        assert_eq!(u.db, 2);
        assert_eq!(u.host_port(), "[::1]:7000");
        assert_eq!(u.host.to_string(), "::1");
        assert_eq!(parse("redis://[fdaa::3]").host_port(), "[fdaa::3]:6379");
    }

    #[test]
    fn hostname_fly_internal() {
        let u = parse("redis://lhr.my-redis.internal:6379");
        assert_eq!(u.host, Host::Name("lhr.my-redis.internal".into()));
        assert_eq!(u.host_port(), "lhr.my-redis.internal:6379");
    }

    #[test]
    fn user_and_password() {
        let u = parse("redis://default:s3cret@primary.example.internal:6379/0");
        assert_eq!(u.username.as_deref(), Some("default"));
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(
            u.redacted(),
            "redis://default:***@primary.example.internal:6379/0"
        );
        assert_eq!(u.to_string(), u.redacted());
    }

    #[test]
    fn password_only() {
        let u = parse("redis://:s3cret@10.0.0.1");
        assert_eq!(u.username, None);
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(u.redacted(), "redis://:***@10.0.0.1:6379/0");
    }

    #[test]
    fn percent_decoding() {
        let u = parse("redis://us%65r%3Ax:p%40ss%3Aw%2Fd%25@host:1/1");
        assert_eq!(u.username.as_deref(), Some("user:x"));
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("p@ss:w/d%"));
        // The user name is re-encoded so the redacted form parses back.
        assert_eq!(u.redacted(), "redis://user%3Ax:***@host:1/1");
        assert_eq!(parse(&u.redacted()).username.as_deref(), Some("user:x"));
        assert_eq!(
            err("redis://:bad%zz@host"),
            "invalid percent-encoding in password"
        );
        assert_eq!(
            err("redis://u%4:pw@host"),
            "invalid percent-encoding in username"
        );
        assert_eq!(
            err("redis://:%ff@host"),
            "invalid percent-encoding in password"
        );
    }

    #[test]
    fn raw_at_in_password_is_tolerated() {
        let u = parse("redis://:p@ss@host");
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert_eq!(u.host, Host::Name("host".into()));
    }

    #[test]
    fn database() {
        assert_eq!(parse("redis://h:1/15").db, 15);
        assert_eq!(err("redis://h:1/x"), "invalid database '/x'");
        assert_eq!(err("redis://h:1/1/2"), "invalid database '/1/2'");
        assert_eq!(err("redis://h:1/-1"), "invalid database '/-1'");
        assert_eq!(
            err("redis://h:1/99999999999"),
            "invalid database '/99999999999'"
        );
    }

    #[test]
    fn rediss() {
        let u = parse("rediss://default:pw@redis.example.com:6380");
        assert!(u.tls);
        assert_eq!(
            u.redacted(),
            "rediss://default:***@redis.example.com:6380/0"
        );
        assert!(parse("REDISS://h").tls);
    }

    #[test]
    fn bad_scheme() {
        assert_eq!(
            err("http://localhost:6379"),
            "unsupported scheme 'http' (expected redis:// or rediss://)"
        );
        assert_eq!(
            err("localhost:6379"),
            "missing scheme (expected redis:// or rediss://)"
        );
    }

    #[test]
    fn bad_port() {
        assert_eq!(err("redis://h:99999"), "invalid port '99999'");
        assert_eq!(err("redis://h:0"), "invalid port '0'");
        assert_eq!(err("redis://h:"), "invalid port ''");
        assert_eq!(err("redis://h:+1"), "invalid port '+1'");
        assert_eq!(err("redis://[::1]:x"), "invalid port 'x'");
    }

    #[test]
    fn bad_host() {
        assert_eq!(err("redis://"), "missing host");
        assert_eq!(err("redis:///0"), "missing host");
        assert_eq!(err("redis://:pw@"), "missing host");
        assert_eq!(err("redis://:6379"), "missing host");
        assert_eq!(err("redis://bad host"), "invalid host 'bad host'");
        assert_eq!(err("redis://a..b"), "invalid host 'a..b'");
        assert_eq!(
            err("redis://::1:6379"),
            "IPv6 address '::1:6379' must be written in brackets, e.g. [::1]:6379"
        );
        assert_eq!(err("redis://[::g]:1"), "invalid IPv6 address '[::g]'");
        assert_eq!(err("redis://[::1"), "invalid IPv6 address '[::1'");
        assert_eq!(err("redis://[::1]x"), "invalid host '[::1]x'");
    }

    #[test]
    fn query_and_fragment_rejected() {
        assert_eq!(
            err("redis://h:1/0?password=x"),
            "query parameters ('?...') are not supported"
        );
        assert_eq!(
            err("redis://h#frag"),
            "fragments ('#...') are not supported"
        );
    }

    #[test]
    fn username_without_password_rejected_without_echo() {
        let e = err("redis://hunter2@host");
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(
            e,
            "a username was given without a password (use redis://USER:PASSWORD@host or redis://:PASSWORD@host)"
        );
        assert_eq!(err("redis://user:@host"), e);
        let u = parse("redis://:@host");
        assert_eq!((u.username, u.password), (None, None));
    }

    #[test]
    fn debug_never_shows_password() {
        let u = parse("redis://admin:topsecret@h:1");
        let dbg = format!("{u:?}");
        assert!(!dbg.contains("topsecret"), "{dbg}");
        assert!(dbg.contains("***"), "{dbg}");
        assert!(!u.to_string().contains("topsecret"));
        let s = Secret::new("topsecret");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "topsecret");
    }

    #[test]
    fn loose_redaction() {
        assert_eq!(
            redact_loose("ams:redis://u:pw@h:1/0"),
            "ams:redis://***@h:1/0"
        );
        assert_eq!(redact_loose("pw@host"), "***@host");
        assert_eq!(redact_loose("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_loose("plain"), "plain");
    }
}
