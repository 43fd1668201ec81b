//! Per-client-address rate limiting: a token bucket per address, in memory.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::Instant,
};

/// The bucket a request counts against: its client's address, or, when the address is
/// unknown (an embedder serving the router without connection info), one bucket shared by
/// all such requests, so that they are limited too rather than not at all.
pub fn bucket_of(client_ip: Option<IpAddr>) -> IpAddr {
    client_ip.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// Addresses tracked at most; past this, full (idle) buckets are dropped first.
const MAX_ADDRESSES: usize = 100_000;

/// A token bucket per client address: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `burst` requests at once and `per_minute` sustained.
    pub fn new(burst: u32, per_minute: u32) -> RateLimiter {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `address`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn check(&self, address: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&address) {
            let (burst, per_second) = (self.burst, self.per_second);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_second < burst);
        }
        let (tokens, at) = buckets.entry(address).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }

    /// Gives back the request [`check`](Self::check) took from `address`, for a limiter that
    /// counts only failures: each attempt takes one, a success returns it.
    pub fn refund(&self, address: IpAddr) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((tokens, _)) = buckets.get_mut(&address) {
            *tokens = (*tokens + 1.0).min(self.burst);
        }
    }
}
