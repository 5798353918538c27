//! Recently decrypted values of one column, so rows read again and again (a hot result) are
//! not decrypted again. Keyed by the whole stored envelope, which includes its nonce and
//! tag: a given envelope always opens to the same plaintext under its column. Each column has
//! its own cache, so a value copied to another column is never served from here: it still
//! fails to authenticate there.
//!
//! Bounded in bytes; a shard that fills up is emptied whole (cheaper than tracking recency,
//! and a hot set is back after one read). Plaintexts are zeroized when dropped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use zeroize::Zeroizing;

/// Shards: lookups from many sessions rarely wait on one another.
const SHARDS: usize = 16;
/// What an entry costs beyond its key and value bytes (map slot, allocations), an estimate.
const ENTRY_OVERHEAD: usize = 64;

pub(super) struct PlainCache {
    shards: Vec<Mutex<Shard>>,
    /// Bytes each shard may hold; 0 turns the cache off.
    shard_budget: usize,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Zeroizing<Vec<u8>>, BuildHasherDefault<TailHasher>>,
    bytes: usize,
}

/// Hashes a key by its last bytes: the end of an envelope is its AEAD output (ciphertext and
/// tag, or the SIV), uniformly random already, so mixing it through SipHash would only cost
/// time. Keys are pgward's own stored values, not chosen to collide (and a collision only
/// costs a comparison).
#[derive(Default)]
struct TailHasher(u64);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = &bytes[bytes.len().saturating_sub(8)..];
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

impl PlainCache {
    pub(super) fn new(budget: usize) -> PlainCache {
        let shard_budget = budget / SHARDS;
        let shards = if shard_budget == 0 { 0 } else { SHARDS };
        PlainCache {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            shard_budget,
        }
    }

    /// The shard of an envelope: its last byte is ciphertext (base64 of the AEAD output),
    /// as good as a hash and free.
    fn shard(&self, stored: &[u8]) -> Option<&Mutex<Shard>> {
        if self.shards.is_empty() {
            return None;
        }
        let last = *stored.last()? as usize;
        self.shards.get(last % SHARDS)
    }

    pub(super) fn get(&self, stored: &[u8]) -> Option<Vec<u8>> {
        let shard = self.shard(stored)?.lock().ok()?;
        shard.map.get(stored).map(|plain| plain.to_vec())
    }

    /// Appends the plaintext of `stored` to `out`, if it is here.
    pub(super) fn get_into(&self, stored: &[u8], out: &mut bytes::BytesMut) -> bool {
        let Some(Ok(shard)) = self.shard(stored).map(Mutex::lock) else {
            return false;
        };
        match shard.map.get(stored) {
            Some(plain) => {
                out.extend_from_slice(plain);
                true
            }
            None => false,
        }
    }

    pub(super) fn put(&self, stored: &[u8], plain: &[u8]) {
        let Some(shard) = self.shard(stored) else {
            return;
        };
        let Ok(mut shard) = shard.lock() else {
            return;
        };
        let cost = stored.len() + plain.len() + ENTRY_OVERHEAD;
        if cost > self.shard_budget {
            return;
        }
        if shard.bytes + cost > self.shard_budget {
            shard.map.clear();
            shard.bytes = 0;
        }
        if shard
            .map
            .insert(stored.into(), Zeroizing::new(plain.to_vec()))
            .is_none()
        {
            shard.bytes += cost;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_and_the_budget_holds() {
        let cache = PlainCache::new(16 * 1024);
        cache.put(b"pgw1:k:r:abc", b"plain");
        assert_eq!(cache.get(b"pgw1:k:r:abc").as_deref(), Some(&b"plain"[..]));
        assert_eq!(cache.get(b"pgw1:k:r:abd"), None);
        for i in 0..10_000u32 {
            cache.put(format!("pgw1:k:r:{i}").as_bytes(), b"0123456789");
        }
        for shard in &cache.shards {
            assert!(shard.lock().unwrap().bytes <= cache.shard_budget);
        }
        let off = PlainCache::new(0);
        off.put(b"x", b"y");
        assert_eq!(off.get(b"x"), None);
    }
}
