//! `docker-archive`: the `docker save` / `docker load` tar. Import reads the
//! OCI layout inside when there is one and falls back to `manifest.json`
//! (turning each image into a Docker schema 2 manifest with gzip layers,
//! checked against the config's `diff_ids`). Export writes a tar that is at
//! once `docker load`-compatible and an OCI layout.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use orca_core::layout::{self, LayoutIndex};
use orca_core::{
    Algorithm, Descriptor, Digest, Digester, Document, Error, Manifest, MediaType, Platform,
    Result, Selector, Store,
};
use serde::{Deserialize, Serialize};

use crate::archive::{Staging, check_sizes, invalid, scan, stream_files};
use crate::backend::LayoutBackend;
use crate::oci_archive::{Imported, import_scanned};

const MANIFEST_JSON: &str = "manifest.json";
/// The containerd annotation `docker load` reads an image's name from.
const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// One image in `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The tag part of a `name:tag` repository tag.
fn tag_of(repo_tag: &str) -> Option<&str> {
    let after_slash = repo_tag.rfind('/').map_or(0, |i| i + 1);
    repo_tag[after_slash..]
        .rfind(':')
        .map(|i| &repo_tag[after_slash + i + 1..])
}

/// Imports the `docker-archive` at `archive` into the layout. Nothing is
/// imported unless the whole archive is sound.
pub async fn import_docker_archive(archive: &Path, into: &LayoutBackend) -> Result<Imported> {
    let archive = archive.to_owned();
    into.blocking("import", move |layout| {
        let found = scan(
            &archive,
            &[layout::OCI_LAYOUT_FILE, layout::INDEX_FILE, MANIFEST_JSON],
        )?;
        if found.metadata.contains_key(layout::OCI_LAYOUT_FILE) {
            return import_scanned(&archive, &found, layout);
        }
        let listing = found.metadata.get(MANIFEST_JSON).ok_or_else(|| {
            invalid(&archive, "it has neither an oci-layout file nor a manifest.json")
        })?;
        let images: Vec<SavedImage> = serde_json::from_slice(listing).map_err(|e| {
            invalid(&archive, format!("manifest.json is not a list of images ({e})"))
        })?;
        if images.is_empty() {
            return Err(invalid(&archive, "manifest.json lists no image"));
        }

        // Map every file manifest.json names to the archive file it ends at.
        let resolve = |name: &str| -> Result<String> {
            let path = crate::archive::normalise(name.as_bytes(), &archive)?;
            found.file(&path).map(str::to_owned).ok_or_else(|| {
                invalid(&archive, format!("manifest.json names {name:?}, which is not in the archive"))
            })
        };
        let mut configs = HashMap::new();
        let mut layers = HashMap::new();
        for image in &images {
            configs.insert(resolve(&image.config)?, ());
            for layer in &image.layers {
                layers.insert(resolve(layer)?, ());
            }
        }
        let wanted: HashMap<String, ()> = configs.keys().chain(layers.keys()).map(|k| (k.clone(), ())).collect();

        let mut staging = Staging::new(layout)?;
        // Per file: digest and size as staged, and the uncompressed digest
        // of layers orca compressed.
        let mut staged: HashMap<String, (Digest, u64, Option<Digest>)> = HashMap::new();
        stream_files(&archive, &wanted, |path, reader| {
            if configs.contains_key(path) {
                let (digest, size) = staging.stage(reader, Algorithm::Sha256, None)?;
                staged.insert(path.to_owned(), (digest, size, None));
            }
            if layers.contains_key(path) {
                let mut buffered = BufReader::with_capacity(1024 * 1024, reader);
                let head = buffered.fill_buf().map_err(|e| invalid(&archive, format!("{path} cannot be read ({e})")))?;
                let gzipped = head.starts_with(&[0x1f, 0x8b]);
                if gzipped {
                    let (digest, size) = staging.stage(&mut buffered, Algorithm::Sha256, None)?;
                    staged.insert(path.to_owned(), (digest, size, None));
                } else {
                    let mut diff_id = None;
                    let mut compress = |input: &mut dyn Read, output: &mut dyn Write| -> io::Result<()> {
                        let mut hashing = HashingReader {
                            inner: input,
                            digester: Digester::new(Algorithm::Sha256),
                        };
                        let mut encoder = GzEncoder::new(output, Compression::fast());
                        io::copy(&mut hashing, &mut encoder)?;
                        encoder.finish()?;
                        diff_id = Some(hashing.digester.finish());
                        Ok(())
                    };
                    let (digest, size) = staging.stage(&mut buffered, Algorithm::Sha256, Some(&mut compress))?;
                    staged.insert(path.to_owned(), (digest, size, diff_id));
                }
            }
            Ok(())
        })?;

        let mut tagged: Vec<(Descriptor, Vec<String>)> = Vec::new();
        for image in &images {
            let config_path = resolve(&image.config)?;
            let (config_digest, config_size, _) = staged[&config_path].clone();
            let config_bytes = staging
                .read(&config_digest, orca_core::capabilities::DEFAULT_MAX_MANIFEST_SIZE)?
                .unwrap_or_default();
            let diff_ids = diff_ids(&config_bytes, &image.config, &archive)?;
            if diff_ids.len() != image.layers.len() {
                return Err(invalid(
                    &archive,
                    format!(
                        "{} lists {} layers but its config has {} diff_ids",
                        image.config,
                        image.layers.len(),
                        diff_ids.len()
                    ),
                ));
            }
            let mut layer_descriptors = Vec::new();
            for (layer, expected) in image.layers.iter().zip(&diff_ids) {
                let (digest, size, diff_id) = staged[&resolve(layer)?].clone();
                if let Some(actual) = diff_id
                    && &actual != expected
                {
                    return Err(invalid(
                        &archive,
                        format!("layer {layer} is {actual} uncompressed, but the config's diff_id says {expected}"),
                    ));
                }
                layer_descriptors.push(Descriptor::new(MediaType::DOCKER_LAYER_GZIP, digest, size));
            }
            let config = Descriptor::new(MediaType::DOCKER_CONFIG, config_digest, config_size);
            let manifest = Manifest {
                media_type: Some(MediaType::DOCKER_MANIFEST),
                ..Manifest::new(config, layer_descriptors)
            };
            let raw = manifest.to_raw()?;
            staging.stage_bytes(raw.bytes())?;
            let tags = image
                .repo_tags
                .iter()
                .flatten()
                .map(|t| {
                    let tag = tag_of(t).unwrap_or("latest");
                    Selector::tag(tag)
                        .map(|_| tag.to_owned())
                        .map_err(|e| invalid(&archive, format!("repository tag {t:?}: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            tagged.push((raw.descriptor(), tags));
        }
        let roots: Vec<Descriptor> = tagged.iter().map(|(d, _)| d.clone()).collect();
        check_sizes(&staging, &roots, &archive)?;

        let blobs = staging.blobs.len();
        let mut all_tags: Vec<String> = tagged.iter().flat_map(|(_, t)| t.clone()).collect();
        all_tags.sort();
        all_tags.dedup();
        staging.publish(|index| {
            for (descriptor, tags) in &tagged {
                if tags.is_empty() {
                    index.put(descriptor.clone());
                }
                for tag in tags {
                    index.set_tag(descriptor, tag);
                }
            }
        })?;
        Ok(Imported {
            tags: all_tags,
            roots: roots.len(),
            blobs,
        })
    })
    .await
}

fn diff_ids(config: &[u8], name: &str, archive: &Path) -> Result<Vec<Digest>> {
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(Deserialize)]
    struct RootFs {
        diff_ids: Vec<Digest>,
    }
    let config: Config = serde_json::from_slice(config).map_err(|e| {
        invalid(
            archive,
            format!("config {name} has no valid rootfs.diff_ids ({e})"),
        )
    })?;
    Ok(config.rootfs.diff_ids)
}

struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    digester: Digester,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes the image `selector` names in `from` as a `docker-archive` at
/// `archive`, tagged with `repo_tags` (`name:tag`). An index is narrowed to
/// the member matching `platform`. The tar also carries `oci-layout` and
/// `index.json`, so it is an OCI layout too. Returns the manifest written.
pub async fn export_docker_archive(
    from: &Store,
    selector: &Selector,
    platform: Option<&Platform>,
    repo_tags: &[String],
    archive: &Path,
) -> Result<Descriptor> {
    for t in repo_tags {
        let valid = tag_of(t).is_some_and(|tag| Selector::tag(tag).is_ok());
        if !valid {
            return Err(Error::InvalidInput {
                what: format!("repository tag {t:?}"),
                reason: "expected name:tag".into(),
            });
        }
    }
    let (mut descriptor, mut raw) = from.fetch_manifest(selector).await?;
    if let Document::Index(index) = raw.parse()? {
        let available: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
            .collect();
        let chosen = platform
            .and_then(|want| {
                index
                    .manifests
                    .iter()
                    .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
            })
            .ok_or_else(|| Error::InvalidInput {
                what: format!("export of index {} to a docker-archive", descriptor.digest),
                reason: format!(
                    "a docker-archive holds one platform; choose one of [{}]",
                    available.join(", ")
                ),
            })?;
        let (member, member_raw) = from
            .fetch_manifest(&Selector::Digest(chosen.digest.clone()))
            .await?;
        descriptor = member;
        raw = member_raw;
    }
    let Document::Manifest(manifest) = raw.parse()? else {
        return Err(Error::InvalidInput {
            what: format!("manifest {}", descriptor.digest),
            reason: "the chosen platform's entry is itself an index".into(),
        });
    };

    let saved = vec![SavedImage {
        config: layout::blob_path(&manifest.config.digest),
        repo_tags: Some(repo_tags.to_vec()),
        layers: manifest
            .layers
            .iter()
            .map(|l| layout::blob_path(&l.digest))
            .collect(),
    }];
    let listing = serde_json::to_vec(&saved).map_err(|e| Error::InvalidInput {
        what: "manifest.json".into(),
        reason: e.to_string(),
    })?;
    let mut index = LayoutIndex::new();
    if repo_tags.is_empty() {
        index.put(descriptor.plain());
    }
    for repo_tag in repo_tags {
        let mut entry = descriptor.plain();
        entry
            .annotations
            .insert(CONTAINERD_IMAGE_NAME.to_owned(), repo_tag.clone());
        entry.annotations.insert(
            orca_core::model::ANNOTATION_REF_NAME.to_owned(),
            tag_of(repo_tag).unwrap_or("latest").to_owned(),
        );
        index.put(entry);
    }

    let mut tar = crate::tar_writer::TarWriter::create(archive);
    tar.bytes(MANIFEST_JSON, Bytes::from(listing)).await?;
    tar.bytes(layout::OCI_LAYOUT_FILE, layout::marker()).await?;
    tar.bytes(layout::INDEX_FILE, index.to_bytes()?).await?;
    tar.bytes(&layout::blob_path(&descriptor.digest), raw.bytes().clone())
        .await?;
    let mut written = std::collections::HashSet::new();
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if !written.insert(blob.digest.clone()) {
            continue;
        }
        let body = from.fetch(blob).await?;
        tar.file(&layout::blob_path(&blob.digest), body).await?;
    }
    tar.finish(true).await?;
    Ok(descriptor)
}

#[cfg(test)]
mod tests {
    use super::tag_of;

    #[test]
    fn tags_of_repository_tags() {
        assert_eq!(tag_of("alpine:3.19"), Some("3.19"));
        assert_eq!(tag_of("localhost:5000/app:v1"), Some("v1"));
        assert_eq!(tag_of("localhost:5000/app"), None);
    }
}
