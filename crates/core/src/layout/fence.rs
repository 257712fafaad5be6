//! The fences a garbage collection puts up in `index.json`, and the
//! collection epoch writers compare against.
//!
//! A fence names every blob a collection is about to delete. It is written
//! by the same compare-and-swap as every tag change, so a tag either lands
//! before it (and the collection marks again) or sees it (and is refused).
//! A fence lives only as long as its owner: while the collection renews its
//! lease, and, when the owner is a process on this machine, only while
//! that process (and in this process, that collection) still runs. So a
//! collection that dies never blocks pushes for long.
//!
//! The epoch counts the fences ever put up in a layout. A writer that saw
//! the same epoch, with no fence up, when it first looked at the layout
//! knows no collection removed anything it has seen present since.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LayoutIndex;
use crate::model::Digest;

/// The annotation prefix of a collection's fence in `index.json`.
const FENCE: &str = "dev.orca.gc.fence.";
/// The annotation counting the fences ever put up.
const EPOCH: &str = "dev.orca.gc.epoch";
/// How long a fence outlives its last renewal, as other machines judge it.
pub(super) const LEASE: Duration = Duration::from_secs(5 * 60);
/// How often a running collection renews its fence.
pub(super) const RENEW_EVERY: Duration = Duration::from_secs(20);
/// A collection deletes only within this long of its last renewal: the
/// rest of the lease is the margin for clocks that disagree.
pub(super) const DELETE_WITHIN: Duration = Duration::from_secs(60);

/// Seconds since the epoch, by this machine's clock.
pub(crate) fn unix_now() -> u64 {
    crate::retry::unix_secs()
}

/// Who put a fence up: enough to tell, on the same machine, whether that
/// process still runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Owner {
    /// The kernel's boot id (empty where unknown).
    boot: String,
    /// The process-id namespace (empty where unknown).
    pidns: String,
    pid: u32,
    /// The process's start time in clock ticks since boot, so a reused
    /// process id is not taken for the owner.
    start: u64,
    /// Which copy of this code in that process: a host and the plugins it
    /// loaded each link their own, with their own record of running
    /// collections, so one copy cannot judge another's fence by it (the
    /// lease does). Empty in fences from before it was recorded.
    #[serde(default)]
    copy: String,
}

impl Owner {
    /// This process.
    pub(super) fn me() -> &'static Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                boot: read_trimmed("/proc/sys/kernel/random/boot_id"),
                pidns: std::fs::read_link("/proc/self/ns/pid")
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                pid,
                start: start_ticks(pid).unwrap_or(0),
                // Unique among the copies one process has loaded.
                copy: format!("{:x}", std::ptr::from_ref(&ME) as usize),
            }
        })
    }

    /// Whether this owner's process is known to have ended: only
    /// answerable for a process in this machine's (and namespace's) view.
    fn gone(&self) -> bool {
        let me = Owner::me();
        if self.boot.is_empty() || self.pidns.is_empty() {
            return false;
        }
        if self.boot != me.boot || self.pidns != me.pidns {
            return false;
        }
        start_ticks(self.pid) != Some(self.start)
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A process's start time (field 22 of `/proc/PID/stat`), if it runs.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The collections running in this process, by fence id.
fn running() -> &'static Mutex<HashSet<String>> {
    static RUNNING: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    RUNNING.get_or_init(Mutex::default)
}

/// Marks a collection of this process as running until dropped (a
/// cancelled collection's fence then dies at once).
pub(super) struct Running(String);

impl Running {
    /// Registers a new collection and makes its fence id.
    pub(super) fn start() -> Running {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}.{}.{seq}", unix_now(), std::process::id());
        running()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
        Running(id)
    }

    /// The fence id.
    pub(super) fn id(&self) -> &str {
        &self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        running()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// A fence as stored in its annotation's value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Fence {
    /// Seconds since the epoch after which it is dead whoever judges.
    expires: u64,
    owner: Owner,
    /// The digests it names.
    blobs: Vec<String>,
}

