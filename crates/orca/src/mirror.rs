//! `orca sync`: a YAML configuration of mirrors (see
//! `docs/sync.example.yaml`), read into [`Config`], and the run that
//! opens each entry's source and target and hands the repositories to
//! [`orca_core::sync`].
//!
//! A source is a registry repository (`HOST/REPO`), several of one
//! registry (`HOST` with `repositories`), a whole registry or a prefix of
//! it (`HOST` or `HOST/PREFIX/` listed through the catalog, narrowed by
//! `include` and `exclude`), or a bundle (`oci:DIR`, `s3://BUCKET/PREFIX`,
//! a plugin's `SCHEME://…`) and all or some of the repositories it holds.
//! A target is where the repositories go: a registry (`HOST` or
//! `HOST/PREFIX`; repository `R` lands at `HOST/PREFIX/R`) or a bundle,
//! where `R:TAG` names each image.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use orca_core::copy::{CopyOptions, Ledger, SharedBlobs};
use orca_core::sync::{Mirror, NewestBy, Pattern, SyncOptions, TagFilter};
use orca_core::{Error, Platform, Result};
use serde::Deserialize;

use crate::open::OpenOptions;

mod place;
mod staged;

use place::{Place, globs, label, place, repositories, store, target_repository};

/// A sync configuration: defaults, then the entries.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Settings every entry starts from.
    #[serde(default)]
    pub defaults: Settings,
    /// Settings per registry host (`host[:port]`), wherever it appears.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySettings>,
    /// What to mirror.
    pub sync: Vec<Entry>,
}

/// How orca talks to one registry (the settings file's fields; those of
/// a sync configuration go over the file's).
pub use crate::hosts::RegistrySettings;

/// One mirror: a source, a target, and settings over the defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Where repositories come from.
    pub source: String,
    /// Where they go.
    pub target: String,
    /// The source's repositories to take (names under the source); all
    /// of a registry or bundle when absent.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Take only repositories matching one of these globs.
    #[serde(default)]
    pub include: Vec<String>,
    /// Leave out repositories matching any of these globs.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Settings for this entry, over the defaults.
    #[serde(flatten)]
    pub settings: Settings,
}

/// What a mirror takes and how; every field may be set in `defaults` and
/// overridden per entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Which tags.
    pub tags: Option<Tags>,
    /// Keep only these platforms of multi-platform images.
    pub platforms: Option<Vec<String>>,
    /// Copy the referrers (signatures, SBOMs) of every image.
    pub referrers: Option<bool>,
    /// Copy `sha256-<hex>.*` tags (cosign-style) with their images.
    pub digest_tags: Option<bool>,
    /// Remove target tags the source no longer has.
    pub prune: Option<bool>,
    /// After a prune into a layout or bucket, collect what it left
    /// unreferenced (with the default grace period). Off unless asked:
    /// other writers may share the target.
    pub gc: Option<bool>,
    /// The grace period of that collection (`30m`, `6h`; default `24h`):
    /// blobs written less than this long ago stay.
    pub gc_grace: Option<String>,
    /// Images copied at once.
    pub images: Option<usize>,
    /// Blob transfers at once, across all images of a target.
    pub transfers: Option<usize>,
    /// Globs or `/regular expressions/` naming tags that never move once
    /// pushed: one the target has is up to date without asking the source.
    pub immutable_tags: Option<Vec<String>>,
}

/// The tag filter of a mirror; an entry's fields override the defaults'
/// one by one.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    /// Globs or `/regular expressions/`; all tags when empty.
    pub include: Option<Vec<String>>,
    /// Globs or `/regular expressions/` to leave out.
    pub exclude: Option<Vec<String>>,
    /// A semver range (`">=1.2, <2"`); tags that are no versions are left out.
    pub semver: Option<String>,
    /// Keep only the newest N.
    pub newest: Option<usize>,
    /// `semver` (default) or `created` (the image configuration's time).
    pub newest_by: Option<String>,
}

impl Settings {
    /// These settings with `over`'s set fields in place of their own.
    fn merged(&self, over: &Settings) -> Settings {
        Settings {
            tags: match (&self.tags, &over.tags) {
                (Some(base), Some(over)) => Some(Tags {
                    include: over.include.clone().or_else(|| base.include.clone()),
                    exclude: over.exclude.clone().or_else(|| base.exclude.clone()),
                    semver: over.semver.clone().or_else(|| base.semver.clone()),
                    newest: over.newest.or(base.newest),
                    newest_by: over.newest_by.clone().or_else(|| base.newest_by.clone()),
                }),
                (base, over) => over.clone().or_else(|| base.clone()),
            },
            platforms: over.platforms.clone().or_else(|| self.platforms.clone()),
            referrers: over.referrers.or(self.referrers),
            digest_tags: over.digest_tags.or(self.digest_tags),
            prune: over.prune.or(self.prune),
            gc: over.gc.or(self.gc),
            gc_grace: over.gc_grace.clone().or_else(|| self.gc_grace.clone()),
            images: over.images.or(self.images),
            transfers: over.transfers.or(self.transfers),
            immutable_tags: over
                .immutable_tags
                .clone()
                .or_else(|| self.immutable_tags.clone()),
        }
    }

