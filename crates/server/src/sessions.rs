//! Upload sessions kept in the repository's own storage, beside its layout
//! (`uploads/<id>/`), so a restarted server, or another replica on the
//! same directory or bucket, continues an upload where it stood. A session
//! is a marker object and the bytes received so far.
//!
//! Where the storage appends in place (a directory), the bytes are one
//! object, `data`, that each request extends under its file lock, and the
//! finished upload becomes the blob by a rename once it hashed right: its
//! bytes are written once. Elsewhere (a bucket) they are pieces of at most
//! [`PIECE`] bytes named by the offset they start at, each written only if
//! none is there yet (the storage's compare-and-swap), and read back in
//! order into the store when the upload completes. Either way two writers
//! racing for one offset cannot both land: the second is told the range is
//! taken, and nothing unverified becomes a blob.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use orca::Body;
use orca::layout::{Condition, ObjectStorage};

use crate::errors::ApiError;

/// The largest piece a session's bytes are kept in: what one request holds
/// in memory at most.
pub(crate) const PIECE: usize = 8 << 20;

const MARKER: &str = "session";
/// The object an appending storage keeps a session's bytes in.
const DATA: &str = "data";

fn key(id: &str, name: &str) -> String {
    format!("uploads/{id}/{name}")
}

/// The name of `key` within session `id` when it is one of the session's
/// own objects (its marker, its `data`, a piece named by its offset),
/// directly in `uploads/<id>/`. Anything deeper or otherwise named is not
/// the session's: a repository `app/uploads/<id>` nested in `app` keeps
/// its layout there.
fn own<'a>(id: &str, key: &'a str) -> Option<&'a str> {
    let name = key
        .strip_prefix("uploads/")?
        .strip_prefix(id)?
        .strip_prefix('/')?;
    let piece = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
    (name == MARKER || name == DATA || piece).then_some(name)
}

/// A new session id: 128 random bits, as hex.
fn new_id() -> String {
    format!("{:016x}{:016x}", random_word(), random_word())
}

