//! A key is handed out once per pod. Each grant is recorded as a ConfigMap in the operator's
//! namespace (tenants cannot write there), created atomically: a second request for the same pod
//! finds the record and is refused. The record is also the audit trail (never the key).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::events::{Event, EventType, Recorder};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};

use super::authn::PodIdentity;
use crate::crd::EvalJob;
use crate::labels;

const COMPONENT: &str = "key-grant";
/// Records outlive any pod that could ask again: a judge Job's deadline is at most 24 hours.
const KEEP_SECONDS: i64 = 26 * 3600;

/// Who got which key, when, and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub job: String,
    pub evaljob: String,
    pub byokkey: String,
    pub kek_id: String,
    pub requester: String,
    pub peer: String,
}

impl Grant {
    pub fn new(id: &PodIdentity, authz: &super::authz::Grant, byokkey: &str, kek_id: &str, peer: IpAddr) -> Self {
        Self {
            namespace: id.namespace.clone(),
            pod: id.pod_name.clone(),
            pod_uid: id.pod_uid.clone(),
            job: authz.job.name_any(),
            evaljob: authz.evaljob.name_any(),
            byokkey: byokkey.into(),
            kek_id: kek_id.into(),
            requester: format!("system:serviceaccount:{}:{}", id.namespace, id.service_account),
            peer: peer.to_string(),
        }
    }

    /// The record: named by the pod uid, so creating it twice fails.
    pub fn record(&self, operator_namespace: &str) -> ConfigMap {
        let l = labels::component(COMPONENT);
        let data = BTreeMap::from([
            ("namespace".to_string(), self.namespace.clone()),
            ("pod".to_string(), self.pod.clone()),
            ("podUid".to_string(), self.pod_uid.clone()),
            ("job".to_string(), self.job.clone()),
            ("evalJob".to_string(), self.evaljob.clone()),
            ("byokKey".to_string(), self.byokkey.clone()),
            ("kekId".to_string(), self.kek_id.clone()),
            ("requester".to_string(), self.requester.clone()),
            ("peer".to_string(), self.peer.clone()),
        ]);
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(record_name(&self.pod_uid)),
                namespace: Some(operator_namespace.into()),
                labels: Some(l),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }
}

pub fn record_name(pod_uid: &str) -> String {
    format!("byok-grant-{}", pod_uid.to_ascii_lowercase())
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the pod was already handed its key")]
    AlreadyGranted,
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// Records the grant; fails with `AlreadyGranted` if the pod had its key before.
pub async fn record(client: &Client, operator_namespace: &str, grant: &Grant) -> Result<(), RecordError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), operator_namespace);
    match api.create(&PostParams::default(), &grant.record(operator_namespace)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(RecordError::AlreadyGranted),
        Err(e) => Err(e.into()),
    }
}

/// A Warning Event on the EvalJob: someone asked for its pod's key a second time.
pub async fn warn_evaljob(recorder: &Recorder, evaljob: &EvalJob, pod: &str) {
    let note = format!(
        "pod {pod} asked for its key a second time: refused (a key is handed out once per pod). \
         Someone other than the judge may be trying to read the key."
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: "KeyRequestedTwice".into(),
        note: Some(note),
        action: "FetchKey".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &evaljob.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish the KeyRequestedTwice event");
    }
}

/// Deletes grant records older than any pod that could still ask, every `every`.
pub async fn sweep(client: Client, operator_namespace: String, every: std::time::Duration) {
    let api: Api<ConfigMap> = Api::namespaced(client, &operator_namespace);
    let selector = labels::component_selector(COMPONENT);
    let mut ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(every));
    while ticks.next().await.is_some() {
        let list = match api.list_metadata(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "could not list key grant records");
                continue;
            }
        };
        let now = jiff::Timestamp::now().as_second();
        for cm in list.items {
            let old = cm.metadata.creation_timestamp.as_ref().is_some_and(|t| now - t.0.as_second() > KEEP_SECONDS);
            if old && let Err(e) = api.delete(&cm.name_any(), &DeleteParams::default()).await {
                tracing::warn!(error = %e, "could not delete an old key grant record");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_named_by_the_pod_and_holds_no_key() {
        let g = Grant {
            namespace: "a".into(),
            pod: "ej-judge-0-abcde".into(),
            pod_uid: "0F-uid".into(),
            job: "ej-judge".into(),
            evaljob: "ej".into(),
            byokkey: "openai".into(),
            kek_id: "k1".into(),
            requester: "system:serviceaccount:a:default".into(),
            peer: "10.244.0.7".into(),
        };
        let cm = g.record("byok-system");
        assert_eq!(cm.metadata.name.as_deref(), Some("byok-grant-0f-uid"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("byok-system"));
        assert_eq!(cm.data.as_ref().and_then(|d| d.get("byokKey")).map(String::as_str), Some("openai"));
    }
}