impl Fence {
    /// Whether the fence `id` still holds, as this process judges it.
    fn live(&self, id: &str, now: u64) -> bool {
        if now >= self.expires {
            return false;
        }
        if &self.owner == Owner::me() {
            return running()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(id);
        }
        !self.owner.gone()
    }
}

impl LayoutIndex {
    /// The fences in `index.json` with their ids (unreadable ones are
    /// taken for dead: no orca wrote them).
    fn fences(&self) -> impl Iterator<Item = (&str, Option<Fence>)> {
        self.index.annotations.iter().filter_map(|(key, value)| {
            let id = key.strip_prefix(FENCE)?;
            Some((id, serde_json::from_str::<Fence>(value).ok()))
        })
    }

    /// Every digest a live fence names.
    pub(super) fn fenced(&self) -> HashSet<Digest> {
        let now = unix_now();
        self.fences()
            .filter_map(|(id, fence)| fence.filter(|f| f.live(id, now)))
            .flat_map(|f| f.blobs.into_iter())
            .filter_map(|d| Digest::parse(&d).ok())
            .collect()
    }

    /// Whether any live fence is up.
    pub(super) fn fence_up(&self) -> bool {
        let now = unix_now();
        self.fences()
            .any(|(id, fence)| fence.is_some_and(|f| f.live(id, now)))
    }

    /// Whether a live fence names `digest`.
    pub(super) fn doomed(&self, digest: &Digest) -> bool {
        self.fenced().contains(digest)
    }

    /// How many fences were ever put up here.
    pub(super) fn gc_epoch(&self) -> u64 {
        self.index
            .annotations
            .get(EPOCH)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Takes down dead fences; whether there were any.
    pub(super) fn drop_dead_fences(&mut self) -> bool {
        let now = unix_now();
        let dead: Vec<String> = self
            .fences()
            .filter(|(id, fence)| !fence.as_ref().is_some_and(|f| f.live(id, now)))
            .map(|(id, _)| format!("{FENCE}{id}"))
            .collect();
        for key in &dead {
            self.index.annotations.remove(key);
        }
        !dead.is_empty()
    }

    /// Puts up the fence `id` around `digests` (counting it in the epoch),
    /// and takes down dead fences.
    pub(super) fn fence(&mut self, id: &str, digests: &[&Digest]) {
        self.drop_dead_fences();
        let fence = Fence {
            expires: unix_now() + LEASE.as_secs(),
            owner: Owner::me().clone(),
            blobs: digests.iter().map(|d| d.to_string()).collect(),
        };
        self.index
            .annotations
            .insert(format!("{FENCE}{id}"), encode(&fence));
        let epoch = self.gc_epoch() + 1;
        self.index
            .annotations
            .insert(EPOCH.to_owned(), epoch.to_string());
    }

    /// Renews the lease of fence `id`; `false` when it is no longer up
    /// (taken down as dead by another writer).
    pub(super) fn renew(&mut self, id: &str) -> bool {
        let key = format!("{FENCE}{id}");
        let Some(mut fence) = self
            .index
            .annotations
            .get(&key)
            .and_then(|v| serde_json::from_str::<Fence>(v).ok())
        else {
            return false;
        };
        fence.expires = unix_now() + LEASE.as_secs();
        self.index.annotations.insert(key, encode(&fence));
        true
    }

    /// Takes down the fence `id`; `false` when it was not up.
    pub(super) fn lift(&mut self, id: &str) -> bool {
        self.index
            .annotations
            .remove(&format!("{FENCE}{id}"))
            .is_some()
    }

    /// Writes a fence as another process would have (tests).
    #[cfg(any(test, feature = "conformance"))]
    pub(crate) fn fence_as(&mut self, id: &str, digests: &[&Digest], foreign: Foreign) {
        let mut owner = Owner::me().clone();
        let expires = match foreign {
            Foreign::DeadProcess => {
                owner.start = owner.start.wrapping_add(1);
                unix_now() + LEASE.as_secs()
            }
            Foreign::OtherCopy => {
                owner.copy = "another-copy".into();
                unix_now() + LEASE.as_secs()
            }
            Foreign::OtherMachine { expired } => {
                owner.boot = "another-machine".into();
                if expired {
                    unix_now().saturating_sub(1)
                } else {
                    unix_now() + LEASE.as_secs()
                }
            }
        };
        let fence = Fence {
            expires,
            owner,
            blobs: digests.iter().map(|d| d.to_string()).collect(),
        };
        self.index
            .annotations
            .insert(format!("{FENCE}{id}"), encode(&fence));
    }
}

/// Whose fence [`LayoutIndex::fence_as`] forges.
#[cfg(any(test, feature = "conformance"))]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Foreign {
    /// A process of this machine that has ended.
    DeadProcess,
    /// Another copy of orca's code in this process (a plugin's, or its
    /// host's), whose collection may still run.
    OtherCopy,
    /// A process of another machine, whose lease has or has not run out.
    OtherMachine {
        /// Whether the lease ran out.
        expired: bool,
    },
}

