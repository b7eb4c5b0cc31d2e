//! [`RedisStore`]: the swarms in Redis (`--store redis://HOST:PORT`),
//! shared by every tracker instance that uses it.
//!
//! # Redis layout (Redis Cluster compatible)
//! Every key of a torrent carries the torrent's hex info-hash as a hash
//! tag, so all of them live in one hash slot: `ot:{HEX}:peers` (hash: peer
//! → `1` seeder / `0` leecher), `ot:{HEX}:seen` (sorted set: peer →
//! last-seen ms, for expiry; Redis 7.0 has no per-field `HEXPIRE`),
//! `ot:{HEX}:seeders` (counter) and `ot:{HEX}:completed` (counter, kept
//! for good). A peer is its compact address: 4 or 16 address bytes and 2
//! port bytes (BEP 23 / BEP 7 order).
//!
//! # One round trip per announce
//! One server-side Lua script ([`ANNOUNCE_LUA`], run by `EVALSHA`, loaded
//! again after a Redis restart) expires up to [`EXPIRE_PER_ANNOUNCE`]
//! stale peers of the torrent, applies the announce, refreshes the keys'
//! time to live (a forgotten torrent's peers vanish by themselves), and
//! returns the counts and a random subset of peers (`HRANDFIELD`). A
//! scrape is one pipeline per info-hash.
//!
//! # Outages
//! Each front (UDP worker, HTTP) has its own connection with
//! [`IO_TIMEOUT`]. When Redis does not answer, the request gets
//! [`StoreError::Unavailable`] (the shell answers with a BEP 15 / BEP 3
//! error and counts it), the connection is dropped and a new one is tried
//! at most every [`RETRY_AFTER`]; losing and regaining Redis are logged
//! once each. Nothing panics; connects (stateless) keep being answered.
//!
//! # Counts for `/stats` and `/metrics` (approximate, no `SCAN`)
//! The announce script also says whether the announce is the first of the
//! peer, and of any peer of the torrent, in the current counting window
//! (interval + grace long, so every live peer announces in each); fronts
//! tally these and add them to `ot:stats:{WINDOW}` once a second
//! ([`RedisStore::flush_counts`]), and the counts are the larger of the
//! last complete window and the current one ([`RedisStore::totals`]).
//!
//! # Shared connection ids (BEP 15)
//! Instances on one Redis share the connection-id secrets, so a client that
//! connected through one instance may announce through another: the hash
//! [`SECRETS_KEY`] (`current`, `previous`, `rotated_at` ms) is created once
//! and rotated by [`SECRETS_LUA`], which every instance runs each
//! [`SECRET_SYNC`] ([`RedisStore::sync_secrets`]); the first instance to
//! run it after the rotation period rotates, the others adopt the result.
//! Limit: for up to one [`SECRET_SYNC`] after a rotation (and by the
//! instances' clock skew), an id issued with the new secret by one
//! instance can be refused by another that has not synced yet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::udp::server::SECRET_LEN;
use ourtorrent_core::tracker::AnnounceEvent;

use super::{StoreError, SwarmStore};
use crate::tracker::db::Secrets;
use crate::tracker::swarm::{Announce, Counts};

/// Stale peers one announce removes from its torrent at most.
pub const EXPIRE_PER_ANNOUNCE: usize = 64;
/// Read, write and connect timeout of a Redis connection.
pub const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// Least time between two connection attempts of one front.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The key of the shared connection-id secrets (not torrent data, so in
/// a slot of its own).
pub const SECRETS_KEY: &str = "ot:udp_secrets";

/// How often each instance runs [`SECRETS_LUA`] (and so the longest an
/// instance lags behind a rotation made by another).
pub const SECRET_SYNC: Duration = Duration::from_secs(1);

/// The secrets script. KEYS: [`SECRETS_KEY`]. ARGV: now (ms), a fresh
/// secret, rotation period (ms). Creates the secrets when missing or
/// malformed, rotates them when the period is over, and returns
/// {current, previous or nil, rotated_at}.
pub const SECRETS_LUA: &str = r#"
local k, now, period = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[3])
local h = redis.call('HMGET', k, 'current', 'previous', 'rotated_at')
local at = tonumber(h[3])
if not h[1] or not at or string.len(h[1]) ~= string.len(ARGV[2]) then
  redis.call('DEL', k)
  redis.call('HSET', k, 'current', ARGV[2], 'rotated_at', ARGV[1])
  return {ARGV[2], false, ARGV[1]}
