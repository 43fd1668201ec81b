//! Token use, recorded off the decision path: an allowed decision adds to an in-memory
//! aggregate (one short lock on one of several shards), and a background flush writes the
//! aggregate to the store in one transaction every few seconds and at shutdown.
//!
//! Per token it keeps the last use, the last distinct client addresses and, per permission
//! and boundary, how often and first and last when it was used.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
};

use patgate_core::{Boundary, Permission, Timestamp, TokenId, UserId};
use patgate_store::{PermissionUse, TokenUse};

/// Shards: decisions for different tokens rarely wait on one another.
const SHARDS: usize = 16;
/// Distinct addresses kept per token between flushes.
const IPS_PER_FLUSH: usize = 5;

#[derive(Debug, Default)]
struct Pending {
    owner: Option<UserId>,
    last_used_at: Timestamp,
    ips: Vec<IpAddr>,
    permissions: Vec<PermissionUse>,
}

/// The uses not flushed yet.
#[derive(Debug, Default)]
pub struct Usage {
    shards: [Mutex<HashMap<TokenId, Pending>>; SHARDS],
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
        let shard = &self.shards[(token.0 as usize) % SHARDS];
        let mut pending = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = pending.entry(token).or_default();
        entry.owner = Some(owner);
        entry.last_used_at = entry.last_used_at.max(now);
        if let Some(boundary) = boundary {
            for &permission in permissions {
                let used = PermissionUse { permission, boundary, uses: 1, first_used: now, last_used: now };
                merge(&mut entry.permissions, used);
            }
        }
        if let Some(ip) = ip {
            if let Some(position) = entry.ips.iter().position(|known| *known == ip) {
                // Most recent last.
                entry.ips.remove(position);
            } else if entry.ips.len() == IPS_PER_FLUSH {
                entry.ips.remove(0);
            }
            entry.ips.push(ip);
        }
    }

    /// Takes everything recorded so far (each shard's lock is held only to swap its map).
    pub fn take(&self) -> Vec<TokenUse> {
        let mut uses = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(PoisonError::into_inner));
            uses.extend(taken.into_iter().filter_map(|(token, pending)| {
                Some(TokenUse {
                    token,
                    owner: pending.owner?,
                    last_used_at: pending.last_used_at,
                    ips: pending.ips,
                    permissions: pending.permissions,
                })
            }));
        }
        uses.sort_by_key(|used| used.token);
        uses
    }

    /// Puts back uses whose flush failed, so a database outage loses nothing.
    pub fn restore(&self, uses: Vec<TokenUse>) {
        for used in uses {
            for ip in used.ips.iter().copied().map(Some).chain(used.ips.is_empty().then_some(None)) {
                self.record(used.token, used.owner, used.last_used_at, ip, &[], None);
            }
            let shard = &self.shards[(used.token.0 as usize) % SHARDS];
            let mut pending = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = pending.entry(used.token).or_default();
            for restored in used.permissions {
                merge(&mut entry.permissions, restored);
            }
        }
    }
}

/// Adds `used` to the entry for its permission and boundary (a token uses few distinct
/// permissions between two flushes: a short scan).
fn merge(permissions: &mut Vec<PermissionUse>, used: PermissionUse) {
    match permissions.iter_mut().find(|known| known.permission == used.permission && known.boundary == used.boundary) {
        Some(known) => {
            known.uses += used.uses;
            known.first_used = known.first_used.min(used.first_used);
            known.last_used = known.last_used.max(used.last_used);
        }
        None => permissions.push(used),
    }
}
