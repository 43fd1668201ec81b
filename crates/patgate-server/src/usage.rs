//! Token use, recorded off the decision path. An allowed decision appends one small event to
//! its thread's stripe (a lock no other decision thread takes, and a sequential write: no
//! hash lookup); a stripe is folded into the per-token aggregate in place when it holds
//! `FOLD_AT` events and the aggregate's lock is free (a decision never waits for it), and
//! by a background task every 100 ms ([`Usage::compact`]); the flush
//! writes the aggregate to the store in one transaction every few seconds and at shutdown
//! ([`Usage::take`]).
//!
//! A stripe's buffer is small and keeps its memory: events are written to cache lines the
//! core already holds. (A buffer of 100 ms of events, replaced by a fresh one at each
//! compaction, was written to cold lines, and the lock's release waited for each of them: a
//! memory latency per allowed request.)
//!
//! Per token the aggregate keeps the last use, the last distinct client addresses and, per
//! permission and boundary, how often and first and last when it was used. Its entry keeps
//! the addresses and the first permission uses inline. The entries (five cache lines each,
//! too many to stay in cache) sit in a vector found through a small map from token id
//! (hashed with one multiplication) to position; a fold finds all its events' positions
//! first, then updates the entries in order, prefetching each a few events ahead so that
//! their misses overlap.

use std::{
    cell::Cell,
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    net::IpAddr,
    sync::{
        Mutex, MutexGuard, PoisonError, TryLockError,
        atomic::{AtomicUsize, Ordering},
    },
};

use patgate_core::{Boundary, Permission, Timestamp, TokenId, UserId};
use patgate_store::{PermissionUse, TokenUse};
use prefetch_index::prefetch_index;

/// Stripes: each thread appends to one, so decision threads do not wait on one another.
const STRIPES: usize = 32;
/// A stripe holding this many events is folded, in place, by the thread that fills it (if
/// the aggregate is free): small enough that the buffer (about 18 KiB) stays in the core's
/// cache, large enough that the aggregate's lock is taken once per this many decisions.
const FOLD_AT: usize = 256;
/// Distinct addresses kept per token between flushes.
const IPS_PER_FLUSH: usize = 5;
/// Permission uses kept inline per token before the rest go to the heap: a CI token
/// typically uses one or two.
const INLINE_PERMISSIONS: usize = 2;

/// Hashes a token id (sequential numbers) with one multiplication by 2^64 / φ, whose high
/// bits spread consecutive ids over the table.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for a `TokenId`; anything else is folded in, FNV-style.
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Events whose entries are prefetched ahead of the one being folded: the aggregate is too
/// large to stay in cache, and this many entries' misses overlap instead of following one
/// another.
const LOOKAHEAD: usize = 4;

/// A token's use since the last flush.
///
/// The fields a fold touches for a typical event (the token's one address, its first
/// permission) come first, in the entry's first three cache lines, which are prefetched.
#[derive(Debug)]
#[repr(C, align(64))]
struct Pending {
    token: TokenId,
    owner: UserId,
    last_used_at: Timestamp,
    ip_count: u8,
    inline: [Option<PermissionUse>; INLINE_PERMISSIONS],
    /// The first `ip_count` are the distinct addresses with when each was last seen, oldest
    /// first (events of several threads arrive out of order; the time puts them back);
    /// addresses seen in the same second keep their arrival order.
    ips: [(IpAddr, Timestamp); IPS_PER_FLUSH],
    spilled: Vec<PermissionUse>,
}

impl Pending {
    fn new(token: TokenId, owner: UserId) -> Pending {
        Pending {
            token,
            owner,
            last_used_at: Timestamp::default(),
            ip_count: 0,
            inline: [None; INLINE_PERMISSIONS],
            ips: [(IpAddr::from([0, 0, 0, 0]), Timestamp::default()); IPS_PER_FLUSH],
            spilled: Vec::new(),
        }
    }

    /// Starts loading the lines a fold of this entry touches.
    fn prefetch(&self) {
        prefetch_index(std::slice::from_ref(&self.token), 0);
        prefetch_index(&self.inline[..], INLINE_PERMISSIONS - 1);
        prefetch_index(&self.ips[..], 0);
    }

