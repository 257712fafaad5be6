//! The places content can be: a fresh empty store of each kind, and one
//! filled with a fixture.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use orca::copy::CopyOptions;
use orca::fs::{Archive, ArchiveFormat, ArchiveWriter};
use orca::http::RegistryBuilder;
use orca::s3::S3Builder;
use orca::{MemoryBackend, Selector, Store};
use orca_testkit::{MotoServer, RegistryServer};

/// The kinds of place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Layout,
    S3,
    Registry,
    OciArchive,
    DockerArchive,
}

pub(crate) const KINDS: [Kind; 6] = [
    Kind::Memory,
    Kind::Layout,
    Kind::S3,
    Kind::Registry,
    Kind::OciArchive,
    Kind::DockerArchive,
];

/// The repository name a docker-archive's images get.
pub(crate) const DOCKER_NAME: &str = "example.com/orca/matrix";

/// A unique label.
pub(crate) fn fresh(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn bucket() -> &'static str {
    static BUCKET: OnceLock<String> = OnceLock::new();
    BUCKET.get_or_init(|| {
        let name = format!("orca-facade-{}", std::process::id());
        MotoServer::shared()
            .create_bucket(&name)
            .expect("create bucket");
        name
    })
}

/// An empty place of `kind`; for archives, the writer to finish.
pub(crate) struct Place {
    pub(crate) kind: Kind,
    pub(crate) store: Store,
    pub(crate) writer: Option<ArchiveWriter>,
    pub(crate) path: Option<PathBuf>,
}

impl Place {
    /// Finishes an archive and opens it for reading; other kinds stay.
    pub(crate) async fn reopen(self) -> Store {
        match (self.writer, self.path) {
            (Some(writer), Some(path)) => {
                writer.finish().await.expect("finish the archive");
                let archive = Archive::open(&path).expect("open the archive");
                if self.kind == Kind::DockerArchive {
                    Store::new(archive.repository(DOCKER_NAME))
                } else {
                    Store::new(archive)
                }
            }
            _ => self.store,
        }
    }
}

/// A fresh, empty place of `kind` under `dir`.
pub(crate) async fn empty(kind: Kind, dir: &Path) -> Place {
    let label = fresh(&format!("{kind:?}").to_lowercase());
    let (store, writer, path) = match kind {
        Kind::Memory => (Store::new(MemoryBackend::new()), None, None),
        Kind::Layout => (
            Store::new(orca::fs::open(dir.join(&label)).expect("layout")),
            None,
            None,
        ),
        Kind::S3 => {
            let backend = S3Builder::new(format!("s3://{}/{label}", bucket()))
                .endpoint(MotoServer::shared().endpoint())
                .region("us-east-1")
                .credentials("orca-test-key", "orca-test-secret")
                .allow_http(true)
                .build()
                .expect("s3 backend");
            (Store::new(backend), None, None)
        }
        Kind::Registry => {
            let registry = RegistryBuilder::new(RegistryServer::shared().host())
                .build()
                .expect("registry");
            let repository = registry
                .repository(&format!("orca/{label}"))
                .await
                .expect("repository");
            (Store::new(repository), None, None)
        }
        Kind::OciArchive | Kind::DockerArchive => {
            let path = dir.join(format!("{label}.tar"));
            let format = if kind == Kind::OciArchive {
                ArchiveFormat::Oci
            } else {
                ArchiveFormat::Docker
            };
            let writer = ArchiveWriter::create(&path, format).expect("archive");
            let view = if kind == Kind::DockerArchive {
                writer.repository(DOCKER_NAME)
            } else {
                writer.clone()
            };
            (Store::new(view), Some(writer), Some(path))
        }
    };
    Place {
        kind,
        store,
        writer,
        path,
    }
}

/// A place of `kind` holding what `tag` names in `from` (with its
/// referrers), ready to be read.
pub(crate) async fn filled(kind: Kind, dir: &Path, from: &Store, tag: &str) -> Store {
    let place = empty(kind, dir).await;
    let options = CopyOptions {
        referrers: true,
        ..CopyOptions::default()
    };
    orca::copy(
        from,
        &Selector::Tag(tag.into()),
        &place.store,
        Some(tag),
        &options,
    )
    .await
    .unwrap_or_else(|e| panic!("fill a {kind:?}: {}", orca::error::chain(&e)));
    place.reopen().await
}
