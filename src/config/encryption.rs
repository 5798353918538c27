//! `[encryption]`: the keys and the designated columns of transparent column encryption, and
//! the name rules both `pgward check` and the keyring apply to them.

use std::path::PathBuf;

use serde::Deserialize;

use crate::crypto::Mode;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// What a user without the `decrypt` action gets for a designated column.
    pub without_decrypt: WithoutDecrypt,
    /// Memory for recently decrypted values, so rows read again are not decrypted again
    /// (0 turns it off).
    #[serde(with = "super::units::size")]
    pub decrypt_cache: u64,
    pub keys: Vec<KeyConfig>,
    pub columns: Vec<ColumnConfig>,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            without_decrypt: WithoutDecrypt::default(),
            decrypt_cache: 64 << 20,
            keys: Vec::new(),
            columns: Vec::new(),
        }
    }
}

impl EncryptionConfig {
    /// Is any column designated (and so any key needed)?
    pub fn enabled(&self) -> bool {
        !self.columns.is_empty()
    }
}

/// What a user without the `decrypt` action sees in a designated column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WithoutDecrypt {
    /// NULL in place of the value.
    #[default]
    Null,
    /// The stored envelope, as text.
    Ciphertext,
    /// The statement is refused.
    Deny,
}

impl WithoutDecrypt {
    pub fn as_str(self) -> &'static str {
        match self {
            WithoutDecrypt::Null => "null",
            WithoutDecrypt::Ciphertext => "ciphertext",
            WithoutDecrypt::Deny => "deny",
        }
    }
}

/// One master key. `material` says where the key is, never the key itself.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Written into every envelope made under this key: `[A-Za-z0-9_-]{1,32}`.
    pub id: String,
    /// `env:NAME` or `file:PATH`, holding base64 of 32 bytes.
    pub material: String,
    /// New values are encrypted under the one active key; the others only decrypt.
    #[serde(default)]
    pub active: bool,
}

impl std::fmt::Debug for KeyConfig {
    /// A material that is not a reference might be a key pasted in by mistake: not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let material = match KeySource::parse(&self.material) {
            Ok(_) => self.material.as_str(),
            Err(_) => "<not env:NAME or file:PATH>",
        };
        f.debug_struct("KeyConfig")
            .field("id", &self.id)
            .field("material", &material)
            .field("active", &self.active)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// `schema.table`, folded as PostgreSQL folds names (unquoted to lower case).
    pub table: String,
    pub column: String,
    #[serde(default)]
    pub mode: Mode,
}

impl ColumnConfig {
    /// (schema, table, column) as PostgreSQL names them.
    pub fn folded(&self) -> Result<(String, String, String), String> {
        let (schema, table) = schema_table(&self.table)?;
        let column =
            identifier(&self.column).map_err(|e| format!("column {:?}: {e}", self.column))?;
        Ok((schema, table, column))
    }
}

/// Where a key's material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    /// As written: relative paths resolve against the config file's folder.
    File(PathBuf),
}

impl KeySource {
    pub fn parse(material: &str) -> Result<KeySource, String> {
        if let Some(name) = material.strip_prefix("env:") {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err("env: needs the name of an environment variable".into());
            }
            Ok(KeySource::Env(name.to_owned()))
        } else if let Some(path) = material.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: needs a path".into());
            }
            Ok(KeySource::File(PathBuf::from(path)))
        } else {
            Err("must be env:NAME or file:PATH (the key itself does not go in the config)".into())
        }
    }
}

/// Longest key id: it is written into every envelope.
pub const MAX_KEY_ID_LEN: usize = 32;

/// `[A-Za-z0-9_-]{1,32}`
pub fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `schema.table` as PostgreSQL folds it: exactly two parts, unquoted parts in lower case.
pub fn schema_table(name: &str) -> Result<(String, String), String> {
    let parts = identifiers(name).map_err(|e| format!("table {name:?}: {e}"))?;
    match <[String; 2]>::try_from(parts) {
        Ok([schema, table]) => Ok((schema, table)),
        Err(parts) => Err(format!(
            "table {name:?} must be schema.table (like \"public.customers\"), not {} part{}",
            parts.len(),
            if parts.len() == 1 { "" } else { "s" }
        )),
    }
}

