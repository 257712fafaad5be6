//! Registry-specific behaviour: mounts, chunked uploads, long tag lists,
//! auth failures, and interoperability with skopeo.

use futures::StreamExt;
use orca_backend_http::{Credentials, RegistryBuilder};
use orca_core::conformance::GeneratedBlob;
use orca_core::{Document, Error, ListQuery, MediaType, Selector, Store};
use orca_testkit::{Faults, RecordingProxy, RegistryServer, push_real_image, run};

use crate::common::{fresh_repository, plain, repository, through_proxy};

const SKOPEO: &str = "apt-get install -y skopeo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_64_mib_in_5_mib_chunks() {
    let registry = RegistryBuilder::new(RegistryServer::shared().host())
        .chunk_threshold(1024 * 1024)
        .chunk_size(5 * 1024 * 1024)
        .build()
        .expect("registry");
    let store = Store::new(repository(&registry, &fresh_repository("chunked")).await);
    let blob = GeneratedBlob::new(64 * 1024 * 1024 + 12_345, 21);
    let desc = blob.descriptor(MediaType::OCI_LAYER_TAR);
    store.push(&desc, blob.body()).await.expect("chunked push");
    let mut body = store.fetch(&desc).await.expect("fetch");
    let mut total = 0;
    while let Some(chunk) = body.next().await {
        total += chunk.expect("verified").len() as u64;
    }
    assert_eq!(total, blob.size());
}

#[tokio::test]
async fn tag_lists_of_more_than_250_tags_are_complete_and_paged() {
    let store = Store::new(repository(&plain(), &fresh_repository("tags")).await);
    let image = push_real_image(&store, &[("f", b"tags")], "t000").await;
    let mut expected: Vec<String> = (0..260).map(|i| format!("t{i:03}")).collect();
    for tag in &expected[1..] {
        store.tag(&image, tag).await.expect("tag");
    }
    expected.sort();
    assert_eq!(store.tags_all().await.expect("all"), expected);
    let page = store
        .tags(&ListQuery::page(Some("t099".into()), 50))
        .await
        .expect("page");
    assert_eq!(page.entries, expected[100..150]);
    assert_eq!(page.next.as_deref(), Some("t149"));
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized_without_a_retry_storm() {
    let server = RegistryServer::shared_htpasswd();
    let proxy = RecordingProxy::start(server.port()).expect("proxy");
    let registry = RegistryBuilder::new(format!("127.0.0.1:{}", proxy.port()))
        .credentials(Credentials::basic("orca", "not-the-password"))
        .build()
        .expect("registry");
    let store = Store::new(repository(&registry, "orca/denied").await);
    let before = proxy.recorded().matches(" HTTP/1.1\r\n").count();
    let err = store
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect_err("wrong password");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    let text = orca_core::error::chain(&err);
    assert!(
        !text.contains("not-the-password"),
        "the password leaked: {text}"
    );
    let requests = proxy.recorded().matches(" HTTP/1.1\r\n").count() - before;
    assert!(requests <= 2, "{requests} requests for one refused call");
}

#[tokio::test]
async fn anonymous_access_to_an_authenticated_registry_is_unauthorized() {
    let registry = RegistryBuilder::new(RegistryServer::shared_htpasswd().host())
        .build()
        .expect("registry");
    let store = Store::new(repository(&registry, "orca/anonymous").await);
    let err = store.tags_all().await.expect_err("no credentials");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn skopeo_reads_what_orca_pushes_and_orca_verifies_what_skopeo_pushes() {
    let host = RegistryServer::shared().host();
    let name = fresh_repository("interop");
    let store = Store::new(repository(&plain(), &name).await);
    let pushed = push_real_image(&store, &[("etc/hello", b"pushed by orca\n")], "v1").await;
    let inspect = run(
        "skopeo",
        SKOPEO,
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{host}/{name}:v1"),
        ],
    );
    let inspected: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(inspected["Digest"], pushed.digest.to_string(), "{inspect}");

    let copy = format!("{name}-by-skopeo");
    run(
        "skopeo",
        SKOPEO,
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{host}/{name}:v1"),
            &format!("docker://{host}/{copy}:copied"),
        ],
    );
    let copied = Store::new(repository(&plain(), &copy).await);
    let (_, raw) = copied
        .fetch_manifest(&Selector::Tag("copied".into()))
        .await
        .expect("manifest");
    let Document::Manifest(manifest) = raw.parse().expect("parse") else {
        panic!("not an image manifest");
    };
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        copied.fetch_bytes(blob).await.expect("verified blob");
    }
}

