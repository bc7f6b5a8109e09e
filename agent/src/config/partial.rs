//! One file as written: every key optional, values with their positions so that checks made
//! after parsing (ranges, time syntax) still point at the right column.
//!
//! Numbers and durations are read as text: `3600`, `1h` and `"1h"` all arrive as a string and
//! one parser gives every bad value the same kind of message.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::StrategyKind;

/// One key in one file.
#[derive(Debug, Default)]
pub(crate) enum Setting<T> {
    /// Not in this file: earlier files (or the default) stand.
    #[default]
    Absent,
    /// `key:` with no value, `~` or `null`: back to the default, whatever earlier files said.
    Reset,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Setting<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Setting::Reset,
            Some(v) => Setting::Set(v),
        })
    }
}

pub(crate) type Text = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PartialConfig {
    pub image: Setting<Text>,
    pub verify: Setting<bool>,
    pub keys: Setting<Vec<Text>>,
    pub signature_repository: Setting<Text>,
    pub auth_file: Setting<Text>,
    pub insecure: Setting<bool>,
    pub ca_files: Setting<Vec<Text>>,
    pub strategy: Setting<Spanned<StrategyKind>>,
    pub periodic: Setting<PartialPeriodic>,
    pub fleet_lock: Setting<PartialFleetLock>,
    pub check_interval: Setting<Text>,
    pub check_jitter: Setting<Text>,
    pub max_tries: Setting<Text>,
    pub hooks: Setting<bool>,
    pub admin_group: Setting<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PartialPeriodic {
    pub time_zone: Setting<Text>,
    pub windows: Setting<Vec<Spanned<PartialWindow>>>,
}

/// A window is replaced as a whole, so its keys are required; missing ones are reported with
/// the window's position rather than serde's generic message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PartialWindow {
    pub days: Option<Spanned<Vec<Text>>>,
    pub start_time: Option<Text>,
    pub length_minutes: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PartialFleetLock {
    pub base_url: Setting<Text>,
    pub group: Setting<Text>,
    pub client_id: Setting<Text>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde::de::{Error as _, Visitor};

    use super::*;
    use crate::config::tree;

    /// Asks a derived `Deserialize` for its field names: serde hands them to
    /// `deserialize_struct`.
    struct Probe<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(Self::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    fn fields_of<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
        let mut fields = None;
        let _ = T::deserialize(Probe(&mut fields));
        fields.unwrap().to_vec()
    }

    fn names(shape: &[(&'static str, tree::Shape)]) -> Vec<&'static str> {
        shape.iter().map(|(n, _)| *n).collect()
    }

    /// The unknown-key table and the structs must list the same keys, or a valid key would be
    /// warned about (or a typo silently accepted).
    #[test]
    fn known_keys_match_the_structs() {
        assert_eq!(names(tree::TOP_KEYS), fields_of::<PartialConfig>());
        assert_eq!(names(tree::PERIODIC_KEYS), fields_of::<PartialPeriodic>());
        assert_eq!(names(tree::WINDOW_KEYS), fields_of::<PartialWindow>());
        assert_eq!(
            names(tree::FLEET_LOCK_KEYS),
            fields_of::<PartialFleetLock>()
        );
    }
}
