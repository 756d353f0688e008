//! TLS material the local brokers do not trust, for the tests of wrong-CA and foreign
//! client-certificate failures.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA unknown to the local servers and a client certificate it signed (PEM files).
pub struct ForeignCa {
    /// The CA certificate.
    pub ca: PathBuf,
    /// A client certificate signed by that CA (`CN=crbridge`, clientAuth).
    pub cert: PathBuf,
    /// The client certificate's key.
    pub key: PathBuf,
}

/// Makes a [`ForeignCa`] with openssl in `dir` (created if missing).
pub fn foreign_ca(dir: &Path) -> ForeignCa {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=crbridge test other CA",
        "-keyout",
        "other-ca.key",
        "-out",
        "other-ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=crbridge",
        "-keyout",
        "other-client.key",
        "-out",
        "other-client.csr",
    ]);
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "other-client.csr",
        "-CA",
        "other-ca.crt",
        "-CAkey",
        "other-ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "client.ext",
        "-out",
        "other-client.crt",
    ]);
    ForeignCa {
        ca: dir.join("other-ca.crt"),
        cert: dir.join("other-client.crt"),
        key: dir.join("other-client.key"),
    }
}