#[tokio::test]
async fn credentials_come_from_docker_config_and_credential_helpers() {
    let server = RegistryServer::shared_htpasswd();
    let (user, password) = server.credentials().expect("credentials");
    let dir = tempfile::tempdir().expect("temporary directory");

    // auths: base64 user:password
    let auth = {
        use std::io::Write;
        let mut encoded = Vec::new();
        let mut child = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("base64");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{user}:{password}").as_bytes())
            .expect("write");
        encoded.extend(child.wait_with_output().expect("base64").stdout);
        String::from_utf8(encoded).expect("ascii")
    };
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, server.host()),
    )
    .expect("config");
    let credentials = orca_backend_http::DockerConfig::load(&config)
        .expect("load")
        .credentials_for(&server.host())
        .expect("credentials");
    let registry = RegistryBuilder::new(server.host())
        .credentials(credentials)
        .build()
        .expect("registry");
    let store = Store::new(repository(&registry, &fresh_repository("docker-config")).await);
    push_real_image(&store, &[("f", b"via config.json")], "v1").await;

    // credHelpers: a helper speaking the docker credential-helper protocol.
    let helper = dir.path().join("docker-credential-orca-test");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n"),
    )
    .expect("helper");
    std::process::Command::new("chmod")
        .args(["+x", helper.to_str().expect("utf-8")])
        .status()
        .expect("chmod");
    std::fs::write(
        &config,
        format!(r#"{{"credHelpers":{{"{}":"orca-test"}}}}"#, server.host()),
    )
    .expect("config");
    let credentials = orca_backend_http::DockerConfig::load(&config)
        .expect("load")
        .with_helper_dirs(vec![dir.path().to_owned()])
        .credentials_for(&server.host())
        .expect("helper credentials");
    let registry = RegistryBuilder::new(server.host())
        .credentials(credentials)
        .build()
        .expect("registry");
    let store = Store::new(repository(&registry, &fresh_repository("cred-helper")).await);
    push_real_image(&store, &[("f", b"via a credential helper")], "v1").await;
}

#[tokio::test]
async fn the_bearer_token_flow_works_and_reuses_tokens() {
    let server = RegistryServer::start_token("orca", "token-password").expect("token registry");
    let registry = RegistryBuilder::new(server.host())
        .credentials(Credentials::basic("orca", "token-password"))
        .build()
        .expect("registry");
    let name = fresh_repository("token");
    let store = Store::new(repository(&registry, &name).await);
    let pushed = push_real_image(&store, &[("f", b"behind a token")], "v1").await;
    let (descriptor, _) = store
        .fetch_manifest(&Selector::Tag("v1".into()))
        .await
        .expect("pull with a token");
    assert_eq!(descriptor.digest, pushed.digest);
    let issued = server.tokens_issued().expect("issuer");
    assert!(
        (1..=3).contains(&issued),
        "tokens are cached per scope, yet {issued} were issued"
    );

    let identity = RegistryBuilder::new(server.host())
        .credentials(Credentials::IdentityToken(
            server.identity_token().expect("issuer").to_owned(),
        ))
        .build()
        .expect("registry");
    let store = Store::new(repository(&identity, &name).await);
    let (descriptor, _) = store
        .fetch_manifest(&Selector::Tag("v1".into()))
        .await
        .expect("pull with an identity token");
    assert_eq!(descriptor.digest, pushed.digest);
    let revoked = RegistryBuilder::new(server.host())
        .credentials(Credentials::IdentityToken("orca-refresh-revoked".into()))
        .build()
        .expect("registry");
    let store = Store::new(repository(&revoked, &name).await);
    let err = store
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect_err("unknown identity token");
    assert!(
        matches!(err, Error::Unauthorized { .. }),
        "{}",
        orca_core::error::chain(&err)
    );
    assert!(!orca_core::error::chain(&err).contains("orca-refresh-revoked"));

    let wrong = RegistryBuilder::new(server.host())
        .credentials(Credentials::basic("orca", "wrong"))
        .build()
        .expect("registry");
    let store = Store::new(repository(&wrong, &name).await);
    let err = store
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect_err("wrong password");
    assert!(
        matches!(err, Error::Unauthorized { .. }),
        "{}",
        orca_core::error::chain(&err)
    );
}

