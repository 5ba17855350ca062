//! Waiting for an object to reach a state: a watch on that one object (no polling), bounded by a
//! timeout.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::watch_object;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::error::Error;

/// How a wait ended.
pub enum Waited<K> {
    /// The object reached the state.
    Done(K),
    /// The object was deleted (or never existed).
    Gone,
    /// Time ran out; the last version seen, if any.
    TimedOut(Option<K>),
}

/// Watches `name` until `done` holds, calling `seen` on every version, for at most `timeout`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    mut seen: impl FnMut(&K),
    done: impl Fn(&K) -> bool,
) -> Result<Waited<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = std::pin::pin!(watch_object(api.clone(), name));
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Ok(Waited::TimedOut(last)),
            Ok(None) => return Ok(Waited::TimedOut(last)),
            Ok(Some(Ok(None))) => return Ok(Waited::Gone),
            Ok(Some(Ok(Some(obj)))) => {
                seen(&obj);
                if done(&obj) {
                    return Ok(Waited::Done(obj));
                }
                last = Some(obj);
            }
            Ok(Some(Err(e))) => {
                return Err(Error::Failed(format!(
                    "watching {name} failed: {e}; check that your account may watch it (kubectl auth can-i watch)"
                )));
            }
        }
    }
}

/// A duration for messages: 90s, 5m, 2h.
pub fn secs(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
