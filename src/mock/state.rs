//! Per-key behaviour and request counting. Keys are only ever held as a 64-bit FNV-1a
//! fingerprint: the mock never stores or logs a plaintext key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::MockConfig;
use super::fault_table::Fault;

/// How the mock answers requests made with a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// A working key.
    #[default]
    Normal,
    /// The provider's real authentication failure.
    Invalid,
    /// OpenAI: lists models but chat fails 401 (missing scope). Others: 403 permission error.
    Restricted,
    /// OpenAI restricted key without "Models: Read": `/v1/models` and `/v1/models/{id}` fail 401
    /// (missing scope `api.model.read`), chat works. Other providers: a working key.
    #[serde(alias = "nomodelread")]
    NoModelRead,
    /// Out of credit: OpenAI 429 insufficient_quota, Anthropic 400 "credit balance is too low",
    /// Gemini 429 daily quota, Azure 429 insufficient_quota.
    Quota,
    /// Anthropic: the workspace's own spend limit reached, 400 "You have reached your specified API
    /// usage limits". Other providers: as [`Behaviour::Quota`].
    #[serde(alias = "spendlimit")]
    SpendLimit,
    /// 429 with Retry-After 1 on every request.
    #[serde(alias = "ratelimit", alias = "rate_limit")]
    RateLimited,
    /// OpenAI/Azure 500, Anthropic 529 overloaded, Gemini 503 UNAVAILABLE.
    #[serde(alias = "servererror")]
    ServerError,
    /// Answers normally after `MockConfig.slow_delay` (5 s by default).
    Slow,
    /// A provider fault from the fault table (`faults::FAULTS`): a status in the provider's
    /// envelope, or a broken answer on the wire.
    Fault(Fault),
}

impl Behaviour {
    /// The default behaviour of a key, from a marker substring: a fault's (`fault-...`, see
    /// `faults::FAULTS`), then "nomodelread", "spendlimit", "invalid", "restricted", "quota",
    /// "ratelimit", "servererror", "slow"; any other key works. The first marker found in this
    /// order wins.
    pub fn for_key(key: &str) -> Self {
        if let Some(fault) = Fault::for_key(key) {
            return Self::Fault(fault);
        }
        const MARKERS: [(&str, Behaviour); 8] = [
            ("nomodelread", Behaviour::NoModelRead),
            ("spendlimit", Behaviour::SpendLimit),
            ("invalid", Behaviour::Invalid),
            ("restricted", Behaviour::Restricted),
            ("quota", Behaviour::Quota),
            ("ratelimit", Behaviour::RateLimited),
            ("servererror", Behaviour::ServerError),
            ("slow", Behaviour::Slow),
        ];
        MARKERS.iter().find(|(marker, _)| key.contains(marker)).map_or(Self::Normal, |(_, b)| *b)
    }
}

/// The failure a request gets, provider-neutral; each provider renders it in its own envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    /// The provider's answer to a bad key (401; Gemini 400 API_KEY_INVALID).
    Unauthorized,
    Restricted,
    Quota,
    SpendLimit,
    /// 429 with the provider's wait headers.
    RateLimit,
    /// Behaviour::ServerError: OpenAI/Azure 500, Anthropic 529, Gemini 503.
    ServerError,
    /// 401 whatever the provider (Gemini: UNAUTHENTICATED, its answer to a bad OAuth token).
    Unauthenticated401,
    /// The provider's invalid-key body with status 400 (Gemini's real answer to a bad key).
    InvalidKey400,
    /// 403 (OpenAI: request_forbidden, as for an unsupported country).
    Forbidden,
    /// 429 without any wait, in headers or body.
    RateLimitNoWait,
    /// 500.
    Internal,
    /// 503.
    Unavailable,
    /// 529 (Anthropic's overloaded_error; no other provider documents it).
    Overloaded,
}

/// Where in request handling a failure is decided. Real services authenticate first, validate the
/// body next, and check credit only when about to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Model listings and lookups.
    Listing { restricted_ok: bool },
    /// A generation request, before its body is validated.
    Request,
    /// A valid generation request, about to be billed.
    Generation,
}

pub(crate) fn injected(behaviour: Behaviour, stage: Stage, quota_blocks_listing: bool) -> Option<Injected> {
    use Behaviour as B;
    match (behaviour, stage) {
        // NoModelRead only changes OpenAI's model listings, which decide it themselves.
        (B::Normal | B::Slow | B::NoModelRead, _) => None,
        (B::Quota, Stage::Generation) => Some(Injected::Quota),
        (B::Quota, Stage::Listing { .. }) if quota_blocks_listing => Some(Injected::Quota),
        (B::SpendLimit, Stage::Generation) => Some(Injected::SpendLimit),
        (B::SpendLimit, Stage::Listing { .. }) if quota_blocks_listing => Some(Injected::SpendLimit),
        (B::Quota | B::SpendLimit, _) | (_, Stage::Generation) => None,
        (B::Fault(fault), _) => fault_injected(fault),
        (B::Invalid, _) => Some(Injected::Unauthorized),
        (B::Restricted, Stage::Listing { restricted_ok: true }) => None,
        (B::Restricted, _) => Some(Injected::Restricted),
        (B::RateLimited, _) => Some(Injected::RateLimit),
        (B::ServerError, _) => Some(Injected::ServerError),
    }
}

