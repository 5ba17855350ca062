//! The DEK discipline, against an in-memory KMS that counts its calls and can be switched off.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use secrecy::ExposeSecret;

use super::*;
use crate::crypto::Kek;

/// Wraps by XOR with a per-version pad: enough to tell versions apart and to refuse a wrong one.
#[derive(Default)]
struct FakeKms {
    version: Mutex<u8>,
    down: AtomicBool,
}

impl FakeKms {
    fn id(v: u8) -> String {
        format!("fake:v{v}")
    }
    fn check(&self) -> Result<u8, KmsError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(KmsError::Unavailable("switched off".into()));
        }
        Ok(*self.version.lock().expect("lock"))
    }
}

impl Kms for FakeKms {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn current_key_id(&self) -> BoxFuture<'_, Result<String, KmsError>> {
        Box::pin(async move { Ok(Self::id(self.check()?)) })
    }
    fn wrap<'a>(&'a self, dek: &'a [u8]) -> BoxFuture<'a, Result<Wrapped, KmsError>> {
        Box::pin(async move {
            let v = self.check()?;
            let ciphertext = dek.iter().map(|b| b ^ v).collect();
            Ok(Wrapped { key_id: Self::id(v), dek: WrappedDek { ciphertext, annotations: Default::default() } })
        })
    }
    fn unwrap<'a>(
        &'a self,
        key_id: &'a str,
        dek: &'a WrappedDek,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KmsError>> {
        Box::pin(async move {
            self.check()?;
            let v: u8 =
                key_id.strip_prefix("fake:v").and_then(|v| v.parse().ok()).ok_or(KmsError::Refused("id".into()))?;
            Ok(Zeroizing::new(dek.ciphertext.iter().map(|b| b ^ v).collect()))
        })
    }
}

fn aad(name: &str) -> Aad {
    Aad::new("team-a", name, "uid-1", "openai")
}

fn remote(policy: DekPolicy) -> (Arc<FakeKms>, KekSource, Arc<RemoteKek>) {
    let kms = Arc::new(FakeKms::default());
    *kms.version.lock().expect("lock") = 1;
    let source = KekSource::remote(kms.clone(), None, policy);
    let KekSource::Remote(r) = &source else { unreachable!("remote") };
    let r = r.clone();
    (kms, source, r)
}

#[tokio::test]
async fn one_dek_wraps_a_batch_and_opens_from_the_cache() {
    let (_, kek, r) = remote(DekPolicy::default());
    let mut envs = Vec::new();
    for i in 0..100 {
        envs.push(kek.seal(&aad(&format!("k{i}")), &SecretString::from(format!("sk-{i}"))).await.expect("seals"));
    }
    for (i, env) in envs.iter().enumerate() {
        assert!(env.encode().starts_with("byok2."));
        let key = kek.open(&aad(&format!("k{i}")), env).await.expect("opens");
        assert_eq!(key.expose_secret(), format!("sk-{i}"));
    }
    assert_eq!(r.calls.wraps.load(Ordering::Relaxed), 1, "one DEK for the batch");
    assert_eq!(r.calls.unwraps.load(Ordering::Relaxed), 0, "the fresh DEK is cached");
    // The AAD still binds each ciphertext to its object.
    assert!(kek.open(&aad("k1"), &envs[0]).await.is_err());
}

