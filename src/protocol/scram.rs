//! Password checks: SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802/7677, with
//! `tls-server-end-point` channel binding, as PostgreSQL does it) and md5, on the client side of
//! pgward, plus the SCRAM client pgward uses towards PostgreSQL when all it holds of a password is the ClientKey a client proved (passthrough).
//! Secrets are derived once at config load, not per login.

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

    /// A secret for a user that does not exist, so a login attempt for it takes the same
    /// steps as a real one. Its salt is the same at every attempt (a real user's salt does
    /// not change either) and nobody knows a password for it. No PBKDF2 is spent on it.
    pub fn mock(user: &str) -> ScramSecret {
        static MOCK_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let key = MOCK_KEY.get_or_init(|| {
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            key
        });
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut stored_key);
        rand::thread_rng().fill_bytes(&mut server_key);
        ScramSecret {
            iterations: ITERATIONS,
            salt: hmac(key, user.as_bytes())[..16].to_vec(),
            stored_key,
            server_key,
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
    /// What the client-final-message's `c=` must be: the gs2 header, with the channel binding
    /// data after it when the client bound to the TLS connection.
    channel: String,
}

/// Channel binding as the server offered it and the client chose.
#[derive(Debug, Clone, Copy)]
pub enum ChannelBinding<'a> {
    /// The client chose SCRAM-SHA-256-PLUS: it must bind to this `tls-server-end-point` data.
    Bound(&'a [u8]),
    /// The client chose SCRAM-SHA-256 although SCRAM-SHA-256-PLUS was offered.
    Declined,
    /// Only SCRAM-SHA-256 was offered (no TLS, or a certificate without a binding).
    NotOffered,
}

impl ScramExchange {
    /// Takes the client-first-message; returns the server-first-message.
    pub fn start(
        secret: ScramSecret,
        client_first: &[u8],
        binding: ChannelBinding,
    ) -> Result<(ScramExchange, String), &'static str> {
        let msg = std::str::from_utf8(client_first).map_err(|_| "invalid UTF-8")?;
        // gs2 header: "p=tls-server-end-point,," (bound), "n,," (the client does not bind), or
        // "y,," (it could, but believes the server cannot: a downgrade when the server did
        // offer it).
        const BOUND: &str = "p=tls-server-end-point,,";
        let (gs2, bare, data) = match binding {
            ChannelBinding::Bound(data) => {
                let bare = msg
                    .strip_prefix(BOUND)
                    .ok_or("SCRAM-SHA-256-PLUS without tls-server-end-point binding")?;
                (BOUND, bare, data)
            }
            _ if msg.starts_with("p=") => {
                return Err("channel binding requested with SCRAM-SHA-256");
            }
            ChannelBinding::Declined if msg.starts_with("y,,") => {
                return Err("channel binding negotiation error");
            }
            _ => {
                let bare = msg
                    .strip_prefix("n,,")
                    .or_else(|| msg.strip_prefix("y,,"))
                    .ok_or("unsupported gs2 header")?;
                (&msg[..3], bare, &[][..])
            }
        };
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
        let exchange = ScramExchange {
            secret,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            channel: B64.encode([gs2.as_bytes(), data].concat()),
        };
        Ok((exchange, server_first))
    }

    /// Checks the client-final-message. When the proof holds, returns the server-final-message
    /// and the ClientKey the client proved it knows (ClientProof XOR ClientSignature).
    pub fn finish(self, client_final: &[u8]) -> Result<ScramProof, &'static str> {
        let msg = std::str::from_utf8(client_final).map_err(|_| "invalid UTF-8")?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or("missing proof")?;
        let nonce = self.nonce.as_str();
        let mut channel = None;
        let mut client_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                client_nonce = Some(r);
            }
        }
        if channel != Some(self.channel.as_str()) {
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
        Ok(ScramProof {
            server_final: format!("v={}", B64.encode(server_signature)),
            client_key: ClientKey(client_key),
        })
    }
}

/// A successful exchange, server side.
pub struct ScramProof {
    pub server_final: String,
    pub client_key: ClientKey,
}

/// HMAC(SaltedPassword, "Client Key"): enough to log in as the user with SCRAM anywhere
/// that keeps the same verifier, so it is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey(pub [u8; 32]);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(..)")
    }
}

/// The client side of SCRAM-SHA-256 with the keys instead of the password (RFC 5802 needs
/// the password only to derive them): ClientProof = ClientKey XOR HMAC(H(ClientKey),
/// AuthMessage), and the server proves itself with HMAC(ServerKey, AuthMessage). It always
/// declines channel binding (gs2 header "n,,").
pub struct ScramClient {
    client_key: [u8; 32],
    server_key: [u8; 32],
    client_first_bare: String,
    nonce: String,
    auth_message: Option<String>,
}

