//! Per-source-address token buckets. In memory and per instance: a limit only needs to hold back
//! floods, and a restart forgetting the buckets is harmless.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::config::{RateLimit, RateLimits};

const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Timestamp,
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `addr`. `Err(seconds)` says when the next one will be available.
    pub fn check(&self, addr: IpAddr, now: Timestamp) -> Result<(), u64> {
        let key = bucket_key(addr);
        let burst = f64::from(self.limit.burst);
        let per_second = burst / f64::from(self.limit.per_seconds);
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_TRACKED {
            // Forget buckets that have refilled completely: they carry no information.
            buckets.retain(|_, b| b.tokens + (now - b.updated) as f64 * per_second < burst);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = (now - bucket.updated).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / per_second).ceil();
            Err(wait.max(1.0) as u64)
        }
    }
}

/// IPv6 clients usually hold a whole /64, so that is the unit an address can vary within.
fn bucket_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The endpoints with a per-source rate limit, each with its own buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Register,
    Token,
    Authorize,
    Revoke,
    Account,
    Callback,
}

impl Limited {
    pub fn label(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Token => "token",
            Self::Authorize => "authorize",
            Self::Revoke => "revoke",
            Self::Account => "account",
            Self::Callback => "callback",
        }
    }

    /// Browser pages get a page; the JSON endpoints an OAuth error.
    pub fn is_page(self) -> bool {
        matches!(self, Self::Authorize | Self::Account | Self::Callback)
    }
}

/// One set of buckets per limited endpoint.
#[derive(Debug)]
pub struct Limiters {
    register: RateLimiter,
    token: RateLimiter,
    authorize: RateLimiter,
    revoke: RateLimiter,
    account: RateLimiter,
    callback: RateLimiter,
}

impl Limiters {
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            register: RateLimiter::new(limits.register),
            token: RateLimiter::new(limits.token),
            authorize: RateLimiter::new(limits.authorize),
            revoke: RateLimiter::new(limits.revoke),
            account: RateLimiter::new(limits.account),
            callback: RateLimiter::new(limits.callback),
        }
    }

    pub fn get(&self, which: Limited) -> &RateLimiter {
        match which {
            Limited::Register => &self.register,
            Limited::Token => &self.token,
            Limited::Authorize => &self.authorize,
            Limited::Revoke => &self.revoke,
            Limited::Account => &self.account,
            Limited::Callback => &self.callback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_drains_and_refills() {
        let rl = RateLimiter::new(RateLimit {
            burst: 3,
            per_seconds: 60,
        });
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        assert!(rl.check(a, 0).is_ok());
        assert!(rl.check(a, 0).is_ok());
        assert!(rl.check(a, 0).is_ok());
        assert_eq!(rl.check(a, 0), Err(20));
        assert!(rl.check(b, 0).is_ok(), "addresses have their own buckets");
        assert!(rl.check(a, 20).is_ok(), "one token back after 20 s");
        assert!(rl.check(a, 20).is_err());
    }

    #[test]
    fn ipv6_shares_a_bucket_per_64() {
        let rl = RateLimiter::new(RateLimit {
            burst: 1,
            per_seconds: 60,
        });
        assert!(rl.check("2001:db8:1:2::1".parse().unwrap(), 0).is_ok());
        assert!(rl.check("2001:db8:1:2::99".parse().unwrap(), 0).is_err());
        assert!(rl.check("2001:db8:1:3::1".parse().unwrap(), 0).is_ok());
    }
}
