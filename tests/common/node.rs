//! Judge pods on the real node of `hack/node.sh` (`BYOK_NODE=true hack/test.sh`).
//!
//! Pods reach the host only through the bridge `byok0`, whose address 10.244.0.1 is the node's:
//! the in-process mock provider and the operator's key broker listen there. The operator itself
//! stays a host process (with `--watch-namespace`, as in every other test): pods cannot reach the
//! API server (loopback only, no `kubernetes` Service endpoint), so it cannot run in-cluster yet.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use byok_operator::mock::MockConfig;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::{EnvOptions, TestEnv, eventually};

/// The node's address on the pod bridge (hack/node.sh `NODE_IP`).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The operator image as `hack/image.sh operator` pushed it to the cluster's registry (built from
/// target/release): `<registry>/byok/byok-operator@sha256:...`, which the node's containerd pulls.
pub fn judge_image() -> String {
    let file = cluster_dir().join("operator.image");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!("{}: {e}: push the operator image first (hack/image.sh operator; hack/test.sh does)", file.display())
    });
    text.trim().to_string()
}
/// Pods on a 2-core node, several tests at once: image unpack, sandbox, CNI, init container.
pub const POD_TIMEOUT: Duration = Duration::from_secs(180);

/// Writes straight to the process's stderr, which libtest does not capture: skips and
/// measurements show in the output of a passing test.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "[e2e-node] {msg}");
}

/// Whether the node tests are asked for (`BYOK_NODE=true`, set by `BYOK_NODE=true hack/test.sh`).
/// Without it they print why they do nothing and return: the only skip, and a visible one.
pub fn wanted(test: &str) -> bool {
    if std::env::var("BYOK_NODE").as_deref() == Ok("true") {
        return true;
    }
    note(&format!("SKIPPED {test}: e2e node tests need BYOK_NODE=true hack/test.sh"));
    false
}

/// A TestEnv whose mock provider and broker listen on the bridge, whose operator starts judge pods
/// with the node's image, in a namespace enforcing the `restricted` Pod Security Standard.
/// Panics (never skips) when BYOK_NODE=true but the cluster has no Ready node or no bridge.
pub async fn node_env(test: &str, mock: MockConfig) -> TestEnv {
    let client = super::client().await;
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await.expect("list nodes").items;
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    assert!(
        nodes.iter().any(ready),
        "BYOK_NODE=true but the cluster has no Ready node (nodes: {:?}): start it with \
         `BYOK_NODE=true hack/cluster.sh up` (hack/test.sh does)",
        nodes.iter().map(|n| n.name_any()).collect::<Vec<_>>()
    );
    assert!(
        std::net::TcpListener::bind((NODE_IP, 0)).is_ok(),
        "BYOK_NODE=true but {NODE_IP} (bridge byok0 of hack/node.sh) is not an address of this machine"
    );
    let mock = MockConfig { addr: Some(SocketAddr::from((NODE_IP, 0))), ..mock };
    let options = EnvOptions {
        mock,
        broker_host: Some(IpAddr::V4(NODE_IP)),
        operator_args: vec!["--judge-image".into(), judge_image()],
        node: true,
        ..EnvOptions::default()
    };
    let env = TestEnv::with_options(test, options).await;
    let label = serde_json::json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": "restricted" } } });
    Api::<Namespace>::all(env.client.clone())
        .patch(&env.ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label namespace restricted");
    // The Job controller backs off when the ServiceAccount is not there yet: wait for it instead.
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
    eventually("default ServiceAccount", super::TIMEOUT, || async { sas.get_opt("default").await.ok().flatten() })
        .await;
    env
}

/// Pods of a judge Job, oldest first.
pub async fn job_pods(env: &TestEnv, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let mut items = pods.list(&lp).await.map(|l| l.items).unwrap_or_default();
    items.sort_by_key(|p| p.creation_timestamp().map(|t| t.0));
    items
}

pub fn pod_phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

/// The running container `name` of `pod`: its containerd id.
pub fn running_container_id(p: &Pod, name: &str) -> Option<String> {
    let st = p.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == name)?;
    st.state.as_ref()?.running.as_ref()?;
    Some(st.container_id.as_deref()?.strip_prefix("containerd://")?.to_string())
}

