//! Bad input to `orca serve` (issue 23 checks): malformed and oversized
//! manifests, wrong digests, names that are no names, bodies that do not
//! match what they declare, a client that stalls mid-upload. Each gets the
//! spec's error within a bounded wait, nothing is stored, and the server
//! goes on serving others.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::http::{read_answer, send, sha256};
use crate::serve::Serving;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn code(answer: &crate::http::Answer) -> String {
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn bad_input_gets_the_spec_error_and_stores_nothing() {
    let home = tempfile::tempdir().expect("temporary directory");
    let root = format!("oci:{}", home.path().join("served").display());
    let serving = Serving::start(home.path(), &root, &["--idle-timeout", "2s"]);
    let host = serving.host().to_owned();

    // A manifest that is not JSON, and one that is too big.
    let malformed = send(
        &host,
        "PUT",
        "/v2/bad/manifests/v1",
        &[("Content-Type", MANIFEST)],
        b"{not json",
    );
    assert_eq!(
        (malformed.status, code(&malformed).as_str()),
        (400, "MANIFEST_INVALID"),
        "{}",
        malformed.text()
    );
    let huge = vec![b' '; 5 << 20];
    let oversized = send(
        &host,
        "PUT",
        "/v2/bad/manifests/v1",
        &[("Content-Type", MANIFEST)],
        &huge,
    );
    assert_eq!(oversized.status, 413, "{}", oversized.text());
    assert_eq!(code(&oversized), "SIZE_INVALID");
    // Nothing was stored: the repository does not even exist.
    let tags = send(&host, "GET", "/v2/bad/tags/list", &[], b"");
    assert_eq!(
        (tags.status, code(&tags).as_str()),
        (404, "NAME_UNKNOWN"),
        "{}",
        tags.text()
    );

    // Digests that do not match, or are no digests.
    let data = b"some blob bytes";
    let wrong = sha256(b"other bytes");
    let pushed = send(
        &host,
        "POST",
        &format!("/v2/bad/blobs/uploads/?digest={wrong}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(
        (pushed.status, code(&pushed).as_str()),
        (400, "DIGEST_INVALID"),
        "{}",
        pushed.text()
    );
    for digest in [wrong.clone(), sha256(data)] {
        let head = send(&host, "HEAD", &format!("/v2/bad/blobs/{digest}"), &[], b"");
        assert_eq!(head.status, 404, "a blob was stored for {digest}");
    }
    let garbage = send(&host, "GET", "/v2/bad/blobs/sha256:not-hex", &[], b"");
    assert_eq!(
        (garbage.status, code(&garbage).as_str()),
        (400, "DIGEST_INVALID")
    );
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[]}}"#
    );
    let mismatched = send(
        &host,
        "PUT",
        &format!("/v2/bad/manifests/{wrong}"),
        &[("Content-Type", MANIFEST)],
        manifest.as_bytes(),
    );
    assert_eq!(
        (mismatched.status, code(&mismatched).as_str()),
        (400, "DIGEST_INVALID")
    );

    // Names that are no repository names.
    for path in [
        "/v2/Upper/tags/list",
        "/v2/a/../b/tags/list",
        "/v2/a//b/manifests/v1",
        "/v2/-a/tags/list",
    ] {
        let answer = send(&host, "GET", path, &[], b"");
        assert_eq!(
            (answer.status, code(&answer).as_str()),
            (400, "NAME_INVALID"),
            "{path}: {}",
            answer.text()
        );
    }

    // A chunk whose body does not match its Content-Range.
    let started = send(&host, "POST", "/v2/bad/blobs/uploads/", &[], b"");
    let location = started.header("location").expect("Location").to_owned();
    let longer = send(
        &host,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", "0-9"),
        ],
        b"twenty bytes of body",
    );
    assert_eq!(longer.status, 416, "{}", longer.text());
    let status = send(&host, "GET", &location, &[], b"");
    assert_eq!(
        status.header("range"),
        Some("0-0"),
        "bytes were kept from a refused chunk"
    );

    // A client that stalls mid-body: answered within the idle limit, while
    // others are served.
    let mut stalled = TcpStream::connect(&host).expect("connect");
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stalled,
        "PATCH {location} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n"
    )
    .expect("send head");
    stalled.write_all(&[7u8; 1000]).expect("send a little");
    let began = Instant::now();
    let ping = send(&host, "GET", "/v2/", &[], b"");
    assert_eq!(ping.status, 200, "the server stopped serving others");
    let answer = read_answer(&mut stalled, false);
    let waited = began.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "a stalled client held a request {waited:?}"
    );
    assert_eq!(answer.status, 408, "{}", answer.text());
    // A directory appends in place: what the stalled body wrote is kept
    // and said, and the client continues from there.
    let status = send(&host, "GET", &location, &[], b"");
    assert_eq!(status.status, 204);
    assert_eq!(
        status.header("range"),
        Some("0-999"),
        "the bytes a stalled body wrote, as the session holds them"
    );
    let rest = send(
        &host,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", "1000-1999"),
        ],
        &[7u8; 1000],
    );
    assert_eq!(rest.status, 202, "{}", rest.text());
    assert_eq!(rest.header("range"), Some("0-1999"));
    assert_eq!(send(&host, "DELETE", &location, &[], b"").status, 204);

    // Still serving; no blob anywhere in the layout.
    assert_eq!(send(&host, "GET", "/v2/", &[], b"").status, 200);
    let blobs = home.path().join("served/bad/blobs/sha256");
    let stored = std::fs::read_dir(&blobs).map_or(0, |d| d.flatten().count());
    assert_eq!(stored, 0, "blobs were stored from bad input");
}

