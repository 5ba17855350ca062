//! Provider faults, chosen per key: one table ([`FAULTS`]) of what can go wrong between a client
//! and a provider, each with the key marker that selects it.
//!
//! Status faults (401, 403, 400 invalid-key, 429, 500, 503, 529) are answered by each provider's
//! own handler in its own envelope ([`super::state::Injected`]). Wire faults are done for real on
//! the socket, after the provider has produced its answer ([`inject`]): a TCP reset mid-body (the
//! socket is closed with `SO_LINGER` 0, which sends RST), an answer that never comes, a body
//! trickled a byte at a time, a cut or foreign JSON body, a 50 MiB body streamed without being
//! held in memory. A refused connection cannot be chosen by key (the key is sent after the
//! connection is made): [`super::MockHandle::refused_endpoints`] points at a port nobody listens on.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::state::{Behaviour, Injected, MockState};

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
/// A dripped body is padded to this many bytes (two minutes of drip), so it outlasts any deadline.
const DRIP_MIN_BYTES: usize = 1200;
/// How long a [`Fault::Hang`] request is held before the mock gives up on it itself.
const HANG_FOR: Duration = Duration::from_secs(600);
const HUGE_CHUNK: usize = 64 << 10;

impl Fault {
    /// The fault a key's marker selects, if any.
    pub fn for_key(key: &str) -> Option<Self> {
        FAULTS.iter().find(|spec| key.contains(spec.marker)).map(|spec| spec.fault)
    }

    /// The marker that selects this fault.
    pub fn marker(self) -> &'static str {
        FAULTS.iter().find(|spec| spec.fault == self).map_or("", |spec| spec.marker)
    }

    /// The provider-neutral failure a status fault is answered with; None for wire faults, which
    /// the provider answers normally and [`inject`] then breaks.
    pub(crate) fn injected(self) -> Option<Injected> {
        match self {
            Self::Unauthorized => Some(Injected::Unauthenticated401),
            Self::Forbidden => Some(Injected::Forbidden),
            Self::InvalidKey400 => Some(Injected::InvalidKey400),
            Self::RateLimited => Some(Injected::RateLimit),
            Self::RateLimitedNoWait => Some(Injected::RateLimitNoWait),
            Self::Internal => Some(Injected::Internal),
            Self::Unavailable => Some(Injected::Unavailable),
            Self::Overloaded => Some(Injected::Overloaded),
            Self::Reset | Self::Hang | Self::Drip | Self::MalformedJson | Self::WrongShape | Self::Huge => None,
        }
    }
}

/// The key of a request, whichever provider's header carries it.
fn request_key(request: &Request) -> Option<String> {
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let query = request.uri().query().and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("key=")));
    [header("x-api-key"), header("api-key"), header("x-goog-api-key"), bearer, query]
        .into_iter()
        .flatten()
        .find(|k| !k.is_empty())
        .map(str::to_string)
}

/// Middleware over every provider route: lets the provider answer (which counts the request and
/// renders status faults), then breaks the answer as a wire fault of the key says.
pub(crate) async fn inject(State(state): State<Arc<MockState>>, request: Request, next: Next) -> Response {
    let key = request_key(&request);
    let fault = match key.as_deref().map(|k| state.peek(k)) {
        Some(Behaviour::Fault(fault)) if fault.injected().is_none() => fault,
        _ => return next.run(request).await,
    };
    let conn = request.extensions().get::<ConnectInfo<Conn>>().map(|c| c.0.clone());
    let answer = next.run(request).await;
    let (parts, body) = answer.into_parts();
    // The provider's own answer is small: a model, a list or a verdict.
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match fault {
        Fault::Hang => {
            tokio::time::sleep(HANG_FOR).await;
            build(parts.status, headers, Body::from(body))
        }
        Fault::Reset => reset_mid_body(headers, body, conn),
        Fault::Drip => drip(headers, body),
        Fault::MalformedJson => build(StatusCode::OK, headers, Body::from(body.slice(..body.len() / 2))),
        Fault::WrongShape => build(StatusCode::OK, headers, Body::from(r#"{"status":"ok","result":{"items":[]}}"#)),
        Fault::Huge => huge(headers, body, state, key.unwrap_or_default()),
        _ => build(parts.status, headers, Body::from(body)),
    }
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// 200 declaring the whole body's length, half of it sent, then RST: the client has the status
/// and part of the body when the connection dies under it.
fn reset_mid_body(mut headers: HeaderMap, body: Bytes, conn: Option<Conn>) -> Response {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let half = body.slice(..body.len() / 2);
    let chunks = futures::stream::iter([Ok::<_, io::Error>(half)]).chain(futures::stream::once(async move {
        // Let the first half reach the client before the reset.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(conn) = conn {
            conn.reset.store(true, Ordering::SeqCst);
        }
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "mock: reset mid-body"))
    }));
    build(StatusCode::OK, headers, Body::from_stream(chunks))
}

