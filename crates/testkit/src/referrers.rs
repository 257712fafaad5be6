//! A Referrers API in front of a real registry that lacks one (Debian's
//! distribution 2.8). It forwards every request, and in the way a registry
//! with the API does: indexes manifests with a `subject` as they are
//! pushed (answering with `OCI-Subject`), forgets them when they are
//! deleted by digest, and answers `GET /v2/<name>/referrers/<digest>`
//! with an image index — filtered by `artifactType` (saying so in
//! `OCI-Filters-Applied`) and paged with `Link`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Referrers per page in answers.
const PAGE: usize = 3;

/// (repository, subject digest) → descriptors of its referrers, by digest.
type Referrers = BTreeMap<(String, String), BTreeMap<String, Value>>;

/// A running Referrers API front. It stops accepting when dropped.
#[derive(Debug)]
pub struct ReferrersFront {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl ReferrersFront {
    /// Starts a front on a free loopback port for the registry at
    /// `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let index: Arc<Mutex<Referrers>> = Arc::default();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let index = index.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &index);
                });
            }
        });
        Ok(ReferrersFront { port, stop })
    }

    /// The front's port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for ReferrersFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request head.
struct Head {
    method: String,
    target: String,
    lines: Vec<String>,
    length: usize,
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<Head> {
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut lines = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let line = line.trim_end().to_owned();
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        lines.push(line);
    }
    Ok(Head {
        method,
        target,
        lines,
        length,
    })
}

/// `/v2/<name>/<kind>/<reference>` split into name and reference.
fn route<'a>(target: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let path = target.split('?').next()?;
    let rest = path.strip_prefix("/v2/")?;
    let (name, reference) = rest.rsplit_once(&format!("/{kind}/"))?;
    Some((name, reference))
}

fn serve(client: TcpStream, upstream: u16, index: &Mutex<Referrers>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut reader)?;
    let mut client = client;
    if head.method == "GET"
        && let Some((name, subject)) = route(&head.target, "referrers")
    {
        return answer_referrers(&mut client, &head.target, name, subject, index);
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut out = format!("{} {} HTTP/1.1\r\n", head.method, head.target);
    for line in &head.lines {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    server.write_all(out.as_bytes())?;
    let manifest = route(&head.target, "manifests");
    let (Some((name, reference)), "PUT" | "DELETE") = (manifest, head.method.as_str()) else {
        // Everything else passes through as bytes, both ways.
        let mut server_read = server.try_clone()?;
        let mut server_write = server;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let _ = std::io::copy(&mut reader, &mut server_write);
                let _ = server_write.shutdown(Shutdown::Write);
            });
            let _ = std::io::copy(&mut server_read, &mut client);
        });
        return Ok(());
    };
    let mut body = vec![0u8; head.length];
    reader.read_exact(&mut body)?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    let ok = response.starts_with(b"HTTP/1.1 2");
    let mut extra = String::new();
    if ok && head.method == "PUT" {
        if let Some(subject) = record(index, name, &head, &body) {
            extra = format!("OCI-Subject: {subject}\r\n");
        }
    } else if ok
        && head.method == "DELETE"
        && let Ok(mut index) = index.lock()
    {
        for ((repository, _), referrers) in index.iter_mut() {
            if repository == name {
                referrers.remove(reference);
            }
        }
    }
    let split = response
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(0, |p| p + 2);
    client.write_all(&response[..split])?;
    client.write_all(extra.as_bytes())?;
    client.write_all(&response[split..])?;
    Ok(())
}

/// Indexes a pushed manifest that has a subject; returns the subject.
fn record(index: &Mutex<Referrers>, name: &str, head: &Head, body: &[u8]) -> Option<String> {
    let manifest: Value = serde_json::from_slice(body).ok()?;
    let subject = manifest.get("subject")?.get("digest")?.as_str()?.to_owned();
    let media_type = head
        .lines
        .iter()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .or_else(|| manifest.get("mediaType")?.as_str().map(str::to_owned))?;
    let digest = format!(
        "sha256:{}",
        ring::digest::digest(&ring::digest::SHA256, body)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let artifact_type = manifest
        .get("artifactType")
        .or_else(|| manifest.get("config")?.get("mediaType"))
        .cloned();
    let mut descriptor = json!({"mediaType": media_type, "digest": digest, "size": body.len()});
    if let Some(t) = artifact_type {
        descriptor["artifactType"] = t;
    }
    if let Some(a) = manifest.get("annotations") {
        descriptor["annotations"] = a.clone();
    }
    index
        .lock()
        .ok()?
        .entry((name.to_owned(), subject.clone()))
        .or_default()
        .insert(digest, descriptor);
    Some(subject)
}

fn answer_referrers(
    client: &mut TcpStream,
    target: &str,
    name: &str,
    subject: &str,
    index: &Mutex<Referrers>,
) -> std::io::Result<()> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| {
                v.replace("%2F", "/")
                    .replace("%2B", "+")
                    .replace("%2f", "/")
            })
    };
    let artifact_type = param("artifactType");
    let page: usize = param("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let all: Vec<Value> = index
        .lock()
        .map(|i| {
            i.get(&(name.to_owned(), subject.to_owned()))
                .map(|r| r.values().cloned().collect())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let matching: Vec<Value> = all
        .into_iter()
        .filter(|d| {
            artifact_type
                .as_deref()
                .is_none_or(|t| d.get("artifactType").and_then(Value::as_str) == Some(t))
        })
        .collect();
    let chunk: Vec<Value> = matching
        .iter()
        .skip(page * PAGE)
        .take(PAGE)
        .cloned()
        .collect();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": chunk,
    })
    .to_string();
    let mut headers = String::new();
    if artifact_type.is_some() {
        headers.push_str("OCI-Filters-Applied: artifactType\r\n");
    }
    if matching.len() > (page + 1) * PAGE {
        let mut next = format!("/v2/{name}/referrers/{subject}?page={}", page + 1);
        if artifact_type.is_some() {
            next.push_str(&format!(
                "&artifactType={}",
                param("artifactType").unwrap_or_default()
            ));
        }
        headers.push_str(&format!("Link: <{next}>; rel=\"next\"\r\n"));
    }
    write!(
        client,
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
