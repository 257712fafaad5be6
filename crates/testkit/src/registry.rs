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
}

impl RegistryServer {
    /// A registry without authentication.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(None, false)
    }

    /// A registry that requires `user`/`password` (htpasswd, bcrypt).
    pub fn start_htpasswd(user: &str, password: &str) -> std::io::Result<Self> {
        Self::start_with(Some((user.to_owned(), password.to_owned())), false)
    }

    /// A registry with token auth (`auth: token`): clients get bearer
    /// tokens from a small issuer that accepts `user`/`password`.
    pub fn start_token(user: &str, password: &str) -> std::io::Result<Self> {
        Self::start_with(Some((user.to_owned(), password.to_owned())), true)
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

    fn start_with(credentials: Option<(String, String)>, token: bool) -> std::io::Result<Self> {
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
        if let (true, Some((user, password))) = (token, &credentials) {
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
        )?;
        let server = RegistryServer {
            _process: process,
            dir,
            port,
            credentials,
            issuer,
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
        if response.starts_with(b"HTTP/1.1") {
            Ok(())
        } else {
            Err(std::io::Error::other("not an HTTP answer"))
        }
    }

    /// `127.0.0.1:PORT`, as a registry host in references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user and password, for a registry started with htpasswd.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }
}
