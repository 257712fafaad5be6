//! Index creation, as `docker buildx imagetools create` does it: one index
//! from several sources — manifests or indexes, from any repository or
//! backend. Members are de-duplicated by digest with their platforms and
//! annotations merged; a manifest without a platform gets it from its image
//! config. The result is a Docker manifest list when every member is
//! Docker-typed (and then carries no annotations) and an OCI index
//! otherwise. Every member is copied to the target by digest first; only
//! the finished index is pushed by tag, so the tag never names something
//! half-made.

use std::collections::BTreeMap;

use crate::copy::copy_graph;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Document, Index, MediaType, Platform, RawManifest, Selector};
use crate::store::Store;

/// One source of members: a manifest or index in some store.
#[derive(Clone, Debug)]
pub struct Source {
    /// Where it is.
    pub store: Store,
    /// Which manifest or index.
    pub selector: Selector,
}

impl Source {
    /// The manifest or index `selector` names in `store`.
    pub fn new(store: Store, selector: Selector) -> Self {
        Source { store, selector }
    }
}

/// Annotations for a new index.
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    /// On the index itself.
    pub index: BTreeMap<String, String>,
    /// On member descriptors: for every member, or only those of a platform.
    pub descriptors: Vec<(Option<Platform>, String, String)>,
}

impl Annotations {
    fn is_empty(&self) -> bool {
        self.index.is_empty() && self.descriptors.is_empty()
    }
}

/// What [`create`] pushed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Created {
    /// The index's descriptor.
    pub descriptor: Descriptor,
    /// Its exact bytes.
    pub raw: RawManifest,
}

/// Reads a manifest's platform from its image config.
async fn platform_from_config(store: &Store, config: &Descriptor) -> Result<Platform> {
    let bytes = store.fetch_bytes(config).await?;
    let platform: Platform =
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
            what: format!("image config {} in {store}", config.digest),
            reason: "it does not name a platform".into(),
            source: Some(Box::new(e)),
        })?;
    if platform.os.is_empty() || platform.architecture.is_empty() {
        return Err(Error::InvalidManifest {
            what: format!("image config {} in {store}", config.digest),
            reason: "it has no os or architecture".into(),
            source: None,
        });
    }
    Ok(Platform {
        extra: BTreeMap::new(),
        ..platform
    }
    .normalized())
}

/// Adds `entry`, or merges it into the member with the same digest: a
/// platform replaces, annotations are added.
fn add(members: &mut Vec<Descriptor>, entry: Descriptor) {
    match members.iter_mut().find(|m| m.digest == entry.digest) {
        Some(existing) => {
            if entry.platform.is_some() {
                existing.platform = entry.platform;
            }
            existing.annotations.extend(entry.annotations);
        }
        None => members.push(entry),
    }
}

/// The platform of member `entry` of an index in `store`, from its
/// descriptor or else from its image config.
async fn member_platform(store: &Store, entry: &Descriptor) -> Result<Platform> {
    if let Some(p) = &entry.platform
        && !p.os.is_empty()
        && !p.architecture.is_empty()
    {
        return Ok(p.clone());
    }
    let bytes = store.fetch_bytes(entry).await?;
    match RawManifest::new(entry.media_type.clone(), bytes)
        .parse()
        .map_err(|e| e.naming(&entry.digest))?
    {
        Document::Manifest(manifest) => platform_from_config(store, &manifest.config).await,
        _ => Err(Error::InvalidInput {
            what: format!("member {} of an index in {store}", entry.digest),
            reason: "it has no platform, and it is not an image manifest whose config could \
                     name one"
                .into(),
        }),
    }
}

