//! Transparent column encryption: the keyring built from `[encryption]`, and per designated
//! column the ciphers that turn a value into an envelope (see `envelope`) and back.
//!
//! Randomized columns use AES-256-GCM with a random 96-bit nonce: equal values give different
//! envelopes. Deterministic columns use AES-256-SIV (RFC 5297) without a nonce: equal values
//! give equal envelopes, so `WHERE col = $1` works on the encrypted text, at the price of
//! showing which rows hold equal values. Keys are derived per column (`keys`), and
//! everything is built once per configuration: the calls here only encrypt, decrypt and
//! count.
//!
//! NULL is the caller's business: it stays NULL and is never passed in.

pub mod copy;
mod copy_binary;
mod envelope;
mod keys;
pub mod literal;
pub mod migrate;
mod plain;
pub mod plan;
pub mod rows;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::config::{valid_key_id, EncryptionConfig};
use crate::metrics;

pub use crate::config::WithoutDecrypt;
pub use envelope::{looks_like_envelope, parse as parse_envelope, Envelope, PREFIX};
pub use keys::{load_key, KeyError, MaterialProblem};

use keys::{column_identity, ColumnKey, MasterKey, OpenError};

/// How a designated column is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// AES-256-GCM, random nonce: nothing can be searched, nothing leaks.
    #[default]
    Randomized,
    /// AES-256-SIV: equal values encrypt equally, so equality search works.
    Deterministic,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Randomized => "randomized",
            Mode::Deterministic => "deterministic",
        }
    }
}

/// Why the keyring could not be built. Names key ids and columns, never key bytes.
#[derive(Debug, Error)]
pub enum CryptoError {
    #[error("encryption key {id:?}: {error}")]
    Key { id: String, error: KeyError },
    #[error("encryption key id {0:?} must be 1 to 32 of A-Z a-z 0-9 _ -")]
    BadKeyId(String),
    #[error("encryption key id {0:?} is used twice")]
    DuplicateKey(String),
    #[error("[[encryption.columns]] are configured but there is no [[encryption.keys]] entry")]
    NoKeys,
    #[error(
        "no encryption key is active: exactly one [[encryption.keys]] entry needs active = true"
    )]
    NoActiveKey,
    #[error("encryption keys {0:?} and {1:?} are both active: exactly one may be")]
    SeveralActiveKeys(String, String),
    #[error("[[encryption.columns]] {table:?} {column:?}: {message}")]
    Column {
        table: String,
        column: String,
        message: String,
    },
    #[error("encrypted column {0} is listed twice")]
    DuplicateColumn(String),
}

/// Why a stored value did not decrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecryptFailure {
    /// Not shaped like an envelope: plaintext written around pgward, or another format.
    NotEnvelope,
    /// An envelope header with a body that is not canonical base64url, or too short.
    Malformed,
    /// Written under a key id the configuration does not have.
    UnknownKey(String),
    /// The body, the header or the column does not match: tampered with, or copied over.
    Authentication,
}

impl std::fmt::Display for DecryptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecryptFailure::NotEnvelope => f.write_str("value is not a pgward ciphertext"),
            DecryptFailure::Malformed => {
                f.write_str("damaged ciphertext (truncated, or tampered with)")
            }
            DecryptFailure::UnknownKey(id) => write!(f, "written under unknown key {id:?}"),
            DecryptFailure::Authentication => {
                f.write_str("authentication failed (tampered with, or copied from another column)")
            }
        }
    }
}

/// A value of a designated column that did not decrypt. The message names the column and
/// the reason; it holds no part of the value and nothing of any key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot decrypt {column}: {failure}")]
pub struct DecryptError {
    column: String,
    failure: DecryptFailure,
}

impl DecryptError {
    /// `schema.table.column`
    pub fn column(&self) -> &str {
        &self.column
    }

    pub fn failure(&self) -> &DecryptFailure {
        &self.failure
    }
}

/// A designated column's place in the keyring that issued it: cheap to copy, compare and
/// store in a plan. Meaningful only with that `Crypto` (a plan keeps its `Arc` alongside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ColumnId(usize);

impl ColumnId {
    /// The column's position in configuration order (for tables indexed by column).
    pub fn index(self) -> usize {
        self.0
    }
}

/// Every designated column with its ciphers, built once per configuration and shared.
pub struct Crypto {
    /// In configuration order; `ColumnId` indexes it.
    columns: Vec<ColumnCipher>,
    /// Every (schema, table) with a designated column, once each, in configuration order.
    tables: Vec<(String, String)>,
    /// schema -> table -> column -> index into `columns`; looked up with `&str`, no allocation.
    index: HashMap<String, HashMap<String, HashMap<String, usize>>>,
    without_decrypt: WithoutDecrypt,
    active_key: String,
}

