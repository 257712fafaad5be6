//! The plan a copy's walk builds: every manifest with what it depends on,
//! every blob once, and the order the manifests are pushed in.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::model::{Descriptor, Digest};

/// Why a manifest is in the walk.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Named by the graph: it must be there.
    Graph,
    /// Listed as a referrer: it may have gone since.
    Referrer,
}

/// One manifest of the plan.
pub(super) struct Node {
    pub(super) descriptor: Descriptor,
    /// The target has it already.
    pub(super) present: bool,
    /// Its bytes, unless the memory budget was spent.
    pub(super) raw: Option<Bytes>,
    /// Manifests that must be in the target first: manifest children and
    /// the subject.
    pub(super) deps: Vec<Digest>,
}

/// What reading one manifest found.
pub(super) struct Visit {
    pub(super) node: Option<Node>,
    pub(super) children: Vec<Descriptor>,
    pub(super) gone: Option<Descriptor>,
    pub(super) referrers: Vec<Descriptor>,
    pub(super) tagged: Vec<(String, Descriptor)>,
}

/// The walk's result.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) nodes: HashMap<Digest, Node>,
    /// Where ordering starts: the roots, then referrers and digest-tagged
    /// manifests as they were found.
    pub(super) starts: Vec<Digest>,
    /// Blobs to transfer, each once.
    pub(super) blobs: Vec<Descriptor>,
    /// Digest tags to set once their manifests are there.
    pub(super) tags: Vec<(String, Descriptor)>,
    pub(super) referrers: u64,
    pub(super) gone: Vec<Descriptor>,
    /// Referrers the target holds already, with their subjects: each may
    /// be unlisted there (see `relist`).
    pub(super) held_referrers: Vec<(Descriptor, Descriptor)>,
}

impl Plan {
    /// Manifests to push, grouped in levels: every manifest's dependencies
    /// are in earlier levels.
    pub(super) fn levels(&self) -> Vec<Vec<Digest>> {
        let mut height: HashMap<&Digest, usize> = HashMap::new();
        let mut entered: HashSet<&Digest> = HashSet::new();
        let mut levels: Vec<Vec<Digest>> = Vec::new();
        for start in &self.starts {
            let mut stack = vec![(start, false)];
            while let Some((digest, expanded)) = stack.pop() {
                let Some(node) = self.nodes.get(digest) else {
                    continue;
                };
                if expanded {
                    let level = node
                        .deps
                        .iter()
                        .filter_map(|d| height.get(d).map(|h| h + 1))
                        .max()
                        .unwrap_or(0);
                    height.insert(digest, level);
                    if !node.present {
                        if levels.len() <= level {
                            levels.resize_with(level + 1, Vec::new);
                        }
                        levels[level].push(digest.clone());
                    }
                    continue;
                }
                // Content addressing rules out cycles; `entered` keeps a
                // malicious graph from looping anyway.
                if !entered.insert(digest) {
                    continue;
                }
                stack.push((digest, true));
                for dep in node.deps.iter().rev() {
                    if !entered.contains(dep) {
                        stack.push((dep, false));
                    }
                }
            }
        }
        levels.retain(|l| !l.is_empty());
        levels
    }
}
