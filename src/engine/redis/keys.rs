//! The engine's key names in Redis, all under one prefix (`ssehub:`), and
//! which partition stream a source's records go to (`partition_of`).
//!
//! `src:<id>` a hash per source (account, name, endpoint, created, last
//! id, evicted id: more fields are more hash fields), `sources` the set of
//! ids, `names` the account+name index that keeps names unique across
//! nodes, `h:<id>` the source's history stream (at least `--history` + 1
//! entries, `p` the payload and `v` the id before: of the newest
//! `--history` + 1, the oldest is the newest evicted), `p:<n>` the live
//! partition streams, `partitions` the partition count the first node
//! chose, `epoch` Redis's data generation (a change means it lost data),
//! `default_key` a generated key, `probe` what the engine writes to learn
//! whether Redis takes changes again after refusing them.

use crate::text::push_u64;

/// Key names under the prefix.
pub struct KeyNames {
    prefix: String,
    /// The partition count the first node chose.
    pub partitions: String,
    /// A generated API key.
    pub default_key: String,
    /// The set of source ids.
    pub sources: String,
    /// The account+name index that keeps names unique across nodes.
    pub names: String,
    /// Redis's data generation (a change means it lost data).
    pub epoch: String,
    /// Written by the probe while Redis refuses changes.
    pub probe: String,
}

impl KeyNames {
    pub fn new(prefix: &str) -> KeyNames {
        KeyNames {
            prefix: prefix.to_string(),
            partitions: join(prefix, "partitions", ""),
            default_key: join(prefix, "default_key", ""),
            sources: join(prefix, "sources", ""),
            names: join(prefix, "names", ""),
            epoch: join(prefix, "epoch", ""),
            probe: join(prefix, "probe", ""),
        }
    }

    /// A source's hash.
    pub fn source(&self, id: &str) -> String {
        join(&self.prefix, "src:", id)
    }

    /// A source's history stream.
    pub fn history(&self, id: &str) -> String {
        join(&self.prefix, "h:", id)
    }

    /// A source's idempotency keys: key hash → `<body hash> <event id>`.
    pub fn idem(&self, id: &str) -> String {
        join(&self.prefix, "i:", id)
    }

    /// The order of a source's idempotency keys, oldest first.
    pub fn idem_order(&self, id: &str) -> String {
        join(&self.prefix, "io:", id)
    }

    /// Partition `n`'s stream.
    pub fn partition(&self, n: u32) -> String {
        let mut digits = Vec::new();
        push_u64(&mut digits, u64::from(n));
        join(&self.prefix, "p:", std::str::from_utf8(&digits).unwrap_or("0"))
    }
}

fn join(a: &str, b: &str, c: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len() + c.len());
    s.push_str(a);
    s.push_str(b);
    s.push_str(c);
    s
}

/// The partition of a source: FNV-1a of its id.
pub fn partition_of(id: &str, partitions: u32) -> u32 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (h % u64::from(partitions.max(1))) as u32
}
