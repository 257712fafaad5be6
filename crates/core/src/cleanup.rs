//! Clean-up that outlives the operation that needed it. An operation
//! dropped part-way (a copy cancelled because a sibling failed, a command
//! interrupted by Ctrl-C) cannot await anything in its destructors, so its
//! guards hand their clean-up here (cancel an upload session, abort a
//! multipart upload), and a program about to exit waits for it with
//! [`drain`]. Guards also record here what they keep on purpose for a
//! later run to continue ([`keep`]), so the program can say so.

use std::future::Future;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

#[derive(Default)]
struct Pending {
    tasks: Vec<(String, JoinHandle<()>)>,
    kept: Vec<String>,
}

fn pending() -> &'static Mutex<Pending> {
    static PENDING: OnceLock<Mutex<Pending>> = OnceLock::new();
    PENDING.get_or_init(Mutex::default)
}

/// Runs `work` (`what` says what it undoes) on the current runtime, for
/// [`drain`] to wait for. Outside a runtime there is nothing to run it
/// on: it is dropped, and `what` is recorded as left undone.
pub fn spawn(what: impl Into<String>, work: impl Future<Output = ()> + Send + 'static) {
    let what = what.into();
    let mut pending = pending().lock().unwrap_or_else(PoisonError::into_inner);
    // Finished ones go, so a long-lived process does not pile them up.
    pending.tasks.retain(|(_, task)| !task.is_finished());
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let task = runtime.spawn(work);
            pending.tasks.push((what, task));
        }
        Err(_) => pending.kept.push(format!("{what} (not done: no runtime)")),
    }
}

/// Records something left on purpose for a later run to continue (a
/// blob's partial file, a recorded upload session).
pub fn keep(what: impl Into<String>) {
    pending()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .kept
        .push(what.into());
}

/// What [`drain`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Clean-ups that finished, by what they undid.
    pub done: Vec<String>,
    /// Clean-ups still running at the deadline (they were stopped), or
    /// that could not run to their end.
    pub unfinished: Vec<String>,
    /// What was kept for a later run.
    pub kept: Vec<String>,
}

/// Waits, up to `deadline`, for the clean-up handed over so far, and
/// takes the record of what was kept. What is still running at the
/// deadline is stopped and named in [`Drained::unfinished`].
pub async fn drain(deadline: Duration) -> Drained {
    let (tasks, kept) = {
        let mut pending = pending().lock().unwrap_or_else(PoisonError::into_inner);
        (
            std::mem::take(&mut pending.tasks),
            std::mem::take(&mut pending.kept),
        )
    };
    let mut drained = Drained {
        kept,
        ..Drained::default()
    };
    let until = tokio::time::Instant::now() + deadline;
    for (what, mut task) in tasks {
        match tokio::time::timeout_at(until, &mut task).await {
            Ok(Ok(())) => drained.done.push(what),
            // It panicked, or its runtime went away under it.
            Ok(Err(_)) => drained.unfinished.push(what),
            Err(_) => {
                task.abort();
                drained.unfinished.push(what);
            }
        }
    }
    drained
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handed_over_work_is_waited_for_within_the_deadline() {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        spawn("quick", async move {
            let _ = sender.send(());
        });
        spawn("slow", std::future::pending());
        keep("a partial file");
        let drained = drain(Duration::from_millis(200)).await;
        assert!(receiver.await.is_ok());
        assert!(drained.done.contains(&"quick".to_owned()), "{drained:?}");
        assert!(
            drained.unfinished.contains(&"slow".to_owned()),
            "{drained:?}"
        );
        assert!(
            drained.kept.contains(&"a partial file".to_owned()),
            "{drained:?}"
        );
    }
}
