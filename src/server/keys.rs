//! API keys for standalone deployments: when keys are configured every POST must carry one, as `?code=KEY`
//! (what DPS sends when the key is in the enrollment's `webhookUrl`) or as an `x-functions-key` header.
//! Keys are kept only as SHA-256 digests and compared in constant time, so neither a key's content nor
//! its length leaks through timing, and no key ever reaches a log line. The HTTP layer hands over the
//! header and the query string; nothing here knows the HTTP framework.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header that may carry a key.
pub const KEY_HEADER: &str = "x-functions-key";

/// The configured keys, as digests.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.digests.len())
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl ApiKeys {
    /// No keys: every request is accepted.
    pub fn none() -> Self {
        ApiKeys::default()
    }

    /// These keys (empty strings are ignored).
    pub fn new<'k>(keys: impl IntoIterator<Item = &'k str>) -> Self {
        ApiKeys {
            digests: keys
                .into_iter()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(digest)
                .collect(),
        }
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `candidate` is one of the keys; every key is compared, whatever matches.
    pub fn accepts(&self, candidate: &str) -> bool {
        let d = digest(candidate);
        let mut ok = subtle::Choice::from(0);
        for k in &self.digests {
            ok |= k.ct_eq(&d);
        }
        bool::from(ok)
    }

    /// Whether a request may pass: no keys configured, or a valid `?code=` in its query string or a valid
    /// `x-functions-key` header.
    pub fn allows(&self, header: Option<&str>, query: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        let code = query_code(query);
        // Evaluate both, so the answer takes the same time whichever carries the key.
        let by_header = header.is_some_and(|k| self.accepts(k));
        let by_query = code.as_deref().is_some_and(|k| self.accepts(k));
        by_header | by_query
    }
}

/// The `code` parameter of a query string, percent-decoded.
pub fn query_code(query: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs.into_iter().find(|(k, _)| k == "code").map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let keys = ApiKeys::new(["s3cr3t", " other ", ""]);
        assert_eq!(keys.len(), 2);
        assert!(keys.accepts("s3cr3t") && keys.accepts("other"));
        assert!(!keys.accepts("s3cr3") && !keys.accepts("s3cr3t ") && !keys.accepts(""));
        assert!(ApiKeys::none().is_empty());
    }

    #[test]
    fn the_code_parameter_is_found_and_decoded() {
        assert_eq!(query_code("code=a%2Fb%3D%3D&x=1").as_deref(), Some("a/b=="));
        assert_eq!(query_code("x=1&code=k").as_deref(), Some("k"));
        assert_eq!(query_code("codex=1"), None);
        assert_eq!(query_code(""), None);
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        assert_eq!(format!("{:?}", ApiKeys::new(["hunter2"])), "ApiKeys(1 configured)");
    }
}
