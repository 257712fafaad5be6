//! The copy engine: copies the graph under a manifest or index from one
//! [`Store`] to another, whatever backends they wrap.
//!
//! It first walks the graph into a plan, reading manifests and asking the
//! target what it has with bounded concurrency: the manifests, each with
//! the manifests it depends on, and the set of blobs, each listed once
//! however often it is named. Manifests the target already has are not
//! descended into unless [`CopyOptions::force`] asks for a repair. Then the
//! blobs move with bounded concurrency — mounted when the target can mount
//! and the caller names a repository of the same registry, skipped when
//! the target has them, skipped when they live at external URLs unless
//! asked — and the manifests are pushed level by level, every manifest
//! only once everything it names is present. The root's tag is set last,
//! so a tag never names something half-copied. Both stores verify every
//! byte. Optionally the referrers of copied manifests and their
//! `<alg>-<hex>.*` digest tags come along, and a platform filter narrows
//! an index. Progress is reported as [`Event`]s.
//!
//! Memory stays bounded for huge graphs: the plan holds descriptors, and
//! manifest bytes are kept only up to a budget; beyond it they are read
//! again from the source when pushed.
//!
//! A blob whose earlier transfer was interrupted continues from what the
//! target kept ([`Store::partial`]) when the target can resume (capability
//! `resume`: layouts, registries opened with upload sessions remembered,
//! memory) and the source serves byte ranges; only the rest is fetched, and
//! the target checks the whole digest before publishing. Other targets
//! (S3, archives) transfer the blob again.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};

use crate::backend::PushOptions;
use crate::body::Body;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, Document, RawManifest, Selector};
use crate::referrers::fallback_tag;
use crate::store::Store;

mod ledger;
mod options;
mod plan;
mod relist;
mod root;
mod transfer;

pub(crate) use relist::relist;

pub use ledger::Ledger;
pub use options::{CopyOptions, CopyReport, Event, Progress, SharedBlobs, Tally, Totals};
use plan::{Node, Plan, Role, Visit};
pub(crate) use root::{choose_root, walk_roots};
pub use transfer::reported;

/// Manifest bytes kept in memory between the walk and the push; past this,
/// manifests are fetched again when pushed.
const KEEP_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

struct Copier<'a> {
    source: &'a Store,
    target: &'a Store,
    options: &'a CopyOptions,
    /// The source's tags, read once when digest tags are wanted.
    source_tags: Cow<'a, [String]>,
    /// A transfer failed: the others stop at their next chunk (each
    /// target then cleans up as after any failed push) instead of being
    /// dropped mid-request.
    abandoned: Arc<AtomicBool>,
}

