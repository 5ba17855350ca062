//! Labels the operator puts on what it writes, so its watches can select only its own objects.

use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "byok-operator";
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// On an encrypted Secret: the uid of the ByokKey it belongs to (names can exceed label limits, uids cannot).
pub const BYOKKEY_UID: &str = "launchgate.ai/byokkey-uid";

pub fn managed() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())])
}

/// Label selector of the operator's encrypted key Secrets.
pub fn encrypted_key_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},{COMPONENT}=encrypted-key")
}