impl ScramClient {
    /// Returns the client and its client-first-message.
    pub fn start(client_key: &ClientKey, server_key: &[u8; 32]) -> (ScramClient, String) {
        let mut raw = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = B64.encode(raw);
        // PostgreSQL takes the user from the startup packet and ignores n=.
        let client_first_bare = format!("n=,r={nonce}");
        let first = format!("n,,{client_first_bare}");
        let client = ScramClient {
            client_key: client_key.0,
            server_key: *server_key,
            client_first_bare,
            nonce,
            auth_message: None,
        };
        (client, first)
    }

    /// Takes the server-first-message; returns the client-final-message. The salt and
    /// iteration count are not needed: the keys already include them.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, &'static str> {
        let msg = std::str::from_utf8(server_first).map_err(|_| "invalid UTF-8")?;
        let nonce = msg
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .ok_or("missing nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("server nonce does not extend the client's");
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let stored_key: [u8; 32] = Sha256::digest(self.client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = [0u8; 32];
        for i in 0..32 {
            proof[i] = self.client_key[i] ^ signature[i];
        }
        self.auth_message = Some(auth_message);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final-message: the server knew the verifier too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), &'static str> {
        let auth_message = self
            .auth_message
            .as_deref()
            .ok_or("exchange out of order")?;
        let msg = std::str::from_utf8(server_final).map_err(|_| "invalid UTF-8")?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(if e == "invalid-proof" {
                "server rejected the proof"
            } else {
                "server reported an error"
            });
        }
        let signature = msg
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or("malformed server-final-message")?;
        let expected = hmac(&self.server_key, auth_message.as_bytes());
        if !constant_time_eq(&signature, &expected) {
            return Err("server signature mismatch");
        }
        Ok(())
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

/// Whether `v` is an md5 password hash as PostgreSQL stores it: "md5" + 32 hex digits.
pub fn is_md5_hash(v: &str) -> bool {
    v.len() == 35 && v.starts_with("md5") && v[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The md5 response from the stored hash ("md5" + md5(password + user)) instead of the
/// password: the hash is all the challenge needs.
pub fn md5_response_from_hash(hash: &str, salt: &[u8; 4]) -> String {
    use md5::Md5;
    let mut outer = Md5::new();
    outer.update(hash.strip_prefix("md5").unwrap_or(hash).as_bytes());
    outer.update(salt);
    format!("md5{}", hex(&outer.finalize()))
}

pub fn md5_hash_matches(hash: &str, salt: &[u8; 4], response: &str) -> bool {
    constant_time_eq(
        md5_response_from_hash(hash, salt).as_bytes(),
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
            let (ex, server_first) =
                ScramExchange::start(secret, client.message(), super::ChannelBinding::NotOffered)
                    .unwrap();
            client.update(server_first.as_bytes()).unwrap();
            match ex.finish(client.message()) {
                Ok(proof) => {
                    assert!(ok);
                    client.finish(proof.server_final.as_bytes()).unwrap();
                }
                Err(e) => {
                    assert!(!ok);
                    assert_eq!(e, "wrong password");
                }
            }
        }
    }

    /// SCRAM-SHA-256-PLUS against postgres-protocol's client: the right end-point data logs
    /// in, other data is refused, and so are the downgrades a relay in the middle would need.
    #[test]
    fn channel_binding_against_postgres_protocol_client() {
        use super::ChannelBinding::{Bound, Declined, NotOffered};
        use postgres_protocol::authentication::sasl::{ChannelBinding as Client, ScramSha256};
        let secret = ScramSecret::from_password("s3cret");
        let run = |client_binding: Client, server: super::ChannelBinding| {
            let mut client = ScramSha256::new(b"s3cret", client_binding);
            let (ex, server_first) =
                ScramExchange::start(secret.clone(), client.message(), server)?;
            client.update(server_first.as_bytes()).unwrap();
            let proof = ex.finish(client.message())?;
            client.finish(proof.server_final.as_bytes()).unwrap();
            Ok::<(), &str>(())
        };
        let end_point = [7u8; 32];
        let bound = || Client::tls_server_end_point(end_point.to_vec());
        assert_eq!(run(bound(), Bound(&end_point)), Ok(()));
        // The client saw another certificate than pgward's: a relay in the middle.
        assert_eq!(
            run(bound(), Bound(&[8u8; 32])),
            Err("channel binding mismatch")
        );
        // Binding data sent under plain SCRAM-SHA-256, and "y" while PLUS was offered.
        assert!(run(bound(), Declined).is_err());
        assert!(run(bound(), NotOffered).is_err());
        assert_eq!(
            run(Client::unrequested(), Declined),
            Err("channel binding negotiation error")
        );
        // A client that cannot bind, or was not offered it.
        assert_eq!(run(Client::unsupported(), Declined), Ok(()));
        assert_eq!(run(Client::unrequested(), NotOffered), Ok(()));
        assert!(run(Client::unsupported(), Bound(&end_point)).is_err());
    }

    #[test]
    fn md5_known_value() {
        // md5(md5("secret" + "alice") + salt) computed with PostgreSQL's algorithm.
        let r = md5_response("alice", "secret", &[1, 2, 3, 4]);
        assert!(r.starts_with("md5") && r.len() == 35);
        assert!(md5_matches("alice", "secret", &[1, 2, 3, 4], &r));
        assert!(!md5_matches("alice", "other", &[1, 2, 3, 4], &r));
    }

    /// A full exchange with a known password, as a real client makes it.
    fn exchange(secret: &ScramSecret, password: &str) -> Result<ScramProof, &'static str> {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let (ex, server_first) = ScramExchange::start(
            secret.clone(),
            client.message(),
            super::ChannelBinding::NotOffered,
        )
        .unwrap();
        client.update(server_first.as_bytes()).unwrap();
        let proof = ex.finish(client.message())?;
        client.finish(proof.server_final.as_bytes()).unwrap();
        Ok(proof)
    }

