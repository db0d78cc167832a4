//! `kind = "cache"` in an app file: the cache's options and its registration as an NF that
//! runs inside the split proxy µStack (`[stack.proxy]`; `stacks::proxy::actor` chains the
//! proxy's NFs in app-file order). It is not an actor of the chain: [`NfOptions::build`]
//! refuses, [`NfOptions::proxy_nf`] makes it.

use std::sync::Arc;

use serde::Deserialize;
use actors::proxy_nf::{MakeProxyNf, ProxyNf};

use super::{CacheConfig, CacheNf, NAME};
use crate::{Kind, NfCommon, NfOptions};

/// The registration.
pub const KIND: Kind<CacheOptions> = Kind::new();

/// The options of a `cache` NF.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheOptions {
    /// Total bytes of stored objects (LRU eviction beyond).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Largest object stored, bytes.
    #[serde(default = "default_max_object")]
    pub max_object: usize,
    /// Largest request or response head, bytes.
    #[serde(default = "default_max_head")]
    pub max_head: usize,
}

fn default_max_bytes() -> usize {
    CacheConfig::default().max_bytes
}
fn default_max_object() -> usize {
    CacheConfig::default().max_object
}
fn default_max_head() -> usize {
    CacheConfig::default().max_head
}

impl CacheOptions {
    fn config(&self) -> CacheConfig {
        CacheConfig { max_bytes: self.max_bytes, max_object: self.max_object, max_head: self.max_head }
    }
}

impl NfOptions for CacheOptions {
    const NAME: &'static str = NAME;

    fn check(&mut self, common: &NfCommon, _registry: &mut actors::EventRegistry) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.max_bytes == 0 {
            errs.push(common.error(NAME, "key `max_bytes`: must be at least 1"));
        }
        if self.max_object == 0 || self.max_object > self.max_bytes {
            errs.push(common.error(NAME, "key `max_object`: must be 1 to `max_bytes`"));
        }
        if !(64..=1 << 20).contains(&self.max_head) {
            errs.push(common.error(NAME, "key `max_head`: must be 64 to 1048576"));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    fn build(&self, common: &NfCommon) -> Result<Box<dyn actors::Actor>, String> {
        Err(common.error(NAME, "runs inside the split proxy µStack ([stack.proxy]), not as an actor of the chain"))
    }

    fn proxy_nf(&self) -> Option<MakeProxyNf> {
        let cfg = self.config();
        Some(Arc::new(move || Box::new(CacheNf::new(cfg.clone())) as Box<dyn ProxyNf + Send>))
    }
}
