//! Envoy shared data as the core store's compare-and-swap map.

use crate::core::cache::store::{SetError, SharedData};
use crate::host::abi;

pub struct EnvoySharedData;

impl SharedData for EnvoySharedData {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        abi::get_shared(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        abi::set_shared(key, value, cas).map_err(|e| match e {
            abi::SharedSetError::CasMismatch => SetError::CasMismatch,
            abi::SharedSetError::Other => SetError::Host,
        })
    }
}
