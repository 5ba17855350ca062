//! The EvalJob reconcile: resolve the key -> snapshot the cases -> create the judge Job ->
//! follow the shards' results into progress and summary.

use std::sync::Arc;
use std::time::Duration;

use crate::events::EventType;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::EvalContext;
use super::keys::resolve_key;
use super::lifecycle;
use super::panel::{self, ResolvedJudge};
use super::standing;
use crate::broker::results::{self as stored, MAX_PARTS, RESULTS_COMPONENT, UnreadableLine, part_name};
use crate::controller::Error;
use crate::crd::conditions::{condition, set_condition};
use crate::crd::{ByokKey, EvalJob, EvalJobStatus, EvalPhase, Progress, ResultsRef, ScorerType};
use crate::judge::wire::CaseResult;
use crate::judge::{cases, junit, scorers, summary};
use crate::judge_job;
use crate::labels::{self, EVALJOB_UID, FIELD_MANAGER};
use crate::providers::ModelTable;

use crate::crd::conditions::evaljob::{CASES_READY, COMPLETE, KEY_RESOLVED, MODEL_DEPRECATED, RESULTS_TRUSTED};

use crate::controller::status::{self, Note};

/// CasesReady reason and Event: the judge's config.json could not be rendered.
const CONFIG_NOT_RENDERED: &str = "JudgeConfigNotRendered";

/// Results of one EvalJob so far, read live from the results ConfigMaps the broker signed.
struct Collected {
    results: Vec<CaseResult>,
    names: Vec<String>,
    shards_done: u32,
    /// ConfigMaps that look like results but were not written by the broker: ignored.
    rejected: Vec<String>,
    /// Lines of the broker's results that are not case results: each counts as an errored case.
    unreadable: Vec<UnreadableLine>,
}

/// Lists metadata only, then reads one ConfigMap at a time, and only names the broker could have
/// written: memory stays bounded by the EvalJob's own results whatever else a tenant creates.
async fn collect_results(ctx: &EvalContext, ej: &EvalJob, ns: &str, uid: &str) -> Result<Collected, Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{EVALJOB_UID}={uid},{}={RESULTS_COMPONENT}", labels::COMPONENT);
    let mut listed: Vec<String> =
        api.list_metadata(&ListParams::default().labels(&selector)).await?.items.iter().map(|m| m.name_any()).collect();
    listed.sort();
    let shards = ej.spec.parallelism.max(1) as u32;
    let expected: std::collections::BTreeSet<String> = (0..shards)
        .flat_map(|s| (0..MAX_PARTS).map(move |p| (s, p)))
        .map(|(s, p)| part_name(&ej.name_any(), s, p))
        .collect();
    let (mut rejected, mut results, mut names, mut unreadable) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut done = std::collections::BTreeSet::new();
    for name in listed {
        if !expected.contains(&name) {
            rejected.push(name);
            continue;
        }
        // Gone since the list: nothing to read.
        let Some(cm) = api.get_opt(&name).await? else { continue };
        let Some(read) = stored::read_config_map(&cm, uid, &ctx.results_mac) else {
            rejected.push(name);
            continue;
        };
        done.extend(read.done_shard);
        names.push(name);
        results.extend(read.results);
        unreadable.extend(read.unreadable);
    }
    results.sort_by_key(|r| r.line);
    Ok(Collected { results, names, shards_done: done.len() as u32, rejected, unreadable })
}

