//! Label selectors, as a Deployment's `selector` matches: every `matchLabels` pair and every
//! `matchExpressions` requirement must hold. An empty selector selects everything.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. An unknown operator matches nothing (the CRD's schema
/// refuses one, so it cannot come from a valid Rollout).
pub fn matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let no_labels = BTreeMap::new();
    let labels = labels.unwrap_or(&no_labels);
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    pairs
        && selector.match_expressions.iter().flatten().all(|req| {
            let value = labels.get(&req.key);
            let values = req.values.as_deref().unwrap_or_default();
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let everything = LabelSelector::default();
        assert!(matches(&everything, Some(&labels(&[]))));
        let selector = LabelSelector {
            match_labels: Some(labels(&[("os", "clb")])),
            match_expressions: Some(vec![
                req("pool", "In", &["a", "b"]),
                req("gpu", "NotIn", &["true"]),
                req("zone", "Exists", &[]),
                req("retired", "DoesNotExist", &[]),
            ]),
        };
        let good = labels(&[("os", "clb"), ("pool", "a"), ("zone", "z1")]);
        assert!(matches(&selector, Some(&good)));
        for (key, value) in [
            ("os", "other"),
            ("pool", "c"),
            ("gpu", "true"),
            ("retired", "yes"),
        ] {
            let mut bad = good.clone();
            bad.insert(key.into(), value.into());
            assert!(
                !matches(&selector, Some(&bad)),
                "{key}={value} must not match"
            );
        }
        let mut no_zone = good.clone();
        no_zone.remove("zone");
        assert!(!matches(&selector, Some(&no_zone)));
        assert!(matches(&everything, None));
        let odd = LabelSelector {
            match_expressions: Some(vec![req("os", "Like", &["clb"])]),
            ..Default::default()
        };
        assert!(!matches(&odd, Some(&good)));
    }
}
