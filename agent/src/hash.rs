//! FNV-1a: short, stable names derived from longer ones (container ids, nftables chain names,
//! socket paths). Stable across builds and restarts, unlike std's `DefaultHasher`.

/// 64-bit FNV-1a of `s`.
pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// 32-bit FNV-1a of `s`.
pub fn fnv1a32(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5, |h, b| (h ^ b as u32).wrapping_mul(0x01000193))
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        // Reference values of the FNV specification.
        assert_eq!(super::fnv1a64("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(super::fnv1a32("a"), 0xe40c292c);
    }
}
