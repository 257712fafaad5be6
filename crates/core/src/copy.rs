//! The copy engine: copies the graph under a manifest or index from one
//! [`Store`] to another, whatever backends they wrap.
//!
//! It first walks the graph (reading only manifests, which are small) into
//! a plan: the manifests in an order where every child comes before its
//! parent, and the set of blobs, each listed once however often it is
//! named. Manifests the target already has are not descended into. Then
//! the blobs move with bounded concurrency — mounted instead when the
//! caller names a repository of the same registry, skipped when the target
//! has them, and skipped when they live at external URLs unless asked —
//! and the manifests are pushed in plan order, the root last and only then
//! tagged, so a tag never names something half-copied. Both stores verify
//! every byte. Optionally the referrers of copied manifests and their
//! `<alg>-<hex>.*` digest tags come along, and a platform filter narrows an
//! index. Progress is reported as [`Event`]s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, Document, Index, Platform, RawManifest, Selector};
use crate::referrers::fallback_tag;
use crate::store::Store;

/// What happened to one piece of content.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The content was transferred.
    Copied(Descriptor),
    /// The content was mounted from another repository.
    Mounted(Descriptor),
    /// The target already had it.
    Present(Descriptor),
    /// A layer at external URLs, left where it is.
    External(Descriptor),
}

/// Receives progress events (from several tasks at once).
pub trait Progress: Send + Sync {
    /// One piece of content is done.
    fn event(&self, event: &Event);
}

/// How to copy.
#[derive(Clone)]
pub struct CopyOptions {
    /// Blobs in flight at once (at least 1).
    pub concurrency: usize,
    /// Keep only these platforms of an index: one platform makes its
    /// manifest the root; several make a new index of the matches.
    pub platforms: Vec<Platform>,
    /// Copy the referrers of every copied manifest, recursively.
    pub referrers: bool,
    /// Copy `<alg>-<hex>.*` tags (cosign-style signatures and
    /// attestations) of every copied manifest, with their graphs.
    pub digest_tags: bool,
    /// Copy layers that live at external URLs too.
    pub external: bool,
    /// A repository of the target's registry that holds the blobs already:
    /// mount from it instead of transferring.
    pub mount_from: Option<String>,
    /// Where events go.
    pub progress: Option<Arc<dyn Progress>>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            concurrency: 4,
            platforms: Vec::new(),
            referrers: false,
            digest_tags: false,
            external: false,
            mount_from: None,
            progress: None,
        }
    }
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("concurrency", &self.concurrency)
            .field("platforms", &self.platforms)
            .field("referrers", &self.referrers)
            .field("digest_tags", &self.digest_tags)
            .field("external", &self.external)
            .field("mount_from", &self.mount_from)
            .finish_non_exhaustive()
    }
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// The root that was copied (after any platform filter).
    pub root: Option<Descriptor>,
    /// Blobs and manifests transferred.
    pub copied: u64,
    /// Bytes transferred.
    pub bytes: u64,
    /// Blobs mounted.
    pub mounted: u64,
    /// Content the target already had.
    pub present: u64,
    /// External layers left out.
    pub external: u64,
    /// Referrers copied (by the graph of each, counted once).
    pub referrers: u64,
    /// Digest tags set on the target.
    pub digest_tags: u64,
}

/// The walk's result.
#[derive(Default)]
struct Plan {
    /// Manifests to push, children before parents.
    manifests: Vec<(Descriptor, RawManifest)>,
    /// Blobs to transfer, each once.
    blobs: Vec<Descriptor>,
    /// Digest tags to set once their manifests are there.
    tags: Vec<(String, Descriptor)>,
    seen: HashSet<Digest>,
    referrers: u64,
    present: Vec<Descriptor>,
}

struct Copier<'a> {
    source: &'a Store,
    target: &'a Store,
    options: &'a CopyOptions,
    /// The source's tags, read once when digest tags are wanted.
    source_tags: Vec<String>,
}

