//! Maintenance windows of the `periodic` strategy: weekly windows in the wall-clock time of
//! one time zone. Everything here is pure: the time is passed in, so the daemon can sleep
//! until [`Schedule::next_start`] and tests can inject any instant.
//!
//! Daylight saving time, deterministically:
//! - a start time that does not exist that day (the spring-forward gap) is pushed forward by
//!   the gap: `02:30` on 2026-03-29 in Europe/Berlin opens at 03:30 CEST (RFC 5545's rule);
//! - a start time that occurs twice (the autumn repeated hour) opens at its first occurrence
//!   only: `02:30` on 2026-10-25 in Europe/Berlin opens at 02:30 CEST, not again at 02:30 CET;
//! - `length_minutes` is elapsed time, so a window spanning a transition still lasts that many
//!   real minutes (its wall-clock end moves by the shift).

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp};

use super::StrategyError;
use crate::config::{PeriodicConfig, WindowConfig};

/// The longest window: one week (a window every day of that length never closes).
pub const MAX_LENGTH_MINUTES: u32 = 7 * 24 * 60;

#[derive(Debug, Clone)]
pub struct Schedule {
    zone: TimeZone,
    zone_name: String,
    windows: Vec<Window>,
}

#[derive(Debug, Clone)]
struct Window {
    /// Indexed by `Weekday::to_monday_zero_offset`.
    days: [bool; 7],
    start: Time,
    length: SignedDuration,
}

impl Schedule {
    /// Parses the windows and resolves the zone through the system's time zone database
    /// (`/usr/share/zoneinfo`), falling back to the copy bundled in the binary.
    pub fn from_config(config: &PeriodicConfig) -> Result<Self, StrategyError> {
        Self::from_config_in(config, jiff::tz::db())
    }

    /// As [`Schedule::from_config`], with `db` in place of the system's database (tests pass
    /// an empty one to play a host without tzdata).
    pub fn from_config_in(
        config: &PeriodicConfig,
        db: &TimeZoneDatabase,
    ) -> Result<Self, StrategyError> {
        let windows = config
            .windows
            .iter()
            .map(Window::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if windows.is_empty() {
            return Err(StrategyError::NoWindows);
        }
        let (zone, zone_name) = resolve_zone(config.time_zone.as_deref(), db)?;
        Ok(Self {
            zone,
            zone_name,
            windows,
        })
    }

    /// The zone's name as resolved (`Europe/Berlin`, `UTC`, or the host's zone).
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// Whether `now` lies inside a window (start inclusive, end exclusive).
    pub fn contains(&self, now: Timestamp) -> bool {
        let today = self.zone.to_datetime(now).date();
        // A window may be up to a week long, so one that opened 8 local days ago can still
        // be open; the day after covers zones whose transitions happen at midnight.
        self.occurrences(today, -8, 1)
            .any(|(start, end)| start <= now && now < end)
    }

    /// When the next window opens at or after `now` (a window already open does not count
    /// unless it opens exactly at `now`). `None` only at the very end of representable time.
    pub fn next_start(&self, now: Timestamp) -> Option<Timestamp> {
        let today = self.zone.to_datetime(now).date();
        // Every window recurs weekly, so 8 days ahead always holds one.
        self.occurrences(today, -1, 8)
            .map(|(start, _)| start)
            .filter(|start| *start >= now)
            .min()
    }

    /// (start, end) of every window opening on the local dates `today + from ..= today + to`.
    fn occurrences(
        &self,
        today: Date,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        (from..=to)
            .filter_map(move |offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .flat_map(move |date| {
                self.windows
                    .iter()
                    .filter(move |w| w.days[weekday_index(date.weekday())])
                    .filter_map(move |w| {
                        // `compatible`: gap → pushed forward, fold → first occurrence.
                        let start = self
                            .zone
                            .to_ambiguous_timestamp(date.to_datetime(w.start))
                            .compatible()
                            .ok()?;
                        let end = start.checked_add(w.length).ok()?;
                        Some((start, end))
                    })
            })
    }
}

impl Window {
    fn parse(config: &WindowConfig) -> Result<Self, StrategyError> {
        if config.days.is_empty() {
            return Err(StrategyError::NoDays);
        }
        let mut days = [false; 7];
        for day in &config.days {
            days[weekday_index(parse_day(day)?)] = true;
        }
        if !(1..=MAX_LENGTH_MINUTES).contains(&config.length_minutes) {
            return Err(StrategyError::InvalidLength {
                minutes: config.length_minutes,
            });
        }
        Ok(Self {
            days,
            start: parse_start_time(&config.start_time)?,
            length: SignedDuration::from_mins(i64::from(config.length_minutes)),
        })
    }
}

fn weekday_index(day: Weekday) -> usize {
    // to_monday_zero_offset is 0..=6 by definition, so the cast cannot wrap.
    day.to_monday_zero_offset() as usize
}

/// `Mon` … `Sun` or the full English name, any case.
pub fn parse_day(text: &str) -> Result<Weekday, StrategyError> {
    let day = match text.trim().to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => {
            return Err(StrategyError::InvalidDay {
                day: text.to_owned(),
            });
        }
    };
    Ok(day)
}

/// `HH:MM` on the 24-hour clock, two digits each (as the configuration loader checks it).
pub fn parse_start_time(text: &str) -> Result<Time, StrategyError> {
    let invalid = || StrategyError::InvalidStartTime {
        value: text.to_owned(),
    };
    let (h, m) = text.trim().split_once(':').ok_or_else(invalid)?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return Err(invalid());
    }
    let hour: i8 = h.parse().map_err(|_| invalid())?;
    let minute: i8 = m.parse().map_err(|_| invalid())?;
    Time::new(hour, minute, 0, 0).map_err(|_| invalid())
}

/// `None`/`localtime`: the host's zone (`TZ`, else `/etc/localtime`; UTC when neither says);
/// `UTC`; or an IANA name, looked up in `db`, then in the bundled copy.
fn resolve_zone(
    name: Option<&str>,
    db: &TimeZoneDatabase,
) -> Result<(TimeZone, String), StrategyError> {
    let name = name.map(str::trim);
    match name {
        None => Ok(host_zone()),
        Some(n) if n.eq_ignore_ascii_case("localtime") => Ok(host_zone()),
        Some(n) if n.eq_ignore_ascii_case("UTC") => Ok((TimeZone::UTC, "UTC".to_owned())),
        Some(n) => db
            .get(n)
            .or_else(|_| TimeZoneDatabase::bundled().get(n))
            .map(|zone| {
                let canonical = zone.iana_name().unwrap_or(n).to_owned();
                (zone, canonical)
            })
            .map_err(|_| StrategyError::UnknownTimeZone { name: n.to_owned() }),
    }
}

fn host_zone() -> (TimeZone, String) {
    match TimeZone::try_system() {
        Ok(zone) => {
            let name = zone.iana_name().unwrap_or("localtime").to_owned();
            (zone, name)
        }
        Err(e) => {
            // glibc does the same when /etc/localtime is missing: the host runs on UTC.
            tracing::warn!("cannot determine the host's time zone ({e}); using UTC");
            (TimeZone::UTC, "UTC".to_owned())
        }
    }
}