/// 200 declaring the body's length, then one byte every [`DRIP_INTERVAL`] (leading whitespace
/// pads a short body: it stays valid JSON, and the drip outlasts any client's deadline).
fn drip(mut headers: HeaderMap, body: Bytes) -> Response {
    let mut padded = vec![b' '; DRIP_MIN_BYTES.saturating_sub(body.len())];
    padded.extend_from_slice(&body);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(padded.len()));
    let bytes = futures::stream::iter(padded).then(|byte| async move {
        tokio::time::sleep(DRIP_INTERVAL).await;
        Ok::<_, Infallible>(Bytes::from(vec![byte]))
    });
    build(StatusCode::OK, headers, Body::from_stream(bytes))
}

/// 200 with [`HUGE_BODY_BYTES`] of leading whitespace before the provider's body (valid JSON of
/// the right shape, were it read whole), chunked, generated as it is sent. What was sent is
/// counted against the key, so a test can show the client stopped reading.
fn huge(headers: HeaderMap, body: Bytes, state: Arc<MockState>, key: String) -> Response {
    let padding = HUGE_BODY_BYTES.saturating_sub(body.len());
    let blank = Bytes::from(vec![b' '; HUGE_CHUNK]);
    let pads = (0..padding.div_ceil(HUGE_CHUNK)).map(move |i| blank.slice(..HUGE_CHUNK.min(padding - i * HUGE_CHUNK)));
    let chunks = futures::stream::iter(pads.chain([body])).map(move |chunk| {
        state.count_streamed(&key, chunk.len());
        Ok::<_, Infallible>(chunk)
    });
    build(StatusCode::OK, headers, Body::from_stream(chunks))
}

/// The mock's listener: plain TCP, each connection able to end in a reset.
pub(crate) struct FaultListener(pub TcpListener);

/// What a handler knows of its connection ([`ConnectInfo`]).
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    /// Set to end the connection with RST instead of FIN when it closes.
    reset: Arc<AtomicBool>,
}

/// An accepted connection; closed with `SO_LINGER` 0 (RST) once its [`Conn`] asks for a reset.
pub(crate) struct ConnStream {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Listener for FaultListener {
    type Io = ConnStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let reset = Arc::new(AtomicBool::new(false));
                    let conn = Conn { reset: reset.clone() };
                    return (ConnStream { stream, reset }, conn);
                }
                // Out of file descriptors and the like: wait, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Only the connections' addresses carry a reset flag; the listener's is a fresh one.
    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr().map(|_| Conn { reset: Arc::default() })
    }
}

impl Connected<IncomingStream<'_, FaultListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, FaultListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Drop for ConnStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            // Zero linger turns the close into RST; the socket is not blocking, nothing waits.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_distinct_and_select_their_fault() {
        for spec in FAULTS {
            assert_eq!(Fault::for_key(&format!("sk-proj-{}-0123abcd", spec.marker)), Some(spec.fault));
            assert_eq!(spec.fault.marker(), spec.marker);
            let others = FAULTS.iter().filter(|o| o.marker != spec.marker);
            for other in others {
                assert!(!other.marker.contains(spec.marker), "{} contains {}", other.marker, spec.marker);
            }
            assert_eq!(Behaviour::for_key(spec.marker), Behaviour::Fault(spec.fault));
        }
        assert_eq!(Fault::for_key("sk-proj-0123"), None);
    }
}