#[tokio::test]
async fn a_dek_serves_a_bounded_number_of_seals() {
    let (_, kek, r) = remote(DekPolicy { max_seals: 10, ..DekPolicy::default() });
    for i in 0..25 {
        kek.seal(&aad("k"), &SecretString::from(format!("sk-{i}"))).await.expect("seals");
    }
    assert_eq!(r.calls.wraps.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_restarted_operator_unwraps_once_per_dek() {
    let (kms, kek, _) = remote(DekPolicy::default());
    let envs: Vec<_> = futures::future::join_all((0..20).map(|i| {
        let kek = kek.clone();
        async move { kek.seal(&aad(&format!("k{i}")), &SecretString::from("sk")).await.expect("seals") }
    }))
    .await;
    let restarted = KekSource::remote(kms, None, DekPolicy::default());
    let KekSource::Remote(r) = &restarted else { unreachable!("remote") };
    futures::future::join_all(envs.iter().enumerate().map(|(i, env)| {
        let restarted = restarted.clone();
        async move { restarted.open(&aad(&format!("k{i}")), env).await.expect("opens") }
    }))
    .await;
    assert_eq!(r.calls.unwraps.load(Ordering::Relaxed), 1, "concurrent opens of one DEK: one remote call");
}

#[tokio::test]
async fn a_rotated_remote_key_makes_a_new_dek_and_asks_for_reseals() {
    let (kms, kek, r) = remote(DekPolicy::default());
    let old = kek.seal(&aad("k"), &SecretString::from("sk")).await.expect("seals");
    assert!(r.refresh().await.is_ok_and(|changed| !changed), "v1 known since the wrap");
    assert!(!kek.needs_reseal(&old));
    *kms.version.lock().expect("lock") = 2;
    assert!(r.refresh().await.expect("answers"), "v2 is news");
    assert!(kek.needs_reseal(&old));
    let new = kek.seal(&aad("k"), &SecretString::from("sk")).await.expect("seals");
    assert_eq!((old.kek_id(), new.kek_id()), ("fake:v1", "fake:v2"));
    assert!(!kek.needs_reseal(&new));
    assert_eq!(kek.open(&aad("k"), &old).await.expect("old opens").expose_secret(), "sk");
}

#[tokio::test]
async fn an_unreachable_kms_fails_closed_once_the_cache_has_nothing() {
    let (kms, kek, _) = remote(DekPolicy { ttl: Duration::ZERO, ..DekPolicy::default() });
    let env = kek.seal(&aad("k"), &SecretString::from("sk")).await.expect("seals");
    kms.down.store(true, Ordering::Relaxed);
    assert!(matches!(
        kek.seal(&aad("k"), &SecretString::from("sk")).await,
        Err(KekError::Kms(KmsError::Unavailable(_)))
    ));
    assert!(matches!(kek.open(&aad("k"), &env).await, Err(KekError::Kms(KmsError::Unavailable(_)))));
}

#[tokio::test]
async fn keyring_keys_open_during_a_migration_and_ask_to_be_resealed() {
    let ring = Arc::new(RwLock::new(Keyring::generate()));
    let legacy = KekSource::Keyring(ring.clone());
    let env = legacy.seal(&aad("k"), &SecretString::from("sk")).await.expect("seals");
    let kms = Arc::new(FakeKms::default());
    let kek = KekSource::remote(kms.clone(), Some(ring), DekPolicy::default());
    assert!(kek.needs_reseal(&env));
    assert_eq!(kek.open(&aad("k"), &env).await.expect("opens").expose_secret(), "sk");
    // Without the keyring, a keyring key is an unknown KEK, not garbage.
    let without = KekSource::remote(kms, None, DekPolicy::default());
    assert!(matches!(without.open(&aad("k"), &env).await, Err(KekError::Crypto(CryptoError::UnknownKek(_)))));
}

#[tokio::test]
async fn a_dek_of_the_wrong_length_is_refused() {
    struct Short;
    impl Kms for Short {
        fn kind(&self) -> &'static str {
            "short"
        }
        fn current_key_id(&self) -> BoxFuture<'_, Result<String, KmsError>> {
            Box::pin(async { Ok("s".to_string()) })
        }
        fn wrap<'a>(&'a self, _: &'a [u8]) -> BoxFuture<'a, Result<Wrapped, KmsError>> {
            Box::pin(async {
                Ok(Wrapped {
                    key_id: "s".into(),
                    dek: WrappedDek { ciphertext: vec![1], annotations: Default::default() },
                })
            })
        }
        fn unwrap<'a>(&'a self, _: &'a str, _: &'a WrappedDek) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KmsError>> {
            Box::pin(async { Ok(Zeroizing::new(vec![0; 16])) })
        }
    }
    let dek = Kek::from_dek("s".into(), Kek::fresh_dek().as_slice()).expect("dek");
    let env = crypto::seal_wrapped(
        &dek,
        &WrappedDek { ciphertext: vec![1], annotations: Default::default() },
        &aad("k"),
        &SecretString::from("sk"),
    )
    .expect("seals");
    let kek = KekSource::remote(Arc::new(Short), None, DekPolicy::default());
    assert!(matches!(kek.open(&aad("k"), &env).await, Err(KekError::Kms(KmsError::Refused(_)))));
}

#[tokio::test]
async fn the_envelope_header_is_authenticated_and_a_rewritten_one_takes_no_cache_entry() {
    let (_, kek, _) = remote(DekPolicy::default());
    let env = kek.seal(&aad("k"), &SecretString::from("sk")).await.expect("seals");
    // Same wrapped DEK (the fake KMS ignores annotations, as a careless plugin might), one more
    // annotation: the KMS would hand back the same DEK, GCM refuses the changed header.
    let mut wrapped = env.wrapped().expect("wrapped").clone();
    wrapped.annotations.insert("x.example/extra".into(), b"1".to_vec());
    let text = env.encode();
    let fields: Vec<&str> = text.split('.').collect();
    let original = Envelope::parse(&text).expect("parses");
    let rewritten = crypto::seal_wrapped(
        &Kek::from_dek("fake:v1".into(), Kek::fresh_dek().as_slice()).expect("dek"),
        &wrapped,
        &aad("k"),
        &SecretString::from("sk"),
    )
    .expect("seals")
    .encode();
    // Header of the rewritten envelope, nonce and ciphertext of the original.
    let mut forged: Vec<&str> = rewritten.split('.').take(4).collect();
    forged.extend(&fields[4..]);
    let forged = Envelope::parse(&forged.join(".")).expect("parses");
    let (restarted, r2) = {
        let KekSource::Remote(r0) = &kek else { unreachable!("remote") };
        let fresh = KekSource::remote(r0.kms.clone(), None, DekPolicy::default());
        let KekSource::Remote(r2) = &fresh else { unreachable!("remote") };
        let r2 = r2.clone();
        (fresh, r2)
    };
    assert!(matches!(restarted.open(&aad("k"), &forged).await, Err(KekError::Crypto(CryptoError::Authentication))));
    assert_eq!(r2.cache.lock().expect("lock").len(), 0, "a forged header took a cache entry");
    assert_eq!(restarted.open(&aad("k"), &original).await.expect("the real one opens").expose_secret(), "sk");
    assert_eq!(r2.cache.lock().expect("lock").len(), 1);
}

#[test]
fn key_ids_are_bounded() {
    let dek = Kek::from_dek("k".repeat(crate::crypto::MAX_KEY_ID_LEN + 1), Kek::fresh_dek().as_slice()).expect("dek");
    let wrapped = WrappedDek { ciphertext: vec![1], annotations: Default::default() };
    let env = crypto::seal_wrapped(&dek, &wrapped, &aad("k"), &SecretString::from("sk")).expect("seals");
    assert!(Envelope::parse(&env.encode()).is_err(), "a 1 KiB+ key id parses");
}