#[tokio::test]
async fn client_errors_are_not_retried_and_server_errors_are() {
    let name = fresh_repository("retry");
    let store = Store::new(repository(&plain(), &name).await);
    push_real_image(&store, &[("f", b"retried")], "v1").await;
    let count = |proxy: &RecordingProxy| proxy.recorded().matches(" HTTP/1.1\r\n").count();

    let faults = Faults {
        fail_requests: Some(("/manifests/v1".into(), 404, 3)),
        ..Faults::default()
    };
    let (proxy, registry) = through_proxy(faults);
    let store = Store::new(repository(&registry, &name).await);
    let asked = |proxy: &RecordingProxy| proxy.recorded().matches("/manifests/v1 HTTP/1.1").count();
    let before = asked(&proxy);
    let err = store
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect_err("404");
    assert!(err.is_not_found(), "{err}");
    // (A 404 to a tag is followed by one look at the tag list, which
    // tells a missing repository from a missing tag.)
    assert_eq!(asked(&proxy) - before, 1, "a 404 was retried");

    let faults = Faults {
        fail_requests: Some(("/manifests/v1".into(), 503, 2)),
        ..Faults::default()
    };
    let (proxy, registry) = through_proxy(faults);
    let store = Store::new(repository(&registry, &name).await);
    let before = count(&proxy);
    store
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect("503 twice, then the answer");
    assert_eq!(count(&proxy) - before, 3, "two 503s and a success");
}

#[tokio::test]
async fn metadata_larger_than_the_cap_is_refused_before_parsing() {
    let name = fresh_repository("cap");
    let store = Store::new(repository(&plain(), &name).await);
    let pushed = push_real_image(&store, &[("f", b"capped")], "v1").await;
    let capped = RegistryBuilder::new(RegistryServer::shared().host())
        .max_metadata_size(pushed.size - 1)
        .build()
        .expect("registry");
    let store = Store::new(repository(&capped, &name).await);
    let err = store
        .fetch_manifest(&Selector::Tag("v1".into()))
        .await
        .expect_err("over the cap");
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert!(
        err.to_string().contains(&pushed.digest.to_string()),
        "{err}"
    );
    let roomy = RegistryBuilder::new(RegistryServer::shared().host())
        .max_metadata_size(pushed.size)
        .build()
        .expect("registry");
    let store = Store::new(repository(&roomy, &name).await);
    store
        .fetch_manifest(&Selector::Tag("v1".into()))
        .await
        .expect("exactly at the cap");
}

#[tokio::test]
async fn untag_keeps_the_manifest_and_puts_the_tag_back_when_delete_is_refused() {
    let name = fresh_repository("untag");
    let store = Store::new(repository(&plain(), &name).await);
    let pushed = push_real_image(&store, &[("f", b"untagged")], "one").await;
    store.tag(&pushed, "two").await.expect("second tag");

    // A registry that refuses deleting manifests (as with delete disabled).
    let faults = Faults {
        fail_requests: Some(("DELETE /v2/".into(), 405, 2)),
        ..Faults::default()
    };
    let (_proxy, registry) = through_proxy(faults);
    let refusing = Store::new(repository(&registry, &name).await);
    let err = refusing.untag("one").await.expect_err("delete refused");
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let still = store
        .resolve(&Selector::Tag("one".into()))
        .await
        .expect("the tag was put back");
    assert_eq!(still.digest, pushed.digest);

    store.untag("one").await.expect("untag");
    let err = store
        .resolve(&Selector::Tag("one".into()))
        .await
        .expect_err("tag gone");
    assert!(err.is_not_found(), "{err}");
    let two = store
        .resolve(&Selector::Tag("two".into()))
        .await
        .expect("other tag kept");
    assert_eq!(two.digest, pushed.digest);
    assert!(
        store.exists(&pushed).await.expect("exists"),
        "manifest kept"
    );
    let mut tags = store.tags_all().await.expect("tags");
    tags.sort();
    assert_eq!(tags, ["two"]);
}

const REPOSITORY_ENV: &str = "ORCA_TEST_REPOSITORY";
const HOST_ENV: &str = "ORCA_TEST_REGISTRY_HOST";

/// Attaches 25 referrers to one subject. Run alone it uses a repository of
/// its own; `four_processes_never_lose_a_referrer` runs it as a child.
#[tokio::test]
async fn attacher() {
    let solo = std::env::var(REPOSITORY_ENV).is_err();
    let name = std::env::var(REPOSITORY_ENV).unwrap_or_else(|_| fresh_repository("attach-solo"));
    let prefix = std::env::var(orca_testkit::ATTACH_PREFIX_ENV).unwrap_or_else(|_| "solo".into());
    let registry = match std::env::var(HOST_ENV) {
        Ok(host) => RegistryBuilder::new(host).build().expect("registry"),
        Err(_) => plain(),
    };
    let store = Store::new(repository(&registry, &name).await);
    orca_testkit::attach_many(&store, &prefix).await;
    if solo {
        let subject = orca_testkit::attach_subject(&store).await;
        let listed = store.referrers(&subject, None).await.expect("referrers");
        assert_eq!(listed.manifests.len(), orca_testkit::ATTACHES_PER_PROCESS);
    }
}

