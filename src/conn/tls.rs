//! Upstream TLS (`rediss://`): one rustls client configuration per
//! sidecar, built from [`TlsConfig`], and the handshake on a connected
//! socket.
//!
//! Trust roots are the `--tls-ca-file` certificates when given, otherwise
//! the public web PKI roots (webpki-roots). `--tls-cert-file` and
//! `--tls-key-file` add a client certificate (mutual TLS). The crypto
//! provider is always ring, with rustls's safe default protocol versions
//! (TLS 1.2 and 1.3).
//!
//! [`Tls::new`] builds the configuration at startup and reports a bad file
//! there; [`Tls::reload`] replaces it on SIGHUP, or keeps it on error.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::TlsConfig;
use crate::url::Host;

/// The TLS client settings of one sidecar: the built configuration and the
/// name to verify instead of the URL host. Replaced whole on a reload that
/// brings valid files; connections already open keep theirs.
pub struct Tls {
    state: Mutex<Arc<State>>,
}

struct State {
    client: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl Tls {
    /// Builds the configuration from `cfg`; the error names the file and
    /// what is wrong with it.
    pub fn new(cfg: &TlsConfig) -> Result<Tls, String> {
        Ok(Tls {
            state: Mutex::new(Arc::new(State {
                client: build(cfg)?,
                server_name: cfg.server_name.clone(),
            })),
        })
    }

    /// A reload: on error the running configuration stays (a bad reload
    /// does not break TLS).
    pub fn reload(&self, cfg: &TlsConfig) -> Result<(), String> {
        let next = Arc::new(State {
            client: build(cfg)?,
            server_name: cfg.server_name.clone(),
        });
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    fn state(&self) -> Arc<State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs the TLS handshake on `tcp`, verifying the server as
    /// [`server_name`] describes. The error says whether the configuration
    /// (the server name) or the handshake (certificate, protocol, I/O)
    /// failed. No timeout here: the caller bounds it.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &Host,
    ) -> Result<TlsStream<TcpStream>, String> {
        let state = self.state();
        let name = server_name(host, state.server_name.as_deref())?;
        let shown = name.to_str().into_owned();
        TlsConnector::from(state.client.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake with {shown} failed: {e}"))
    }
}

/// Builds a client configuration: ring, safe default protocol versions,
/// the roots and the optional client certificate from `cfg`.
pub fn build(cfg: &TlsConfig) -> Result<Arc<ClientConfig>, String> {
    let roots = match &cfg.ca_file {
        Some(path) => load_roots(path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: no usable protocol version: {e}"))?
        .with_root_certificates(roots);
    let config = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert, "--tls-cert-file")?;
            let key_der = load_key(key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "--tls-key-file {}: does not fit the certificate in {}: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
        // The configuration check rejects a certificate without a key and
        // the reverse; a half pair here is ignored like an absent one.
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Reads a PEM file whole, naming the flag and the path on failure.
fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))
}

/// Every `CERTIFICATE` section of a PEM file; at least one.
fn load_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no CERTIFICATE found in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The CA file's certificates as trust anchors; every one must parse.
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let flag = "--tls-ca-file";
    let mut roots = RootCertStore::empty();
    for (i, cert) in load_certs(path, flag)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "{flag} {}: certificate #{} is not a usable trust anchor: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(roots)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let flag = "--tls-key-file";
    let pem = read(path, flag)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "{flag} {}: no private key (PKCS#8, PKCS#1 or SEC1 PEM) found in the file",
            path.display()
        ),
        e => format!("{flag} {}: not valid PEM: {e}", path.display()),
    })
}

/// The name a server certificate is verified against (and sent as SNI when
/// it is a DNS name): `server_name` when set, else the URL host. An IP
/// address, literal or as the override, is matched against IP SANs.
pub fn server_name(host: &Host, server_name: Option<&str>) -> Result<ServerName<'static>, String> {
    let text = match (server_name, host) {
        (Some(name), _) => name.trim().to_string(),
        (None, Host::Ip(ip)) => return Ok(ServerName::IpAddress((*ip).into())),
        (None, Host::Name(name)) => name.clone(),
    };
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(text.clone())
        .map_err(|e| format!("{text:?} is not a valid TLS server name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tmp_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn default_uses_public_roots() {
        assert!(build(&TlsConfig::default()).is_ok());
    }

    #[test]
    fn missing_ca_file_names_the_path() {
        let cfg = TlsConfig {
            ca_file: Some("/nonexistent/nearby-ca.pem".into()),
            ..TlsConfig::default()
        };
        let e = build(&cfg).unwrap_err();
        assert!(
            e.starts_with("--tls-ca-file /nonexistent/nearby-ca.pem: cannot read it:"),
            "{e}"
        );
    }

    #[test]
    fn ca_file_without_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let p = tmp_file(&dir, "empty-ca.pem", "not a certificate\n");
        let cfg = TlsConfig {
            ca_file: Some(p.clone()),
            ..TlsConfig::default()
        };
        let e = build(&cfg).unwrap_err();
        assert_eq!(
            e,
            format!(
                "--tls-ca-file {}: no CERTIFICATE found in the file",
                p.display()
            )
        );
    }

    #[test]
    fn key_file_without_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = tmp_file(
            &dir,
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let key = tmp_file(&dir, "nokey.pem", "nothing here\n");
        let cfg = TlsConfig {
            cert_file: Some(cert),
            key_file: Some(key.clone()),
            ..TlsConfig::default()
        };
        let e = build(&cfg).unwrap_err();
        assert!(
            e.starts_with(&format!("--tls-key-file {}: no private key", key.display())),
            "{e}"
        );
    }

    #[test]
    fn server_names() {
        let ip = Host::Ip("127.0.0.1".parse().unwrap());
        let name = Host::Name("redis.internal".into());
        assert!(matches!(
            server_name(&ip, None).unwrap(),
            ServerName::IpAddress(_)
        ));
        assert_eq!(server_name(&name, None).unwrap().to_str(), "redis.internal");
        assert_eq!(
            server_name(&ip, Some("redis.test")).unwrap().to_str(),
            "redis.test"
        );
        assert!(matches!(
            server_name(&name, Some("::1")).unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(server_name(&name, Some("bad name!")).is_err());
    }
}
