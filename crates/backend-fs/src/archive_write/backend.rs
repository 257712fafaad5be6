//! The `Backend` contract over an archive being written: pushes become
//! tar entries, tags live in memory (with compare-and-swap), reads come
//! back out of the temporary tar; nothing can be deleted.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::ops::Range;

use async_trait::async_trait;
use orca_core::layout;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, ListPage, ListQuery, MediaType,
    PushOptions, RawManifest, Referrers, Result, Selector,
};

use super::{ArchiveWriter, Written};
use crate::backend::file_body;
use crate::error::{FileError, IoContext};

#[async_trait]
impl Backend for ArchiveWriter {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::NONE;
        capabilities.untag = true;
        capabilities.tag_compare_and_swap = true;
        capabilities.fetch_range = true;
        capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        Ok(self.state().content.contains_key(&descriptor.digest))
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        Ok(self
            .state()
            .content
            .get(&descriptor.digest)
            .map(|written| written.span.size))
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        self.fetch_range(descriptor, 0..descriptor.size).await
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        self.check_open()?;
        if !self.exists(descriptor).await? {
            let manifest = descriptor.media_type.is_manifest();
            let (body, names) = if manifest {
                // Manifests are small (Store capped them): read them to
                // learn what they name.
                let bytes = body.bytes(Capabilities::NONE.max_manifest_size).await?;
                let document =
                    RawManifest::new(descriptor.media_type.clone(), bytes.clone()).parse()?;
                // Children only: a referrer's subject is not part of it, and
                // an image that only referrers name is still a root.
                let names = document.children().into_iter().cloned().collect();
                (Body::from_bytes(bytes), names)
            } else {
                (body, Vec::new())
            };
            let media_type = descriptor.media_type.clone();
            let digest = descriptor.digest.clone();
            self.write_entry(&layout::blob_path(&descriptor.digest), body, |span| {
                self.state().content.insert(
                    digest,
                    Written {
                        span,
                        media_type,
                        names,
                    },
                );
            })
            .await?;
        }
        if let Some(tag) = &options.tag {
            self.tag(descriptor, tag).await?;
        }
        Ok(())
    }

    async fn partial(&self, _: &Descriptor) -> Result<u64> {
        Ok(0)
    }

    async fn delete(&self, _: &Descriptor) -> Result<()> {
        Err(Error::Unsupported {
            operation: "delete",
            place: self.to_string(),
        })
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        let state = self.state();
        match selector {
            Selector::Tag(tag) => state
                .tags
                .get(&self.key(tag))
                .map(Descriptor::plain)
                .ok_or_else(|| self.not_found(format!("tag {tag}"))),
            Selector::Digest(digest) => state
                .content
                .get(digest)
                .filter(|w| w.media_type.is_manifest())
                .map(|w| Descriptor::new(w.media_type.clone(), digest.clone(), w.span.size))
                .ok_or_else(|| self.not_found(format!("manifest {digest}"))),
        }
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        self.check_open()?;
        let mut state = self.state();
        if !state.content.contains_key(&descriptor.digest) {
            return Err(self.not_found(format!("manifest {}", descriptor.digest)));
        }
        state.tags.insert(self.key(tag), descriptor.plain());
        Ok(())
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        self.check_open()?;
        match self.state().tags.remove(&self.key(tag)) {
            Some(_) => Ok(()),
            None => Err(self.not_found(format!("tag {tag}"))),
        }
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        self.check_open()?;
        let key = self.key(tag);
        let mut state = self.state();
        let now = state.tags.get(&key).map(|d| &d.digest);
        if now != expected {
            return Err(Error::Conflict {
                what: format!("tag {tag}"),
                place: self.to_string(),
            });
        }
        match new {
            Some(new) => {
                if !state.content.contains_key(&new.digest) {
                    return Err(self.not_found(format!("manifest {}", new.digest)));
                }
                state.tags.insert(key, new.plain());
            }
            None => {
                state.tags.remove(&key);
            }
        }
        Ok(())
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let tags: Vec<String> = self
            .state()
            .tags
            .keys()
            .filter(|(repository, _)| *repository == self.repository)
            .map(|(_, tag)| tag.clone())
            .collect();
        Ok(ListPage::slice(&tags, query))
    }

    async fn referrers(&self, _: &Descriptor, _: Option<&MediaType>) -> Result<Referrers> {
        Err(Error::Unsupported {
            operation: "referrers",
            place: self.to_string(),
        })
    }

    async fn mount(&self, _: &Descriptor, _: &str) -> Result<bool> {
        Err(Error::Unsupported {
            operation: "mount",
            place: self.to_string(),
        })
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        let span = self
            .state()
            .content
            .get(&descriptor.digest)
            .map(|w| w.span)
            .ok_or_else(|| self.not_found(format!("content {}", descriptor.digest)))?;
        if range.start > range.end || range.end > span.size {
            return Err(Error::InvalidInput {
                what: format!("range {}..{}", range.start, range.end),
                reason: format!("{} has {} bytes", descriptor.digest, span.size),
            });
        }
        let temp = self.inner.temp.clone();
        let offset = span.offset + range.start;
        let file = tokio::task::spawn_blocking(move || -> std::result::Result<File, FileError> {
            let mut file = File::open(&temp).at("open", &temp)?;
            file.seek(SeekFrom::Start(offset)).at("seek", &temp)?;
            Ok(file)
        })
        .await
        .map_err(|e| self.joined("fetch", e))?
        .map_err(|e| self.file_error("fetch", e))?;
        Ok(file_body(file, range.end - range.start, self.to_string()))
    }

    async fn catalog(&self, _: &ListQuery) -> Result<ListPage> {
        Err(Error::Unsupported {
            operation: "catalog",
            place: self.to_string(),
        })
    }
}
