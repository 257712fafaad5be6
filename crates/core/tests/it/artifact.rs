//! Pulling an artifact's files never follows a link planted where orca
//! writes its temporary file, and a killed pull's temporary file never
//! blocks the next pull.

use orca_core::artifact::{Artifact, Form, pack, pull_files};
use orca_core::model::ANNOTATION_TITLE;
use orca_core::{MediaType, MemoryBackend, Selector, Store};

#[cfg(unix)]
#[tokio::test]
async fn a_planted_link_at_the_temporary_name_is_not_followed() {
    let store = Store::new(MemoryBackend::new());
    let mut file = store
        .push_bytes(
            MediaType::new("text/plain"),
            &b"attacker wants this elsewhere"[..],
        )
        .await
        .expect("file");
    file.annotations
        .insert(ANNOTATION_TITLE.to_owned(), "notes.txt".to_owned());
    let artifact = Artifact::new(
        MediaType::new("application/vnd.example"),
        vec![file.clone()],
    );
    pack(&store, &artifact, Form::V1_1, Some("a"))
        .await
        .expect("pack");

    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("out");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"keep me").expect("victim");
    // Links at the names this process would take first, and the file an
    // older orca, killed mid-pull, left at its fixed name (core review 7).
    for n in 0..8 {
        std::os::unix::fs::symlink(
            &victim,
            out.join(format!(
                ".orca-pull-{}-{}-{n}",
                &file.digest.hex()[..16],
                std::process::id()
            )),
        )
        .expect("plant a link");
    }
    std::fs::write(
        out.join(format!(".orca-pull-{}", file.digest.hex())),
        b"half",
    )
    .expect("left");
    let written = pull_files(&store, &Selector::Tag("a".into()), &out)
        .await
        .expect("a pull past what others left");
    assert_eq!(
        written,
        vec![std::fs::canonicalize(&out).expect("out").join("notes.txt")]
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), b"keep me");
    assert_eq!(
        std::fs::read(out.join("notes.txt")).expect("pulled"),
        b"attacker wants this elsewhere"
    );
}
