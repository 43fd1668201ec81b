//! A segment trie over the catalog's templates: literals beat `prefix.:param` segments,
//! which beat `:param`, which beats a final catch-all `*param`; with backtracking, and no
//! allocation while matching.
//!
//! The trie is built as a tree of nodes (which checks the templates), then compiled into a
//! few flat arrays: the nodes, each node's literal edges (sorted by the segment's length and
//! first eight bytes, with its place in one string of all literals), and its `prefix.:param`
//! edges.
//! The built-in catalog compiles to about 115 KB (1,313 nodes, 974 literal edges), read
//! together instead of nodes, boxed keys and per-node hash maps spread over the heap: in a
//! server whose other work evicts the cache between requests, that is fewer misses per
//! match.

use super::{Entry, Method, parse::MAX_PARAMS, parse::template_params};
use crate::catalog::CatalogError;

/// Path parameters captured by a match, still URL-encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'p> {
    values: [&'p str; MAX_PARAMS],
    len: usize,
}

impl<'p> Params<'p> {
    /// Parameter number `index`, in template order.
    pub fn get(&self, index: usize) -> Option<&'p str> {
        self.values[..self.len].get(index).copied()
    }

    /// How many parameters were captured.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none was captured.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, value: &'p str) -> bool {
        if self.len == MAX_PARAMS {
            return false;
        }
        self.values[self.len] = value;
        self.len += 1;
        true
    }

    fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }
}

/// A matched endpoint and its parameters.
#[derive(Clone, Copy, Debug)]
pub struct Match<'c, 'p> {
    pub entry: &'c Entry,
    pub params: Params<'p>,
}

#[derive(Clone, Debug, Default)]
struct Node {
    // INVARIANT: sorted by segment, unique.
    literals: Vec<(Box<str>, Node)>,
    // (literal prefix ending in `.`, parameter name, child)
    prefixed: Vec<(Box<str>, Box<str>, Node)>,
    param: Option<(Box<str>, Box<Node>)>,
    // `*name`: the rest of the path, slashes included.
    catch_all: Option<(Box<str>, Box<Node>)>,
    endpoints: [Option<u32>; 5],
}

/// The catalog's trie, compiled (see the module's documentation).
#[derive(Clone, Debug, Default)]
pub(super) struct Router {
    nodes: Vec<FlatNode>,
    literals: Vec<Literal>,
    // Open-addressing tables over the literal edges of wide nodes: positions in the node's
    // run of `literals`, NONE for an empty slot.
    slots: Vec<u32>,
    prefixed: Vec<Prefixed>,
    // Every literal segment and prefix, one after the other.
    text: String,
}

/// Where a run of items starts in its array, and how many.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

/// No node, no endpoint.
const NONE: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct FlatNode {
    /// Into `literals`, sorted by (key, segment).
    literals: Span,
    /// Into `slots`, a power of two long (empty for a node with few literal edges, which
    /// are scanned).
    table: Span,
    /// Into `prefixed`, in declaration order.
    prefixed: Span,
    param: u32,
    catch_all: u32,
    endpoints: [u32; 5],
}

#[derive(Clone, Copy, Debug)]
struct Literal {
    key: SegmentKey,
    /// Into `text`.
    segment: Span,
    child: u32,
}

#[derive(Clone, Copy, Debug)]
struct Prefixed {
    /// Into `text`, ending in `.`.
    prefix: Span,
    child: u32,
}

/// A segment's length and first eight bytes: literal edges are found by it (compared in a
/// scan, or hashed into a table), and a segment of at most eight bytes is equal to an
/// edge's exactly when their keys are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SegmentKey {
    len: usize,
    head: u64,
}

/// Nodes with more literal edges than this get a table over them.
const SCANNED: usize = 8;

impl SegmentKey {
    /// Its slot in a table of `size` (a power of two) slots.
    fn slot(self, size: usize) -> usize {
        let mixed = (self.head ^ (self.len as u64).rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> 32) as usize & (size - 1)
    }

    fn of(segment: &str) -> SegmentKey {
        let bytes = segment.as_bytes();
        // Byte by byte (a copy of a variable length would call memcpy per segment).
        let head = match bytes.first_chunk::<8>() {
            Some(first) => u64::from_be_bytes(*first),
            None => bytes.iter().enumerate().fold(0, |head, (index, byte)| head | u64::from(*byte) << (56 - 8 * index)),
        };
        SegmentKey { len: bytes.len(), head }
    }
}

