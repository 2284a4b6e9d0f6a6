//! Request bodies being read (SPEC §12): what they hold of
//! `--max-body-bytes-in-flight`, shared so that no one takes it from the
//! others, and the floor rate below which one is cut.
//!
//! A body holds its length (a chunked one, `--max-event-bytes`) from its
//! head until it is complete. Beyond the whole budget, and beyond a
//! quarter of it held by the senders of one webhook endpoint or by one
//! client address, a new body is refused (`503`): senders who announce
//! large bodies and trickle them hold at most a quarter each way, and a
//! normal delivery to another source still fits. A share is never below
//! one body of the largest size, so that one always fits (as the budget
//! never is below it either).
//!
//! A body being read must keep up an average of `FLOOR_BYTES_PER_S` from
//! its head on, once `FLOOR_AFTER_MS` have passed; else it is cut (`408`).
//! Checked on the connection's timer, not per read: the timer is armed for
//! the moment the bytes received so far would fall below the floor (at
//! least `FLOOR_CHECK_MS` later), and only fires then.
//!
//! Sans-I/O: the reactor asks and tells, with its clock in milliseconds.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::engine::SourceKey;

/// The floor: once a body has been read for this long…
pub const FLOOR_AFTER_MS: u64 = 5_000;
/// …it must have averaged at least this many bytes a second since its head.
pub const FLOOR_BYTES_PER_S: u64 = 1024;
/// A body at the floor is checked again at most this often (so it is cut
/// up to this late, and its timer fires at most once a second).
const FLOOR_CHECK_MS: u64 = 1_000;
/// A hidden variable for tests, `AFTER_MS:BYTES_PER_S`, that sets the
/// floor (the real one takes 5 s to apply).
const FLOOR_VAR: &str = "SSEHUB_BODY_FLOOR";

/// Who a body counts against besides the whole budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    bytes: u32,
    /// The source whose webhook endpoint it is sent to.
    source: Option<SourceKey>,
    client: u64,
}

/// A client address as shares count it, in 64 bits: an IPv6 client by its
/// /64 (what one host is usually given), an IPv4 one (also IPv4-mapped)
/// whole, as the /64 its 6to4 prefix (`2002:a.b.c.d::/48`) starts, which is
/// the same host.
fn client_key(ip: IpAddr) -> u64 {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    match v6.to_ipv4_mapped() {
        Some(v4) => 0x2002 << 48 | (u32::from(v4) as u64) << 16,
        None => (u128::from(v6) >> 64) as u64,
    }
}

/// Why a new body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The whole budget is held.
    Full,
    /// The senders of its webhook endpoint hold their share.
    Endpoint,
    /// Its client address holds its share.
    Client,
}

/// The bodies' budget and who holds it: by connection (key), by webhook
/// endpoint (its source) and by client address (`client_key`). The maps
/// hold only bodies being read and their holders, so they stay small; the
/// last two are of the type `tokens` has too (its code is in the binary
/// once), so a share counts in a `u32`: at most 4 GiB.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    share: u32,
    held: usize,
    by_conn: HashMap<usize, Owner>,
    by_source: HashMap<SourceKey, u32>,
    by_client: HashMap<u64, u32>,
}

impl Budget {
    /// `--max-body-bytes-in-flight` and `--max-event-bytes`: neither the
    /// budget nor a share is below one body of the largest size.
    pub fn new(max_in_flight: usize, max_body: usize) -> Budget {
        let limit = max_in_flight.max(max_body);
        Budget {
            limit,
            share: u32::try_from((limit / 4).max(max_body)).unwrap_or(u32::MAX),
            held: 0,
            by_conn: HashMap::new(),
            by_source: HashMap::new(),
            by_client: HashMap::new(),
        }
    }

    /// What one endpoint's senders, or one client address, may hold.
    pub fn share(&self) -> u32 {
        self.share
    }