    fn note_ip(&mut self, ip: IpAddr, at: Timestamp) {
        let count = usize::from(self.ip_count);
        let known = &mut self.ips[..count];
        if let Some(position) = known.iter().position(|(each, _)| *each == ip) {
            let seen = &mut known[position].1;
            *seen = (*seen).max(at);
            // Seen again: it moves after the addresses seen before it.
            sift_later(known, position);
        } else if count < IPS_PER_FLUSH {
            self.ips[count] = (ip, at);
            self.ip_count += 1;
            sift_earlier(&mut self.ips[..=count], count);
        } else if known[0].1 <= at {
            // Full: it replaces the oldest, unless it is older still.
            known[0] = (ip, at);
            sift_later(known, 0);
        }
    }

    /// Adds `used` to the entry for its permission and boundary.
    fn merge(&mut self, used: PermissionUse) {
        let same = |known: &PermissionUse| known.permission == used.permission && known.boundary == used.boundary;
        let found = self.inline.iter_mut().flatten().find(|known| same(known));
        let found = match found {
            Some(known) => Some(known),
            None => self.spilled.iter_mut().find(|known| same(known)),
        };
        match found {
            Some(known) => {
                known.uses += used.uses;
                known.first_used = known.first_used.min(used.first_used);
                known.last_used = known.last_used.max(used.last_used);
            }
            None => match self.inline.iter_mut().find(|slot| slot.is_none()) {
                Some(slot) => *slot = Some(used),
                None => self.spilled.push(used),
            },
        }
    }

    fn apply(&mut self, event: &Event) {
        self.owner = event.owner;
        self.last_used_at = self.last_used_at.max(event.at);
        if let Some((permission, boundary)) = event.used {
            self.merge(PermissionUse { permission, boundary, uses: 1, first_used: event.at, last_used: event.at });
        }
        if let Some(ip) = event.ip {
            self.note_ip(ip, event.at);
        }
    }

    fn into_use(self) -> TokenUse {
        TokenUse {
            token: self.token,
            owner: self.owner,
            last_used_at: self.last_used_at,
            ips: self.ips[..usize::from(self.ip_count)].iter().map(|(ip, _)| *ip).collect(),
            permissions: self.inline.into_iter().flatten().chain(self.spilled).collect(),
        }
    }
}

// Moves the address at `position`, whose time grew, after those seen strictly earlier.
fn sift_later(ips: &mut [(IpAddr, Timestamp)], mut position: usize) {
    while position + 1 < ips.len() && ips[position + 1].1 < ips[position].1 {
        ips.swap(position, position + 1);
        position += 1;
    }
}

// Moves the address at `position` before those seen strictly later.
fn sift_earlier(ips: &mut [(IpAddr, Timestamp)], mut position: usize) {
    while position > 0 && ips[position - 1].1 > ips[position].1 {
        ips.swap(position - 1, position);
        position -= 1;
    }
}

/// The per-token aggregate: the entries in a vector, found through a small map from token
/// to position (it stays in cache; the entries do not).
#[derive(Debug, Default)]
struct Aggregate {
    positions: HashMap<TokenId, u32, BuildHasherDefault<IdHasher>>,
    entries: Vec<Pending>,
    // The positions of a fold's events, kept between folds.
    scratch: Vec<u32>,
}

impl Aggregate {
    fn position(&mut self, token: TokenId, owner: UserId) -> usize {
        let entries = &mut self.entries;
        let position = *self.positions.entry(token).or_insert_with(|| {
            entries.push(Pending::new(token, owner));
            u32::try_from(entries.len() - 1).unwrap_or(u32::MAX)
        });
        position as usize
    }

    fn entry(&mut self, token: TokenId, owner: UserId) -> &mut Pending {
        let position = self.position(token, owner);
        &mut self.entries[position]
    }

