//! Fake servers that misbehave in ways the real registry cannot be made
//! to. Credentials stay with the registry's own origin (backends review
//! M1, m2): a 401 Bearer challenge from another origin gets nothing, and
//! a token request follows no redirect. A catalog whose pages cycle or
//! never end is an error (M3).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use orca_backend_http::{Credentials, RegistryBuilder};
use orca_core::{MediaType, Store};
use orca_testkit::{Faults, RecordingProxy, RegistryServer};

use crate::common::fresh_repository;

/// A server on a loopback port answering every request with what
/// `answer` makes of its head (request line and headers); returns the port
/// and everything received (heads and bodies).
fn fake(answer: impl Fn(&str) -> String + Send + 'static) -> (u16, Arc<Mutex<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let seen: Arc<Mutex<String>> = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            head.push_str(&String::from_utf8_lossy(&body));
            record
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&head);
            let _ = stream.write_all(answer(&head).as_bytes());
        }
    });
    (port, seen)
}

fn text(seen: &Arc<Mutex<String>>) -> String {
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .to_ascii_lowercase()
}

/// A 401 whose Bearer challenge names a token service on `port`.
fn challenge(port: u16) -> String {
    format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"trap\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_m1_a_bearer_challenge_from_another_origin_gets_no_credentials() {
    // The trap answers everything with a challenge naming a token service
    // that records what it is sent.
    let (token, tokens) = fake(|_| {
        "HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"token\":\"stolen\"}"
            .into()
    });
    let (trap, seen) = fake(move |_| challenge(token));
    let name = fresh_repository("bearer-trap");
    let faults = Faults {
        add_header: Some((
            "/tags/list".into(),
            format!(
                "Link: <http://127.0.0.1:{trap}/v2/{name}/tags/list?n=1000&last=a>; rel=\"next\""
            ),
        )),
        ..Faults::default()
    };
    let proxy =
        RecordingProxy::with_faults(RegistryServer::shared().port(), faults).expect("proxy");
    let registry = RegistryBuilder::new(format!("127.0.0.1:{}", proxy.port()))
        .credentials(Credentials::basic("user", "the-password"))
        .build()
        .expect("registry");
    let store = Store::new(registry.repository(&name).await.expect("repository"));
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("blob");
    let manifest = orca_core::Manifest::new(empty, vec![])
        .to_raw()
        .expect("raw");
    store
        .push_manifest(&manifest, Some("v1"))
        .await
        .expect("manifest");
    let listed = store.tags_all().await;
    let away = text(&seen);
    assert!(
        away.contains("get /v2/"),
        "the Link was not followed: {away}"
    );
    assert!(!away.contains("authorization"), "{away}");
    let sent = text(&tokens);
    assert!(
        sent.is_empty(),
        "credentials went to a token service another origin named: {sent}"
    );
    assert!(listed.is_err(), "a 401 from another origin is an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_m2_a_token_request_follows_no_redirect() {
    // Another host that would receive the refresh token if the token
    // request followed the realm's redirect.
    let (elsewhere, received) = fake(|_| {
        "HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"token\":\"stolen\"}"
            .into()
    });
    let (realm, _) = fake(move |_| {
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere}/token\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    });
    // The registry itself challenges, naming that realm.
    let (registry_port, _) = fake(move |_| challenge(realm));
    let registry = RegistryBuilder::new(format!("127.0.0.1:{registry_port}"))
        .credentials(Credentials::IdentityToken("the-refresh-token".into()))
        .build()
        .expect("registry");
    let outcome = registry.repository("some/repo").await;
    if let Ok(repository) = outcome {
        let _ = Store::new(repository).tags_all().await;
    }
    let away = text(&received);
    assert!(
        !away.contains("the-refresh-token") && away.is_empty(),
        "the token request followed a redirect: {away}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_m3_a_catalog_that_cycles_or_never_ends_is_an_error() {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let endless = {
        let counter = counter.clone();
        move |_: &str| {
            // A thousand new names a page, and always a next page.
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let names: Vec<String> = (0..1000).map(|i| format!("\"r{n:08}-{i:04}\"")).collect();
            let body = format!("{{\"repositories\":[{}]}}", names.join(","));
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLink: </v2/_catalog?n=1000&last=x>; rel=\"next\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let cycling = |line: &str| {
        // Pages a, b, a, b, …
        let name = if line.contains("last=a") { "b" } else { "a" };
        let body = format!("{{\"repositories\":[\"{name}\"]}}");
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLink: </v2/_catalog?n=1000&last={name}>; rel=\"next\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for (port, what) in [(fake(cycling).0, "cycling"), (fake(endless).0, "endless")] {
        let registry = RegistryBuilder::new(format!("127.0.0.1:{port}"))
            .build()
            .expect("registry");
        let listed = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            registry.catalog_all(None),
        )
        .await
        .unwrap_or_else(|_| panic!("the {what} catalog kept orca listing"));
        let err = listed.expect_err(what);
        let text = orca_core::error::chain(&err);
        assert!(
            text.contains("already read") || text.contains("entries of the repository list"),
            "{what}: {text}"
        );
    }
    assert!(
        counter.load(std::sync::atomic::Ordering::SeqCst) <= 1001,
        "pages read past the cap"
    );
}

