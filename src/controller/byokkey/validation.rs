//! When to validate a key, and what a provider's answer means for status: pure functions.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::conditions::byokkey::{MODEL_DEPRECATED, VALIDATED};
use crate::crd::conditions::lifecycle;
use crate::crd::conditions::{condition, set_condition};
use crate::crd::{ByokKeyStatus, KeyPhase, KeyTest};
use crate::providers::CheckOutcome;
use crate::providers::models::{CHECKED, Notice};

/// Why a validation runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// New key material was just imported.
    Imported,
    /// `launchgate.ai/test-requested` carries a token not answered yet.
    TestRequested(String),
    /// The spec changed since the last validation (model, Azure settings, ...).
    SpecChanged,
    /// The last attempt reached no verdict and its backoff has passed.
    Retry,
    /// A Ready key's re-validation interval has passed.
    Periodic,
}

/// Decides whether to call the provider now. `backoff_passed` is false while an Unknown
/// result's Retry-After or backoff is still running.
pub fn due(
    status: &ByokKeyStatus,
    generation: Option<i64>,
    test_token: Option<&str>,
    imported_now: bool,
    now: jiff::Timestamp,
    interval: Duration,
    backoff_passed: bool,
) -> Option<Trigger> {
    if imported_now {
        return Some(Trigger::Imported);
    }
    if let Some(token) = test_token {
        let answered = status.last_test.as_ref().is_some_and(|t| t.request_token == token);
        if !answered {
            return Some(Trigger::TestRequested(token.to_string()));
        }
    }
    match condition(&status.conditions, VALIDATED) {
        None => return Some(Trigger::SpecChanged),
        Some(c) if c.observed_generation != generation => return Some(Trigger::SpecChanged),
        Some(_) => {}
    }
    match status.phase {
        Some(KeyPhase::Unknown) | Some(KeyPhase::Pending) => backoff_passed.then_some(Trigger::Retry),
        Some(KeyPhase::Ready) => (remaining(status, now, interval) == Duration::ZERO).then_some(Trigger::Periodic),
        _ => None,
    }
}

/// Time left until a Ready key's periodic re-validation.
pub fn remaining(status: &ByokKeyStatus, now: jiff::Timestamp, interval: Duration) -> Duration {
    let Some(last) = status.last_validated.as_ref() else { return Duration::ZERO };
    let elapsed = now.duration_since(last.0).unsigned_abs();
    interval.saturating_sub(elapsed)
}

/// The backoff before retrying an Unknown result: exponential from 5 s, capped at 5 minutes, or
/// the provider's Retry-After when it asks for longer (up to an hour). A short Retry-After does not
/// shorten it: a key check is cheap to postpone, unlike a judge call, and a provider that answers
/// "retry after 1 s" to every check must not be asked every second for ever.
pub fn backoff(attempts: u32, retry_after: Option<Duration>) -> Duration {
    let exp = Duration::from_secs(5u64.saturating_mul(1u64 << attempts.min(6))).min(Duration::from_secs(300));
    retry_after.map_or(exp, |ra| ra.min(Duration::from_secs(3600)).max(exp))
}

/// Short result word for `status.lastTest.result` and Events.
pub fn result_word(outcome: &CheckOutcome) -> &'static str {
    match outcome {
        CheckOutcome::Valid { .. } => "Valid",
        CheckOutcome::Invalid { .. } => "Invalid",
        CheckOutcome::ModelUnavailable { .. } => "ModelUnavailable",
        CheckOutcome::Unknown { .. } => "Unknown",
    }
}