fn encode(fence: &Fence) -> String {
    // A struct of strings and numbers always serialises.
    serde_json::to_string(fence).unwrap_or_default()
}

/// What this process saw of each layout's collections when it first
/// looked at it (by the layout's place): the epoch, if no fence was up.
fn first_seen() -> &'static Mutex<HashMap<String, Option<u64>>> {
    static SEEN: OnceLock<Mutex<HashMap<String, Option<u64>>>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
}

/// Whether this process has looked at the layout at `place`.
pub(super) fn looked(place: &str) -> bool {
    first_seen()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains_key(place)
}

/// Records what `index` says of collections, the first time this process
/// looks at the layout at `place`.
pub(super) fn note_first_look(place: &str, index: &LayoutIndex) {
    let mut seen = first_seen().lock().unwrap_or_else(PoisonError::into_inner);
    if !seen.contains_key(place) {
        let quiet = (!index.fence_up()).then(|| index.gc_epoch());
        seen.insert(place.to_owned(), quiet);
    }
}

/// Whether a collection may have removed, since this process first looked
/// at the layout at `place`, a blob this process saw present: a fence is
/// up now, one was up then, or one was put up in between.
pub(super) fn collected_since_first_look(place: &str, index: &LayoutIndex) -> bool {
    let seen = first_seen().lock().unwrap_or_else(PoisonError::into_inner);
    index.fence_up() || seen.get(place).copied().flatten() != Some(index.gc_epoch())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    #[test]
    fn a_fence_lives_with_its_owner() {
        let mut index = LayoutIndex::new();
        let (a, b) = (digest(1), digest(2));
        let running = Running::start();
        index.fence(running.id(), &[&a]);
        assert_eq!(index.gc_epoch(), 1);
        assert!(index.doomed(&a) && !index.doomed(&b));
        drop(running);
        assert!(!index.doomed(&a), "a cancelled collection's fence held");
        assert!(index.drop_dead_fences());
        assert_eq!(index.gc_epoch(), 1, "the epoch is never taken back");
    }

    #[test]
    fn foreign_fences() {
        let a = digest(1);
        for (foreign, live) in [
            (Foreign::DeadProcess, false),
            (Foreign::OtherCopy, true),
            (Foreign::OtherMachine { expired: true }, false),
            (Foreign::OtherMachine { expired: false }, true),
        ] {
            let mut index = LayoutIndex::new();
            index.fence_as("1.2.3", &[&a], foreign);
            assert_eq!(index.doomed(&a), live, "{foreign:?}");
        }
    }

    #[test]
    fn this_process_is_known_to_run() {
        let me = Owner::me();
        if cfg!(target_os = "linux") {
            assert!(!me.boot.is_empty() && me.start != 0, "{me:?}");
        }
        assert!(!me.gone());
    }
}
