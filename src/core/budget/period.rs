//! Calendar budget periods in UTC (`daily`, `weekly` from Monday as ISO 8601 counts weeks,
//! `monthly`): the period a unix-ms instant falls in, its id and the instant it resets.
//! Civil-date math is done here (days since the epoch <-> year, month, day) so the filter
//! needs no date crate.

use serde::{Deserialize, Serialize};

const MS_PER_DAY: u64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

/// The period holding an instant: `id` names it in keys and in the ledger
/// (`2026-12-02`, `2026-W49`, `2026-12`); `[start_ms, reset_ms)` is its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodWindow {
    pub id: String,
    pub start_ms: u64,
    pub reset_ms: u64,
}

impl Period {
    pub fn window(self, now_ms: u64) -> PeriodWindow {
        let day = (now_ms / MS_PER_DAY) as i64;
        let (y, m, d) = civil_from_days(day);
        let (id, start, end) = match self {
            Period::Daily => (format!("{y:04}-{m:02}-{d:02}"), day, day + 1),
            Period::Weekly => {
                let monday = day - weekday(day) as i64;
                let (iso_year, week) = iso_week(day);
                (format!("{iso_year:04}-W{week:02}"), monday, monday + 7)
            }
            Period::Monthly => {
                let first = days_from_civil(y, m, 1);
                let next = if m == 12 { days_from_civil(y + 1, 1, 1) } else { days_from_civil(y, m + 1, 1) };
                (format!("{y:04}-{m:02}"), first, next)
            }
        };
        PeriodWindow { id, start_ms: start as u64 * MS_PER_DAY, reset_ms: end as u64 * MS_PER_DAY }
    }

    /// Which kind of period an id names, from its shape alone (the ledger keeps ids only).
    pub fn of_id(id: &str) -> Option<Period> {
        let b = id.as_bytes();
        let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
        match b.len() {
            10 if digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10) => Some(Period::Daily),
            8 if digits(0..4) && &b[4..6] == b"-W" && digits(6..8) => Some(Period::Weekly),
            7 if digits(0..4) && b[4] == b'-' && digits(5..7) => Some(Period::Monthly),
            _ => None,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01, as (year, month 1-12, day 1-31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// 0 = Monday .. 6 = Sunday; 1970-01-01 was a Thursday.
pub fn weekday(days: i64) -> u32 {
    (days + 3).rem_euclid(7) as u32
}

/// ISO 8601 (year, week): the week belongs to the year holding its Thursday.
pub fn iso_week(days: i64) -> (i64, u32) {
    let thursday = days - weekday(days) as i64 + 3;
    let (year, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
    (year, week as u32)
}

pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

#[cfg(test)]
#[path = "tests/period_tests.rs"]
mod tests;
