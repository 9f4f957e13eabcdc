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
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::UrlError;

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

/// Root certificates that cannot be used: the file and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl SslMode {
    fn parse(text: &str) -> Result<Self, UrlError> {
        Ok(match text {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => return Err(UrlError::SslMode(other.to_string())),
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
    ) -> Result<(String, Self), UrlError> {
        let (rest, mut mode, mut root) = strip_params(url)?;
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
    pub fn connector(&self) -> Result<MakeRustlsConnect, TlsError> {
        Ok(MakeRustlsConnect::new(self.client_config()?))
    }

    /// The rustls configuration for this mode.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(Relaxed {
                provider,
                chain: None,
            }),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| TlsError(format!("TLS root certificates: {e}")))?;
                if self.mode == SslMode::VerifyCa {
                    Arc::new(Relaxed {
                        provider,
                        chain: Some(webpki),
                    })
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

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        let path = match &self.root_cert {
            Some(RootCert::System) => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                return Ok(roots);
            }
            Some(RootCert::File(path)) => path.clone(),
            None => default_root_file().ok_or_else(|| {
                TlsError(format!(
                    "sslmode={} needs sslrootcert (a CA file, or system)",
                    self.mode.name()
                ))
            })?,
        };
        let certs = read_certificates(&path)?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsError(format!(
                "sslrootcert {}: no usable certificate",
                path.display()
            )));
        }
        Ok(roots)
    }
}

/// libpq's default root certificate file.
fn default_root_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql/root.crt"))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let unusable =
        |e: rustls::pki_types::pem::Error| TlsError(format!("sslrootcert {}: {e}", path.display()));
    CertificateDer::pem_file_iter(path)
        .map_err(unusable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unusable)
}

/// Splits `sslmode` and `sslrootcert` off a URL's query or a key=value
/// string. libpq's `target_session_attrs=primary` becomes `read-write`,
/// which is what tokio-postgres knows: both pick the host that accepts
/// writes. The rest is left for `tokio_postgres::Config` to parse.
fn strip_params(conninfo: &str) -> Result<(String, Option<String>, Option<String>), UrlError> {
    let (mut mode, mut root) = (None, None);
    // Whether a parameter is kept for tokio-postgres, and with which value.
    let mut keep = |key: &str, value: &str| -> Option<String> {
        match key {
            "sslmode" => {
                mode = Some(value.to_string());
                None
            }
            "sslrootcert" => {
                root = Some(value.to_string());
                None
            }
            "target_session_attrs" if value == "primary" => Some("read-write".into()),
            _ => Some(value.to_string()),
        }
    };
    let trimmed = conninfo.trim();
    let rest = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let Some((base, query)) = trimmed.split_once('?') else {
            return Ok((trimmed.to_string(), None, None));
        };
        let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
        let kept: Vec<String> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let (key, value) = (decode(key), decode(value));
                // A kept parameter keeps its own encoding, unless it changed.
                keep(&key, &value).map(|kept| match kept == value {
                    true => pair.to_string(),
                    false => format!("{key}={kept}"),
                })
            })
            .collect();
        match kept.is_empty() {
            true => base.to_string(),
            false => format!("{base}?{}", kept.join("&")),
        }
    } else {
        conninfo_pairs(trimmed)?
            .into_iter()
            .filter_map(|(key, value)| keep(&key, &value).map(|kept| (key, kept)))
            .map(|(key, value)| {
                format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok((rest, mode, root))
}

/// The pairs of a libpq key=value connection string: `key = value`, where
/// a value is bare (up to whitespace) or single-quoted, with `\'` and `\\`
/// as escapes in either.
fn conninfo_pairs(text: &str) -> Result<Vec<(String, String)>, UrlError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_space(&mut chars);
        if chars.next() != Some('=') || key.is_empty() {
            return Err(UrlError::Invalid);
        }
        skip_space(&mut chars);
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\'') if quoted => break,
                Some('\\') => value.push(chars.next().ok_or(UrlError::Invalid)?),
                Some(c) if !quoted && c.is_whitespace() => break,
                Some(c) => value.push(c),
                None if quoted => return Err(UrlError::Invalid),
                None => break,
            }
        }
        pairs.push((key, value));
    }
}

/// The two modes libpq relaxes, as one verifier. `require` without a root
/// certificate (`chain: None`) takes the certificate as it is; `verify-ca`
/// requires the chain to lead to a trusted root but does not compare the
/// certificate's name with the host. Handshake signatures are checked in
/// both.
#[derive(Debug)]
struct Relaxed {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
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
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
        assert_eq!(rest, "host='db' dbname='app'");
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
            "host='h1,h2' target_session_attrs='read-write' dbname='app'"
        );
    }

    #[test]
    fn key_value_strings_keep_quoted_values_whole() {
        let (rest, tls) = Tls::extract(
            r"host = db password='a b\'c' sslrootcert='/etc/my ca.pem' dbname=app",
            no_env,
        )
        .unwrap();
        assert_eq!(rest, r"host='db' password='a b\'c' dbname='app'");
        assert_eq!(tls.root_cert, Some(RootCert::File("/etc/my ca.pem".into())));
        for broken in ["host=db password='open", "host", "=x", "host=db pass\\"] {
            assert!(Tls::extract(broken, no_env).is_err(), "{broken}");
        }
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