/// Writes a provider's answer into status: the Validated condition, the phase, the model's
/// lifecycle (`notice`: deprecated or shut down, from the provider or the dated table), and for
/// an on-demand test, `lastTest` with the request token echoed.
pub fn record(
    status: &mut ByokKeyStatus,
    outcome: &CheckOutcome,
    trigger: &Trigger,
    model: &str,
    notice: Option<&Notice>,
    generation: Option<i64>,
    now: &Time,
) {
    let retired = notice.filter(|n| n.retired);
    let (cond_status, reason, message, phase, http_status) = match outcome {
        CheckOutcome::Valid { http_status, note, .. } => (
            "True",
            "Valid".to_string(),
            match note {
                Some(note) => format!("the provider accepted the key for model {model}; {note}"),
                None => format!("the provider accepted the key for model {model}"),
            },
            KeyPhase::Ready,
            Some(*http_status),
        ),
        CheckOutcome::Invalid { http_status, message, .. } => {
            ("False", outcome.reason_str().to_string(), message.clone(), KeyPhase::Invalid, Some(*http_status))
        }
        CheckOutcome::ModelUnavailable { http_status, message, .. } if retired.is_some() => (
            "False",
            lifecycle::RETIRED.to_string(),
            format!("the key works but {}: {message}", retired.map(Notice::to_string).unwrap_or_default()),
            KeyPhase::Invalid,
            Some(*http_status),
        ),
        CheckOutcome::ModelUnavailable { model, http_status, message } => (
            "False",
            "ModelNotFound".to_string(),
            format!("the key works but model {model} is not available to it: {message}"),
            KeyPhase::Invalid,
            Some(*http_status),
        ),
        CheckOutcome::Unknown { http_status, message, .. } => {
            ("Unknown", outcome.reason_str().to_string(), message.clone(), KeyPhase::Unknown, *http_status)
        }
    };
    set_condition(&mut status.conditions, VALIDATED, cond_status, &reason, message.clone(), generation, now);
    if matches!(outcome, CheckOutcome::Valid { .. } | CheckOutcome::ModelUnavailable { .. }) {
        record_lifecycle(status, model, notice, generation, now);
    }
    status.phase = Some(phase);
    status.model = Some(model.to_string());
    status.last_validated = Some(now.clone());
    if let Trigger::TestRequested(token) = trigger {
        status.last_test = Some(KeyTest {
            time: now.clone(),
            result: result_word(outcome).to_string(),
            http_status,
            message,
            request_token: token.clone(),
        });
    }
}