end
if now - at >= period then
  redis.call('HSET', k, 'current', ARGV[2], 'previous', h[1], 'rotated_at', ARGV[1])
  return {ARGV[2], h[1], ARGV[1]}
end
return {h[1], h[2], h[3]}
"#;

/// The announce script. KEYS: peers, seen, seeders, completed. ARGV: peer,
/// now (ms), cutoff (ms), event (0 none, 1 completed, 2 started, 3
/// stopped), seeder (`1`/`0`), want, time to live (ms), most peers, most
/// stale peers to expire, start of the counting window (ms).
/// Returns {seeders, peers, completed, {peer...}, new peer, new torrent,
/// new seeder}, the last three `1` when this announce is the first of the
/// peer (of any peer of the torrent) in the counting window (see
/// [`RedisStore::totals`]).
pub const ANNOUNCE_LUA: &str = r#"
local peers, seen, nseed, ncomp = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local peer, now = ARGV[1], ARGV[2]
local event, seeder, want = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local ttl, maxp = tonumber(ARGV[7]), tonumber(ARGV[8])
local old = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. ARGV[3], 'LIMIT', 0, tonumber(ARGV[9]))
for _, p in ipairs(old) do
  if redis.call('HGET', peers, p) == '1' then redis.call('DECR', nseed) end
  redis.call('HDEL', peers, p)
  redis.call('ZREM', seen, p)
end
local was = redis.call('HGET', peers, peer)
local wstart = tonumber(ARGV[10])
local top = redis.call('ZREVRANGE', seen, 0, 0, 'WITHSCORES')
local tnew = (not top[2] or tonumber(top[2]) < wstart) and 1 or 0
local last = redis.call('ZSCORE', seen, peer)
local pnew = (not last or tonumber(last) < wstart) and 1 or 0
local added = 0
if event == 3 then
  if was then
    if was == '1' then redis.call('DECR', nseed) end
    redis.call('HDEL', peers, peer)
    redis.call('ZREM', seen, peer)
  end
else
  if event == 1 then redis.call('INCR', ncomp) end
  if was or redis.call('HLEN', peers) < maxp then
    if was ~= seeder then
      if was == '1' then redis.call('DECR', nseed) end
      if seeder == '1' then redis.call('INCR', nseed) end
      redis.call('HSET', peers, peer, seeder)
    end
    redis.call('ZADD', seen, now, peer)
    added = 1
  end
end
local n = redis.call('HLEN', peers)
local s = tonumber(redis.call('GET', nseed) or '0')
local c = tonumber(redis.call('GET', ncomp) or '0')
local sample = {}
if want > 0 and n > 0 then sample = redis.call('HRANDFIELD', peers, want + 1) end
if n > 0 then
  redis.call('PEXPIRE', peers, ttl)
  redis.call('PEXPIRE', seen, ttl)
  redis.call('PEXPIRE', nseed, ttl)
else
  redis.call('DEL', peers, seen, nseed)
end
local snew = 0
if seeder == '1' then snew = pnew * added end
return {s, n, c, sample, pnew * added, tnew * added, snew}
"#;

/// The compact form of a peer address (4 or 16 address bytes, 2 port).
pub fn compact(a: &SocketAddr) -> Vec<u8> {
    let mut v = match a.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    v.extend_from_slice(&a.port().to_be_bytes());
    v
}

/// A peer address from its compact form (6 or 18 bytes), if well formed.
pub fn from_compact(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip: [u8; 4] = b.get(..4)?.try_into().ok()?;
            let port: [u8; 2] = b.get(4..)?.try_into().ok()?;
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                u16::from_be_bytes(port),
            ))
        }
        18 => {
            let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
            let port: [u8; 2] = b.get(16..)?.try_into().ok()?;
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(ip)),
                u16::from_be_bytes(port),
            ))
        }
        _ => None,
    }
}

/// The keys of torrent `ih`, all in one Redis Cluster hash slot.
pub fn keys(ih: &InfoHash) -> [String; 4] {
    let mut hex = String::with_capacity(40);
    for b in ih.as_bytes() {
        hex.push_str(&format!("{b:02x}"));
    }
    ["peers", "seen", "seeders", "completed"].map(|k| format!("ot:{{{hex}}}:{k}"))
}

/// Firsts in counting windows not yet added to Redis (one front's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    window: u64,
    /// New torrents, peers, seeders.
    counts: [u64; 3],
}

