//! Shared access signatures for the IoT Hub and DPS service REST APIs, and the connection strings they
//! come from. The token is the standard one (learn.microsoft.com/azure/iot-hub/authenticate-authorize-sas):
//! `SharedAccessSignature sr={URL-encoded resource}&sig={URL-encoded base64 HMAC-SHA256}&se={expiry}&skn={policy}`,
//! where the signed string is the URL-encoded resource, a newline and the expiry in seconds since the Unix
//! epoch, and the key is the policy's base64-decoded shared access key. The resource is the host name,
//! lower case. Neither the key nor the signature is ever printed: [`Credentials`]'s `Debug` shows the
//! host and the policy name only.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

/// A service connection string, parsed: `HostName=H;SharedAccessKeyName=N;SharedAccessKey=K`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The host name, lower case.
    pub host: String,
    /// The shared access policy's name.
    pub key_name: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, policy {})", self.host, self.key_name)
    }
}

impl Credentials {
    /// Parses a connection string; the error names what is missing, never the key.
    pub fn parse(s: &str) -> Result<Credentials, String> {
        let (mut host, mut name, mut key) = (None, None, None);
        for part in s.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err("a connection string is `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`".to_owned());
            };
            match k.trim() {
                "HostName" => host = Some(v.trim().to_ascii_lowercase()),
                "SharedAccessKeyName" => name = Some(v.trim().to_owned()),
                // Base64 ends in `=`: everything after the first `=` is the key.
                "SharedAccessKey" => key = Some(v.trim().to_owned()),
                _ => {}
            }
        }
        let host = host
            .filter(|h| !h.is_empty())
            .ok_or("the connection string has no HostName")?;
        let key_name = name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("the connection string for {host} has no SharedAccessKeyName"))?;
        let key = key
            .and_then(|k| STANDARD.decode(k).ok())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("the connection string for {host} has no valid (base64) SharedAccessKey"))?;
        Ok(Credentials { host, key_name, key })
    }

    /// The `Authorization` header value for this host, valid until `expiry` (seconds since the epoch).
    pub fn token(&self, expiry: u64) -> String {
        let sr = encode(&self.host);
        let sig = signature(&self.key, &sr, expiry);
        format!(
            "SharedAccessSignature sr={sr}&sig={}&se={expiry}&skn={}",
            encode(&sig),
            encode(&self.key_name)
        )
    }
}

/// Everything but RFC 3986's unreserved characters, as the SDKs' `encodeURIComponent` / `quote_plus`
/// encode: a host name stays as it is, a base64 signature's `+ / =` are escaped.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// base64(HMAC-SHA256(key, "{sr}\n{expiry}")).
pub fn signature(key: &[u8], encoded_resource: &str, expiry: u64) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{encoded_resource}\n{expiry}").as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a token against a key, as the service does: the stand-in of the tests uses this (and only the
/// tests): resource, expiry not passed, signature over the resource and expiry with the key.
pub fn verify(token: &str, host: &str, key_b64: &str, now: u64) -> Result<(), String> {
    let rest = token
        .strip_prefix("SharedAccessSignature ")
        .ok_or("not a SharedAccessSignature")?;
    let mut sr = None;
    let mut sig = None;
    let mut se = None;
    for kv in rest.split('&') {
        match kv.split_once('=') {
            Some(("sr", v)) => sr = Some(v.to_owned()),
            Some(("sig", v)) => {
                sig = percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned())
            }
            Some(("se", v)) => se = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    let (sr, sig, se) = (sr.ok_or("no sr")?, sig.ok_or("no sig")?, se.ok_or("no se")?);
    if sr != encode(&host.to_ascii_lowercase()) {
        return Err(format!("sr `{sr}` is not this host"));
    }
    if se <= now {
        return Err("expired".to_owned());
    }
    let key = STANDARD.decode(key_b64).map_err(|e| e.to_string())?;
    if signature(&key, &sr, se) != sig {
        return Err("bad signature".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==";

    #[test]
    fn a_token_signs_the_lower_case_host_and_the_expiry() {
        let c = Credentials::parse(&format!(
            "HostName=Contoso-Hub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey={KEY}"
        ))
        .expect("parses");
        assert_eq!(c.host, "contoso-hub.azure-devices.net");
        let t = c.token(1_900_000_000);
        assert!(
            t.starts_with("SharedAccessSignature sr=contoso-hub.azure-devices.net&sig="),
            "{t}"
        );
        assert!(t.ends_with("&se=1900000000&skn=service"), "{t}");
        verify(&t, "contoso-hub.azure-devices.net", KEY, 1_800_000_000).expect("verifies");
        assert!(verify(&t, "other.azure-devices.net", KEY, 1_800_000_000).is_err());
        assert!(
            verify(&t, "contoso-hub.azure-devices.net", KEY, 1_900_000_001).is_err(),
            "expired"
        );
        assert!(
            verify(&t, "contoso-hub.azure-devices.net", "b3RoZXI=", 1).is_err(),
            "another key"
        );
        assert!(!format!("{c:?}").contains(KEY), "Debug shows no key");
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_resource_newline_expiry() {
        // HMAC-SHA256("key", "sr\n1") computed independently (Python's hmac module).
        assert_eq!(
            signature(b"key", "sr", 1),
            "gluU47RvywpzMP7M5Npc1MyL1a6SKzTSLEpUaAWA/no="
        );
    }

    #[test]
    fn connection_string_mistakes_are_named_without_the_key() {
        for (s, want) in [
            ("SharedAccessKeyName=a;SharedAccessKey=YQ==", "no HostName"),
            ("HostName=h;SharedAccessKey=YQ==", "no SharedAccessKeyName"),
            (
                "HostName=h;SharedAccessKeyName=a;SharedAccessKey=%%%",
                "no valid (base64) SharedAccessKey",
            ),
        ] {
            let e = Credentials::parse(s).expect_err(s);
            assert!(e.contains(want), "{s}: {e}");
            assert!(!e.contains("YQ=="), "{e}");
        }
    }
}
