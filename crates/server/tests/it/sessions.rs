//! Upload sessions a client walked away from are removed by the server's
//! collection once idle past its grace (an hour at least); one still
//! being written stays, and continues.

use std::time::{Duration, SystemTime};

use orca::Root;

use crate::common::request;

/// Starts an upload in `name` and sends it `bytes`; returns its location.
async fn started(host: &str, name: &str, bytes: &[u8]) -> String {
    let answer = request(host, "POST", &format!("/v2/{name}/blobs/uploads/"), b"").await;
    assert_eq!(answer.status, 202);
    let location = answer.header("location").expect("a location").to_owned();
    let answer = request(host, "PATCH", &location, bytes).await;
    assert_eq!(answer.status, 202);
    location
}

/// Dates every file under `dir` back by `age`.
fn age_files(dir: &std::path::Path, age: Duration) {
    for entry in std::fs::read_dir(dir)
        .expect("read session directory")
        .flatten()
    {
        let file = std::fs::File::options()
            .write(true)
            .open(entry.path())
            .expect("open session file");
        file.set_modified(SystemTime::now() - age).expect("date");
    }
}

#[tokio::test]
async fn idle_upload_sessions_are_collected_and_live_ones_stay() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let target = format!("oci:{}", dir.path().display());
    let open = || Root::open(&target, &orca::OpenOptions::new()).expect("root");
    let running = orca_server::Server::new(open())
        .spawn("127.0.0.1:0")
        .await
        .expect("serve");
    let host = running.host();
    let abandoned = started(&host, "team/app", b"left behind").await;
    let live = started(&host, "team/app", b"still coming").await;
    let id = abandoned.rsplit('/').next().expect("an id");
    let sessions = dir.path().join("team/app/uploads");
    age_files(&sessions.join(id), Duration::from_secs(3 * 3600));

    // Another process's collection of the same directory, with a grace of
    // a minute: the sessions' floor of an hour decides.
    let (done, failed) = orca_server::collect_all(&open(), Duration::from_secs(60)).await;
    assert_eq!((done, failed), (1, 0));
    assert_eq!(request(&host, "GET", &abandoned, b"").await.status, 404);
    assert!(!sessions.join(id).exists(), "the idle session's files stay");
    let status = request(&host, "GET", &live, b"").await;
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), Some("0-11"));
    let more = request(&host, "PATCH", &live, b"!").await;
    assert_eq!(more.header("range"), Some("0-12"));
}
