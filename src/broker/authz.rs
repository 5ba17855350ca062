//! Whether a verified pod may have what it asks for: pod -> Job -> EvalJob, each link checked by
//! uid against the operator's caches (never taken from labels or annotations the caller controls).

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::Refusal;
use super::authn::PodIdentity;
use crate::crd::{EvalJob, EvalPhase};

/// A pod proven to belong to an EvalJob's current Job.
#[derive(Debug, Clone)]
pub struct Grant {
    pub pod: Pod,
    pub job: Arc<Job>,
    pub evaljob: Arc<EvalJob>,
}

fn controller_of<'a>(
    owners: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    owners.iter().find(|o| o.controller == Some(true) && o.kind == kind)
}

fn finished(job: &Job) -> bool {
    let conds = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds.is_some_and(|cs| cs.iter().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"))
}

/// Checks the chain for a verified `id`. `claimed_uid` is the pod uid the caller says it has
/// (from the downward API); `pod` is the live Pod named by the token.
pub fn authorize(
    id: &PodIdentity,
    claimed_uid: &str,
    pod: Option<Pod>,
    jobs: &Store<Job>,
    evaljobs: &Store<EvalJob>,
    require_active: bool,
) -> Result<Grant, Refusal> {
    if claimed_uid != id.pod_uid {
        return Err(Refusal::ReplayFromOtherPod);
    }
    let pod = pod.ok_or(Refusal::PodNotFound)?;
    if pod.uid().as_deref() != Some(id.pod_uid.as_str()) {
        return Err(Refusal::PodUidMismatch);
    }
    let owner = controller_of(pod.owner_references(), "Job").ok_or(Refusal::NotOwnedByEvalJob)?;
    let job = jobs
        .get(&ObjectRef::new(&owner.name).within(&id.namespace))
        .filter(|j| j.uid().as_deref() == Some(owner.uid.as_str()));
    let Some(job) = job else {
        // The owner reference names a Job of ours in another namespace: a pod trying to borrow it.
        let elsewhere = jobs.state().iter().any(|j| j.uid().as_deref() == Some(owner.uid.as_str()));
        return Err(if elsewhere { Refusal::PodInOtherNamespace } else { Refusal::NotOwnedByEvalJob });
    };
    let ej_owner = controller_of(job.owner_references(), "EvalJob").ok_or(Refusal::NotOwnedByEvalJob)?;
    let evaljob = evaljobs
        .get(&ObjectRef::new(&ej_owner.name).within(&id.namespace))
        .filter(|e| e.uid().as_deref() == Some(ej_owner.uid.as_str()))
        .ok_or(Refusal::NotOwnedByEvalJob)?;
    let status = evaljob.status.clone().unwrap_or_default();
    if status.job_name.as_deref() != Some(job.name_any().as_str()) {
        return Err(Refusal::NotOwnedByEvalJob);
    }
    let over = matches!(status.phase, Some(EvalPhase::Succeeded | EvalPhase::Failed));
    if require_active && (finished(&job) || over) {
        return Err(Refusal::JobFinished);
    }
    Ok(Grant { pod, job, evaljob })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn owner(kind: &str, name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }

    fn meta<T: kube::Resource<DynamicType = ()>>(
        mut o: T,
        ns: &str,
        name: &str,
        uid: &str,
        owners: Vec<OwnerReference>,
    ) -> T {
        let m = o.meta_mut();
        m.namespace = Some(ns.into());
        m.name = Some(name.into());
        m.uid = Some(uid.into());
        m.owner_references = Some(owners);
        o
    }

    fn stores(job_ns: &str) -> (Store<Job>, Store<EvalJob>) {
        let mut jw: Writer<Job> = Writer::default();
        let jobs = jw.as_reader();
        jw.apply_watcher_event(&Event::Apply(meta(
            Job::default(),
            job_ns,
            "ej-judge",
            "job-uid",
            vec![owner("EvalJob", "ej", "ej-uid")],
        )));
        let mut ew: Writer<EvalJob> = Writer::default();
        let evaljobs = ew.as_reader();
        let spec: crate::crd::EvalJobSpec = serde_json::from_value(serde_json::json!({
            "provider": "openai", "scorers": [{"type": "json_valid"}], "cases": [{"output": "{}"}]
        }))
        .expect("spec");
        let mut ej = meta(EvalJob::new("ej", spec), "a", "ej", "ej-uid", vec![]);
        ej.status = Some(crate::crd::EvalJobStatus { job_name: Some("ej-judge".into()), ..Default::default() });
        ew.apply_watcher_event(&Event::Apply(ej));
        (jobs, evaljobs)
    }

    fn id(ns: &str) -> PodIdentity {
        PodIdentity {
            namespace: ns.into(),
            service_account: "default".into(),
            pod_name: "p".into(),
            pod_uid: "pod-uid".into(),
        }
    }

    fn pod(ns: &str, uid: &str, owners: Vec<OwnerReference>) -> Pod {
        meta(Pod::default(), ns, "p", uid, owners)
    }

    #[test]
    fn the_evaljobs_own_pod_is_granted() {
        let (jobs, ejs) = stores("a");
        let p = pod("a", "pod-uid", vec![owner("Job", "ej-judge", "job-uid")]);
        assert!(authorize(&id("a"), "pod-uid", Some(p), &jobs, &ejs, true).is_ok());
    }

    #[test]
    fn every_broken_link_is_refused_with_its_reason() {
        let (jobs, ejs) = stores("a");
        let good = || vec![owner("Job", "ej-judge", "job-uid")];
        let check =
            |id: PodIdentity, claimed: &str, p: Option<Pod>| authorize(&id, claimed, p, &jobs, &ejs, true).err();
        assert_eq!(check(id("a"), "other-uid", Some(pod("a", "pod-uid", good()))), Some(Refusal::ReplayFromOtherPod));
        assert_eq!(check(id("a"), "pod-uid", None), Some(Refusal::PodNotFound));
        assert_eq!(check(id("a"), "pod-uid", Some(pod("a", "new-uid", good()))), Some(Refusal::PodUidMismatch));
        assert_eq!(check(id("a"), "pod-uid", Some(pod("a", "pod-uid", vec![]))), Some(Refusal::NotOwnedByEvalJob));
        let forged = vec![owner("Job", "ej-judge", "forged-uid")];
        assert_eq!(check(id("a"), "pod-uid", Some(pod("a", "pod-uid", forged))), Some(Refusal::NotOwnedByEvalJob));
        // A pod in namespace b whose owner reference borrows the Job of namespace a.
        assert_eq!(check(id("b"), "pod-uid", Some(pod("b", "pod-uid", good()))), Some(Refusal::PodInOtherNamespace));
    }
}
