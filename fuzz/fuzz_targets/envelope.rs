//! The ciphertext envelope of an encrypted key Secret (anyone who can write Secrets in the
//! operator's scope can put bytes there): it parses or is refused, never panics; what parses
//! encodes back to itself; and it never opens under a keyring that did not seal it.
#![no_main]

use std::sync::LazyLock;

use byok_operator::crypto::{self, Aad, Envelope, Keyring};
use libfuzzer_sys::fuzz_target;

static RING: LazyLock<Keyring> = LazyLock::new(Keyring::generate);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(envelope) = Envelope::parse(text) else { return };
    let encoded = envelope.encode();
    let again = Envelope::parse(&encoded).expect("an encoded envelope parses");
    assert_eq!(again.encode(), encoded, "encode(parse(encode(e))) == encode(e)");
    let aad = Aad::new("ns", "name", "uid", "openai");
    assert!(crypto::open(&RING, &aad, &envelope).is_err(), "a forged envelope opened");
});