    /// Folds events in: each event's entry is found first (in the map, in cache), then the
    /// entries are updated in order, each prefetched [`LOOKAHEAD`] events ahead.
    fn fold(&mut self, events: &[Event]) {
        let mut positions = std::mem::take(&mut self.scratch);
        positions.clear();
        for event in events {
            let position = self.position(event.token, event.owner);
            positions.push(u32::try_from(position).unwrap_or(u32::MAX));
        }
        for (index, event) in events.iter().enumerate() {
            if let Some(ahead) = positions.get(index + LOOKAHEAD) {
                self.entries[*ahead as usize].prefetch();
            }
            self.entries[positions[index] as usize].apply(event);
        }
        self.scratch = positions;
    }

    fn take(&mut self) -> Vec<Pending> {
        self.positions = HashMap::default();
        std::mem::take(&mut self.entries)
    }
}

/// One allowed decision's use of one permission (or of none).
#[derive(Clone, Copy, Debug)]
struct Event {
    token: TokenId,
    owner: UserId,
    at: Timestamp,
    ip: Option<IpAddr>,
    used: Option<(Permission, Boundary)>,
}

/// A stripe on a cache line pair of its own: threads appending to neighbouring stripes do
/// not invalidate each other's lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(Mutex<Vec<Event>>);

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe, assigned round robin on first use.
    static STRIPE: Cell<Option<usize>> = const { Cell::new(None) };
}

