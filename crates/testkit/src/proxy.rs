//! A TCP proxy on a free loopback port in front of a real server. It
//! records what clients send, and can inject faults: answer some requests
//! with an error status, cut responses after some bytes, stall them
//! (stop sending, connection open), flip a byte of a response body — each
//! a bounded number of times — or add a header to some responses.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Most bytes kept from the client side.
const RECORD_LIMIT: usize = 4 * 1024 * 1024;

/// Faults a [`RecordingProxy`] injects.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer requests whose first line contains this text with this
    /// status (and close), this many times.
    pub fail_requests: Option<(String, u16, u32)>,
    /// Close a connection after this many response bytes, this many times
    /// (small responses never reach the mark).
    pub cut_after: Option<(u64, u32)>,
    /// Flip the response body byte at this offset, this many times.
    pub corrupt_at: Option<(u64, u32)>,
    /// Stop sending (keeping the connection open, as a stuck load balancer
    /// does) after this many response bytes, this many times; 0 stalls
    /// before the response head.
    pub stall_after: Option<(u64, u32)>,
    /// Add this header line (`Name: value`) to the responses of requests
    /// whose first line contains the text.
    pub add_header: Option<(String, String)>,
    /// Forward requests whose first line contains the text to the server,
    /// but drop the server's answer and close the connection (the request
    /// took effect; the client never hears so), this many times.
    pub lose_answers: Option<(String, u32)>,
    /// Forward what clients send at most this many bytes a second (a slow
    /// uplink), on every connection.
    pub throttle_up: Option<u64>,
    /// Forward what clients send at most this many bytes a second on all
    /// connections together (one slow uplink that parallel uploads share).
    pub link_up: Option<u64>,
    /// Forward what the server sends at most this many bytes a second on
    /// all connections together (one slow downlink).
    pub link_down: Option<u64>,
    /// Of requests whose first line contains the text, forward only this
    /// many bytes of the body, then stop — both ways — keeping the
    /// connection open until the client gives up (a link that stalls in
    /// the middle of an upload), this many times.
    pub stall_uploads: Option<(String, u64, u32)>,
    /// Remove these request headers (lowercase names) before forwarding:
    /// a server or gateway that ignores them.
    pub drop_request_headers: Vec<String>,
}

#[derive(Debug, Default)]
struct Budget {
    fail: AtomicU32,
    cut: AtomicU32,
    corrupt: AtomicU32,
    stall: AtomicU32,
    lose: AtomicU32,
    silence: AtomicU32,
}

impl Budget {
    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A running proxy. It stops accepting when dropped.
#[derive(Debug)]
pub struct RecordingProxy {
    port: u16,
    shared: Arc<Shared>,
    recorded: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Shared {
    upstream: u16,
    faults: Faults,
    budget: Budget,
    recorded: Arc<Mutex<Vec<u8>>>,
    /// When the shared uplink (`link_up`) is next free.
    link_free: Mutex<std::time::Instant>,
    /// When the shared downlink (`link_down`) is next free.
    down_free: Mutex<std::time::Instant>,
}

impl RecordingProxy {
    /// Starts a proxy forwarding to `127.0.0.1:upstream`, recording only.
    pub fn start(upstream: u16) -> std::io::Result<Self> {
        Self::with_faults(upstream, Faults::default())
    }

