//! [`Ledger`]: the blobs the copies of one run share. Many images copied
//! together (a sync) name the same base layers; with a ledger each blob
//! moves once per run. The first copy that needs it transfers it while
//! the others wait; later copies into another repository of the same
//! registry mount it from where it landed, and copies into the same
//! place find it present. All transfers share one bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, watch};

use crate::model::Digest;

/// Blobs moved by the copies of one run, and the bound on transfers they
/// share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ledger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    blobs: Mutex<HashMap<Digest, Slot>>,
    transfers: Semaphore,
}

#[derive(Debug)]
enum Slot {
    /// A copy is moving it; the flag turns true when it landed.
    Moving(watch::Receiver<bool>),
    /// It landed in this repository.
    Landed(String),
}

/// What a copy that needs a blob should do.
pub(crate) enum Claim {
    /// Move it, then report through the guard.
    Mine(Moving),
    /// Another copy is moving it: wait, then ask again.
    Wait(watch::Receiver<bool>),
    /// It landed in this repository during the run.
    Landed(String),
}

/// A claim on moving a blob; dropped without [`Moving::landed`], the
/// claim is given up and the next copy that asks moves the blob.
pub(crate) struct Moving {
    ledger: Ledger,
    digest: Digest,
    done: Option<watch::Sender<bool>>,
}

impl Ledger {
    /// A ledger whose copies run at most `transfers` blob transfers at once
    /// between them (at least 1).
    pub fn new(transfers: usize) -> Self {
        Ledger {
            inner: Arc::new(Inner {
                blobs: Mutex::new(HashMap::new()),
                transfers: Semaphore::new(transfers.max(1)),
            }),
        }
    }

    /// How many blobs landed during the run.
    pub fn landed(&self) -> usize {
        self.slots()
            .values()
            .filter(|slot| matches!(slot, Slot::Landed(_)))
            .count()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Slot>> {
        // A panic elsewhere cannot leave the map half-changed: every
        // change is one insert or remove.
        self.inner
            .blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `digest` for moving, or says who has it.
    pub(crate) fn claim(&self, digest: &Digest) -> Claim {
        let mut slots = self.slots();
        match slots.get(digest) {
            Some(Slot::Landed(repository)) => Claim::Landed(repository.clone()),
            Some(Slot::Moving(receiver)) if receiver.has_changed().is_ok() => {
                Claim::Wait(receiver.clone())
            }
            // Free, or its mover is gone without a word.
            _ => {
                let (sender, receiver) = watch::channel(false);
                slots.insert(digest.clone(), Slot::Moving(receiver));
                Claim::Mine(Moving {
                    ledger: self.clone(),
                    digest: digest.clone(),
                    done: Some(sender),
                })
            }
        }
    }

    /// Waits for a turn to transfer.
    pub(crate) async fn transfer_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.inner.transfers.acquire().await.ok()
    }
}

impl Moving {
    /// Records that the blob is now in `repository`, and wakes the copies
    /// waiting for it.
    pub(crate) fn landed(mut self, repository: &str) {
        self.ledger
            .slots()
            .insert(self.digest.clone(), Slot::Landed(repository.to_owned()));
        if let Some(done) = self.done.take() {
            let _ = done.send(true);
        }
    }
}

impl Drop for Moving {
    fn drop(&mut self) {
        if self.done.is_some() {
            // Given up: free the slot; waiters see the sender gone.
            self.ledger.slots().remove(&self.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_mover_the_rest_wait_then_find_it_landed() {
        let ledger = Ledger::new(2);
        let digest = Digest::sha256(b"base layer");
        let Claim::Mine(moving) = ledger.claim(&digest) else {
            panic!("the first claim moves");
        };
        let Claim::Wait(mut waiting) = ledger.claim(&digest) else {
            panic!("the second waits");
        };
        moving.landed("library/a");
        assert!(waiting.wait_for(|done| *done).await.is_ok());
        assert!(matches!(ledger.claim(&digest), Claim::Landed(r) if r == "library/a"));
        assert_eq!(ledger.landed(), 1);
    }

    #[tokio::test]
    async fn a_mover_that_gives_up_frees_the_blob() {
        let ledger = Ledger::new(1);
        let digest = Digest::sha256(b"flaky");
        let Claim::Mine(moving) = ledger.claim(&digest) else {
            panic!("the first claim moves");
        };
        let Claim::Wait(mut waiting) = ledger.claim(&digest) else {
            panic!("the second waits");
        };
        drop(moving);
        assert!(waiting.wait_for(|done| *done).await.is_err());
        assert!(matches!(ledger.claim(&digest), Claim::Mine(_)));
        assert_eq!(ledger.landed(), 0);
    }
}