fn stripe_index() -> usize {
    STRIPE.with(|cell| {
        cell.get().unwrap_or_else(|| {
            let index = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
            cell.set(Some(index));
            index
        })
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// The lock if it is free now.
fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The uses not flushed yet.
#[derive(Debug, Default)]
pub struct Usage {
    stripes: [Stripe; STRIPES],
    /// Compaction, the flush and a restore take this lock; a decision only when it is free,
    /// once per [`FOLD_AT`] events of its stripe.
    aggregate: Mutex<Aggregate>,
}

impl Usage {
    /// Notes that `token` (of `owner`) was allowed at `now`, from `ip` if known, using
    /// `permissions` at `boundary` (none for an endpoint open to every token).
    pub fn record(
        &self,
        token: TokenId,
        owner: UserId,
        now: Timestamp,
        ip: Option<IpAddr>,
        permissions: &[Permission],
        boundary: Option<Boundary>,
    ) {
        let event = |used| Event { token, owner, at: now, ip, used };
        let mut events = lock(&self.stripes[stripe_index()].0);
        match (permissions, boundary) {
            ([_, ..], Some(boundary)) => {
                events.extend(permissions.iter().map(|permission| event(Some((*permission, boundary)))));
            }
            _ => events.push(event(None)),
        }
        // Folded in place when the aggregate is free. When another thread holds it, the stripe
        // grows on and a later event (or the compaction) folds it: a decision never waits.
        if events.len() >= FOLD_AT
            && let Some(mut aggregate) = try_lock(&self.aggregate)
        {
            aggregate.fold(&events);
            events.clear();
        }
    }

    /// Folds every stripe into the aggregate (every 100 ms in `patgate serve`), in place: a
    /// decision thread waits at most for the fold of its stripe's events.
    pub fn compact(&self) {
        for stripe in &self.stripes {
            let mut events = lock(&stripe.0);
            if !events.is_empty() {
                lock(&self.aggregate).fold(&events);
                events.clear();
            }
        }
    }
}

impl Usage {
    /// Takes everything recorded so far, per token.
    pub fn take(&self) -> Vec<TokenUse> {
        self.compact();
        let taken = lock(&self.aggregate).take();
        let mut uses: Vec<TokenUse> = taken.into_iter().map(Pending::into_use).collect();
        uses.sort_by_key(|used| used.token);
        uses
    }

    /// Puts back uses whose flush failed, so a database outage loses nothing.
    pub fn restore(&self, uses: Vec<TokenUse>) {
        self.compact();
        let mut aggregate = lock(&self.aggregate);
        for used in uses {
            let entry = aggregate.entry(used.token, used.owner);
            entry.owner = used.owner;
            entry.last_used_at = entry.last_used_at.max(used.last_used_at);
            // The restored addresses are older than any recorded since, in their order.
            let newer: Vec<(IpAddr, Timestamp)> = entry.ips[..usize::from(entry.ip_count)].to_vec();
            entry.ip_count = 0;
            let older = used.ips.into_iter().zip((i64::MIN..).map(Timestamp));
            for (ip, at) in older.chain(newer) {
                entry.note_ip(ip, at);
            }
            for restored in used.permissions {
                entry.merge(restored);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// `issue:read`, used in project 1.
    fn issue_read_in_project_1() -> (Permission, Boundary) {
        let resources = patgate_core::Resources::builtin().unwrap();
        (resources.permission("issue:read").unwrap(), Boundary::Project(patgate_core::ProjectId(1)))
    }

    #[test]
    fn addresses_keep_the_five_most_recent_in_order_and_uses_add_up() {
        let usage = Usage::default();
        let resources = patgate_core::Resources::builtin().unwrap();
        let read = resources.permission("issue:read").unwrap();
        let create = resources.permission("issue:create").unwrap();
        let update = resources.permission("issue:update").unwrap();
        let (token, owner, project) = (TokenId(7), UserId(3), Boundary::Project(patgate_core::ProjectId(1)));
        for (second, last) in [(1, 1), (2, 2), (3, 1), (4, 3), (5, 4), (6, 5), (7, 6), (8, 6)] {
            usage.record(token, owner, Timestamp(second), Some(ip(last)), &[read], Some(project));
        }
        // Three distinct permissions: two inline, one spilled; and one at another boundary.
        usage.record(token, owner, Timestamp(9), None, &[create, update], Some(project));
        usage.record(token, owner, Timestamp(10), None, &[read], Some(Boundary::User(owner)));
        usage.record(TokenId(8), owner, Timestamp(4), None, &[], None);
        let taken = usage.take();
        assert_eq!(taken.iter().map(|used| used.token).collect::<Vec<_>>(), [TokenId(7), TokenId(8)]);
        let used = &taken[0];
        assert_eq!((used.owner, used.last_used_at), (owner, Timestamp(10)));
        // 2 fell out when the sixth address (6) came; 1 moved up when seen again at 3.
        assert_eq!(used.ips, [ip(1), ip(3), ip(4), ip(5), ip(6)]);
        let counted: Vec<(Permission, Boundary, u64, i64, i64)> = used
            .permissions
            .iter()
            .map(|p| (p.permission, p.boundary, p.uses, p.first_used.0, p.last_used.0))
            .collect();
        assert_eq!(
            counted,
            [
                (read, project, 8, 1, 8),
                (create, project, 1, 9, 9),
                (update, project, 1, 9, 9),
                (read, Boundary::User(owner), 1, 10, 10)
            ]
        );
        assert!(taken[1].permissions.is_empty() && taken[1].ips.is_empty());
        assert!(usage.take().is_empty(), "taken once");

        // A failed flush puts everything back, merged with what came meanwhile.
        usage.record(token, owner, Timestamp(11), Some(ip(9)), &[read], Some(project));
        usage.restore(taken);
        let again = usage.take();
        let used = &again[0];
        assert_eq!(used.last_used_at, Timestamp(11));
        assert_eq!(used.ips, [ip(3), ip(4), ip(5), ip(6), ip(9)], "restored addresses are older");
        let read_here = used.permissions.iter().find(|p| p.permission == read && p.boundary == project).unwrap();
        assert_eq!((read_here.uses, read_here.first_used, read_here.last_used), (9, Timestamp(1), Timestamp(11)));
    }

    /// The addresses as the first version kept them: a full stable sort after each event.
    fn noted_by_sorting(model: &mut Vec<(IpAddr, Timestamp)>, ip: IpAddr, at: Timestamp) {
        let full = model.len() == IPS_PER_FLUSH;
        match model.iter_mut().find(|(each, _)| *each == ip) {
            Some((_, seen)) => *seen = (*seen).max(at),
            None if !full => model.push((ip, at)),
            None => match model.first_mut() {
                Some(oldest) if oldest.1 <= at => *oldest = (ip, at),
                _ => return,
            },
        }
        model.sort_by_key(|(_, seen)| *seen);
    }

    #[test]
    fn addresses_keep_the_order_a_full_sort_would_give() {
        // Out-of-order times, repeated seconds and more addresses than are kept, drawn from
        // a fixed-seed generator (xorshift).
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for _ in 0..200 {
            let mut entry = Pending::new(TokenId(1), UserId(1));
            let mut model = Vec::new();
            for _ in 0..40 {
                let (address, at) = (ip(next(9) as u8), Timestamp(next(12) as i64));
                entry.note_ip(address, at);
                noted_by_sorting(&mut model, address, at);
                assert_eq!(&entry.ips[..usize::from(entry.ip_count)], &model[..]);
            }
        }
    }

    #[test]
    fn a_fold_over_many_tokens_counts_each_once() {
        // More tokens than the lookahead, interleaved, in events folded in several batches.
        let usage = Usage::default();
        let (read, project) = issue_read_in_project_1();
        let tokens = 1000_u64;
        for round in 0..5_i64 {
            for token in 0..tokens {
                let address = Some(ip((token % 3) as u8));
                usage.record(TokenId(token), UserId(token / 2), Timestamp(round), address, &[read], Some(project));
            }
        }
        let taken = usage.take();
        assert_eq!(taken.len(), tokens as usize);
        for (expected, used) in (0..tokens).zip(&taken) {
            assert_eq!(
                (used.token, used.owner, used.last_used_at),
                (TokenId(expected), UserId(expected / 2), Timestamp(4))
            );
            assert_eq!(used.ips, [ip((expected % 3) as u8)]);
            assert_eq!(used.permissions.len(), 1);
            assert_eq!((used.permissions[0].uses, used.permissions[0].first_used), (5, Timestamp(0)));
        }
    }

    #[test]
    fn addresses_from_several_threads_are_ordered_by_time() {
        let usage = Usage::default();
        let (token, owner) = (TokenId(1), UserId(1));
        usage.record(token, owner, Timestamp(10), Some(ip(1)), &[], None);
        std::thread::scope(|scope| {
            scope.spawn(|| usage.record(token, owner, Timestamp(5), Some(ip(2)), &[], None));
        });
        usage.compact();
        usage.record(token, owner, Timestamp(7), Some(ip(3)), &[], None);
        let taken = usage.take();
        assert_eq!((taken[0].ips.clone(), taken[0].last_used_at), (vec![ip(2), ip(3), ip(1)], Timestamp(10)));
    }

    #[test]
    fn uses_folded_while_recording_are_all_counted() {
        let usage = Usage::default();
        let (read, project) = issue_read_in_project_1();
        let events = FOLD_AT * 3 + 7;
        for second in 0..events {
            let token = TokenId(second as u64 % 3);
            usage.record(token, UserId(1), Timestamp(second as i64), None, &[read], Some(project));
            if second == FOLD_AT * 2 {
                usage.compact();
            }
        }
        let taken = usage.take();
        assert_eq!(taken.len(), 3);
        let counted: u64 = taken.iter().flat_map(|used| &used.permissions).map(|p| p.uses).sum();
        assert_eq!(counted, events as u64);
        assert_eq!(taken[0].last_used_at, Timestamp((events - 1) as i64 / 3 * 3));
        assert!(usage.take().is_empty(), "taken once");

        // Addresses seen before and after a compaction keep the five most recent, in order.
        for (second, last) in [(1, 1), (2, 2), (3, 3)] {
            usage.record(TokenId(9), UserId(1), Timestamp(second), Some(ip(last)), &[], None);
        }
        usage.compact();
        for (second, last) in [(4, 4), (5, 1), (6, 5), (7, 6)] {
            usage.record(TokenId(9), UserId(1), Timestamp(second), Some(ip(last)), &[], None);
        }
        let taken = usage.take();
        assert_eq!(taken[0].ips, [ip(3), ip(4), ip(1), ip(5), ip(6)]);
        assert_eq!(taken[0].last_used_at, Timestamp(7));
    }
}
