//! Client authentication, compiled once at load: every accepted key is indexed by its
//! SHA-256, so a request costs one hash and one map lookup, keys given in clear or through
//! the environment are never kept in clear, and the tenant a request is scoped to is decided
//! here (the key's tenant, narrowed by a trusted tenant header within what the key allows).

use crate::core::config::{AuthConfig, ConfigError};
use crate::core::errors::GatewayError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// What a key grants.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyGrant {
    pub tenant: String,
    /// The virtual key's id (`virtual_keys[].id`); `None` for an `auth.keys` entry.
    pub key_id: Option<String>,
    pub tenants: Vec<String>,
    pub tenant_prefix: Option<String>,
}

/// The compiled key table.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    by_hash: HashMap<[u8; 32], KeyGrant>,
    tenant_header: Option<String>,
    tenant_header_trusted: bool,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn unhex(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, pair) in h.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

impl KeyTable {
    /// Resolve `key_env` entries through `env` (the VM's environment); an unset or empty
    /// variable is a load error, as for provider keys.
    pub fn compile(auth: &AuthConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut by_hash = HashMap::new();
        for (i, k) in auth.keys.iter().enumerate() {
            let hash = match (&k.key, &k.key_env, &k.key_sha256) {
                (Some(key), _, _) => sha256(key.trim().as_bytes()),
                (_, Some(var), _) => match env(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
                    Some(v) => sha256(v.as_bytes()),
                    None => {
                        return Err(ConfigError {
                            path: format!("auth.keys[{i}].key_env"),
                            message: format!("environment variable `{var}` is unset or empty in the Wasm VM (list it in vm_config.environment_variables)"),
                        })
                    }
                },
                (_, _, Some(h)) => unhex(&h.to_ascii_lowercase()).ok_or_else(|| ConfigError {
                    path: format!("auth.keys[{i}].key_sha256"),
                    message: "must be 64 hex digits".into(),
                })?,
                // `Config::parse` refuses this; a config compiled without it fails at load, never traps.
                _ => {
                    return Err(ConfigError {
                        path: format!("auth.keys[{i}]"),
                        message: "set exactly one of `key`, `key_env` or `key_sha256`".into(),
                    })
                }
            };
            let grant = KeyGrant {
                tenant: k.tenant.clone(),
                key_id: None,
                tenants: k.tenants.clone(),
                tenant_prefix: k.tenant_prefix.clone(),
            };
            if by_hash.insert(hash, grant).is_some() {
                return Err(ConfigError {
                    path: format!("auth.keys[{i}]"),
                    message: "the same key is listed twice".into(),
                });
            }
        }
        Ok(KeyTable {
            by_hash,
            tenant_header: auth.tenant_header.clone(),
            tenant_header_trusted: auth.tenant_header_trusted,
        })
    }

    /// Accept a virtual key (`virtual_keys[i]`, by its SHA-256 hex) with its own grant.
    pub fn add_virtual(&mut self, i: usize, sha256_hex: &str, tenant: &str, key_id: &str) -> Result<(), ConfigError> {
        let at = format!("virtual_keys[{i}].key_sha256");
        let hash = unhex(sha256_hex).ok_or_else(|| ConfigError { path: at.clone(), message: "must be 64 hex digits".into() })?;
        let grant = KeyGrant { tenant: tenant.to_string(), key_id: Some(key_id.to_string()), tenants: vec![], tenant_prefix: None };
        if self.by_hash.insert(hash, grant).is_some() {
            return Err(ConfigError { path: at, message: "the same key is also in `auth.keys` or listed twice".into() });
        }
        Ok(())
    }

    /// The tenant header to read, if it is trusted (otherwise it is never read).
    pub fn trusted_tenant_header(&self) -> Option<&str> {
        self.tenant_header.as_deref().filter(|_| self.tenant_header_trusted)
    }

