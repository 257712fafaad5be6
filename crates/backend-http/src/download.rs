//! Streamed blob downloads that survive broken connections: when the
//! connection drops mid-blob, the download continues with a `Range` request
//! from the last byte delivered (which `Store` has already hashed), a
//! bounded number of times.

use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use orca_core::{Body, Descriptor, Error};
use reqwest::Response;

use crate::repository::RegistryBackend;

/// Resumptions allowed per download.
const MAX_RESUMES: u32 = 5;

struct State {
    backend: RegistryBackend,
    descriptor: Descriptor,
    stream: Option<BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
    offset: u64,
    len: u64,
    resumes: u32,
}

/// A body of `len` bytes read from `first`, resumed as needed.
pub(crate) fn resuming(
    backend: RegistryBackend,
    descriptor: Descriptor,
    first: Response,
    len: u64,
) -> Body {
    let state = State {
        backend,
        descriptor,
        stream: Some(first.bytes_stream().boxed()),
        offset: 0,
        len,
        resumes: 0,
    };
    let chunks = stream::unfold(state, |mut state| async move {
        loop {
            let next = state.stream.as_mut()?.next().await;
            match next {
                Some(Ok(chunk)) => {
                    state.offset += chunk.len() as u64;
                    return Some((Ok(chunk), state));
                }
                None => return None,
                Some(Err(e)) if state.offset < state.len && state.resumes < MAX_RESUMES => {
                    state.resumes += 1;
                    tokio::time::sleep(Duration::from_millis(50 << state.resumes)).await;
                    match state
                        .backend
                        .get_blob(&state.descriptor, state.offset)
                        .await
                    {
                        Ok(response) => state.stream = Some(response.bytes_stream().boxed()),
                        Err(resume) => {
                            state.stream = None;
                            return Some((Err(failed(&state, e, Some(resume))), state));
                        }
                    }
                }
                Some(Err(e)) => {
                    state.stream = None;
                    return Some((Err(failed(&state, e, None)), state));
                }
            }
        }
    });
    Body::new(len, chunks)
}

fn failed(state: &State, e: reqwest::Error, resume: Option<Error>) -> Error {
    let source: orca_core::error::BoxError = match resume {
        Some(resume) => Box::new(resume),
        None => Box::new(e.without_url()),
    };
    Error::Backend {
        backend: state.backend.place.clone(),
        operation: "fetch",
        source: Box::new(Interrupted {
            offset: state.offset,
            resumes: state.resumes,
            source,
        }),
    }
}

/// A download that broke and could not be resumed.
#[derive(Debug, thiserror::Error)]
#[error("the download broke after {offset} bytes ({resumes} resumptions tried)")]
struct Interrupted {
    offset: u64,
    resumes: u32,
    #[source]
    source: orca_core::error::BoxError,
}
