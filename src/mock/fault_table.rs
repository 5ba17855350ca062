//! The provider faults a key can select, by a marker in the key: the one table both the mock's
//! handlers (`state.rs`, `faults.rs`) and the tests read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault a key can carry. Serialized in snake case (`POST /_mock/behaviour` takes
/// `{"behaviour": {"fault": "reset"}}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// 401 in the provider's envelope (Gemini: UNAUTHENTICATED).
    Unauthorized,
    /// 403 in the provider's envelope.
    Forbidden,
    /// 400 carrying the provider's invalid-key body (Gemini's real answer to a bad key).
    InvalidKey400,
    /// 429 with `retry-after` (and `retry-after-ms` where the provider sends it).
    RateLimited,
    /// 429 with no wait anywhere.
    RateLimitedNoWait,
    /// 500.
    Internal,
    /// 503.
    Unavailable,
    /// 529, Anthropic's `overloaded_error`.
    Overloaded,
    /// 200 headers and half the body, then a TCP reset.
    Reset,
    /// The request is read and never answered.
    Hang,
    /// 200 headers, then the body one byte every [`DRIP_INTERVAL`].
    Drip,
    /// 200 with the first half of the provider's body: cut JSON.
    MalformedJson,
    /// 200 with JSON that is not the provider's shape.
    WrongShape,
    /// 200 with a 50 MiB body (chunked, no Content-Length).
    Huge,
}

/// One row of [`FAULTS`].
#[derive(Clone, Copy, Debug)]
pub struct FaultSpec {
    /// Substring of a key that selects the fault.
    pub marker: &'static str,
    pub fault: Fault,
    /// What the provider does, for tables and messages.
    pub what: &'static str,
}

/// Every fault, with its key marker. Markers share the `fault-` prefix, and none is contained in
/// another or in the older markers of [`Behaviour::for_key`].
pub const FAULTS: [FaultSpec; 14] = [
    FaultSpec { marker: "fault-unauthorized", fault: Fault::Unauthorized, what: "401" },
    FaultSpec { marker: "fault-forbidden", fault: Fault::Forbidden, what: "403" },
    FaultSpec { marker: "fault-badkey400", fault: Fault::InvalidKey400, what: "400 with the invalid-key body" },
    FaultSpec { marker: "fault-ratewait", fault: Fault::RateLimited, what: "429 with Retry-After 1" },
    FaultSpec { marker: "fault-ratenowait", fault: Fault::RateLimitedNoWait, what: "429 without Retry-After" },
    FaultSpec { marker: "fault-internal", fault: Fault::Internal, what: "500" },
    FaultSpec { marker: "fault-unavailable", fault: Fault::Unavailable, what: "503" },
    FaultSpec { marker: "fault-overloaded", fault: Fault::Overloaded, what: "529 overloaded" },
    FaultSpec { marker: "fault-reset", fault: Fault::Reset, what: "TCP reset mid-body" },
    FaultSpec { marker: "fault-hang", fault: Fault::Hang, what: "no answer (timeout)" },
    FaultSpec { marker: "fault-drip", fault: Fault::Drip, what: "body trickling past the deadline" },
    FaultSpec { marker: "fault-badjson", fault: Fault::MalformedJson, what: "200 with malformed JSON" },
    FaultSpec { marker: "fault-wrongshape", fault: Fault::WrongShape, what: "200 with a body of the wrong shape" },
    FaultSpec { marker: "fault-huge", fault: Fault::Huge, what: "200 with a 50 MiB body" },
];

/// Size of the [`Fault::Huge`] body.
pub const HUGE_BODY_BYTES: usize = 50 << 20;

/// Pause between the bytes of a [`Fault::Drip`] body.
pub const DRIP_INTERVAL: Duration = Duration::from_millis(100);

impl Fault {
    /// The fault a key's marker selects, if any.
    pub fn for_key(key: &str) -> Option<Self> {
        FAULTS.iter().find(|spec| key.contains(spec.marker)).map(|spec| spec.fault)
    }

    /// The marker that selects this fault.
    pub fn marker(self) -> &'static str {
        FAULTS.iter().find(|spec| spec.fault == self).map_or("", |spec| spec.marker)
    }
}