    /// Connection `conn`'s body of `bytes`, to `source`'s webhook endpoint
    /// if `source`, from `client`: held from now on, or refused (and then
    /// nothing is held).
    pub fn take(&mut self, conn: usize, bytes: u32, source: Option<SourceKey>, client: IpAddr) -> Result<(), Busy> {
        let client = client_key(client);
        if self.held + bytes as usize > self.limit {
            return Err(Busy::Full);
        }
        let over = |held: Option<&u32>| held.copied().unwrap_or(0) as u64 + bytes as u64 > self.share as u64;
        if let Some(source) = source
            && over(self.by_source.get(&source))
        {
            return Err(Busy::Endpoint);
        }
        if over(self.by_client.get(&client)) {
            return Err(Busy::Client);
        }
        self.held += bytes as usize;
        if let Some(source) = source {
            *self.by_source.entry(source).or_default() += bytes;
        }
        *self.by_client.entry(client).or_default() += bytes;
        let old = self.by_conn.insert(conn, Owner { bytes, source, client });
        debug_assert!(old.is_none(), "one body at a time per connection");
        Ok(())
    }

    /// Connection `conn`'s body, if it held one, holds nothing any more.
    pub fn release(&mut self, conn: usize) {
        let Some(Owner { bytes, source, client }) = self.by_conn.remove(&conn) else { return };
        self.held -= bytes as usize;
        if let Some(source) = source {
            give_back(&mut self.by_source, source, bytes);
        }
        give_back(&mut self.by_client, client, bytes);
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.held == 0 && self.by_conn.is_empty() && self.by_source.is_empty() && self.by_client.is_empty()
    }
}

/// Takes `n` from `key`'s count, and its entry once it is zero.
fn give_back(map: &mut HashMap<u64, u32>, key: u64, n: u32) {
    if let Some(count) = map.get_mut(&key) {
        *count -= n;
        if *count == 0 {
            map.remove(&key);
        }
    }
}

/// The floor rate of a body being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    pub after_ms: u64,
    pub bytes_per_s: u64,
}

/// What a body's timer finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Below the floor: cut it.
    TooSlow,
    /// At or above it: look again at this time (reactor ms), when what it
    /// has sent so far would no longer be enough.
    CheckAt(u64),
}

impl Default for Floor {
    fn default() -> Floor {
        Floor { after_ms: FLOOR_AFTER_MS, bytes_per_s: FLOOR_BYTES_PER_S }
    }
}

impl Floor {
    /// The floor, or the one `SSEHUB_BODY_FLOOR` sets (tests).
    pub fn from_env() -> Floor {
        Floor::parse(std::env::var(FLOOR_VAR).ok().as_deref()).unwrap_or_default()
    }

    fn parse(value: Option<&str>) -> Option<Floor> {
        let (after, rate) = value?.split_once(':')?;
        Some(Floor { after_ms: after.parse().ok()?, bytes_per_s: rate.parse().ok().filter(|&r| r > 0)? })
    }

    /// When a body whose head came at `started` is first checked.
    pub fn first_check(&self, started: u64) -> u64 {
        started + self.after_ms
    }

