//! The Kubernetes KMS v2 plugin protocol (`k8s.io/kms/apis/v2`: `v2.KeyManagementService`,
//! Status, Encrypt, Decrypt) over a unix socket, as kube-apiserver speaks it: any KMS v2 plugin
//! (a cloud KMS's, an HSM's) wraps the operator's DEKs without code here. The messages are
//! written out below from api.proto (six small messages; no protoc on the build machines).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

use super::{Kms, KmsError, Wrapped};
use crate::crypto::WrappedDek;

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub healthz: String,
    #[prost(string, tag = "3")]
    pub key_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DecryptRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub ciphertext: Vec<u8>,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub key_id: String,
    #[prost(map = "string, bytes", tag = "4")]
    pub annotations: HashMap<String, Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DecryptResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub plaintext: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub plaintext: Vec<u8>,
    #[prost(string, tag = "2")]
    pub uid: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub ciphertext: Vec<u8>,
    #[prost(string, tag = "2")]
    pub key_id: String,
    #[prost(map = "string, bytes", tag = "3")]
    pub annotations: HashMap<String, Vec<u8>>,
}

/// What the KMS v2 API allows back (kube-apiserver's own checks).
const MAX_KEY_ID_LEN: usize = 1024;
const MAX_CIPHERTEXT_LEN: usize = 1024;
const MAX_ANNOTATIONS_BYTES: usize = 32 * 1024;

pub struct KmsV2 {
    channel: Channel,
    socket: PathBuf,
}

fn status_error(socket: &std::path::Path, s: tonic::Status) -> KmsError {
    use tonic::Code;
    let what = format!("KMS v2 plugin at {}: {:?}: {}", socket.display(), s.code(), s.message());
    // k8s.io/kms's server answers a plugin's own errors (a wrapped DEK it cannot open, an unknown
    // key id) as Unknown: a refusal, not an outage, or a tampered envelope would be retried forever.
    // tonic reports a socket it cannot reach as Unknown too, with its transport error as the source.
    let transport = std::error::Error::source(&s)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
        || s.message().starts_with("transport error");
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            KmsError::Unavailable(what)
        }
        Code::Unknown if transport => KmsError::Unavailable(what),
        _ => KmsError::Refused(what),
    }
}

/// A per-call id, as kube-apiserver sends one, for the plugin's logs.
fn call_uid() -> String {
    use rand::RngCore;
    format!("byok-{:016x}", rand::rng().next_u64())
}

impl KmsV2 {
    /// A client of the plugin listening on `socket`; connects on first use, and again after the
    /// plugin restarts.
    pub fn new(socket: PathBuf, timeout: Duration) -> Result<Self, KmsError> {
        // The URI is required and unused: every connection goes to the socket.
        let endpoint = Endpoint::from_static("http://kms-v2.local").connect_timeout(timeout).timeout(timeout);
        let path = socket.clone();
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }));
        Ok(Self { channel, socket })
    }

    async fn unary<Req, Resp>(&self, method: &'static str, req: Req) -> Result<Resp, KmsError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| KmsError::Unavailable(format!("KMS v2 plugin at {}: {e}", self.socket.display())))?;
        let path = http::uri::PathAndQuery::from_static(method);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let answer = grpc.unary(tonic::Request::new(req), path, codec).await;
        answer.map(tonic::Response::into_inner).map_err(|s| status_error(&self.socket, s))
    }

    pub async fn status(&self) -> Result<StatusResponse, KmsError> {
        self.unary("/v2.KeyManagementService/Status", StatusRequest {}).await
    }
}

impl Kms for KmsV2 {
    fn kind(&self) -> &'static str {
        "kms-v2"
    }

    fn current_key_id(&self) -> BoxFuture<'_, Result<String, KmsError>> {
        Box::pin(async move {
            let status = self.status().await?;
            if status.version != "v2" && status.version != "v2beta1" {
                return Err(KmsError::Refused(format!("the plugin speaks KMS {:?}, not v2", status.version)));
            }
            if status.healthz != "ok" {
                return Err(KmsError::Unavailable(format!("the plugin is not healthy: {}", status.healthz)));
            }
            if status.key_id.is_empty() || status.key_id.len() > MAX_KEY_ID_LEN {
                return Err(KmsError::Refused("the plugin's key id is empty or too long".into()));
            }
            Ok(status.key_id)
        })
    }

    fn wrap<'a>(&'a self, dek: &'a [u8]) -> BoxFuture<'a, Result<Wrapped, KmsError>> {
        Box::pin(async move {
            let req = EncryptRequest { plaintext: dek.to_vec(), uid: call_uid() };
            let answer: EncryptResponse = self.unary("/v2.KeyManagementService/Encrypt", req).await?;
            let annotations_len: usize = answer.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
            if answer.key_id.is_empty() || answer.key_id.len() > MAX_KEY_ID_LEN {
                return Err(KmsError::Refused("the plugin's encrypt answer has an empty or too long key id".into()));
            }
            if answer.ciphertext.is_empty() || answer.ciphertext.len() > MAX_CIPHERTEXT_LEN {
                return Err(KmsError::Refused("the plugin's ciphertext is empty or over 1 KiB".into()));
            }
            if annotations_len > MAX_ANNOTATIONS_BYTES {
                return Err(KmsError::Refused("the plugin's annotations are over 32 KiB".into()));
            }
            let dek =
                WrappedDek { ciphertext: answer.ciphertext, annotations: answer.annotations.into_iter().collect() };
            Ok(Wrapped { key_id: answer.key_id, dek })
        })
    }

    fn unwrap<'a>(
        &'a self,
        key_id: &'a str,
        dek: &'a WrappedDek,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KmsError>> {
        Box::pin(async move {
            let req = DecryptRequest {
                ciphertext: dek.ciphertext.clone(),
                uid: call_uid(),
                key_id: key_id.to_string(),
                annotations: dek.annotations.clone().into_iter().collect(),
            };
            let answer: DecryptResponse = self.unary("/v2.KeyManagementService/Decrypt", req).await?;
            Ok(Zeroizing::new(answer.plaintext))
        })
    }
}