/// The ResultsTrusted=False condition (reason, message) for what was not taken as results, and
/// an Event per cause not already in the condition: forged ConfigMaps first (a security matter),
/// then unreadable lines of the broker's own results (counted as errored cases).
fn untrusted(rejected: &[String], unreadable: &[UnreadableLine], before: Option<&str>) -> Option<Untrusted> {
    let mut causes: Vec<(&'static str, String)> = Vec::new();
    if !rejected.is_empty() {
        let msg = format!(
            "ignored ConfigMaps that look like results but were not written by the key broker: {}",
            rejected.join(", ")
        );
        causes.push(("ForgedResultsIgnored", msg));
    }
    if let Some(first) = unreadable.first() {
        let more = if unreadable.len() > 1 { format!(" (and {} more)", unreadable.len() - 1) } else { String::new() };
        let msg = format!(
            "{} line(s) of the broker's results could not be read and count as errored cases ({}): {first}{more}",
            unreadable.len(),
            stored::UNREADABLE_RESULT
        );
        causes.push(("UnreadableResults", msg));
    }
    let reason = causes.first()?.0;
    let message = causes.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ");
    let events = causes
        .iter()
        .filter(|(_, m)| !before.is_some_and(|b| b.contains(m.as_str())))
        .map(|(r, m)| (EventType::Warning, *r, m.clone()))
        .collect();
    Some(Untrusted { reason, message, events })
}

/// What [`untrusted`] found: the condition's reason and message, and the Events to publish.
struct Untrusted {
    reason: &'static str,
    message: String,
    events: Vec<Note>,
}

fn job_failed(job: &Job) -> Option<String> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| format!("{}: {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

/// One reconcile: observe (the cached EvalJob, its key, its results) -> plan with pure functions
/// (`plan_key`, `plan_results`) -> act (the cases ConfigMap and Job once, the JUnit ConfigMap at
/// the end, status and Events last).
pub async fn reconcile(ej: Arc<EvalJob>, ctx: Arc<EvalContext>) -> Result<Action, Error> {
    let ns = ej.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = ej.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let old = ctx.written.current(&uid, ej.resource_version().as_deref(), ej.status.clone().unwrap_or_default());
    if matches!(old.phase, Some(EvalPhase::Succeeded | EvalPhase::Failed)) {
        // Ended: nothing to write, unless an earlier operator ended it before the gate existed.
        return finish(&ej, &ctx, &old, old.clone(), Vec::new(), None).await;
    }
    let now = Time(jiff::Timestamp::now());
    let mut st = old.clone();
    let mut notes: Vec<Note> = Vec::new();

    if st.job_name.is_none() {
        // 1. The key: resolved once, when the run starts; a running job keeps its key.
        let (key, judges) = match plan_key(&ej, &ctx.byokkeys.state(), &ctx.models, &mut st, &mut notes, &now) {
            KeyStep::Wait => {
                // Look again soon as well: the ByokKey event that wakes this EvalJob can arrive
                // before the key cache it resolves from shows the key Ready.
                return finish(&ej, &ctx, &old, st, notes, Some(Duration::from_secs(3))).await;
            }
            KeyStep::Use(key, judges) => (key, judges),
        };
        // 2. Cases and the Job, created once.
        match start(&ej, &ctx, key, &judges, &mut st, &mut notes, &now).await {
            Ok(None) => {}
            Ok(Some(requeue)) => return finish(&ej, &ctx, &old, st, notes, requeue).await,
            Err(e) => {
                // What status already says (e.g. JudgeConfigNotRendered) is written before the
                // reconcile fails and is retried.
                if let Err(write) = finish(&ej, &ctx, &old, st, notes, None).await {
                    tracing::warn!(error = %write, "could not write the EvalJob's status");
                }
                return Err(e);
            }
        }
    }

    // 3. Results so far: only what the broker wrote counts, and none of it is lost.
    let collected = collect_results(&ctx, &ej, &ns, &uid).await?;
    let job = st.job_name.as_ref().and_then(|j| ctx.jobs.get(&ObjectRef::new(j).within(&ns)));
    let failure = job.as_deref().and_then(job_failed);
    if let Some(results) = plan_results(&ej, collected, failure, &mut st, &mut notes, &now) {
        let junit_cm = junit_config_map(&ej, &junit::junit_xml(&ej.name_any(), &results));
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
        cms.patch(&junit_cm.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&junit_cm)).await?;
        count_cases(&ctx, &ej, &results);
    }
    finish(&ej, &ctx, &old, st, notes, None).await
}

/// What the key step decided.
enum KeyStep {
    /// No usable key yet: the EvalJob waits (status says why).
    Wait,
    /// Start with this key (None: no scorer needs one) and these panel judges.
    Use(Option<Arc<ByokKey>>, Vec<ResolvedJudge>),
}

/// Resolves the key an EvalJob starts with, and says so in status (pure).
fn plan_key(
    ej: &EvalJob,
    keys: &[Arc<ByokKey>],
    models: &ModelTable,
    st: &mut EvalJobStatus,
    notes: &mut Vec<Note>,
    now: &Time,
) -> KeyStep {
    if !ej.spec.scorers.iter().any(|s| s.type_ == ScorerType::LlmJudge) {
        return KeyStep::Use(None, Vec::new());
    }
    let generation = ej.metadata.generation;
    let resolved = resolve_key(ej, keys).and_then(|k| {
        let judges = panel::resolve_judges(ej, keys, |p, azure| models.model_for(p, azure))?;
        Ok((k, judges))
    });
    match resolved {
        Ok((k, judges)) => {
            let mut msg = format!("using ByokKey {}", k.name_any());
            if !judges.is_empty() {
                let panel: Vec<String> =
                    judges.iter().map(|j| format!("{} ({})", j.status.key_ref, j.status.provider)).collect();
                msg.push_str(&format!("; panel judges use {}", panel.join(", ")));
            }
            set_condition(&mut st.conditions, KEY_RESOLVED, "True", "KeyResolved", msg, generation, now);
            KeyStep::Use(Some(k), judges)
        }
        Err(msg) => {
            if st.phase != Some(EvalPhase::WaitingForKey) {
                notes.push((EventType::Warning, "WaitingForKey", msg.clone()));
            }
            set_condition(&mut st.conditions, KEY_RESOLVED, "False", "NoUsableKey", msg, generation, now);
            st.phase = Some(EvalPhase::WaitingForKey);
            KeyStep::Wait
        }
    }
}

/// Snapshots the cases and creates the judge Job. Returns Some(requeue) when the run cannot start
/// yet (or ended, the Job name being taken): status says why.
async fn start(
    ej: &EvalJob,
    ctx: &EvalContext,
    key: Option<Arc<ByokKey>>,
    judges: &[ResolvedJudge],
    st: &mut EvalJobStatus,
    notes: &mut Vec<Note>,
    now: &Time,
) -> Result<Option<Option<Duration>>, Error> {
    let ns = ej.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = ej.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let generation = ej.metadata.generation;
    let cases = match cases_jsonl(ej, ctx, &ns).await? {
        Ok(text) => text,
        Err(msg) => {
            set_condition(&mut st.conditions, CASES_READY, "False", "CasesNotFound", msg.clone(), generation, now);
            notes.push((EventType::Warning, "CasesNotFound", msg));
            st.phase = Some(EvalPhase::Pending);
            return Ok(Some(Some(Duration::from_secs(15))));
        }
    };
    let checked = cases::check(&cases);
    if let Some((id, first, line)) = &checked.duplicate {
        let msg = format!(
            "case id {id:?} is on line {first} and again on line {line}: results are kept by id, so ids must be unique"
        );
        return Ok(Some(cases_invalid(ej, st, notes, msg, now)));
    }
    warn_malformed(&checked, notes);
    let total = checked.total as i64;
    let azure = key.as_ref().and_then(|k| k.spec.azure.clone());
    warn_invalid_patterns(ej, notes);
    let model = judge_model(ej, ctx, key.as_deref(), st, notes, now);
    let config = judge_job::judge_config(ej, &model, azure, panel::panels(ej, judges), &ctx.settings);
    let cases_cm = match judge_job::cases_config_map(ej, cases, &config) {
        Ok(cm) => cm,
        Err(e) => {
            // Said on the EvalJob, and the reconcile fails (logged, counted, retried): never a
            // judge run with an empty config.json.
            notes.push(config_not_rendered(st, &e, generation, now));
            return Err(e.into());
        }
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let bundle = judge_job::ca_bundle(&ns, &ctx.ca_pem);
    // Both must exist before the Job, and neither needs the other: one round trip, not two, on
    // the way from EvalJob to Job.
    let (bundle_patch, cases_patch, cases_name) = (Patch::Apply(&bundle), Patch::Apply(&cases_cm), cases_cm.name_any());
    let (bundle_written, cases_written) = futures::join!(
        cms.patch(judge_job::CA_BUNDLE_CONFIGMAP, &apply, &bundle_patch),
        cms.patch(&cases_name, &apply, &cases_patch),
    );
    bundle_written?;
    if let Err(e) = cases_written {
        let Some(why) = refused(&e) else { return Err(e.into()) };
        let msg = format!(
            "the snapshot of the cases and the judge configuration (ConfigMap {}) was refused by the API server: \
             {why}; make the cases smaller (a ConfigMap holds at most 1 MiB)",
            cases_cm.name_any()
        );
        set_condition(&mut st.conditions, CASES_READY, "False", CASES_REFUSED, msg.clone(), generation, now);
        return Ok(Some(cannot_start(st, notes, CASES_REFUSED, msg, generation, now)));
    }
    set_condition(&mut st.conditions, CASES_READY, "True", "CasesReady", format!("{total} cases"), generation, now);
    let job = judge_job::judge_job(ej, &ctx.settings, &judge_job::Pins::of(&cases_cm, &ctx.ca_pem));
    let created = match create_job(ctx, &ns, &job, &uid).await? {
        Ok(created) => created,
        // Someone else's Job holds the name (never adopted: its pods would get the key), or the
        // API server refused the Job (e.g. spec.template): the EvalJob is immutable, so it ends.
        Err((reason, msg)) => return Ok(Some(cannot_start(st, notes, reason, msg, generation, now))),
    };
    running(st, &created, key.as_deref(), model, total, now);
    st.judges = judges.iter().map(|j| j.status.clone()).collect();
    notes.push((EventType::Normal, "Started", format!("judge Job {} started for {total} cases", job.name_any())));
    Ok(None)
}

/// Cases the judge cannot keep apart: inline ones never change (the run ends); a ConfigMap may be
/// fixed (the run waits, looking again in 15 s).
fn cases_invalid(
    ej: &EvalJob,
    st: &mut EvalJobStatus,
    notes: &mut Vec<Note>,
    msg: String,
    now: &Time,
) -> Option<Duration> {
    let generation = ej.metadata.generation;
    set_condition(&mut st.conditions, CASES_READY, "False", CASES_INVALID, msg.clone(), generation, now);
    if ej.spec.cases_from.is_none() {
        return cannot_start(st, notes, CASES_INVALID, msg, generation, now);
    }
    notes.push((EventType::Warning, CASES_INVALID, format!("{msg}; waiting for the ConfigMap to be fixed")));
    st.phase = Some(EvalPhase::Pending);
    Some(Duration::from_secs(15))
}

/// Malformed lines do not stop the run (the judge errors them, by line): said before it starts.
fn warn_malformed(checked: &cases::CasesCheck, notes: &mut Vec<Note>) {
    if checked.malformed_count == 0 {
        return;
    }
    let more = checked.malformed_count - checked.malformed.len();
    let more = if more > 0 { format!("; and {more} more") } else { String::new() };
    let msg = format!(
        "{} of {} lines are not cases and will be errored, the rest run: {}{more}",
        checked.malformed_count,
        checked.total,
        checked.malformed.join("; ")
    );
    notes.push((EventType::Warning, "MalformedCases", msg));
}

/// A regex scorer whose pattern does not compile errors every case it scores (the run still
/// gives the other scorers' results): said before the run, with the compiler's message.
fn warn_invalid_patterns(ej: &EvalJob, notes: &mut Vec<Note>) {
    for scorer in scorers::prepare_all(&ej.spec.scorers) {
        if let scorers::ScorerKind::Regex(Err(message)) = &scorer.kind {
            let msg = format!(
                "scorer {}: the pattern does not compile, every case will be errored by it: {message}",
                scorer.name
            );
            notes.push((EventType::Warning, "InvalidPattern", msg));
        }
    }
}

/// Condition reasons of a run that cannot start.
const CASES_REFUSED: &str = "CasesRefused";
const CASES_INVALID: &str = "CasesInvalid";
const JOB_REFUSED: &str = "JobRefused";
const JOB_NAME_TAKEN: &str = "JobNameTaken";

/// Ends a run that cannot start (`Complete=True` with `reason`, a Warning Event): no requeue.
fn cannot_start(
    st: &mut EvalJobStatus,
    notes: &mut Vec<Note>,
    reason: &'static str,
    msg: String,
    generation: Option<i64>,
    now: &Time,
) -> Option<Duration> {
    st.phase = Some(EvalPhase::Failed);
    st.completion_time = Some(now.clone());
    set_condition(&mut st.conditions, COMPLETE, "True", reason, msg.clone(), generation, now);
    notes.push((EventType::Warning, reason, msg));
    None
}

/// The API server's message when it refused an object as invalid or too large: permanent for an
/// immutable EvalJob. None for anything a retry may fix.
fn refused(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if matches!(s.code, 400 | 413 | 422) => Some(s.message.clone()),
        _ => None,
    }
}

/// The status of a run whose judge Job was just created.
fn running(st: &mut EvalJobStatus, job: &Job, key: Option<&ByokKey>, model: String, total: i64, now: &Time) {
    st.job_name = Some(job.name_any());
    st.job_uid = job.uid();
    st.key_ref = key.map(|k| k.name_any());
    st.key_prefix = key.and_then(|k| k.status.as_ref()?.key_prefix.clone());
    st.model = Some(model);
    st.progress = Some(Progress { total, completed: 0, display: format!("0/{total}") });
    st.start_time = Some(now.clone());
    st.phase = Some(EvalPhase::Running);
}

/// The judge model (the EvalJob's, else the key's, else the install's default), with its
/// lifecycle said in status (ModelDeprecated) and, when it is dying, in a Warning Event.
fn judge_model(
    ej: &EvalJob,
    ctx: &EvalContext,
    key: Option<&ByokKey>,
    st: &mut EvalJobStatus,
    notes: &mut Vec<Note>,
    now: &Time,
) -> String {
    let azure = key.and_then(|k| k.spec.azure.as_ref());
    let model = ej.spec.model.clone().or_else(|| key.and_then(|k| k.spec.model.clone()));
    let model = model.unwrap_or_else(|| ctx.models.model_for(ej.spec.provider, azure));
    let today = crate::providers::models::today();
    let (status, reason, message) = lifecycle::model_lifecycle(ej.spec.provider, &model, key, today);
    if status == "True" {
        notes.push((EventType::Warning, "ModelDeprecated", message.clone()));
    }
    set_condition(&mut st.conditions, MODEL_DEPRECATED, status, reason, message, ej.metadata.generation, now);
    model
}

/// Folds the results so far into status (pure): trust, progress, summary, and the end of the run
/// when every shard is done (Succeeded) or the Job failed. Returns the results when the run
/// succeeded, for the JUnit ConfigMap (whose name is already in `resultsRef`) and the metrics.
fn plan_results(
    ej: &EvalJob,
    collected: Collected,
    job_failure: Option<String>,
    st: &mut EvalJobStatus,
    notes: &mut Vec<Note>,
    now: &Time,
) -> Option<Vec<CaseResult>> {
    let generation = ej.metadata.generation;
    let Collected { mut results, names: mut refs, shards_done, rejected, unreadable } = collected;
    let before = condition(&st.conditions, RESULTS_TRUSTED).filter(|c| c.status == "False").map(|c| c.message.clone());
    if let Some(Untrusted { reason, message, events }) = untrusted(&rejected, &unreadable, before.as_deref()) {
        notes.extend(events);
        set_condition(&mut st.conditions, RESULTS_TRUSTED, "False", reason, message, generation, now);
    }
    let names = scorers::scorer_names(&ej.spec.scorers);
    results.extend(unreadable.iter().map(|u| u.errored_case(&names)));
    let total = st.progress.as_ref().map_or(0, |p| p.total);
    let completed = results.len() as i64;
    st.progress = Some(Progress { total, completed, display: format!("{completed}/{total}") });
    if !results.is_empty() {
        st.summary = Some(summary::summarize(&results, &names));
        st.usage = Some(summary::usage(&results));
    }
    let mut succeeded = None;
    if shards_done >= ej.spec.parallelism.max(1) as u32 {
        refs.insert(0, junit_config_map_name(ej));
        st.phase = Some(EvalPhase::Succeeded);
        st.completion_time = Some(now.clone());
        let s = st.summary.clone().unwrap_or_default();
        let msg = format!("{} passed, {} failed, {} errored of {total}", s.passed, s.failed, s.errored);
        set_condition(&mut st.conditions, COMPLETE, "True", "Succeeded", msg.clone(), generation, now);
        notes.push((EventType::Normal, "Succeeded", msg));
        succeeded = Some(results);
    } else if let Some(reason) = job_failure {
        st.phase = Some(EvalPhase::Failed);
        st.completion_time = Some(now.clone());
        set_condition(&mut st.conditions, COMPLETE, "True", "Failed", reason.clone(), generation, now);
        notes.push((EventType::Warning, "Failed", reason));
    }
    st.results_ref = (!refs.is_empty()).then_some(ResultsRef { config_maps: refs });
    succeeded
}

/// Creates the judge Job. A Job of that name that already exists is taken only if it is this
/// EvalJob's, exactly as desired (a restart between create and status write); anything else, a
/// Job someone created first under the name, is refused with a message.
async fn create_job(
    ctx: &EvalContext,
    ns: &str,
    job: &Job,
    ej_uid: &str,
) -> Result<Result<Job, (&'static str, String)>, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match jobs.create(&PostParams::default(), job).await {
        Ok(created) => return Ok(Ok(created)),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            let Some(why) = refused(&e) else { return Err(e.into()) };
            let msg =
                format!("the API server refused the judge Job: {why}; check spec.template and create a new EvalJob");
            return Ok(Err((JOB_REFUSED, msg)));
        }
    }
    let name = job.name_any();
    let existing = jobs.get(&name).await?;
    let controlled = existing.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == ej_uid);
    // Compared with the desired Job as the API server stores it (defaults applied), from a dry run
    // under another name: only then is "the same" exact.
    let mut probe = job.clone();
    probe.metadata.name = Some(format!("{name}-probe"));
    let stored = jobs.create(&PostParams { dry_run: true, ..PostParams::default() }, &probe).await?;
    let pod = |j: &Job| j.spec.as_ref().and_then(|s| s.template.spec.clone());
    let same = match (pod(&stored), pod(&existing)) {
        (Some(want), Some(have)) => judge_job::same_judge_pod(&want, &have) && want.volumes == have.volumes,
        _ => false,
    };
    if controlled && same {
        return Ok(Ok(existing));
    }
    Ok(Err((
        JOB_NAME_TAKEN,
        format!(
            "a Job named {name} already exists and is not the judge Job this EvalJob would create: it is not \
             used (its pods would receive the key); delete it and create the EvalJob again"
        ),
    )))
}

