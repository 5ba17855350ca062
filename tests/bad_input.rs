//! Bad input (issue 11 §4): every object of the corpus in tests/bad_input/ (ByokKeys, EvalJobs,
//! source Secrets, ConfigMaps of cases, sealed blobs) is created, as `kubectl create` would
//! (fieldValidation=Strict), in the test's namespace on the local control plane, with the operator
//! and the mock provider running, next to a ByokKey and an EvalJob that should work.
//!
//! Each file says in its leading comments what it is (`# bad input: ...`) and what must happen to
//! its last object, the subject (the objects before it are what it needs, and must be accepted):
//!
//! - `# expect: refused "<substring>"`: the API server refuses the subject, and its message says
//!   what to fix (contains the substring);
//! - `# expect: condition <Type>=<Status> reason <Reason>`: accepted, and the operator reports the
//!   condition with a non-empty message;
//! - `# expect: event <Reason>`: ... and records an Event with that reason for it;
//! - `# expect: phase <Phase>`: ... and `status.phase` says so;
//! - `# gap: <text>`: a known gap (the object is bad but nothing says so yet); the expectations above
//!   describe what happens today, so fixing the gap means updating the file.
//!
//! Huge values are generated, not committed: in any string, `{{REPEAT <text> <n>}}` is `<text>` n
//! times, `{{LINES <n> <text>}}` n numbered lines, `{{CASES <n>}}` n cases as JSON Lines (39 bytes
//! each), `{{KEY <provider>}}` a fresh fake key (scanned for by `assert_no_plaintext`) and
//! `{{SEAL <provider> <name>}}` a fresh key sealed to this operator for ByokKey `<name>` of the
//! test's namespace; a string that is only `{{CASES_ARRAY <n>}}` becomes an array of n cases.
//!
//! Then: the good objects reached Ready / Running, a key created after all of it still becomes
//! Ready (the operator did not wedge), the operator is alive and never panicked, and no plaintext
//! key shows up anywhere the operator writes.

mod common;

use std::path::{Path, PathBuf};

use byok_operator::crd::{EvalPhase, KeyPhase, Provider};
use common::evaljobs::{cases, create_evaljob, judge_spec, phase, wait_evaljob};
use common::{TIMEOUT, TestEnv, eventually, fake_key};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};

/// What must happen to a file's subject.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Refused(String),
    Condition { type_: String, status: String, reason: String },
    Event(String),
    Phase(String),
}

/// One file of the corpus.
#[derive(Debug)]
struct BadInput {
    file: String,
    what: String,
    expect: Vec<Expect>,
    gaps: Vec<String>,
    /// The objects, placeholders not yet filled in; the last one is the subject.
    docs: Vec<Value>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_input")
}

fn parse_expect(file: &str, text: &str) -> Expect {
    fn fail(file: &str, text: &str) -> ! {
        panic!("{file}: cannot read `# expect: {text}`")
    }
    if let Some(quoted) = text.strip_prefix("refused ") {
        let s: String = serde_json::from_str(quoted.trim()).unwrap_or_else(|_| fail(file, text));
        assert!(!s.is_empty(), "{file}: an empty substring would prove nothing");
        return Expect::Refused(s);
    }
    if let Some(rest) = text.strip_prefix("condition ") {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let [type_status, "reason", reason] = words.as_slice() else { fail(file, text) };
        let (type_, status) = type_status.split_once('=').unwrap_or_else(|| fail(file, text));
        return Expect::Condition { type_: type_.into(), status: status.into(), reason: (*reason).into() };
    }
    if let Some(reason) = text.strip_prefix("event ") {
        return Expect::Event(reason.trim().into());
    }
    if let Some(p) = text.strip_prefix("phase ") {
        return Expect::Phase(p.trim().into());
    }
    fail(file, text)
}

