//! A throwaway CA and a server certificate for 127.0.0.1, made by `openssl`, for the TLS tests;
//! and the rustls provider every test's `reqwest::Client` needs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Makes ring the process's rustls provider, which every `reqwest::Client` built without a TLS
/// config of its own needs (the workspace builds reqwest with `rustls-no-provider`). Call it
/// before building one; a second call changes nothing.
pub fn install_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A fresh test CA and a server certificate for 127.0.0.1 that it signed, made by `openssl`
/// as PEM files in a directory of their own.
pub struct TestCertificates {
    /// The CA's certificate: what a client must trust.
    pub ca_file: PathBuf,
    /// The same, read.
    pub ca_pem: Vec<u8>,
    /// The server's certificate (subjectAltName IP:127.0.0.1).
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestCertificates {
    /// A CA and a server certificate in a new temporary directory.
    pub fn create() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for certificates");
        let mut certificates = Self::create_in(dir.path());
        certificates._dir = Some(dir);
        certificates
    }

    /// A CA and a server certificate in `dir`.
    pub(crate) fn create_in(dir: &Path) -> Self {
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl must be installed");
            assert!(status.success(), "openssl {args:?} failed");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=guestbook test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n")
            .expect("write san.cnf");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ]);
        let ca_file = dir.join("ca.pem");
        Self {
            ca_pem: std::fs::read(&ca_file).expect("read ca.pem"),
            ca_file,
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            _dir: None,
        }
    }
}
