//! A fake Kubernetes API server: an in-memory object store behind the tower service that
//! `kube::Client::new` takes, answering by method and path (so a reconcile may make its calls in
//! any order), and recording every call with the status it got.
//!
//! What it does as the API server does: resourceVersions and uids; `metadata.generation` bumped
//! by spec changes; the status subresource (a write to it changes only `status`, a write to the
//! object never does, and create drops it); server-side apply by a single field manager (maps in
//! metadata merged, every other top-level field replaced, so fields the manager left out are
//! gone); JSON patch with `test` (a failed test is 422 and changes nothing; a test for null
//! passes on a missing path, as the API server's JSON patch library has it); merge patch; delete
//! with uid and resourceVersion preconditions (409); finalizers (delete only sets
//! `deletionTimestamp`, and the object goes when the last finalizer is removed); dry-run create;
//! list with label and field selectors, and metadata-only lists (`list_metadata`).
//! Computed answers (a TokenReview, a SubjectAccessReview) can come from [`FakeApi::respond`],
//! injected failures from [`FakeApi::fail`]. Not served: watches (the tests fill the reflector
//! stores themselves), admission and schema validation, field ownership between several managers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::Resource;
use kube::client::Body;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, percent-decoded, e.g. `labelSelector=a=b`.
    pub query: String,
    pub content_type: String,
    /// The request body as JSON (Null when there was none).
    pub body: Value,
    /// The status code the fake answered with.
    pub code: u16,
    /// The body it answered with.
    pub answer: Value,
}

impl Call {
    /// `METHOD path`, for assertions and messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    pub fn is_event(&self) -> bool {
        self.path.starts_with("/apis/events.k8s.io/")
    }

    /// A request that changed something: a successful write other than an Event, a dry run or a
    /// review (TokenReview, SubjectAccessReview: questions, never stored).
    pub fn changed(&self) -> bool {
        let question = self.path.ends_with("reviews") || self.query.contains("dryRun");
        self.method != "GET" && (200..300).contains(&self.code) && !self.is_event() && !question
    }
}

/// The fake API server; clones share the same store.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// By object path: `/api/v1/namespaces/a/secrets/x`.
    objects: BTreeMap<String, Value>,
    version: u64,
    uids: u64,
    calls: Vec<Call>,
    /// Every call, never taken.
    history: Vec<Call>,
    faults: Vec<Fault>,
    responders: Vec<Responder>,
}

/// Answers `method` requests to `path` itself: e.g. TokenReview, which the API server computes.
struct Responder {
    method: String,
    path: String,
    answer: Box<dyn Fn(&Value) -> Answer + Send>,
}

struct Fault {
    method: String,
    path: String,
    code: u16,
    times: u32,
}

