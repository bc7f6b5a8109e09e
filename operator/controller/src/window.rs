//! The maintenance window: whether new nodes may start now.

use clb_operator_api::{Weekday, Window};
use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;

/// Why a window cannot be evaluated (the CRD's schema checks the shape, not the zone name).
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    #[error("bad time {0:?}: expected HH:MM")]
    BadTime(String),
}

/// Whether `window` is open at `now`. A window whose end is not after its start runs past
/// midnight and belongs to the day it opens on.
pub fn is_open(window: &Window, now: Timestamp) -> Result<bool, WindowError> {
    let zone = TimeZone::get(&window.time_zone)
        .map_err(|_| WindowError::UnknownTimeZone(window.time_zone.clone()))?;
    let start = parse_time(&window.start)?;
    let end = parse_time(&window.end)?;
    let local = now.to_zoned_datetime(zone);
    let time = local.time();
    let today = weekday(local.weekday());
    let yesterday = weekday(local.weekday().previous());
    let opens_on = |day: Weekday| window.days.contains(&day);
    Ok(if start < end {
        opens_on(today) && time >= start && time < end
    } else {
        // Overnight: the part after midnight belongs to yesterday's window.
        (opens_on(today) && time >= start) || (opens_on(yesterday) && time < end)
    })
}

fn parse_time(text: &str) -> Result<Time, WindowError> {
    let bad = || WindowError::BadTime(text.to_string());
    let (hour, minute) = text.split_once(':').ok_or_else(bad)?;
    let hour: i8 = hour.parse().map_err(|_| bad())?;
    let minute: i8 = minute.parse().map_err(|_| bad())?;
    Time::new(hour, minute, 0, 0).map_err(|_| bad())
}

fn weekday(day: jiff::civil::Weekday) -> Weekday {
    use jiff::civil::Weekday as W;
    match day {
        W::Monday => Weekday::Mon,
        W::Tuesday => Weekday::Tue,
        W::Wednesday => Weekday::Wed,
        W::Thursday => Weekday::Thu,
        W::Friday => Weekday::Fri,
        W::Saturday => Weekday::Sat,
        W::Sunday => Weekday::Sun,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn window(days: &[Weekday], start: &str, end: &str, zone: &str) -> Window {
        Window {
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
            time_zone: zone.into(),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_weekend_night_window_in_berlin() {
        let w = window(
            &[Weekday::Sat, Weekday::Sun],
            "02:00",
            "05:00",
            "Europe/Berlin",
        );
        // 2026-12-05 is a Saturday; Berlin is UTC+1 in winter.
        assert!(
            is_open(&w, at("2026-12-05T01:00:00Z")).unwrap(),
            "02:00 Berlin"
        );
        assert!(
            is_open(&w, at("2026-12-05T03:59:59Z")).unwrap(),
            "04:59 Berlin"
        );
        assert!(
            !is_open(&w, at("2026-12-05T04:00:00Z")).unwrap(),
            "05:00 is the end"
        );
        assert!(
            !is_open(&w, at("2026-12-05T00:59:00Z")).unwrap(),
            "01:59 Berlin"
        );
        assert!(
            !is_open(&w, at("2026-12-04T01:30:00Z")).unwrap(),
            "a Friday"
        );
        // Summer time: UTC+2.
        assert!(
            is_open(&w, at("2026-07-04T00:30:00Z")).unwrap(),
            "02:30 CEST"
        );
    }

    #[test]
    fn an_overnight_window_belongs_to_the_day_it_opens() {
        let w = window(&[Weekday::Fri], "22:00", "03:00", "UTC");
        assert!(
            is_open(&w, at("2026-12-04T23:00:00Z")).unwrap(),
            "Friday 23:00"
        );
        assert!(
            is_open(&w, at("2026-12-05T02:00:00Z")).unwrap(),
            "Saturday 02:00"
        );
        assert!(
            !is_open(&w, at("2026-12-05T23:00:00Z")).unwrap(),
            "Saturday 23:00"
        );
        assert!(
            !is_open(&w, at("2026-12-04T02:00:00Z")).unwrap(),
            "Friday 02:00"
        );
    }

    #[test]
    fn an_unknown_zone_is_an_error() {
        let w = window(&Weekday::ALL, "02:00", "05:00", "Mars/Olympus");
        assert!(matches!(
            is_open(&w, at("2026-12-05T03:00:00Z")),
            Err(WindowError::UnknownTimeZone(_))
        ));
    }
}
