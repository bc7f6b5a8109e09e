//! Durations as the Rollout spec writes them: `90s`, `10m`, `1h30m`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern the CRD checks a duration against; [`Duration::from_str`] accepts exactly these.
pub const DURATION_PATTERN: &str = "^([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?$";

/// A whole number of seconds, written as hours, minutes and seconds in that order, each at most
/// once and with at most 5 digits, at least one of them: `90s`, `10m`, `1h30m`, `0s`. Every
/// such text is also a Go duration, as Kubernetes users write them elsewhere (a Go duration
/// with `ms`, fractions or a sign is refused). Written back in the shortest form (`5m`, not
/// `300s`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    seconds: u64,
}

impl Duration {
    pub const ZERO: Duration = Duration { seconds: 0 };

    pub const fn from_secs(seconds: u64) -> Duration {
        Duration { seconds }
    }

    pub const fn from_mins(minutes: u64) -> Duration {
        Duration {
            seconds: minutes * 60,
        }
    }

    pub const fn as_secs(self) -> u64 {
        self.seconds
    }
}

impl From<Duration> for std::time::Duration {
    fn from(duration: Duration) -> Self {
        std::time::Duration::from_secs(duration.seconds)
    }
}

/// Why a text is not a [`Duration`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDurationError(String);

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a duration: write hours, minutes and seconds in that order, such as 90s, 10m or 1h30m",
            self.0
        )
    }
}

impl std::error::Error for ParseDurationError {}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseDurationError(text.to_string());
        if text.is_empty() {
            return Err(error());
        }
        let mut rest = text;
        let mut seconds = 0u64;
        // Each unit at most once, in this order.
        for (unit, factor) in [('h', 3600), ('m', 60), ('s', 1)] {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || !rest[digits..].starts_with(unit) {
                continue;
            }
            if digits > 5 {
                return Err(error());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| error())?;
            seconds += number * factor;
            rest = &rest[digits + 1..];
        }
        if rest.is_empty() {
            Ok(Duration { seconds })
        } else {
            Err(error())
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (hours, minutes, seconds) = (
            self.seconds / 3600,
            self.seconds / 60 % 60,
            self.seconds % 60,
        );
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 || self.seconds == 0 {
            write!(f, "{seconds}s")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hours_minutes_seconds_in_order() {
        for (text, seconds) in [
            ("0s", 0),
            ("90s", 90),
            ("10m", 600),
            ("1h30m", 5400),
            ("2h", 7200),
            ("1h0m5s", 3605),
            ("99999h", 99999 * 3600),
        ] {
            assert_eq!(text.parse(), Ok(Duration::from_secs(seconds)), "{text}");
        }
        for text in [
            "", "10", "m", "5 m", "1m1h", "1h1h", "1.5h", "-5m", "300ms", "1d", "100000s", "10M",
        ] {
            assert!(text.parse::<Duration>().is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn writes_the_shortest_form() {
        for (seconds, text) in [
            (0, "0s"),
            (300, "5m"),
            (5400, "1h30m"),
            (3605, "1h5s"),
            (59, "59s"),
        ] {
            assert_eq!(Duration::from_secs(seconds).to_string(), text);
        }
    }
}
