//! TLS to Postgres, with libpq's meanings: `sslmode` (`disable`, `prefer`,
//! `require`, `verify-ca`, `verify-full`) and `sslrootcert`, from
//! `DATABASE_URL` or the `PGSSLMODE`/`PGSSLROOTCERT` environment variables.
//! One [`Tls`] value configures every session the relay opens: the pool
//! (tokio-postgres-rustls), the replication stream (pgwire-replication) and
//! migrations (sqlx), all on rustls with the ring provider.
//!
//! As in libpq, `prefer` (the default) tries TLS and falls back to plain,
//! `require` encrypts without checking the certificate unless a root
//! certificate is given (then it checks the chain, like `verify-ca`),
//! `verify-ca` checks the chain, and `verify-full` also checks that the
//! certificate names the host. Without `sslrootcert`, verification uses
//! `~/.postgresql/root.crt`; `sslrootcert=system` uses the Mozilla roots.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise (nothing verified).
    Prefer,
    /// TLS, certificate not verified (unless a root certificate is given).
    Require,
    /// TLS, certificate chain verified against the root certificate.
    VerifyCa,
    /// TLS, chain verified and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            ))
            }
        })
    }

    /// The name libpq uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where trusted root certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// The Mozilla roots (`sslrootcert=system`).
    System,
}

/// How the relay's sessions use TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// The mode, after libpq's rule that `require` with a root certificate
    /// verifies the chain.
    pub mode: SslMode,
    /// Trusted roots, when given.
    pub root_cert: Option<RootCert>,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            mode: SslMode::Prefer,
            root_cert: None,
        }
    }
}

impl Tls {
    /// Takes `sslmode` and `sslrootcert` out of a connection string (URL or
    /// key=value form), falling back to `PGSSLMODE`/`PGSSLROOTCERT`; returns
    /// the string without them (for tokio-postgres, which knows neither
    /// `verify-*` nor `sslrootcert`).
    pub fn extract(
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(String, Self), String> {
        let (rest, mut mode, mut root) = strip_params(url);
        if mode.is_none() {
            mode = env("PGSSLMODE").filter(|m| !m.is_empty());
        }
        if root.is_none() {
            root = env("PGSSLROOTCERT").filter(|r| !r.is_empty());
        }
        let mut mode = match mode {
            Some(mode) => SslMode::parse(&mode)?,
            None => SslMode::Prefer,
        };
        let root_cert = match root.as_deref() {
            Some("system") => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
            None => None,
        };
        if mode == SslMode::Require && matches!(root_cert, Some(RootCert::File(_))) {
            mode = SslMode::VerifyCa;
        }
        Ok((rest, Self { mode, root_cert }))
    }

    /// The tokio-postgres setting (`verify-*` encrypt like `require`; the
    /// connector does the verifying).
    pub fn pg_ssl_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self.mode {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }

    /// The connector for tokio-postgres sessions.
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        Ok(MakeRustlsConnect::new(self.client_config()?))
    }

    /// The rustls configuration for this mode.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        install_provider();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(AnyCertificate(provider))
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("TLS root certificates: {e}"))?;
                if self.mode == SslMode::VerifyCa {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    /// The replication stream's setting for a connection to `host`.
    pub fn replication(&self, host: &str) -> pgwire_replication::TlsConfig {
        use pgwire_replication::{SslMode as Repl, TlsConfig};
        install_provider();
        // No file: pgwire-replication verifies against the Mozilla roots.
        let ca = match &self.root_cert {
            Some(RootCert::File(path)) => Some(path.clone()),
            Some(RootCert::System) => None,
            None => default_root_file().filter(|p| p.exists()),
        };
        let mode = match self.mode {
            SslMode::Disable => Repl::Disable,
            SslMode::Prefer => Repl::Prefer,
            SslMode::Require => Repl::Require,
            SslMode::VerifyCa => Repl::VerifyCa,
            SslMode::VerifyFull => Repl::VerifyFull,
        };
        TlsConfig {
            mode,
            ca_pem_path: ca,
            // The name the certificate must carry; an IP address is checked
            // against the certificate's IP addresses, as libpq does.
            sni_hostname: (self.mode == SslMode::VerifyFull).then(|| host.to_string()),
            ..TlsConfig::default()
        }
    }

    /// The migration connection's setting.
    pub fn sqlx(
        &self,
        options: sqlx::postgres::PgConnectOptions,
    ) -> sqlx::postgres::PgConnectOptions {
        use sqlx::postgres::PgSslMode;
        let options = options.ssl_mode(match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
        match &self.root_cert {
            Some(RootCert::File(path)) => options.ssl_root_cert(path),
            _ => match default_root_file().filter(|p| p.exists()) {
                Some(path) => options.ssl_root_cert(path),
                None => options,
            },
        }
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        let path = match &self.root_cert {
            Some(RootCert::System) => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                return Ok(roots);
            }
            Some(RootCert::File(path)) => path.clone(),
            None => default_root_file().ok_or_else(|| {
                format!(
                    "sslmode={} needs sslrootcert (a CA file, or system)",
                    self.mode.name()
                )
            })?,
        };
        let certs = read_certificates(&path)?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "sslrootcert {}: no usable certificate",
                path.display()
            ));
        }
        Ok(roots)
    }
}

