//! A segment trie over the catalog's templates: literals beat `prefix.:param` segments,
//! which beat `:param`, which beats a final catch-all `*param`; with backtracking, and no
//! allocation while matching.

use super::{Entry, Method, parse::MAX_PARAMS, parse::template_params};
use crate::catalog::CatalogError;
use crate::directory::FastMap;

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

/// Nodes with more literal children than this also get a hash index over them.
const INDEXED_LITERALS: usize = 8;

#[derive(Clone, Debug, Default)]
struct Node {
    // INVARIANT: sorted by segment, unique.
    literals: Vec<(Box<str>, Node)>,
    // For wide nodes: segment → position in `literals` (built once, after every insert).
    literal_index: Option<FastMap<Box<str>, usize>>,
    // (literal prefix ending in `.`, parameter name, child)
    prefixed: Vec<(Box<str>, Box<str>, Node)>,
    param: Option<(Box<str>, Box<Node>)>,
    // `*name`: the rest of the path, slashes included.
    catch_all: Option<(Box<str>, Box<Node>)>,
    endpoints: [Option<u32>; 5],
}

#[derive(Clone, Debug, Default)]
pub(super) struct Router {
    root: Node,
}

impl Router {
    pub(super) fn build(entries: &[Entry]) -> Result<Router, CatalogError> {
        let mut router = Router::default();
        for (index, entry) in entries.iter().enumerate() {
            let error = |message: String| CatalogError { file: entry.file.to_string(), line: entry.line, message };
            template_params(&entry.template).map_err(error)?;
            let mut node = &mut router.root;
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
        index_literals(&mut router.root);
        Ok(router)
    }

    pub(super) fn find<'c, 'p>(&self, entries: &'c [Entry], method: Method, path: &'p str) -> Option<Match<'c, 'p>> {
        let mut params = Params::default();
        let index = find_in(&self.root, method, path, &mut params)?;
        Some(Match { entry: entries.get(index as usize)?, params })
    }
}

fn index_literals(node: &mut Node) {
    if node.literals.len() > INDEXED_LITERALS {
        node.literal_index = Some(
            node.literals.iter().enumerate().map(|(position, (segment, _))| (segment.clone(), position)).collect(),
        );
    }
    for (_, child) in &mut node.literals {
        index_literals(child);
    }
    for (_, _, child) in &mut node.prefixed {
        index_literals(child);
    }
    if let Some((_, child)) = &mut node.param {
        index_literals(child);
    }
    if let Some((_, child)) = &mut node.catch_all {
        index_literals(child);
    }
}

impl Node {
    fn literal(&self, segment: &str) -> Option<&Node> {
        let position = match &self.literal_index {
            Some(index) => *index.get(segment)?,
            None => self.literals.iter().position(|(key, _)| key.as_ref() == segment)?,
        };
        self.literals.get(position).map(|(_, child)| child)
    }
}

fn find_in<'p>(node: &Node, method: Method, rest: &'p str, params: &mut Params<'p>) -> Option<u32> {
    if rest.is_empty() {
        return node.endpoints[method as usize];
    }
    let rest = rest.strip_prefix('/')?;
    let (segment, tail) = match rest.find('/') {
        Some(position) => (&rest[..position], &rest[position..]),
        None => (rest, ""),
    };
    if segment.is_empty() {
        return None;
    }
    if let Some(child) = node.literal(segment)
        && let Some(found) = find_in(child, method, tail, params)
    {
        return Some(found);
    }
    for (prefix, _, child) in &node.prefixed {
        if segment.len() > prefix.len() && segment.starts_with(prefix.as_ref()) && params.push(&segment[prefix.len()..])
        {
            if let Some(found) = find_in(child, method, tail, params) {
                return Some(found);
            }
            params.pop();
        }
    }
    if let Some((_, child)) = &node.param
        && params.push(segment)
    {
        if let Some(found) = find_in(child, method, tail, params) {
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