/// Backends review m9: a ranged read whose answer names other bytes than
/// those asked for is refused, not spliced in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m9_a_range_answered_with_other_bytes_is_refused() {
    let (port, _) = fake(|line| {
        if line.contains("/blobs/") {
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/10\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd".into()
        } else {
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".into()
        }
    });
    let registry = RegistryBuilder::new(format!("127.0.0.1:{port}"))
        .build()
        .expect("registry");
    let repository = registry.repository("some/repo").await.expect("repository");
    let descriptor = orca_core::Descriptor::of(MediaType::OCI_LAYER_TAR, b"0123456789");
    let got = orca_core::Backend::fetch_range(&repository, &descriptor, 4..8).await;
    let Err(err) = got else {
        panic!("other bytes than asked for were taken");
    };
    let text = orca_core::error::chain(&err);
    assert!(text.contains("Content-Range"), "{text}");
}

/// Backends review m7: a token service that answers 503 once is asked
/// again, and the request goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_a_token_service_failing_once_is_asked_again() {
    let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = asked.clone();
    let (realm, _) = fake(move |_| {
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .into()
        } else {
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{\"token\":\"good\"}".into()
        }
    });
    let (registry_port, seen) = fake(move |head| {
        if head
            .to_ascii_lowercase()
            .contains("authorization: bearer good")
        {
            let body = r#"{"name":"some/repo","tags":["v1"]}"#;
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            challenge(realm)
        }
    });
    let registry = RegistryBuilder::new(format!("127.0.0.1:{registry_port}"))
        .credentials(Credentials::basic("user", "password"))
        .build()
        .expect("registry");
    let repository = registry
        .repository("some/repo")
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", text(&seen)));
    let tags = Store::new(repository)
        .tags_all()
        .await
        .unwrap_or_else(|e| panic!("{}", orca_core::error::chain(&e)));
    assert_eq!(tags, ["v1"]);
    assert!(asked.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

/// Backends review m11: a registry that stores a manifest and names it
/// with a `Docker-Content-Digest` orca cannot read does not fail the push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m11_an_unreadable_digest_on_a_stored_manifest_fails_nothing() {
    let (port, _) = fake(|head| {
        if head.starts_with("PUT ") {
            "HTTP/1.1 201 Created\r\nDocker-Content-Digest: sha256:not-a-digest\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
        }
    });
    let registry = RegistryBuilder::new(format!("127.0.0.1:{port}"))
        .build()
        .expect("registry");
    let repository = registry.repository("some/repo").await.expect("repository");
    let raw = orca_core::Manifest::new(
        orca_core::Descriptor::of(MediaType::OCI_EMPTY, b"{}"),
        vec![],
    )
    .to_raw()
    .expect("raw");
    orca_core::Backend::push(
        &repository,
        &raw.descriptor(),
        orca_core::Body::from_bytes(raw.bytes().clone()),
        &orca_core::PushOptions::tagged("v1"),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", orca_core::error::chain(&e)));
}