impl Crypto {
    /// The keyring for `cfg`: reads every key's material (relative `file:` paths against
    /// `base_dir`, the config file's folder) and derives every column's keys. None when no
    /// column is designated; then no key is read at all.
    pub fn from_config(
        cfg: &EncryptionConfig,
        base_dir: Option<&Path>,
    ) -> Result<Option<Arc<Crypto>>, CryptoError> {
        if cfg.columns.is_empty() {
            return Ok(None);
        }
        if cfg.keys.is_empty() {
            return Err(CryptoError::NoKeys);
        }
        let mut active: Option<&str> = None;
        for (i, key) in cfg.keys.iter().enumerate() {
            if !valid_key_id(&key.id) {
                return Err(CryptoError::BadKeyId(key.id.clone()));
            }
            if cfg.keys[..i].iter().any(|k| k.id == key.id) {
                return Err(CryptoError::DuplicateKey(key.id.clone()));
            }
            if key.active {
                if let Some(first) = active {
                    return Err(CryptoError::SeveralActiveKeys(first.into(), key.id.clone()));
                }
                active = Some(&key.id);
            }
        }
        let active = active.ok_or(CryptoError::NoActiveKey)?;

        let mut designated = Vec::with_capacity(cfg.columns.len());
        for c in &cfg.columns {
            let names = c.folded().map_err(|message| CryptoError::Column {
                table: c.table.clone(),
                column: c.column.clone(),
                message,
            })?;
            if designated.iter().any(|(seen, _)| *seen == names) {
                let (schema, table, column) = names;
                return Err(CryptoError::DuplicateColumn(format!(
                    "{schema}.{table}.{column}"
                )));
            }
            designated.push((names, c.mode));
        }

        // The active key first: it encrypts, and it is the first envelope searched for.
        let mut masters = Vec::with_capacity(cfg.keys.len());
        let ordered = cfg.keys.iter().filter(|k| k.active);
        for key in ordered.chain(cfg.keys.iter().filter(|k| !k.active)) {
            let material = load_key(&key.material, base_dir).map_err(|error| CryptoError::Key {
                id: key.id.clone(),
                error,
            })?;
            masters.push(MasterKey::new(key.id.clone(), &material));
        }
        let hkdfs: Vec<_> = masters.iter().map(MasterKey::hkdf).collect();
        let deterministic = designated
            .iter()
            .filter(|(_, mode)| *mode == Mode::Deterministic)
            .count();
        let per_column = cfg.decrypt_cache as usize / deterministic.max(1);

        let mut crypto = Crypto {
            columns: Vec::with_capacity(designated.len()),
            tables: Vec::new(),
            index: HashMap::new(),
            without_decrypt: cfg.without_decrypt,
            active_key: active.to_owned(),
        };
        for ((schema, table, column), mode) in designated {
            let identity = column_identity(&schema, &table, &column);
            if !crypto.table_has_columns(&schema, &table) {
                crypto.tables.push((schema.clone(), table.clone()));
            }
            let keys = masters
                .iter()
                .zip(&hkdfs)
                .map(|(master, hkdf)| ColumnKey::new(master, hkdf, &identity))
                .collect();
            crypto
                .index
                .entry(schema.clone())
                .or_default()
                .entry(table.clone())
                .or_default()
                .insert(column.clone(), crypto.columns.len());
            crypto.columns.push(ColumnCipher {
                name: format!("{schema}.{table}.{column}"),
                schema,
                table,
                column,
                mode,
                keys,
                // AES-GCM opens a value about as fast as a lookup among many cached ones
                // (memory latency); AES-SIV takes twice as long, and equal values share one
                // ciphertext, so only deterministic columns keep what they decrypted.
                recent: plain::PlainCache::new(if mode == Mode::Deterministic {
                    per_column
                } else {
                    0
                }),
            });
        }
        Ok(Some(Arc::new(crypto)))
    }

    /// The designated column of that name (names as PostgreSQL folds them), if it is one.
    pub fn column(&self, schema: &str, table: &str, column: &str) -> Option<&ColumnCipher> {
        self.id_of(schema, table, column).map(|id| self.by_id(id))
    }

    /// Like `column`, but the id, for plans that refer to the column later.
    pub fn id_of(&self, schema: &str, table: &str, column: &str) -> Option<ColumnId> {
        let i = *self.index.get(schema)?.get(table)?.get(column)?;
        Some(ColumnId(i))
    }

    /// The column `id` names. Panics for an id this keyring did not issue and cannot hold.
    pub fn by_id(&self, id: ColumnId) -> &ColumnCipher {
        &self.columns[id.0]
    }