/// A front's tallies: the current window's and the one before (until the
/// next flush).
#[derive(Debug, Default)]
struct Tallies {
    cur: Tally,
    old: Tally,
}

/// The key of counting window `w`'s figures (a hash: `torrents`, `peers`,
/// `seeders`).
pub fn stats_key(w: u64) -> String {
    format!("ot:stats:{w}")
}

struct Conn {
    con: Option<redis::Connection>,
    retry_at: Option<Instant>,
}

/// Swarms in Redis, shared by every tracker instance that uses it.
pub struct RedisStore {
    client: redis::Client,
    conns: Vec<Mutex<Conn>>,
    script: redis::Script,
    secrets: redis::Script,
    tallies: Vec<Mutex<Tallies>>,
    totals: Mutex<Option<[u64; 3]>>,
    expiry_ms: u64,
    max_peers: usize,
    /// True while Redis answers (for logging transitions once).
    up: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("fronts", &self.conns.len())
            .field("expiry_ms", &self.expiry_ms)
            .finish()
    }
}

impl RedisStore {
    /// A store at `url` (`redis://HOST:PORT`) for `fronts` fronts; peers
    /// silent for `expiry_ms` expire; at most `max_peers` a torrent. No
    /// connection is made yet (a Redis that is down at start is retried).
    pub fn new(url: &str, fronts: usize, expiry_ms: u64, max_peers: usize) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("--store {url}: {e}"))?;
        Ok(RedisStore {
            client,
            conns: (0..fronts.max(1))
                .map(|_| {
                    Mutex::new(Conn {
                        con: None,
                        retry_at: None,
                    })
                })
                .collect(),
            script: redis::Script::new(ANNOUNCE_LUA),
            secrets: redis::Script::new(SECRETS_LUA),
            tallies: (0..fronts.max(1)).map(|_| Mutex::default()).collect(),
            totals: Mutex::new(None),
            expiry_ms,
            max_peers,
            up: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Runs `f` on front `front`'s connection, connecting first if needed
    /// (at most every [`RETRY_AFTER`]); an error drops the connection.
    fn with_conn<T>(
        &self,
        front: usize,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let m = self.conns.get(front).or(self.conns.last());
        let Some(m) = m else {
            return Err(StoreError::Unavailable);
        };
        let mut c = m.lock().unwrap_or_else(|e| e.into_inner());
        if c.con.is_none() {
            if c.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(StoreError::Unavailable);
            }
            match self.connect() {
                Ok(con) => c.con = Some(con),
                Err(e) => {
                    c.retry_at = Some(Instant::now() + RETRY_AFTER);
                    self.down(&e);
                    return Err(StoreError::Unavailable);
                }
            }
        }
        let Some(con) = c.con.as_mut() else {
            return Err(StoreError::Unavailable);
        };
        match f(con) {
            Ok(v) => {
                if !self.up.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!("redis store reachable again");
                }
                Ok(v)
            }
            Err(e) => {
                c.con = None;
                c.retry_at = Some(Instant::now() + RETRY_AFTER);
                self.down(&e);
                Err(StoreError::Unavailable)
            }
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let con = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    fn down(&self, e: &redis::RedisError) {
        if self.up.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("redis store unavailable: {e}");
        } else {
            tracing::debug!("redis store still unavailable: {e}");
        }
    }

    /// The shared connection-id secrets at `now_ms`, created from `fresh`
    /// when Redis has none, rotated to `fresh` when `period_ms` has passed
    /// since the last rotation (see the module docs). Runs on the last
    /// front's connection (the HTTP/timer thread's).
    pub fn sync_secrets(
        &self,
        now_ms: u64,
        fresh: &[u8; SECRET_LEN],
        period_ms: u64,
    ) -> Result<Secrets, StoreError> {
        let front = self.conns.len().saturating_sub(1);
        let v: redis::Value = self.with_conn(front, |c| {
            self.secrets
                .key(SECRETS_KEY)
                .arg(now_ms)
                .arg(&fresh[..])
                .arg(period_ms)
                .invoke(c)
        })?;
        parse_secrets(&v).ok_or(StoreError::Unavailable)
    }

    /// The counting window at `now_ms` (windows are `expiry_ms` long: a
    /// live peer announces at least once in each).
    fn window(&self, now_ms: u64) -> u64 {
        now_ms / self.expiry_ms.max(1)
    }

    /// Adds the fronts' tallies to Redis (`HINCRBY` on [`stats_key`], kept
    /// three windows) and reads the totals back (see [`Self::totals`]).
    /// Tallies that fail to reach Redis are lost (the figures are an
    /// approximation anyway). Runs on the last front's connection.
    pub fn flush_counts(&self, now_ms: u64) -> Result<(), StoreError> {
        let mut add: Vec<Tally> = Vec::new();
        for t in &self.tallies {
            let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
            let Tallies { cur, old } = std::mem::take(&mut *t);
            add.extend([old, cur].into_iter().filter(|t| t.counts != [0; 3]));
        }
        let w = self.window(now_ms);
        let ttl_ms = self.expiry_ms.max(1).saturating_mul(3);
        let front = self.conns.len().saturating_sub(1);
        let (prev, cur): ([Option<u64>; 3], [Option<u64>; 3]) = self.with_conn(front, |c| {
            let mut p = redis::pipe();
            for t in &add {
                let k = stats_key(t.window);
                for (f, n) in ["torrents", "peers", "seeders"].iter().zip(t.counts) {
                    if n > 0 {
                        p.cmd("HINCRBY").arg(&k).arg(*f).arg(n).ignore();
                    }
                }
                p.cmd("PEXPIRE").arg(&k).arg(ttl_ms).ignore();
            }
            for k in [stats_key(w.saturating_sub(1)), stats_key(w)] {
                p.cmd("HMGET")
                    .arg(k)
                    .arg("torrents")
                    .arg("peers")
                    .arg("seeders");
            }
            p.query(c)
        })?;
        let mut out = [0u64; 3];
        for (i, o) in out.iter_mut().enumerate() {
            let get = |a: &[Option<u64>; 3]| a.get(i).copied().flatten().unwrap_or(0);
            *o = get(&prev).max(get(&cur));
        }
        *self.totals.lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
        Ok(())
    }

    /// Torrents, peers and seeders as of the last [`Self::flush_counts`],
    /// none before the first. An approximation without `SCAN`: the
    /// torrents (peers) with an announce in the last complete counting
    /// window or the current one, whichever counted more; a peer counts as
    /// a seeder by its first announce in a window. Peers that stopped
    /// during the window still count; over-counts are bounded by one
    /// window's departures.
    pub fn totals(&self) -> Option<[u64; 3]> {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks that Redis answers (at start, to report a wrong address).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(0, |c| redis::cmd("PING").query::<String>(c).map(drop))
    }
}

