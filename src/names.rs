//! Names of objects the operator creates: deterministic (so a restart finds them) and bounded,
//! and FNV-1a, the one stable hash that keeps cut names distinct.

/// 64-bit FNV-1a: the same on every replica and release, so names and version ids derived from it
/// never change under existing objects. Not a cryptographic hash.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// `<base>-<suffix>`, cut to fit `max` with a stable hash so distinct bases stay distinct.
pub fn bounded_to(base: &str, suffix: &str, max: usize) -> String {
    let name = format!("{base}-{suffix}");
    if name.len() <= max {
        return name;
    }
    let hash = fnv1a(base.as_bytes());
    let keep = max.saturating_sub(suffix.len() + 10);
    let cut = base[..keep.min(base.len())].trim_end_matches(['-', '.']);
    format!("{cut}-{:08x}-{suffix}", hash as u32)
}

/// Bounded to 253 characters: names of Secrets and ConfigMaps.
pub fn bounded(base: &str, suffix: &str) -> String {
    bounded_to(base, suffix, 253)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (draft-eastlake-fnv): names already stored depend on them.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn short_names_are_kept_and_long_ones_bounded_and_distinct() {
        assert_eq!(bounded("ej", "judge"), "ej-judge");
        let a = bounded_to(&"a".repeat(80), "judge", 63);
        let b = bounded_to(&format!("{}b", "a".repeat(79)), "judge", 63);
        assert!(a.len() <= 63 && b.len() <= 63 && a.ends_with("-judge"));
        assert_ne!(a, b);
    }
}
