//! Changing the log level at run time: the `logLevel` key of the ConfigMap `byok-operator-config`
//! in the operator's namespace (an EnvFilter directive such as `debug` or `info,kube=debug`).

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

/// ConfigMap whose `logLevel` key sets the operator's log level while it runs.
pub const CONFIG_MAP: &str = "byok-operator-config";

/// Applies a new level; returns an error text when the directive is not valid.
pub type SetLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Follows the ConfigMap and applies each new `logLevel`.
pub async fn follow(client: Client, namespace: String, set: SetLevel) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    let mut stream = watcher(api, cfg).default_backoff().applied_objects().boxed();
    let mut current: Option<String> = None;
    while let Some(item) = stream.next().await {
        let Ok(cm) = item else { continue };
        let level = cm.data.and_then(|d| d.get("logLevel").cloned()).map(|l| l.trim().to_string());
        if level.is_none() || level == current {
            continue;
        }
        let level = level.unwrap_or_default();
        match set(&level) {
            Ok(()) => tracing::info!(level = %level, "log level changed"),
            Err(e) => tracing::warn!(level = %level, error = %e, "ignoring an invalid logLevel"),
        }
        current = Some(level);
    }
}