/// Where a request points.
struct Target {
    /// `api/v1` or `apis/group/version`
    prefix: String,
    /// `/api/v1/namespaces/a/secrets`
    collection: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Self> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let prefix_len = match *segs.first()? {
            "api" => 2,
            "apis" => 3,
            _ => return None,
        };
        let prefix = segs.get(..prefix_len)?.join("/");
        let rest = &segs[prefix_len..];
        let (namespace, rest) =
            if rest.len() >= 3 && rest[0] == "namespaces" { (Some(rest[1]), &rest[2..]) } else { (None, rest) };
        let plural = (*rest.first()?).to_string();
        let collection = match namespace {
            Some(ns) => format!("/{prefix}/namespaces/{ns}/{plural}"),
            None => format!("/{prefix}/{plural}"),
        };
        Some(Self {
            prefix,
            collection,
            namespace: namespace.map(str::to_string),
            plural,
            name: rest.get(1).map(|s| (*s).to_string()),
            subresource: rest.get(2).map(|s| (*s).to_string()),
        })
    }

    /// Whether the object stored under `key` is in this collection (every namespace's when the
    /// request names none).
    fn lists(&self, key: &str) -> bool {
        let Some(rest) = key.strip_prefix(&format!("/{}/", self.prefix)) else { return false };
        let rest = match (&self.namespace, rest.strip_prefix("namespaces/")) {
            (Some(ns), Some(r)) => r.strip_prefix(ns.as_str()).and_then(|r| r.strip_prefix('/')),
            (Some(_), None) => None,
            (None, Some(r)) if self.plural != "namespaces" => r.split_once('/').map(|(_, r)| r),
            (None, _) => Some(rest),
        };
        rest.and_then(|r| r.strip_prefix(self.plural.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
    }

    fn key(&self) -> Option<String> {
        self.name.as_ref().map(|n| format!("{}/{n}", self.collection))
    }

    /// Kinds with a status subresource among those the operator writes.
    fn has_status_subresource(&self) -> bool {
        matches!(self.plural.as_str(), "byokkeys" | "evaljobs" | "jobs" | "pods")
    }
}

type Answer = (u16, Value);

fn failure(code: u16, reason: &str, message: impl Into<String>) -> Answer {
    let message = message.into();
    (
        code,
        json!({ "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code }),
    )
}

fn not_found(path: &str) -> Answer {
    failure(404, "NotFound", format!("{path} not found"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Whether `get(key)` satisfies every term of a selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`).
fn selects(selector: &str, get: impl Fn(&str) -> Option<String>) -> bool {
    selector.split(',').map(str::trim).filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            get(k.trim()).as_deref() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            get(k.trim()).as_deref() == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            get(k.trim()).is_none()
        } else {
            get(term).is_some()
        }
    })
}

fn field(obj: &Value, dotted: &str) -> Option<String> {
    let v = dotted.split('.').try_fold(obj, |v, k| v.get(k))?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(t) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Server-side apply by the one field manager that owns these fields: labels and annotations are
/// merged (other managers' keys stay), every other field given replaces what was there.
fn apply(base: &mut Value, patch: &Value) {
    if !base.is_object() {
        *base = json!({});
    }
    let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) else { return };
    for (k, v) in p {
        if k == "metadata" {
            let meta = b.entry("metadata").or_insert_with(|| json!({}));
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if matches!(mk.as_str(), "labels" | "annotations") && meta[mk].is_object() {
                    merge(&mut meta[mk], mv);
                } else {
                    meta[mk] = mv.clone();
                }
            }
        } else {
            b.insert(k.clone(), v.clone());
        }
    }
}

impl State {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// What the API server sets on a new object.
    fn stamp_new(&mut self, obj: &mut Value) {
        let rv = self.next_version();
        self.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", self.uids);
        let meta = &mut obj["metadata"];
        if meta.get("uid").is_none_or(Value::is_null) {
            meta["uid"] = json!(uid);
        }
        if meta.get("creationTimestamp").is_none_or(Value::is_null) {
            meta["creationTimestamp"] = json!(jiff::Timestamp::now().to_string());
        }
        if meta.get("generation").is_none_or(Value::is_null) {
            meta["generation"] = json!(1);
        }
        meta["resourceVersion"] = json!(rv);
    }

    fn answer(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        content_type: &str,
        accept: &str,
        body: &Value,
    ) -> Answer {
        if let Some(f) = self.faults.iter_mut().find(|f| f.times > 0 && f.method == method && path.starts_with(&f.path))
        {
            f.times -= 1;
            let code = f.code;
            let reason = match code {
                404 => "NotFound",
                409 => "Conflict",
                429 => "TooManyRequests",
                _ => "InternalError",
            };
            return failure(code, reason, format!("injected {code} for {method} {path}"));
        }
        if let Some(r) = self.responders.iter().find(|r| r.method == method && r.path == path) {
            return (r.answer)(body);
        }
        let Some(t) = Target::parse(path) else { return not_found(path) };
        let params = query_params(query);
        match (method, t.name.is_some()) {
            ("GET", false) => self.list(&t, &params, accept),
            ("GET", true) => self.get(&t, accept),
            ("POST", false) => self.create(&t, &params, body),
            ("PATCH", true) => self.patch(&t, content_type, body),
            ("PUT", true) => self.replace(&t, body),
            ("DELETE", true) => self.delete(&t, body),
            _ => failure(405, "MethodNotAllowed", format!("{method} {path} is not served by the fake")),
        }
    }

    fn get(&self, t: &Target, accept: &str) -> Answer {
        let key = t.key().unwrap_or_default();
        match self.objects.get(&key) {
            Some(obj)
                if accept.contains("as=PartialObjectMetadata;") || accept.ends_with("as=PartialObjectMetadata") =>
            {
                (200, partial(obj))
            }
            Some(obj) => (200, obj.clone()),
            None => not_found(&key),
        }
    }

    fn list(&self, t: &Target, params: &BTreeMap<String, String>, accept: &str) -> Answer {
        let labels = params.get("labelSelector").cloned().unwrap_or_default();
        let fields = params.get("fieldSelector").cloned().unwrap_or_default();
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _)| t.lists(k))
            .map(|(_, v)| v)
            .filter(|o| {
                selects(&labels, |k| o["metadata"]["labels"].get(k).and_then(Value::as_str).map(str::to_string))
            })
            .filter(|o| selects(&fields, |k| field(o, k)))
            .cloned()
            .collect();
        let rv = self.version.to_string();
        if accept.contains("as=PartialObjectMetadataList") {
            let items: Vec<Value> = items.iter().map(partial).collect();
            return (
                200,
                json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                        "metadata": { "resourceVersion": rv }, "items": items }),
            );
        }
        (200, json!({ "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": rv }, "items": items }))
    }

    fn create(&mut self, t: &Target, params: &BTreeMap<String, String>, body: &Value) -> Answer {
        let mut obj = body.clone();
        if !obj.is_object() {
            return failure(400, "BadRequest", "no object");
        }
        if obj.get("metadata").is_none_or(|m| !m.is_object()) {
            obj["metadata"] = json!({});
        }
        if let Some(ns) = &t.namespace {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let name = match (obj["metadata"]["name"].as_str(), obj["metadata"]["generateName"].as_str()) {
            (Some(n), _) => n.to_string(),
            (None, Some(g)) => format!("{g}{:05}", self.version + 1),
            (None, None) => return failure(422, "Invalid", "metadata.name: Required value"),
        };
        obj["metadata"]["name"] = json!(name);
        let key = format!("{}/{name}", t.collection);
        if self.objects.contains_key(&key) {
            return failure(409, "AlreadyExists", format!("{} \"{name}\" already exists", t.plural));
        }
        if t.has_status_subresource()
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        let dry_run = params.contains_key("dryRun");
        if dry_run {
            let saved = (self.version, self.uids);
            self.stamp_new(&mut obj);
            (self.version, self.uids) = saved;
            return (201, obj);
        }
        self.stamp_new(&mut obj);
        self.objects.insert(key, obj.clone());
        (201, obj)
    }

    fn patch(&mut self, t: &Target, content_type: &str, body: &Value) -> Answer {
        let key = t.key().unwrap_or_default();
        let status_only = t.subresource.as_deref() == Some("status");
        let existing = self.objects.get(&key).cloned();
        let is_apply = content_type.starts_with("application/apply-patch");
        let mut doc = match (&existing, is_apply && !status_only) {
            (Some(obj), _) => obj.clone(),
            (None, true) => json!({ "metadata": { "name": t.name, "namespace": t.namespace } }),
            (None, false) => return not_found(&key),
        };
        if is_apply {
            apply(&mut doc, body);
        } else if content_type.starts_with("application/json-patch") {
            let ops: json_patch::Patch = match serde_json::from_value(body.clone()) {
                Ok(p) => p,
                Err(e) => return failure(400, "BadRequest", e.to_string()),
            };
            // Op by op on a copy (all or nothing). As the API server's JSON patch library does, a
            // `test` for null passes on a missing path.
            let mut patched = doc.clone();
            for op in ops.0 {
                if let json_patch::PatchOperation::Test(t) = &op
                    && t.value.is_null()
                {
                    if patched.pointer(&t.path.to_string()).is_some_and(|v| !v.is_null()) {
                        return failure(
                            422,
                            "Invalid",
                            format!("the JSON patch does not apply: test {} failed", t.path),
                        );
                    }
                    continue;
                }
                if let Err(e) = json_patch::patch(&mut patched, std::slice::from_ref(&op)) {
                    return failure(422, "Invalid", format!("the JSON patch does not apply: {e}"));
                }
            }
            doc = patched;
        } else {
            merge(&mut doc, body);
        }
        self.store(t, key, existing, doc, status_only)
    }

    fn replace(&mut self, t: &Target, body: &Value) -> Answer {
        let key = t.key().unwrap_or_default();
        let Some(existing) = self.objects.get(&key).cloned() else { return not_found(&key) };
        let sent = body["metadata"]["resourceVersion"].as_str();
        if sent.is_some() && sent != existing["metadata"]["resourceVersion"].as_str() {
            return failure(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            );
        }
        let status_only = t.subresource.as_deref() == Some("status");
        self.store(t, key, Some(existing), body.clone(), status_only)
    }

    /// Stores the result of a write to an object (or its status), as the API server would.
    fn store(&mut self, t: &Target, key: String, existing: Option<Value>, mut doc: Value, status_only: bool) -> Answer {
        if let Some(old) = &existing {
            if t.has_status_subresource() {
                if status_only {
                    let status = doc.get("status").cloned();
                    doc = old.clone();
                    match status {
                        Some(s) => doc["status"] = s,
                        None => {
                            doc.as_object_mut().map(|o| o.remove("status"));
                        }
                    }
                } else {
                    match old.get("status") {
                        Some(s) => doc["status"] = s.clone(),
                        None => {
                            doc.as_object_mut().map(|o| o.remove("status"));
                        }
                    }
                }
            }
            // What a client cannot change.
            for f in ["name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp"] {
                match old["metadata"].get(f) {
                    Some(v) => doc["metadata"][f] = v.clone(),
                    None => {
                        doc["metadata"].as_object_mut().map(|m| m.remove(f));
                    }
                }
            }
            if old.get("spec") != doc.get("spec") {
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                doc["metadata"]["generation"] = json!(generation + 1);
            }
            let rv = self.next_version();
            doc["metadata"]["resourceVersion"] = json!(rv);
        } else {
            if t.has_status_subresource()
                && let Some(o) = doc.as_object_mut()
            {
                o.remove("status");
            }
            self.stamp_new(&mut doc);
        }
        let deleting = !doc["metadata"]["deletionTimestamp"].is_null();
        let finalizers = doc["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if deleting && !finalizers {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, doc.clone());
        }
        (if existing.is_some() { 200 } else { 201 }, doc)
    }

    fn delete(&mut self, t: &Target, body: &Value) -> Answer {
        let key = t.key().unwrap_or_default();
        let Some(mut obj) = self.objects.get(&key).cloned() else { return not_found(&key) };
        let pre = &body["preconditions"];
        let mismatch = |f: &str| pre[f].as_str().is_some_and(|want| obj["metadata"][f].as_str() != Some(want));
        if mismatch("uid") || mismatch("resourceVersion") {
            return failure(409, "Conflict", format!("Precondition failed for {key}"));
        }
        if obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()) {
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
                obj["metadata"]["resourceVersion"] = json!(self.next_version());
                self.objects.insert(key, obj.clone());
            }
            return (200, obj);
        }
        self.objects.remove(&key);
        (200, obj)
    }
}

/// The metadata-only form of `obj`.
fn partial(obj: &Value) -> Value {
    json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"] })
}

fn path_of<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", K::url_path(&(), namespace))
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.serve(req).await) }
        });
        kube::Client::new(service, "default")
    }

    async fn serve(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        let body: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        let header = |name: http::header::HeaderName| {
            parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
        };
        let (content_type, accept) = (header(http::header::CONTENT_TYPE), header(http::header::ACCEPT));
        let method = parts.method.as_str().to_string();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let (code, answer) = {
            let mut state = self.state.lock().expect("fake API state");
            let answer = state.answer(&method, &path, &query, &content_type, &accept, &body);
            let call = Call {
                method,
                path,
                query: percent_decode(&query),
                content_type,
                body,
                code: answer.0,
                answer: answer.1.clone(),
            };
            state.history.push(call.clone());
            state.calls.push(call);
            answer
        };
        Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
            .expect("response")
    }

    /// Stores `obj` as it is (a uid, resourceVersion and creation time are set when missing; the
    /// resourceVersion is always new), as if someone created or updated it; returns what is stored.
    pub fn put<K>(&self, obj: &K) -> K
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let mut value = serde_json::to_value(obj).expect("serializable object");
        let meta = obj.meta();
        let key = path_of::<K>(meta.namespace.as_deref(), meta.name.as_deref().expect("object name"));
        let mut state = self.state.lock().expect("fake API state");
        state.stamp_new(&mut value);
        state.objects.insert(key, value.clone());
        serde_json::from_value(value).expect("stored object")
    }

    /// The stored object, if any.
    pub fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let key = path_of::<K>(Some(namespace), name);
        let state = self.state.lock().expect("fake API state");
        state.objects.get(&key).map(|v| serde_json::from_value(v.clone()).expect("stored object deserializes"))
    }

    /// Every stored object of kind `K` in `namespace`.
    pub fn list<K>(&self, namespace: &str) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let prefix = format!("{}/", K::url_path(&(), Some(namespace)));
        let state = self.state.lock().expect("fake API state");
        state
            .objects
            .iter()
            .filter(|(k, _)| k.strip_prefix(prefix.as_str()).is_some_and(|rest| !rest.contains('/')))
            .map(|(_, v)| serde_json::from_value(v.clone()).expect("stored object deserializes"))
            .collect()
    }

    /// Every stored object of kind `K`, all namespaces.
    pub fn all<K>(&self) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let (api_version, kind) = (K::api_version(&()), K::kind(&()));
        let state = self.state.lock().expect("fake API state");
        state
            .objects
            .values()
            .filter(|v| v["apiVersion"].as_str() == Some(&*api_version) && v["kind"].as_str() == Some(&*kind))
            .map(|v| serde_json::from_value(v.clone()).expect("stored object deserializes"))
            .collect()
    }

    /// Every call answered so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("fake API state").calls.clone()
    }

    /// The calls answered so far, forgetting them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state.lock().expect("fake API state").calls)
    }

    /// Answers the next `times` `method` requests to paths starting with `path` with `code`.
    pub fn fail(&self, method: &str, path: &str, code: u16, times: u32) {
        let fault = Fault { method: method.into(), path: path.into(), code, times };
        self.state.lock().expect("fake API state").faults.push(fault);
    }

    /// Answers every `method` request to exactly `path` with `answer(body)` = (code, body).
    pub fn respond(&self, method: &str, path: &str, answer: impl Fn(&Value) -> (u16, Value) + Send + 'static) {
        let r = Responder { method: method.into(), path: path.into(), answer: Box::new(answer) };
        self.state.lock().expect("fake API state").responders.push(r);
    }

    /// The Events stored for the object named `regarding`: (reason, note), oldest first.
    pub fn events(&self, regarding: &str) -> Vec<(String, String)> {
        let state = self.state.lock().expect("fake API state");
        let mut events: Vec<&Value> = state
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with("/apis/events.k8s.io/"))
            .map(|(_, v)| v)
            .filter(|e| e["regarding"]["name"].as_str() == Some(regarding))
            .collect();
        events.sort_by_key(|e| e["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse::<u64>().ok()));
        events
            .iter()
            .map(|e| (e["reason"].as_str().unwrap_or_default().into(), e["note"].as_str().unwrap_or_default().into()))
            .collect()
    }

    /// Waits (up to 2 s) for an Event `reason` on `regarding` whose note contains `text`: Events
    /// are published in the background, after the reconcile returned. Returns its note.
    pub async fn event(&self, regarding: &str, reason: &str, text: &str) -> String {
        for _ in 0..400 {
            let found = self.events(regarding).into_iter().find(|(r, n)| r == reason && n.contains(text));
            if let Some((_, note)) = found {
                return note;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("no {reason} Event on {regarding} saying {text:?}; Events: {:?}", self.events(regarding));
    }

    /// How many times an Event `reason` on `regarding` was sent (created, or sent again as a
    /// series), since the start.
    pub fn published(&self, regarding: &str, reason: &str) -> usize {
        let calls = self.state.lock().expect("fake API state").history.clone();
        calls
            .iter()
            .filter(|c| c.is_event() && c.method != "GET" && (200..300).contains(&c.code))
            .filter(|c| c.body["reason"] == reason && c.body["regarding"]["name"] == regarding)
            .count()
    }

    /// Waits (up to 2 s) until an Event `reason` on `regarding` was sent `times` times.
    pub async fn wait_published(&self, regarding: &str, reason: &str, times: usize) {
        for _ in 0..400 {
            if self.published(regarding, reason) >= times {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("{reason} on {regarding} sent {} times, not {times}", self.published(regarding, reason));
    }
}
