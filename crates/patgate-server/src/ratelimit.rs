//! Per-client rate limiting: a token bucket per client, in memory.
//!
//! A client is an IPv4 address or an IPv6 /64: one host commonly holds a whole /64 (SLAAC,
//! privacy addresses, a delegated prefix), so counting its addresses apart would hand it 2^64
//! fresh buckets.
//!
//! Memory is bounded without ever scanning the buckets: they live in two generations. A
//! request finds its bucket in the current one, or moves it there from the previous one.
//! When the current generation is a refill time old, or full, it becomes the previous one
//! and the old previous one is dropped whole (its buckets untouched for a generation). After
//! a refill time idle, a bucket is full again, as good as a fresh one: dropping it forgets
//! nothing. Only a flood of new clients that fills a generation faster forgets early, and
//! then the least recently used generation.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// The client a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// An IPv4 address (also when written as an IPv4-mapped IPv6 address, `::ffff:a.b.c.d`).
    V4(Ipv4Addr),
    /// The /64 network an IPv6 address is in: its first four segments.
    V6Network([u16; 4]),
    /// Requests whose client address is unknown (an embedder serving the router without
    /// connection info): one bucket shared by all such requests, so that they are limited
    /// too rather than not at all.
    Unknown,
}

/// The bucket a request from `client_ip` counts against.
pub fn bucket_of(client_ip: Option<IpAddr>) -> Bucket {
    match client_ip {
        None => Bucket::Unknown,
        Some(IpAddr::V4(address)) => Bucket::V4(address),
        Some(IpAddr::V6(address)) => match address.to_ipv4_mapped() {
            Some(mapped) => Bucket::V4(mapped),
            None => {
                let [a, b, c, d, ..] = address.segments();
                Bucket::V6Network([a, b, c, d])
            }
        },
    }
}

/// Clients tracked at most (both generations together).
const MAX_CLIENTS: usize = 100_000;

/// What is left in a bucket, as of `at`.
#[derive(Clone, Copy, Debug)]
struct Level {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Generations {
    current: HashMap<Bucket, Level>,
    previous: HashMap<Bucket, Level>,
    /// When `current` became the current generation.
    started: Instant,
}

/// A token bucket per client: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    /// How long an empty bucket takes to fill up: a generation's longest life.
    refill: Duration,
    /// Buckets one generation holds at most.
    generation_capacity: usize,
    buckets: Mutex<Generations>,
}

impl RateLimiter {
    /// A limiter allowing `burst` requests at once and `per_minute` sustained.
    pub fn new(burst: u32, per_minute: u32) -> RateLimiter {
        RateLimiter::tracking(burst, per_minute, MAX_CLIENTS)
    }