fn load(path: &Path) -> BadInput {
    let file = path.file_name().and_then(|f| f.to_str()).expect("file name").to_string();
    let text = std::fs::read_to_string(path).expect("corpus file");
    let (mut what, mut expect, mut gaps) = (String::new(), Vec::new(), Vec::new());
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let line = line.trim_start_matches('#').trim();
        if let Some(d) = line.strip_prefix("bad input:") {
            what = d.trim().to_string();
        } else if let Some(e) = line.strip_prefix("expect:") {
            expect.push(parse_expect(&file, e.trim()));
        } else if let Some(g) = line.strip_prefix("gap:") {
            gaps.push(g.trim().to_string());
        }
    }
    assert!(!what.is_empty(), "{file}: no leading `# bad input: <what it is>`");
    assert!(!expect.is_empty(), "{file}: no `# expect: ...`");
    let refused = expect.iter().any(|e| matches!(e, Expect::Refused(_)));
    assert!(!refused || expect.len() == 1, "{file}: a refused object has no conditions, Events or phase");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect();
    assert!(!docs.is_empty(), "{file}: no object");
    BadInput { file, what, expect, gaps, docs }
}

fn corpus() -> Vec<BadInput> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/bad_input")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files.iter().map(|p| load(p)).collect()
}

/// What fills in the placeholders of one namespace.
struct Fill<'a> {
    ns: &'a str,
    sealing_public_key: &'a str,
    /// Keys handed out by `{{KEY}}` and `{{SEAL}}`: none may show up where the operator writes.
    plaintexts: Vec<String>,
}

fn provider(name: &str) -> Provider {
    serde_json::from_value(json!(name)).unwrap_or_else(|_| panic!("unknown provider {name} in a placeholder"))
}

fn case_line(i: usize) -> String {
    format!("{{\"id\":\"c{i:06}\",\"output\":\"the answer\"}}\n")
}

impl Fill<'_> {
    fn expand(&mut self, name: &str, args: &str) -> String {
        let words: Vec<&str> = args.split_whitespace().collect();
        let count = |s: &str| s.parse::<usize>().unwrap_or_else(|_| panic!("{{{{{name}}}}}: {s} is not a count"));
        match (name, words.as_slice()) {
            ("REPEAT", [text, n]) => text.repeat(count(n)),
            ("LINES", [n, ..]) => {
                let text = args.trim_start().trim_start_matches(n).trim();
                (1..=count(n)).map(|i| format!("{i}. {text}\n")).collect()
            }
            ("CASES", [n]) => (0..count(n)).map(case_line).collect(),
            ("KEY", [p]) => {
                let key = fake_key(provider(p), "");
                self.plaintexts.push(key.clone());
                key
            }
            ("SEAL", [p, object]) => {
                let key = fake_key(provider(p), "");
                self.plaintexts.push(key.clone());
                byok_operator::crypto::sealing::seal(self.sealing_public_key, self.ns, object, p, None, &key.into())
                    .expect("seal")
            }
            _ => panic!("unknown placeholder {{{{{name}{args}}}}}"),
        }
    }

    fn fill(&mut self, v: &mut Value) {
        let placeholder = regex::Regex::new(r"\{\{([A-Z_]+)([^}]*)\}\}").expect("regex");
        match v {
            Value::String(s) if s.starts_with("{{CASES_ARRAY ") => {
                let n: usize = s.trim_start_matches("{{CASES_ARRAY ").trim_end_matches("}}").trim().parse().expect("n");
                *v = Value::Array((0..n).map(|i| json!({ "id": format!("c{i}"), "output": "the answer" })).collect());
            }
            Value::String(s) if s.contains("{{") => {
                let mut out = String::new();
                let mut last = 0;
                for c in placeholder.captures_iter(s) {
                    let m = c.get(0).expect("match");
                    out.push_str(&s[last..m.start()]);
                    out.push_str(&self.expand(&c[1], &c[2]));
                    last = m.end();
                }
                out.push_str(&s[last..]);
                *s = out;
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.fill(i)),
            Value::Object(map) => {
                // Keys may hold placeholders too (a 253-character name is a value, never a key here).
                map.values_mut().for_each(|i| self.fill(i));
            }
            _ => {}
        }
    }
}

fn resource(kind: &str) -> ApiResource {
    match kind {
        "ByokKey" => ApiResource::erase::<byok_operator::crd::ByokKey>(&()),
        "EvalJob" => ApiResource::erase::<byok_operator::crd::EvalJob>(&()),
        "Secret" => ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        other => panic!("the corpus holds ByokKeys, EvalJobs, Secrets and ConfigMaps, not {other}"),
    }
}