    /// The grant of the presented `Authorization: Bearer <key>`; 401 if absent or unknown.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&KeyGrant, GatewayError> {
        let key = authorization
            .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(GatewayError::Unauthorized)?;
        self.by_hash.get(&sha256(key.as_bytes())).ok_or(GatewayError::Unauthorized)
    }

    /// The cache scope: the key's tenant, or `<tenant>/<value>` when a trusted tenant header
    /// names a sub-tenant the key allows (403 if it does not).
    pub fn scope(&self, grant: &KeyGrant, header: Option<&str>) -> Result<String, GatewayError> {
        let Some(value) = header.filter(|_| self.tenant_header_trusted).map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(grant.tenant.clone());
        };
        let allowed = grant.tenants.iter().any(|t| t == value)
            || grant.tenant_prefix.as_deref().is_some_and(|p| value.starts_with(p));
        if !allowed || value.bytes().any(|b| b.is_ascii_control()) {
            return Err(GatewayError::Forbidden(format!(
                "this key may not act for the tenant named in `{}`",
                self.tenant_header.as_deref().unwrap_or("")
            )));
        }
        Ok(format!("{}/{value}", grant.tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::ClientKey;

    fn table(header: Option<&str>, trusted: bool) -> KeyTable {
        let auth = AuthConfig {
            keys: vec![
                ClientKey {
                    key: Some("sk-a".into()),
                    tenant: "a".into(),
                    tenants: vec!["shop-1".into()],
                    ..Default::default()
                },
                ClientKey {
                    key_env: Some("KEY_B".into()),
                    tenant: "b".into(),
                    tenant_prefix: Some("m-".into()),
                    ..Default::default()
                },
                ClientKey {
                    // printf %s sk-c | sha256sum
                    key_sha256: Some("B8D3D8E3C9E8D0E7A3A7B1A0E6E1F2A6C1F6B0C9B4E1E7A2A6D6D8C3E5E9A1F0".into()),
                    tenant: "c".into(),
                    ..Default::default()
                },
            ],
            tenant_header: header.map(String::from),
            tenant_header_trusted: trusted,
        };
        KeyTable::compile(&auth, |v| (v == "KEY_B").then(|| "sk-b".to_string())).unwrap()
    }

    #[test]
    fn keys_in_clear_from_the_environment_or_hashed_all_authenticate() {
        let t = table(None, false);
        assert_eq!(t.authenticate(Some("Bearer sk-a")).unwrap().tenant, "a");
        assert_eq!(t.authenticate(Some("Bearer sk-b")).unwrap().tenant, "b");
        let real = KeyTable::compile(
            &AuthConfig {
                keys: vec![ClientKey {
                    key_sha256: Some(format!("{:x}", Sha256::digest(b"sk-c"))),
                    tenant: "c".into(),
                    ..Default::default()
                }],
                tenant_header: None,
                tenant_header_trusted: false,
            },
            |_| None,
        )
        .unwrap();
        assert_eq!(real.authenticate(Some("Bearer sk-c")).unwrap().tenant, "c");
        for bad in [None, Some(""), Some("Bearer "), Some("Bearer sk-x"), Some("sk-a"), Some("Basic sk-a")] {
            assert_eq!(t.authenticate(bad), Err(GatewayError::Unauthorized), "{bad:?}");
        }
    }

    #[test]
    fn an_unset_key_variable_fails_at_load() {
        let auth = AuthConfig {
            keys: vec![ClientKey { key_env: Some("NOPE".into()), tenant: "t".into(), ..Default::default() }],
            tenant_header: None,
            tenant_header_trusted: false,
        };
        assert_eq!(KeyTable::compile(&auth, |_| None).unwrap_err().path, "auth.keys[0].key_env");
    }

    #[test]
    fn the_tenant_header_only_narrows_within_the_key_and_only_when_trusted() {
        let t = table(Some("x-tenant"), true);
        let a = t.authenticate(Some("Bearer sk-a")).unwrap().clone();
        let b = t.authenticate(Some("Bearer sk-b")).unwrap().clone();
        assert_eq!(t.scope(&a, None).unwrap(), "a");
        assert_eq!(t.scope(&a, Some("shop-1")).unwrap(), "a/shop-1");
        assert!(matches!(t.scope(&a, Some("shop-2")), Err(GatewayError::Forbidden(_))));
        assert!(matches!(t.scope(&a, Some("b")), Err(GatewayError::Forbidden(_))));
        assert_eq!(t.scope(&b, Some("m-42")).unwrap(), "b/m-42");
        assert!(matches!(t.scope(&b, Some("n-42")), Err(GatewayError::Forbidden(_))));
        assert!(matches!(t.scope(&b, Some("m-\u{1}")), Err(GatewayError::Forbidden(_))));
        // Untrusted: a client-sent header is ignored.
        let u = table(Some("x-tenant"), false);
        assert_eq!(u.trusted_tenant_header(), None);
        assert_eq!(u.scope(&a, Some("shop-1")).unwrap(), "a");
    }
}