/// Builds one index from `sources`, copies every member into `target` by
/// digest, then pushes the index (tagged `tag` if given).
///
/// Every input is read and checked before anything is copied: no sources
/// or no members, a member whose platform cannot be found, schema 1, and
/// annotations when the result is a Docker manifest list are refused.
/// A single index source without annotations is copied as it is, byte for
/// byte.
pub async fn create(
    target: &Store,
    sources: &[Source],
    annotations: &Annotations,
    tag: Option<&str>,
) -> Result<Created> {
    if sources.is_empty() {
        return Err(Error::InvalidInput {
            what: "index creation".into(),
            reason: "no sources given".into(),
        });
    }
    let mut members = Vec::new();
    let mut single_index = None;
    let mut graphs = Vec::new();
    for source in sources {
        let (descriptor, raw) = source.store.fetch_manifest(&source.selector).await?;
        match raw.parse().map_err(|e| e.naming(&descriptor.digest))? {
            Document::Index(index) => {
                if index.manifests.is_empty() {
                    return Err(Error::InvalidInput {
                        what: format!("index {} in {}", descriptor.digest, source.store),
                        reason: "it names no manifests".into(),
                    });
                }
                for member in &index.manifests {
                    let mut entry = member.clone();
                    entry.platform = Some(member_platform(&source.store, member).await?);
                    add(&mut members, entry);
                }
                single_index = Some((descriptor.clone(), raw));
            }
            Document::Manifest(manifest) => {
                let mut entry = Descriptor::new(
                    descriptor.media_type.clone(),
                    descriptor.digest.clone(),
                    descriptor.size,
                );
                entry.platform = match descriptor.platform.clone() {
                    Some(p) if !p.os.is_empty() && !p.architecture.is_empty() => Some(p),
                    _ => Some(platform_from_config(&source.store, &manifest.config).await?),
                };
                add(&mut members, entry);
                single_index = None;
            }
            Document::Artifact(_) => {
                return Err(Error::InvalidInput {
                    what: format!("{} in {}", descriptor.digest, source.store),
                    reason: "an artifact manifest cannot be a member of an image index".into(),
                });
            }
            Document::Schema1(_) => {
                return Err(Error::InvalidInput {
                    what: format!("{} in {}", descriptor.digest, source.store),
                    reason: "a schema-1 manifest cannot be a member of an image index".into(),
                });
            }
        }
        graphs.push((source.store.clone(), descriptor));
    }
    if members.is_empty() {
        return Err(Error::InvalidInput {
            what: "index creation".into(),
            reason: "the sources name no manifests".into(),
        });
    }
    let docker = members.iter().all(|m| m.media_type.is_docker());
    if docker && !annotations.is_empty() {
        return Err(Error::InvalidInput {
            what: "annotations".into(),
            reason: "every member is a Docker manifest, so the result is a Docker manifest \
                     list, which cannot carry annotations"
                .into(),
        });
    }
    for (store, descriptor) in &graphs {
        copy_graph(store, target, descriptor).await?;
    }
    if let (1, Some((descriptor, raw)), true) =
        (sources.len(), &single_index, annotations.is_empty())
    {
        // Under the source's own digest (sha512 stays sha512), not one
        // computed again here.
        let mut descriptor = descriptor.plain();
        descriptor.media_type = raw.media_type().clone();
        if let Some(tag) = tag {
            target.tag(&descriptor, tag).await?;
        }
        return Ok(Created {
            descriptor,
            raw: raw.clone(),
        });
    }
    let mut index = Index::new();
    if docker {
        index.media_type = Some(MediaType::DOCKER_MANIFEST_LIST);
    } else {
        index.annotations = annotations.index.clone();
        for (platform, key, value) in &annotations.descriptors {
            for member in &mut members {
                let applies = match (platform, &member.platform) {
                    (None, _) => true,
                    (Some(wanted), Some(have)) => wanted.matches(have),
                    (Some(_), None) => false,
                };
                if applies {
                    member.annotations.insert(key.clone(), value.clone());
                }
            }
        }
    }
    index.manifests = members;
    let raw = index.to_raw()?;
    let descriptor = target.push_manifest(&raw, tag).await?;
    Ok(Created { descriptor, raw })
}
