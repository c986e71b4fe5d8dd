//! Time as plain integers: microseconds since the Unix epoch, UTC.
//!
//! Everything that depends on the clock (key expiry, quotas, login throttling) takes `now`
//! as an argument so it can be tested without sleeping; only [`now_micros`] reads the clock.
//! Timestamps go over the wire as AstrBot writes them: ISO-8601 with a `+00:00` offset and
//! microseconds omitted when they are zero.

use std::time::{SystemTime, UNIX_EPOCH};

pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const SECS_PER_DAY: i64 = 86_400;
pub const MICROS_PER_DAY: i64 = SECS_PER_DAY * MICROS_PER_SEC;

/// The current time in microseconds since the epoch.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// The UTC day number (days since 1970-01-01) of an instant.
pub fn utc_day(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY)
}

/// Whole seconds from `micros` until the next UTC midnight, at least 1.
pub fn secs_until_day_end(micros: i64) -> i64 {
    let end = (utc_day(micros) + 1) * MICROS_PER_DAY;
    ((end - micros) + MICROS_PER_SEC - 1) / MICROS_PER_SEC
}

/// `2026-11-22T07:29:45.350022+00:00`, or without the fraction when it is zero.
pub fn iso(micros: i64) -> String {
    let secs = micros.div_euclid(MICROS_PER_SEC);
    let frac = micros.rem_euclid(MICROS_PER_SEC);
    let days = secs.div_euclid(SECS_PER_DAY);
    let rem = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}+00:00")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{frac:06}+00:00")
    }
}

/// An HTTP date (RFC 9110 IMF-fixdate): `Mon, 23 Nov 2026 05:56:55 GMT`.
pub fn http_date(micros: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = micros.div_euclid(MICROS_PER_SEC);
    let days = secs.div_euclid(SECS_PER_DAY);
    let rem = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: a day number to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python_isoformat() {
        assert_eq!(iso(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(iso(1_577_836_800 * MICROS_PER_SEC), "2020-01-01T00:00:00+00:00");
        assert_eq!(iso(1_795_332_585 * MICROS_PER_SEC + 350_022), "2026-11-22T07:29:45.350022+00:00");
        assert_eq!(iso(951_782_400 * MICROS_PER_SEC), "2000-02-29T00:00:00+00:00");
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_795_332_585 * MICROS_PER_SEC), "Sun, 22 Nov 2026 07:29:45 GMT");
    }

    #[test]
    fn day_boundaries() {
        let midnight = 20_000 * MICROS_PER_DAY;
        assert_eq!(utc_day(midnight), 20_000);
        assert_eq!(utc_day(midnight - 1), 19_999);
        assert_eq!(secs_until_day_end(midnight), SECS_PER_DAY);
        assert_eq!(secs_until_day_end(midnight - 1), 1);
        assert_eq!(secs_until_day_end(midnight + 3_600 * MICROS_PER_SEC), SECS_PER_DAY - 3_600);
    }
}
