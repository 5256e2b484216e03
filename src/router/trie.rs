//! URI index for subscriptions and registrations: exact URIs in a hash map,
//! prefix patterns in a radix tree over URI bytes (a prefix match is a string
//! prefix: `a.b` matches `a.b.c` and `a.bc`), wildcard patterns in a trie over
//! components where an empty component matches any one component.
//!
//! Every lookup walks the URI once; nothing scans the set of patterns.

use std::ops::ControlFlow;

use ahash::AHashMap;

use crate::wamp::MatchPolicy;

/// Entries of type `V` indexed by (match policy, URI pattern).
#[derive(Debug)]
pub struct UriIndex<V> {
    exact: AHashMap<Box<str>, V>,
    prefix: RadixTree<V>,
    wildcard: WildcardTrie<V>,
}

impl<V> Default for UriIndex<V> {
    fn default() -> Self {
        UriIndex {
            exact: AHashMap::new(),
            prefix: RadixTree::default(),
            wildcard: WildcardTrie::default(),
        }
    }
}

impl<V> UriIndex<V> {
    /// Gives back the exact-match table's spare capacity (after churn).
    pub fn shrink_to_fit(&mut self) {
        self.exact.shrink_to_fit();
    }

    /// The entry stored under exactly this pattern and policy.
    pub fn get(&self, policy: MatchPolicy, uri: &str) -> Option<&V> {
        match policy {
            MatchPolicy::Exact => self.exact.get(uri),
            MatchPolicy::Prefix => self.prefix.get(uri.as_bytes()),
            MatchPolicy::Wildcard => self.wildcard.get(uri),
        }
    }

    /// Mutable form of [`UriIndex::get`].
    pub fn get_mut(&mut self, policy: MatchPolicy, uri: &str) -> Option<&mut V> {
        match policy {
            MatchPolicy::Exact => self.exact.get_mut(uri),
            MatchPolicy::Prefix => self.prefix.get_mut(uri.as_bytes()),
            MatchPolicy::Wildcard => self.wildcard.get_mut(uri),
        }
    }

    /// The entry under this pattern, inserted with `make` if absent.
    pub fn get_or_insert_with(&mut self, policy: MatchPolicy, uri: &str, make: impl FnOnce() -> V) -> &mut V {
        match policy {
            MatchPolicy::Exact => self.exact.entry(uri.into()).or_insert_with(make),
            MatchPolicy::Prefix => self.prefix.get_or_insert_with(uri.as_bytes(), make),
            MatchPolicy::Wildcard => self.wildcard.get_or_insert_with(uri, make),
        }
    }

    /// Removes and returns the entry under this pattern.
    pub fn remove(&mut self, policy: MatchPolicy, uri: &str) -> Option<V> {
        match policy {
            MatchPolicy::Exact => self.exact.remove(uri),
            MatchPolicy::Prefix => self.prefix.remove(uri.as_bytes()),
            MatchPolicy::Wildcard => self.wildcard.remove(uri),
        }
    }

    /// Calls `f` for every entry whose pattern matches `uri` (publish).
    pub fn for_each_match(&self, uri: &str, mut f: impl FnMut(MatchPolicy, &V)) {
        if let Some(v) = self.exact.get(uri) {
            f(MatchPolicy::Exact, v);
        }
        if !self.prefix.is_empty() {
            self.prefix.for_each_prefix(uri.as_bytes(), |v| f(MatchPolicy::Prefix, v));
        }
        if !self.wildcard.is_empty() {
            self.wildcard.for_each_match(uri, |v| f(MatchPolicy::Wildcard, v));
        }
    }