/// The secrets in a [`SECRETS_LUA`] reply, if well formed.
fn parse_secrets(v: &redis::Value) -> Option<Secrets> {
    let redis::Value::Array(parts) = v else {
        return None;
    };
    let bytes = |v: Option<&redis::Value>| -> Option<[u8; SECRET_LEN]> {
        match v {
            Some(redis::Value::BulkString(b)) => b.as_slice().try_into().ok(),
            _ => None,
        }
    };
    let current = bytes(parts.first())?;
    let previous = bytes(parts.get(1));
    let rotated_at = match parts.get(2) {
        Some(redis::Value::BulkString(b)) => std::str::from_utf8(b).ok()?.parse().ok()?,
        Some(redis::Value::Int(n)) => u64::try_from(*n).ok()?,
        _ => return None,
    };
    Some(Secrets {
        current,
        previous,
        rotated_at,
    })
}

fn int(v: Option<&redis::Value>) -> u32 {
    match v {
        Some(redis::Value::Int(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

impl SwarmStore for RedisStore {
    fn announce(
        &self,
        front: usize,
        a: &Announce,
        now_ms: u64,
        want: usize,
        _start: usize,
        reply: &mut dyn FnMut(Counts, &mut dyn Iterator<Item = SocketAddr>),
    ) -> Result<(), StoreError> {
        let [peers, seen, nseed, ncomp] = keys(&a.info_hash);
        let me = compact(&a.addr);
        let event = match a.event {
            AnnounceEvent::None => 0,
            AnnounceEvent::Completed => 1,
            AnnounceEvent::Started => 2,
            AnnounceEvent::Stopped => 3,
        };
        let cutoff = now_ms.saturating_sub(self.expiry_ms);
        let w = self.window(now_ms);
        let v: redis::Value = self.with_conn(front, |c| {
            self.script
                .key(&peers)
                .key(&seen)
                .key(&nseed)
                .key(&ncomp)
                .arg(&me[..])
                .arg(now_ms)
                .arg(cutoff)
                .arg(event)
                .arg(if a.seeder { "1" } else { "0" })
                .arg(want)
                .arg(self.expiry_ms)
                .arg(self.max_peers)
                .arg(EXPIRE_PER_ANNOUNCE)
                .arg(w.saturating_mul(self.expiry_ms.max(1)))
                .invoke(c)
        })?;
        let redis::Value::Array(parts) = v else {
            return Err(StoreError::Unavailable);
        };
        let (seeders, n, completed) = (int(parts.first()), int(parts.get(1)), int(parts.get(2)));
        let counts = Counts {
            seeders,
            leechers: n.saturating_sub(seeders),
            completed,
        };
        let firsts = [int(parts.get(5)), int(parts.get(4)), int(parts.get(6))];
        if firsts != [0; 3] {
            if let Some(t) = self.tallies.get(front).or(self.tallies.last()) {
                let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
                if t.cur.window != w {
                    t.old = t.cur;
                    t.cur = Tally {
                        window: w,
                        counts: [0; 3],
                    };
                }
                for (c, n) in t.cur.counts.iter_mut().zip(firsts) {
                    *c += u64::from(n);
                }
            }
        }
        let sample: &[redis::Value] = match parts.get(3) {
            Some(redis::Value::Array(s)) => s,
            _ => &[],
        };
        let mut it = sample
            .iter()
            .filter_map(|v| match v {
                redis::Value::BulkString(b) => from_compact(b),
                _ => None,
            })
            .filter(|p| *p != a.addr)
            .take(want);
        reply(counts, &mut it);
        Ok(())
    }

    fn totals(&self) -> Option<[u64; 3]> {
        RedisStore::totals(self)
    }

    fn counts(&self, front: usize, ih: &InfoHash) -> Result<Counts, StoreError> {
        let [peers, _, nseed, ncomp] = keys(ih);
        let (n, s, c): (u32, Option<u32>, Option<u32>) = self.with_conn(front, |con| {
            redis::pipe()
                .cmd("HLEN")
                .arg(&peers)
                .cmd("GET")
                .arg(&nseed)
                .cmd("GET")
                .arg(&ncomp)
                .query(con)
        })?;
        let s = s.unwrap_or(0);
        Ok(Counts {
            seeders: s,
            leechers: n.saturating_sub(s),
            completed: c.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_round_trips_and_refuses_other_lengths() {
        for a in ["10.1.2.3:6881", "[2001:db8::7]:51413"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(from_compact(&compact(&a)), Some(a));
        }
        for n in [0, 5, 7, 17, 19] {
            assert_eq!(from_compact(&vec![1; n]), None, "{n} bytes");
        }
    }

    #[test]
    fn secrets_replies_parse_and_malformed_ones_are_refused() {
        use redis::Value::{Array, BulkString, Int, Nil};
        let key = |b: u8, n: usize| BulkString(vec![b; n]);
        let at = BulkString(b"1234".to_vec());
        let s = parse_secrets(&Array(vec![key(1, SECRET_LEN), Nil, at.clone()])).unwrap();
        assert_eq!(
            (s.current, s.previous, s.rotated_at),
            ([1; SECRET_LEN], None, 1234)
        );
        let s = parse_secrets(&Array(vec![key(1, SECRET_LEN), key(2, SECRET_LEN), Int(5)]));
        assert_eq!(s.map(|s| s.previous), Some(Some([2; SECRET_LEN])));
        // A secret one byte short or long, a bad time, a short reply: none.
        for bad in [
            vec![key(1, SECRET_LEN - 1), Nil, at.clone()],
            vec![key(1, SECRET_LEN + 1), Nil, at.clone()],
            vec![key(1, SECRET_LEN), Nil, BulkString(b"x".to_vec())],
            vec![key(1, SECRET_LEN), Nil, Int(-1)],
            vec![key(1, SECRET_LEN)],
        ] {
            assert_eq!(parse_secrets(&Array(bad)), None);
        }
        assert_eq!(parse_secrets(&Nil), None);
    }

    #[test]
    fn a_torrents_keys_share_one_hash_tag() {
        let k = keys(&InfoHash([0xab; 20]));
        let tag = format!("{{{}}}", "ab".repeat(20));
        assert!(k.iter().all(|k| k.contains(&tag)), "{k:?}");
        assert_eq!(k[0], format!("ot:{tag}:peers"));
    }
}
