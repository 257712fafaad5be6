//! Moving one blob: mounted, found present, or transferred — continued
//! from what the target kept when it can, tried again when the network
//! broke the transfer off — with its bytes reported as they pass.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::stream::StreamExt;

use super::ledger::Claim;
use super::{Copier, Event};
use crate::backend::PushOptions;
use crate::body::Body;
use crate::error::{Error, Result};
use crate::model::Descriptor;

/// Shortest time between two [`Event::Advanced`] of one blob.
const ADVANCE_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts at one blob's transfer when the network breaks it off.
const TRANSFER_ATTEMPTS: u32 = 3;

impl Copier<'_> {
    /// Moves one blob: mount, skip or transfer. Returns its final event,
    /// and the bytes the target already held when the transfer resumed.
    /// With a run's [`Ledger`](super::Ledger), a blob another copy of the
    /// run is moving is waited for, then found present or mounted from
    /// where it landed.
    pub(super) async fn blob(&self, blob: Descriptor) -> Result<(Event, u64)> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Err(abandoned(&blob));
        }
        if !blob.urls.is_empty() && !self.options.external {
            return Ok((Event::External(blob), 0));
        }
        let Some(shared) = &self.options.shared else {
            return self.move_blob(blob, None).await;
        };
        loop {
            match shared.ledger.claim(&blob.digest) {
                Claim::Mine(moving) => {
                    let moved = self.move_blob(blob, None).await?;
                    moving.landed(&shared.repository);
                    return Ok(moved);
                }
                Claim::Wait(mut landed) => {
                    // Landed or given up: either way, ask again.
                    let _ = landed.wait_for(|done| *done).await;
                }
                Claim::Landed(repository) => {
                    let from = (repository != shared.repository).then_some(repository);
                    return self.move_blob(blob, from).await;
                }
            }
        }
    }

    /// [`Copier::blob`] on its own: mount (from `from`, a repository of
    /// the target's registry that has it, else from the copy's
    /// `mount_from`), skip when present, or transfer.
    async fn move_blob(&self, blob: Descriptor, from: Option<String>) -> Result<(Event, u64)> {
        if let Some(from) = &from
            && self.target.capabilities().mount
        {
            if self.target.exists(&blob).await? {
                return Ok((Event::Present(blob), 0));
            }
            if let Ok(true) = self.target.mount(&blob, from).await {
                return Ok((Event::Mounted(blob), 0));
            }
        }
        if let Some(from) = &self.options.mount_from
            && self.target.capabilities().mount
        {
            // A mount is a shortcut: when it is refused or fails, the blob
            // is transferred instead.
            if let Ok(true) = self.target.mount(&blob, from).await {
                return Ok((Event::Mounted(blob), 0));
            }
        }
        if self.target.exists(&blob).await? {
            return Ok((Event::Present(blob), 0));
        }
        let _turn = match &self.options.shared {
            Some(shared) => shared.ledger.transfer_turn().await,
            None => None,
        };
        self.emit(Event::Started(blob.clone()));
        // A transfer that broke off in the network (a stalled or reset
        // connection, an upload session the registry dropped) is tried
        // again: the source can be read again, and the target continues
        // what it kept or starts over.
        let mut attempt = 1;
        loop {
            match self.transfer(&blob).await {
                Err(e)
                    if attempt < TRANSFER_ATTEMPTS
                        && matches!(e, Error::Failed { .. } | Error::Backend { .. })
                        && !self.abandoned.load(Ordering::Relaxed) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// One attempt at moving a blob's bytes: continued from what the
    /// target kept, or whole.
    async fn transfer(&self, blob: &Descriptor) -> Result<(Event, u64)> {
        let blob = blob.clone();
        if let Some(offset) = self.resumable(&blob).await? {
            self.emit(Event::Resumed {
                digest: blob.digest.clone(),
                offset,
            });
            let body = self.source.fetch_range(&blob, offset..blob.size).await?;
            let body = self.metered(body, &blob, offset);
            match self
                .target
                .push_opts(&blob, body, PushOptions::resumed(offset))
                .await
            {
                Ok(()) => return Ok((Event::Copied(blob), offset)),
                // What the target held was not the start of this blob, or
                // went away: it dropped it, and the whole blob moves.
                Err(Error::DigestMismatch { .. } | Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let body = self.source.fetch(&blob).await?;
        let body = self.metered(body, &blob, 0);
        self.target.push(&blob, body).await?;
        Ok((Event::Copied(blob), 0))
    }

    /// Where an interrupted transfer of `blob` can continue from, when the
    /// target kept part of it and the source can serve the rest.
    async fn resumable(&self, blob: &Descriptor) -> Result<Option<u64>> {
        // `Store::partial` answers zero for a target that cannot resume
        // and for anything but a proper prefix of the blob.
        if !self.source.capabilities().fetch_range {
            return Ok(None);
        }
        let offset = self.target.partial(blob).await?;
        Ok((offset > 0).then_some(offset))
    }

    /// Reports the bytes of `body` (which starts at byte `offset` of the
    /// blob) as they are read, throttled, and ends it with an error once
    /// the copy is abandoned.
    fn metered(&self, body: Body, blob: &Descriptor, offset: u64) -> Body {
        let flag = self.abandoned.clone();
        let stopping = blob.clone();
        let body = body.observed(|chunks| until_abandoned(chunks, flag, stopping));
        match self.options.progress.clone() {
            Some(progress) => advancing(body, blob, offset, progress),
            None => body,
        }
    }
}

/// `body`, the bytes of `blob` from `offset`, reporting [`Event::Advanced`]
/// to `progress` as they are read: throttled, and always at the end.
fn advancing(
    body: Body,
    blob: &Descriptor,
    offset: u64,
    progress: std::sync::Arc<dyn super::Progress>,
) -> Body {
    let size = blob.size;
    let digest = blob.digest.clone();
    let mut done = offset;
    let mut last = Instant::now();
    body.observed(|chunks| {
        chunks.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                done += bytes.len() as u64;
                if done == size || last.elapsed() >= ADVANCE_INTERVAL {
                    last = Instant::now();
                    progress.event(&Event::Advanced {
                        digest: digest.clone(),
                        done,
                        size,
                    });
                }
            }
        })
    })
}

/// `body` (the content of `blob`), reporting its bytes to `progress` as
/// they are read: [`Event::Advanced`], throttled, and always at its end.
/// For transfers outside a copy (files pushed or pulled) that draw the
/// same progress.
pub fn reported(
    body: Body,
    blob: &Descriptor,
    progress: std::sync::Arc<dyn super::Progress>,
) -> Body {
    advancing(body, blob, 0, progress)
}

/// The error a transfer ends with when another transfer of the copy failed.
/// `chunks`, failing once `flag` is set, and ending at the first error:
/// nothing comes after it, so a backend that (against the contract) read
/// on past an error would find the body short, never the rest of it.
fn until_abandoned(
    chunks: futures::stream::BoxStream<'static, Result<bytes::Bytes>>,
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    blob: Descriptor,
) -> impl futures::Stream<Item = Result<bytes::Bytes>> + Send + 'static {
    chunks.scan(false, move |ended, chunk| {
        if *ended {
            return futures::future::ready(None);
        }
        let item = if flag.load(Ordering::Relaxed) {
            Err(abandoned(&blob))
        } else {
            chunk
        };
        *ended = item.is_err();
        futures::future::ready(Some(item))
    })
}

fn abandoned(blob: &Descriptor) -> Error {
    Error::InvalidInput {
        what: format!("transfer of blob {}", blob.digest),
        reason: "abandoned because another transfer of the copy failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Core review finding 11: once a copy is abandoned, a body ends with
    /// its error; no chunk follows it for a lenient reader to take.
    #[tokio::test]
    async fn finding_11_an_abandoned_body_ends_at_its_error() {
        let chunks: Vec<Result<bytes::Bytes>> =
            (0..4).map(|n| Ok(bytes::Bytes::from(vec![n; 8]))).collect();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let blob = Descriptor::of(crate::model::MediaType::OCTET_STREAM, b"whatever");
        let mut stream = Box::pin(until_abandoned(
            futures::stream::iter(chunks).boxed(),
            flag.clone(),
            blob,
        ));
        assert!(matches!(stream.next().await, Some(Ok(_))));
        flag.store(true, Ordering::Relaxed);
        assert!(matches!(stream.next().await, Some(Err(_))));
        assert!(
            stream.next().await.is_none(),
            "a chunk came after the error"
        );
    }
}
