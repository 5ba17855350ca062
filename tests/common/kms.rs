//! The external KMSes of tests/kms.rs, as real processes: the KMS v2 plugin of hack/kms-plugin
//! (k8s.io/kms's gRPC service over a unix socket) and a Vault dev server (Transit, Kubernetes
//! auth pointed at the local API server). Both are built by hack/kms.sh (cached).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{TIMEOUT, eventually, random_hex};

/// The path hack/kms.sh prints for `what` (`plugin`, `vault`), or the one hack/test.sh exported.
fn tool(what: &str, var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash").arg(format!("{repo}/hack/kms.sh")).arg(what).output().expect("hack/kms.sh runs");
    assert!(out.status.success(), "hack/kms.sh {what}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kms-{test}-{}", random_hex(3)));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A KMS v2 plugin process; its keys in a file (the last line is the current key).
pub struct Plugin {
    pub socket: PathBuf,
    pub keys: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Plugin {
    pub async fn start(test: &str) -> Self {
        let dir = scratch(test);
        let keys = dir.join("keys.txt");
        std::fs::write(&keys, format!("key-1 {}\n", random_hex(32))).expect("key file");
        let mut p = Self { socket: dir.join("kms.sock"), keys, child: None, log: dir.join("plugin.log") };
        p.restart().await;
        p
    }

    /// Starts (again) and waits for the socket.
    pub async fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(&self.log).expect("plugin log");
        let child = Command::new(tool("plugin", "BYOK_KMS_PLUGIN"))
            .arg("-socket")
            .arg(&self.socket)
            .arg("-keys")
            .arg(&self.keys)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("plugin starts");
        self.child = Some(child);
        let socket = self.socket.clone();
        eventually("the plugin's socket", TIMEOUT, || {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(&socket).await.ok().map(|_| ()) }
        })
        .await;
    }

    /// Adds a key and makes it current: the plugin's remote key rotated.
    pub fn rotate(&self, id: &str) {
        let mut text = std::fs::read_to_string(&self.keys).expect("key file");
        text.push_str(&format!("{id} {}\n", random_hex(32)));
        std::fs::write(&self.keys, text).expect("key file");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Vault dev server with the Transit engine and its key `byok-operator`.
pub struct Vault {
    pub addr: String,
    pub root_token_file: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
}

pub const TRANSIT_KEY: &str = "byok-operator";

impl Vault {
    pub async fn start(test: &str) -> Self {
        let dir = scratch(test);
        let port = std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).expect("port").port();
        let root = random_hex(16);
        let root_token_file = dir.join("root-token");
        std::fs::write(&root_token_file, &root).expect("token file");
        let log = std::fs::File::create(dir.join("vault.log")).expect("vault log");
        let child = Command::new(tool("vault", "BYOK_VAULT"))
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={root}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", &dir)
            .env("VAULT_DISABLE_MLOCK", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("vault starts");
        let vault = Self {
            addr: format!("http://127.0.0.1:{port}"),
            root_token_file,
            dir,
            child: Some(child),
            http: reqwest::Client::new(),
        };
        eventually("Vault unsealed", TIMEOUT, || async {
            let r = vault.http.get(format!("{}/v1/sys/health", vault.addr)).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        vault.call("POST", "sys/mounts/transit", Some(json!({"type": "transit"}))).await;
        vault.call("POST", &format!("transit/keys/{TRANSIT_KEY}"), Some(json!({"type": "aes256-gcm96"}))).await;
        vault
    }

    /// A call as root; panics on an error answer.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let token = std::fs::read_to_string(&self.root_token_file).expect("token");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}/v1/{path}", self.addr)).header("X-Vault-Token", token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("vault answers");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "vault {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Rotates the Transit key: new DEKs are wrapped under its next version.
    pub async fn rotate(&self) {
        self.call("POST", &format!("transit/keys/{TRANSIT_KEY}/rotate"), None).await;
    }

    /// The Kubernetes auth method, pointed at the local API server: it checks the tokens it is
    /// shown with a TokenReview made with `reviewer_jwt`; role `byok-operator` lets the service
    /// account `namespace/name` (audience `vault`) encrypt and decrypt with the Transit key.
    pub async fn enable_kubernetes_auth(
        &self,
        host: &str,
        ca_pem: &str,
        reviewer_jwt: &str,
        namespace: &str,
        name: &str,
    ) {
        self.call("POST", "sys/auth/kubernetes", Some(json!({"type": "kubernetes"}))).await;
        let config = json!({"kubernetes_host": host, "kubernetes_ca_cert": ca_pem, "token_reviewer_jwt": reviewer_jwt});
        self.call("POST", "auth/kubernetes/config", Some(config)).await;
        let policy = format!(
            "path \"transit/encrypt/{TRANSIT_KEY}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/decrypt/{TRANSIT_KEY}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/keys/{TRANSIT_KEY}\" {{ capabilities = [\"read\"] }}\n"
        );
        self.call("PUT", "sys/policies/acl/byok-operator", Some(json!({ "policy": policy }))).await;
        let role = json!({
            "bound_service_account_names": [name],
            "bound_service_account_namespaces": [namespace],
            "audience": "vault",
            "token_policies": ["byok-operator"],
            "token_ttl": "1h",
        });
        self.call("POST", "auth/kubernetes/role/byok-operator", Some(role)).await;
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many times any of `needles` (raw, base64, or base64url as envelopes carry bytes) occurs
/// in etcd's whole keyspace, and how many bytes were read. Needs hack/cluster.sh's
/// BYOK_ETCD_ENDPOINT (etcd's HTTP gateway).
pub async fn etcd_hits(needles: &[Vec<u8>]) -> (usize, usize) {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
    let endpoint = std::env::var("BYOK_ETCD_ENDPOINT").expect("BYOK_ETCD_ENDPOINT (hack/cluster.sh env)");
    let body = json!({"key": B64.encode([0u8]), "range_end": B64.encode([0u8])});
    let resp: Value = reqwest::Client::new()
        .post(format!("{endpoint}/v3/kv/range"))
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("etcd answers")
        .json()
        .await
        .expect("etcd's answer is JSON");
    let mut values: Vec<Vec<u8>> = resp["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| B64.decode(kv["value"].as_str().unwrap_or_default()).expect("base64 value"))
        .collect();
    // The local API server stores JSON: a Secret's data is base64 there, so it is read decoded too.
    let decoded: Vec<Vec<u8>> = values
        .iter()
        .filter_map(|v| serde_json::from_slice::<Value>(v).ok())
        .filter_map(|obj| obj.get("data").and_then(Value::as_object).cloned())
        .flat_map(|data| data.into_iter().filter_map(|(_, v)| v.as_str().and_then(|s| B64.decode(s).ok())))
        .collect();
    values.extend(decoded);
    let count = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).filter(|w| *w == needle).count();
    let hits = needles
        .iter()
        .flat_map(|n| [n.clone(), B64.encode(n).into_bytes(), B64URL.encode(n).into_bytes()])
        .map(|form| values.iter().map(|v| count(v, &form)).sum::<usize>())
        .sum();
    (hits, values.iter().map(Vec::len).sum())
}