/// The ModelDeprecated condition: True with the date while the model is dying or dead; the date
/// alone in `modelShutdown` (for the shutdown metric).
fn record_lifecycle(
    status: &mut ByokKeyStatus,
    model: &str,
    notice: Option<&Notice>,
    generation: Option<i64>,
    now: &Time,
) {
    let (cond, reason, message) = match notice {
        Some(n) if n.retired => ("True", lifecycle::RETIRED, n.to_string()),
        Some(n) => ("True", lifecycle::DEPRECATED, n.to_string()),
        None => (
            "False",
            lifecycle::CURRENT,
            format!("no shutdown known for model {model} (lifecycle table checked {CHECKED})"),
        ),
    };
    set_condition(&mut status.conditions, MODEL_DEPRECATED, cond, reason, message, generation, now);
    status.model_shutdown = notice.and_then(|n| n.shutdown).map(|d| d.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).expect("time")
    }

    fn validated(phase: KeyPhase, last: i64, generation: i64) -> ByokKeyStatus {
        let mut st = ByokKeyStatus { phase: Some(phase), last_validated: Some(Time(at(last))), ..Default::default() };
        set_condition(&mut st.conditions, VALIDATED, "True", "Valid", "", Some(generation), &Time(at(last)));
        st
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn import_and_new_tokens_always_validate() {
        let st = validated(KeyPhase::Ready, 0, 1);
        assert_eq!(due(&st, Some(1), None, true, at(1), HOUR, true), Some(Trigger::Imported));
        assert_eq!(due(&st, Some(1), Some("t1"), false, at(1), HOUR, false), Some(Trigger::TestRequested("t1".into())));
    }

    #[test]
    fn answered_token_is_not_tested_again() {
        let mut st = validated(KeyPhase::Ready, 0, 1);
        st.last_test = Some(KeyTest {
            time: Time(at(0)),
            result: "Valid".into(),
            http_status: Some(200),
            message: String::new(),
            request_token: "t1".into(),
        });
        assert_eq!(due(&st, Some(1), Some("t1"), false, at(1), HOUR, true), None);
    }

    #[test]
    fn invalid_keys_are_never_retried_by_themselves() {
        let st = validated(KeyPhase::Invalid, 0, 1);
        assert_eq!(due(&st, Some(1), None, false, at(1_000_000), HOUR, true), None);
        // ...but a spec change validates again.
        assert_eq!(due(&st, Some(2), None, false, at(1), HOUR, true), Some(Trigger::SpecChanged));
    }

    #[test]
    fn unknown_waits_for_backoff_and_ready_for_interval() {
        let st = validated(KeyPhase::Unknown, 0, 1);
        assert_eq!(due(&st, Some(1), None, false, at(1), HOUR, false), None);
        assert_eq!(due(&st, Some(1), None, false, at(1), HOUR, true), Some(Trigger::Retry));
        let st = validated(KeyPhase::Ready, 0, 1);
        assert_eq!(due(&st, Some(1), None, false, at(3599), HOUR, true), None);
        assert_eq!(remaining(&st, at(3599), HOUR), Duration::from_secs(1));
        assert_eq!(due(&st, Some(1), None, false, at(3600), HOUR, true), Some(Trigger::Periodic));
    }

    fn notice(retired: bool) -> Notice {
        Notice {
            model: "gpt-4o".into(),
            retired,
            shutdown: Some("2027-01-14".parse().expect("date")),
            replacement: Some("gpt-5.1".into()),
            source: "test".into(),
        }
    }

    fn valid(note: Option<&str>) -> CheckOutcome {
        CheckOutcome::Valid { http_status: 200, request_id: None, note: note.map(str::to_string), lifecycle: None }
    }

    #[test]
    fn a_dying_model_warns_with_its_date_and_a_note_is_kept() {
        let mut st = ByokKeyStatus::default();
        let now = Time(at(0));
        let dying = notice(false);
        record(&mut st, &valid(Some("cannot list models")), &Trigger::Imported, "gpt-4o", Some(&dying), Some(1), &now);
        assert_eq!(st.phase, Some(KeyPhase::Ready));
        assert!(condition(&st.conditions, VALIDATED).unwrap().message.contains("cannot list models"));
        let c = condition(&st.conditions, MODEL_DEPRECATED).expect("set");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", lifecycle::DEPRECATED));
        assert!(c.message.contains("2027-01-14") && c.message.contains("gpt-5.1"), "{}", c.message);
        assert_eq!(st.model_shutdown.as_deref(), Some("2027-01-14"));
        // Once nothing is known against it, the warning clears.
        record(&mut st, &valid(None), &Trigger::Periodic, "gpt-5.1", None, Some(1), &now);
        let c = condition(&st.conditions, MODEL_DEPRECATED).expect("set");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", lifecycle::CURRENT));
        assert_eq!(st.model_shutdown, None);
    }

    #[test]
    fn a_missing_model_the_table_knows_is_gone_is_model_retired() {
        let mut st = ByokKeyStatus::default();
        let now = Time(at(0));
        let gone = CheckOutcome::ModelUnavailable { model: "gpt-4o".into(), http_status: 404, message: "nope".into() };
        record(&mut st, &gone, &Trigger::Imported, "gpt-4o", Some(&notice(true)), Some(1), &now);
        assert_eq!(st.phase, Some(KeyPhase::Invalid));
        let c = condition(&st.conditions, VALIDATED).expect("set");
        assert_eq!(c.reason, lifecycle::RETIRED);
        assert!(c.message.contains("shut down on 2027-01-14"), "{}", c.message);
        // Without the table's word it stays a plain ModelNotFound.
        record(&mut st, &gone, &Trigger::Periodic, "gpt-4o", None, Some(1), &now);
        assert_eq!(condition(&st.conditions, VALIDATED).expect("set").reason, "ModelNotFound");
        // An outage says nothing about the model: the lifecycle condition is left as it was.
        let before = condition(&st.conditions, MODEL_DEPRECATED).cloned();
        let outage = CheckOutcome::Unknown {
            reason: crate::providers::TransientReason::ServerError,
            http_status: Some(503),
            retry_after: None,
            message: "down".into(),
        };
        record(&mut st, &outage, &Trigger::Retry, "gpt-4o", Some(&notice(false)), Some(1), &now);
        assert_eq!(condition(&st.conditions, MODEL_DEPRECATED).cloned(), before);
    }

    #[test]
    fn backoff_honours_retry_after_and_caps() {
        assert_eq!(backoff(0, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(backoff(0, None), Duration::from_secs(5));
        assert_eq!(backoff(2, None), Duration::from_secs(20));
        assert_eq!(backoff(30, None), Duration::from_secs(300));
        assert_eq!(backoff(0, Some(Duration::from_secs(86_400))), Duration::from_secs(3600));
        // A short wait does not make a storm of checks: the backoff still grows.
        assert_eq!(backoff(0, Some(Duration::from_secs(1))), Duration::from_secs(5));
        assert_eq!(backoff(3, Some(Duration::from_secs(1))), Duration::from_secs(40));
        assert_eq!(backoff(30, Some(Duration::from_secs(1))), Duration::from_secs(300));
    }
}
