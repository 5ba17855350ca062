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

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::fault_table::{DRIP_INTERVAL, Fault, HUGE_BODY_BYTES};
use super::state::{Behaviour, MockState, fault_injected};

/// A dripped body is padded to this many bytes (two minutes of drip), so it outlasts any deadline.
const DRIP_MIN_BYTES: usize = 1200;
/// How long a [`Fault::Hang`] request is held before the mock gives up on it itself.
const HANG_FOR: Duration = Duration::from_secs(600);
const HUGE_CHUNK: usize = 64 << 10;

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
        Some(Behaviour::Fault(fault)) if fault_injected(fault).is_none() => fault,
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
    use crate::mock::fault_table::FAULTS;

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