    /// How the collection after a prune runs.
    fn gc_options(&self) -> Result<orca_core::layout::GcOptions> {
        let mut gc = orca_core::layout::GcOptions::new();
        if let Some(grace) = &self.gc_grace {
            gc = gc.grace(
                humantime::parse_duration(grace).map_err(|e| Error::InvalidInput {
                    what: format!("gc_grace {grace:?}"),
                    reason: format!("it is a duration such as 30m or 6h ({e})"),
                })?,
            );
        }
        Ok(gc)
    }

    /// The core options these settings make.
    fn options(&self, dry_run: bool) -> Result<SyncOptions> {
        let tags = self.tags.clone().unwrap_or_default();
        let semver = tags
            .semver
            .as_deref()
            .map(|range| {
                semver::VersionReq::parse(range).map_err(|e| Error::InvalidInput {
                    what: format!("semver range {range:?}"),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let newest_by = match tags.newest_by.as_deref() {
            None | Some("semver") => NewestBy::Semver,
            Some("created") => NewestBy::Created,
            Some(other) => {
                return Err(Error::InvalidInput {
                    what: format!("newest_by {other:?}"),
                    reason: "it is `semver` or `created`".into(),
                });
            }
        };
        let platforms = self
            .platforms
            .iter()
            .flatten()
            .map(|p| Platform::parse(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(SyncOptions {
            filter: TagFilter {
                include: globs(tags.include.as_deref().unwrap_or_default())?,
                exclude: globs(tags.exclude.as_deref().unwrap_or_default())?,
                semver,
                newest: tags.newest,
                newest_by,
            },
            copy: CopyOptions {
                platforms,
                referrers: self.referrers.unwrap_or(false),
                digest_tags: self.digest_tags.unwrap_or(false),
                ..CopyOptions::default()
            },
            prune: self.prune.unwrap_or(false),
            dry_run,
            images: self.images.unwrap_or(4),
            immutable: globs(self.immutable_tags.as_deref().unwrap_or_default())?,
        })
    }
}

impl Config {
    /// Reads a configuration file; a bad one is `InvalidInput` naming the
    /// file and, where the parser knows it, the line.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidInput {
            what: format!("sync configuration {}", path.display()),
            reason: e.to_string(),
        })?;
        Config::parse(&text).map_err(|e| match e {
            Error::InvalidInput { reason, .. } => Error::InvalidInput {
                what: format!("sync configuration {}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// Parses a configuration's text.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| Error::InvalidInput {
            what: "sync configuration".into(),
            reason: e.to_string(),
        })?;
        if config.sync.is_empty() {
            return Err(Error::InvalidInput {
                what: "sync configuration".into(),
                reason: "`sync` lists no entries".into(),
            });
        }
        for (host, settings) in &config.registries {
            settings.check(host).map_err(|e| match e {
                Error::InvalidInput { reason, .. } => Error::InvalidInput {
                    what: format!("sync configuration, registries.{host}"),
                    reason,
                },
                other => other,
            })?;
        }
        for entry in &config.sync {
            // Settle every pattern and range now, before anything runs.
            config.defaults.merged(&entry.settings).options(false)?;
            for glob in entry.include.iter().chain(&entry.exclude) {
                Pattern::parse(glob)?;
            }
        }
        Ok(config)
    }
}

/// What a whole run did, per image.
pub type Report = Vec<orca_core::sync::ImageReport>;

/// Which part of a mirror a run takes, so several machines split one
/// configuration with no coordination (`orca sync --shard`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shard {
    /// Every repository; prune and collect as configured.
    All,
    /// The repositories whose stable hash falls in shard `index` of
    /// `count`; no prune, no collection (they need every repository).
    Part {
        /// This shard, from 0.
        index: u32,
        /// How many shards.
        count: u32,
    },
    /// The run after the shards: every repository (found up to date),
    /// then prune and collect as configured.
    Finish,
}

impl Shard {
    /// Reads `I/N` (0 ≤ I < N) or `finish`; the error says what is
    /// wrong.
    pub fn parse(text: &str) -> std::result::Result<Shard, String> {
        if text == "finish" {
            return Ok(Shard::Finish);
        }
        let (index, count) = text
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?)))
            .ok_or_else(|| format!("{text:?} is no shard: give I/N (0/4 … 3/4) or finish"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: I counts from 0 and stays below N (0/{count} … {}/{count})",
                count.saturating_sub(1)
            ));
        }
        Ok(Shard::Part { index, count })
    }

