//! Mirroring: the tags a [`TagFilter`] picks from source repositories,
//! copied to target repositories by the copy engine, many images at once.
//!
//! A re-run is cheap: each picked tag costs one manifest request at the
//! source (a `HEAD`, or a `GET` when a platform filter must see the
//! index) and one at the target (what its tag names); an unchanged image
//! is reported up to date without walking its graph (with `referrers`,
//! its referrers are listed too, and those it gained since are copied).
//! Blobs several images
//! share move once per run when the mirrors share a
//! [`Ledger`](crate::copy::Ledger). With `prune`, target tags the source
//! no longer has (among those the filter would take) are removed. A dry
//! run reports every copy and removal and changes nothing. One failing
//! image is reported and the others go on.
//!
//! Tags the user declares immutable (release tags that never move once
//! pushed) cost less still: one the target already lists is up to date
//! without a question to either end, so a re-run asks the source only
//! for its tag lists.

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};

use futures::stream::{self, StreamExt};

use crate::copy::{CopyOptions, Job, SharedBlobs, choose_root, copy_root, walk_roots};
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, Document, RawManifest, Selector};
use crate::store::Store;

pub mod filter;
mod referrers;

pub use crate::referrers::is_digest_tag;
pub use filter::{NewestBy, Pattern, TagFilter, version};
use referrers::{any_held, catch_up, new_referrers};

/// Listings and up-to-date checks in flight at once: each is one small
/// request.
const CHECKS: usize = 16;
/// Images tagged together on a target that writes tags together.
const TAG_BATCH: usize = 64;
/// Stale tags removed at once on a target that writes tags together: it
/// writes its index once for all that wait, so the more at once, the
/// fewer whole-index writes (each a small future; bounded all the same).
const PRUNE_BATCH: usize = 4096;

/// One repository to mirror.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// Where images come from.
    pub source: Store,
    /// Where they go.
    pub target: Store,
    /// The source repository, as reports name it.
    pub source_name: String,
    /// The target repository, as reports name it.
    pub target_name: String,
    /// Blobs shared with the other mirrors into the same place.
    pub shared: Option<SharedBlobs>,
}

/// How to mirror.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// The tags to take.
    pub filter: TagFilter,
    /// How each image is copied (platforms, referrers, digest tags,
    /// transfers per image, progress).
    pub copy: CopyOptions,
    /// Remove target tags the source no longer has.
    pub prune: bool,
    /// Report, change nothing.
    pub dry_run: bool,
    /// Images copied at once (at least 1).
    pub images: usize,
    /// Tags that never move once pushed: one the target already has is
    /// taken as up to date without asking either end what it names.
    pub immutable: Vec<Pattern>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            filter: TagFilter::default(),
            copy: CopyOptions::default(),
            prune: false,
            dry_run: false,
            images: 4,
            immutable: Vec::new(),
        }
    }
}

/// What happened to one image (or, without a tag, to a whole repository
/// whose tags could not be listed).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Copied to the target.
    Copied,
    /// The target's tag already names the source's image (or, for an
    /// immutable tag, the target has the tag and neither end was asked).
    UpToDate,
    /// Removed from the target: the source no longer has it.
    Pruned,
    /// Would be copied (dry run).
    WouldCopy,
    /// Would be removed (dry run).
    WouldPrune,
    /// Failed; see the error.
    Failed,
}

/// The report on one image.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    /// The source repository.
    pub source: String,
    /// The target repository.
    pub target: String,
    /// The tag; `None` when the whole repository failed.
    pub tag: Option<String>,
    /// What happened.
    pub action: Action,
    /// What the source's tag names.
    pub source_digest: Option<Digest>,
    /// What the target's tag names now (before, for a removal).
    pub target_digest: Option<Digest>,
    /// Bytes moved.
    pub bytes: u64,
    /// Wall time spent on this image.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
}

impl ImageReport {
    /// The report on a repository that could not be worked on at all (its
    /// stores could not be opened, or its tags listed).
    pub fn repository_failed(source: &str, target: &str, error: &Error) -> Self {
        ImageReport::named(source, target, None, Action::Failed).failed(error)
    }

    fn new(mirror: &Mirror, tag: Option<&str>, action: Action) -> Self {
        ImageReport::named(&mirror.source_name, &mirror.target_name, tag, action)
    }

    fn named(source: &str, target: &str, tag: Option<&str>, action: Action) -> Self {
        ImageReport {
            source: source.to_owned(),
            target: target.to_owned(),
            tag: tag.map(str::to_owned),
            action,
            source_digest: None,
            target_digest: None,
            bytes: 0,
            seconds: 0.0,
            error: None,
        }
    }

