//! Crash consistency: the operator is SIGKILLed at random moments while keys import
//! (`sourcePolicy: Delete`, the one place a key could be lost) and while a KEK rotation re-encrypts
//! them, then left to finish. Nothing may be lost: every key Ready, one ciphertext per key that opens
//! under the keyring, no source deleted before its ciphertext was stored, no answer of the provider
//! written twice. Crash points (`--features failpoints`, src/failpoints.rs) stop it between the
//! dangerous writes deterministically as well.
//!
//! Sizes: `BYOK_CRASH_KEYS` (200) keys, `BYOK_CRASH_ROUNDS` (5) kills per phase; `BYOK_CRASH_FULL=1`
//! is 1,000 x 20. `BYOK_CRASH_SEED` replays a kill schedule (printed by every run).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byok_operator::controller::byokkey::import::SOURCE_SECRET_TYPE;
use byok_operator::crd::{ByokKey, KeyPhase, Provider};
use byok_operator::crypto::Keyring;
use byok_operator::failpoints::{self, AFTER_RESEAL, AFTER_STORE, AFTER_VALIDATE};
use byok_operator::{cli::kek, keystore, operator::keyring};
use common::{TestEnv, eventually, fake_key, phase_of};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use rand::{Rng, SeedableRng, rngs::StdRng};
use secrecy::ExposeSecret;

const KEYRING: &str = "byok-operator-kek";

/// What the test's own watches saw, in the order the API server sent it.
#[derive(Default)]
struct Seen {
    /// Secret events so far: their order in one watch stream is the order of their writes.
    events: u64,
    /// Secret name -> position of its first event (the watch starts before anything is created).
    added: HashMap<String, u64>,
    /// Secret name -> position of its deletion.
    deleted: HashMap<String, u64>,
    /// Ciphertext writes (creates and re-encryptions).
    ciphertext_writes: u64,
    /// Lists after the first: events may have been missed, the order is no longer proven.
    relists: u32,
    /// ByokKey -> every distinct `status.lastValidated` written: one per provider answer recorded.
    validated: HashMap<String, BTreeSet<String>>,
}

type Shared = Arc<Mutex<Seen>>;

fn seen(s: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Watches the namespace's Secrets and ByokKeys into `shared`; returns once both have listed.
async fn watch(env: &TestEnv, shared: &Shared) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let secrets = watcher::watcher(env.secrets(), watcher::Config::default());
    let (s, t) = (shared.clone(), tx.clone());
    tokio::spawn(secrets.for_each(move |ev| {
        let first = record_secret(&s, ev);
        let t = t.clone();
        async move {
            if first {
                let _ = t.send(()).await;
            }
        }
    }));
    let keys = watcher::watcher(env.keys(), watcher::Config::default());
    let s = shared.clone();
    tokio::spawn(keys.for_each(move |ev| {
        let first = record_key(&s, ev);
        let t = tx.clone();
        async move {
            if first {
                let _ = t.send(()).await;
            }
        }
    }));
    for _ in 0..2 {
        tokio::time::timeout(common::TIMEOUT, rx.recv()).await.expect("watches listed");
    }
}

/// Records a Secret event; true at the end of the first list.
fn record_secret(shared: &Shared, ev: Result<Event<Secret>, watcher::Error>) -> bool {
    let mut s = seen(shared);
    match ev {
        Ok(Event::Init) => s.relists += u32::from(s.events > 0 || !s.added.is_empty()),
        Ok(Event::InitDone) => return s.relists == 0,
        Ok(Event::Apply(secret) | Event::InitApply(secret)) => {
            s.events += 1;
            let at = s.events;
            if keystore::envelope(&secret).is_ok() {
                s.ciphertext_writes += 1;
            }
            s.added.entry(secret.name_any()).or_insert(at);
        }
        Ok(Event::Delete(secret)) => {
            s.events += 1;
            let at = s.events;
            s.deleted.insert(secret.name_any(), at);
        }
        Err(e) => eprintln!("[crash] Secret watch error (retried): {e}"),
    }
    false
}

