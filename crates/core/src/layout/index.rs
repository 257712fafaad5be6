//! [`LayoutIndex`]: a layout's `index.json` as parsed, with the lookups
//! every operation makes kept beside it. Tags are held sorted and digests
//! hashed, so finding a tag, a digest, a page of tags or the tags under a
//! prefix costs the same whatever the layout holds, and changing one entry
//! touches that entry only: a bundle of 100,000 names is parsed once per
//! change of the file, never scanned per call. Each entry's JSON is kept
//! too, encoded once when it arrives, so writing the file is a copy of
//! those bytes rather than an encoding of every entry again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::ref_name;
use crate::backend::{ListPage, ListQuery};
use crate::error::{Error, Result};
use crate::model::{
    ANNOTATION_REF_NAME, Descriptor, Digest, Document, Index, MediaType, RawManifest,
};

/// A layout's `index.json`: its root manifests, tagged or not.
#[derive(Clone, Debug)]
pub struct LayoutIndex {
    /// Everything but the entries (schema, annotations such as the
    /// collector's fences, fields orca does not know); its `manifests`
    /// stay empty.
    pub(super) index: Index,
    /// The entries in file order; `None` where one was removed.
    slots: Vec<Option<Descriptor>>,
    /// Each slot's entry as JSON, encoded when it arrived (`None` where the
    /// slot is empty, or where encoding failed: `to_bytes` says why).
    encoded: Vec<Option<Box<RawValue>>>,
    /// How many slots hold an entry.
    live: usize,
    /// Where the entries carrying each tag are, in file order.
    tags: BTreeMap<String, Vec<usize>>,
    /// Where the entries of each digest are, in file order.
    digests: HashMap<Digest, BTreeSet<usize>>,
    /// Where the untagged entries of each digest are, in file order.
    untagged: HashMap<Digest, BTreeSet<usize>>,
}

impl LayoutIndex {
    /// An empty index, as a new layout starts.
    pub fn new() -> Self {
        LayoutIndex::from_index(Index::new())
    }

    fn from_index(mut index: Index) -> Self {
        let entries = std::mem::take(&mut index.manifests);
        let count = entries.len();
        LayoutIndex::from_encoded(index, entries.into_iter().map(encoded), count)
    }

    /// Builds the lookups over the `count` `entries` (already encoded),
    /// in order.
    fn from_encoded(
        index: Index,
        entries: impl Iterator<Item = (Descriptor, Option<Box<RawValue>>)>,
        count: usize,
    ) -> Self {
        let mut built = LayoutIndex {
            index,
            slots: Vec::with_capacity(count),
            encoded: Vec::with_capacity(count),
            live: 0,
            tags: BTreeMap::new(),
            digests: HashMap::with_capacity(count),
            untagged: HashMap::new(),
        };
        for (entry, encoded) in entries {
            built.push_encoded(entry, encoded);
        }
        built
    }

