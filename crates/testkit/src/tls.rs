//! Throwaway TLS material made with `openssl`: a CA, a server certificate for 127.0.0.1 (also
//! valid as a client certificate, as Redis replicas and sentinels present theirs) and a client
//! certificate for mutual TLS, in a temporary directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    /// A fresh CA and the certificates it signs (EC P-256, valid two days).
    pub fn generate() -> Self {
        let openssl = crate::require_program(
            "openssl",
            "run `scripts/ensure-deps.sh openssl` or `apt-get install openssl`",
        );
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let run = |args: &[&str]| {
            let output =
                Command::new(&openssl).args(args).current_dir(dir.path()).output().expect("run openssl");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=sse-relay test CA"],
        ]
        .concat());
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("write server.ext");
        std::fs::write(dir.path().join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("write client.ext");
        for (name, subject) in [("server", "/CN=127.0.0.1"), ("client", "/CN=sse-relay test client")] {
            let (key, csr, crt, ext) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
            run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", subject]].concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Self { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.file("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
