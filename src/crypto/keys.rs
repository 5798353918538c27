//! Master keys (read from the environment or a file), the per-column keys derived from them,
//! and the two ciphers: AES-256-GCM for randomized columns, AES-256-SIV for deterministic ones.
//!
//! Each (column, master key) pair gets its own keys by HKDF-SHA256 (salt `pgward column key
//! v1`, info naming the cipher and the column), so a value copied to another column cannot
//! be decrypted there, and the random GCM nonces of one column never meet another's.
//! Associated data is the envelope header followed by the column's identity, which binds the
//! key id and mode as well as the column.
//!
//! Wiping: master keys live only while the keyring is built and are wiped when it is done;
//! derived keys are held in `Zeroizing` buffers or inside the ciphers, whose AES key
//! schedules (crate `aes`), CMAC state (`cmac`) and SIV encryption key (`aes-siv`) are wiped
//! on drop. Not wiped, for want of support in the crates: GHASH's key inside `Aes256Gcm`
//! (polyval 0.6 drops its CPU-specific backend without zeroizing it) and HKDF's HMAC state
//! (hmac 0.12, sha2 0.10), which only lives while the keyring is built.

use std::path::Path;
use std::sync::Mutex;

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use aes_siv::siv::Aes256Siv;
use base64::Engine;
use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::envelope::{self, BODY};
use super::Mode;
use crate::config::{resolve_in, KeySource};

const SALT: &[u8] = b"pgward column key v1";
const GCM_INFO: &[u8] = b"pgward aes-256-gcm";
const SIV_INFO: &[u8] = b"pgward aes-256-siv";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a key's material could not be had. Says where it was looked for, never what was there.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{0}")]
    Reference(String),
    #[error("environment variable {0:?} is not set")]
    EnvUnset(String),
    #[error("environment variable {name:?} {problem}")]
    EnvValue {
        name: String,
        problem: MaterialProblem,
    },
    #[error("{path:?}: {error}")]
    FileRead { path: String, error: std::io::Error },
    #[error("{path:?} {problem}")]
    FileValue {
        path: String,
        problem: MaterialProblem,
    },
}