#[tokio::test]
async fn four_processes_never_lose_a_referrer() {
    let name = fresh_repository("attach");
    let store = Store::new(repository(&plain(), &name).await);
    // The children talk to this process's registry, through the same port.
    let env = [
        (REPOSITORY_ENV.to_owned(), name.clone()),
        (HOST_ENV.to_owned(), RegistryServer::shared().host()),
    ];
    orca_testkit::attach_from_processes(&store, "registry::attacher", &env).await;
}

#[tokio::test]
async fn the_referrers_api_is_used_paged_and_filtered_where_the_registry_has_it() {
    let front =
        orca_testkit::ReferrersFront::start(RegistryServer::shared().port()).expect("front");
    let registry = RegistryBuilder::new(format!("127.0.0.1:{}", front.port()))
        .build()
        .expect("registry");
    let name = fresh_repository("native-referrers");
    let store = Store::new(repository(&registry, &name).await);
    assert!(store.capabilities().referrers_api, "probe");
    let subject = push_real_image(&store, &[("f", b"subject")], "v1").await;
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty");
    for n in 0..7 {
        let mut manifest = orca_core::Manifest::new(empty.clone(), vec![empty.clone()]);
        let kind = if n % 2 == 0 { "even" } else { "odd" };
        manifest.artifact_type = Some(MediaType::new(format!("application/vnd.example.{kind}")));
        manifest.subject = Some(subject.clone());
        manifest.annotations.insert("n".into(), n.to_string());
        store
            .push_manifest(&manifest.to_raw().expect("raw"), None)
            .await
            .expect("attach");
    }
    assert!(
        store.capabilities().referrers_api,
        "OCI-Subject on push keeps the native path"
    );
    // Nothing was written to the fallback tag: the registry indexed them.
    let tag = orca_core::referrers::fallback_tag(&subject.digest);
    let err = store
        .resolve(&Selector::Tag(tag))
        .await
        .expect_err("no fallback tag on a registry with the API");
    assert!(err.is_not_found(), "{err}");
    let all = store.referrers(&subject, None).await.expect("referrers");
    assert_eq!(all.via, orca_core::referrers::Via::Api);
    assert_eq!(all.manifests.len(), 7, "three pages of three: {all:?}");
    let odd = MediaType::new("application/vnd.example.odd");
    let only = store
        .referrers(&subject, Some(&odd))
        .await
        .expect("filtered");
    assert_eq!(only.manifests.len(), 3);
    assert!(
        only.manifests
            .iter()
            .all(|d| d.artifact_type.as_ref() == Some(&odd))
    );
}

/// Opens `n` fresh repositories of `registry` at once; whether each
/// offers the Referrers API.
async fn open_at_once(registry: &orca_backend_http::Registry, label: &str, n: usize) -> Vec<bool> {
    let names: Vec<String> = (0..n)
        .map(|i| fresh_repository(&format!("{label}{i}")))
        .collect();
    futures::future::join_all(names.iter().map(|name| repository(registry, name)))
        .await
        .into_iter()
        .map(|backend| Store::new(backend).capabilities().referrers_api)
        .collect()
}

#[tokio::test]
async fn the_referrers_api_is_asked_about_once_per_host() {
    // docker-registry has no such route: a bare 404, true of every
    // repository, so of eight opened at once only the first asks.
    let (proxy, registry) = through_proxy(Faults::default());
    assert_eq!(open_at_once(&registry, "probe", 8).await, [false; 8]);
    assert_eq!(proxy.recorded().matches("/referrers/").count(), 1);
    // A host that has the API: asked once too, and every repository
    // knows it.
    let front =
        orca_testkit::ReferrersFront::start(RegistryServer::shared().port()).expect("front");
    let proxy = RecordingProxy::start(front.port()).expect("proxy");
    let registry = RegistryBuilder::new(format!("127.0.0.1:{}", proxy.port()))
        .build()
        .expect("registry");
    assert_eq!(open_at_once(&registry, "api", 3).await, [true; 3]);
    assert_eq!(proxy.recorded().matches("/referrers/").count(), 1);
    // A 404 that is not Go's router (a proxy's page, an empty body) says
    // nothing about other repositories: each asks for itself.
    let (proxy, registry) = through_proxy(Faults {
        fail_requests: Some(("/referrers/".into(), 404, 100)),
        ..Faults::default()
    });
    for n in 0..3 {
        repository(&registry, &fresh_repository(&format!("own{n}"))).await;
    }
    assert_eq!(proxy.recorded().matches("/referrers/").count(), 3);
}