    /// Whether this run takes repository `name` of the entry whose source
    /// is `source`: a hash that is the same on every machine.
    pub fn takes(&self, source: &str, name: &str) -> bool {
        let Shard::Part { index, count } = *self else {
            return true;
        };
        let digest = orca_core::Digest::sha256(format!("{source}\n{name}").as_bytes());
        let head = u64::from_str_radix(&digest.hex()[..16], 16).unwrap_or(0);
        head % u64::from(count) == u64::from(index)
    }

    /// Whether prune and collection run in this run.
    fn prunes(&self) -> bool {
        !matches!(self, Shard::Part { .. })
    }
}

impl Config {
    /// Whether any entry prunes or collects (held back by a shard).
    pub fn prunes(&self) -> bool {
        self.sync.iter().any(|entry| {
            let settings = self.defaults.merged(&entry.settings);
            settings.prune == Some(true) || settings.gc == Some(true)
        })
    }
}

/// Runs every entry of `config` once, in order; within an entry, images
/// of all its repositories copy at once. Problems with one repository or
/// image are in the report; an entry whose source or target cannot be
/// opened or listed is an error.
pub async fn run(
    config: &Config,
    dry_run: bool,
    options: &OpenOptions,
    progress: Option<Arc<dyn orca_core::copy::Progress>>,
) -> Result<Report> {
    run_shard(config, dry_run, options, progress, Shard::All).await
}

