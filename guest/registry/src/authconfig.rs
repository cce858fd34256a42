//! Decoding Docker's `X-Registry-Auth` header / auth config JSON into an [`Auth`].

use base64::alphabet;
use base64::engine::general_purpose::GeneralPurposeConfig;
use base64::engine::{DecodePaddingMode, GeneralPurpose};
use base64::Engine;
use serde::Deserialize;

use crate::{Auth, RegistryError};

/// Credentials plus the registry they were meant for (`serveraddress`), as sent by the CLI.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub auth: Auth,
    pub server_address: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawAuthConfig {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
    #[serde(default)]
    serveraddress: Option<String>,
}

const INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const URL_SAFE_ANY: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);
const STANDARD_ANY: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);

/// Base64 with either alphabet and with or without padding: clients are not consistent.
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_ANY
        .decode(s)
        .or_else(|_| STANDARD_ANY.decode(s))
        .ok()
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Parses an auth config JSON object (the `/auth` request body, or a decoded header).
pub fn parse_auth_config_json(json: &[u8]) -> Result<AuthConfig, RegistryError> {
    if json.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(AuthConfig {
            auth: Auth::Anonymous,
            server_address: None,
        });
    }
    let raw: Option<RawAuthConfig> = serde_json::from_slice(json)
        .map_err(|e| RegistryError::InvalidAuthConfig(format!("bad JSON: {e}")))?;
    let raw = raw.unwrap_or_default();
    let server_address = non_empty(raw.serveraddress);
    let auth = if let Some(t) = non_empty(raw.registrytoken) {
        Auth::RegistryToken(t)
    } else if let Some(t) = non_empty(raw.identitytoken) {
        Auth::IdentityToken(t)
    } else if let (Some(u), Some(p)) = (non_empty(raw.username.clone()), non_empty(raw.password)) {
        Auth::Basic {
            username: u,
            password: p,
        }
    } else if let Some(a) = non_empty(raw.auth) {
        let decoded = decode_b64(a.trim())
            .ok_or_else(|| RegistryError::InvalidAuthConfig("auth field is not base64".into()))?;
        let s = String::from_utf8(decoded)
            .map_err(|_| RegistryError::InvalidAuthConfig("auth field is not UTF-8".into()))?;
        let (u, p) = s.split_once(':').ok_or_else(|| {
            RegistryError::InvalidAuthConfig("auth field is not user:password".into())
        })?;
        Auth::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }
    } else {
        Auth::Anonymous
    };
    Ok(AuthConfig {
        auth,
        server_address,
    })
}

/// Decodes `X-Registry-Auth` (base64url JSON, padded or not) including the server address.
pub fn parse_auth_header_config(header: &str) -> Result<AuthConfig, RegistryError> {
    let h = header.trim();
    if h.is_empty() {
        return Ok(AuthConfig {
            auth: Auth::Anonymous,
            server_address: None,
        });
    }
    let json = decode_b64(h)
        .ok_or_else(|| RegistryError::InvalidAuthConfig("X-Registry-Auth is not base64".into()))?;
    parse_auth_config_json(&json)
}

/// Decodes `X-Registry-Auth` into credentials; empty or `{}` is anonymous.
pub fn parse_auth_header(x_registry_auth_base64url: &str) -> Result<Auth, RegistryError> {
    parse_auth_header_config(x_registry_auth_base64url).map(|c| c.auth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

    #[test]
    fn anonymous_forms() {
        assert!(matches!(parse_auth_header("").unwrap(), Auth::Anonymous));
        assert!(matches!(
            parse_auth_header("e30=").unwrap(),
            Auth::Anonymous
        ));
        assert!(matches!(parse_auth_header("e30").unwrap(), Auth::Anonymous));
        assert!(matches!(
            parse_auth_header(&URL_SAFE.encode("null")).unwrap(),
            Auth::Anonymous
        ));
        let c = parse_auth_header_config(&URL_SAFE.encode(r#"{"serveraddress":"127.0.0.1:5000"}"#))
            .unwrap();
        assert!(matches!(c.auth, Auth::Anonymous));
        assert_eq!(c.server_address.as_deref(), Some("127.0.0.1:5000"));
    }

    #[test]
    fn basic_credentials() {
        // Characters that differ between the base64 alphabets ("?>" encodes to "Pz4").
        let j = r#"{"username":"me","password":"p?>?>??","serveraddress":"https://index.docker.io/v1/"}"#;
        for enc in [
            URL_SAFE.encode(j),
            URL_SAFE_NO_PAD.encode(j),
            STANDARD.encode(j),
        ] {
            match parse_auth_header(&enc).unwrap() {
                Auth::Basic { username, password } => {
                    assert_eq!(username, "me");
                    assert_eq!(password, "p?>?>??");
                }
                a => panic!("{a:?}"),
            }
        }
        let j = format!(r#"{{"auth":"{}"}}"#, STANDARD.encode("bob:se:cret"));
        match parse_auth_header(&URL_SAFE.encode(j)).unwrap() {
            Auth::Basic { username, password } => {
                assert_eq!(username, "bob");
                assert_eq!(password, "se:cret");
            }
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn tokens() {
        let a = parse_auth_header(&URL_SAFE.encode(r#"{"identitytoken":"refresh"}"#)).unwrap();
        assert!(matches!(a, Auth::IdentityToken(t) if t == "refresh"));
        let a = parse_auth_header(
            &URL_SAFE.encode(r#"{"registrytoken":"bearer","username":"x","password":"y"}"#),
        )
        .unwrap();
        assert!(matches!(a, Auth::RegistryToken(t) if t == "bearer"));
    }

    #[test]
    fn garbage_rejected() {
        assert!(parse_auth_header("!!!not base64").is_err());
        assert!(parse_auth_header(&URL_SAFE.encode("[1,2]")).is_err());
        assert!(parse_auth_header(&URL_SAFE.encode(r#"{"auth":"bm9jb2xvbg=="}"#)).is_err());
    }
}
