//! `test NAME`: asks the operator to test the key now, and waits for the answer to this request.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::create::explain;
use super::ctx::Ctx;
use super::error::Error;
use super::output::structured;
use super::wait::{Waited, secs, wait_for};
use crate::crd::{ByokKey, KeyPhase, TEST_REQUESTED_ANNOTATION};

pub async fn test(ctx: &Ctx, name: &str, timeout: Duration) -> Result<(), Error> {
    let ns = &ctx.namespace;
    let key = ctx.get_key(name).await?;
    if key.spec.revoked {
        return Err(Error::Failed(format!("ByokKey {name} is revoked: there is nothing to test")));
    }
    let token = fresh_token();
    let patch = json!({ "metadata": { "annotations": { TEST_REQUESTED_ANNOTATION: token } } });
    ctx.keys()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!("requesting a test of ByokKey {name}")))?;
    eprintln!("test {token} requested; waiting up to {} for the operator's answer...", secs(timeout));
    let answered =
        |k: &ByokKey| k.status.as_ref().and_then(|s| s.last_test.as_ref()).is_some_and(|t| t.request_token == token);
    let key = match wait_for(&ctx.keys(), name, timeout, |_| {}, answered).await? {
        Waited::Done(k) => k,
        Waited::Gone => return Err(ctx.key_not_found(name)),
        Waited::TimedOut(last) => {
            let why = last.as_ref().map_or_else(
                || "no status".to_string(),
                |k| {
                    let phase = k.status.as_ref().and_then(|s| s.phase);
                    format!("{phase:?}: {}", explain(k))
                },
            );
            return Err(Error::Timeout(format!(
                "no answer to test {token} after {}; the key is {why}. A key that is not imported cannot be \
                 tested: see `kubectl describe byokkey {name} -n {ns}`; is the operator running (kubectl get pods -n {})?",
                secs(timeout),
                ctx.operator_namespace
            )));
        }
    };
    let Some(t) = key.status.as_ref().and_then(|s| s.last_test.clone()) else {
        return Err(Error::Failed(format!("ByokKey {name} reported no test result")));
    };
    if !structured(ctx.output, &t)? {
        let http = t.http_status.map_or_else(String::new, |c| format!(" (HTTP {c})"));
        println!("{name}: {}{http}: {}", t.result, t.message);
    }
    if t.result == "Valid" {
        return Ok(());
    }
    let phase = key.status.as_ref().and_then(|s| s.phase);
    let what = match phase {
        Some(KeyPhase::Invalid) => {
            "the provider refused the key: replace it (delete the ByokKey and create it again with a current key)"
        }
        _ => "the provider could not be asked or answered with an error; try again later",
    };
    Err(Error::Failed(format!("test of {name}: {}; {what}", t.result)))
}

/// A token no earlier request used: the time, and randomness for two requests in one second.
fn fresh_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 4];
    rand::rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{hex}", jiff::Timestamp::now().as_second())
}