    /// Parses `index.json` bytes; `file` names the file in errors. Anything
    /// that is not an image index is refused, never guessed at.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Self> {
        let raw = RawManifest::new(MediaType::OCI_INDEX, Bytes::copy_from_slice(bytes));
        match raw.parse() {
            Ok(Document::Index(index)) => Ok(LayoutIndex::from_index(*index)),
            Ok(Document::Manifest(_) | Document::Artifact(_) | Document::Schema1(_)) => {
                Err(Error::InvalidManifest {
                    what: file.to_owned(),
                    reason: "it is a manifest, not an image index".into(),
                    source: None,
                })
            }
            Err(Error::InvalidManifest { reason, source, .. }) => Err(Error::InvalidManifest {
                what: file.to_owned(),
                reason,
                source,
            }),
            Err(other) => Err(other),
        }
    }

    /// The bytes to write, deterministic for the same content: the same
    /// bytes as the [`Index`] they hold would encode to, made from each
    /// entry's JSON as it was encoded on arrival.
    pub fn to_bytes(&self) -> Result<Bytes> {
        let entries = self
            .slots
            .iter()
            .zip(&self.encoded)
            .filter_map(|(slot, encoded)| match (slot, encoded) {
                (Some(_), Some(json)) => Some(Entry::Encoded(json)),
                (Some(entry), None) => Some(Entry::Plain(entry)),
                (None, _) => None,
            })
            .collect();
        let index = &self.index;
        let document = Encoding {
            schema_version: index.schema_version,
            media_type: index.media_type.as_ref(),
            artifact_type: index.artifact_type.as_ref(),
            manifests: entries,
            subject: index.subject.as_ref(),
            annotations: &index.annotations,
            extra: &index.extra,
        };
        // Sized once: a bundle's index is megabytes, copied as it grows.
        let size: usize = self
            .encoded
            .iter()
            .flatten()
            .map(|json| json.get().len() + 1)
            .sum();
        let mut bytes = Vec::with_capacity(size + 4096);
        serde_json::to_writer(&mut bytes, &document).map_err(|e| Error::InvalidManifest {
            what: "index.json".into(),
            reason: "it cannot be serialised".into(),
            source: Some(Box::new(e)),
        })?;
        Ok(Bytes::from(bytes))
    }

    /// The root entries, in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Descriptor> + '_ {
        self.slots.iter().flatten()
    }

    /// How many root entries there are.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there is no root entry.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The manifest a tag points at (the last entry with that name wins, as
    /// other tools read it).
    pub fn resolve_tag(&self, tag: &str) -> Option<&Descriptor> {
        let at = *self.tags.get(tag)?.last()?;
        self.slots[at].as_ref()
    }

    /// The descriptor a tag resolves to: the entry without its
    /// annotations, keeping its platform.
    pub fn tagged(&self, tag: &str) -> Option<Descriptor> {
        let entry = self.resolve_tag(tag)?;
        let mut descriptor = entry.plain();
        descriptor.platform = entry.platform.clone();
        Some(descriptor)
    }

    /// A root entry with this digest.
    pub fn find(&self, digest: &Digest) -> Option<&Descriptor> {
        let at = *self.digests.get(digest)?.first()?;
        self.slots[at].as_ref()
    }

    /// Every tag, sorted, without duplicates.
    pub fn tags(&self) -> Vec<String> {
        self.tags.keys().cloned().collect()
    }

    /// One page of the sorted tags: those after `query.last`, at most
    /// `query.limit` of them, without reading the others.
    pub fn tag_page(&self, query: &ListQuery) -> ListPage {
        let after = match &query.last {
            Some(last) => Bound::Excluded(last.as_str()),
            None => Bound::Unbounded,
        };
        let mut rest = self
            .tags
            .range::<str, _>((after, Bound::Unbounded))
            .map(|(tag, _)| tag);
        let limit = query.limit.unwrap_or(usize::MAX);
        let entries: Vec<String> = rest.by_ref().take(limit).cloned().collect();
        let next = match rest.next() {
            Some(_) => entries.last().cloned(),
            None => None,
        };
        ListPage::new(entries, next)
    }

    /// Points `tag` at `descriptor`: entries carrying the tag are dropped
    /// and one entry (media type, digest, size, platform and the tag) added.
    /// An untagged entry of the same manifest goes: the tag lists it now.
    pub fn set_tag(&mut self, descriptor: &Descriptor, tag: &str) {
        self.remove_untagged(&descriptor.digest);
        let mut entry = descriptor.plain();
        entry.platform = descriptor.platform.clone();
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
        self.put(entry);
    }

    /// Adds an entry as it is (from another layout's index). An entry with
    /// a tag replaces the entries carrying that tag; an untagged entry is
    /// added unless the same untagged entry is already there.
    pub fn put(&mut self, entry: Descriptor) {
        match ref_name(&entry) {
            Some(tag) => {
                if let Some(at) = self.tags.get(tag).cloned() {
                    at.into_iter().for_each(|at| self.remove_at(at));
                }
            }
            None => {
                let same = self
                    .untagged
                    .get(&entry.digest)
                    .is_some_and(|at| at.iter().any(|&at| self.slots[at].as_ref() == Some(&entry)));
                if same {
                    return;
                }
            }
        }
        self.push(entry);
    }

    /// Compare-and-swap of `tag`: points it at `new` (removes it when
    /// `None`) if it points at `expected` now (is absent when `None`);
    /// otherwise `Error::Conflict` naming `place`, with nothing changed.
    pub fn swap_tag(
        &mut self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
        place: &str,
    ) -> Result<()> {
        if self.resolve_tag(tag).map(|d| &d.digest) != expected {
            return Err(Error::Conflict {
                what: format!("tag {tag}"),
                place: place.to_owned(),
            });
        }
        match new {
            Some(descriptor) => self.set_tag(descriptor, tag),
            None => {
                self.remove_tag(tag);
            }
        }
        Ok(())
    }

    /// Lists `descriptor` as a root without a tag (as skopeo and oras
    /// record a copy by digest), unless an entry lists it already; whether
    /// one was added.
    pub fn list_untagged(&mut self, descriptor: &Descriptor) -> bool {
        if self.find(&descriptor.digest).is_some() {
            return false;
        }
        let mut entry = descriptor.plain();
        entry.platform = descriptor.platform.clone();
        self.push(entry);
        true
    }

    /// Removes the untagged entries of `digest`; whether there were any.
    pub fn remove_untagged(&mut self, digest: &Digest) -> bool {
        let at = self.untagged.remove(digest);
        self.remove_all(at)
    }

    /// Removes `tag`; `false` when no entry carried it.
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        let at = self.tags.get(tag).cloned();
        self.remove_all(at)
    }

    /// Removes every entry for `digest`; `false` when there was none.
    pub fn remove_digest(&mut self, digest: &Digest) -> bool {
        let at = self.digests.remove(digest);
        self.remove_all(at)
    }

    /// Removes the entries at the positions `at` names, if any; whether
    /// it named any.
    fn remove_all(&mut self, at: Option<impl IntoIterator<Item = usize>>) -> bool {
        let Some(at) = at else {
            return false;
        };
        at.into_iter().for_each(|at| self.remove_at(at));
        self.settle();
        true
    }

    /// Appends an entry and records where it is.
    fn push(&mut self, entry: Descriptor) {
        let (entry, json) = encoded(entry);
        self.push_encoded(entry, json);
    }

    /// Appends an entry with its JSON and records where it is.
    fn push_encoded(&mut self, entry: Descriptor, encoded: Option<Box<RawValue>>) {
        self.settle();
        let at = self.slots.len();
        match ref_name(&entry) {
            Some(tag) => self.tags.entry(tag.to_owned()).or_default().push(at),
            None => {
                self.untagged
                    .entry(entry.digest.clone())
                    .or_default()
                    .insert(at);
            }
        }
        self.digests
            .entry(entry.digest.clone())
            .or_default()
            .insert(at);
        self.slots.push(Some(entry));
        self.encoded.push(encoded);
        self.live += 1;
    }

    /// Takes out the entry at `at`.
    fn remove_at(&mut self, at: usize) {
        let Some(entry) = self.slots[at].take() else {
            return;
        };
        self.encoded[at] = None;
        self.live -= 1;
        match ref_name(&entry) {
            Some(tag) => {
                if let Some(places) = self.tags.get_mut(tag) {
                    places.retain(|&p| p != at);
                    if places.is_empty() {
                        self.tags.remove(tag);
                    }
                }
            }
            None => forget(&mut self.untagged, &entry.digest, at),
        }
        forget(&mut self.digests, &entry.digest, at);
    }

    /// Compacts the slots once most of them are empty (after a change,
    /// never while positions are being walked).
    fn settle(&mut self) {
        let empty = self.slots.len() - self.live;
        if empty > 64 && empty > self.live {
            let index = std::mem::take(&mut self.index);
            let slots = std::mem::take(&mut self.slots);
            let encoded = std::mem::take(&mut self.encoded);
            let entries = slots
                .into_iter()
                .zip(encoded)
                .filter_map(|(slot, encoded)| slot.map(|entry| (entry, encoded)));
            *self = LayoutIndex::from_encoded(index, entries, self.live);
        }
    }
}