impl Copier<'_> {
    fn emit(&self, event: Event) {
        if let Some(progress) = &self.options.progress {
            progress.event(&event);
        }
    }

    /// Adds `node` and what hangs off it to `plan`, children first.
    async fn walk(&self, node: Descriptor, plan: &mut Plan) -> Result<()> {
        enum Step {
            Visit(Descriptor),
            Emit(Descriptor, RawManifest),
        }
        let mut stack = vec![Step::Visit(node)];
        // Referrers and digest-tagged content go after everything else, so
        // after their subjects.
        let mut later = Vec::new();
        loop {
            let step = match stack.pop() {
                Some(step) => step,
                None => match later.pop() {
                    Some(extra) => Step::Visit(extra),
                    None => break,
                },
            };
            let node = match step {
                Step::Emit(node, raw) => {
                    plan.manifests.push((node, raw));
                    continue;
                }
                Step::Visit(node) => node,
            };
            if !plan.seen.insert(node.digest.clone()) {
                continue;
            }
            if !node.media_type.is_manifest() {
                plan.blobs.push(node);
                continue;
            }
            later.extend(self.extras(&node, plan).await?);
            if self.target.exists(&node).await? {
                plan.present.push(node);
                continue;
            }
            let bytes = self.source.fetch_bytes(&node).await?;
            let raw = RawManifest::new(node.media_type.clone(), bytes);
            let document = raw.parse()?;
            let children: Vec<Descriptor> = document.children().into_iter().cloned().collect();
            stack.push(Step::Emit(node, raw));
            for child in children.into_iter().rev() {
                stack.push(Step::Visit(child));
            }
        }
        Ok(())
    }

    /// The referrers and digest-tagged manifests of `node` to copy too.
    async fn extras(&self, node: &Descriptor, plan: &mut Plan) -> Result<Vec<Descriptor>> {
        let mut extras = Vec::new();
        if self.options.referrers {
            let listing = self.source.referrers(node, None).await?;
            for referrer in listing.manifests {
                plan.referrers += 1;
                extras.push(Descriptor::new(
                    referrer.media_type,
                    referrer.digest,
                    referrer.size,
                ));
            }
        }
        if self.options.digest_tags {
            let prefix = format!("{}.", fallback_tag(&node.digest));
            for tag in self.source_tags.iter().filter(|t| t.starts_with(&prefix)) {
                let tagged = self.source.resolve(&Selector::Tag(tag.clone())).await?;
                plan.tags.push((tag.clone(), tagged.clone()));
                extras.push(tagged);
            }
        }
        Ok(extras)
    }

    /// Moves one blob: mount, skip or transfer. Returns its event.
    async fn blob(&self, blob: Descriptor) -> Result<Event> {
        if !blob.urls.is_empty() && !self.options.external {
            return Ok(Event::External(blob));
        }
        if let Some(from) = &self.options.mount_from
            && self.target.mount(&blob, from).await?
        {
            return Ok(Event::Mounted(blob));
        }
        if self.target.exists(&blob).await? {
            return Ok(Event::Present(blob));
        }
        let body = self.source.fetch(&blob).await?;
        self.target.push(&blob, body).await?;
        Ok(Event::Copied(blob))
    }
}

/// Picks the root: the resolved manifest, or what the platform filter
/// keeps of an index.
async fn choose_root(
    source: &Store,
    selector: &Selector,
    platforms: &[Platform],
) -> Result<(Descriptor, Option<RawManifest>)> {
    if platforms.is_empty() {
        // The walk reads the manifest itself; resolving is enough here.
        return Ok((source.resolve(selector).await?, None));
    }
    let (descriptor, raw) = source.fetch_manifest(selector).await?;
    let Document::Index(index) = raw.parse()? else {
        // A single manifest is copied as it is, as skopeo and crane do.
        return Ok((descriptor, None));
    };
    let matching: Vec<Descriptor> = index
        .manifests
        .iter()
        .filter(|m| {
            m.platform
                .as_ref()
                .is_some_and(|have| platforms.iter().any(|want| want.matches(have)))
        })
        .cloned()
        .collect();
    match matching.as_slice() {
        [] => Err(Error::NotFound {
            what: format!(
                "a manifest for {} in index {}",
                platforms
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                descriptor.digest
            ),
            place: source.to_string(),
        }),
        [one] if platforms.len() == 1 => Ok((one.clone(), None)),
        _ => {
            let filtered = Index {
                manifests: matching,
                ..(*index).clone()
            };
            let raw = filtered.to_raw()?;
            Ok((raw.descriptor(), Some(raw)))
        }
    }
}

