//! A server that ignores conditional writes is found out before the first
//! tag and refused (backends review m14): every guarantee of the layout
//! (tags, referrers, GC fences) is a compare-and-swap on `index.json`.

use orca_core::{MediaType, Store};
use orca_testkit::{Faults, MotoServer, RecordingProxy};

use crate::common::{builder, fresh_prefix};

/// moto behind a gateway that drops the conditional headers.
fn ignoring(headers: &[&str]) -> RecordingProxy {
    RecordingProxy::with_faults(
        MotoServer::shared().port(),
        Faults {
            drop_request_headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            ..Faults::default()
        },
    )
    .expect("proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m14_a_store_that_ignores_conditional_writes_is_refused() {
    for (dropped, named) in [
        (
            &["if-none-match", "if-match"][..],
            "If-None-Match and If-Match",
        ),
        (&["if-match"][..], "If-Match"),
    ] {
        let proxy = ignoring(dropped);
        let backend = builder(&fresh_prefix("unconditional"))
            .endpoint(format!("http://127.0.0.1:{}", proxy.port()))
            .build()
            .expect("backend");
        let store = Store::new(backend);
        let config = store.push_bytes(MediaType::OCI_CONFIG, &b"{}"[..]).await;
        let err = match config {
            Err(e) => e,
            Ok(config) => {
                let raw = orca_core::Manifest::new(config, vec![])
                    .to_raw()
                    .expect("raw");
                store
                    .push_manifest(&raw, Some("v1"))
                    .await
                    .expect_err("a tag on a store without conditional writes")
            }
        };
        let text = orca_core::error::chain(&err);
        assert!(text.contains(&format!("ignores {named}")), "{text}");
        assert!(text.contains("conditional writes"), "{text}");
    }
    // Said to go on regardless, it does.
    let proxy = ignoring(&["if-none-match", "if-match"]);
    let backend = builder(&fresh_prefix("unconditional"))
        .endpoint(format!("http://127.0.0.1:{}", proxy.port()))
        .allow_unconditional_writes(true)
        .build()
        .expect("backend");
    let store = Store::new(backend);
    let config = store
        .push_bytes(MediaType::OCI_CONFIG, &b"{}"[..])
        .await
        .expect("config");
    let raw = orca_core::Manifest::new(config, vec![])
        .to_raw()
        .expect("raw");
    store
        .push_manifest(&raw, Some("v1"))
        .await
        .expect("tagged without the guarantees, as asked");
}
