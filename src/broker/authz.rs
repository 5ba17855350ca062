//! Whether a verified pod may have what it asks for: pod -> Job -> EvalJob, each link checked by
//! uid against the operator's caches (never taken from labels or annotations the caller controls).

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::Refusal;
use super::authn::PodIdentity;
use crate::crd::{EvalJob, EvalPhase};
use crate::judge_job::same_judge_pod;

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

/// The Job a pod names as its controller.
pub fn job_owner(pod: &Pod) -> Option<&OwnerReference> {
    controller_of(pod.owner_references(), "Job")
}

/// The EvalJob a Job names as its controller.
pub fn evaljob_owner(job: &Job) -> Option<&OwnerReference> {
    controller_of(job.owner_references(), "EvalJob")
}

/// What the chain's links resolved to: the pod's Job and that Job's EvalJob in the pod's
/// namespace (looked up by the names the owner references give; None when absent, which the
/// caller must have confirmed, not merely missed in a cache).
#[derive(Default)]
pub struct Links {
    pub job: Option<Arc<Job>>,
    pub evaljob: Option<Arc<EvalJob>>,
}

/// Checks the chain for a verified `id`. `claimed_uid` is the pod uid the caller says it has
/// (from the downward API); `pod` is the live Pod named by the token. `jobs` (all of the
/// operator's Jobs) only refines the reason for a pod borrowing another namespace's Job.
pub fn authorize(
    id: &PodIdentity,
    claimed_uid: &str,
    pod: Option<Pod>,
    links: &Links,
    jobs: &Store<Job>,
    require_active: bool,
) -> Result<Grant, Refusal> {
    if claimed_uid != id.pod_uid {
        return Err(Refusal::ReplayFromOtherPod);
    }
    let pod = pod.ok_or(Refusal::PodNotFound)?;
    if pod.uid().as_deref() != Some(id.pod_uid.as_str()) {
        return Err(Refusal::PodUidMismatch);
    }
    let owner = job_owner(&pod).ok_or(Refusal::NotOwnedByEvalJob)?;
    let job = links.job.clone().filter(|j| {
        j.uid().as_deref() == Some(owner.uid.as_str()) && j.namespace().as_deref() == Some(id.namespace.as_str())
    });
    let Some(job) = job else {
        // The owner reference names a Job of ours in another namespace: a pod trying to borrow it.
        let elsewhere = jobs.state().iter().any(|j| j.uid().as_deref() == Some(owner.uid.as_str()));
        return Err(if elsewhere { Refusal::PodInOtherNamespace } else { Refusal::NotOwnedByEvalJob });
    };
    let ej_owner = evaljob_owner(&job).ok_or(Refusal::NotOwnedByEvalJob)?;
    let evaljob = links
        .evaljob
        .clone()
        .filter(|e| e.uid().as_deref() == Some(ej_owner.uid.as_str()))
        .ok_or(Refusal::NotOwnedByEvalJob)?;
    let status = evaljob.status.clone().unwrap_or_default();
    // By uid, not only name: a namespace editor may delete the judge Job and create their own
    // (their image, owner reference copied) under the same name.
    let ours = status.job_name.as_deref() == Some(job.name_any().as_str())
        && status.job_uid.is_some()
        && status.job_uid == job.uid();
    if !ours {
        return Err(Refusal::NotOwnedByEvalJob);
    }
    let over = matches!(status.phase, Some(EvalPhase::Succeeded | EvalPhase::Failed));
    if require_active && (finished(&job) || over) {
        return Err(Refusal::JobFinished);
    }
    Ok(Grant { pod, job, evaljob })
}

/// The pod is the Job controller's copy of the Job's template: same containers (images,
/// commands, mounts), volumes and service account, no ephemeral containers, the EvalJob's label.
/// A pod someone else made, or changed afterwards, is refused whatever its owner references say.
pub fn matches_template(pod: &Pod, job: &Job, evaljob: &EvalJob) -> Result<(), Refusal> {
    let no = Err(Refusal::PodNotFromJobTemplate);
    let Some(template) = job.spec.as_ref().map(|s| &s.template) else { return no };
    let (Some(want), Some(have)) = (template.spec.as_ref(), pod.spec.as_ref()) else { return no };
    let label = |labels: Option<&std::collections::BTreeMap<String, String>>| {
        labels.and_then(|l| l.get(crate::labels::EVALJOB_UID)).cloned()
    };
    let template_label = label(template.metadata.as_ref().and_then(|m| m.labels.as_ref()));
    if label(pod.metadata.labels.as_ref()) != evaljob.uid() || template_label != evaljob.uid() {
        return no;
    }
    // The pod and its Job went through the same defaulting: their volumes must be equal as well.
    let same = same_judge_pod(want, have) && want.volumes == have.volumes;
    if !same {
        return no;
    }
    // A shard the EvalJob does not have (an editor raised the Job's completions) gets nothing.
    let index = completion_index(pod)?;
    if i64::from(index) >= i64::from(evaljob.spec.parallelism.max(1)) {
        return Err(Refusal::ShardMismatch);
    }
    Ok(())
}

