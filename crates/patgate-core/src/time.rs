//! Instants as a parameter: the core never reads a clock.

use std::fmt;

/// A moment in time, in whole seconds since the Unix epoch (UTC).
///
/// INVARIANT: the core receives every `Timestamp` it compares from its caller (`now`),
/// so expiry rules are exact and testable at the second.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Seconds in one day.
pub const DAY: i64 = 86_400;

impl Timestamp {
    /// The first second (00:00:00 UTC) of the civil date `year-month-day`, or `None` for a
    /// date that does not exist.
    pub fn from_date(year: i32, month: u32, day: u32) -> Option<Timestamp> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Timestamp(days_from_civil(year, month, day) * DAY))
    }

    /// Parses `YYYY-MM-DD` into the first second of that day (UTC).
    pub fn parse_date(text: &str) -> Option<Timestamp> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = text.get(range)?;
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let year = i32::try_from(number(0..4)?).ok()?;
        Timestamp::from_date(year, number(5..7)?, number(8..10)?)
    }

    /// The civil date `(year, month, day)` of this instant, in UTC.
    pub fn date(self) -> (i32, u32, u32) {
        civil_from_days(self.0.div_euclid(DAY))
    }

    /// This instant moved by `days` whole days.
    pub fn plus_days(self, days: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(days.saturating_mul(DAY)))
    }

    /// Whole seconds since the epoch.
    pub fn seconds(self) -> i64 {
        self.0
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.date();
        let second_of_day = self.0.rem_euclid(DAY);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil algorithm.
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (i32::try_from(year).unwrap_or(i32::MAX), u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for (text, seconds) in [("1970-01-01", 0), ("2000-03-01", 951_868_800), ("2026-11-28", 1_795_824_000)] {
            let stamp = Timestamp::parse_date(text).unwrap();
            assert_eq!(stamp.0, seconds, "{text}");
            let (y, m, d) = stamp.date();
            assert_eq!(format!("{y:04}-{m:02}-{d:02}"), text);
        }
        assert_eq!(Timestamp::parse_date("2024-02-29").map(|t| t.date()), Some((2024, 2, 29)));
        for bad in ["2023-02-29", "2026-13-01", "2026-1-01", "26-01-011", "2026-01-00", "+026-01-01"] {
            assert_eq!(Timestamp::parse_date(bad), None, "{bad}");
        }
    }
}