/// FNV-1a, 64 bit: stable across runs and platforms (unlike `DefaultHasher`), no extra crate.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// How a key appears in stats: its fingerprint in hex.
pub fn key_fingerprint(key: &str) -> String {
    format!("{:016x}", fnv1a64(key.as_bytes()))
}

#[derive(Default)]
struct KeyEntry {
    requests: u64,
    /// Body bytes handed to the socket for a streamed fault (`Fault::Huge`).
    streamed: u64,
    /// Behaviour set at runtime and how many more requests it applies to (None: until changed).
    forced: Option<(Behaviour, Option<u32>)>,
}

pub(crate) struct MockState {
    pub config: MockConfig,
    latency_ms: AtomicU64,
    sequence: AtomicU64,
    total: AtomicU64,
    keys: Mutex<HashMap<u64, KeyEntry>>,
}

impl MockState {
    pub fn new(config: MockConfig) -> Self {
        let latency_ms = AtomicU64::new(config.latency.as_millis().try_into().unwrap_or(u64::MAX));
        Self { config, latency_ms, sequence: AtomicU64::new(0), total: AtomicU64::new(0), keys: Mutex::default() }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<u64, KeyEntry>> {
        // A poisoned lock only means a panicking test thread: the counters are still usable.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request and decides how to answer it.
    pub fn admit(&self, key: Option<&str>) -> Behaviour {
        self.total.fetch_add(1, Ordering::SeqCst);
        let Some(key) = key else { return Behaviour::Normal };
        let mut keys = self.keys();
        let entry = keys.entry(fnv1a64(key.as_bytes())).or_default();
        entry.requests += 1;
        match entry.forced {
            Some((behaviour, None)) => behaviour,
            Some((behaviour, Some(remaining))) => {
                entry.forced = (remaining > 1).then(|| (behaviour, Some(remaining - 1)));
                behaviour
            }
            None => Behaviour::for_key(key),
        }
    }

    /// How the next request with `key` will be answered, without counting it.
    pub fn peek(&self, key: &str) -> Behaviour {
        match self.keys().get(&fnv1a64(key.as_bytes())).and_then(|e| e.forced) {
            Some((behaviour, _)) => behaviour,
            None => Behaviour::for_key(key),
        }
    }

    /// Counts body bytes of a streamed fault answer as they go to the socket.
    pub fn count_streamed(&self, key: &str, bytes: usize) {
        let mut keys = self.keys();
        let entry = keys.entry(fnv1a64(key.as_bytes())).or_default();
        entry.streamed += u64::try_from(bytes).unwrap_or(u64::MAX);
    }

    pub fn streamed_for_key(&self, key: &str) -> u64 {
        self.keys().get(&fnv1a64(key.as_bytes())).map_or(0, |e| e.streamed)
    }

    /// Waits the global latency, plus the slow delay for slow keys.
    pub async fn delay(&self, behaviour: Behaviour) {
        let mut wait = Duration::from_millis(self.latency_ms.load(Ordering::SeqCst));
        if behaviour == Behaviour::Slow {
            wait += self.config.slow_delay;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    pub fn set_behaviour(&self, key: &str, behaviour: Behaviour, times: Option<u32>) {
        let mut keys = self.keys();
        let entry = keys.entry(fnv1a64(key.as_bytes())).or_default();
        entry.forced = match times {
            Some(0) => None,
            times => Some((behaviour, times)),
        };
    }

    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(latency.as_millis().try_into().unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    pub fn requests_for_key(&self, key: &str) -> u64 {
        self.keys().get(&fnv1a64(key.as_bytes())).map_or(0, |e| e.requests)
    }

    pub fn requests_total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Request counts per key fingerprint.
    pub fn stats(&self) -> HashMap<String, u64> {
        self.keys().iter().filter(|(_, e)| e.requests > 0).map(|(fp, e)| (format!("{fp:016x}"), e.requests)).collect()
    }

    /// A fresh id for request-id headers and response ids.
    pub fn next_id(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::SeqCst);
        format!("{:016x}{:08x}", fnv1a64(&n.to_le_bytes()), n)
    }
}

/// The provider-neutral failure a status fault is answered with; None for wire faults, which
/// the provider answers normally and `faults::inject` then breaks.
pub(crate) fn fault_injected(fault: Fault) -> Option<Injected> {
    match fault {
        Fault::Unauthorized => Some(Injected::Unauthenticated401),
        Fault::Forbidden => Some(Injected::Forbidden),
        Fault::InvalidKey400 => Some(Injected::InvalidKey400),
        Fault::RateLimited => Some(Injected::RateLimit),
        Fault::RateLimitedNoWait => Some(Injected::RateLimitNoWait),
        Fault::Internal => Some(Injected::Internal),
        Fault::Unavailable => Some(Injected::Unavailable),
        Fault::Overloaded => Some(Injected::Overloaded),
        Fault::Reset | Fault::Hang | Fault::Drip | Fault::MalformedJson | Fault::WrongShape | Fault::Huge => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_markers() {
        assert_eq!(Behaviour::for_key("sk-good"), Behaviour::Normal);
        assert_eq!(Behaviour::for_key("sk-invalid-1"), Behaviour::Invalid);
        assert_eq!(Behaviour::for_key("sk-ratelimit"), Behaviour::RateLimited);
        assert_eq!(Behaviour::for_key("servererror"), Behaviour::ServerError);
        assert_eq!(Behaviour::for_key("sk-nomodelread-1"), Behaviour::NoModelRead);
        assert_eq!(Behaviour::for_key("sk-ant-spendlimit"), Behaviour::SpendLimit);
        assert_eq!(Behaviour::for_key("sk-quota"), Behaviour::Quota);
        // Markers never overlap; a key carrying two takes the first in the documented order.
        assert_eq!(Behaviour::for_key("sk-quota-spendlimit"), Behaviour::SpendLimit);
        let parsed: Behaviour = serde_json::from_str("\"spendlimit\"").unwrap();
        assert_eq!(parsed, Behaviour::SpendLimit);
        let parsed: Behaviour = serde_json::from_str("\"no_model_read\"").unwrap();
        assert_eq!(parsed, Behaviour::NoModelRead);
        let parsed: Behaviour = serde_json::from_str(r#"{"fault":"reset"}"#).unwrap();
        assert_eq!(parsed, Behaviour::Fault(Fault::Reset));
        assert_eq!(Behaviour::for_key("sk-proj-fault-huge-0a1b"), Behaviour::Fault(Fault::Huge));
    }

    #[test]
    fn forced_behaviour_expires_after_times() {
        let state = MockState::new(MockConfig::default());
        state.set_behaviour("k", Behaviour::RateLimited, Some(2));
        assert_eq!(state.admit(Some("k")), Behaviour::RateLimited);
        assert_eq!(state.admit(Some("k")), Behaviour::RateLimited);
        assert_eq!(state.admit(Some("k")), Behaviour::Normal);
        assert_eq!(state.admit(None), Behaviour::Normal);
        assert_eq!(state.requests_for_key("k"), 3);
        assert_eq!(state.requests_total(), 4);
        assert_eq!(state.stats().get(&key_fingerprint("k")), Some(&3));
        state.set_behaviour("sk-invalid", Behaviour::Normal, None);
        assert_eq!(state.admit(Some("sk-invalid")), Behaviour::Normal);
    }

    #[test]
    fn stages() {
        let r = Stage::Listing { restricted_ok: true };
        assert_eq!(injected(Behaviour::Restricted, r, false), None);
        assert_eq!(injected(Behaviour::Restricted, Stage::Request, false), Some(Injected::Restricted));
        assert_eq!(injected(Behaviour::Quota, r, false), None);
        assert_eq!(injected(Behaviour::Quota, r, true), Some(Injected::Quota));
        assert_eq!(injected(Behaviour::Quota, Stage::Request, false), None);
        assert_eq!(injected(Behaviour::Quota, Stage::Generation, false), Some(Injected::Quota));
        assert_eq!(injected(Behaviour::Invalid, Stage::Generation, false), None);
        assert_eq!(injected(Behaviour::Invalid, Stage::Request, false), Some(Injected::Unauthorized));
        assert_eq!(injected(Behaviour::SpendLimit, r, false), None);
        assert_eq!(injected(Behaviour::SpendLimit, r, true), Some(Injected::SpendLimit));
        assert_eq!(injected(Behaviour::SpendLimit, Stage::Request, false), None);
        assert_eq!(injected(Behaviour::SpendLimit, Stage::Generation, false), Some(Injected::SpendLimit));
        for stage in [r, Stage::Listing { restricted_ok: false }, Stage::Request, Stage::Generation] {
            assert_eq!(injected(Behaviour::NoModelRead, stage, true), None);
        }
    }
}