    #[test]
    fn recovered_client_key_is_the_password_derived_one() {
        let secret = ScramSecret::from_password("s3cret");
        let proof = exchange(&secret, "s3cret").unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"s3cret", &secret.salt, secret.iterations, &mut salted);
        assert_eq!(proof.client_key.0, hmac(&salted, b"Client Key"));
        let stored: [u8; 32] = Sha256::digest(proof.client_key.0).into();
        assert_eq!(stored, secret.stored_key);
    }

    /// The key recovered from one exchange logs in again, through a fresh exchange with the
    /// same verifier (what pgward does towards PostgreSQL), and checks the server's signature.
    #[test]
    fn recovered_client_key_passes_a_new_exchange() {
        let secret = ScramSecret::from_password("s3cret");
        let key = exchange(&secret, "s3cret").unwrap().client_key;
        for _ in 0..3 {
            let (mut client, first) = ScramClient::start(&key, &secret.server_key);
            let (ex, server_first) = ScramExchange::start(
                secret.clone(),
                first.as_bytes(),
                super::ChannelBinding::NotOffered,
            )
            .unwrap();
            let last = client.respond(server_first.as_bytes()).unwrap();
            let proof = ex.finish(last.as_bytes()).unwrap();
            assert_eq!(proof.client_key, key);
            client.verify(proof.server_final.as_bytes()).unwrap();
        }
        // A server that does not hold the verifier cannot sign for it.
        let (mut client, first) = ScramClient::start(&key, &[7u8; 32]);
        let (ex, server_first) = ScramExchange::start(
            secret.clone(),
            first.as_bytes(),
            super::ChannelBinding::NotOffered,
        )
        .unwrap();
        let last = client.respond(server_first.as_bytes()).unwrap();
        let proof = ex.finish(last.as_bytes()).unwrap();
        assert!(client.verify(proof.server_final.as_bytes()).is_err());
        assert!(client.verify(b"e=invalid-proof").is_err());
    }

    #[test]
    fn a_wrong_key_or_verifier_is_refused() {
        let secret = ScramSecret::from_password("s3cret");
        let key = exchange(&secret, "s3cret").unwrap().client_key;
        // The same password under another salt is another verifier: the key does not carry.
        let other = ScramSecret::from_password("s3cret");
        let (mut client, first) = ScramClient::start(&key, &other.server_key);
        let (ex, server_first) =
            ScramExchange::start(other, first.as_bytes(), super::ChannelBinding::NotOffered)
                .unwrap();
        let last = client.respond(server_first.as_bytes()).unwrap();
        assert_eq!(ex.finish(last.as_bytes()).err(), Some("wrong password"));
        // A server nonce that does not extend the client's is refused.
        let (mut client, _) = ScramClient::start(&key, &secret.server_key);
        assert!(client.respond(b"r=other,s=AAAA,i=4096").is_err());
    }

    #[test]
    fn mock_secret_is_stable_per_user_and_refuses_everyone() {
        assert_eq!(
            ScramSecret::mock("ghost").salt,
            ScramSecret::mock("ghost").salt
        );
        assert_ne!(
            ScramSecret::mock("ghost").salt,
            ScramSecret::mock("other").salt
        );
        assert_eq!(ScramSecret::mock("ghost").salt.len(), 16);
        for pw in ["", "ghost", "s3cret"] {
            assert!(exchange(&ScramSecret::mock("ghost"), pw).is_err());
        }
    }

    #[test]
    fn md5_from_the_stored_hash() {
        use md5::Md5;
        let stored = format!("md5{}", hex(&Md5::digest("secretalice")));
        assert!(is_md5_hash(&stored));
        assert!(!is_md5_hash("md5xyz"));
        assert!(!is_md5_hash("SCRAM-SHA-256$4096:abc"));
        let salt = [9, 8, 7, 6];
        let response = md5_response("alice", "secret", &salt);
        assert_eq!(md5_response_from_hash(&stored, &salt), response);
        assert!(md5_hash_matches(&stored, &salt, &response));
        assert!(!md5_hash_matches(&stored, &[1, 1, 1, 1], &response));
    }
}