/// Copies what `selector` names in `source` to `target`, tagging the root
/// `tag` there when given; see the module documentation.
pub async fn copy(
    source: &Store,
    selector: &Selector,
    target: &Store,
    tag: Option<&str>,
    options: &CopyOptions,
) -> Result<CopyReport> {
    let (root, new_root) = choose_root(source, selector, &options.platforms).await?;
    copy_root(source, root, new_root, target, tag, options).await
}

/// [`copy`] once the root is known: `new_root` is the index a platform
/// filter made, if it made one.
async fn copy_root(
    source: &Store,
    root: Descriptor,
    new_root: Option<RawManifest>,
    target: &Store,
    tag: Option<&str>,
    options: &CopyOptions,
) -> Result<CopyReport> {
    let source_tags = if options.digest_tags {
        source.tags_all().await?
    } else {
        Vec::new()
    };
    let copier = Copier {
        source,
        target,
        options,
        source_tags,
    };
    let mut plan = Plan::default();
    match &new_root {
        Some(raw) => {
            // A filtered index: its members first, then the new index.
            let Document::Index(index) = raw.parse()? else {
                return Err(Error::InvalidInput {
                    what: "platform filter".into(),
                    reason: "the filtered root is not an index".into(),
                });
            };
            for member in &index.manifests {
                copier.walk(member.clone(), &mut plan).await?;
            }
        }
        None => copier.walk(root.clone(), &mut plan).await?,
    }
    let mut report = CopyReport {
        root: Some(root.clone()),
        referrers: plan.referrers,
        ..CopyReport::default()
    };
    for present in plan.present {
        report.present += 1;
        copier.emit(Event::Present(present));
    }

    let mut transfers = futures::stream::iter(plan.blobs.into_iter().map(|blob| copier.blob(blob)))
        .buffer_unordered(options.concurrency.max(1));
    while let Some(event) = transfers.next().await {
        let event = event?;
        match &event {
            Event::Copied(d) => {
                report.copied += 1;
                report.bytes += d.size;
            }
            Event::Mounted(_) => report.mounted += 1,
            Event::Present(_) => report.present += 1,
            Event::External(_) => report.external += 1,
        }
        copier.emit(event);
    }
    drop(transfers);

    // Manifests in plan order; the root is tagged as it is pushed, when
    // everything under it is already there.
    let mut root_pushed = false;
    for (descriptor, raw) in &plan.manifests {
        let is_root = new_root.is_none() && descriptor.digest == root.digest;
        root_pushed |= is_root;
        target
            .push_manifest(raw, if is_root { tag } else { None })
            .await?;
        report.copied += 1;
        report.bytes += descriptor.size;
        copier.emit(Event::Copied(descriptor.clone()));
    }
    if let Some(raw) = &new_root {
        if target.exists(&root).await? {
            report.present += 1;
            copier.emit(Event::Present(root.clone()));
            if let Some(tag) = tag {
                target.tag(&root, tag).await?;
            }
        } else {
            target.push_manifest(raw, tag).await?;
            report.copied += 1;
            report.bytes += root.size;
            copier.emit(Event::Copied(root.clone()));
        }
    } else if let (false, Some(tag)) = (root_pushed, tag) {
        target.tag(&root, tag).await?;
    }
    for (name, tagged) in &plan.tags {
        target.tag(tagged, name).await?;
        report.digest_tags += 1;
    }
    Ok(report)
}

/// Copies `root` and everything under it from `source` to `target`, by
/// digest (no tag is set), with default options.
pub async fn copy_graph(source: &Store, target: &Store, root: &Descriptor) -> Result<()> {
    copy_root(
        source,
        root.clone(),
        None,
        target,
        None,
        &CopyOptions::default(),
    )
    .await
    .map(drop)
}

/// Counts events by digest: how often each was transferred. For tests
/// and for callers that want totals without drawing anything.
#[derive(Debug, Default)]
pub struct Tally {
    copied: std::sync::Mutex<HashMap<Digest, u32>>,
}

impl Tally {
    /// How many times `digest` was transferred.
    pub fn copied(&self, digest: &Digest) -> u32 {
        self.copied
            .lock()
            .map(|m| m.get(digest).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// How many transfers there were in all.
    pub fn total(&self) -> u32 {
        self.copied.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

impl Progress for Tally {
    fn event(&self, event: &Event) {
        if let (Event::Copied(d), Ok(mut copied)) = (event, self.copied.lock()) {
            *copied.entry(d.digest.clone()).or_default() += 1;
        }
    }
}
