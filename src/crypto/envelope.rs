//! The text an encrypted value is stored as:
//!
//! ```text
//! pgw1:<key id>:<r|d>:<base64url, no padding>
//! ```
//!
//! `pgw1` names the format and its version, the key id the master key it was written under,
//! `r`/`d` the mode. The body is nonce(12) ‖ ciphertext ‖ tag(16) for randomized values
//! (AES-256-GCM) and siv(16) ‖ ciphertext for deterministic ones (AES-256-SIV). The header up
//! to and including the third colon is authenticated with the value (see `keys`), so no byte
//! of an envelope can change without decryption failing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::Mode;
use crate::config::valid_key_id;

/// Every envelope starts with this; the `1` is the format version.
pub const PREFIX: &str = "pgw1:";

/// The base64 flavour of the body: no `+`, `/` or `=`; decoding rejects non-canonical input, so
/// every body has exactly one spelling.
pub(crate) const BODY: base64::engine::GeneralPurpose = URL_SAFE_NO_PAD;

/// An envelope taken apart; nothing in it is checked but its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub key_id: &'a str,
    pub mode: Mode,
    /// The base64 text after the header.
    pub body: &'a [u8],
}

impl Mode {
    /// The letter an envelope names the mode with.
    pub(crate) fn letter(self) -> char {
        match self {
            Mode::Randomized => 'r',
            Mode::Deterministic => 'd',
        }
    }
}

/// `pgw1:<key id>:<mode>:`
pub(crate) fn header(key_id: &str, mode: Mode) -> String {
    format!("{PREFIX}{key_id}:{}:", mode.letter())
}

/// Splits a stored value into header fields and body; None when it is not shaped like an
/// envelope (the body is not looked at).
pub fn parse(stored: &[u8]) -> Option<Envelope<'_>> {
    let rest = stored.strip_prefix(PREFIX.as_bytes())?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let key_id = std::str::from_utf8(&rest[..colon]).ok()?;
    if !valid_key_id(key_id) {
        return None;
    }
    let (mode, body) = match &rest[colon + 1..] {
        [b'r', b':', body @ ..] => (Mode::Randomized, body),
        [b'd', b':', body @ ..] => (Mode::Deterministic, body),
        _ => return None,
    };
    Some(Envelope { key_id, mode, body })
}

/// Does `stored` look like something pgward wrote: a well-formed header and a non-empty body
/// of base64url characters? A cheap test of shape, not of authenticity: a plaintext that
/// happens to look like this is taken for an envelope.
pub fn looks_like_envelope(stored: &[u8]) -> bool {
    parse(stored).is_some_and(|e| {
        !e.body.is_empty()
            && e.body
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The decoded body; None when it is not canonical base64url.
pub(crate) fn decode_body(body: &[u8]) -> Option<Vec<u8>> {
    BODY.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e = parse(b"pgw1:k1:d:QUJD").unwrap();
        assert_eq!(e.key_id, "k1");
        assert_eq!(e.mode, Mode::Deterministic);
        assert_eq!(e.body, b"QUJD");
        assert!(looks_like_envelope(b"pgw1:k-2_x:r:QUJD"));
        for not in [
            &b""[..],
            b"pgw1:",
            b"pgw1:k1:d:",
            b"pgw1:k1:x:QUJD",
            b"pgw1::d:QUJD",
            b"pgw1:k 1:d:QUJD",
            b"pgw2:k1:d:QUJD",
            b"pgw1:k1:d:QU=D",
            b"pgw1:k1:dd:QUJD",
            b"123-45-6789",
        ] {
            assert!(
                !looks_like_envelope(not),
                "{:?}",
                String::from_utf8_lossy(not)
            );
        }
        assert_eq!(header("k1", Mode::Randomized), "pgw1:k1:r:");
    }

    #[test]
    fn bodies_have_one_spelling() {
        assert_eq!(decode_body(b"QUJD"), Some(b"ABC".to_vec()));
        assert_eq!(decode_body(b"QUI"), Some(b"AB".to_vec()));
        // Same bits but for the unused low ones of the last character.
        assert_eq!(decode_body(b"QUJ"), None);
        assert_eq!(decode_body(b"QUI="), None);
        assert_eq!(decode_body(b"QU+D"), None);
    }
}