impl Router {
    pub(super) fn build(entries: &[Entry]) -> Result<Router, CatalogError> {
        let tree = Tree::build(entries)?;
        let mut router = Router::default();
        router.flatten(&tree.root).map_err(|message| CatalogError { file: String::new(), line: 0, message })?;
        Ok(router)
    }

    pub(super) fn find<'c, 'p>(&self, entries: &'c [Entry], method: Method, path: &'p str) -> Option<Match<'c, 'p>> {
        let mut params = Params::default();
        let index = self.find_in(0, method, path, &mut params)?;
        Some(Match { entry: entries.get(index as usize)?, params })
    }

    // Compiles `node` and its subtree; returns the node's index. Children come after their
    // parent, so the walk from the root moves forward through `nodes`.
    fn flatten(&mut self, node: &Node) -> Result<u32, String> {
        let index = self.nodes.len();
        let small = |value: usize| u32::try_from(value).map_err(|_| "the catalog is too large to compile".to_owned());
        let endpoints = node.endpoints.map(|slot| slot.unwrap_or(NONE));
        self.nodes.push(FlatNode {
            literals: Span::default(),
            table: Span::default(),
            prefixed: Span::default(),
            param: NONE,
            catch_all: NONE,
            endpoints,
        });
        let mut literals = Vec::with_capacity(node.literals.len());
        for (segment, child) in &node.literals {
            let child = self.flatten(child)?;
            literals.push(Literal { key: SegmentKey::of(segment), segment: self.intern(segment)?, child });
        }
        literals.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| self.text_of(a.segment).cmp(self.text_of(b.segment))));
        let mut prefixed = Vec::with_capacity(node.prefixed.len());
        for (prefix, _, child) in &node.prefixed {
            let child = self.flatten(child)?;
            prefixed.push(Prefixed { prefix: self.intern(prefix)?, child });
        }
        let param = node.param.as_ref().map(|(_, child)| self.flatten(child)).transpose()?.unwrap_or(NONE);
        let catch_all = node.catch_all.as_ref().map(|(_, child)| self.flatten(child)).transpose()?.unwrap_or(NONE);
        let literals_span = Span { start: small(self.literals.len())?, len: small(literals.len())? };
        let mut table = Span::default();
        if literals.len() > SCANNED {
            let size = (2 * literals.len()).next_power_of_two();
            let mut slots = vec![NONE; size];
            for (position, literal) in literals.iter().enumerate() {
                let mut slot = literal.key.slot(size);
                while slots[slot] != NONE {
                    slot = (slot + 1) & (size - 1);
                }
                slots[slot] = small(position)?;
            }
            table = Span { start: small(self.slots.len())?, len: small(size)? };
            self.slots.extend(slots);
        }
        self.literals.extend(literals);
        let prefixed_span = Span { start: small(self.prefixed.len())?, len: small(prefixed.len())? };
        self.prefixed.extend(prefixed);
        let flat = &mut self.nodes[index];
        (flat.literals, flat.table, flat.prefixed, flat.param, flat.catch_all) =
            (literals_span, table, prefixed_span, param, catch_all);
        small(index)
    }

    fn intern(&mut self, text: &str) -> Result<Span, String> {
        let start = u32::try_from(self.text.len()).map_err(|_| "the catalog is too large to compile".to_owned())?;
        self.text.push_str(text);
        Ok(Span { start, len: u32::try_from(text.len()).map_err(|_| "a segment is too long".to_owned())? })
    }

    fn text_of(&self, span: Span) -> &str {
        self.text.get(span.range()).unwrap_or_default()
    }

    // The child of `node` along the literal `segment`.
    fn literal(&self, node: &FlatNode, segment: &str) -> Option<u32> {
        let edges = self.literals.get(node.literals.range())?;
        let key = SegmentKey::of(segment);
        let matches = |edge: &Literal| edge.key == key && (key.len <= 8 || self.text_of(edge.segment) == segment);
        if node.table.len == 0 {
            return edges.iter().find(|edge| matches(edge)).map(|edge| edge.child);
        }
        let slots = self.slots.get(node.table.range())?;
        let mask = slots.len() - 1;
        let mut slot = key.slot(slots.len());
        loop {
            let edge = edges.get(*slots.get(slot)? as usize)?;
            if matches(edge) {
                return Some(edge.child);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn find_in<'p>(&self, node: u32, method: Method, rest: &'p str, params: &mut Params<'p>) -> Option<u32> {
        let node = self.nodes.get(node as usize)?;
        if rest.is_empty() {
            return Some(node.endpoints[method as usize]).filter(|endpoint| *endpoint != NONE);
        }
        let rest = rest.strip_prefix('/')?;
        // A byte loop: a segment is short, and `str::find` sets up a vectorised search.
        let (segment, tail) = match rest.bytes().position(|byte| byte == b'/') {
            Some(position) => (&rest[..position], &rest[position..]),
            None => (rest, ""),
        };
        if segment.is_empty() {
            return None;
        }
        if let Some(child) = self.literal(node, segment)
            && let Some(found) = self.find_in(child, method, tail, params)
        {
            return Some(found);
        }
        for edge in self.prefixed.get(node.prefixed.range())? {
            let prefix = self.text_of(edge.prefix);
            if segment.len() > prefix.len() && segment.starts_with(prefix) && params.push(&segment[prefix.len()..]) {
                if let Some(found) = self.find_in(edge.child, method, tail, params) {
                    return Some(found);
                }
                params.pop();
            }
        }
        if node.param != NONE && params.push(segment) {
            if let Some(found) = self.find_in(node.param, method, tail, params) {
                return Some(found);
            }
            params.pop();
        }
        if node.catch_all != NONE && params.push(rest) {
            if let Some(found) = self.nodes.get(node.catch_all as usize).map(|child| child.endpoints[method as usize])
                && found != NONE
            {
                return Some(found);
            }
            params.pop();
        }
        None
    }
}

/// The trie as built, before it is compiled.
#[derive(Default)]
struct Tree {
    root: Node,
}

impl Tree {
    // Inserts every template, checking them.
    fn build(entries: &[Entry]) -> Result<Tree, CatalogError> {
        let mut tree = Tree::default();

        for (index, entry) in entries.iter().enumerate() {
            let error = |message: String| CatalogError { file: entry.file.to_string(), line: entry.line, message };
            template_params(&entry.template).map_err(error)?;
            let mut node = &mut tree.root;
            for segment in entry.template[1..].split('/') {
                node = match segment.find(':') {
                    None if segment.starts_with('*') => {
                        let name = &segment[1..];
                        let (existing, child) = node.catch_all.get_or_insert_with(|| (name.into(), Box::default()));
                        if existing.as_ref() != name {
                            return Err(error(format!(
                                "template `{}` names catch-all `*{name}` where another template has `*{existing}`",
                                entry.template
                            )));
                        }
                        child
                    }
                    None => {
                        let position = match node.literals.binary_search_by(|(key, _)| key.as_ref().cmp(segment)) {
                            Ok(position) => position,
                            Err(position) => {
                                node.literals.insert(position, (segment.into(), Node::default()));
                                position
                            }
                        };
                        &mut node.literals[position].1
                    }
                    Some(0) => {
                        let name = &segment[1..];
                        let (existing, child) = node.param.get_or_insert_with(|| (name.into(), Box::default()));
                        if existing.as_ref() != name {
                            return Err(error(format!(
                                "template `{}` names parameter `:{name}` where another template has `:{existing}`",
                                entry.template
                            )));
                        }
                        child
                    }
                    Some(position) => {
                        let (prefix, name) = (&segment[..position], &segment[position + 1..]);
                        let found = node.prefixed.iter().position(|(p, _, _)| p.as_ref() == prefix);
                        let index = match found {
                            Some(index) => index,
                            None => {
                                node.prefixed.push((prefix.into(), name.into(), Node::default()));
                                node.prefixed.len() - 1
                            }
                        };
                        let (_, existing, child) = &mut node.prefixed[index];
                        if existing.as_ref() != name {
                            return Err(error(format!(
                                "template `{}` names parameter `:{name}` where another template has `:{existing}`",
                                entry.template
                            )));
                        }
                        child
                    }
                };
            }
            let slot = &mut node.endpoints[entry.method as usize];
            if let Some(previous) = slot {
                let previous = &entries[*previous as usize];
                return Err(error(format!(
                    "duplicate route `{} {}`, already declared at {}:{}",
                    entry.method.name(),
                    entry.template,
                    previous.file,
                    previous.line
                )));
            }
            *slot = Some(u32::try_from(index).map_err(|_| error("too many entries".to_owned()))?);
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::{Method, Node, Params, Router, Tree};
    use crate::{Resources, catalog::Catalog};

    /// The tree's own matcher, as the router worked before it was compiled: the oracle.
    fn tree_find<'p>(node: &Node, method: Method, rest: &'p str, params: &mut Params<'p>) -> Option<u32> {
        if rest.is_empty() {
            return node.endpoints[method as usize];
        }
        let rest = rest.strip_prefix('/')?;
        let (segment, tail) = rest.find('/').map_or((rest, ""), |position| (&rest[..position], &rest[position..]));
        if segment.is_empty() {
            return None;
        }
        if let Some((_, child)) = node.literals.iter().find(|(key, _)| key.as_ref() == segment)
            && let Some(found) = tree_find(child, method, tail, params)
        {
            return Some(found);
        }
        for (prefix, _, child) in &node.prefixed {
            if segment.len() > prefix.len()
                && segment.starts_with(prefix.as_ref())
                && params.push(&segment[prefix.len()..])
            {
                if let Some(found) = tree_find(child, method, tail, params) {
                    return Some(found);
                }
                params.pop();
            }
        }
        if let Some((_, child)) = &node.param
            && params.push(segment)
        {
            if let Some(found) = tree_find(child, method, tail, params) {
                return Some(found);
            }
            params.pop();
        }
        if let Some((_, child)) = &node.catch_all
            && params.push(rest)
        {
            if let Some(found) = child.endpoints[method as usize] {
                return Some(found);
            }
            params.pop();
        }
        None
    }

    /// The built-in catalog with its tree and compiled router, built once.
    static BUILT: LazyLock<(Catalog, Tree, Router)> = LazyLock::new(|| {
        let catalog = Catalog::builtin(&Resources::builtin().unwrap()).unwrap();
        let tree = Tree::build(catalog.entries()).unwrap();
        let router = Router::build(catalog.entries()).unwrap();
        (catalog, tree, router)
    });

    fn same_match(method: Method, path: &str) -> Result<bool, TestCaseError> {
        let (_, tree, router) = &*BUILT;
        let (mut expected_params, mut found_params) = (Params::default(), Params::default());
        let expected = tree_find(&tree.root, method, path, &mut expected_params);
        let found = router.find_in(0, method, path, &mut found_params);
        prop_assert_eq!(found, expected, "{:?} {}", method, path);
        if expected.is_some() {
            prop_assert_eq!(found_params, expected_params, "{:?} {}", method, path);
        }
        Ok(expected.is_some())
    }

    #[test]
    fn every_template_with_plain_values_matches_alike() {
        let (catalog, _, _) = &*BUILT;
        let mut matched = 0;
        for entry in catalog.entries() {
            let path: String = entry.template[1..]
                .split('/')
                .map(|segment| match segment.find(':') {
                    Some(0) => "/1".to_owned(),
                    Some(position) => format!("/{}1", &segment[..position]),
                    None if segment.starts_with('*') => "/a/b.txt".to_owned(),
                    None => format!("/{segment}"),
                })
                .collect();
            matched += usize::from(same_match(entry.method, &path).unwrap());
        }
        assert_eq!(matched, catalog.entries().len(), "every template matches a path made from it");
    }

    // Paths made from the catalog's templates: each segment kept, replaced by another
    // template's segment, a value, or dropped, and sometimes more segments appended.
    fn paths() -> impl Strategy<Value = (usize, Vec<(u8, usize)>, usize)> {
        (any::<usize>(), prop::collection::vec((0_u8..6, any::<usize>()), 1..12), 0_usize..5)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn the_compiled_trie_matches_as_the_tree_does((template, edits, method) in paths()) {
            let entries = BUILT.0.entries();
            let segments: Vec<&str> = entries.iter().flat_map(|entry| entry.template[1..].split('/')).collect();
            let values = ["1", "42", "acme%2Fapi", "latest", "main.js", "v1.2.3", "a.b", "", "self", "all"];
            let base: Vec<&str> = entries[template % entries.len()].template[1..].split('/').collect();
            let mut path = String::new();
            for (position, segment) in base.iter().enumerate() {
                let (edit, pick) = edits.get(position).copied().unwrap_or((0, 0));
                let segment = match edit {
                    0 | 1 => segment.trim_start_matches([':', '*']),
                    2 => values[pick % values.len()],
                    3 => segments[pick % segments.len()],
                    4 => continue,
                    _ => segment,
                };
                path.push('/');
                path.push_str(segment);
            }
            for (_, pick) in edits.iter().skip(base.len()) {
                path.push('/');
                path.push_str(values[pick % values.len()]);
            }
            same_match(Method::ALL[method], &path)?;
        }
    }
}
