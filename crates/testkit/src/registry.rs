//! Debian's `docker-registry` (CNCF distribution 2.8) on a free loopback
//! port with its own configuration and temporary storage — never the
//! packaged service. Plain, or with htpasswd basic auth.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::token::{ISSUER, SERVICE, TokenIssuer};
use crate::watchdog::Watched;
use crate::{free_port, require_program};

const INSTALL: &str = "apt-get install -y docker-registry";

/// A running registry.
#[derive(Debug)]
pub struct RegistryServer {
    _process: Watched,
    dir: tempfile::TempDir,
    port: u16,
    credentials: Option<(String, String)>,
    issuer: Option<TokenIssuer>,
    ca_file: Option<std::path::PathBuf>,
}

/// How a registry is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Htpasswd,
    Token,
    Tls,
    /// TLS, and only clients with a certificate the test CA signed.
    MutualTls,
}

impl RegistryServer {
    /// A registry without authentication.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(None, Mode::Plain)
    }

    /// A registry without authentication that speaks only HTTPS, with a
    /// certificate for `127.0.0.1` and `localhost` signed by a fresh test
    /// CA (see [`RegistryServer::ca_file`]).
    pub fn start_tls() -> std::io::Result<Self> {
        Self::start_with(None, Mode::Tls)
    }

    /// Like [`RegistryServer::start_tls`], and the registry accepts only
    /// clients presenting a certificate the same CA signed (see
    /// [`RegistryServer::client_identity`]).
    pub fn start_mutual_tls() -> std::io::Result<Self> {
        Self::start_with(None, Mode::MutualTls)
    }

    /// A client certificate and key (PEM files) a mutual-TLS registry
    /// accepts.
    pub fn client_identity(&self) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let (cert, key) = (
            self.dir.path().join("client.pem"),
            self.dir.path().join("client.key"),
        );
        (cert.exists() && key.exists()).then_some((cert, key))
    }

    /// The PEM file of the CA that signed a TLS registry's certificate.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// The refresh ("identity") token the issuer of a token registry
    /// accepts in the OAuth2 `refresh_token` grant.
    pub fn identity_token(&self) -> Option<&str> {
        self.issuer.as_ref().map(|i| i.refresh_token.as_str())
    }

    /// A registry that requires `user`/`password` (htpasswd, bcrypt).
    pub fn start_htpasswd(user: &str, password: &str) -> std::io::Result<Self> {
        Self::start_with(Some((user.to_owned(), password.to_owned())), Mode::Htpasswd)
    }

    /// A registry with token auth (`auth: token`): clients get bearer
    /// tokens from a small issuer that accepts `user`/`password`.
    pub fn start_token(user: &str, password: &str) -> std::io::Result<Self> {
        Self::start_with(Some((user.to_owned(), password.to_owned())), Mode::Token)
    }

    /// Tokens the issuer handed out (token registries only).
    pub fn tokens_issued(&self) -> Option<u32> {
        self.issuer.as_ref().map(TokenIssuer::issued)
    }

    /// The plain registry shared by the tests of this binary.
    pub fn shared() -> &'static RegistryServer {
        static SERVER: OnceLock<RegistryServer> = OnceLock::new();
        SERVER.get_or_init(|| {
            RegistryServer::start().unwrap_or_else(|e| panic!("cannot start docker-registry: {e}"))
        })
    }

    /// The htpasswd registry shared by the tests of this binary
    /// (user `orca`, password `orca-password`).
    pub fn shared_htpasswd() -> &'static RegistryServer {
        static SERVER: OnceLock<RegistryServer> = OnceLock::new();
        SERVER.get_or_init(|| {
            RegistryServer::start_htpasswd("orca", "orca-password")
                .unwrap_or_else(|e| panic!("cannot start docker-registry with htpasswd: {e}"))
        })
    }

    fn start_with(credentials: Option<(String, String)>, mode: Mode) -> std::io::Result<Self> {
        let program = require_program("docker-registry", INSTALL);
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: orca-test-secret\n",
            root = dir.path().join("data").display(),
        );
        let mut issuer = None;
        let mut ca_file = None;
        if matches!(mode, Mode::Tls | Mode::MutualTls) {
            let (ca, certificate, key) = tls_files(dir.path())?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certificate.display(),
                key.display()
            ));
            if mode == Mode::MutualTls {
                config.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
            ca_file = Some(ca);
        }
        if let (Mode::Token, Some((user, password))) = (mode, &credentials) {
            let started = TokenIssuer::start(user, password)?;
            let bundle = dir.path().join("token.pem");
            std::fs::write(&bundle, &started.certificate_pem)?;
            config.push_str(&format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                started.port,
                bundle.display()
            ));
            issuer = Some(started);
        } else if let Some((user, password)) = &credentials {
            let htpasswd = require_program("htpasswd", "apt-get install -y apache2-utils");
            let output = Command::new(htpasswd)
                .args(["-Bbn", user, password])
                .output()?;
            if !output.status.success() {
                return Err(std::io::Error::other("htpasswd failed"));
            }
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &output.stdout)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: orca-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let config_arg = config_path.display().to_string();
        let process = Watched::spawn(
            &program,
            &["serve", &config_arg],
            &[],
            &dir.path().join("registry.log"),
            dir.path(),
        )?;
        let server = RegistryServer {
            _process: process,
            dir,
            port,
            credentials,
            issuer,
            ca_file,
        };
        server.wait_ready(Duration::from_secs(30))?;
        Ok(server)
    }

    fn wait_ready(&self, limit: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.ping().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("registry.log"))
                    .unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "docker-registry did not answer on port {} within {limit:?}; its log:\n{log}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ping(&self) -> std::io::Result<()> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        // A TLS listener answers plain HTTP with a 400 in HTTP/1.0.
        if response.starts_with(b"HTTP/1.") {
            Ok(())
        } else {
            Err(std::io::Error::other("not an HTTP answer"))
        }
    }

    /// What the registry logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`, as a registry host in references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Upload sessions the registry holds open for `repository`: the
    /// directories under the repository's `_uploads` that still hold data
    /// or a start time. (A cancelled session leaves only its `hashstates`
    /// behind on distribution 2.8; that is the registry's leftover, not an
    /// open session.)
    pub fn upload_sessions(&self, repository: &str) -> usize {
        let dir = self
            .dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repository)
            .join("_uploads");
        std::fs::read_dir(&dir).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("data").exists() || e.path().join("startedat").exists())
                .count()
        })
    }

    /// The user and password, for a registry started with htpasswd.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }
}

/// Writes a test CA and a server certificate for `127.0.0.1`/`localhost`
/// signed by it (and a client certificate, `client.pem`/`client.key`);
/// returns the CA, certificate and key paths.
pub fn tls_files(
    dir: &std::path::Path,
) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let other = |e: rcgen::Error| std::io::Error::other(e.to_string());
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).map_err(other)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "orca test CA");
    let ca_key = rcgen::KeyPair::generate().map_err(other)?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(other)?;
    let server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(other)?;
    let server_key = rcgen::KeyPair::generate().map_err(other)?;
    let server = server_params.signed_by(&server_key, &ca).map_err(other)?;
    // A client certificate too, for registries that ask for one.
    let mut client_params = rcgen::CertificateParams::new(Vec::new()).map_err(other)?;
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "orca test client");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = rcgen::KeyPair::generate().map_err(other)?;
    let client = client_params.signed_by(&client_key, &ca).map_err(other)?;
    std::fs::write(dir.join("client.pem"), client.pem())?;
    std::fs::write(dir.join("client.key"), client_key.serialize_pem())?;
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem())?;
    std::fs::write(&paths.1, server.pem())?;
    std::fs::write(&paths.2, server_key.serialize_pem())?;
    Ok(paths)
}
