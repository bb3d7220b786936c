//! Unit tests of `core::budget::period`.

use super::*;

const DAY: u64 = 86_400_000;

fn ms(y: i64, m: u32, d: u32) -> u64 {
    days_from_civil(y, m, d) as u64 * DAY
}

#[test]
fn civil_round_trip_over_four_centuries() {
    for days in -1_000..150_000 {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days);
    }
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(civil_from_days(20_789), (2026, 12, 2));
}

#[test]
fn leap_years_follow_the_gregorian_rules() {
    assert!(is_leap(2000), "divisible by 400");
    assert!(!is_leap(2100), "divisible by 100, not 400");
    assert!(is_leap(2024));
    assert!(!is_leap(2026));
    assert_eq!(civil_from_days(days_from_civil(2000, 2, 28) + 1), (2000, 2, 29));
    assert_eq!(civil_from_days(days_from_civil(2100, 2, 28) + 1), (2100, 3, 1));
    assert_eq!(civil_from_days(days_from_civil(2024, 2, 28) + 1), (2024, 2, 29));
}

#[test]
fn daily_window_resets_at_utc_midnight() {
    let now = ms(2026, 12, 2) + 13 * 3_600_000 + 5;
    let w = Period::Daily.window(now);
    assert_eq!(w.id, "2026-12-02");
    assert_eq!(w.start_ms, ms(2026, 12, 2));
    assert_eq!(w.reset_ms, ms(2026, 12, 3));
    // The last millisecond of a day is still that day.
    assert_eq!(Period::Daily.window(ms(2026, 12, 3) - 1).id, "2026-12-02");
    assert_eq!(Period::Daily.window(ms(2026, 12, 3)).id, "2026-12-03");
}

#[test]
fn monthly_window_handles_month_and_year_ends() {
    let w = Period::Monthly.window(ms(2026, 12, 31) + DAY - 1);
    assert_eq!(w.id, "2026-12");
    assert_eq!(w.reset_ms, ms(2027, 1, 1));
    let feb = Period::Monthly.window(ms(2000, 2, 29));
    assert_eq!((feb.id.as_str(), feb.reset_ms), ("2000-02", ms(2000, 3, 1)));
    assert_eq!(feb.reset_ms - feb.start_ms, 29 * DAY);
    let feb = Period::Monthly.window(ms(2100, 2, 10));
    assert_eq!(feb.reset_ms - feb.start_ms, 28 * DAY, "2100 is not a leap year");
    assert_eq!(Period::Monthly.window(ms(2026, 4, 30)).reset_ms, ms(2026, 5, 1));
}

#[test]
fn weeks_start_on_monday_and_follow_iso_numbering() {
    // 2026-12-02 is a Wednesday in ISO week 49.
    let w = Period::Weekly.window(ms(2026, 12, 2) + 1);
    assert_eq!(w.id, "2026-W49");
    assert_eq!(w.start_ms, ms(2026, 11, 30));
    assert_eq!(w.reset_ms, ms(2026, 12, 7));
    assert_eq!(weekday(days_from_civil(2026, 11, 30)), 0, "a Monday");
    // Sunday ends the week; Monday starts the next.
    assert_eq!(Period::Weekly.window(ms(2026, 12, 6)).id, "2026-W49");
    assert_eq!(Period::Weekly.window(ms(2026, 12, 7)).id, "2026-W50");
}

#[test]
fn iso_weeks_across_year_boundaries_and_week_53() {
    // 2020 has 53 ISO weeks; 2021-01-03 (Sunday) still belongs to 2020-W53.
    assert_eq!(Period::Weekly.window(ms(2020, 12, 31)).id, "2020-W53");
    assert_eq!(Period::Weekly.window(ms(2021, 1, 3)).id, "2020-W53");
    assert_eq!(Period::Weekly.window(ms(2021, 1, 4)).id, "2021-W01");
    // 2026 has 53 weeks too (it starts on a Thursday).
    assert_eq!(Period::Weekly.window(ms(2026, 12, 31)).id, "2026-W53");
    assert_eq!(Period::Weekly.window(ms(2027, 1, 3)).id, "2026-W53");
    // 2024-12-30 (Monday) is already 2025-W01.
    assert_eq!(Period::Weekly.window(ms(2024, 12, 30)).id, "2025-W01");
    assert_eq!(Period::Weekly.window(ms(2024, 12, 29)).id, "2024-W52");
    assert_eq!(iso_week(days_from_civil(2099, 12, 31)), (2099, 53));
}

#[test]
fn every_window_holds_its_instant_and_ids_parse_back() {
    for p in [Period::Daily, Period::Weekly, Period::Monthly] {
        let mut t = ms(1999, 12, 20);
        while t < ms(2001, 3, 10) {
            let w = p.window(t);
            assert!(w.start_ms <= t && t < w.reset_ms, "{p:?} {w:?}");
            assert_eq!(p.window(w.reset_ms - 1), w);
            assert_ne!(p.window(w.reset_ms).id, w.id);
            assert_eq!(Period::of_id(&w.id), Some(p));
            t += 7 * 3_600_000 + 13;
        }
    }
    assert_eq!(Period::of_id("2026-12-2"), None);
    assert_eq!(Period::of_id("total"), None);
}
