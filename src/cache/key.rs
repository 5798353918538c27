//! Cache keys: everything that can change a result, as one byte string.
//!
//! Each part is written as a tag byte, a 4-byte length and the bytes, so the encoding can be
//! read back into its parts unambiguously: two different sequences of parts never give the
//! same bytes, however their values are split ("ab" + "c" is not "a" + "bc"). Keys compare
//! by all their bytes; a hash only picks the bucket.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use super::Database;

/// What each part of a key is; a part's tag keeps, for example, a setting's value apart
/// from a parameter with the same bytes.
#[repr(u8)]
#[derive(Clone, Copy)]
enum Part {
    Database = 1,
    Role = 2,
    SettingName = 3,
    SettingValue = 4,
    Shape = 5,
    Sql = 6,
    Param = 7,
    NullParam = 8,
    ParamFormats = 9,
    ResultFormats = 10,
}

/// The complete key material of one cached result. Equal keys are equal byte strings.
#[derive(Clone)]
pub struct Key {
    bytes: Arc<[u8]>,
    /// The bytes' hash, computed once: a request's key goes through several maps (the
    /// cache, its key locks, the fills in flight). Keyed per process, as the maps' own
    /// hashers are, so clients cannot choose colliding texts.
    hash: u64,
    /// The database the first part names; carried along so a lookup needs no map.
    db: Database,
}

impl Key {
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The keyed hash of the bytes.
    pub(super) fn hash(&self) -> u64 {
        self.hash
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.hash == other.hash && self.bytes == other.bytes
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl std::fmt::Debug for Key {
    /// Parameter values may be secrets: only the size shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("database", &self.db.name())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Builds a [`Key`]. The caller adds the parts that apply, always in the same order: the
/// session settings (in a fixed order, e.g. sorted by name), the request's shape, the SQL
/// text, the parameters and their formats, the result formats.
pub struct KeyBuilder {
    bytes: Vec<u8>,
    db: Database,
}

impl KeyBuilder {
    /// `role` is the role the query runs as on the server (after SET ROLE, if any): rows
    /// one role may see never reach another.
    pub fn new(db: &Database, role: &str) -> KeyBuilder {
        let mut builder = KeyBuilder {
            // Room for the settings, text and parameters of most requests without regrowing;
            // the key keeps an exact copy.
            bytes: Vec::with_capacity(512),
            db: db.clone(),
        };
        builder.part(Part::Database, db.name().as_bytes());
        builder.part(Part::Role, role.as_bytes());
        builder
    }

    fn part(&mut self, part: Part, value: &[u8]) -> &mut KeyBuilder {
        self.bytes.push(part as u8);
        // Protocol messages are below 1 GB, so every value's length fits.
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    /// A session setting that affects results (search_path, TimeZone, DateStyle, ...).
    pub fn setting(&mut self, name: &str, value: &str) -> &mut KeyBuilder {
        self.part(Part::SettingName, name.as_bytes());
        self.part(Part::SettingValue, value.as_bytes())
    }

    /// Which messages the request consisted of (e.g. `b"Q"`, or `b"PBDES"` for Parse, Bind,
    /// Describe, Execute, Sync): the cached frames answer exactly that sequence.
    pub fn shape(&mut self, shape: &[u8]) -> &mut KeyBuilder {
        self.part(Part::Shape, shape)
    }

    pub fn sql(&mut self, text: &str) -> &mut KeyBuilder {
        self.part(Part::Sql, text.as_bytes())
    }

    /// One Bind parameter value; None is NULL (distinct from an empty value).
    pub fn param(&mut self, value: Option<&[u8]>) -> &mut KeyBuilder {
        match value {
            Some(value) => self.part(Part::Param, value),
            None => self.part(Part::NullParam, &[]),
        }
    }

    /// Format codes as the Bind message has them: big-endian 16-bit values.
    pub fn param_formats(&mut self, formats: &[u8]) -> &mut KeyBuilder {
        self.part(Part::ParamFormats, formats)
    }

    pub fn result_formats(&mut self, formats: &[u8]) -> &mut KeyBuilder {
        self.part(Part::ResultFormats, formats)
    }

    pub fn finish(self) -> Key {
        static SEED: std::sync::LazyLock<std::hash::RandomState> =
            std::sync::LazyLock::new(std::hash::RandomState::new);
        Key {
            hash: SEED.hash_one(&self.bytes[..]),
            bytes: self.bytes.into(),
            db: self.db,
        }
    }
}
