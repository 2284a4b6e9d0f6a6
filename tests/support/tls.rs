//! Certificates for the TLS tests, made with `openssl`: a test CA and
//! certificates it signs.

use std::process::{Command, Stdio};

use super::TempDir;

/// A test CA and certificates it signed, in a directory of their own.
pub struct Certs {
    pub dir: TempDir,
}

pub fn openssl(dir: &str, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Certs {
    pub fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir.path())
    }

    /// Signs `name.pem` for `names` (DNS or IP SANs) with the key `name.key` (made with `keygen`).
    pub fn sign(&self, name: &str, names: &str, days: &str) {
        let d = self.dir.path();
        std::fs::write(self.path(&format!("{name}.ext")), format!("subjectAltName={names}\n")).unwrap();
        openssl(d, &["req", "-new", "-key", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={name}")]);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                days,
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

/// A CA, and `server.pem`/`server.key` for 127.0.0.1 and localhost.
pub fn certs() -> Certs {
    let dir = TempDir::new("tls");
    let d = &dir.path().to_string();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=ssehub test CA",
        ],
    );
    let certs = Certs { dir };
    openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "server.key"]);
    certs.sign("server", "DNS:localhost,IP:127.0.0.1", "30");
    certs
}