    /// The entry a call to `uri` goes to: exact, else the longest prefix, else
    /// the wildcard pattern with the longest concrete leading portions.
    pub fn best_match(&self, uri: &str) -> Option<(MatchPolicy, &V)> {
        if let Some(v) = self.exact.get(uri) {
            return Some((MatchPolicy::Exact, v));
        }
        let mut longest = None;
        self.prefix.for_each_prefix(uri.as_bytes(), |v| longest = Some(v));
        if let Some(v) = longest {
            return Some((MatchPolicy::Prefix, v));
        }
        self.wildcard.first_match(uri).map(|v| (MatchPolicy::Wildcard, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.exact.len() + self.prefix.len + self.wildcard.len
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
struct RNode<V> {
    /// Children sorted by the first byte of their edge label.
    children: Vec<(Box<[u8]>, u32)>,
    value: Option<V>,
}

/// A radix tree over bytes; node 0 is the root.
#[derive(Debug)]
struct RadixTree<V> {
    nodes: Vec<RNode<V>>,
    free: Vec<u32>,
    len: usize,
}

impl<V> Default for RadixTree<V> {
    fn default() -> Self {
        RadixTree {
            nodes: vec![RNode {
                children: Vec::new(),
                value: None,
            }],
            free: Vec::new(),
            len: 0,
        }
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl<V> RadixTree<V> {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn alloc(&mut self, value: Option<V>) -> u32 {
        let node = RNode {
            children: Vec::new(),
            value,
        };
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    fn child_pos(&self, node: u32, first: u8) -> Result<usize, usize> {
        self.nodes[node as usize]
            .children
            .binary_search_by_key(&first, |(label, _)| label[0])
    }

    /// The node for exactly `key`, with the path of (parent, child position).
    fn find(&self, key: &[u8]) -> Option<(u32, Vec<(u32, usize)>)> {
        let mut node = 0u32;
        let mut rest = key;
        let mut path = Vec::new();
        while let Some(&first) = rest.first() {
            let pos = self.child_pos(node, first).ok()?;
            let (label, child) = &self.nodes[node as usize].children[pos];
            if !rest.starts_with(label) {
                return None;
            }
            path.push((node, pos));
            rest = &rest[label.len()..];
            node = *child;
        }
        Some((node, path))
    }

    fn get(&self, key: &[u8]) -> Option<&V> {
        let (n, _) = self.find(key)?;
        self.nodes[n as usize].value.as_ref()
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let (n, _) = self.find(key)?;
        self.nodes[n as usize].value.as_mut()
    }

    fn get_or_insert_with(&mut self, key: &[u8], make: impl FnOnce() -> V) -> &mut V {
        let mut node = 0u32;
        let mut rest = key;
        while let Some(&first) = rest.first() {
            match self.child_pos(node, first) {
                Err(ins) => {
                    let leaf = self.alloc(None);
                    self.nodes[node as usize].children.insert(ins, (rest.into(), leaf));
                    node = leaf;
                    break;
                }
                Ok(pos) => {
                    let (label, child) = &self.nodes[node as usize].children[pos];
                    let child = *child;
                    let c = common_prefix(label, rest);
                    if c == label.len() {
                        node = child;
                        rest = &rest[c..];
                        continue;
                    }
                    // split the edge at c
                    let label = label.clone();
                    let mid = self.alloc(None);
                    self.nodes[mid as usize].children.push((label[c..].into(), child));
                    self.nodes[node as usize].children[pos] = (label[..c].into(), mid);
                    node = mid;
                    rest = &rest[c..];
                }
            }
        }
        let slot = &mut self.nodes[node as usize].value;
        if slot.is_none() {
            self.len += 1;
            *slot = Some(make());
        }
        // just set above when absent
        match slot {
            Some(v) => v,
            None => unreachable!("value set above"),
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<V> {
        let (n, path) = self.find(key)?;
        let v = self.nodes[n as usize].value.take()?;
        self.len -= 1;
        // prune an empty leaf, then merge a valueless parent with one child
        if self.nodes[n as usize].children.is_empty() {
            if let Some(&(parent, pos)) = path.last() {
                self.nodes[parent as usize].children.remove(pos);
                self.free.push(n);
                let p = &self.nodes[parent as usize];
                if parent != 0 && p.value.is_none() && p.children.len() == 1 {
                    if let Some(&(grand, gpos)) = path.get(path.len().wrapping_sub(2)) {
                        let (only_label, only_child) = self.nodes[parent as usize].children.remove(0);
                        let up = &mut self.nodes[grand as usize].children[gpos];
                        let mut merged = up.0.to_vec();
                        merged.extend_from_slice(&only_label);
                        *up = (merged.into(), only_child);
                        self.free.push(parent);
                    }
                }
            }
        }
        Some(v)
    }

    /// Calls `f` for each stored key that is a prefix of `key`, shortest first.
    fn for_each_prefix<'a>(&'a self, key: &[u8], mut f: impl FnMut(&'a V)) {
        let mut node = 0u32;
        let mut rest = key;
        if let Some(v) = &self.nodes[0].value {
            f(v);
        }
        while let Some(&first) = rest.first() {
            let Ok(pos) = self.child_pos(node, first) else { return };
            let (label, child) = &self.nodes[node as usize].children[pos];
            if !rest.starts_with(label) {
                return;
            }
            rest = &rest[label.len()..];
            node = *child;
            if let Some(v) = &self.nodes[node as usize].value {
                f(v);
            }
        }
    }
}

#[derive(Debug)]
struct WNode<V> {
    children: AHashMap<Box<str>, u32>,
    wild: Option<u32>,
    value: Option<V>,
}

/// A trie over URI components; an empty pattern component is a wildcard.
#[derive(Debug)]
struct WildcardTrie<V> {
    nodes: Vec<WNode<V>>,
    free: Vec<u32>,
    len: usize,
}

impl<V> Default for WildcardTrie<V> {
    fn default() -> Self {
        WildcardTrie {
            nodes: vec![WNode {
                children: AHashMap::new(),
                wild: None,
                value: None,
            }],
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<V> WildcardTrie<V> {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn step(&self, node: u32, comp: &str) -> Option<u32> {
        let n = &self.nodes[node as usize];
        if comp.is_empty() {
            n.wild
        } else {
            n.children.get(comp).copied()
        }
    }

    fn find(&self, pattern: &str) -> Option<u32> {
        pattern.split('.').try_fold(0u32, |node, comp| self.step(node, comp))
    }

    fn get(&self, pattern: &str) -> Option<&V> {
        self.nodes[self.find(pattern)? as usize].value.as_ref()
    }

    fn get_mut(&mut self, pattern: &str) -> Option<&mut V> {
        let n = self.find(pattern)?;
        self.nodes[n as usize].value.as_mut()
    }

    fn alloc(&mut self) -> u32 {
        let node = WNode {
            children: AHashMap::new(),
            wild: None,
            value: None,
        };
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    fn get_or_insert_with(&mut self, pattern: &str, make: impl FnOnce() -> V) -> &mut V {
        let mut node = 0u32;
        for comp in pattern.split('.') {
            node = match self.step(node, comp) {
                Some(n) => n,
                None => {
                    let n = self.alloc();
                    let parent = &mut self.nodes[node as usize];
                    if comp.is_empty() {
                        parent.wild = Some(n);
                    } else {
                        parent.children.insert(comp.into(), n);
                    }
                    n
                }
            };
        }
        let slot = &mut self.nodes[node as usize].value;
        if slot.is_none() {
            self.len += 1;
            *slot = Some(make());
        }
        match slot {
            Some(v) => v,
            None => unreachable!("value set above"),
        }
    }

    fn remove(&mut self, pattern: &str) -> Option<V> {
        let comps: Vec<&str> = pattern.split('.').collect();
        let mut path = Vec::with_capacity(comps.len());
        let mut node = 0u32;
        for comp in &comps {
            path.push(node);
            node = self.step(node, comp)?;
        }
        let v = self.nodes[node as usize].value.take()?;
        self.len -= 1;
        // prune empty nodes bottom-up
        for (i, comp) in comps.iter().enumerate().rev() {
            let n = &self.nodes[node as usize];
            if n.value.is_some() || n.wild.is_some() || !n.children.is_empty() {
                break;
            }
            let parent = path[i];
            let p = &mut self.nodes[parent as usize];
            if comp.is_empty() {
                p.wild = None;
            } else {
                p.children.remove(*comp);
            }
            self.free.push(node);
            node = parent;
        }
        Some(v)
    }

    /// Visits every pattern matching `uri`.
    fn for_each_match<'a>(&'a self, uri: &str, mut f: impl FnMut(&'a V)) {
        self.walk(uri, |v| {
            f(v);
            ControlFlow::Continue(())
        });
    }

    /// The match that prefers a concrete component over a wildcard at the
    /// first place they differ (the spec's "longest portion" rule): the first
    /// match of the walk, which tries the concrete child before the wildcard.
    fn first_match(&self, uri: &str) -> Option<&V> {
        if self.is_empty() {
            return None;
        }
        let mut first = None;
        self.walk(uri, |v| {
            first = Some(v);
            ControlFlow::Break(())
        });
        first
    }

    /// Visits the patterns matching `uri` depth first, the concrete child of
    /// a node before its wildcard child, until `f` breaks. A loop with an
    /// explicit stack, never recursion: the depth is the URI's component
    /// count, which a client chooses.
    fn walk<'a>(&'a self, uri: &str, mut f: impl FnMut(&'a V) -> ControlFlow<()>) {
        let mut stack = WalkStack::new();
        stack.push((0, 0));
        while let Some((node, at)) = stack.pop() {
            let n = &self.nodes[node as usize];
            let Some(rest) = rest_at(uri, at) else {
                if let Some(v) = &n.value {
                    if f(v).is_break() {
                        return;
                    }
                }
                continue;
            };
            let (comp, next) = split_at_first(rest, at);
            if let Some(w) = n.wild {
                stack.push((w, next));
            }
            if let Some(&c) = n.children.get(comp) {
                stack.push((c, next));
            }
        }
    }
}

/// Where a walk stands: a node and the byte offset of the rest of the URI
/// (`END` once every component is used).
type WalkStep = (u32, usize);

const END: usize = usize::MAX;

/// The rest of `uri` from `at`, `None` once the walk used every component.
fn rest_at(uri: &str, at: usize) -> Option<&str> {
    if at == END {
        None
    } else {
        uri.get(at..)
    }
}

/// The first component of `rest` (which starts at offset `at` of the URI)
/// and the offset of the component after it (`END` if it was the last).
fn split_at_first(rest: &str, at: usize) -> (&str, usize) {
    match rest.find('.') {
        Some(i) => (&rest[..i], at + i + 1),
        None => (rest, END),
    }
}

/// The pending steps of a trie walk: inline for the usual few branch points,
/// on the heap beyond (the walk stays iterative however deep the URI).
struct WalkStack {
    inline: [WalkStep; 16],
    len: usize,
    spill: Vec<WalkStep>,
}

impl WalkStack {
    fn new() -> Self {
        WalkStack {
            inline: [(0, 0); 16],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, step: WalkStep) {
        if self.len < self.inline.len() {
            self.inline[self.len] = step;
            self.len += 1;
        } else {
            self.spill.push(step);
        }
    }

    fn pop(&mut self) -> Option<WalkStep> {
        if let Some(s) = self.spill.pop() {
            return Some(s);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(self.inline[self.len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MatchPolicy::*;

    fn matches(idx: &UriIndex<u32>, uri: &str) -> Vec<u32> {
        let mut v = Vec::new();
        idx.for_each_match(uri, |_, x| v.push(*x));
        v.sort();
        v
    }

    #[test]
    fn exact_prefix_wildcard() {
        let mut idx = UriIndex::default();
        *idx.get_or_insert_with(Exact, "a.b.c", || 1) = 1;
        *idx.get_or_insert_with(Prefix, "a.b", || 2) = 2;
        *idx.get_or_insert_with(Prefix, "a", || 3) = 3;
        *idx.get_or_insert_with(Wildcard, "a..c", || 4) = 4;
        *idx.get_or_insert_with(Wildcard, "..", || 5) = 5;
        assert_eq!(matches(&idx, "a.b.c"), vec![1, 2, 3, 4, 5]);
        assert_eq!(matches(&idx, "a.bc"), vec![2, 3]);
        assert_eq!(matches(&idx, "a.x.c"), vec![3, 4, 5]);
        assert_eq!(matches(&idx, "b.x.c"), vec![5]);
        assert_eq!(matches(&idx, "b.x"), Vec::<u32>::new());
        assert_eq!(idx.len(), 5);
        assert_eq!(idx.remove(Prefix, "a.b"), Some(2));
        assert_eq!(idx.remove(Prefix, "a.b"), None);
        assert_eq!(matches(&idx, "a.b.c"), vec![1, 3, 4, 5]);
        assert_eq!(idx.remove(Wildcard, "a..c"), Some(4));
        assert_eq!(matches(&idx, "a.b.c"), vec![1, 3, 5]);
        assert_eq!(idx.get(Exact, "a.b.c"), Some(&1));
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn radix_splits_and_merges() {
        let mut idx = UriIndex::default();
        let keys = ["com.example", "com.ex", "com.example.foo", "com.examine", "co", "dog"];
        for (i, k) in keys.iter().enumerate() {
            idx.get_or_insert_with(Prefix, k, || i);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(idx.get(Prefix, k), Some(&i), "{k}");
        }
        assert_eq!(idx.get(Prefix, "com.exa"), None);
        let mut found = Vec::new();
        idx.for_each_match("com.example.foo.bar", |_, v| found.push(*v));
        assert_eq!(found, vec![4, 1, 0, 2]);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(idx.remove(Prefix, k), Some(i));
            for (j, k2) in keys.iter().enumerate().skip(i + 1) {
                assert_eq!(idx.get(Prefix, k2), Some(&j), "after removing {k}: {k2}");
            }
        }
        assert!(idx.is_empty());
    }

    #[test]
    fn rpc_precedence_follows_the_spec() {
        let mut idx = UriIndex::default();
        idx.get_or_insert_with(Exact, "a1.b2.c3.d4.e55", || 1);
        idx.get_or_insert_with(Prefix, "a1.b2.c3", || 2);
        idx.get_or_insert_with(Prefix, "a1.b2.c3.d4", || 3);
        idx.get_or_insert_with(Wildcard, "a1.b2..d4.e5", || 4);
        idx.get_or_insert_with(Wildcard, "a1.b2.c33..e5", || 5);
        idx.get_or_insert_with(Wildcard, "a1.b2..d4.e5..g7", || 6);
        idx.get_or_insert_with(Wildcard, "a1.b2..d4..f6.g7", || 7);
        let best = |u: &str| idx.best_match(u).map(|(_, v)| *v);
        assert_eq!(best("a1.b2.c3.d4.e55"), Some(1));
        assert_eq!(best("a1.b2.c3.d98.e74"), Some(2));
        assert_eq!(best("a1.b2.c3.d4.e325"), Some(3));
        assert_eq!(best("a1.b2.c55.d4.e5"), Some(4));
        // The spec's example calls this "no prefix match", but prefix matching
        // is a string prefix (as for subscriptions, and as Crossbar does), so
        // "a1.b2.c3" matches "a1.b2.c33...". Without that prefix the longer
        // leading portion wins, as the spec says.
        assert_eq!(best("a1.b2.c33.d4.e5"), Some(2));
        let mut only_wild = UriIndex::default();
        only_wild.get_or_insert_with(Wildcard, "a1.b2..d4.e5", || 4);
        only_wild.get_or_insert_with(Wildcard, "a1.b2.c33..e5", || 5);
        assert_eq!(only_wild.best_match("a1.b2.c33.d4.e5").map(|(_, v)| *v), Some(5));
        assert_eq!(best("a1.b2.c88.d4.e5.f6.g7"), Some(6));
        assert_eq!(best("a2.b2.c2.d2.e2"), None);
    }

    #[test]
    fn deep_uris_are_walked_without_recursion() {
        // 200,000 components: a recursive walk would overflow a thread's stack.
        let n = 200_000;
        let pattern = vec!["a"; n].join(".");
        let wild = vec![""; n].join(".");
        let mixed: String = (0..n).map(|i| if i % 2 == 0 { "a" } else { "" }).collect::<Vec<_>>().join(".");
        let mut idx = UriIndex::default();
        idx.get_or_insert_with(Wildcard, &pattern, || 1);
        idx.get_or_insert_with(Wildcard, &wild, || 2);
        idx.get_or_insert_with(Wildcard, &mixed, || 3);
        idx.get_or_insert_with(Prefix, &pattern, || 4);
        assert_eq!(matches(&idx, &pattern), vec![1, 2, 3, 4]);
        assert_eq!(idx.best_match(&pattern).map(|(_, v)| *v), Some(4));
        assert_eq!(idx.remove(Prefix, &pattern), Some(4));
        assert_eq!(idx.best_match(&pattern).map(|(_, v)| *v), Some(1));
        let other = vec!["b"; n].join(".");
        assert_eq!(idx.best_match(&other).map(|(_, v)| *v), Some(2));
        assert_eq!(idx.remove(Wildcard, &wild), Some(2));
        assert_eq!(idx.best_match(&other), None);
        assert_eq!(idx.remove(Wildcard, &mixed), Some(3));
        assert_eq!(idx.remove(Wildcard, &pattern), Some(1));
        assert!(idx.is_empty());
    }

    #[test]
    fn walks_with_many_branch_points_spill_in_order() {
        // Every level has both a concrete and a wildcard child: more pending
        // steps than the inline stack holds.
        let mut idx = UriIndex::default();
        let depth = 40;
        for k in 0..depth {
            let comps: Vec<&str> = (0..depth).map(|i| if i == k { "" } else { "x" }).collect();
            idx.get_or_insert_with(Wildcard, &comps.join("."), || k as u32 + 1);
        }
        let uri = vec!["x"; depth].join(".");
        assert_eq!(matches(&idx, &uri), (1..=depth as u32).collect::<Vec<_>>());
        // the concrete path is preferred at the first place patterns differ:
        // the pattern with its wildcard last
        assert_eq!(idx.best_match(&uri).map(|(_, v)| *v), Some(depth as u32));
    }

    #[test]
    fn many_entries() {
        let mut idx = UriIndex::default();
        for i in 0..10_000u32 {
            idx.get_or_insert_with(Prefix, &format!("com.app{}.t{}", i % 97, i), || i);
            idx.get_or_insert_with(Wildcard, &format!("com..t{i}"), || i);
        }
        let mut n = 0;
        idx.for_each_match("com.app5.t5000", |_, _| n += 1);
        // prefix "com.app5.t5" (5 % 97 == 5) and wildcard "com..t5000"
        assert_eq!(n, 2);
    }
}
