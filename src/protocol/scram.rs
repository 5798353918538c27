//! Client-facing password checks: SCRAM-SHA-256 (RFC 5802/7677, as PostgreSQL does it, without
//! channel binding) and md5. Secrets are derived once at config load, not per login.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const ITERATIONS: u32 = 4096;

/// What the server keeps of a SCRAM password (same as PostgreSQL's `rolpassword`).
#[derive(Clone)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSecret(..)")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl ScramSecret {
    /// From a plain password (normalised as PostgreSQL does only for ASCII: SASLprep of
    /// non-ASCII passwords is not applied, matching libpq's fallback for invalid input).
    pub fn from_password(password: &str) -> ScramSecret {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, ITERATIONS, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        ScramSecret {
            iterations: ITERATIONS,
            salt,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse_verifier(v: &str) -> Option<ScramSecret> {
        let rest = v.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(ScramSecret {
            iterations: iter.parse().ok()?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }
}

/// One SCRAM exchange, server side.
pub struct ScramExchange {
    secret: ScramSecret,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

impl ScramExchange {
    /// Takes the client-first-message; returns the server-first-message.
    pub fn start(
        secret: ScramSecret,
        client_first: &[u8],
    ) -> Result<(ScramExchange, String), &'static str> {
        let msg = std::str::from_utf8(client_first).map_err(|_| "invalid UTF-8")?;
        // gs2 header: "n,," (no channel binding) or "y,," (client could but server did not offer).
        let bare = msg
            .strip_prefix("n,,")
            .or_else(|| msg.strip_prefix("y,,"))
            .ok_or("unsupported channel binding")?;
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or("missing nonce")?;
        let mut raw = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = format!("{client_nonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&secret.salt),
            secret.iterations
        );
        let gs2 = &msg[..3];
        let exchange = ScramExchange {
            secret,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            gs2_header: gs2.to_owned(),
        };
        Ok((exchange, server_first))
    }

    /// Checks the client-final-message; returns the server-final-message when the proof holds.
    pub fn finish(self, client_final: &[u8]) -> Result<String, &'static str> {
        let msg = std::str::from_utf8(client_final).map_err(|_| "invalid UTF-8")?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or("missing proof")?;
        let (nonce, gs2) = (self.nonce.as_str(), self.gs2_header.as_str());
        let mut channel = None;
        let mut client_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                client_nonce = Some(r);
            }
        }
        if channel != Some(B64.encode(gs2.as_bytes()).as_str()) {
            return Err("channel binding mismatch");
        }
        if client_nonce != Some(nonce) {
            return Err("nonce mismatch");
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or("malformed proof")?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ signature[i];
        }
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        if !constant_time_eq(&computed, &self.secret.stored_key) {
            return Err("wrong password");
        }
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The md5 response PostgreSQL expects: "md5" + md5(md5(password + user) + salt).
pub fn md5_response(user: &str, password: &str, salt: &[u8; 4]) -> String {
    use md5::Md5;
    let inner = hex(&Md5::digest(format!("{password}{user}")));
    let mut outer = Md5::new();
    outer.update(inner.as_bytes());
    outer.update(salt);
    format!("md5{}", hex(&outer.finalize()))
}

pub fn md5_matches(user: &str, password: &str, salt: &[u8; 4], response: &str) -> bool {
    constant_time_eq(
        md5_response(user, password, salt).as_bytes(),
        response.as_bytes(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the client side with postgres-protocol's SCRAM implementation (the one
    /// tokio-postgres uses), so both ends are checked against an independent implementation.
    #[test]
    fn scram_against_postgres_protocol_client() {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        for (client_pw, ok) in [("s3cret", true), ("wrong", false)] {
            let secret = ScramSecret::from_password("s3cret");
            let mut client = ScramSha256::new(client_pw.as_bytes(), ChannelBinding::unsupported());
            let (ex, server_first) = ScramExchange::start(secret, client.message()).unwrap();
            client.update(server_first.as_bytes()).unwrap();
            match ex.finish(client.message()) {
                Ok(server_final) => {
                    assert!(ok);
                    client.finish(server_final.as_bytes()).unwrap();
                }
                Err(e) => {
                    assert!(!ok);
                    assert_eq!(e, "wrong password");
                }
            }
        }
    }

    #[test]
    fn md5_known_value() {
        // md5(md5("secret" + "alice") + salt) computed with PostgreSQL's algorithm.
        let r = md5_response("alice", "secret", &[1, 2, 3, 4]);
        assert!(r.starts_with("md5") && r.len() == 35);
        assert!(md5_matches("alice", "secret", &[1, 2, 3, 4], &r));
        assert!(!md5_matches("alice", "other", &[1, 2, 3, 4], &r));
    }
}