/// [`run`], of one `shard` of the repositories. A shard never prunes or
/// collects (`Shard::Finish` does), and refuses an archive target, which
/// each run rewrites whole.
pub async fn run_shard(
    config: &Config,
    dry_run: bool,
    options: &OpenOptions,
    progress: Option<Arc<dyn orca_core::copy::Progress>>,
    shard: Shard,
) -> Result<Report> {
    let mut report = Vec::new();
    // The configuration's registry settings go over the settings file's.
    let mut options = options.clone();
    for (host, settings) in &config.registries {
        let host = host.to_ascii_lowercase();
        let file = options.registries.get(&host).cloned().unwrap_or_default();
        options.registries.insert(host, file.merged(settings));
    }
    for entry in &config.sync {
        let settings = config.defaults.merged(&entry.settings);
        let mut sync_options = settings.options(dry_run)?;
        sync_options.prune &= shard.prunes();
        let gc_options = settings.gc_options()?;
        sync_options.copy.progress = progress.clone();
        let source = place(&entry.source, &options, false).await?;
        let target = place(&entry.target, &options, true).await?;
        if let Place::Bundle {
            staged: Some(staged),
            ..
        } = &target
        {
            if matches!(shard, Shard::Part { .. }) {
                return Err(Error::InvalidInput {
                    what: format!("a sharded run into {}", entry.target),
                    reason: "each run rewrites an archive whole, so shards cannot share one: mirror into oci:DIR and pack it once at the end, or give each shard its own archive".into(),
                });
            }
            staged.unpack().await?;
        }
        let mut names = repositories(entry, &source).await?;
        // How many the source holds, whatever this shard takes of them.
        let count = names.len();
        names.retain(|name| shard.takes(&entry.source, name));
        let ledger = Ledger::new(settings.transfers.unwrap_or(8));
        // Repositories open at once (a registry is asked about each); one
        // that cannot be opened is reported, and the others go on.
        let opening = names.iter().map(|name| {
            let (source, target, ledger) = (&source, &target, &ledger);
            async move {
                let target_name = target_repository(target, name, count)?;
                let source_name = label(source, name);
                let target_label = label(target, &target_name);
                let (source_store, target_store) =
                    futures::future::join(store(source, name), store(target, &target_name)).await;
                let opened = source_store.and_then(|s| Ok((s, target_store?)));
                Ok::<_, Error>(match opened {
                    Ok((source_store, target_store)) => Ok(Mirror {
                        source: source_store,
                        target: target_store,
                        source_name,
                        target_name: target_label,
                        shared: Some(SharedBlobs {
                            ledger: ledger.clone(),
                            repository: target_name,
                        }),
                    }),
                    Err(e) => Err(orca_core::sync::ImageReport::repository_failed(
                        &source_name,
                        &target_label,
                        &e,
                    )),
                })
            }
        });
        let opened: Vec<std::result::Result<Mirror, orca_core::sync::ImageReport>> =
            futures::stream::iter(opening)
                .buffered(16)
                .try_collect()
                .await?;
        let mut mirrors = Vec::new();
        for one in opened {
            match one {
                Ok(mirror) => mirrors.push(mirror),
                Err(failed) => report.push(failed),
            }
        }
        let done = orca_core::sync::sync(&mirrors, &sync_options).await;
        let pruned = done
            .iter()
            .any(|r| r.action == orca_core::sync::Action::Pruned);
        let changed = pruned
            || done
                .iter()
                .any(|r| r.action == orca_core::sync::Action::Copied);
        report.extend(done);
        // What pruning left unreferenced goes where the target collects
        // garbage (layouts and buckets); a registry collects its own.
        if let Place::Bundle {
            staged: Some(staged),
            ..
        } = &target
        {
            // The staging layout holds only what its names reach. An
            // archive nothing changed in is left as it was.
            if !dry_run && changed {
                staged.pack().await?;
            }
        } else if pruned
            && shard.prunes()
            && settings.gc == Some(true)
            && let Place::Bundle {
                name,
                collects: true,
                ..
            } = &target
        {
            crate::open::gc(name, &gc_options, &options).await?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Core review finding 22: a sync target is read as every target
    /// string is, so `oci-archive:m.tar:v1` names a tag (refused) and no
    /// file called `m.tar:v1` is written; a bad `gc_grace` is refused.
    #[tokio::test]
    async fn finding_22_a_tagged_archive_target_is_refused_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("m.tar");
        let source = dir.path().join("src");
        let config = Config::parse(&format!(
            "sync:\n  - source: oci:{}\n    target: oci-archive:{}:v1\n",
            source.display(),
            archive.display()
        ))
        .expect("config");
        let err = run(&config, false, &OpenOptions::new(), None)
            .await
            .expect_err("a tag in a sync target");
        assert!(err.to_string().contains("not a tag"), "{err}");
        assert!(
            std::fs::read_dir(dir.path())
                .expect("list")
                .filter_map(|e| e.ok())
                .all(|e| !e.file_name().to_string_lossy().contains("m.tar")),
            "a file was written"
        );
        let config = Config::parse(&format!(
            "sync:\n  - source: oci:{}\n    target: oci:{}\n    gc: true\n    gc_grace: soon\n",
            source.display(),
            dir.path().join("out").display()
        ))
        .expect("config");
        let err = run(&config, false, &OpenOptions::new(), None)
            .await
            .expect_err("a bad grace");
        assert!(err.to_string().contains("gc_grace"), "{err}");
    }

    #[test]
    fn shards_split_the_repositories_exactly_and_the_same_way_everywhere() {
        assert_eq!(Shard::parse("finish"), Ok(Shard::Finish));
        assert_eq!(Shard::parse("2/4"), Ok(Shard::Part { index: 2, count: 4 }));
        for bad in ["4/4", "1/0", "x/4", "3", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let names: Vec<String> = (0..200).map(|i| format!("team/app{i}")).collect();
        let shards: Vec<Shard> = (0..4)
            .map(|index| Shard::Part { index, count: 4 })
            .collect();
        for name in &names {
            let takers = shards
                .iter()
                .filter(|s| s.takes("registry.example", name))
                .count();
            assert_eq!(takers, 1, "{name} is taken by {takers} shards");
            assert!(Shard::All.takes("registry.example", name));
            assert!(Shard::Finish.takes("registry.example", name));
        }
        for shard in &shards {
            let taken = names
                .iter()
                .filter(|n| shard.takes("registry.example", n))
                .count();
            assert!((20..=80).contains(&taken), "{shard:?} takes {taken} of 200");
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let config = Config::parse(include_str!("../../../docs/sync.example.yaml"))
            .expect("docs/sync.example.yaml");
        assert_eq!(config.sync.len(), 4);
        assert_eq!(config.registries["registry.example.com"].rate, Some(10.0));
        let options = config
            .defaults
            .merged(&config.sync[0].settings)
            .options(false)
            .expect("options");
        assert_eq!(options.filter.newest, Some(5));
        assert!(options.copy.referrers);
        assert_eq!(options.copy.platforms.len(), 2);
        // The entry's own filter fields win over the defaults', one by one.
        let third = config.defaults.merged(&config.sync[2].settings);
        let tags = third.tags.expect("tags");
        assert_eq!(tags.include.map(|t| t.len()), Some(2));
        assert_eq!(
            tags.exclude.map(|t| t.len()),
            Some(2),
            "kept from the defaults"
        );
    }
}