    /// [`RateLimiter::new`], tracking at most `clients` clients.
    fn tracking(burst: u32, per_minute: u32, clients: usize) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        let per_second = f64::from(per_minute.max(1)) / 60.0;
        RateLimiter {
            burst,
            per_second,
            refill: Duration::try_from_secs_f64(burst / per_second).unwrap_or(Duration::MAX),
            generation_capacity: (clients / 2).max(1),
            buckets: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
                started: Instant::now(),
            }),
        }
    }

    /// Takes one request from `bucket`; `Err(seconds)` to wait when it is empty.
    pub fn check(&self, bucket: Bucket) -> Result<(), u64> {
        self.check_at(bucket, Instant::now())
    }

    fn check_at(&self, bucket: Bucket, now: Instant) -> Result<(), u64> {
        let mut guard = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let generations = &mut *guard;
        if now.saturating_duration_since(generations.started) >= self.refill {
            generations.previous = std::mem::take(&mut generations.current);
            generations.started = now;
        }
        let Generations { current, previous, started } = generations;
        let fresh = Level { tokens: self.burst, at: now };
        if !current.contains_key(&bucket) {
            let carried = previous.remove(&bucket).unwrap_or(fresh);
            if current.len() >= self.generation_capacity {
                *previous = std::mem::take(current);
                *started = now;
            }
            current.insert(bucket, carried);
        }
        let level = current.entry(bucket).or_insert(fresh);
        level.tokens =
            (level.tokens + now.saturating_duration_since(level.at).as_secs_f64() * self.per_second).min(self.burst);
        level.at = now;
        if level.tokens >= 1.0 {
            level.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - level.tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }

    /// Gives back the request [`check`](Self::check) took from `bucket`, for a limiter that
    /// counts only failures: each attempt takes one, a success returns it.
    pub fn refund(&self, bucket: Bucket) {
        let mut guard = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let Generations { current, previous, .. } = &mut *guard;
        if let Some(level) = current.get_mut(&bucket).or_else(|| previous.get_mut(&bucket)) {
            level.tokens = (level.tokens + 1.0).min(self.burst);
        }
    }

    /// Clients tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        let guard = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        guard.current.len() + guard.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_addresses_of_one_ipv6_64_are_one_client() {
        let limiter = RateLimiter::new(20, 1);
        let now = Instant::now();
        for host in 1..=20_u16 {
            let address = Ipv6Addr::new(0x2001, 0xdb8, 0, 7, host, 0, 0, host);
            assert_eq!(limiter.check_at(bucket_of(Some(address.into())), now), Ok(()), "{address}");
        }
        assert!(limiter.check_at(bucket_of(ip("2001:db8:0:7:ffff:ffff:ffff:ffff")), now).is_err());
        // The next /64 is another client.
        assert_eq!(limiter.check_at(bucket_of(ip("2001:db8:0:8::1")), now), Ok(()));
        assert_eq!(bucket_of(ip("2001:db8:0:7::1")), bucket_of(ip("2001:db8:0:7:1:2:3:4")));
        assert_ne!(bucket_of(ip("2001:db8:0:7::1")), bucket_of(ip("2001:db8:0:6::1")));
    }

    #[test]
    fn an_ipv4_address_is_one_client_however_it_is_written() {
        assert_eq!(bucket_of(ip("::ffff:198.51.100.1")), bucket_of(ip("198.51.100.1")));
        // IPv4-mapped addresses share one /64 (`::ffff:0:0/96`): they are not one client.
        assert_ne!(bucket_of(ip("::ffff:198.51.100.1")), bucket_of(ip("::ffff:198.51.100.2")));
        assert_ne!(bucket_of(ip("198.51.100.1")), bucket_of(ip("198.51.100.2")));
    }

    #[test]
    fn an_unknown_address_is_not_an_ipv6_network() {
        // `::` and `::1` are in the /64 `::/64`; requests without an address are apart.
        for address in ["::", "::1", "0.0.0.0"] {
            assert_ne!(bucket_of(None), bucket_of(ip(address)), "{address}");
        }
        assert_eq!(bucket_of(None), bucket_of(None));
    }

    #[test]
    fn a_flood_of_new_clients_stays_within_the_bound() {
        let limiter = RateLimiter::tracking(5, 5, 1_000);
        let now = Instant::now();
        for index in 0..20_000_u32 {
            let _ = limiter.check_at(Bucket::V4(Ipv4Addr::from(index)), now);
            assert!(limiter.tracked() <= 1_000, "{} clients tracked after {index}", limiter.tracked());
        }
    }

    #[test]
    fn a_generation_turning_over_forgets_no_bucket_that_has_not_refilled() {
        // Three at once, one a second: empty, a bucket is full again after three seconds,
        // and a generation lasts that long.
        let limiter = RateLimiter::tracking(3, 60, 1_000);
        let start = Instant::now();
        let at = |seconds: f64| start + Duration::from_secs_f64(seconds);
        let other = |index: u8| Bucket::V4(Ipv4Addr::new(203, 0, 113, index));
        let drained = Bucket::V4(Ipv4Addr::new(198, 51, 100, 7));
        let _ = limiter.check_at(other(0), at(0.0));
        for _ in 0..3 {
            assert_eq!(limiter.check_at(drained, at(2.9)), Ok(()));
        }
        assert!(limiter.check_at(drained, at(2.9)).is_err());
        // The generation turns over (another client at 3.1 s): the drained bucket is kept.
        let _ = limiter.check_at(other(1), at(3.1));
        assert!(limiter.check_at(drained, at(3.2)).is_err(), "forgotten before it refilled");
        // Again, drained once more as it has refilled, just before the next turn over.
        for _ in 0..3 {
            assert_eq!(limiter.check_at(drained, at(6.1)), Ok(()));
        }
        let _ = limiter.check_at(other(2), at(6.2));
        assert!(limiter.check_at(drained, at(6.3)).is_err(), "forgotten before it refilled");
        // Buckets idle for a whole generation go: `other(0)` and `other(1)`.
        let _ = limiter.check_at(other(3), at(9.3));
        assert_eq!(limiter.tracked(), 3, "{limiter:?}");
        let mut allowed = 0;
        for _ in 0..4 {
            allowed += usize::from(limiter.check_at(drained, at(9.3)).is_ok());
        }
        assert_eq!(allowed, 3, "refilled, as good as new");
    }

    #[test]
    fn a_flood_of_new_clients_forgets_the_least_recently_seen_first() {
        let limiter = RateLimiter::tracking(3, 1, 8);
        let now = Instant::now();
        let recent = Bucket::V4(Ipv4Addr::new(198, 51, 100, 7));
        for _ in 0..3 {
            assert_eq!(limiter.check_at(recent, now), Ok(()));
        }
        // A generation holds four; `recent` is seen again as each fills up.
        for index in 0..40_u32 {
            let _ = limiter.check_at(Bucket::V4(Ipv4Addr::from(index)), now);
            assert!(limiter.check_at(recent, now).is_err(), "a drained client forgotten after {index} others");
        }
    }

    #[test]
    fn a_refund_gives_back_what_the_check_took() {
        let limiter = RateLimiter::new(2, 1);
        let now = Instant::now();
        let client = bucket_of(ip("192.0.2.1"));
        for _ in 0..10 {
            assert_eq!(limiter.check_at(client, now), Ok(()));
            limiter.refund(client);
        }
        assert_eq!(limiter.check_at(client, now), Ok(()));
        assert_eq!(limiter.check_at(client, now), Ok(()));
        assert!(limiter.check_at(client, now).is_err());
    }
}