/// Polls until a pod of `job` other than `except` has its container `container` running;
/// returns it and the time it took.
pub async fn wait_container_running(env: &TestEnv, job: &str, container: &str, except: &[String]) -> (Pod, Duration) {
    let start = Instant::now();
    let pod = eventually(&format!("a pod of {job} with {container} running"), POD_TIMEOUT, || async {
        job_pods(env, job)
            .await
            .into_iter()
            .find(|p| !except.contains(&p.uid().unwrap_or_default()) && running_container_id(p, container).is_some())
    })
    .await;
    (pod, start.elapsed())
}

/// State dir of the cluster the tests run against: `$KUBECONFIG` is `<BYOK_CLUSTER_DIR>/kubeconfig`.
pub fn cluster_dir() -> PathBuf {
    let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").expect("KUBECONFIG"));
    kubeconfig.parent().expect("kubeconfig dir").to_path_buf()
}

/// The host pid of a container's init process, from the node's containerd (`ctr -n k8s.io task ls`).
pub fn container_pid(container_id: &str) -> u32 {
    let sock = cluster_dir().join("node/run/containerd.sock");
    assert!(sock.exists(), "no containerd socket at {}: is this hack/node.sh's node?", sock.display());
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&sock)
        .args(["-n", "k8s.io", "task", "ls"])
        .output()
        .expect("ctr runs");
    assert!(out.status.success(), "ctr task ls: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next()? == container_id).then(|| cols.next()?.parse().ok())?
        })
        .next()
        .unwrap_or_else(|| panic!("no task {container_id} in ctr task ls:\n{text}"))
}

/// The logs of every container (init containers too) of every pod in the namespace, into
/// `env.extra_logs` for `assert_no_plaintext`; returns the bytes of judge-container logs read.
pub async fn collect_pod_logs(env: &mut TestEnv) -> usize {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let mut judge_bytes = 0;
    for p in pods.list(&ListParams::default()).await.expect("pods").items {
        let spec = p.spec.clone().unwrap_or_default();
        let names: Vec<String> =
            spec.init_containers.iter().flatten().chain(spec.containers.iter()).map(|c| c.name.clone()).collect();
        for c in names {
            let lp = LogParams { container: Some(c.clone()), ..Default::default() };
            match pods.logs(&p.name_any(), &lp).await {
                Ok(text) => {
                    if c == "judge" {
                        judge_bytes += text.len();
                    }
                    env.extra_logs.push((format!("logs of pod {} container {c}", p.name_any()), text));
                }
                // A container that never started (e.g. a pod deleted early) has no log to read.
                Err(e) => note(&format!("no logs for {}/{c}: {e}", p.name_any())),
            }
        }
    }
    judge_bytes
}

/// Directory of the cluster's binaries (kubectl), as `hack/cluster.sh bin` prints it.
pub fn bin_dir() -> String {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/cluster.sh"))
        .arg("bin")
        .output()
        .expect("hack/cluster.sh bin");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What [`scan_node_disk`] read.
#[derive(Debug, Default)]
pub struct DiskScan {
    pub files: usize,
    pub bytes: u64,
}

/// Reads every regular file on disk under the node's state dir (kubelet root, containerd root and
/// state, pod logs), skipping tmpfs mounts (memory, where the key is meant to be), and panics if
/// any holds one of `needles`.
pub fn scan_node_disk(needles: &[&str]) -> DiskScan {
    let root = cluster_dir().join("node");
    assert!(root.is_dir(), "no node state dir at {}", root.display());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let tmpfs: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "tmpfs").then(|| PathBuf::from(mount_point.replace("\\040", " ")))
        })
        .collect();
    let pattern = needles.iter().map(|n| regex::escape(n)).collect::<Vec<_>>().join("|");
    let re = regex::bytes::Regex::new(&pattern).expect("regex");
    let mut scan = DiskScan::default();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        if tmpfs.iter().any(|t| t == &dir) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let Ok(bytes) = std::fs::read(&path) else { continue };
                scan.files += 1;
                scan.bytes += bytes.len() as u64;
                assert!(!re.is_match(&bytes), "the key is on the node's disk in {}", path.display());
            }
        }
    }
    scan
}
