//! The EvalJob controller: resolves a key, creates the judge Job, follows results into status.

pub mod gate;
pub mod keys;
pub mod lifecycle;
pub mod panel;
pub mod reconcile;
pub mod standing;

use std::sync::Arc;

use crate::events::Recorder;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use super::Error;
use crate::crd::{ByokKey, EvalJob, EvalPhase};
pub use crate::judge_job::JudgeSettings;
use crate::providers::ModelTable;

/// Shared state of the EvalJob controller.
pub struct EvalContext {
    pub client: Client,
    pub recorder: Recorder,
    pub models: ModelTable,
    pub settings: JudgeSettings,
    /// The broker CA certificate, published to EvalJob namespaces.
    pub ca_pem: String,
    pub byokkeys: Store<ByokKey>,
    /// Verifies that results ConfigMaps were written by the broker (they are read live, by label,
    /// and only metadata is cached: a tenant's ConfigMaps cannot grow the operator's memory).
    pub results_mac: Arc<crate::broker::results::ResultsMac>,
    pub jobs: Store<Job>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Status last written per EvalJob uid and the resourceVersion it was based on (see the
    /// ByokKey context): a lagging cache must not start a run twice.
    pub written: super::memo::StatusMemo<crate::crd::EvalJobStatus>,
    /// Per-EvalJob backoff of failed reconciles.
    pub retries: super::status::Backoff,
}

async fn timed_reconcile(ej: Arc<EvalJob>, ctx: Arc<EvalContext>) -> Result<Action, Error> {
    let uid = ej.uid();
    let shared = ctx.clone();
    super::status::measured("evaljob", uid, &shared.metrics, &shared.retries, reconcile::reconcile(ej, ctx)).await
}

fn error_policy(ej: Arc<EvalJob>, err: &Error, ctx: Arc<EvalContext>) -> Action {
    super::status::on_error(ej.as_ref(), err, &ctx.retries)
}

/// The APIs the controller watches (all namespaces, or one).
pub struct EvalApis {
    pub evaljobs: Api<EvalJob>,
    pub jobs: Api<Job>,
    /// Metadata only: results are read live (and verified) when an EvalJob reconciles.
    pub config_maps: Api<PartialObjectMeta<ConfigMap>>,
    pub byokkeys: Api<ByokKey>,
}

/// Stores the broker needs from this controller.
pub struct EvalStores {
    pub evaljobs: Store<EvalJob>,
    /// True once `evaljobs` holds the first full list.
    pub evaljobs_synced: tokio::sync::watch::Receiver<bool>,
    pub jobs: Store<Job>,
}

/// Runs the controller; `ready` receives the stores as soon as they exist.
pub async fn run(
    apis: EvalApis,
    concurrency: u16,
    make_ctx: impl FnOnce(Store<Job>) -> EvalContext,
    ready: tokio::sync::oneshot::Sender<EvalStores>,
) {
    let selector = crate::labels::managed_selector();
    let (job_store, job_writer) = reflector::store();
    let jobs = watcher(apis.jobs, watcher::Config::default().labels(&selector))
        .default_backoff()
        .reflect(job_writer)
        .touched_objects();
    // Metadata only: the events wake the EvalJob; results are read live when it reconciles.
    let cms =
        watcher(apis.config_maps, watcher::Config::default().labels(&selector)).default_backoff().touched_objects();
    let (ej_store, main, evaljobs_synced) =
        super::synced_main_stream(apis.evaljobs, watcher::Config::default().any_semantic());
    let controller = Controller::for_stream(main, ej_store.clone());
    let _ = ready.send(EvalStores { evaljobs: ej_store.clone(), evaljobs_synced, jobs: job_store.clone() });
    let ctx = Arc::new(make_ctx(job_store));
    let waiting = ej_store.clone();
    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .owns_stream(jobs)
        .owns_stream(cms)
        .watches(apis.byokkeys, watcher::Config::default().any_semantic(), move |key| {
            // A key changed (Ready, revoked, default moved): EvalJobs of its namespace that are
            // not finished look again, so waiting ones start by themselves.
            let ns = key.namespace();
            waiting
                .state()
                .into_iter()
                .filter(|e| e.namespace() == ns && e.spec.provider == key.spec.provider)
                .filter(|e| {
                    !matches!(e.status.as_ref().and_then(|s| s.phase), Some(EvalPhase::Succeeded | EvalPhase::Failed))
                })
                .map(|e| ObjectRef::from_obj(e.as_ref()))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(timed_reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "evaljob controller event");
            }
        })
        .await;
}