    fn failed(mut self, error: &Error) -> Self {
        self.action = Action::Failed;
        self.error = Some(crate::error::chain(error));
        self
    }
}

/// The work one repository holds: its tags to copy and to remove.
struct Work<'a> {
    mirror: &'a Mirror,
    source_tags: Vec<String>,
    picked: Vec<String>,
    /// The target's tags, listed when a prune or immutable tags need them.
    target_tags: Option<HashSet<String>>,
}

/// Mirrors every repository of `mirrors`, up to `options.images` images
/// at once across them, and reports on each image. Failures are reported,
/// not returned: a repository whose tags cannot be listed gets one failed
/// report, an image that fails gets its own.
pub async fn sync(mirrors: &[Mirror], options: &SyncOptions) -> Vec<ImageReport> {
    let images = options.images.max(1);
    let listed: Vec<std::result::Result<Work<'_>, ImageReport>> = stream::iter(mirrors)
        .map(|mirror| async move {
            let started = Instant::now();
            survey(mirror, options).await.map_err(|e| {
                let mut report = ImageReport::new(mirror, None, Action::Failed).failed(&e);
                report.seconds = started.elapsed().as_secs_f64();
                report
            })
        })
        .buffered(CHECKS)
        .collect()
        .await;
    let mut reports = Vec::new();
    let mut work = Vec::new();
    for listing in listed {
        match listing {
            Ok(found) => work.push(found),
            Err(report) => reports.push(report),
        }
    }
    // Checks are single small requests: many at once. Copies move blobs:
    // `images` at once.
    let checks = work
        .iter()
        .flat_map(|w| w.picked.iter().map(move |tag| check(w, tag, options)));
    let checked: Vec<Checked<'_>> = stream::iter(checks)
        .buffer_unordered(CHECKS)
        .collect()
        .await;
    // Images whose target writes tags together (a layout's index.json)
    // are tagged in batches once their content is there: a cold sync of
    // thousands of images writes the index once per batch.
    let mut copied: Vec<ImageReport> =
        stream::iter(checked.into_iter().map(|c| finish(c, options)))
            .buffer_unordered(images)
            .chunks(TAG_BATCH)
            .map(tag_batch)
            .buffer_unordered(2)
            .flat_map(stream::iter)
            .collect()
            .await;
    copied.sort_by(|a, b| (&a.target, &a.tag).cmp(&(&b.target, &b.tag)));
    reports.extend(copied);
    if options.prune {
        for w in &work {
            reports.extend(prune(w, options).await);
        }
    }
    reports
}

/// Lists a repository's tags at both ends and picks the ones to copy.
async fn survey<'a>(mirror: &'a Mirror, options: &SyncOptions) -> Result<Work<'a>> {
    // Only a prune, or tags trusted never to move, need the target's
    // whole list (a check asks the target about its one tag); it is read
    // while the source's is.
    let listing_target = options.prune || !options.immutable.is_empty();
    let target_listing = async {
        if !listing_target {
            return Ok(None);
        }
        match mirror.target.tags_all().await {
            Ok(tags) => Ok(Some(tags.into_iter().collect::<HashSet<_>>())),
            // A repository that does not exist yet has no tags.
            Err(Error::NotFound { .. }) => Ok(Some(HashSet::new())),
            Err(e) => Err(e),
        }
    };
    let (source_tags, target_tags) =
        futures::future::join(mirror.source.tags_all(), target_listing).await;
    let (source_tags, target_tags) = (source_tags?, target_tags?);
    let created: HashMap<String, SystemTime> = if options.filter.needs_created() {
        // A tag whose time cannot be read (a missing configuration, a
        // manifest orca refuses) counts as the oldest; its copy, if it is
        // taken, reports what is wrong with it.
        stream::iter(options.filter.candidates(&source_tags))
            .map(|tag| async move {
                let time = created_time(&mirror.source, tag).await.ok().flatten();
                time.map(|time| (tag.to_owned(), time))
            })
            .buffer_unordered(CHECKS)
            .filter_map(std::future::ready)
            .collect()
            .await
    } else {
        HashMap::new()
    };
    let picked = options.filter.select(&source_tags, &created);
    Ok(Work {
        mirror,
        source_tags,
        picked,
        target_tags,
    })
}

/// An image checked: its report so far, and what to copy.
struct Checked<'a> {
    work: &'a Work<'a>,
    report: ImageReport,
    started: Instant,
    copy: Option<Todo>,
}

