//! The `docker save` / `docker load` format's own parts: `manifest.json`
//! (one entry per image: config, layers, `repo:tag` names), turned into
//! Docker schema 2 manifests when reading an archive that has no OCI
//! layout inside, and written next to the layout when orca writes one.
//!
//! Layers keep the bytes they have in the archive: an uncompressed layer
//! is addressed by its config's `diff_id` (which `Store` then checks as the
//! bytes pass); a gzip or zstd layer is hashed once when the archive is
//! opened, and decompressed on the way so its `diff_id` is checked too.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use bytes::Bytes;
use orca_core::{Algorithm, Descriptor, Digest, Digester, Manifest, MediaType, Result};
use serde::{Deserialize, Serialize};

use crate::archive::{Span, TarIndex, invalid, io_error, normalise, read_span};

/// The file that lists a docker-archive's images.
pub(crate) const MANIFEST_JSON: &str = "manifest.json";
/// The containerd annotation `docker load` reads an image's name from.
pub(crate) const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
/// An uncompressed Docker layer.
const DOCKER_LAYER_TAR: MediaType =
    MediaType::from_static("application/vnd.docker.image.rootfs.diff.tar");
/// A zstd-compressed Docker layer, as containerd names it.
const DOCKER_LAYER_ZSTD: MediaType =
    MediaType::from_static("application/vnd.docker.image.rootfs.diff.tar.zstd");
/// Configs and `manifest.json` are read into memory up to this size.
const METADATA_LIMIT: u64 = 4 * 1024 * 1024;

/// One image in `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SavedImage {
    pub(crate) config: String,
    #[serde(default)]
    pub(crate) repo_tags: Option<Vec<String>>,
    pub(crate) layers: Vec<String>,
}

/// Splits `repo:tag` into its repository and tag (`latest` when absent).
pub(crate) fn split_name(name: &str) -> (&str, &str) {
    let after_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[after_slash..].rfind(':') {
        Some(i) => (&name[..after_slash + i], &name[after_slash + i + 1..]),
        None => (name, "latest"),
    }
}

/// What `manifest.json` describes, in content terms.
#[derive(Debug, Default)]
pub(crate) struct Synthesized {
    /// Configs and layers, by digest, where they lie in the tar.
    pub(crate) blobs: HashMap<Digest, Span>,
    /// The manifests made for the images.
    pub(crate) manifests: HashMap<Digest, Bytes>,
    /// `(name, manifest)` for each `repo:tag`; `(None, manifest)` for an
    /// image without names.
    pub(crate) images: Vec<(Option<String>, Descriptor)>,
}