    /// Starts a proxy forwarding to `127.0.0.1:upstream` with `faults`.
    pub fn with_faults(upstream: u16, faults: Faults) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let budget = Budget {
            fail: AtomicU32::new(faults.fail_requests.as_ref().map_or(0, |f| f.2)),
            cut: AtomicU32::new(faults.cut_after.map_or(0, |f| f.1)),
            corrupt: AtomicU32::new(faults.corrupt_at.map_or(0, |f| f.1)),
            stall: AtomicU32::new(faults.stall_after.map_or(0, |f| f.1)),
            lose: AtomicU32::new(faults.lose_answers.as_ref().map_or(0, |f| f.1)),
            silence: AtomicU32::new(faults.stall_uploads.as_ref().map_or(0, |f| f.2)),
        };
        let shared = Arc::new(Shared {
            upstream,
            faults,
            budget,
            recorded: recorded.clone(),
            link_free: Mutex::new(std::time::Instant::now()),
            down_free: Mutex::new(std::time::Instant::now()),
        });
        let halt = stop.clone();
        let kept = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(client, &shared));
            }
        });
        Ok(RecordingProxy {
            port,
            shared: kept,
            recorded,
            stop,
        })
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many of the `stall_uploads` faults are still to come.
    pub fn stall_uploads_left(&self) -> u32 {
        self.shared.budget.silence.load(Ordering::SeqCst)
    }

    /// Everything clients sent so far (up to 4 MiB), lossily as text.
    pub fn recorded(&self) -> String {
        let bytes = self.recorded.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn record(shared: &Shared, bytes: &[u8]) {
    if let Ok(mut kept) = shared.recorded.lock()
        && kept.len() < RECORD_LIMIT
    {
        let room = RECORD_LIMIT - kept.len();
        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

fn serve(mut client: TcpStream, shared: &Shared) {
    // Read the first request's head to decide on request faults.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    record(shared, &head);
    if let Some((pattern, status, _)) = &shared.faults.fail_requests {
        let first_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        if String::from_utf8_lossy(first_line).contains(pattern.as_str())
            && Budget::take(&shared.budget.fail)
        {
            // An `add_header` meant for this request comes with it (a
            // `Retry-After` on a 429).
            let extra = match &shared.faults.add_header {
                Some((text, line))
                    if String::from_utf8_lossy(first_line).contains(text.as_str()) =>
                {
                    format!("{line}\r\n")
                }
                _ => String::new(),
            };
            let _ = write!(
                client,
                "HTTP/1.1 {status} Injected\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", shared.upstream)) else {
        return;
    };
    // One request per connection, so every request's head passes here.
    if server
        .write_all(&close_after(&head, &shared.faults.drop_request_headers))
        .is_err()
    {
        return;
    }
    let (Ok(client_read), Ok(server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let first_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let extra = shared
        .faults
        .add_header
        .as_ref()
        .filter(|(pattern, _)| String::from_utf8_lossy(first_line).contains(pattern.as_str()))
        .map(|(_, line)| line.clone());
    let lose = shared
        .faults
        .lose_answers
        .as_ref()
        .is_some_and(|(pattern, _)| String::from_utf8_lossy(first_line).contains(pattern.as_str()))
        && Budget::take(&shared.budget.lose);
    let stalled_after = shared
        .faults
        .stall_uploads
        .as_ref()
        .filter(|(pattern, ..)| String::from_utf8_lossy(first_line).contains(pattern.as_str()))
        .filter(|_| Budget::take(&shared.budget.silence))
        .map(|(_, after, _)| *after);
    std::thread::scope(|scope| {
        if let Some(after) = stalled_after {
            // Part of the body goes through, then nothing either way until
            // the client hangs up; then the server is hung up on too.
            let mut client = client_read;
            let mut server = server_write;
            let mut buffer = vec![0u8; 64 * 1024];
            let mut forwarded = 0u64;
            while forwarded < after {
                let want = buffer.len().min((after - forwarded) as usize);
                match client.read(&mut buffer[..want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if server.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                        forwarded += n as u64;
                    }
                }
            }
            stall(&mut client);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        scope.spawn(|| pump_up(client_read, server_write, shared));
        if lose {
            // Let the server take the whole request and answer, then hang
            // up on the client without a word.
            let mut answer = Vec::new();
            let _ = server.read_to_end(&mut answer);
            let _ = client.shutdown(Shutdown::Both);
        } else {
            pump_down(&mut server, &mut client, shared, extra.as_deref());
        }
    });
}

/// The request head with `Connection: close` in place of any
/// `Connection` header.
fn close_after(head: &[u8], dropped: &[String]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len() + 20);
    for line in text.trim_end_matches("\r\n").split("\r\n") {
        let lower = line.to_ascii_lowercase();
        let name = lower.split(':').next().unwrap_or_default().trim();
        if name != "connection" && !dropped.iter().any(|d| d == name) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// Waits until a shared link (`free` says when it is next free) has
/// carried `n` more bytes: each send books the link's time after the sends
/// before it.
fn book_link(free: &Mutex<std::time::Instant>, rate: u64, n: usize) {
    let done = {
        let Ok(mut free) = free.lock() else {
            return;
        };
        let start = (*free).max(std::time::Instant::now());
        *free = start + std::time::Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
        *free
    };
    if let Some(wait) = done.checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(wait);
    }
}

fn pump_up(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let rate = shared.faults.throttle_up;
    // A tenth of a second's worth at a time, so the pace is even.
    let step = rate
        .or(shared.faults.link_up)
        .map_or(64 * 1024, |r| (r / 10).clamp(1, 64 * 1024) as usize);
    let mut buffer = vec![0u8; step];
    let started = std::time::Instant::now();
    let mut forwarded = 0u64;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        record(shared, &buffer[..n]);
        if let Some(link) = shared.faults.link_up {
            book_link(&shared.link_free, link, n);
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
        forwarded += n as u64;
        if let Some(rate) = rate {
            let due = std::time::Duration::from_secs_f64(forwarded as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Holds the connection open without sending, until the client gives up.
fn stall(to: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    let _ = to.set_read_timeout(Some(std::time::Duration::from_secs(120)));
    // Returns when the client closes the connection (or after two minutes).
    while let Ok(n) = to.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

fn pump_down(from: &mut TcpStream, to: &mut TcpStream, shared: &Shared, extra: Option<&str>) {
    let mut buffer = [0u8; 64 * 1024];
    let mut sent = 0u64;
    // Where the first response's body starts, once the head has passed.
    let mut body_start: Option<u64> = None;
    let mut head = Vec::new();
    let mut corrupted = false;
    if let Some((0, _)) = shared.faults.stall_after
        && Budget::take(&shared.budget.stall)
    {
        stall(to);
        return;
    }
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(line) = extra
            && body_start.is_none()
        {
            // Hold the head back until it is whole, then add the line.
            head.extend_from_slice(&buffer[..n]);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let mut edited = head[..end].to_vec();
            edited.extend_from_slice(format!("\r\n{line}\r\n\r\n").as_bytes());
            body_start = Some(edited.len() as u64);
            edited.extend_from_slice(&head[end + 4..]);
            if to.write_all(&edited).is_err() {
                break;
            }
            sent += edited.len() as u64;
            continue;
        }
        let chunk = &mut buffer[..n];
        if let Some((limit, _)) = shared.faults.stall_after
            && limit > 0
            && sent + n as u64 > limit
            && Budget::take(&shared.budget.stall)
        {
            let keep = (limit.saturating_sub(sent)) as usize;
            let _ = to.write_all(&chunk[..keep]);
            stall(to);
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        if body_start.is_none() {
            head.extend_from_slice(chunk);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body_start = Some(end as u64 + 4);
            }
        }
        if let (Some((offset, _)), Some(start), false) =
            (shared.faults.corrupt_at, body_start, corrupted)
        {
            let target = start + offset;
            if target >= sent && target < sent + n as u64 && Budget::take(&shared.budget.corrupt) {
                chunk[(target - sent) as usize] ^= 0x55;
                corrupted = true;
            }
        }
        if let Some((limit, _)) = shared.faults.cut_after
            && sent + n as u64 > limit
            && Budget::take(&shared.budget.cut)
        {
            let keep = (limit.saturating_sub(sent)) as usize;
            let _ = to.write_all(&chunk[..keep]);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        if let Some(link) = shared.faults.link_down {
            book_link(&shared.down_free, link, n);
        }
        if to.write_all(chunk).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = to.shutdown(Shutdown::Write);
}
