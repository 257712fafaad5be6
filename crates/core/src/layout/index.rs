//! [`LayoutIndex`]: a layout's `index.json` as parsed, with the lookups
//! every operation makes kept beside it. Tags are held sorted and digests
//! hashed, so finding a tag, a digest, a page of tags or the tags under a
//! prefix costs the same whatever the layout holds, and changing one entry
//! touches that entry only: a bundle of 100,000 names is parsed once per
//! change of the file, never scanned per call.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use bytes::Bytes;

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
    /// How many slots hold an entry.
    live: usize,
    /// Where the entries carrying each tag are, in file order.
    tags: BTreeMap<String, Vec<usize>>,
    /// Where the entries of each digest are, in file order.
    digests: HashMap<Digest, Vec<usize>>,
}

impl LayoutIndex {
    /// An empty index, as a new layout starts.
    pub fn new() -> Self {
        LayoutIndex::from_index(Index::new())
    }

    fn from_index(mut index: Index) -> Self {
        let entries = std::mem::take(&mut index.manifests);
        let mut built = LayoutIndex {
            index,
            slots: Vec::with_capacity(entries.len()),
            live: 0,
            tags: BTreeMap::new(),
            digests: HashMap::with_capacity(entries.len()),
        };
        for entry in entries {
            built.push(entry);
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

    /// The bytes to write, deterministic for the same content.
    pub fn to_bytes(&self) -> Result<Bytes> {
        let mut index = self.index.clone();
        index.manifests = self.entries().cloned().collect();
        Ok(index.to_raw()?.bytes().clone())
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
                    .digests
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
        self.remove_where(digest, |entry| ref_name(entry).is_none())
    }

    /// Removes `tag`; `false` when no entry carried it.
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        let Some(at) = self.tags.get(tag).cloned() else {
            return false;
        };
        at.into_iter().for_each(|at| self.remove_at(at));
        self.settle();
        true
    }

    /// Removes every entry for `digest`; `false` when there was none.
    pub fn remove_digest(&mut self, digest: &Digest) -> bool {
        self.remove_where(digest, |_| true)
    }

    /// Removes the entries of `digest` that `which` picks; whether any.
    fn remove_where(&mut self, digest: &Digest, which: impl Fn(&Descriptor) -> bool) -> bool {
        let Some(at) = self.digests.get(digest) else {
            return false;
        };
        let picked: Vec<usize> = at
            .iter()
            .copied()
            .filter(|&at| self.slots[at].as_ref().is_some_and(&which))
            .collect();
        picked.iter().for_each(|&at| self.remove_at(at));
        self.settle();
        !picked.is_empty()
    }

    /// Appends an entry and records where it is.
    fn push(&mut self, entry: Descriptor) {
        self.settle();
        let at = self.slots.len();
        if let Some(tag) = ref_name(&entry) {
            self.tags.entry(tag.to_owned()).or_default().push(at);
        }
        self.digests
            .entry(entry.digest.clone())
            .or_default()
            .push(at);
        self.slots.push(Some(entry));
        self.live += 1;
    }

    /// Takes out the entry at `at`.
    fn remove_at(&mut self, at: usize) {
        let Some(entry) = self.slots[at].take() else {
            return;
        };
        self.live -= 1;
        if let Some(tag) = ref_name(&entry)
            && let Some(places) = self.tags.get_mut(tag)
        {
            places.retain(|&p| p != at);
            if places.is_empty() {
                self.tags.remove(tag);
            }
        }
        if let Some(places) = self.digests.get_mut(&entry.digest) {
            places.retain(|&p| p != at);
            if places.is_empty() {
                self.digests.remove(&entry.digest);
            }
        }
    }

    /// Compacts the slots once most of them are empty (after a change,
    /// never while positions are being walked).
    fn settle(&mut self) {
        let empty = self.slots.len() - self.live;
        if empty > 64 && empty > self.live {
            let mut index = std::mem::take(&mut self.index);
            index.manifests = std::mem::take(&mut self.slots)
                .into_iter()
                .flatten()
                .collect();
            *self = LayoutIndex::from_index(index);
        }
    }
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
