//! The one repair of referrers a target holds without listing them: a
//! push that stopped between storing a referrer and writing its subject's
//! index leaves it so. Used by copy (with or without `force`) and by
//! sync's catch-up.

use std::collections::HashSet;

use super::{CopyOptions, Event};
use crate::backend::PushOptions;
use crate::body::Body;
use crate::error::Result;
use crate::model::{Descriptor, Digest};
use crate::store::Store;

/// The one repair of referrers a target holds without listing them (a push
/// stopped between storing a referrer and writing its subject's index):
/// `held` pairs each such referrer with its subject. Where the target
/// keeps referrers in the tag schema, each subject's listing is read once
/// and every held referrer missing from it is pushed again from the
/// target's own bytes, which lists it. Returns those pushed again. Used by
/// copy (with or without `force`) and by sync's catch-up.
pub(crate) async fn relist(
    target: &Store,
    held: &[(Descriptor, Descriptor)],
    options: &CopyOptions,
) -> Result<Vec<Descriptor>> {
    let mut pushed = Vec::new();
    if held.is_empty() || target.capabilities().referrers_api {
        return Ok(pushed);
    }
    let mut by_subject: std::collections::BTreeMap<&Digest, (&Descriptor, Vec<&Descriptor>)> =
        std::collections::BTreeMap::new();
    for (referrer, subject) in held {
        by_subject
            .entry(&subject.digest)
            .or_insert_with(|| (subject, Vec::new()))
            .1
            .push(referrer);
    }
    for (subject, referrers) in by_subject.into_values() {
        let listing = target.referrers(subject, None).await?;
        let listed: HashSet<&Digest> = listing.manifests.iter().map(|d| &d.digest).collect();
        for referrer in referrers {
            if listed.contains(&referrer.digest) {
                continue;
            }
            let bytes = target.fetch_bytes(referrer).await?;
            target
                .push_opts(referrer, Body::from_bytes(bytes), PushOptions::default())
                .await?;
            if let Some(progress) = &options.progress {
                progress.event(&Event::Pushed(referrer.clone()));
            }
            pushed.push(referrer.clone());
        }
    }
    Ok(pushed)
}
