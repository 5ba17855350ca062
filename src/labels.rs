//! How the operator marks what it writes: labels its watches select on (so they see only its own
//! objects), and the field manager of its server-side applies. Controllers and broker share them.

use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "byok-operator";
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// On everything an EvalJob owns (judge Job and pods, cases and results ConfigMaps): its uid.
pub const EVALJOB_UID: &str = "launchgate.ai/evaljob-uid";

/// The one field manager every server-side apply of the operator uses.
pub const FIELD_MANAGER: &str = "byok-operator";

pub fn managed() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())])
}

/// The labels of one component of what the operator writes.
pub fn component(value: &str) -> BTreeMap<String, String> {
    let mut labels = managed();
    labels.insert(COMPONENT.to_string(), value.to_string());
    labels
}

/// Label selector of everything the operator writes.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// Label selector of one component of what the operator writes.
pub fn component_selector(value: &str) -> String {
    format!("{},{COMPONENT}={value}", managed_selector())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_labels_match_their_selector() {
        let labels = component("encrypted-key");
        let selector = component_selector("encrypted-key");
        assert_eq!(selector, "app.kubernetes.io/managed-by=byok-operator,app.kubernetes.io/component=encrypted-key");
        assert!(selector.split(',').all(|kv| kv.split_once('=').is_some_and(|(k, v)| labels[k] == v)));
    }
}
