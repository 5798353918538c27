//! What pgward presents to PostgreSQL for a login: a password from the config, or, for a
//! role authenticated by passthrough, what the client proved it knows of its password.

use crate::protocol::scram::ClientKey;

/// Never printed (Debug names the kind only).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credential {
    /// Nothing: the server must not ask (trust).
    #[default]
    None,
    /// A plain password: answers cleartext, md5 and SCRAM requests.
    Password(String),
    /// The SCRAM keys of the role's verifier, recovered from the client's proof: answers a
    /// SCRAM request from a server holding that same verifier.
    ScramKeys {
        client_key: ClientKey,
        server_key: [u8; 32],
    },
    /// The role's stored md5 hash ("md5..."): answers an md5 request.
    Md5Hash(String),
}

impl Credential {
    pub fn password(password: Option<&str>) -> Credential {
        password.map_or(Credential::None, |p| Credential::Password(p.to_owned()))
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::None => "Credential::None",
            Credential::Password(_) => "Credential::Password(..)",
            Credential::ScramKeys { .. } => "Credential::ScramKeys(..)",
            Credential::Md5Hash(_) => "Credential::Md5Hash(..)",
        })
    }
}