/// An entry with its JSON (`None` if it cannot be encoded: `to_bytes`
/// then encodes it again and says why).
fn encoded(entry: Descriptor) -> (Descriptor, Option<Box<RawValue>>) {
    let json = serde_json::value::to_raw_value(&entry).ok();
    (entry, json)
}

/// Drops position `at` from `digest`'s set, and the set once empty.
fn forget(places: &mut HashMap<Digest, BTreeSet<usize>>, digest: &Digest, at: usize) {
    if let Some(set) = places.get_mut(digest) {
        set.remove(&at);
        if set.is_empty() {
            places.remove(digest);
        }
    }
}

/// `index.json` as [`Index`] encodes it, field for field, with entries
/// that are mostly JSON already.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Encoding<'a> {
    schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a MediaType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a MediaType>,
    manifests: Vec<Entry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a Descriptor>,
    #[serde(skip_serializing_if = "no_annotations")]
    annotations: &'a BTreeMap<String, String>,
    #[serde(flatten)]
    extra: &'a BTreeMap<String, serde_json::Value>,
}

/// One entry of [`Encoding`]: its JSON when kept, else the descriptor.
#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Encoded(&'a RawValue),
    Plain(&'a Descriptor),
}

fn no_annotations(annotations: &&BTreeMap<String, String>) -> bool {
    annotations.is_empty()
}

