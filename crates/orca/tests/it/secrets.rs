//! Secrets never reach `Debug`, `Display` or error messages: every public
//! type that can hold a password, token or key is formatted every way, and
//! the secret is nowhere in the text.

use orca::http::{Credentials, DockerConfig, RegistryBuilder};
use orca::s3::S3Builder;
use orca_testkit::RegistryServer;

const PASSWORD: &str = "pa55-hunter2-secret";
const TOKEN: &str = "identity-token-0xSECRET";
const AWS_SECRET: &str = "aws-secret-key-SECRET";
const AWS_KEY: &str = "AKIASECRETKEYID";

fn assert_hidden(what: &str, texts: &[String]) {
    for text in texts {
        for secret in [PASSWORD, TOKEN, AWS_SECRET, AWS_KEY] {
            assert!(!text.contains(secret), "{what} shows a secret: {text}");
        }
        // The base64 of user:password, as a basic header would carry it.
        assert!(
            !text.contains("dXNlcjpwYTU1"),
            "{what} shows an encoded secret: {text}"
        );
    }
}

fn all_ways(value: &(impl std::fmt::Debug + ?Sized)) -> Vec<String> {
    vec![format!("{value:?}"), format!("{value:#?}")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_public_type_prints_a_secret() {
    let basic = Credentials::basic("user", PASSWORD);
    let identity = Credentials::IdentityToken(TOKEN.into());
    assert_hidden("Credentials", &all_ways(&basic));
    assert_hidden("Credentials", &all_ways(&identity));

    let builder =
        RegistryBuilder::new(RegistryServer::shared_htpasswd().host()).credentials(basic.clone());
    assert_hidden("RegistryBuilder", &all_ways(&builder));

    // Backends review m31: the facade's options hold the password and
    // plugin configurations in clear.
    let mut options = orca::OpenOptions::new();
    options.credentials = Some(("user".into(), PASSWORD.into()));
    options.plugin_config.insert(
        "s3layout".into(),
        format!("key={AWS_KEY},secret={AWS_SECRET}"),
    );
    assert_hidden("OpenOptions", &all_ways(&options));
    let registry = builder.build().expect("registry");
    assert_hidden("Registry", &all_ways(&registry));
    // Wrong credentials: the error names the registry, not the password.
    let wrong = RegistryBuilder::new(RegistryServer::shared_htpasswd().host())
        .credentials(Credentials::basic("user", PASSWORD))
        .build()
        .expect("registry");
    let err = match wrong.repository("orca/secrets").await {
        Ok(repository) => orca::Store::new(repository)
            .tags_all()
            .await
            .expect_err("wrong credentials"),
        Err(e) => e,
    };
    assert_hidden(
        "an authentication error",
        &[
            format!("{err}"),
            format!("{err:?}"),
            orca::error::chain(&err),
        ],
    );
    let repository = registry
        .repository("orca/secrets")
        .await
        .expect("repository");
    assert_hidden("RegistryBackend", &all_ways(&repository));
    let store = orca::Store::new(repository);
    assert_hidden("Store", &all_ways(&store));
    assert_hidden("Store", &[format!("{store}")]);

    let dir = tempfile::tempdir().expect("temporary directory");
    let auth = base64_of(&format!("user:{PASSWORD}"));
    let config = serde_json::json!({
        "auths": {
            "registry.example": {"auth": auth},
            "other.example": {"username": "user", "password": PASSWORD},
            "token.example": {"identitytoken": TOKEN},
        }
    });
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");
    let docker = DockerConfig::load(&path).expect("load");
    assert_hidden("DockerConfig", &all_ways(&docker));
    for host in ["registry.example", "other.example", "token.example"] {
        let found = docker.credentials_for(host).expect("credentials");
        assert_hidden("credentials from config.json", &all_ways(&found));
    }

    let s3 = S3Builder::new("s3://bucket/prefix")
        .endpoint("http://127.0.0.1:9")
        .region("us-east-1")
        .credentials(AWS_KEY, AWS_SECRET)
        .allow_http(true);
    assert_hidden("S3Builder", &all_ways(&s3));
    let backend = s3.build().expect("s3 backend");
    assert_hidden("S3Backend", &all_ways(&backend));
    assert_hidden("S3Backend", &[format!("{backend}")]);
}

fn base64_of(text: &str) -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
