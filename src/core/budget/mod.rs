//! Governance: what a virtual key may spend and how fast. Periods, prices, usage parsing,
//! cost estimates, rate buckets and budget reservations, all pure over the shared-data trait
//! (`core::store::SharedData`) so the same code runs on Envoy shared data and in tests.
//!
//! Money is integer micro-dollars (`u64`, 1 USD = 1_000_000) from the config to the ledger,
//! so no sum ever drifts. The overshoot bound of the budgets is derived in `docs/budgets.md`.

pub mod bucket;
pub mod charge;
pub mod estimate;
pub mod ledger;

pub mod period;
pub mod prices;
pub mod reservation;

pub mod usage;
pub mod virtual_keys;

/// Micro-dollars in one US dollar.
pub const MICROS_PER_USD: u64 = 1_000_000;

/// Dollars as written in a config (a JSON number) to micro-dollars, rounded to the nearest
/// micro-dollar once at load; `None` for negative, non-finite or absurd (>= 1e12 USD) values.
pub fn usd_to_micros(usd: f64) -> Option<u64> {
    if !(0.0..1e12).contains(&usd) {
        return None;
    }
    Some((usd * MICROS_PER_USD as f64).round() as u64)
}

/// Fixed-width little-endian fields of shared-data records.
pub(crate) fn read_u64s<const N: usize>(bytes: &[u8]) -> Option<[u64; N]> {
    if bytes.len() != N * 8 {
        return None;
    }
    let mut out = [0u64; N];
    for (i, c) in bytes.chunks_exact(8).enumerate() {
        out[i] = u64::from_le_bytes(c.try_into().ok()?);
    }
    Some(out)
}

pub(crate) fn write_u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