impl<'a> Copier<'a> {
    /// A copier from `source` to `target`; the source's tags are listed
    /// when digest tags are wanted and the caller has not listed them.
    async fn new(
        source: &'a Store,
        target: &'a Store,
        options: &'a CopyOptions,
        source_tags: Option<&'a [String]>,
    ) -> Result<Copier<'a>> {
        let mut source_tags = match (options.digest_tags, source_tags) {
            (false, _) => Cow::Borrowed(&[][..]),
            (true, Some(tags)) => Cow::Borrowed(tags),
            (true, None) => Cow::Owned(source.tags_all().await?),
        };
        // Digest tags are looked up by prefix in the sorted list.
        if !source_tags.is_sorted() {
            source_tags.to_mut().sort();
        }
        Ok(Copier {
            source,
            target,
            options,
            source_tags,
            abandoned: Arc::default(),
        })
    }

    fn emit(&self, event: Event) {
        if let Some(progress) = &self.options.progress {
            progress.event(&event);
        }
    }

    fn limit(&self) -> usize {
        self.options.concurrency.max(1)
    }

    /// Walks the graphs under `roots` into a plan, reading up to
    /// `concurrency` manifests at once.
    async fn walk(&self, roots: Vec<Descriptor>) -> Result<Plan> {
        let mut plan = Plan::default();
        let mut seen: HashSet<Digest> = HashSet::new();
        // Each manifest with its role, whether ordering starts at it, and
        // for a referrer the subject it was listed under.
        let mut queue: std::collections::VecDeque<(Descriptor, Role, bool, Option<Descriptor>)> =
            roots
                .into_iter()
                .map(|d| (d, Role::Graph, true, None))
                .collect();
        let mut running = FuturesUnordered::new();
        let mut kept: u64 = 0;
        loop {
            while running.len() < self.limit() {
                let Some((descriptor, role, start, subject)) = queue.pop_front() else {
                    break;
                };
                if !seen.insert(descriptor.digest.clone()) {
                    continue;
                }
                if !descriptor.media_type.is_manifest() {
                    plan.blobs.push(descriptor);
                    continue;
                }
                if start {
                    plan.starts.push(descriptor.digest.clone());
                }
                running.push(async move { (self.visit(descriptor, role).await, subject) });
            }
            let Some((visit, subject)) = running.next().await else {
                break;
            };
            let mut visit = visit?;
            if let Some(gone) = visit.gone {
                plan.gone.push(gone);
                continue;
            }
            if let Some(node) = &mut visit.node
                && let Some(raw) = &node.raw
            {
                kept += raw.len() as u64;
                if kept > KEEP_MANIFEST_BYTES {
                    node.raw = None;
                }
            }
            plan.referrers += visit.referrers.len() as u64;
            let visited = visit.node.as_ref().map(|n| n.descriptor.clone());
            for child in visit.children {
                queue.push_back((child, Role::Graph, false, None));
            }
            for referrer in visit.referrers {
                queue.push_back((referrer, Role::Referrer, true, visited.clone()));
            }
            for (tag, tagged) in visit.tagged {
                queue.push_back((tagged.clone(), Role::Graph, true, None));
                plan.tags.push((tag, tagged));
            }
            // A referrer the target holds may be unlisted there.
            if let (Some(node), Some(subject)) = (&visit.node, subject)
                && node.present
            {
                plan.held_referrers.push((node.descriptor.clone(), subject));
            }
            if let Some(node) = visit.node {
                plan.nodes.insert(node.descriptor.digest.clone(), node);
            }
        }
        Ok(plan)
    }

    /// Reads one manifest: whether the target has it, its children (unless
    /// the target has it and no repair was asked), its referrers and digest
    /// tags.
    async fn visit(&self, descriptor: Descriptor, role: Role) -> Result<Visit> {
        let (present, (referrers, tagged)) =
            futures::try_join!(self.target.exists(&descriptor), self.extras(&descriptor))?;
        let mut visit = Visit {
            node: None,
            children: Vec::new(),
            gone: None,
            referrers,
            tagged,
        };
        if present && !self.options.force {
            visit.node = Some(Node {
                descriptor,
                present,
                raw: None,
                deps: Vec::new(),
            });
            return Ok(visit);
        }
        let bytes = match self.source.fetch_bytes(&descriptor).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() && role == Role::Referrer && !present => {
                visit.gone = Some(descriptor);
                visit.referrers.clear();
                visit.tagged.clear();
                return Ok(visit);
            }
            Err(e) => return Err(e),
        };
        let document = RawManifest::new(descriptor.media_type.clone(), bytes.clone())
            .parse()
            .map_err(|e| e.naming(&descriptor.digest))?;
        visit.children = document.children().into_iter().cloned().collect();
        if let Document::Schema1(_) = &document {
            // Schema 1 names its layers without sizes: the source says them.
            for child in &mut visit.children {
                child.size = self
                    .source
                    .stat(child)
                    .await?
                    .ok_or_else(|| Error::NotFound {
                        what: format!(
                            "layer {} of schema-1 manifest {}",
                            child.digest, descriptor.digest
                        ),
                        place: self.source.to_string(),
                    })?;
            }
        }
        let deps = visit
            .children
            .iter()
            .chain(document.subject())
            .filter(|d| d.media_type.is_manifest())
            .map(|d| d.digest.clone())
            .collect();
        visit.node = Some(Node {
            descriptor,
            present,
            raw: Some(bytes),
            deps,
        });
        Ok(visit)
    }

    /// The referrers and digest-tagged manifests of `node` to copy too.
    async fn extras(
        &self,
        node: &Descriptor,
    ) -> Result<(Vec<Descriptor>, Vec<(String, Descriptor)>)> {
        let mut referrers = Vec::new();
        if self.options.referrers {
            let listing = self.source.referrers(node, None).await?;
            for referrer in listing.manifests {
                referrers.push(Descriptor::new(
                    referrer.media_type,
                    referrer.digest,
                    referrer.size,
                ));
            }
        }
        let mut tagged = Vec::new();
        if self.options.digest_tags {
            // The source's tags are sorted: its digest tags are together.
            let prefix = format!("{}.", fallback_tag(&node.digest));
            let start = self
                .source_tags
                .partition_point(|t| t.as_str() < prefix.as_str());
            let matching = self.source_tags[start..]
                .iter()
                .take_while(|t| t.starts_with(&prefix));
            for tag in matching {
                let found = self.source.resolve(&Selector::Tag(tag.clone())).await?;
                tagged.push((tag.clone(), found));
            }
        }
        Ok((referrers, tagged))
    }

    /// Pushes one planned manifest and reports it.
    async fn push_node(&self, node: &Node, tag: Option<&str>) -> Result<()> {
        self.push_manifest(node, tag).await?;
        self.emit(Event::Pushed(node.descriptor.clone()));
        if let Some(tag) = tag {
            self.emit(Event::Tagged {
                tag: tag.to_owned(),
                descriptor: node.descriptor.clone(),
            });
        }
        Ok(())
    }

    /// Pushes one planned manifest, reading it again if its bytes were not
    /// kept, under its own descriptor (whatever its digest algorithm).
    async fn push_manifest(&self, node: &Node, tag: Option<&str>) -> Result<()> {
        let bytes = match &node.raw {
            Some(bytes) => bytes.clone(),
            None => self.source.fetch_bytes(&node.descriptor).await?,
        };
        let options = match tag {
            Some(tag) => PushOptions::tagged(tag),
            None => PushOptions::default(),
        };
        self.target
            .push_opts(&node.descriptor.plain(), Body::from_bytes(bytes), options)
            .await
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
    let job = Job {
        source,
        target,
        root,
        new_root,
        tag,
        source_tags: None,
        list: tag.is_none(),
    };
    copy_root(job, options).await
}

