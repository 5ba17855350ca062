//! Sealed keys (spec.sealed of a ByokKey: committed to Git, written by anyone with the public
//! key): bytes that are not a blob sealed to this operator are refused, never panic; a key sealed
//! for one object opens for it alone, as the same key (checked on one input in 32).
#![no_main]

use std::sync::LazyLock;

use byok_operator::crypto::sealing::{self, SealingKey};
use libfuzzer_sys::fuzz_target;
use secrecy::{ExposeSecret, SecretString};

static KEY: LazyLock<SealingKey> = LazyLock::new(SealingKey::generate);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // As a blob: refused (nobody without the public key made it for this operator).
    assert!(KEY.unseal(text, "ns", "name", "openai", None).is_err(), "an unsealed blob opened");
    // As a key to seal: it round-trips for its object, and only for it. Four X25519 operations
    // per input would hold the run under 1,000 inputs/s: one input in 32 takes the round trip
    // (the sealing code does not branch on the key's bytes; the parser above sees every input).
    if data.len() % 32 != 0 {
        return;
    }
    let key = SecretString::from(text);
    let Ok(blob) = sealing::seal(&KEY.public_base64(), "ns", "name", "openai", None, &key) else { return };
    let opened = KEY.unseal(&blob, "ns", "name", "openai", None).expect("a blob sealed for this object opens");
    assert_eq!(opened.expose_secret(), text);
    assert!(KEY.unseal(&blob, "ns", "other", "openai", None).is_err(), "opened for another name");
    assert!(KEY.unseal(&blob, "ns", "name", "anthropic", None).is_err(), "opened for another provider");
});