fn collection_path(ar: &ApiResource, ns: &str) -> String {
    let base = if ar.group.is_empty() { format!("/api/{}", ar.version) } else { format!("/apis/{}", ar.api_version) };
    format!("{base}/namespaces/{ns}/{}", ar.plural)
}

/// Creates `obj` as `kubectl create` does: a POST with fieldValidation=Strict (unknown fields refused).
async fn create(client: &Client, ns: &str, obj: &Value) -> Result<(), kube::Error> {
    let ar = resource(obj["kind"].as_str().unwrap_or_default());
    let uri = format!("{}?fieldValidation=Strict&fieldManager=kubectl-create", collection_path(&ar, ns));
    let body = serde_json::to_vec(obj).expect("json");
    let req = http::Request::post(uri).header("content-type", "application/json").body(body).expect("request");
    client.request::<Value>(req).await.map(|_| ())
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// The subject's status as the API server has it.
async fn status_of(client: &Client, ns: &str, kind: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(kind));
    match api.get_opt(name).await {
        Ok(Some(o)) => o.data.get("status").cloned().unwrap_or(Value::Null),
        other => json!(format!("{other:?}")),
    }
}

async fn event_reasons(client: &Client, ns: &str, object: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let events = api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    events
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object))
        .filter_map(|e| e.reason)
        .collect()
}

/// Waits for every expectation of an accepted subject (panics with what it waited for).
async fn check_accepted(client: Client, ns: String, kind: String, name: String, expect: Vec<Expect>) {
    let short = &name[..name.len().min(40)];
    for e in expect {
        match e {
            Expect::Condition { type_, status, reason } => {
                let what = format!("{kind} {short}: condition {type_}={status} reason {reason} with a message");
                eventually(&what, TIMEOUT, || async {
                    let st = status_of(&client, &ns, &kind, &name).await;
                    let conds = st["conditions"].as_array()?.clone();
                    conds
                        .iter()
                        .find(|c| c["type"] == type_.as_str())
                        .filter(|c| c["status"] == status.as_str() && c["reason"] == reason.as_str())
                        .filter(|c| c["message"].as_str().is_some_and(|m| !m.trim().is_empty()))
                        .map(|_| ())
                })
                .await;
            }
            Expect::Event(reason) => {
                eventually(&format!("{kind} {short}: event {reason}"), TIMEOUT, || async {
                    event_reasons(&client, &ns, &name).await.contains(&reason).then_some(())
                })
                .await;
            }
            Expect::Phase(p) => {
                eventually(&format!("{kind} {short}: phase {p}"), TIMEOUT, || async {
                    (status_of(&client, &ns, &kind, &name).await["phase"] == p.as_str()).then_some(())
                })
                .await;
            }
            Expect::Refused(_) => unreachable!("refusals are checked when the object is created"),
        }
    }
}