/// 64 random bits: a hasher std seeds from the system's randomness, fed
/// a counter, the time and the process id (no two calls alike).
pub(crate) fn random_word() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Whether `id` can be a session id this server made (32 lowercase hex
/// digits, see `new_id`), and so a key component.
fn plausible(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Starts a session; returns its id.
pub(crate) async fn create(storage: &dyn ObjectStorage) -> Result<String, ApiError> {
    let id = new_id();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    storage
        .write(
            &key(&id, MARKER),
            Bytes::from(format!("{{\"started\":{started}}}")),
            Condition::Absent,
        )
        .await?;
    Ok(id)
}

/// A piece of a session: where it starts, its size and its key.
#[derive(Clone, Debug)]
pub(crate) struct Piece {
    start: u64,
    size: u64,
    key: String,
}

/// What a session holds so far: its pieces in order, and where the next
/// byte goes. `BLOB_UPLOAD_UNKNOWN` when there is no such session.
pub(crate) async fn state(
    storage: &dyn ObjectStorage,
    id: &str,
) -> Result<(Vec<Piece>, u64), ApiError> {
    if !plausible(id) {
        return Err(ApiError::upload_unknown(id));
    }
    let listed = storage.list(&format!("uploads/{id}/")).await?;
    let mut found = false;
    let mut pieces = Vec::new();
    for object in listed {
        let Some(name) = own(id, &object.key) else {
            continue;
        };
        if name == MARKER {
            found = true;
        } else if name == DATA {
            pieces.push(Piece {
                start: 0,
                size: object.size,
                key: object.key.clone(),
            });
        } else if let Ok(start) = name.parse::<u64>() {
            pieces.push(Piece {
                start,
                size: object.size,
                key: object.key.clone(),
            });
        }
    }
    if !found {
        return Err(ApiError::upload_unknown(id));
    }
    pieces.sort_by_key(|p| p.start);
    let mut offset = 0;
    for piece in &pieces {
        if piece.start != offset {
            return Err(ApiError::upload_invalid(format!(
                "upload {id} has a gap at byte {offset}"
            )));
        }
        offset += piece.size;
    }
    Ok((pieces, offset))
}

/// Appends what `body` streams to the session from byte `offset` (where
/// it stands), in pieces; returns where it stands after. A piece another
/// writer put at the same offset first is `416`; a session growing past
/// `limit` bytes is `413` (what it held stays).
pub(crate) async fn append<S>(
    storage: &dyn ObjectStorage,
    id: &str,
    mut offset: u64,
    body: S,
    limit: Option<u64>,
) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin + Send + 'static,
{
    if storage.appends() {
        return append_in_place(storage, id, offset, body, limit).await;
    }
    let mut body = body;
    let mut piece = BytesMut::new();
    loop {
        let next = body.next().await;
        let ended = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk.map_err(|e| crate::errors::broken_body(&e))?;
            piece.extend_from_slice(&chunk);
            if let Some(limit) = limit
                && offset + piece.len() as u64 > limit
            {
                return Err(ApiError::blob_too_large(limit));
            }
        }
        while piece.len() >= PIECE || (ended && !piece.is_empty()) {
            let take = piece.len().min(PIECE);
            let bytes = piece.split_to(take).freeze();
            let size = bytes.len() as u64;
            let written = storage
                .write(&key(id, &format!("{offset:020}")), bytes, Condition::Absent)
                .await;
            match written {
                Ok(()) => offset += size,
                Err(orca::Error::Conflict { .. }) => {
                    return Err(ApiError::range_not_satisfiable(
                        offset,
                        format!(
                            "bytes from {offset} of upload {id} were written by another request"
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if ended {
            return Ok(offset);
        }
    }
}

/// [`append`] on a storage that appends in place: the body streams into
/// the session's one object.
async fn append_in_place<S>(
    storage: &dyn ObjectStorage,
    id: &str,
    offset: u64,
    body: S,
    limit: Option<u64>,
) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin + Send + 'static,
{
    let mut size = offset;
    let stream = body
        .map_err(|e| orca::Error::Failed {
            doing: "reading the request body".into(),
            source: Box::new(e),
        })
        .and_then(move |chunk| {
            size += chunk.len() as u64;
            let over = limit.filter(|&limit| size > limit);
            async move {
                match over {
                    Some(limit) => Err(orca::Error::LimitExceeded {
                        what: "the blob".into(),
                        limit,
                    }),
                    None => Ok(chunk),
                }
            }
        })
        .boxed();
    match storage.append(&key(id, DATA), offset, stream).await {
        Ok(end) => Ok(end),
        Err(orca::Error::Conflict { what, .. }) => Err(ApiError::range_not_satisfiable(
            offset,
            format!("upload {id}: {what}"),
        )),
        Err(orca::Error::LimitExceeded { limit, .. }) => Err(ApiError::blob_too_large(limit)),
        Err(e) => Err(e.into()),
    }
}

/// Publishes what session `id` holds as the blob `descriptor` without
/// copying it, where the storage appends in place; `false` when it cannot
/// (the caller pushes the bytes through the store).
pub(crate) async fn publish(
    storage: &dyn ObjectStorage,
    id: &str,
    descriptor: &orca::Descriptor,
) -> Result<bool, ApiError> {
    if !storage.appends() {
        return Ok(false);
    }
    match storage.publish(&key(id, DATA), descriptor).await {
        Ok(published) => Ok(published),
        Err(orca::Error::Conflict { what, .. }) => Err(ApiError::upload_invalid(format!(
            "upload {id} is still being written: {what}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The session's bytes, in order, as one body of `total` bytes.
pub(crate) fn read(storage: Arc<dyn ObjectStorage>, pieces: Vec<Piece>, total: u64) -> Body {
    let stream = futures::stream::iter(pieces)
        .then(move |piece| {
            let storage = storage.clone();
            async move {
                match storage.get(&piece.key, None).await? {
                    Some(body) => Ok(body.into_stream()),
                    None => Err(orca::Error::NotFound {
                        what: format!("upload piece {} ({} bytes)", piece.key, piece.size),
                        place: storage.to_string(),
                    }),
                }
            }
        })
        .try_flatten();
    Body::new(total, stream)
}

/// Removes a session and what it held. Gone already is no error.
pub(crate) async fn remove(storage: &dyn ObjectStorage, id: &str) -> Result<(), ApiError> {
    if !plausible(id) {
        return Err(ApiError::upload_unknown(id));
    }
    for object in storage.list(&format!("uploads/{id}/")).await? {
        if own(id, &object.key).is_some() {
            storage.delete(&object.key).await?;
        }
    }
    Ok(())
}

/// The least a session may sit idle before a collection removes it,
/// whatever the collection's grace.
pub(crate) const IDLE_AT_LEAST: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the sessions of a repository that nothing has written to for
/// `idle` (clients that went away); returns how many. A session written
/// meanwhile by a slow client keeps its newest bytes' time and stays.
pub(crate) async fn expire(
    storage: &dyn ObjectStorage,
    idle: std::time::Duration,
) -> Result<usize, orca::Error> {
    // Each session's objects and its newest write, from one listing. Only
    // a session's own objects count (see `own`): whatever else is there
    // (a repository named `app/uploads`, or `app/uploads/ID`, nested in
    // the layout `app` keeps its `oci-layout` and `blobs/` there) is not
    // this server's to remove.
    type Seen = (Vec<String>, Option<std::time::SystemTime>);
    let mut sessions: std::collections::BTreeMap<String, Seen> = std::collections::BTreeMap::new();
    for object in storage.list("uploads/").await? {
        let Some(id) = object
            .key
            .strip_prefix("uploads/")
            .and_then(|k| k.split_once('/'))
            .map(|(id, _)| id)
            .filter(|id| plausible(id) && own(id, &object.key).is_some())
        else {
            continue;
        };
        let (keys, newest) = sessions
            .entry(id.to_owned())
            .or_insert((Vec::new(), object.modified));
        *newest = match (*newest, object.modified) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        keys.push(object.key);
    }
    let mut removed = 0;
    for (keys, newest) in sessions.into_values() {
        // A time the storage does not tell, or one in the future, is young.
        let old = newest
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > idle);
        if old {
            for key in keys {
                storage.delete(&key).await?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orca::layout::{Condition, MemoryStorage, ObjectStorage};

    /// Only sessions expire or are removed: what else sits under
    /// `uploads/` (a repository named `app/uploads`, or `app/uploads/ID`,
    /// nested in the layout `app` keeps its `oci-layout` and blobs there)
    /// stays however old, and asking for it as a session finds none.
    #[tokio::test]
    async fn only_sessions_expire() {
        let storage = MemoryStorage::new("app");
        let session = new_id();
        let nested = new_id();
        let others = [
            "uploads/oci-layout",
            "uploads/index.json",
            "uploads/blobs/sha256/00",
            "uploads/0123456789ABCDEF0123456789abcdef/piece",
        ]
        .map(str::to_owned)
        .into_iter()
        // A repository `app/uploads/<nested>` in `app`, with an upload of
        // its own open.
        .chain(
            [
                "oci-layout".to_owned(),
                "index.json".to_owned(),
                "blobs/sha256/00".to_owned(),
                format!("uploads/{}/session", new_id()),
            ]
            .map(|key| format!("uploads/{nested}/{key}")),
        )
        .collect::<Vec<String>>();
        let keys = [
            format!("uploads/{session}/{MARKER}"),
            format!("uploads/{session}/{DATA}"),
        ]
        .into_iter()
        .chain(others.iter().cloned());
        for key in keys {
            storage
                .write(&key, bytes::Bytes::from_static(b"{}"), Condition::Absent)
                .await
                .expect("write");
            storage.set_modified(&key, std::time::UNIX_EPOCH);
        }
        let removed = expire(&storage, std::time::Duration::from_secs(60))
            .await
            .expect("expire");
        assert_eq!(removed, 1);
        let left: Vec<String> = storage
            .list("uploads/")
            .await
            .expect("list")
            .into_iter()
            .map(|listed| listed.key)
            .collect();
        for key in &others {
            assert!(left.contains(key), "{key} removed: {left:?}");
        }
        assert!(!left.iter().any(|k| k.contains(&session)), "{left:?}");
        // Asked for by the nested repository's name, no session is found
        // and nothing is removed.
        assert!(state(&storage, &nested).await.is_err());
        remove(&storage, &nested).await.expect("remove");
        let after = storage.list("uploads/").await.expect("list").len();
        assert_eq!(after, left.len());
    }
}