impl PartialEq for LayoutIndex {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.entries().eq(other.entries())
    }
}

impl Eq for LayoutIndex {}

impl Default for LayoutIndex {
    fn default() -> Self {
        LayoutIndex::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(n: u8) -> Descriptor {
        Descriptor::of(MediaType::OCI_MANIFEST, &[n])
    }

    #[test]
    fn tags_move_and_coexist() {
        let mut index = LayoutIndex::new();
        index.set_tag(&manifest(1), "a");
        index.set_tag(&manifest(1), "b");
        index.set_tag(&manifest(2), "a");
        assert_eq!(index.tags(), ["a", "b"]);
        assert_eq!(
            index.resolve_tag("a").map(|d| &d.digest),
            Some(&manifest(2).digest)
        );
        assert_eq!(
            index.resolve_tag("b").map(|d| &d.digest),
            Some(&manifest(1).digest)
        );
        assert!(index.remove_tag("a"));
        assert!(!index.remove_tag("a"));
        assert!(index.remove_digest(&manifest(1).digest));
        assert!(index.is_empty());
    }

    #[test]
    fn round_trips_and_refuses_non_indexes() {
        let mut index = LayoutIndex::new();
        index.set_tag(&manifest(1), "v1");
        let bytes = index.to_bytes().expect("bytes");
        assert_eq!(
            LayoutIndex::parse(&bytes, "index.json").expect("parse"),
            index
        );
        for (text, expected) in [
            ("not json", "invalid index.json: it is not valid JSON"),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#,
                "invalid index.json: the document is a application/vnd.oci.image.manifest.v1+json",
            ),
            (
                r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:00"}]}"#,
                "invalid index.json: it is not a valid index",
            ),
        ] {
            let err = LayoutIndex::parse(text.as_bytes(), "index.json").expect_err(text);
            assert!(err.to_string().starts_with(expected), "{text}: {err}");
        }
    }