/// What an image's copy takes.
enum Todo {
    /// The image, not up to date: its root, and the index a platform
    /// filter made.
    Image(Box<(Descriptor, Option<RawManifest>)>),
    /// The referrers an up-to-date image gained since it was copied
    /// (with `referrers`), each with its subject.
    Referrers(Vec<(Descriptor, Descriptor)>),
}

/// One image's check: the source's manifest (one request) against what
/// the target's tag names. Up to date, or (in a dry run) would copy, or to
/// be copied.
async fn check<'a>(work: &'a Work<'a>, tag: &str, options: &SyncOptions) -> Checked<'a> {
    let started = Instant::now();
    let mirror = work.mirror;
    let mut report = ImageReport::new(mirror, Some(tag), Action::Copied);
    let immutable = options.immutable.iter().any(|p| p.matches(tag));
    let present = work.target_tags.as_ref().is_some_and(|t| t.contains(tag));
    if immutable && present {
        // Neither end is asked, so neither digest is known.
        report.action = Action::UpToDate;
        return Checked {
            work,
            report,
            started,
            copy: None,
        };
    }
    let outcome: Result<Option<Todo>> = async {
        let selector = Selector::Tag(tag.to_owned());
        let (root, new_root) =
            choose_root(&mirror.source, &selector, &options.copy.platforms).await?;
        report.source_digest = Some(root.digest.clone());
        let listed = work.target_tags.as_ref().is_none_or(|t| t.contains(tag));
        if listed {
            match mirror.target.resolve(&selector).await {
                Ok(found) => report.target_digest = Some(found.digest),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if report.target_digest.as_ref() == Some(&root.digest) {
            report.action = Action::UpToDate;
            if !options.copy.referrers {
                return Ok(None);
            }
            // Signatures and SBOMs are often attached after the push.
            let missing = new_referrers(mirror, &walk_roots(&root, new_root.as_ref())?).await?;
            if missing.is_empty() {
                return Ok(None);
            }
            if options.dry_run {
                if any_held(mirror, &missing).await? {
                    report.action = Action::WouldCopy;
                }
                return Ok(None);
            }
            return Ok(Some(Todo::Referrers(missing)));
        }
        if options.dry_run {
            report.action = Action::WouldCopy;
            return Ok(None);
        }
        Ok(Some(Todo::Image(Box::new((root, new_root)))))
    }
    .await;
    let copy = match outcome {
        Ok(copy) => copy,
        Err(e) => {
            report = report.failed(&e);
            None
        }
    };
    Checked {
        work,
        report,
        started,
        copy,
    }
}

/// A tag left for [`tag_batch`]: the image's content is at the target.
struct Deferred<'a> {
    target: &'a Store,
    tag: String,
    root: Descriptor,
    started: Instant,
}

/// Tags the images of a batch whose tags were left for it, all at once
/// (a layout's group commit writes them together), and reports each.
async fn tag_batch(batch: Vec<(ImageReport, Option<Deferred<'_>>)>) -> Vec<ImageReport> {
    futures::future::join_all(batch.into_iter().map(|(mut report, deferred)| async move {
        if let Some(deferred) = deferred {
            if let Err(e) = deferred.target.tag(&deferred.root, &deferred.tag).await {
                report = report.failed(&e);
            }
            report.seconds = deferred.started.elapsed().as_secs_f64();
        }
        report
    }))
    .await
}

/// Copies what a check found to copy: a whole image, tagged (or, on a
/// target that writes tags together, with its tag left for
/// [`tag_batch`]), or the new referrers of an up-to-date one (it is then
/// reported copied). Reports the image either way.
async fn finish<'a>(
    checked: Checked<'a>,
    options: &SyncOptions,
) -> (ImageReport, Option<Deferred<'a>>) {
    let Checked {
        work,
        mut report,
        started,
        copy,
    } = checked;
    let mirror = work.mirror;
    let mut copy_options = options.copy.clone();
    copy_options.shared = mirror.shared.clone().or(copy_options.shared);
    let copy_one = |root: Descriptor, new_root: Option<RawManifest>, tag: Option<String>| {
        let copy_options = &copy_options;
        async move {
            let job = Job {
                source: &mirror.source,
                target: &mirror.target,
                root,
                new_root,
                tag: tag.as_deref(),
                source_tags: Some(&work.source_tags),
                list: false,
            };
            copy_root(job, copy_options).await
        }
    };
    let batched = mirror.target.capabilities().batched_tags;
    let mut deferred = None;
    let outcome: Result<u64> = async {
        match copy {
            None => Ok(0),
            Some(Todo::Image(image)) => {
                let (root, new_root) = *image;
                let tag = match (batched, report.tag.clone()) {
                    (true, Some(tag)) => {
                        deferred = Some((tag, root.clone()));
                        None
                    }
                    (_, tag) => tag,
                };
                let copied = copy_one(root.clone(), new_root, tag).await?;
                report.target_digest = Some(root.digest);
                Ok(copied.bytes)
            }
            Some(Todo::Referrers(referrers)) => {
                let caught = catch_up(mirror, &referrers, &copy_options, &work.source_tags).await?;
                if caught.is_some() {
                    report.action = Action::Copied;
                }
                Ok(caught.unwrap_or(0))
            }
        }
    }
    .await;
    let deferred = match outcome {
        Ok(bytes) => {
            report.bytes = bytes;
            deferred.map(|(tag, root)| Deferred {
                target: &mirror.target,
                tag,
                root,
                started,
            })
        }
        Err(e) => {
            report = report.failed(&e);
            None
        }
    };
    report.seconds = started.elapsed().as_secs_f64();
    (report, deferred)
}

/// Removes the target tags the source no longer has, among those the
/// filter would take.
async fn prune(work: &Work<'_>, options: &SyncOptions) -> Vec<ImageReport> {
    let mirror = work.mirror;
    let at_source: HashSet<&str> = work.source_tags.iter().map(String::as_str).collect();
    let Some(target_tags) = &work.target_tags else {
        return Vec::new();
    };
    let mut stale: Vec<String> = target_tags
        .iter()
        .filter(|tag| !at_source.contains(tag.as_str()))
        .filter(|tag| options.filter.admits(tag))
        .cloned()
        .collect();
    stale.sort();
    // Tags are pruned several at once (as images are copied), in the
    // order of the list (core 14: one after another, 10,000 stale tags
    // were 20,000 round trips in a row). Each is looked up first, as many
    // at once as images are copied (a lookup may read the target's index
    // whole); then removed, a batch at once on a target that writes tags
    // together.
    let look_up = |tag: String| async move {
        let started = Instant::now();
        let action = if options.dry_run {
            Action::WouldPrune
        } else {
            Action::Pruned
        };
        let mut report = ImageReport::new(mirror, Some(&tag), action);
        match mirror.target.resolve(&Selector::Tag(tag.clone())).await {
            Ok(found) => report.target_digest = Some(found.digest),
            Err(e) => report = report.failed(&e),
        }
        (tag, report, started)
    };
    let remove = |(tag, mut report, started): (String, ImageReport, Instant)| async move {
        if report.error.is_none()
            && !options.dry_run
            && let Err(e) = mirror.target.untag(&tag).await
        {
            report = report.failed(&e);
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    };
    let at_once = if mirror.target.capabilities().batched_tags {
        PRUNE_BATCH
    } else {
        options.images.max(1)
    };
    futures::stream::iter(stale.into_iter().map(look_up))
        .buffered(options.images.max(1))
        .map(remove)
        .buffered(at_once)
        .collect()
        .await
}

/// When the image `tag` names was made: its configuration's `created`
/// (for an index, its first manifest's). `None` when it says nothing.
async fn created_time(store: &Store, tag: &str) -> Result<Option<SystemTime>> {
    let (_, raw) = store.fetch_manifest(&Selector::Tag(tag.to_owned())).await?;
    let manifest = match raw.parse()? {
        Document::Manifest(manifest) => manifest,
        Document::Index(index) => {
            let Some(first) = index.manifests.first() else {
                return Ok(None);
            };
            let raw = store
                .fetch_manifest(&Selector::Digest(first.digest.clone()))
                .await?;
            match raw.1.parse()? {
                Document::Manifest(manifest) => manifest,
                _ => return Ok(None),
            }
        }
        // An artifact manifest has no configuration; schema 1 keeps its
        // times in a history orca does not read.
        Document::Artifact(_) | Document::Schema1(_) => return Ok(None),
    };
    let config = store.fetch_bytes(&manifest.config).await?;
    #[derive(serde::Deserialize)]
    struct Config {
        created: Option<String>,
    }
    let Ok(config) = serde_json::from_slice::<Config>(&config) else {
        return Ok(None);
    };
    Ok(config
        .created
        .and_then(|c| humantime::parse_rfc3339_weak(&c).ok()))
}