    /// A body whose head came at `started`, of which `received` bytes
    /// came by `now`.
    pub fn pace(&self, started: u64, received: u64, now: u64) -> Pace {
        let elapsed = now.saturating_sub(started);
        if elapsed < self.after_ms {
            return Pace::CheckAt(started + self.after_ms);
        }
        if (received as u128) * 1000 < (self.bytes_per_s as u128) * (elapsed as u128) {
            return Pace::TooSlow;
        }
        // The elapsed time at which `received` bytes are just enough.
        let enough_until = u64::try_from(received as u128 * 1000 / self.bytes_per_s as u128).unwrap_or(u64::MAX);
        Pace::CheckAt(started.saturating_add(enough_until).max(now + FLOOR_CHECK_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u32 = 1024;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_endpoint_or_an_address_holds_a_quarter_and_others_still_fit() {
        // 4 MiB, bodies up to 512 KiB: a share is 1 MiB.
        let mut b = Budget::new(4096 * 1024, 512 * 1024);
        assert_eq!(b.share(), 1024 * 1024);
        // One endpoint, many addresses: two bodies of 512 KiB, then refused.
        assert_eq!(b.take(1, 512 * KIB, Some(7), ip("10.0.0.1")), Ok(()));
        assert_eq!(b.take(2, 512 * KIB, Some(7), ip("10.0.0.2")), Ok(()));
        assert_eq!(b.take(3, 1, Some(7), ip("10.0.0.3")), Err(Busy::Endpoint));
        // One address, another endpoint and the API: its own quarter.
        assert_eq!(b.take(4, 512 * KIB, Some(8), ip("10.0.0.9")), Ok(()));
        assert_eq!(b.take(5, 512 * KIB, None, ip("10.0.0.9")), Ok(()));
        assert_eq!(b.take(6, 60 * KIB, Some(9), ip("10.0.0.9")), Err(Busy::Client));
        // Anyone else's 60 KB delivery fits.
        assert_eq!(b.take(7, 60 * KIB, Some(9), ip("192.0.2.1")), Ok(()));
        // A refusal holds nothing; a release gives back to all three.
        b.release(3);
        b.release(1);
        assert_eq!(b.take(8, 512 * KIB, Some(7), ip("10.0.0.4")), Ok(()));
        for conn in [2, 4, 5, 7, 8, 8] {
            b.release(conn);
        }
        assert!(b.is_empty(), "{b:?}");
    }

    #[test]
    fn the_whole_budget_first_and_one_largest_body_always_fits() {
        // Budget below the largest body: it is one largest body, and so is a share.
        let mut b = Budget::new(1000, 4000);
        assert_eq!(b.share(), 4000);
        assert_eq!(b.take(1, 4000, Some(1), ip("10.0.0.1")), Ok(()));
        assert_eq!(b.take(2, 1, Some(2), ip("10.0.0.2")), Err(Busy::Full));
        b.release(1);
        // Full before a share: the whole budget is what today's flag says.
        let mut b = Budget::new(1000, 800);
        assert_eq!(b.take(1, 800, None, ip("10.0.0.1")), Ok(()));
        assert_eq!(b.take(2, 300, None, ip("10.0.0.1")), Err(Busy::Full));
        assert_eq!(b.take(3, 3, None, ip("10.0.0.1")), Err(Busy::Client));
        assert_eq!(b.take(4, 3, None, ip("10.0.0.2")), Ok(()));
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_one_as_ipv4() {
        let c = |s| client_key(ip(s));
        assert_eq!(c("2001:db8:1:2::1"), c("2001:db8:1:2:ffff::7"));
        assert_ne!(c("2001:db8:1:2::1"), c("2001:db8:1:3::1"));
        assert_eq!(c("::ffff:10.0.0.1"), c("10.0.0.1"));
        assert_ne!(c("10.0.0.1"), c("10.0.0.2"));
        assert_eq!(c("10.0.0.1"), c("2002:a00:1::9"), "its 6to4 addresses");
        assert_ne!(c("10.0.0.1"), c("::10.0.0.1"));
        assert_ne!(c("0.0.0.0"), c("::1"));
    }

    #[test]
    fn a_body_below_the_floor_after_its_first_seconds_is_too_slow() {
        let f = Floor::default();
        assert_eq!((f.after_ms, f.bytes_per_s), (5_000, 1024));
        assert_eq!(f.first_check(100), 5_100);
        // Nothing is asked in the first 5 s.
        assert_eq!(f.pace(100, 0, 4_000), Pace::CheckAt(5_100));
        // At 5 s: 5 KiB needed.
        assert_eq!(f.pace(0, 5 * 1024 - 1, 5_000), Pace::TooSlow);
        assert_eq!(f.pace(0, 5 * 1024, 5_000), Pace::CheckAt(6_000));
        // Well ahead: checked when what came would be too little.
        assert_eq!(f.pace(0, 60 * 1024, 5_000), Pace::CheckAt(60_000));
        assert_eq!(f.pace(0, 60 * 1024, 59_999), Pace::CheckAt(60_999));
        assert_eq!(f.pace(0, 60 * 1024, 60_001), Pace::TooSlow);
        // A byte now and then is too slow.
        assert_eq!(f.pace(0, 40, 5_000), Pace::TooSlow);
    }

    #[test]
    fn the_floor_from_the_hidden_variable() {
        assert_eq!(Floor::parse(Some("200:4096")), Some(Floor { after_ms: 200, bytes_per_s: 4096 }));
        for bad in [None, Some(""), Some("200"), Some("x:1"), Some("200:0"), Some("200:-1")] {
            assert_eq!(Floor::parse(bad), None, "{bad:?}");
        }
    }
}
