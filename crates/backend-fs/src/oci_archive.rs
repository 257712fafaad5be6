//! `oci-archive`: an OCI image layout in a tar, as skopeo writes it. Import
//! verifies every blob against its name and every descriptor's size before
//! anything is published; export streams the layout's blobs, verified, into
//! a tar that appears only when complete.

use std::collections::HashMap;
use std::path::Path;

use orca_core::layout::{self, LayoutIndex};
use orca_core::{Digest, Result, Store};

use crate::archive::{Staging, check_sizes, invalid, scan, stream_files};
use crate::backend::LayoutBackend;

/// What an import brought in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Imported {
    /// Tags now in the layout, sorted.
    pub tags: Vec<String>,
    /// Root manifests imported (tagged or not).
    pub roots: usize,
    /// Blobs in the archive.
    pub blobs: usize,
}

/// Imports the `oci-archive` at `archive` into the layout: every blob and
/// every `index.json` entry (tags replace tags of the same name). Nothing
/// is imported unless the whole archive is sound.
pub async fn import_oci_archive(archive: &Path, into: &LayoutBackend) -> Result<Imported> {
    let archive = archive.to_owned();
    into.blocking("import", move |layout| {
        let found = scan(&archive, &[layout::OCI_LAYOUT_FILE, layout::INDEX_FILE])?;
        import_scanned(&archive, &found, layout)
    })
    .await
}

/// Imports an archive already scanned and known to hold a layout.
pub(crate) fn import_scanned(
    archive: &Path,
    found: &crate::archive::Scan,
    layout: &crate::files::Layout,
) -> Result<Imported> {
    let marker = found.metadata.get(layout::OCI_LAYOUT_FILE).ok_or_else(|| {
        invalid(
            archive,
            "it has no oci-layout file, so it is not an OCI archive",
        )
    })?;
    layout::check_marker(
        marker,
        &format!("{}:{}", archive.display(), layout::OCI_LAYOUT_FILE),
    )?;
    let index_bytes = found
        .metadata
        .get(layout::INDEX_FILE)
        .ok_or_else(|| invalid(archive, "it has no index.json"))?;
    let index = LayoutIndex::parse(
        index_bytes,
        &format!("{}:{}", archive.display(), layout::INDEX_FILE),
    )?;

    // Every name under blobs/ must be a digest; links count under their own name.
    let mut expected: HashMap<String, Vec<Digest>> = HashMap::new();
    let names = found.files.keys().chain(found.links.keys());
    for name in names.filter(|n| n.starts_with("blobs/")) {
        let digest = name
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(alg, hex)| Digest::parse(&format!("{alg}:{hex}")).ok())
            .ok_or_else(|| {
                invalid(
                    archive,
                    format!("entry {name:?} under blobs/ is not named by a digest"),
                )
            })?;
        let file = found.file(name).unwrap_or(name).to_owned();
        expected.entry(file).or_default().push(digest);
    }

    let mut staging = Staging::new(layout)?;
    let wanted: HashMap<String, ()> = expected.keys().map(|k| (k.clone(), ())).collect();
    stream_files(archive, &wanted, |path, reader| {
        let digests = &expected[path];
        let (actual, _) = staging.stage(reader, digests[0].algorithm(), None)?;
        if let Some(wrong) = digests.iter().find(|d| **d != actual) {
            return Err(invalid(
                archive,
                format!("blob {wrong} does not match its name: its content is {actual}"),
            ));
        }
        Ok(())
    })?;
    check_sizes(&staging, index.entries(), archive)?;

    let blobs = staging.blobs.len();
    let entries = index.entries().to_vec();
    let roots = entries.len();
    staging.publish(|target| {
        for entry in entries {
            target.put(entry);
        }
    })?;
    Ok(Imported {
        tags: index.tags(),
        roots,
        blobs,
    })
}

/// Writes the layout as an `oci-archive` at `archive`: `oci-layout`,
/// `index.json` and every blob, each verified as it is read.
pub async fn export_oci_archive(from: &LayoutBackend, archive: &Path) -> Result<()> {
    let (index, blobs) = from
        .blocking("export", |layout| {
            let index = layout.read_index()?;
            Ok((index, layout.list_blobs()?))
        })
        .await?;
    let store = Store::new(from.clone());
    let mut tar = crate::tar_writer::TarWriter::create(archive);
    tar.bytes(layout::OCI_LAYOUT_FILE, layout::marker()).await?;
    tar.bytes(layout::INDEX_FILE, index.to_bytes()?).await?;
    for (digest, size) in blobs {
        let descriptor =
            orca_core::Descriptor::new(orca_core::MediaType::OCTET_STREAM, digest, size);
        let body = store.fetch(&descriptor).await?;
        tar.file(&layout::blob_path(&descriptor.digest), body)
            .await?;
    }
    tar.finish(from.is_durable()).await
}