#[tokio::test]
async fn every_bad_object_is_refused_or_reported_and_the_operator_carries_on() {
    let started = std::time::Instant::now();
    let corpus = corpus();
    assert!(corpus.len() >= 40, "the corpus has {} objects; issue 11 asks for at least 40", corpus.len());
    let readme = std::fs::read_to_string(corpus_dir().join("README.md")).expect("tests/bad_input/README.md");
    for b in &corpus {
        assert!(readme.contains(&b.file), "tests/bad_input/README.md does not list {}", b.file);
    }

    let mut env = TestEnv::new("bad-input").await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.op_ns);
    let public = eventually("sealing public key published", TIMEOUT, || async {
        cms.get_opt("byok-sealing-key").await.ok().flatten()?.data?.get("publicKey").cloned()
    })
    .await;
    let ns = env.ns.clone();
    let mut fill = Fill { ns: &ns, sealing_public_key: &public, plaintexts: Vec::new() };

    // Apply every file: its objects in order, the last one (the subject) as bad as it gets.
    let mut failures: Vec<String> = Vec::new();
    let mut waits = Vec::new();
    let (mut refused, mut reported) = (0, 0);
    for b in &corpus {
        let mut docs = b.docs.clone();
        docs.iter_mut().for_each(|d| fill.fill(d));
        let (subject, needs) = docs.split_last().expect("a subject");
        for d in needs {
            if let Err(e) = create(&env.client, &env.ns, d).await {
                failures.push(format!(
                    "{}: {} {} needed by the subject was refused: {e}",
                    b.file,
                    d["kind"],
                    name_of(d)
                ));
            }
        }
        let kind = subject["kind"].as_str().unwrap_or_default().to_string();
        let answer = create(&env.client, &env.ns, subject).await;
        match (&b.expect[0], answer) {
            (Expect::Refused(want), Err(kube::Error::Api(s))) => {
                refused += 1;
                eprintln!(
                    "[bad_input] {}: refused {} {}",
                    b.file,
                    s.code,
                    s.message.chars().take(300).collect::<String>()
                );
                if !(400..500).contains(&s.code) || !s.message.contains(want.as_str()) {
                    failures.push(format!(
                        "{}: refused ({}) but the message lacks {want:?}: {}",
                        b.file, s.code, s.message
                    ));
                }
            }
            (Expect::Refused(want), other) => {
                failures.push(format!("{}: expected a refusal containing {want:?}, got {other:?}", b.file))
            }
            (_, Err(e)) => failures.push(format!("{}: {kind} was refused: {e}", b.file)),
            (_, Ok(())) => {
                reported += 1;
                let task = check_accepted(
                    env.client.clone(),
                    env.ns.clone(),
                    kind.clone(),
                    name_of(subject),
                    b.expect.clone(),
                );
                waits.push((b, kind, name_of(subject), tokio::spawn(task)));
            }
        }
    }
    env.plaintexts.append(&mut fill.plaintexts);
    eprintln!("[bad_input] {} files: {refused} refused by the API server, {reported} accepted", corpus.len());

    // The good objects, applied alongside: they must work as if nothing else were there.
    let key = fake_key(Provider::OpenAi, "");
    env.create_secret("good-openai-src", "apiKey", key.as_bytes()).await;
    let mut spec = env.spec(Provider::OpenAi, "good-openai-src");
    spec.default = true;
    env.create_key("good-openai", spec).await;
    create_evaljob(&env, "good-eval", judge_spec("openai", cases(4))).await;

    for (b, kind, name, task) in waits {
        if let Err(e) = task.await {
            let panic = e.try_into_panic().ok();
            let why = panic
                .as_ref()
                .and_then(|p| {
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                })
                .unwrap_or_else(|| "task failed".into());
            let st = status_of(&env.client, &env.ns, &kind, &name).await;
            let events = event_reasons(&env.client, &env.ns, &name).await;
            failures.push(format!("{}: {why}\n    status: {st}\n    events: {events:?}", b.file));
        } else {
            let st = status_of(&env.client, &env.ns, &kind, &name).await;
            let conds: Vec<String> = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}={}/{}",
                        c["type"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or(""),
                        c["reason"].as_str().unwrap_or("")
                    )
                })
                .collect();
            eprintln!("[bad_input] {}: {} {:?}", b.file, st["phase"], conds);
        }
        for g in &b.gaps {
            eprintln!("[bad_input] GAP {}: {g}", b.file);
        }
    }

    env.wait_phase("good-openai", KeyPhase::Ready).await;
    wait_evaljob(&env, "good-eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    // Not wedged: a key created after all of the above is imported and validated too.
    env.add_key("good-after", Provider::Anthropic, "").await;
    env.wait_phase("good-after", KeyPhase::Ready).await;

    assert!(!env.operator_exited(), "the operator process ended");
    let log = std::fs::read_to_string(&env.log_path).expect("operator log");
    assert!(!log.contains("panicked"), "the operator panicked: see {}", env.log_path.display());
    env.assert_no_plaintext().await;
    eprintln!("[bad_input] done in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} files did not go as expected:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

/// The corpus parses and every file says what it is and what must happen (no cluster needed).
#[test]
fn corpus_files_are_well_formed() {
    let corpus = corpus();
    assert!(corpus.len() >= 40);
    let mut names = std::collections::BTreeSet::new();
    for b in &corpus {
        for d in &b.docs {
            let kind = d["kind"].as_str().unwrap_or_else(|| panic!("{}: an object without kind", b.file));
            resource(kind);
            assert!(
                names.insert((kind.to_string(), name_of(d))),
                "{}: {kind} {} is in another file too",
                b.file,
                name_of(d)
            );
        }
        assert!(!b.what.is_empty());
    }
}