/// The compression of a layer, from its first bytes.
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn sniff(archive: &Path, span: Span) -> Result<Compression> {
    let mut file = File::open(archive).map_err(|e| io_error(archive, "open", e))?;
    file.seek(SeekFrom::Start(span.offset))
        .map_err(|e| io_error(archive, "read", e))?;
    let mut head = [0u8; 4];
    let n = file
        .take(4)
        .read(&mut head)
        .map_err(|e| io_error(archive, "read", e))?;
    Ok(match &head[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}

struct HashingReader<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

struct HashingSink(Digester);

impl io::Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hashes a compressed layer as it is and, decompressed, as its diff_id.
fn hash_compressed(
    archive: &Path,
    span: Span,
    compression: &Compression,
    name: &str,
) -> Result<(Digest, Digest)> {
    let mut file = File::open(archive).map_err(|e| io_error(archive, "open", e))?;
    file.seek(SeekFrom::Start(span.offset))
        .map_err(|e| io_error(archive, "read", e))?;
    let mut compressed = HashingReader {
        inner: io::BufReader::with_capacity(1024 * 1024, file.take(span.size)),
        digester: Digester::new(Algorithm::Sha256),
    };
    let mut uncompressed = HashingSink(Digester::new(Algorithm::Sha256));
    let damaged = |e: io::Error| {
        invalid(
            archive,
            format!("layer {name} cannot be decompressed ({e})"),
        )
    };
    match compression {
        Compression::Gzip => {
            let mut decoder = flate2::read::MultiGzDecoder::new(&mut compressed);
            io::copy(&mut decoder, &mut uncompressed).map_err(damaged)?;
        }
        Compression::Zstd => {
            let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut compressed)
                .map_err(|e| invalid(archive, format!("layer {name} is not valid zstd ({e})")))?;
            io::copy(&mut decoder, &mut uncompressed).map_err(damaged)?;
        }
        Compression::None => {}
    }
    // Whatever follows the compressed stream still belongs to the blob.
    io::copy(&mut compressed, &mut io::sink()).map_err(|e| io_error(archive, "read", e))?;
    Ok((compressed.digester.finish(), uncompressed.0.finish()))
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

/// The most images one `manifest.json` may list.
const MAX_IMAGES: usize = 10_000;

/// Turns the archive's `manifest.json` into manifests and content.
pub(crate) fn synthesize(archive: &Path, tar: &TarIndex) -> Result<Synthesized> {
    let listing = tar.get(MANIFEST_JSON).ok_or_else(|| {
        invalid(
            archive,
            "it has neither an oci-layout file nor a manifest.json",
        )
    })?;
    let listing = read_span(archive, listing, METADATA_LIMIT, MANIFEST_JSON)?;
    let images: Vec<SavedImage> = serde_json::from_slice(&listing).map_err(|e| {
        invalid(
            archive,
            format!("manifest.json is not a list of images ({e})"),
        )
    })?;
    if images.is_empty() {
        return Err(invalid(archive, "manifest.json lists no image"));
    }
    let find = |name: &str| -> Result<Span> {
        let path = normalise(name.as_bytes(), archive)?;
        tar.get(&path).ok_or_else(|| {
            invalid(
                archive,
                format!("manifest.json names {name:?}, which is not in the archive"),
            )
        })
    };
    if images.len() > MAX_IMAGES {
        return Err(invalid(
            archive,
            format!(
                "manifest.json lists {} images, more than the {MAX_IMAGES} orca reads",
                images.len()
            ),
        ));
    }
    let mut out = Synthesized::default();
    // Layers shared by several images are hashed once, and a config named
    // by several images read once (backends m21: each entry read and
    // parsed its config again, up to 4 MiB a time).
    let mut layers: HashMap<String, Descriptor> = HashMap::new();
    let mut configs: HashMap<String, (Descriptor, Vec<Digest>)> = HashMap::new();
    for image in &images {
        let span = find(&image.config)?;
        let (config, diff_ids) = match configs.get(&image.config) {
            Some(known) => known.clone(),
            None => {
                let config_bytes = read_span(archive, span, METADATA_LIMIT, &image.config)?;
                let config = Descriptor::of(MediaType::DOCKER_CONFIG, &config_bytes);
                let diff_ids = diff_ids(&config_bytes, &image.config, archive)?;
                configs.insert(image.config.clone(), (config.clone(), diff_ids.clone()));
                (config, diff_ids)
            }
        };
        out.blobs.insert(config.digest.clone(), span);
        if diff_ids.len() != image.layers.len() {
            return Err(invalid(
                archive,
                format!(
                    "{} lists {} layers but its config has {} diff_ids",
                    image.config,
                    image.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut descriptors = Vec::new();
        for (layer, diff_id) in image.layers.iter().zip(&diff_ids) {
            let key = normalise(layer.as_bytes(), archive)?;
            if let Some(known) = layers.get(&key) {
                descriptors.push(known.clone());
                continue;
            }
            let span = find(layer)?;
            let compression = sniff(archive, span)?;
            let descriptor = match compression {
                Compression::None => Descriptor::new(DOCKER_LAYER_TAR, diff_id.clone(), span.size),
                Compression::Gzip | Compression::Zstd => {
                    let (digest, uncompressed) =
                        hash_compressed(archive, span, &compression, layer)?;
                    if &uncompressed != diff_id {
                        return Err(invalid(
                            archive,
                            format!(
                                "layer {layer} is {uncompressed} uncompressed, but the config's diff_id says {diff_id}"
                            ),
                        ));
                    }
                    let media_type = match compression {
                        Compression::Zstd => DOCKER_LAYER_ZSTD,
                        _ => MediaType::DOCKER_LAYER_GZIP,
                    };
                    Descriptor::new(media_type, digest, span.size)
                }
            };
            out.blobs.insert(descriptor.digest.clone(), span);
            layers.insert(key, descriptor.clone());
            descriptors.push(descriptor);
        }
        let manifest = Manifest {
            media_type: Some(MediaType::DOCKER_MANIFEST),
            ..Manifest::new(config, descriptors)
        };
        let raw = manifest.to_raw()?;
        let descriptor = raw.descriptor();
        out.manifests
            .insert(descriptor.digest.clone(), raw.bytes().clone());
        let names = image.repo_tags.clone().unwrap_or_default();
        if names.is_empty() {
            out.images.push((None, descriptor.clone()));
        }
        for name in names {
            let (_, tag) = split_name(&name);
            orca_core::Selector::tag(tag)
                .map_err(|e| invalid(archive, format!("repository tag {name:?}: {e}")))?;
            out.images.push((Some(name), descriptor.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(split_name("alpine:3.19"), ("alpine", "3.19"));
        assert_eq!(
            split_name("localhost:5000/app:v1"),
            ("localhost:5000/app", "v1")
        );
        assert_eq!(
            split_name("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
    }
}
