//! `orca sync --shard I/N`: four shards of one configuration run at once
//! into a registry end with the same tags and digests as one unsharded
//! run, each taking its own repositories; prune waits for
//! `--shard finish`; an archive target is refused to shards.

use orca_testkit::RegistryServer;

use crate::common::{json, ok, run, unique};
use crate::sync_support::{actions, seed, write_config};

#[test]
fn four_shards_at_once_leave_what_one_run_leaves() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let host = registry.host();
    let prefix = unique("shards");
    let contents: Vec<(String, String, String)> = (0..20)
        .flat_map(|i| {
            let tags: &[&str] = if i % 4 == 0 {
                &["1.0", "2.0"]
            } else {
                &["1.0"]
            };
            tags.iter()
                .map(move |tag| {
                    (
                        format!("src/app{i}"),
                        (*tag).to_owned(),
                        format!("app{i} {tag}\n"),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let images: Vec<(&str, &str, &str)> = contents
        .iter()
        .map(|(r, t, c)| (r.as_str(), t.as_str(), c.as_str()))
        .collect();
    seed(path, &prefix, &images);
    let config = |target: &str| {
        write_config(
            path,
            &format!(
                "sync:\n  - source: {host}/{prefix}/src/\n    target: {host}/{prefix}/{target}\n    prune: true\n"
            ),
        )
    };
    let (one, four) = (config("one"), config("four"));
    ok(path, &["sync", &one, "--format", "json"]);

    let shards: Vec<_> = (0..4)
        .map(|i| {
            crate::common::orca(path)
                .current_dir(path)
                .args([
                    "sync",
                    &four,
                    "--shard",
                    &format!("{i}/4"),
                    "--format",
                    "json",
                ])
                .output()
        })
        .collect();
    let mut taken = Vec::new();
    // How many shards found work (the names, and so the split, differ
    // from run to run: one shard may draw none of the twenty).
    let mut busy = 0;
    for (i, shard) in shards.into_iter().enumerate() {
        let output = shard.expect("run a shard");
        assert!(
            output.status.success(),
            "shard {i}/4: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("a shard's report");
        let done = actions(&report);
        if !done.is_empty() {
            busy += 1;
        }
        assert!(
            done.iter().all(|(_, action)| action == "copied"),
            "{done:?}"
        );
        taken.extend(done.into_iter().map(|(image, _)| image));
    }
    assert!(
        busy >= 2,
        "the work was not split: {busy} shard(s) took it all"
    );
    taken.sort();
    let before = taken.len();
    taken.dedup();
    assert_eq!(taken.len(), before, "an image was taken by two shards");
    assert_eq!(taken.len(), images.len(), "{taken:?}");

    // The same tags, naming the same digests, as the unsharded run.
    let state = |target: &str| {
        (0..20)
            .flat_map(|i| {
                // A repository keeps its full name under the target.
                let repository = format!("{host}/{prefix}/{target}/{prefix}/src/app{i}");
                let tags = json(path, &["tags", &repository]);
                tags["tags"]
                    .as_array()
                    .expect("tags")
                    .iter()
                    .map(|tag| {
                        let tag = tag.as_str().expect("tag").to_owned();
                        let digest = ok(path, &["resolve", &format!("{repository}:{tag}")]);
                        (i, tag, digest.trim().to_owned())
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let unsharded = state("one");
    assert_eq!(unsharded.len(), images.len());
    assert_eq!(state("four"), unsharded);

    // A tag gone from the source: no shard prunes it, the finish does.
    ok(path, &["untag", &format!("{host}/{prefix}/src/app0:2.0")]);
    for i in 0..4 {
        let shard = run(path, &["sync", &four, "--shard", &format!("{i}/4")]);
        assert!(shard.status.success());
        assert!(
            String::from_utf8_lossy(&shard.stderr).contains("--shard finish"),
            "{shard:?}"
        );
    }
    let kept = json(
        path,
        &["tags", &format!("{host}/{prefix}/four/{prefix}/src/app0")],
    );
    assert!(kept.to_string().contains("2.0"), "a shard pruned: {kept}");
    let finish = json(path, &["sync", &four, "--shard", "finish"]);
    let done = actions(&finish);
    assert!(
        done.contains(&(
            format!("{host}/{prefix}/four/{prefix}/src/app0:2.0"),
            "pruned".to_owned()
        )),
        "{done:?}"
    );
    assert!(
        done.iter().filter(|(_, a)| a == "up-to-date").count() >= images.len() - 1,
        "{done:?}"
    );

    // Shards cannot share an archive; a shard number out of range is a
    // usage error.
    let archive = write_config(
        path,
        &format!(
            "sync:\n  - source: {host}/{prefix}/src/\n    target: oci-archive:{}\n",
            path.join("m.tar").display()
        ),
    );
    let refused = run(path, &["sync", &archive, "--shard", "0/2"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("shards cannot share"),
        "{refused:?}"
    );
    assert!(!path.join("m.tar").exists());
    let usage = run(path, &["sync", &four, "--shard", "4/4"]);
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
}