impl KeyError {
    /// Does the message start with a quoted file path (so reads well right after the key name)?
    pub fn names_file(&self) -> bool {
        matches!(self, KeyError::FileRead { .. } | KeyError::FileValue { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MaterialProblem {
    #[error("does not hold base64 (make a key with `pgward keygen`)")]
    NotBase64,
    #[error("holds {0} bytes, not 32 (make a key with `pgward keygen`)")]
    Length(usize),
}

/// Reads and decodes the 32-byte key `material` (`env:NAME` or `file:PATH`) refers to;
/// relative paths are looked for in `base_dir` as the config's other paths are.
pub fn load_key(material: &str, base_dir: Option<&Path>) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    match KeySource::parse(material).map_err(KeyError::Reference)? {
        KeySource::Env(name) => {
            let Some(value) = std::env::var_os(&name) else {
                return Err(KeyError::EnvUnset(name));
            };
            let value = Zeroizing::new(value.into_encoded_bytes());
            decode_key(&value).map_err(|problem| KeyError::EnvValue { name, problem })
        }
        KeySource::File(path) => {
            let path = resolve_in(base_dir, &path);
            let shown = path.display().to_string();
            let value = std::fs::read(&path).map_err(|error| KeyError::FileRead {
                path: shown.clone(),
                error,
            })?;
            let value = Zeroizing::new(value);
            decode_key(&value).map_err(|problem| KeyError::FileValue {
                path: shown,
                problem,
            })
        }
    }
}

/// Standard base64 (padding optional, surrounding whitespace ignored) of exactly 32 bytes.
fn decode_key(text: &[u8]) -> Result<Zeroizing<[u8; 32]>, MaterialProblem> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // base64's errors name the offending byte: not passed on.
    let bytes = LENIENT
        .decode(text.trim_ascii())
        .map(Zeroizing::new)
        .map_err(|_| MaterialProblem::NotBase64)?;
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(MaterialProblem::Length(bytes.len()));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// A master key, wiped when dropped.
#[derive(ZeroizeOnDrop)]
pub(crate) struct MasterKey {
    #[zeroize(skip)]
    pub id: String,
    key: [u8; 32],
}

impl MasterKey {
    pub fn new(id: String, key: &[u8; 32]) -> MasterKey {
        MasterKey { id, key: *key }
    }

    /// HKDF's extract step, done once per key. Its internal HMAC state (sha2 0.10, hmac
    /// 0.12) is not wiped on drop: it lives only while the keyring is built.
    pub fn hkdf(&self) -> Hkdf<Sha256> {
        Hkdf::new(Some(SALT), &self.key)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A column's identity as bound into keys and associated data: the three names separated by
/// NUL, which no PostgreSQL identifier holds, so `"a.b".c` and `a."b.c"` differ.
pub(crate) fn column_identity(schema: &str, table: &str, column: &str) -> Vec<u8> {
    [schema, table, column].join("\0").into_bytes()
}

/// The envelope header and the associated data of one mode under one key.
struct Binding {
    header: String,
    aad: Box<[u8]>,
}

impl Binding {
    fn new(key_id: &str, mode: Mode, identity: &[u8]) -> Binding {
        let header = envelope::header(key_id, mode);
        let aad = [header.as_bytes(), identity].concat().into_boxed_slice();
        Binding { header, aad }
    }
}

/// The AES-256-SIV cipher of a column. `aes_siv::siv::Aes256Siv` needs `&mut self` (its CMAC
/// keeps state between calls) and cannot be cloned. A cached cipher behind a mutex saves a
/// key expansion per call (about 150-200 ns of 700), but one mutex per column serialises all
/// threads encrypting that column: so a call takes the cached cipher when it is free and
/// otherwise makes its own from the derived key, and no thread ever waits. A poisoned lock
/// (a panic mid-call may leave the CMAC state dirty) is never used again.
struct SivCipher {
    key: Zeroizing<[u8; 64]>,
    cached: Mutex<Aes256Siv>,
}

impl SivCipher {
    fn new(key: Zeroizing<[u8; 64]>) -> SivCipher {
        let cached = Mutex::new(Aes256Siv::new(GenericArray::from_slice(&key[..])));
        SivCipher { key, cached }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Aes256Siv) -> R) -> R {
        match self.cached.try_lock() {
            Ok(mut cipher) => f(&mut cipher),
            Err(_) => f(&mut Aes256Siv::new(GenericArray::from_slice(&self.key[..]))),
        }
    }
}

/// One column's ciphers under one master key: both modes, so values written before a column
/// changed mode still decrypt.
pub(crate) struct ColumnKey {
    pub id: String,
    gcm: Aes256Gcm,
    siv: SivCipher,
    randomized: Binding,
    deterministic: Binding,
}

/// Why a body did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    Malformed,
    Authentication,
}

impl ColumnKey {
    pub fn new(master: &MasterKey, hkdf: &Hkdf<Sha256>, identity: &[u8]) -> ColumnKey {
        let mut gcm_key = Zeroizing::new([0u8; 32]);
        let mut siv_key = Zeroizing::new([0u8; 64]);
        hkdf.expand_multi_info(&[GCM_INFO, b"\0", identity], &mut gcm_key[..])
            .expect("32 bytes is a valid HKDF-SHA256 length");
        hkdf.expand_multi_info(&[SIV_INFO, b"\0", identity], &mut siv_key[..])
            .expect("64 bytes is a valid HKDF-SHA256 length");
        ColumnKey {
            id: master.id.clone(),
            gcm: Aes256Gcm::new(GenericArray::from_slice(&gcm_key[..])),
            siv: SivCipher::new(siv_key),
            randomized: Binding::new(&master.id, Mode::Randomized, identity),
            deterministic: Binding::new(&master.id, Mode::Deterministic, identity),
        }
    }

    fn binding(&self, mode: Mode) -> &Binding {
        match mode {
            Mode::Randomized => &self.randomized,
            Mode::Deterministic => &self.deterministic,
        }
    }

    /// The envelope of `plaintext` in `mode`.
    pub fn seal(&self, mode: Mode, plaintext: &[u8]) -> String {
        let binding = self.binding(mode);
        let body = match mode {
            Mode::Randomized => {
                // ThreadRng: ChaCha12 seeded from the OS, reseeded periodically and after fork.
                let nonce: [u8; NONCE_LEN] = rand::random();
                let mut body = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
                body.extend_from_slice(&nonce);
                body.extend_from_slice(plaintext);
                let tag = self
                    .gcm
                    .encrypt_in_place_detached(
                        Nonce::from_slice(&nonce),
                        &binding.aad,
                        &mut body[NONCE_LEN..],
                    )
                    .expect("a column value is far below GCM's 64 GiB limit");
                body.extend_from_slice(&tag);
                body
            }
            Mode::Deterministic => {
                let mut body = Vec::with_capacity(TAG_LEN + plaintext.len());
                body.extend_from_slice(&[0; TAG_LEN]);
                body.extend_from_slice(plaintext);
                let siv = self
                    .siv
                    .with(|siv| siv.encrypt_in_place_detached([&binding.aad], &mut body[TAG_LEN..]))
                    .expect("one header is within SIV's limit");
                body[..TAG_LEN].copy_from_slice(&siv);
                body
            }
        };
        let mut out = String::with_capacity(binding.header.len() + body.len().div_ceil(3) * 4);
        out.push_str(&binding.header);
        BODY.encode_string(&body, &mut out);
        out
    }

    /// The plaintext of an envelope body (base64) written in `mode` under this key.
    pub fn open(&self, mode: Mode, body: &[u8]) -> Result<Vec<u8>, OpenError> {
        let aad = &self.binding(mode).aad;
        let mut data = envelope::decode_body(body).ok_or(OpenError::Malformed)?;
        match mode {
            Mode::Randomized => {
                if data.len() < NONCE_LEN + TAG_LEN {
                    return Err(OpenError::Malformed);
                }
                let tag_at = data.len() - TAG_LEN;
                let tag = *Tag::from_slice(&data[tag_at..]);
                let (nonce, sealed) = data[..tag_at].split_at_mut(NONCE_LEN);
                self.gcm
                    .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, sealed, &tag)
                    .map_err(|_| OpenError::Authentication)?;
                data.truncate(tag_at);
                data.drain(..NONCE_LEN);
            }
            Mode::Deterministic => {
                if data.len() < TAG_LEN {
                    return Err(OpenError::Malformed);
                }
                let (siv, sealed) = data.split_at_mut(TAG_LEN);
                let siv = *GenericArray::from_slice(siv);
                self.siv
                    .with(|cipher| cipher.decrypt_in_place_detached([aad], sealed, &siv))
                    .map_err(|_| OpenError::Authentication)?;
                data.drain(..TAG_LEN);
            }
        }
        Ok(data)
    }
}

impl std::fmt::Debug for ColumnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_decodes_to_32_bytes_or_says_why() {
        let good = b"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n";
        assert_eq!(
            &decode_key(good).unwrap()[..],
            b"01234567890123456789012345678901"
        );
        let unpadded = b"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE";
        assert!(decode_key(unpadded).is_ok());
        assert_eq!(decode_key(b"MDEy").unwrap_err(), MaterialProblem::Length(3));
        assert_eq!(
            decode_key(b"not base64!").unwrap_err(),
            MaterialProblem::NotBase64
        );
        assert_eq!(decode_key(b"").unwrap_err(), MaterialProblem::Length(0));
    }

    #[test]
    fn material_errors_say_where_not_what() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short.key"), "c2VjcmV0LXNob3J0\n").unwrap();
        let err = load_key("file:short.key", Some(dir.path())).unwrap_err();
        assert!(err.names_file());
        let text = err.to_string();
        assert!(
            text.ends_with("short.key\" holds 12 bytes, not 32 (make a key with `pgward keygen`)"),
            "{text}"
        );
        assert!(!text.contains("c2Vj"));
        let err = load_key("env:PGWARD_TEST_NEVER_SET_ANYWHERE", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable \"PGWARD_TEST_NEVER_SET_ANYWHERE\" is not set"
        );
        let err = load_key("file:missing.key", Some(dir.path())).unwrap_err();
        assert!(
            err.to_string().contains("missing.key\": No such file"),
            "{err}"
        );
        assert!(load_key("c2VjcmV0", None).is_err());
    }
}