/// libpq's default root certificate file.
fn default_root_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql/root.crt"))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    Ok(certs)
}

/// rustls cannot pick a provider when more than one is compiled in (the
/// replication client's rustls brings another): ring is the process default.
fn install_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Splits `sslmode` and `sslrootcert` off a URL's query or a key=value
/// string. libpq's `target_session_attrs=primary` becomes `read-write`,
/// which is what tokio-postgres knows: both pick the host that accepts
/// writes.
fn strip_params(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut keep = |pair: &str, key: &str, value: &str| -> Option<String> {
        match key {
            "sslmode" => {
                mode = Some(value.to_string());
                None
            }
            "sslrootcert" => {
                root = Some(percent_decode(value));
                None
            }
            "target_session_attrs" if value == "primary" => Some(format!("{key}=read-write")),
            _ => Some(pair.to_string()),
        }
    };
    let trimmed = url.trim();
    let rest = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        match trimmed.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<String> = query
                    .split('&')
                    .filter_map(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        keep(pair, key, value)
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => trimmed.to_string(),
        }
    } else {
        trimmed
            .split_whitespace()
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                keep(pair, key.trim(), value.trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `require` without a root certificate: encrypted, the certificate taken
/// as it is (handshake signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the
/// certificate is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_urls_and_key_value_strings() {
        let (rest, tls) = Tls::extract(
            "postgres://u:p@db.example:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
            no_env,
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example:5432/app?application_name=x"
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(RootCert::File("/etc/ca.pem".into())));
        let (rest, tls) = Tls::extract("host=db sslmode=require dbname=app", no_env).unwrap();
        assert_eq!(rest, "host=db dbname=app");
        assert_eq!(tls.mode, SslMode::Require);
        assert!(Tls::extract("postgres://db/app?sslmode=sometimes", no_env).is_err());
    }

    #[test]
    fn target_session_attrs_primary_means_read_write() {
        let (rest, _) = Tls::extract(
            "postgres://u@h1:5432,h2:5433/app?target_session_attrs=primary&sslmode=disable",
            no_env,
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u@h1:5432,h2:5433/app?target_session_attrs=read-write"
        );
        let (rest, _) = Tls::extract(
            "host=h1,h2 target_session_attrs='primary' dbname=app",
            no_env,
        )
        .unwrap();
        assert_eq!(
            rest,
            "host=h1,h2 target_session_attrs=read-write dbname=app"
        );
    }

    #[test]
    fn libpq_defaults_and_environment() {
        let (_, tls) = Tls::extract("postgres://db/app", no_env).unwrap();
        assert_eq!(tls, Tls::default());
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("require".to_string()),
            "PGSSLROOTCERT" => Some("/ca.pem".to_string()),
            _ => None,
        };
        // require with a root certificate verifies the chain, as in libpq.
        let (_, tls) = Tls::extract("postgres://db/app", env).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        // The URL wins over the environment.
        let (_, tls) = Tls::extract("postgres://db/app?sslmode=disable", env).unwrap();
        assert_eq!(tls.mode, SslMode::Disable);
        let (_, tls) = Tls::extract(
            "postgres://db/app?sslmode=verify-full&sslrootcert=system",
            no_env,
        )
        .unwrap();
        assert_eq!(tls.root_cert, Some(RootCert::System));
    }
}