/// What one copy moves once its root is known (the run's settings are the
/// [`CopyOptions`] beside it).
pub(crate) struct Job<'a> {
    pub(crate) source: &'a Store,
    pub(crate) target: &'a Store,
    /// The manifest or index to copy.
    pub(crate) root: Descriptor,
    /// The index a platform filter made in place of `root`, if it made one.
    pub(crate) new_root: Option<RawManifest>,
    /// The tag to set at the target, last.
    pub(crate) tag: Option<&'a str>,
    /// The source's tags, when the caller listed them already.
    pub(crate) source_tags: Option<&'a [String]>,
    /// With no tag: list the root among the target's roots all the same
    /// (a copy by digest into a layout gets an untagged `index.json`
    /// entry, so it is found and kept; see [`PushOptions::list`]).
    pub(crate) list: bool,
}

/// [`copy`] once the root is known.
pub(crate) async fn copy_root(job: Job<'_>, options: &CopyOptions) -> Result<CopyReport> {
    let Job {
        source,
        target,
        root,
        new_root,
        tag,
        source_tags,
        list,
    } = job;
    let copier = Copier::new(source, target, options, source_tags).await?;
    let plan = copier.walk(walk_roots(&root, new_root.as_ref())?).await?;
    let levels = plan.levels();

    let mut totals = Totals {
        blobs: plan.blobs.len() as u64,
        ..Totals::default()
    };
    for blob in &plan.blobs {
        if blob.urls.is_empty() || options.external {
            totals.bytes = totals.bytes.saturating_add(blob.size);
        }
    }
    for digest in levels.iter().flatten() {
        totals.manifests += 1;
        totals.bytes = totals
            .bytes
            .saturating_add(plan.nodes[digest].descriptor.size);
    }
    if let Some(raw) = &new_root {
        totals.manifests += 1;
        totals.bytes = totals.bytes.saturating_add(raw.bytes().len() as u64);
    }
    copier.emit(Event::Planned(totals));

    let mut report = CopyReport {
        root: Some(root.clone()),
        referrers: plan.referrers,
        gone: plan.gone.len() as u64,
        ..CopyReport::default()
    };
    for gone in &plan.gone {
        copier.emit(Event::Gone(gone.clone()));
    }
    for node in plan.nodes.values().filter(|n| n.present) {
        report.present += 1;
        copier.emit(Event::Present(node.descriptor.clone()));
    }

    let transfers: Vec<_> = plan.blobs.iter().map(|b| copier.blob(b.clone())).collect();
    let mut transfers = futures::stream::iter(transfers).buffer_unordered(copier.limit());
    // On the first failure the others are told to stop and are waited for,
    // so every target cleans up as after any failed push (a registry
    // cancels its upload session) rather than being cut off mid-request.
    let mut failed = None;
    while let Some(done) = transfers.next().await {
        let (event, held) = match done {
            Ok(done) => done,
            Err(e) => {
                copier.abandoned.store(true, Ordering::Relaxed);
                failed.get_or_insert(e);
                continue;
            }
        };
        match &event {
            Event::Copied(d) => {
                report.copied += 1;
                report.bytes = report.bytes.saturating_add(d.size.saturating_sub(held));
                report.resumed += u64::from(held > 0);
            }
            Event::Mounted(_) => report.mounted += 1,
            Event::Present(_) => report.present += 1,
            Event::External(_) => report.external += 1,
            _ => {}
        }
        copier.emit(event);
    }
    drop(transfers);
    if let Some(e) = failed {
        return Err(e);
    }

    // The root is pushed with its tag in one step when nothing follows it;
    // otherwise it is tagged at the very end.
    let last = levels.last().and_then(|l| l.last());
    let tag_with_push = new_root.is_none()
        && last == Some(&root.digest)
        && levels.last().is_some_and(|l| l.len() == 1);
    for level in &levels {
        // Collected first: a stream of closures over borrowed digests
        // would make the copy future unsendable.
        let pushes: Vec<_> = level
            .iter()
            .map(|digest| {
                let with_tag = (tag_with_push && *digest == root.digest)
                    .then_some(tag)
                    .flatten();
                copier.push_node(&plan.nodes[digest], with_tag)
            })
            .collect();
        futures::stream::iter(pushes)
            .buffer_unordered(copier.limit())
            .try_collect::<Vec<()>>()
            .await?;
        for digest in level {
            report.copied += 1;
            report.bytes = report
                .bytes
                .saturating_add(plan.nodes[digest].descriptor.size);
        }
    }
    let mut root_tagged = tag_with_push;
    if let Some(raw) = &new_root {
        if target.exists(&root).await? {
            report.present += 1;
            copier.emit(Event::Present(root.clone()));
        } else {
            target.push_manifest(raw, None).await?;
            report.copied += 1;
            report.bytes = report.bytes.saturating_add(root.size);
            copier.emit(Event::Pushed(root.clone()));
        }
        root_tagged = false;
    }
    for relisted in relist(target, &plan.held_referrers, options).await? {
        report.present = report.present.saturating_sub(1);
        report.copied += 1;
        report.bytes = report.bytes.saturating_add(relisted.size);
    }
    for (name, tagged) in &plan.tags {
        target.tag(tagged, name).await?;
        report.digest_tags += 1;
        copier.emit(Event::Tagged {
            tag: name.clone(),
            descriptor: tagged.clone(),
        });
    }
    if let (false, Some(tag)) = (root_tagged, tag) {
        target.tag(&root, tag).await?;
        copier.emit(Event::Tagged {
            tag: tag.to_owned(),
            descriptor: root.clone(),
        });
    }
    if list && tag.is_none() {
        // Pushed again with the listing: a layout that holds it adds the
        // untagged entry and writes no bytes.
        let bytes = match &new_root {
            Some(raw) => raw.bytes().clone(),
            None => match plan.nodes.get(&root.digest).and_then(|n| n.raw.clone()) {
                Some(bytes) => bytes,
                None => target.fetch_bytes(&root).await?,
            },
        };
        target
            .push_opts(
                &root.plain(),
                Body::from_bytes(bytes),
                PushOptions::listed(),
            )
            .await?;
    }
    Ok(report)
}

/// Copies `root` and everything under it from `source` to `target`, by
/// digest (no tag is set), with default options.
pub async fn copy_graph(source: &Store, target: &Store, root: &Descriptor) -> Result<()> {
    let job = Job {
        source,
        target,
        root: root.clone(),
        new_root: None,
        tag: None,
        source_tags: None,
        // Callers tag it, or name it from an index, themselves.
        list: false,
    };
    copy_root(job, &CopyOptions::default()).await.map(drop)
}