/// Records a ByokKey event; true at the end of the first list.
fn record_key(shared: &Shared, ev: Result<Event<ByokKey>, watcher::Error>) -> bool {
    match ev {
        Ok(Event::InitDone) => return true,
        Ok(Event::Apply(k) | Event::InitApply(k)) => {
            if let Some(at) = k.status.as_ref().and_then(|s| s.last_validated.as_ref()) {
                seen(shared).validated.entry(k.name_any()).or_default().insert(at.0.to_string());
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("[crash] ByokKey watch error (retried): {e}"),
    }
    false
}

struct Sizes {
    keys: usize,
    rounds: usize,
    seed: u64,
}

fn sizes() -> Sizes {
    let full = std::env::var("BYOK_CRASH_FULL").is_ok_and(|v| v == "1");
    let var = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let keys = var("BYOK_CRASH_KEYS", if full { 1000 } else { 200 });
    let rounds = var("BYOK_CRASH_ROUNDS", if full { 20 } else { 5 });
    let seed = std::env::var("BYOK_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    Sizes { keys, rounds, seed }
}

/// The operator process being killed and restarted; `run` counts its lives (0: the first).
struct Chaos {
    rng: StdRng,
    run: usize,
    kills: usize,
}

impl Chaos {
    /// SIGKILL, then a new process: a marker line in the log says which life logs what.
    fn restart(&mut self, env: &mut TestEnv) {
        env.kill_operator();
        self.kills += 1;
        self.run += 1;
        let mut log = std::fs::OpenOptions::new().append(true).open(&env.log_path).expect("log");
        writeln!(log, "{{\"crash_test_run\":{}}}", self.run).expect("marker");
        env.start_operator();
    }

    /// `rounds` kills spread over `total` units of `progress`: each at a random point of the
    /// work, plus a random delay of up to 300 ms so it may fall inside any step.
    async fn kill_during(&mut self, env: &mut TestEnv, rounds: usize, total: u64, progress: impl Fn(&TestEnv) -> u64) {
        let mut points: Vec<u64> = (0..rounds).map(|_| self.rng.random_range(0..total.max(1))).collect();
        points.sort_unstable();
        for point in points {
            let delay = Duration::from_millis(self.rng.random_range(0..300));
            let deadline = Instant::now() + Duration::from_secs(120);
            while progress(env) < point && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(delay).await;
            self.restart(env);
        }
    }
}

/// Creates `keys` source Secrets (opted in) and ByokKeys importing them, 16 at a time.
fn create_keys(env: &TestEnv, keys: Vec<(String, String)>) -> tokio::task::JoinHandle<()> {
    let (secrets, api) = (env.secrets(), env.keys());
    let spec = |name: &str| env.spec(Provider::OpenAi, &format!("{name}-src"));
    let items: Vec<_> = keys.into_iter().map(|(name, key)| (spec(&name), name, key)).collect();
    tokio::spawn(async move {
        futures::stream::iter(items)
            .map(|(spec, name, key)| {
                let (secrets, api) = (secrets.clone(), api.clone());
                async move {
                    let s = Secret {
                        metadata: ObjectMeta { name: Some(format!("{name}-src")), ..Default::default() },
                        type_: Some(SOURCE_SECRET_TYPE.into()),
                        data: Some([("apiKey".to_string(), ByteString(key.into_bytes()))].into()),
                        ..Default::default()
                    };
                    secrets.create(&PostParams::default(), &s).await?;
                    api.create(&PostParams::default(), &ByokKey::new(&name, spec)).await.map(|_| ())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await
            .expect("Secrets and ByokKeys created");
    })
}

async fn wait_all(env: &TestEnv, n: usize, what: &str, timeout: Duration, pred: impl Fn(&ByokKey) -> bool) {
    let api = env.keys();
    eventually(what, timeout, || async {
        let keys = api.list(&ListParams::default()).await.ok()?;
        (keys.items.iter().filter(|k| pred(k)).count() == n).then_some(())
    })
    .await;
}

async fn load_keyring(env: &TestEnv) -> Keyring {
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.op_ns);
    keyring::from_secret(&api.get(KEYRING).await.expect("keyring Secret")).expect("keyring")
}

/// Exactly one ciphertext per key, opening under the keyring to the key's plaintext, sealed under
/// the KEK its status names. Returns the KEK ids the ciphertexts are sealed under.
async fn check_ciphertexts(env: &TestEnv, plaintexts: &HashMap<String, String>) -> BTreeSet<String> {
    let ring = load_keyring(env).await;
    let lp = ListParams::default().labels(&keystore::selector());
    let stored = env.secrets().list(&lp).await.expect("ciphertexts").items;
    assert_eq!(stored.len(), plaintexts.len(), "exactly one ciphertext per key");
    let keys: HashMap<String, ByokKey> = env
        .keys()
        .list(&ListParams::default())
        .await
        .expect("keys")
        .items
        .into_iter()
        .map(|k| (k.name_any(), k))
        .collect();
    let mut keks = BTreeSet::new();
    for (name, plaintext) in plaintexts {
        let key = &keys[name];
        let secret = stored.iter().find(|s| s.name_any() == keystore::encrypted_secret_name(name));
        let opened = keystore::open(secret, key, &ring).unwrap_or_else(|e| panic!("{name}: ciphertext opens: {e}"));
        assert_eq!(opened.key.expose_secret(), plaintext, "{name}: the key imported is the key given");
        let status = key.status.as_ref().expect("status");
        assert_eq!(status.kek_id.as_deref(), Some(opened.kek_id()), "{name}: status names the KEK");
        assert_eq!(status.key_prefix.as_deref(), Some(&plaintext[..8]), "{name}: prefix");
        keks.insert(opened.kek_id().to_string());
    }
    keks
}

/// Every source deleted, each only after its ciphertext was stored; no ciphertext ever deleted.
fn check_order(shared: &Shared, names: &[String]) {
    let s = seen(shared);
    assert_eq!(s.relists, 0, "the Secret watch re-listed: the order of events is not proven");
    for name in names {
        let enc = keystore::encrypted_secret_name(name);
        let stored = s.added.get(&enc).unwrap_or_else(|| panic!("{name}: no ciphertext seen"));
        let deleted = s.deleted.get(&format!("{name}-src")).unwrap_or_else(|| panic!("{name}: source not deleted"));
        assert!(
            stored < deleted,
            "{name}: source deleted (event {deleted}) before its ciphertext was stored ({stored})"
        );
        assert!(!s.deleted.contains_key(&enc), "{name}: a ciphertext was deleted");
    }
}

/// "validated key" log lines per key and per life of the operator.
fn validations_per_run(env: &TestEnv) -> HashMap<String, Vec<usize>> {
    let log = std::fs::read_to_string(&env.log_path).expect("log");
    let mut run = 0;
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let Some(r) = v["crash_test_run"].as_u64() {
            run = r as usize;
        } else if v["fields"]["message"] == "validated key" {
            let name = v["fields"]["name"].as_str().unwrap_or_default().to_string();
            out.entry(name).or_default().push(run);
        }
    }
    out
}

/// Validation counts: no key validated twice in one life of the operator, no key whose answer
/// was recorded twice, no more repeats than kills. A repeat happens only when a kill fell between
/// the provider's request and the status write that records its answer (the answer was lost with
/// the process). Returns how many keys were validated how many times.
fn check_validations(
    env: &TestEnv,
    shared: &Shared,
    plaintexts: &HashMap<String, String>,
    per_check: u64,
    kills: usize,
) -> std::collections::BTreeMap<u64, usize> {
    let runs = validations_per_run(env);
    let s = seen(shared);
    let mut histogram = std::collections::BTreeMap::new();
    for (name, key) in plaintexts {
        let calls = env.mock.requests_for_key(key);
        let checks = calls.div_ceil(per_check);
        let recorded = s.validated.get(name).map_or(0, BTreeSet::len);
        assert_eq!(recorded, 1, "{name}: one provider answer recorded ({recorded})");
        let lives = runs.get(name).cloned().unwrap_or_default();
        let distinct: BTreeSet<_> = lives.iter().collect();
        assert_eq!(distinct.len(), lives.len(), "{name}: validated twice by one process: lives {lives:?}");
        assert!(checks as usize <= kills + 1, "{name}: {checks} validations for {kills} kills");
        *histogram.entry(checks).or_default() += 1;
    }
    histogram
}

#[tokio::test]
async fn random_sigkills_during_import_and_kek_rotation_lose_nothing() {
    let Sizes { keys: n, rounds, seed } = sizes();
    eprintln!("[crash] {n} keys, {rounds} kills per phase, seed {seed} (BYOK_CRASH_SEED={seed} replays the schedule)");
    let started = Instant::now();
    let mut env = TestEnv::new("crash").await;
    let shared = Shared::default();
    watch(&env, &shared).await;
    // One key imported without a kill: what one validation costs at the mock.
    let control = env.add_key("control", Provider::OpenAi, "").await;
    env.wait_phase("control", KeyPhase::Ready).await;
    let per_check = env.mock.requests_for_key(&control);
    let mut chaos = Chaos { rng: StdRng::seed_from_u64(seed), run: 0, kills: 0 };

    let keys: Vec<(String, String)> = (0..n).map(|i| (format!("k{i:04}"), fake_key(Provider::OpenAi, ""))).collect();
    let mut plaintexts: HashMap<String, String> = keys.iter().cloned().collect();
    env.plaintexts.extend(keys.iter().map(|(_, k)| k.clone()));
    let creating = create_keys(&env, keys);
    // Work to spread the kills over: per key 3 Secret events and one validation's calls.
    let s = shared.clone();
    let progress = move |env: &TestEnv| seen(&s).events + env.mock.requests_total();
    let base = progress(&env);
    chaos.kill_during(&mut env, rounds, n as u64 * (3 + per_check), |env| progress(env) - base).await;
    creating.await.expect("creating keys");
    let timeout = Duration::from_secs(60) + Duration::from_millis(100 * n as u64);
    wait_all(&env, n + 1, "every key Ready", timeout, |k| phase_of(k) == Some(KeyPhase::Ready)).await;
    let imported_in = started.elapsed();
    plaintexts.insert("control".into(), control);
    let names: Vec<String> = plaintexts.keys().cloned().collect();
    let before = check_ciphertexts(&env, &plaintexts).await;
    check_order(&shared, &names);
    let histogram = check_validations(&env, &shared, &plaintexts, per_check, chaos.kills);
    let calls: u64 = plaintexts.values().map(|k| env.mock.requests_for_key(k)).sum();
    eprintln!(
        "[crash] import: {} keys Ready after {:.1}s and {} kills; {:.2} validations per key (keys by validations: {histogram:?})",
        n + 1,
        imported_in.as_secs_f64(),
        chaos.kills,
        calls as f64 / per_check as f64 / plaintexts.len() as f64
    );

    // A KEK rotation, killed at random while the keys are re-encrypted.
    let rotated_at = Instant::now();
    let new_kek = kek::rotate(&env.client, &env.op_ns, KEYRING).await.expect("kek rotate");
    assert!(!before.contains(&new_kek), "a new KEK");
    let s = shared.clone();
    let writes = move |_: &TestEnv| seen(&s).ciphertext_writes;
    let base = writes(&env);
    chaos.kill_during(&mut env, rounds, plaintexts.len() as u64, |env| writes(env) - base).await;
    wait_all(&env, n + 1, "every key re-encrypted under the new KEK", timeout, |k| {
        phase_of(k) == Some(KeyPhase::Ready) && k.status.as_ref().and_then(|s| s.kek_id.as_deref()) == Some(&new_kek)
    })
    .await;
    let after = check_ciphertexts(&env, &plaintexts).await;
    assert_eq!(after, BTreeSet::from([new_kek.clone()]), "every key sealed under the new KEK, and opens");
    check_order(&shared, &names);
    let calls_after: u64 = plaintexts.values().map(|k| env.mock.requests_for_key(k)).sum();
    assert_eq!(calls_after, calls, "re-encryption asks no provider");
    eprintln!(
        "[crash] rotation: {} keys re-encrypted under {new_kek} after {:.1}s and {rounds} kills; {} kills in all, {:.1}s in all",
        n + 1,
        rotated_at.elapsed().as_secs_f64(),
        chaos.kills,
        started.elapsed().as_secs_f64()
    );
    env.assert_no_plaintext().await;
}

/// Restarts the operator with `FAILPOINTS` arming `point` (None: a plain restart).
fn arm(env: &mut TestEnv, point: Option<&str>) {
    env.kill_operator();
    env.operator_env = point.map(|p| vec![("FAILPOINTS".into(), format!("{p}=return"))]).unwrap_or_default();
    env.start_operator();
}

async fn stopped_at(env: &mut TestEnv, point: &str) {
    let code = env.wait_operator_exit(common::TIMEOUT).await;
    assert_eq!(code, Some(failpoints::EXIT_CODE), "the operator stopped at {point}");
}

async fn ciphertext(env: &TestEnv, name: &str) -> Secret {
    env.secrets().get(&keystore::encrypted_secret_name(name)).await.expect("ciphertext stored")
}

#[tokio::test]
async fn stopped_between_ciphertext_and_source_delete_the_source_stays_until_the_restart() {
    let mut env = TestEnv::new("crash-store").await;
    arm(&mut env, Some(AFTER_STORE));
    let key = env.add_key("k", Provider::OpenAi, "").await;
    stopped_at(&mut env, AFTER_STORE).await;
    // The ciphertext is stored and the source still there: whichever copy, the key exists.
    let stored = ciphertext(&env, "k").await;
    assert!(env.secrets().get_opt("k-src").await.expect("get").is_some(), "the source is kept");
    assert_eq!(env.mock.requests_for_key(&key), 0, "not validated yet");
    arm(&mut env, None);
    env.wait_phase("k", KeyPhase::Ready).await;
    // The restart finishes the deletion and uses the stored ciphertext: no second import.
    assert!(env.secrets().get_opt("k-src").await.expect("get").is_none(), "the source is deleted now");
    let after = ciphertext(&env, "k").await;
    assert_eq!(keystore::envelope(&after).ok(), keystore::envelope(&stored).ok(), "the same ciphertext");
    let ring = load_keyring(&env).await;
    let opened = keystore::open(Some(&after), &env.keys().get("k").await.expect("key"), &ring).expect("opens");
    assert_eq!(opened.key.expose_secret(), &key);
    assert_eq!(validations_per_run(&env).get("k").map(Vec::len), Some(1), "validated once");
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn stopped_between_reseal_and_status_the_key_opens_under_the_new_kek() {
    let mut env = TestEnv::new("crash-reseal").await;
    let key = env.add_key("k", Provider::OpenAi, "").await;
    let old = env.wait_phase("k", KeyPhase::Ready).await.status.and_then(|s| s.kek_id).expect("kek");
    let calls = env.mock.requests_for_key(&key);
    arm(&mut env, Some(AFTER_RESEAL));
    let new = kek::rotate(&env.client, &env.op_ns, KEYRING).await.expect("kek rotate");
    stopped_at(&mut env, AFTER_RESEAL).await;
    // The ciphertext is under the new KEK while the status still names the old one.
    assert_eq!(keystore::envelope_kek(&ciphertext(&env, "k").await), new);
    let k = env.keys().get("k").await.expect("key");
    assert_eq!(k.status.and_then(|s| s.kek_id), Some(old));
    arm(&mut env, None);
    env.wait_key("k", "status names the new KEK", |k| {
        k.status.as_ref().and_then(|s| s.kek_id.as_deref()) == Some(&new)
    })
    .await;
    let ring = load_keyring(&env).await;
    let opened = keystore::open(Some(&ciphertext(&env, "k").await), &env.keys().get("k").await.expect("key"), &ring);
    assert_eq!(opened.expect("opens").key.expose_secret(), &key);
    assert_eq!(env.mock.requests_for_key(&key), calls, "re-encryption asks no provider");
    env.assert_no_plaintext().await;
}

/// The window that stays open: a provider's answer lives in memory until the status write, so a
/// crash in between costs one more validation after the restart (never more, never a lost key).
#[tokio::test]
async fn stopped_between_answer_and_status_the_key_is_validated_once_more() {
    let mut env = TestEnv::new("crash-validate").await;
    arm(&mut env, Some(AFTER_VALIDATE));
    let key = env.add_key("k", Provider::OpenAi, "").await;
    stopped_at(&mut env, AFTER_VALIDATE).await;
    let one_check = env.mock.requests_for_key(&key);
    assert!(one_check > 0, "validated before the stop");
    // The import itself was complete: ciphertext stored, source deleted.
    ciphertext(&env, "k").await;
    assert!(env.secrets().get_opt("k-src").await.expect("get").is_none(), "the source is deleted");
    let k = env.keys().get("k").await.expect("key");
    assert!(k.status.and_then(|s| s.last_validated).is_none(), "the answer was not recorded");
    arm(&mut env, None);
    env.wait_phase("k", KeyPhase::Ready).await;
    assert_eq!(env.mock.requests_for_key(&key), 2 * one_check, "exactly one validation more");
    env.assert_no_plaintext().await;
}