/// One identifier, folded: `Name` is `name`, `"Name"` stays `Name`.
pub fn identifier(text: &str) -> Result<String, String> {
    let mut parts = identifiers(text)?;
    match parts.len() {
        1 => Ok(parts.remove(0)),
        _ => Err("must be one name; quote it (\"a.b\") if it holds a dot".into()),
    }
}

/// The dot-separated identifiers of `text`, each folded as PostgreSQL folds it.
fn identifiers(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    loop {
        let (part, tail) = if let Some(quoted) = rest.strip_prefix('"') {
            quoted_identifier(quoted)?
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let word = rest[..end].trim();
            let ok = word
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && word
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
            if !ok {
                return Err(if word.is_empty() {
                    "an empty name".into()
                } else {
                    format!("{word:?} is not a name without quotes")
                });
            }
            (word.to_ascii_lowercase(), &rest[end..])
        };
        parts.push(part);
        let tail = tail.trim_start();
        if tail.is_empty() {
            return Ok(parts);
        }
        rest = tail
            .strip_prefix('.')
            .ok_or_else(|| format!("unexpected {tail:?} after a name"))?
            .trim_start();
    }
}

/// A quoted identifier after its opening quote: the name and what follows the closing quote.
fn quoted_identifier(text: &str) -> Result<(String, &str), String> {
    let mut name = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            name.push(c);
        } else if text[i + 1..].starts_with('"') {
            name.push('"');
            chars.next();
        } else if name.is_empty() {
            return Err("an empty quoted name".into());
        } else {
            return Ok((name, &text[i + 1..]));
        }
    }
    Err("a quoted name without its closing quote".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_like_postgresql() {
        let t = |s: &str| schema_table(s);
        assert_eq!(
            t("public.customers"),
            Ok(("public".into(), "customers".into()))
        );
        assert_eq!(
            t("Public.Customers"),
            Ok(("public".into(), "customers".into()))
        );
        assert_eq!(
            t(" app . \"Odd.Name\" "),
            Ok(("app".into(), "Odd.Name".into()))
        );
        assert_eq!(t("\"a\"\"b\".t"), Ok(("a\"b".into(), "t".into())));
        assert!(t("customers").unwrap_err().contains("not 1 part"));
        assert!(t("db.public.customers")
            .unwrap_err()
            .contains("not 3 parts"));
        for bad in [
            "public.",
            ".t",
            "public.\"t",
            "public.1t",
            "pub lic.t",
            "\"\".t",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
        assert_eq!(identifier("SSN"), Ok("ssn".into()));
        assert_eq!(identifier("\"SSN\""), Ok("SSN".into()));
        assert!(identifier("a.b").is_err());
    }

    #[test]
    fn key_ids_and_sources() {
        assert!(valid_key_id("k1"));
        assert!(valid_key_id("2024-01_a"));
        assert!(!valid_key_id(""));
        assert!(!valid_key_id("k:1"));
        assert!(!valid_key_id(&"k".repeat(33)));
        assert_eq!(KeySource::parse("env:K"), Ok(KeySource::Env("K".into())));
        assert_eq!(
            KeySource::parse("file:k.key"),
            Ok(KeySource::File("k.key".into()))
        );
        assert!(KeySource::parse("MDEyMzQ1Njc4OTAx").is_err());
        assert!(KeySource::parse("env:").is_err());
    }

    #[test]
    fn a_pasted_key_stays_out_of_debug() {
        let key = KeyConfig {
            id: "k1".into(),
            material: "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=".into(),
            active: true,
        };
        assert!(!format!("{key:?}").contains("MDEy"));
    }
}