    /// Every (schema, table) with a designated column, once each, in configuration order.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tables.iter().map(|(s, t)| (s.as_str(), t.as_str()))
    }

    /// Does the table have any designated column?
    pub fn table_has_columns(&self, schema: &str, table: &str) -> bool {
        self.index
            .get(schema)
            .is_some_and(|tables| tables.contains_key(table))
    }

    /// Every designated column, in configuration order.
    pub fn columns(&self) -> impl Iterator<Item = &ColumnCipher> {
        self.columns.iter()
    }

    pub fn without_decrypt(&self) -> WithoutDecrypt {
        self.without_decrypt
    }

    /// The id of the key new values are encrypted under.
    pub fn active_key_id(&self) -> &str {
        &self.active_key
    }
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("columns", &self.columns)
            .field("without_decrypt", &self.without_decrypt)
            .field("active_key", &self.active_key)
            .finish()
    }
}

/// One designated column: its names, its mode, and its ciphers under every configured key.
/// Shared by reference between threads: every method takes `&self`.
pub struct ColumnCipher {
    schema: String,
    table: String,
    column: String,
    /// `schema.table.column`
    name: String,
    mode: Mode,
    /// The active key first, then the others in configuration order.
    keys: Vec<ColumnKey>,
    /// Values this column decrypted recently (see [`plain::PlainCache`]).
    recent: plain::PlainCache,
}

impl ColumnCipher {
    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn column(&self) -> &str {
        &self.column
    }

    /// `schema.table.column`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The envelope of `plaintext` under the active key, in the column's mode (ASCII text).
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        metrics::crypto_encrypted(1);
        self.keys[0].seal(self.mode, plaintext)
    }

    /// For equality search on a deterministic column: the envelope of `plaintext` under every
    /// configured key, the active key's first, so rows not yet rotated still match
    /// (`col IN (...)`). A randomized column has no searchable envelope: the result is empty,
    /// and the caller should refuse the comparison (0A000) rather than send an empty list.
    pub fn search_envelopes(&self, plaintext: &[u8]) -> Vec<String> {
        if self.mode != Mode::Deterministic {
            return Vec::new();
        }
        metrics::crypto_encrypted(self.keys.len() as u64);
        self.keys
            .iter()
            .map(|key| key.seal(Mode::Deterministic, plaintext))
            .collect()
    }

    /// The plaintext of a stored envelope, under whichever configured key it names. Values
    /// written in the other mode (before the column's mode changed) decrypt too.
    ///
    /// A plain `Vec`: the plaintext is on its way into protocol buffers that are not wiped
    /// either, so wiping this copy would buy nothing.
    pub fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if let Some(plain) = self.recent.get(stored) {
            metrics::crypto_decrypted(true);
            return Ok(plain);
        }
        let result = self.open(stored);
        if let Ok(plain) = &result {
            self.recent.put(stored, plain);
        }
        metrics::crypto_decrypted(result.is_ok());
        result.map_err(|failure| DecryptError {
            column: self.name.clone(),
            failure,
        })
    }

    /// As [`ColumnCipher::decrypt`], appending the plaintext to `out` (no allocation when
    /// the value was decrypted recently).
    pub fn decrypt_into(
        &self,
        stored: &[u8],
        out: &mut bytes::BytesMut,
    ) -> Result<(), DecryptError> {
        if self.recent.get_into(stored, out) {
            metrics::crypto_decrypted(true);
            return Ok(());
        }
        let plain = self.decrypt(stored)?;
        out.extend_from_slice(&plain);
        Ok(())
    }

    /// Decrypts `stored` if it is this column's ciphertext; a failure is not counted (for
    /// trying the candidate columns of a value whose column is not known).
    pub fn try_decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, DecryptFailure> {
        let plain = self.open(stored)?;
        metrics::crypto_decrypted(true);
        Ok(plain)
    }

    fn open(&self, stored: &[u8]) -> Result<Vec<u8>, DecryptFailure> {
        let envelope = envelope::parse(stored).ok_or(DecryptFailure::NotEnvelope)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == envelope.key_id)
            .ok_or_else(|| DecryptFailure::UnknownKey(envelope.key_id.to_owned()))?;
        key.open(envelope.mode, envelope.body).map_err(|e| match e {
            OpenError::Malformed => DecryptFailure::Malformed,
            OpenError::Authentication => DecryptFailure::Authentication,
        })
    }

    /// The id of the key `stored` was written under; None when it is not an envelope. For
    /// `pgward rotate`: rows whose id is not the active one need re-encrypting.
    pub fn envelope_key_id(stored: &[u8]) -> Option<&str> {
        envelope::parse(stored).map(|e| e.key_id)
    }

    /// The ids of the keys this column decrypts with, the active one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }
}

impl std::fmt::Debug for ColumnCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnCipher")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("keys", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests;