/// Pod annotation the Job controller sets on Indexed Job pods.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The pod's completion index. A pod without one (or with one that is not an index) is refused
/// under its own reason, never taken for shard 0.
pub fn completion_index(pod: &Pod) -> Result<u32, Refusal> {
    let index = pod.annotations().get(COMPLETION_INDEX).and_then(|i| i.parse::<u32>().ok());
    index.ok_or(Refusal::NoCompletionIndex)
}

/// The pod is neither finished nor being deleted (its address may already be another pod's).
pub fn alive(pod: &Pod) -> Result<(), Refusal> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed")) {
        return Err(Refusal::PodFinished);
    }
    Ok(())
}

/// The pod may ask for its key only while it is starting (fetch-key is an init container) and
/// not being deleted.
pub fn starting(pod: &Pod) -> Result<(), Refusal> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed" | "Running")) {
        return Err(Refusal::PodNotStarting);
    }
    Ok(())
}

/// The request came from the pod's own address: a token minted for the pod (the `edit` role may
/// mint one) is useless anywhere else. An address the kubelet has not reported yet is retryable.
pub fn from_pod_address(pod: &Pod, peer: std::net::IpAddr) -> Result<(), Refusal> {
    let status = pod.status.as_ref();
    let mut ips: Vec<String> =
        status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| p.ip.clone()).collect();
    ips.extend(status.and_then(|s| s.pod_ip.clone()));
    if ips.is_empty() {
        return Err(Refusal::PodAddressUnknown);
    }
    let peer = match peer {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    if ips.iter().any(|ip| ip.parse::<std::net::IpAddr>().ok() == Some(peer)) {
        Ok(())
    } else {
        Err(Refusal::NotFromPodAddress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;
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
        ej.status = Some(crate::crd::EvalJobStatus {
            job_name: Some("ej-judge".into()),
            job_uid: Some("job-uid".into()),
            ..Default::default()
        });
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

    /// The links as the broker resolves them for a pod of namespace `ns`.
    fn links(ns: &str, jobs: &Store<Job>, ejs: &Store<EvalJob>) -> Links {
        use kube::runtime::reflector::ObjectRef;
        let job = jobs.get(&ObjectRef::new("ej-judge").within(ns));
        let evaljob = ejs.get(&ObjectRef::new("ej").within(ns));
        Links { job, evaljob }
    }

    #[test]
    fn the_evaljobs_own_pod_is_granted() {
        let (jobs, ejs) = stores("a");
        let p = pod("a", "pod-uid", vec![owner("Job", "ej-judge", "job-uid")]);
        assert!(authorize(&id("a"), "pod-uid", Some(p), &links("a", &jobs, &ejs), &jobs, true).is_ok());
    }

    fn templated() -> (Pod, Job, EvalJob) {
        let spec: crate::crd::EvalJobSpec = serde_json::from_value(serde_json::json!({
            "provider": "openai", "scorers": [{"type": "llm_judge", "rubric": "r"}], "cases": [{"output": "x"}]
        }))
        .expect("spec");
        let ej = meta(EvalJob::new("ej", spec), "a", "ej", "ej-uid", vec![]);
        let settings = crate::judge_job::JudgeSettings {
            image: "judge:1".into(),
            broker_url: "https://b".into(),
            endpoints: Default::default(),
            limits: Default::default(),
        };
        let pins =
            crate::judge_job::Pins { config_sha256: "1".into(), cases_sha256: "2".into(), ca_sha256: "3".into() };
        let job = crate::judge_job::judge_job(&ej, &settings, &pins);
        let template = job.spec.clone().expect("spec").template;
        let mut metadata = template.metadata.clone().unwrap_or_default();
        metadata.annotations = Some([(COMPLETION_INDEX.to_string(), "0".to_string())].into());
        let pod = Pod { metadata, spec: template.spec, status: None };
        (pod, job, ej)
    }

    #[test]
    fn only_the_job_templates_own_copy_is_served() {
        let (pod, job, ej) = templated();
        assert_eq!(matches_template(&pod, &job, &ej), Ok(()));
        let mut other_image = pod.clone();
        other_image.spec.as_mut().expect("spec").containers[0].image = Some("attacker:1".into());
        assert_eq!(matches_template(&other_image, &job, &ej), Err(Refusal::PodNotFromJobTemplate));
        let mut other_command = pod.clone();
        other_command.spec.as_mut().expect("spec").init_containers.as_mut().expect("init")[0].command =
            Some(vec!["sh".into()]);
        assert_eq!(matches_template(&other_command, &job, &ej), Err(Refusal::PodNotFromJobTemplate));
        let mut unlabelled = pod.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(matches_template(&unlabelled, &job, &ej), Err(Refusal::PodNotFromJobTemplate));
        let mut more_volumes = pod.clone();
        more_volumes.spec.as_mut().expect("spec").volumes.as_mut().expect("volumes").push(Default::default());
        assert_eq!(matches_template(&more_volumes, &job, &ej), Err(Refusal::PodNotFromJobTemplate));
        let mut extra_shard = pod.clone();
        extra_shard.metadata.annotations = Some([(COMPLETION_INDEX.to_string(), "1".to_string())].into());
        assert_eq!(matches_template(&extra_shard, &job, &ej), Err(Refusal::ShardMismatch), "only the EvalJob's shards");
        // No index, or one that is not an index: its own reason, never shard 0.
        for index in [None, Some(""), Some("-1"), Some("0x0"), Some("zero")] {
            let mut p = pod.clone();
            p.metadata.annotations = index.map(|i| [(COMPLETION_INDEX.to_string(), i.to_string())].into());
            assert_eq!(matches_template(&p, &job, &ej), Err(Refusal::NoCompletionIndex), "{index:?}");
            assert_eq!(completion_index(&p), Err(Refusal::NoCompletionIndex), "{index:?}");
        }
        assert_eq!(completion_index(&pod), Ok(0));
        let mut extra_container = pod.clone();
        extra_container
            .spec
            .as_mut()
            .expect("spec")
            .containers
            .push(Container { name: "x".into(), ..Default::default() });
        assert_eq!(matches_template(&extra_container, &job, &ej), Err(Refusal::PodNotFromJobTemplate));
        let mut debug = pod.clone();
        debug.spec.as_mut().expect("spec").ephemeral_containers = Some(vec![Default::default()]);
        assert_eq!(matches_template(&debug, &job, &ej), Err(Refusal::PodNotFromJobTemplate));
    }

    #[test]
    fn only_the_pods_own_address_and_only_while_it_starts() {
        use k8s_openapi::api::core::v1::{PodIP, PodStatus};
        let mut p = pod("a", "u", vec![]);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert_eq!(from_pod_address(&p, ip("10.244.0.7")), Err(Refusal::PodAddressUnknown));
        p.status = Some(PodStatus {
            phase: Some("Pending".into()),
            pod_ip: Some("10.244.0.7".into()),
            pod_ips: Some(vec![PodIP { ip: "10.244.0.7".into() }]),
            ..Default::default()
        });
        assert_eq!(from_pod_address(&p, ip("10.244.0.7")), Ok(()));
        assert_eq!(from_pod_address(&p, ip("::ffff:10.244.0.7")), Ok(()));
        assert_eq!(from_pod_address(&p, ip("10.244.0.1")), Err(Refusal::NotFromPodAddress));
        assert_eq!(starting(&p), Ok(()));
        p.status.as_mut().expect("status").phase = Some("Running".into());
        assert_eq!(starting(&p), Err(Refusal::PodNotStarting));
        p.status.as_mut().expect("status").phase = Some("Pending".into());
        p.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        assert_eq!(starting(&p), Err(Refusal::PodNotStarting));
    }

    #[test]
    fn every_broken_link_is_refused_with_its_reason() {
        let (jobs, ejs) = stores("a");
        let good = || vec![owner("Job", "ej-judge", "job-uid")];
        let check = |id: PodIdentity, claimed: &str, p: Option<Pod>| {
            let l = links(&id.namespace, &jobs, &ejs);
            authorize(&id, claimed, p, &l, &jobs, true).err()
        };
        assert_eq!(check(id("a"), "other-uid", Some(pod("a", "pod-uid", good()))), Some(Refusal::ReplayFromOtherPod));
        assert_eq!(check(id("a"), "pod-uid", None), Some(Refusal::PodNotFound));
        assert_eq!(check(id("a"), "pod-uid", Some(pod("a", "new-uid", good()))), Some(Refusal::PodUidMismatch));
        assert_eq!(check(id("a"), "pod-uid", Some(pod("a", "pod-uid", vec![]))), Some(Refusal::NotOwnedByEvalJob));
        let forged = vec![owner("Job", "ej-judge", "forged-uid")];
        assert_eq!(check(id("a"), "pod-uid", Some(pod("a", "pod-uid", forged))), Some(Refusal::NotOwnedByEvalJob));
        // A pod in namespace b whose owner reference borrows the Job of namespace a.
        assert_eq!(check(id("b"), "pod-uid", Some(pod("b", "pod-uid", good()))), Some(Refusal::PodInOtherNamespace));
    }

    #[test]
    fn a_job_recreated_under_the_same_name_is_not_the_evaljobs() {
        let (jobs, ejs) = stores("a");
        // The editor deleted ej-judge and created their own, owned by the EvalJob, same name.
        let impostor = meta(Job::default(), "a", "ej-judge", "impostor-uid", vec![owner("EvalJob", "ej", "ej-uid")]);
        let l = Links { job: Some(Arc::new(impostor)), evaljob: links("a", &jobs, &ejs).evaljob };
        let p = pod("a", "pod-uid", vec![owner("Job", "ej-judge", "impostor-uid")]);
        assert_eq!(authorize(&id("a"), "pod-uid", Some(p), &l, &jobs, true).err(), Some(Refusal::NotOwnedByEvalJob));
    }
}
