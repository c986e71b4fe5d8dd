//! Time as plain integers: microseconds since the Unix epoch, UTC.
//!
//! Everything that depends on the clock (key expiry, quotas, login throttling) takes `now`
//! as an argument so it can be tested without sleeping; only [`now_micros`] reads the clock.
//! Timestamps go over the wire as AstrBot writes them: ISO-8601 with a `+00:00` offset and
//! microseconds omitted when they are zero. [`utc_offset_minutes`] reads a zone's standard
//! offset from the system's zone database, for the system config's `timezone`.

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

/// Minutes east of UTC of the config's `timezone` (an IANA name), from the system's zone
/// database (its standard offset; daylight saving is not applied), else the host's own.
pub fn utc_offset_minutes(zone: &str) -> i64 {
    let valid = !zone.is_empty()
        && !zone.contains("..")
        && zone.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
    let from_db = valid
        .then(|| std::fs::read(format!("/usr/share/zoneinfo/{zone}")).ok())
        .flatten()
        .and_then(|bytes| posix_std_offset(&bytes));
    from_db.unwrap_or_else(host_offset_minutes)
}

/// The standard offset from a TZif file's POSIX footer (`CST-8` is UTC+8).
fn posix_std_offset(tzif: &[u8]) -> Option<i64> {
    let text = String::from_utf8_lossy(tzif);
    let footer = text.trim_end_matches('\n').rsplit('\n').next()?;
    let rest = if let Some(r) = footer.strip_prefix('<') {
        r.split_once('>')?.1
    } else {
        footer.trim_start_matches(|c: char| c.is_ascii_alphabetic())
    };
    let end = rest.find(|c: char| !(c.is_ascii_digit() || "+-:".contains(c))).unwrap_or(rest.len());
    let spec = &rest[..end];
    let (sign, digits) = match spec.strip_prefix('-') {
        Some(d) => (1, d),
        None => (-1, spec.trim_start_matches('+')),
    };
    let mut parts = digits.split(':').map(|p| p.parse::<i64>().ok());
    let hours = parts.next()??;
    let minutes = parts.next().flatten().unwrap_or(0);
    Some(sign * (hours * 60 + minutes))
}

/// The host's own offset, daylight saving included, for a zone the database lacks.
fn host_offset_minutes() -> i64 {
    // SAFETY: localtime_r fills a local struct; time(NULL) reads the clock.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff / 60
    }
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

    #[test]
    fn posix_offsets() {
        assert_eq!(posix_std_offset(b"TZif...\nCST-8\n"), Some(480));
        assert_eq!(posix_std_offset(b"TZif...\nEST5EDT,M3.2.0,M11.1.0\n"), Some(-300));
        assert_eq!(posix_std_offset(b"TZif...\n<+0530>-5:30\n"), Some(330));
        assert_eq!(posix_std_offset(b"TZif...\nUTC0\n"), Some(0));
        assert!(utc_offset_minutes("../../etc/passwd") == host_offset_minutes());
    }
}
