//! Test certificates, made with the `openssl` command: a certificate
//! authority, a server certificate it signed for `127.0.0.1` and
//! `localhost`, and an unrelated authority (a wrong `sslrootcert`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::TlsFiles;

/// Certificates written to a directory.
#[derive(Clone, Debug)]
pub struct TestCerts {
    /// The authority that signed the server certificate.
    pub ca: PathBuf,
    /// An authority that signed nothing here.
    pub other_ca: PathBuf,
    /// The server's certificate and key.
    pub server: TlsFiles,
}

impl TestCerts {
    /// Writes fresh certificates (P-256 keys, valid for two days) to `dir`.
    pub fn generate(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let file = |name: &str| dir.join(name);
        for name in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=rowcast test {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                path(&file(&format!("{name}.key"))),
                "-out",
                path(&file(&format!("{name}.crt"))),
            ])?;
        }
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            path(&file("server.key")),
            "-out",
            path(&file("server.csr")),
        ])?;
        let extensions = file("server.ext");
        std::fs::write(
            &extensions,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .map_err(|e| e.to_string())?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            path(&file("server.csr")),
            "-CA",
            path(&file("ca.crt")),
            "-CAkey",
            path(&file("ca.key")),
            "-CAcreateserial",
            "-extfile",
            path(&extensions),
            "-out",
            path(&file("server.crt")),
        ])?;
        Ok(Self {
            ca: file("ca.crt"),
            other_ca: file("other-ca.crt"),
            server: TlsFiles {
                cert: file("server.crt"),
                key: file("server.key"),
            },
        })
    }
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

fn openssl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