/// Counts a finished run's scores in the metrics, by provider, scorer type and outcome.
fn count_cases(ctx: &EvalContext, ej: &EvalJob, results: &[CaseResult]) {
    let names = scorers::scorer_names(&ej.spec.scorers);
    let types: std::collections::HashMap<&String, String> = names
        .iter()
        .zip(&ej.spec.scorers)
        .map(|(n, s)| {
            (n, serde_json::to_value(s.type_).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
        })
        .collect();
    for score in results.iter().flat_map(|r| &r.scores) {
        let outcome = match score.outcome {
            crate::judge::wire::Outcome::Passed => "passed",
            crate::judge::wire::Outcome::Failed => "failed",
            crate::judge::wire::Outcome::Errored => "errored",
        };
        let scorer_type = types.get(&score.scorer).cloned().unwrap_or_else(|| "unknown".into());
        let labels = crate::metrics::CaseLabels { provider: ej.spec.provider.as_str(), scorer_type, outcome };
        ctx.metrics.judge_cases.get_or_create(&labels).inc();
    }
}

fn junit_config_map_name(ej: &EvalJob) -> String {
    crate::names::bounded(&ej.name_any(), "junit")
}

fn junit_config_map(ej: &EvalJob, xml: &str) -> ConfigMap {
    let name = junit_config_map_name(ej);
    judge_job::owned_config_map(ej, name, "eval-junit", [("junit.xml".to_string(), xml.to_string())].into())
}

/// The cases as JSONL: the inline list rendered, or the ConfigMap key read once.
async fn cases_jsonl(ej: &EvalJob, ctx: &EvalContext, ns: &str) -> Result<Result<String, String>, Error> {
    if let Some(cases) = &ej.spec.cases {
        let lines: Vec<String> = cases.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
        return Ok(Ok(lines.join("\n") + "\n"));
    }
    let Some(from) = &ej.spec.cases_from else { return Ok(Err("no cases given".into())) };
    let r = &from.config_map_key_ref;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let text = api.get_opt(&r.name).await?.and_then(|cm| cm.data.and_then(|mut d| d.remove(&r.key)));
    Ok(text.ok_or_else(|| format!("ConfigMap {} has no key {} (or does not exist)", r.name, r.key)))
}

/// CasesReady=False when the operator's own config.json did not render (no user input does that).
fn config_not_rendered(st: &mut EvalJobStatus, e: &serde_json::Error, generation: Option<i64>, now: &Time) -> Note {
    let msg = format!("cannot render the judge's {}: {e}", judge_job::CONFIG_FILE);
    set_condition(&mut st.conditions, CASES_READY, "False", CONFIG_NOT_RENDERED, msg.clone(), generation, now);
    (EventType::Warning, CONFIG_NOT_RENDERED, msg)
}

/// Writes the status (with the gate once the run has ended, and the kstatus conditions) when it
/// changed, then publishes the Events.
async fn finish(
    ej: &EvalJob,
    ctx: &EvalContext,
    old: &EvalJobStatus,
    mut st: EvalJobStatus,
    mut notes: Vec<Note>,
    requeue: Option<Duration>,
) -> Result<Action, Error> {
    let now = Time(jiff::Timestamp::now());
    let gate = standing::conclude(ej, &mut st, &mut notes, &now);
    standing::set_kstatus(ej, &mut st, &now);
    st.observed_generation = ej.metadata.generation;
    if st != *old {
        let ns = ej.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        let api: Api<EvalJob> = Api::namespaced(ctx.client.clone(), &ns);
        let replaced: Vec<String> = ej.resource_version().into_iter().collect();
        status::write(ej, &replaced, &st, &ctx.written, &api).await?;
    }
    // Counted once written: a failed write is judged (and counted) again by the retry.
    if let Some(passed) = gate {
        ctx.metrics.count_gate(passed);
    }
    status::publish(&ctx.recorder, ej, notes);
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreadable(line: usize) -> UnreadableLine {
        UnreadableLine { config_map: "ej-results-0-0".into(), line, error: "expected value".into() }
    }

    fn eval_job(parallelism: i32) -> EvalJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob",
            "metadata": {"name": "ej", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"provider": "openai", "parallelism": parallelism,
                     "scorers": [{"type": "llm_judge", "rubric": "r"}], "cases": [{"id": "a", "output": "x"}]}
        }))
        .expect("evaljob")
    }

    fn collected(n: usize, shards_done: u32) -> Collected {
        let results = (0..n)
            .map(|i| CaseResult {
                id: format!("c{i}"),
                line: i as u32 + 1,
                scores: vec![],
                input_tokens: 1,
                output_tokens: 1,
            })
            .collect();
        Collected { results, names: vec!["ej-results-0".into()], shards_done, rejected: vec![], unreadable: vec![] }
    }

    #[test]
    fn without_a_usable_key_the_evaljob_waits_and_says_so_once() {
        let ej = eval_job(1);
        let now = Time(jiff::Timestamp::now());
        let (mut st, mut notes) = (EvalJobStatus::default(), Vec::new());
        assert!(matches!(plan_key(&ej, &[], &ModelTable::default(), &mut st, &mut notes, &now), KeyStep::Wait));
        assert_eq!(st.phase, Some(EvalPhase::WaitingForKey));
        assert_eq!(condition(&st.conditions, KEY_RESOLVED).map(|c| c.reason.as_str()), Some("NoUsableKey"));
        assert_eq!(notes.len(), 1);
        assert!(matches!(plan_key(&ej, &[], &ModelTable::default(), &mut st, &mut notes, &now), KeyStep::Wait));
        assert_eq!(notes.len(), 1, "no second WaitingForKey Event while still waiting");
    }

    #[test]
    fn results_fold_into_progress_and_the_run_ends_when_every_shard_is_done() {
        let ej = eval_job(2);
        let now = Time(jiff::Timestamp::now());
        let mut st = EvalJobStatus {
            progress: Some(Progress { total: 4, completed: 0, display: "0/4".into() }),
            ..Default::default()
        };
        let mut notes = Vec::new();
        assert!(plan_results(&ej, collected(2, 1), None, &mut st, &mut notes, &now).is_none(), "one shard of two");
        assert_eq!(st.progress.as_ref().map(|p| p.display.as_str()), Some("2/4"));
        assert_eq!(st.phase, None);
        let failed =
            plan_results(&ej, collected(2, 1), Some("BackoffLimitExceeded: x".into()), &mut st, &mut notes, &now);
        assert!(failed.is_none());
        assert_eq!(st.phase, Some(EvalPhase::Failed));
        let mut st = EvalJobStatus {
            progress: Some(Progress { total: 4, completed: 0, display: "0/4".into() }),
            ..Default::default()
        };
        let done = plan_results(&ej, collected(4, 2), None, &mut st, &mut notes, &now).expect("succeeded");
        assert_eq!(done.len(), 4);
        assert_eq!(st.phase, Some(EvalPhase::Succeeded));
        let refs = st.results_ref.expect("refs").config_maps;
        assert_eq!(refs, ["ej-junit".to_string(), "ej-results-0".to_string()], "JUnit first");
    }

    #[test]
    fn unreadable_results_are_shown_and_forged_ones_come_first() {
        assert!(untrusted(&[], &[], None).is_none(), "all read and all signed: nothing to say");
        let u = untrusted(&[], &[unreadable(2), unreadable(5)], None).expect("said");
        assert_eq!(u.reason, "UnreadableResults");
        assert!(u.message.starts_with("2 line(s) of the broker's results could not be read"), "{}", u.message);
        assert!(u.message.contains("ConfigMap ej-results-0-0 line 2: expected value (and 1 more)"), "{}", u.message);
        assert_eq!(u.events.len(), 1);
        // Both: the condition names the forged ConfigMaps first, and each cause gets its Event.
        let both = untrusted(&["ej-results-0-0-x".into()], &[unreadable(2)], None).expect("said");
        assert_eq!(both.reason, "ForgedResultsIgnored");
        assert!(both.message.contains("ej-results-0-0-x") && both.message.contains("UnreadableResult"));
        let reasons: Vec<_> = both.events.iter().map(|(_, r, _)| *r).collect();
        assert_eq!(reasons, ["ForgedResultsIgnored", "UnreadableResults"]);
        // Said before in the condition: no Event again; a new count is news.
        assert!(
            untrusted(&["ej-results-0-0-x".into()], &[unreadable(2)], Some(&both.message))
                .expect("s")
                .events
                .is_empty()
        );
        let more = untrusted(&["ej-results-0-0-x".into()], &[unreadable(2), unreadable(3)], Some(&both.message));
        assert_eq!(more.expect("said").events.len(), 1);
    }
}
