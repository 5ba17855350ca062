//! Our finalizer on an object, removed with a JSON patch whose `test` operation makes it fail (and
//! the reconcile retry) if someone changed the list meanwhile. Only ByokKeys of earlier releases
//! carry one (`controller::byokkey::FINALIZER`); none is added any more.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Error;

/// Where our finalizer stands on an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not there.
    Missing,
    /// There, at this index of `metadata.finalizers`.
    Present(usize),
}

pub fn state<K: Resource>(obj: &K, finalizer: &str) -> State {
    obj.finalizers().iter().position(|f| f == finalizer).map_or(State::Missing, State::Present)
}

/// The patch that removes `finalizer` from `index`, if it is still there.
pub fn remove_ops(index: usize, finalizer: &str) -> Vec<Value> {
    vec![
        json!({ "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer }),
        json!({ "op": "remove", "path": format!("/metadata/finalizers/{index}") }),
    ]
}

/// Applies a JSON patch of `ops` to `obj`; returns the patched object.
pub async fn patch<K>(api: &Api<K>, obj: &K, ops: Vec<Value>) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    Ok(api.patch(&obj.name_any(), &PatchParams::default(), &to_patch::<K>(ops)?).await?)
}

fn to_patch<K: serde::Serialize>(ops: Vec<Value>) -> Result<Patch<K>, serde_json::Error> {
    Ok(Patch::Json(serde_json::from_value(Value::Array(ops))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_removal_tests_the_entry_it_removes() {
        let ops = remove_ops(2, "f");
        assert_eq!(ops[0], json!({"op": "test", "path": "/metadata/finalizers/2", "value": "f"}));
        assert_eq!(ops[1], json!({"op": "remove", "path": "/metadata/finalizers/2"}));
        assert!(to_patch::<crate::crd::ByokKey>(ops).is_ok(), "a JSON patch");
    }
}
