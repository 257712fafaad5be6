//! HTTPS (rustls): a listener whose TLS handshakes run beside the accept
//! loop (a slow client holds no other), whose certificate and key are read
//! again on [`TlsListener::reload`] (the CLI calls it on `SIGHUP`), and
//! which asks for client certificates from a given CA when told to.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM files of the server's TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA certificates client certificates must chain to; none are asked
    /// for when absent.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The rustls configuration the files make.
    fn config(&self) -> Result<rustls::ServerConfig, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| format!("reading {}: {e}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("reading {}: {e}", self.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{} holds no certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("reading the key {}: {e}", self.key.display()))?;
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("reading {}: {e}", ca.display()))?
                {
                    let cert = cert.map_err(|e| format!("reading {}: {e}", ca.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("a CA certificate in {}: {e}", ca.display()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| format!("client certificates from {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("{} with {}: {e}", self.cert.display(), self.key.display()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Connections that finished their handshake.
type Ready = (
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    std::net::SocketAddr,
);

/// A TLS listener for [`crate::Server::serve_tls`].
pub struct TlsListener {
    address: std::net::SocketAddr,
    ready: tokio::sync::mpsc::Receiver<Ready>,
    acceptor: Arc<RwLock<tokio_rustls::TlsAcceptor>>,
    files: TlsFiles,
    task: tokio::task::JoinHandle<()>,
}

/// Reads the TLS files again for the connections that come next.
#[derive(Clone)]
pub struct Reloader {
    acceptor: Arc<RwLock<tokio_rustls::TlsAcceptor>>,
    files: TlsFiles,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("address", &self.address)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// Reads the certificate, key and client CA again; on an error the
    /// files in use stay, and the error says what was wrong.
    pub fn reload(&self) -> Result<(), String> {
        let config = self.files.config()?;
        let mut acceptor = self
            .acceptor
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Ok(())
    }
}

impl TlsListener {
    /// TLS with `files` over `listener`.
    pub fn new(listener: tokio::net::TcpListener, files: TlsFiles) -> Result<Self, String> {
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let acceptor = Arc::new(RwLock::new(tokio_rustls::TlsAcceptor::from(Arc::new(
            files.config()?,
        ))));
        let (done, ready) = tokio::sync::mpsc::channel(64);
        let shared = acceptor.clone();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = shared
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(30),
                        acceptor.accept(tcp),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            address,
            ready,
            acceptor,
            files,
            task,
        })
    }

    /// What reads the files again (on `SIGHUP`).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            acceptor: self.acceptor.clone(),
            files: self.files.clone(),
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept loop ended: nothing will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.address)
    }
}
