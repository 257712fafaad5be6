//! A TCP proxy on a free loopback port in front of a real server, recording
//! what clients send, so tests can check what went over the wire.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Most bytes kept from the client side.
const RECORD_LIMIT: usize = 1024 * 1024;

/// A running recording proxy. It stops accepting when dropped.
#[derive(Debug)]
pub struct RecordingProxy {
    port: u16,
    recorded: Arc<Mutex<Vec<u8>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RecordingProxy {
    /// Starts a proxy forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rec, halt) = (recorded.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if halt.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let rec = rec.clone();
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                std::thread::spawn(move || pump(client, server, Some(rec)));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        Ok(RecordingProxy {
            port,
            recorded,
            stop,
        })
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything clients sent so far (up to 1 MiB), lossily as text.
    pub fn recorded(&self) -> String {
        let bytes = self.recorded.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Mutex<Vec<u8>>>>) {
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(record) = &record
            && let Ok(mut kept) = record.lock()
            && kept.len() < RECORD_LIMIT
        {
            let room = RECORD_LIMIT - kept.len();
            kept.extend_from_slice(&buffer[..n.min(room)]);
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
