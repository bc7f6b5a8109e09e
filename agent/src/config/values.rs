//! The scalar syntaxes of the configuration file: durations, clock times, weekdays, bounded
//! numbers. Pure functions; the caller adds the file and position to the error text.

use std::time::Duration;

/// Longer than any sensible check interval, and short enough that `Instant + duration` can
/// never overflow in the daemon's timers.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// `90s`, `15m`, `1h`, `1h30m`, `2d`, or a plain number of seconds (`3600`). Units go from
/// the largest to the smallest, each at most once, so `1h30m` has one reading only.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration: write a number of seconds or units like \"90s\", \
             \"15m\", \"1h30m\", \"1d\""
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .filter(|d| *d <= MAX_DURATION)
            .ok_or_else(|| too_long(text));
    }
    let mut rest = text;
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen: the next one must be smaller.
    let mut last: Option<usize> = None;
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (number, after) = rest.split_at(digits);
        let mut chars = after.chars();
        let unit = chars.next().ok_or_else(bad)?;
        let index = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        if last.is_some_and(|l| index <= l) {
            return Err(bad());
        }
        last = Some(index);
        let seconds = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[index].1))
            .and_then(|s| s.checked_add(total))
            .ok_or_else(|| too_long(text))?;
        total = seconds;
        rest = chars.as_str();
    }
    if last.is_none() {
        return Err(bad());
    }
    let d = Duration::from_secs(total);
    if d > MAX_DURATION {
        return Err(too_long(text));
    }
    Ok(d)
}

fn too_long(text: &str) -> String {
    format!("{text:?} is longer than the maximum of 366 days")
}

/// `HH:MM` on a 24-hour clock, two digits each; returns the text unchanged when valid.
pub(crate) fn clock_time(text: &str) -> Result<String, String> {
    let bad = || format!("{text:?} is not a time of day: write HH:MM from 00:00 to 23:59");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return Err(bad());
    }
    let hours: u32 = h.parse().map_err(|_| bad())?;
    let minutes: u32 = m.parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    Ok(text.to_string())
}

const DAYS: [(&str, &str); 7] = [
    ("Mon", "Monday"),
    ("Tue", "Tuesday"),
    ("Wed", "Wednesday"),
    ("Thu", "Thursday"),
    ("Fri", "Friday"),
    ("Sat", "Saturday"),
    ("Sun", "Sunday"),
];

/// A weekday in any case, short or full (`sat`, `Saturday`), as its short name (`Sat`), so
/// the strategy code compares one spelling only.
pub(crate) fn weekday(text: &str) -> Result<&'static str, String> {
    DAYS.iter()
        .find(|(short, long)| text.eq_ignore_ascii_case(short) || text.eq_ignore_ascii_case(long))
        .map(|(short, _)| *short)
        .ok_or_else(|| {
            format!("{text:?} is not a weekday: write Mon, Tue, Wed, Thu, Fri, Sat or Sun")
        })
}

/// A decimal whole number in `min..=max`.
pub(crate) fn bounded(text: &str, min: u32, max: u32) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n) && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{text:?} is not a whole number from {min} to {max}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        let secs = |t: &str| duration(t).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("1d2h3m4s"), Ok(93_784));
        assert_eq!(secs("3600"), Ok(3600));
        assert_eq!(secs("0"), Ok(0));
        assert_eq!(secs("0s"), Ok(0));
        for bad in [
            "", "h", "1x", "1.5h", "-1s", "1h 30m", "30m1h", "1h1h", "1hm", " 1h", "1H",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(duration("367d").unwrap_err().contains("366 days"));
        assert!(duration("99999999999999999999").is_err());
        assert!(duration("99999999999999999d").is_err());
        assert_eq!(secs("366d"), Ok(366 * 86_400));
    }

    #[test]
    fn clock_times() {
        assert_eq!(clock_time("00:00").unwrap(), "00:00");
        assert_eq!(clock_time("23:59").unwrap(), "23:59");
        assert_eq!(clock_time("08:05").unwrap(), "08:05");
        for bad in [
            "24:00", "23:60", "8:30", "08:5", "0830", "08:30:00", "+8:30", "", "ab:cd",
        ] {
            assert!(clock_time(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn weekdays() {
        assert_eq!(weekday("Sat"), Ok("Sat"));
        assert_eq!(weekday("sunday"), Ok("Sun"));
        assert_eq!(weekday("MON"), Ok("Mon"));
        assert!(weekday("Sa").is_err());
        assert!(weekday("Funday").is_err());
    }

    #[test]
    fn bounded_numbers() {
        assert_eq!(bounded("1", 1, 100), Ok(1));
        assert_eq!(bounded("100", 1, 100), Ok(100));
        for bad in ["0", "101", "-1", "+5", "abc", "", "1.0", "99999999999"] {
            assert!(bounded(bad, 1, 100).is_err(), "{bad:?} accepted");
        }
    }
}