    /// The lookups agree with a scan of the entries after every change,
    /// through compactions, with duplicate names as other tools may write
    /// them, and the file keeps its order (a moved tag goes last).
    #[test]
    fn lookups_agree_with_a_scan_through_every_change() {
        let scan_tag = |index: &LayoutIndex, tag: &str| {
            index
                .entries()
                .filter(|d| ref_name(d) == Some(tag))
                .last()
                .cloned()
        };
        let with_name = |n: u8, tag: &str| {
            let mut entry = manifest(n);
            entry
                .annotations
                .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
            entry
        };
        let mut raw = Index::new();
        raw.manifests = vec![with_name(1, "dup"), manifest(3), with_name(2, "dup")];
        let mut index = LayoutIndex::from_index(raw);
        assert_eq!(index.resolve_tag("dup"), Some(&with_name(2, "dup")));
        for round in 0..400u32 {
            let n = (round % 7) as u8;
            let tag = format!("t{}", round % 97);
            match round % 5 {
                0 | 1 => index.set_tag(&manifest(n), &tag),
                2 => {
                    index.remove_tag(&format!("t{}", (round * 7) % 97));
                }
                3 => {
                    index.list_untagged(&manifest(n + 10));
                }
                _ => {
                    index.remove_digest(&manifest(n).digest);
                }
            }
            for probe in ["dup", "t0", "t5", &tag] {
                assert_eq!(index.resolve_tag(probe), scan_tag(&index, probe).as_ref());
            }
            for probe in [manifest(n), manifest(n + 10), manifest((n + 3) % 7)] {
                let first = index.entries().find(|d| d.digest == probe.digest);
                assert_eq!(index.find(&probe.digest), first);
            }
            assert_eq!(index.len(), index.entries().count());
            let mut scanned: Vec<String> = index
                .entries()
                .filter_map(ref_name)
                .map(str::to_owned)
                .collect();
            scanned.sort();
            scanned.dedup();
            assert_eq!(index.tags(), scanned);
        }
        index.set_tag(&manifest(9), "dup");
        assert_eq!(
            index
                .entries()
                .filter(|d| ref_name(d) == Some("dup"))
                .count(),
            1
        );
        assert_eq!(index.entries().last(), Some(&with_name(9, "dup")));
        let reparsed = LayoutIndex::parse(&index.to_bytes().expect("bytes"), "i").expect("parse");
        assert_eq!(reparsed, index);
    }

    /// The kept JSON gives the bytes the whole index encodes to, through
    /// moves, removals and a compaction, with fields orca does not know.
    #[test]
    fn kept_entry_json_writes_what_the_index_encodes_to() {
        let text = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a","size":1,"annotations":{"org.opencontainers.image.ref.name":"old"},"x-unknown":{"kept":true}}],"annotations":{"a":"b"},"x-extra":[1,2]}"#;
        let mut index = LayoutIndex::parse(text.as_bytes(), "index.json").expect("parse");
        let whole = |index: &LayoutIndex| {
            let mut plain = index.index.clone();
            plain.manifests = index.entries().cloned().collect();
            plain.to_raw().expect("raw").bytes().clone()
        };
        assert_eq!(index.to_bytes().expect("bytes"), whole(&index));
        assert_eq!(&index.to_bytes().expect("bytes")[..], text.as_bytes());
        for n in 0..200u8 {
            index.set_tag(&manifest(n % 13), &format!("t{}", n % 40));
            if n % 3 == 0 {
                index.remove_tag(&format!("t{}", (n / 3) % 40));
            }
            if n % 17 == 0 {
                index.remove_digest(&manifest(n % 13).digest);
            }
            assert_eq!(index.to_bytes().expect("bytes"), whole(&index), "round {n}");
        }
    }

    #[test]
    fn tag_pages_read_only_what_they_return() {
        let mut index = LayoutIndex::new();
        for n in 0..10u8 {
            index.set_tag(&manifest(n), &format!("app:{n}"));
        }
        index.set_tag(&manifest(1), "other:x");
        let page = index.tag_page(&ListQuery::page(Some("app:".into()), 3));
        assert_eq!(page.entries, ["app:0", "app:1", "app:2"]);
        assert_eq!(page.next.as_deref(), Some("app:2"));
        let rest = index.tag_page(&ListQuery::page(Some("app:8".into()), 5));
        assert_eq!(rest.entries, ["app:9", "other:x"]);
        assert_eq!(rest.next, None);
        assert_eq!(index.tag_page(&ListQuery::all()).entries, index.tags());
    }
}
