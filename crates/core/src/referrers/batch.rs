//! In-process batching of referrers changes: concurrent changes to one
//! subject queue behind one turn and are applied as one update; a caller
//! that goes away takes its change back out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::{Change, Settings, update};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::Digest;

/// A change waiting for its turn: its caller's id, settings and answer.
pub(super) struct Queued {
    pub(super) id: u64,
    pub(super) change: Change,
    pub(super) settings: Settings,
    pub(super) answer: oneshot::Sender<bool>,
}

/// A subject's queue of changes waiting for their turn.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) turn: tokio::sync::Mutex<()>,
    pub(super) pending: Mutex<Vec<Queued>>,
}

/// Takes a cancelled caller's change back out of the queue (and forgets
/// the slot if it is idle), so a change whose caller is gone is never
/// applied later by someone else's batch.
pub(super) struct Withdraw<'a> {
    pub(super) batcher: &'a Batcher,
    pub(super) subject: &'a Digest,
    pub(super) slot: Option<Arc<Slot>>,
    pub(super) id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|q| q.id != self.id);
            self.batcher.release(self.subject, slot);
        }
    }
}

/// Batches concurrent changes to one subject within a process.
#[derive(Default)]
pub(crate) struct Batcher {
    pub(super) slots: Mutex<HashMap<Digest, Arc<Slot>>>,
}

impl Batcher {
    pub(super) fn slot(&self, subject: &Digest) -> Arc<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(subject.clone())
            .or_default()
            .clone()
    }

    /// Applies `change` to the fallback index of `subject`, together with
    /// whatever other changes to it are waiting. If the batch fails, each
    /// change is tried again on its own, so every caller gets its own error.
    pub(crate) async fn submit(
        &self,
        backend: &dyn Backend,
        subject: &Digest,
        change: Change,
        settings: Settings,
    ) -> Result<()> {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = self.slot(subject);
        let (answer, mut receiver) = oneshot::channel();
        slot.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Queued {
                id,
                change: change.clone(),
                settings,
                answer,
            });
        let mut withdraw = Withdraw {
            batcher: self,
            subject,
            slot: Some(slot.clone()),
            id,
        };
        // Wait for the turn, or for the answer of whoever's batch took this
        // change first: a change already applied never waits behind the
        // turns of changes that came after it (which would leave one update
        // running at a time however many wait).
        let answer = {
            let turn = slot.turn.lock();
            tokio::pin!(turn);
            tokio::select! {
                biased;
                answer = &mut receiver => answer,
                _turn = &mut turn => {
                    self.apply_waiting(backend, subject, &slot).await;
                    (&mut receiver).await
                }
            }
        };
        let result = if answer == Ok(true) {
            Ok(())
        } else {
            let _turn = slot.turn.lock().await;
            update(backend, subject, &change, settings).await
        };
        withdraw.slot = None;
        self.release(subject, slot);
        result
    }

    /// Applies every change waiting for `subject` as one update (the
    /// caller holds the turn) and answers each.
    async fn apply_waiting(&self, backend: &dyn Backend, subject: &Digest, slot: &Slot) {
        let batch: Vec<Queued> =
            std::mem::take(&mut *slot.pending.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                // A caller that went away takes its change with it.
                .filter(|q| !q.answer.is_closed())
                .collect();
        if batch.is_empty() {
            return;
        }
        let mut combined = Change::default();
        // Superseded indexes go only if every caller agrees.
        let mut settings = batch[0].settings;
        for queued in &batch {
            combined.then(&queued.change);
            settings.gc &= queued.settings.gc;
        }
        let done = update(backend, subject, &combined, settings).await.is_ok();
        for queued in batch {
            let _ = queued.answer.send(done);
        }
    }

    /// Forgets an idle subject's slot (held only by the map and `slot`).
    pub(super) fn release(&self, subject: &Digest, slot: Arc<Slot>) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = slot
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        if idle && Arc::strong_count(&slot) == 2 {
            slots.remove(subject);
        }
    }
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}
