//! `moto_server`, a real S3 server, on a free loopback port. One server is
//! shared by the tests of a binary; a watchdog shell stops it when the test
//! process ends, and dropping a server started by `start` stops it at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::watchdog::Watched;
use crate::{free_port, require_program};

/// moto's own application, served on threads but handled one request at
/// a time (arguments: host, port).
const SERIAL_MOTO: &str = "\
import io, sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
def serial(environ, start_response):
    # The body is read before the turn is taken: a slow or stalled upload
    # must not hold up every other request.
    length = environ.get('CONTENT_LENGTH')
    if length:
        body = environ['wsgi.input'].read(int(length))
    elif 'chunked' in environ.get('HTTP_TRANSFER_ENCODING', ''):
        body = environ['wsgi.input'].read()
        environ['CONTENT_LENGTH'] = str(len(body))
    else:
        body = b''
    environ['wsgi.input'] = io.BytesIO(body)
    with lock:
        return list(app(environ, start_response))
run_simple(sys.argv[1], int(sys.argv[2]), serial, threaded=True)
";

/// How to install the server, for the failure message.
pub(crate) const INSTALL: &str = "python3 -m pip install 'moto[server]'";

/// A running `moto_server`.
#[derive(Debug)]
pub struct MotoServer {
    _process: Watched,
    _log_dir: tempfile::TempDir,
    port: u16,
}

impl MotoServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with_env(&[])
    }

    /// Starts a server that checks credentials: requests signed with keys
    /// it does not know are refused (403 `InvalidAccessKeyId`).
    pub fn start_checking_credentials() -> std::io::Result<Self> {
        Self::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_with_env(env: &[(&str, &str)]) -> std::io::Result<Self> {
        // moto checks If-Match / If-None-Match and then writes, without a
        // lock, while serving requests on many threads: two conditional
        // writes can both pass (a lost update no real S3 allows). Serving
        // its application one request at a time restores the atomicity the
        // tests rely on; everything else is moto as shipped. Bodies are
        // read before a request's turn, so one slow upload (a throttled
        // or stalled test) does not stop the server for every other test.
        require_program("moto_server", INSTALL);
        let python = require_program("python3", "apt-get install -y python3");
        let port = free_port()?;
        let log_dir = tempfile::tempdir()?;
        let port_text = port.to_string();
        let process = Watched::spawn(
            &python,
            &["-c", SERIAL_MOTO, "127.0.0.1", &port_text],
            env,
            &log_dir.path().join("moto.log"),
            log_dir.path(),
        )?;
        let server = MotoServer {
            _process: process,
            _log_dir: log_dir,
            port,
        };
        server.wait_ready(Duration::from_secs(60))?;
        Ok(server)
    }

    /// The server shared by every test of this binary.
    pub fn shared() -> &'static MotoServer {
        static SERVER: OnceLock<MotoServer> = OnceLock::new();
        SERVER.get_or_init(|| {
            MotoServer::start().unwrap_or_else(|e| panic!("cannot start moto_server: {e}"))
        })
    }

    fn wait_ready(&self, limit: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            // Any HTTP answer means up (a server checking credentials
            // answers an unsigned request with 500).
            if self.request("GET", "/").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "moto_server did not answer on port {} within {limit:?}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a bucket (path-style `PUT /name`; moto needs no signature).
    pub fn create_bucket(&self, name: &str) -> std::io::Result<()> {
        let status = self.request("PUT", &format!("/{name}"))?;
        if status == 200 || status == 409 {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "creating bucket {name} answered HTTP {status}"
            )))
        }
    }

    /// The multipart uploads open in `bucket` under `prefix` (moto's
    /// `ListMultipartUploads`, which asks for no signature).
    pub fn open_uploads(&self, bucket: &str, prefix: &str) -> std::io::Result<usize> {
        let (status, body) = self.exchange("GET", &format!("/{bucket}?uploads&prefix={prefix}"))?;
        if status != 200 {
            return Err(std::io::Error::other(format!(
                "listing the uploads of {bucket} answered HTTP {status}: {body:.200}"
            )));
        }
        Ok(body.matches("<UploadId>").count())
    }

    /// One bodiless HTTP/1.1 request; returns the status code.
    fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        self.exchange(method, path).map(|(status, _)| status)
    }

    /// One bodiless HTTP/1.1 request; returns the status code and what
    /// followed the head.
    fn exchange(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.80}")))?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, body)| body.to_owned());
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_upload_does_not_stop_the_server() {
        let server = MotoServer::start().expect("moto_server");
        server.create_bucket("stalled").expect("bucket");
        // An upload that announces a megabyte, sends a little, then waits.
        let mut stalled = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
        write!(
            stalled,
            "PUT /stalled/object HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048576\r\n\r\n"
        )
        .expect("head");
        stalled.write_all(&[7u8; 4096]).expect("some of the body");
        std::thread::sleep(Duration::from_millis(200));
        // Another request is answered meanwhile (it would time out after
        // 10 s if the stalled one held the server's turn).
        assert_eq!(server.request("GET", "/stalled").expect("listing"), 200);
        drop(stalled);
    }
}