#[test]
fn uploads_past_the_limits_are_refused_and_counted_out() {
    let home = tempfile::tempdir().expect("temporary directory");
    let serving = Serving::start(
        home.path(),
        "memory",
        &[
            "--max-uploads",
            "1",
            "--max-blob-size",
            "1000",
            "--idle-timeout",
            "3s",
        ],
    );
    let host = serving.host().to_owned();
    // Too big by its Content-Length, and by what it streams.
    let big = vec![1u8; 2000];
    let declared = send(
        &host,
        "POST",
        &format!("/v2/lim/blobs/uploads/?digest={}", sha256(&big)),
        &[("Content-Type", "application/octet-stream")],
        &big,
    );
    assert_eq!(
        (declared.status, code(&declared).as_str()),
        (413, "SIZE_INVALID"),
        "{}",
        declared.text()
    );
    let started = send(&host, "POST", "/v2/lim/blobs/uploads/", &[], b"");
    let location = started.header("location").expect("Location").to_owned();
    let mut streamed = TcpStream::connect(&host).expect("connect");
    write!(
        streamed,
        "PATCH {location} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7d0\r\n"
    )
    .expect("head");
    streamed.write_all(&big).expect("body");
    streamed.write_all(b"\r\n0\r\n\r\n").expect("end");
    let answer = read_answer(&mut streamed, false);
    assert_eq!(answer.status, 413, "{}", answer.text());

    // One upload at a time: while one stalls, the next is told to retry.
    let mut holding = TcpStream::connect(&host).expect("connect");
    write!(
        holding,
        "PATCH {location} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 500\r\nConnection: close\r\n\r\n"
    )
    .expect("head");
    std::thread::sleep(Duration::from_millis(300));
    let refused = send(&host, "POST", "/v2/lim/blobs/uploads/", &[], b"");
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Reads go on meanwhile; once the stalled upload is given up, uploads
    // are taken again.
    assert_eq!(send(&host, "GET", "/v2/", &[], b"").status, 200);
    let _ = read_answer(&mut holding, false);
    let again = send(&host, "POST", "/v2/lim/blobs/uploads/", &[], b"");
    assert_eq!(again.status, 202, "{}", again.text());
}