#[tokio::test]
async fn artifacts_fall_back_to_oci_1_0_on_a_client_error_but_not_on_auth_errors() {
    use orca_core::artifact::{Artifact, Form, pack};
    let name = fresh_repository("artifact-fallback");
    let store = Store::new(repository(&plain(), &name).await);
    let file = store
        .push_bytes(MediaType::new("text/plain"), &b"payload"[..])
        .await
        .expect("file");
    let artifact = Artifact::new(MediaType::new("application/vnd.example.thing"), vec![file]);
    let manifest_put = format!("PUT /v2/{name}/manifests/");
    let count_puts = |proxy: &RecordingProxy| proxy.recorded().matches(&manifest_put).count();

    // A registry that refuses the 1.1 form once, as older registries do.
    let faults = Faults {
        fail_requests: Some((format!("PUT /v2/{name}/manifests/"), 400, 1)),
        ..Faults::default()
    };
    let (proxy, registry) = through_proxy(faults);
    let refusing = Store::new(repository(&registry, &name).await);
    let packed = pack(&refusing, &artifact, Form::Auto, Some("thing"))
        .await
        .expect("auto falls back");
    assert_eq!(packed.form, Form::V1_0);
    assert_eq!(count_puts(&proxy), 2, "one refused 1.1 PUT, one 1.0 PUT");
    let (_, raw) = store
        .fetch_manifest(&Selector::Tag("thing".into()))
        .await
        .expect("stored");
    let stored: serde_json::Value = serde_json::from_slice(raw.bytes()).expect("json");
    assert!(stored.get("artifactType").is_none(), "{stored}");
    assert_eq!(
        stored["config"]["mediaType"],
        "application/vnd.example.thing"
    );

    // An auth refusal is an error, never a reason to try another form.
    let faults = Faults {
        fail_requests: Some((format!("PUT /v2/{name}/manifests/"), 403, 1)),
        ..Faults::default()
    };
    let (proxy, registry) = through_proxy(faults);
    let denying = Store::new(repository(&registry, &name).await);
    let err = pack(&denying, &artifact, Form::Auto, Some("denied"))
        .await
        .expect_err("403");
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    assert_eq!(count_puts(&proxy), 1, "no second form after a 403");

    // An explicit form is pushed as asked, without probing.
    let (proxy, registry) = through_proxy(Faults::default());
    let direct = Store::new(repository(&registry, &name).await);
    let packed = pack(&direct, &artifact, Form::V1_1, Some("v11"))
        .await
        .expect("1.1");
    assert_eq!(packed.form, Form::V1_1);
    assert_eq!(count_puts(&proxy), 1);
}

/// Backends review m7, single flight: eight blobs pushed at once to a
/// repository read before (so the pull token is cached, the push token
/// not) meet their first 401 together. One of them fetches the push
/// token; the others wait for it and use it. Before, each fetched one and
/// dropped the others' from the cache, and a push sent again without a
/// token failed as unauthorized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_concurrent_first_401s_fetch_one_token() {
    let server = RegistryServer::start_token("orca", "flight-password").expect("token registry");
    let registry = RegistryBuilder::new(server.host())
        .credentials(Credentials::basic("orca", "flight-password"))
        .build()
        .expect("registry");
    let store = Store::new(repository(&registry, &fresh_repository("flight")).await);
    let blobs: Vec<GeneratedBlob> = (0..8).map(|i| GeneratedBlob::new(1024, 700 + i)).collect();
    for blob in &blobs {
        let present = store
            .exists(&blob.descriptor(MediaType::OCI_LAYER_TAR))
            .await
            .expect("exists");
        assert!(!present);
    }
    let before = server.tokens_issued().expect("issuer");
    let pushes = blobs.iter().map(|blob| {
        let store = store.clone();
        async move {
            store
                .push(&blob.descriptor(MediaType::OCI_LAYER_TAR), blob.body())
                .await
        }
    });
    for pushed in futures::future::join_all(pushes).await {
        pushed.expect("push");
    }
    let fetched = server.tokens_issued().expect("issuer") - before;
    assert_eq!(fetched, 1, "eight pushes fetched {fetched} push tokens");
}
