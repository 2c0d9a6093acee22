//! Lock values: 128 random bits from the operating system's CSPRNG, as hex; and their
//! short hashes.

use std::cell::RefCell;

/// Bytes read from the OS CSPRNG at a time (a system call costs more than the lock
/// work on some machines); each byte is handed out once, then zeroed.
const POOL: usize = 4096;

thread_local! {
    static RANDOM: RefCell<(usize, Box<[u8; POOL]>)> = RefCell::new((POOL, Box::new([0; POOL])));
}

/// Fills `out` with bytes from the OS CSPRNG (read ahead in blocks of [`POOL`] bytes).
fn os_random(out: &mut [u8]) -> Result<(), getrandom::Error> {
    RANDOM.with(|r| {
        let (used, pool) = &mut *r.borrow_mut();
        if *used + out.len() > POOL {
            getrandom::fill(&mut pool[..])?;
            *used = 0;
        }
        let taken = &mut pool[*used..*used + out.len()];
        out.copy_from_slice(taken);
        taken.fill(0);
        *used += out.len();
        Ok(())
    })
}

/// A fresh lock value: 16 bytes from the OS CSPRNG, 32 lowercase hex characters.
pub fn random_value() -> String {
    let mut bytes = [0u8; 16];
    // getrandom reads the kernel CSPRNG; failure there means the OS cannot give
    // randomness at all, which no lock can be safe without.
    os_random(&mut bytes).expect("the OS random number generator failed");
    let mut out = String::with_capacity(32);
    for b in bytes {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// A uniform number in `[0, 1)` for retry jitter.
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if os_random(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// A short hash of a holder's lock value (to tell holders apart without keeping values: a
/// node's vote names the holder it found, an announcement the value it released).
pub fn holder_hash(value: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_128_bit_hex_and_distinct() {
        let a = random_value();
        let b = random_value();
        assert_eq!(a.len(), 32);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn values_stay_distinct_across_refills_of_the_pool() {
        let values: std::collections::HashSet<String> =
            (0..3 * POOL / 16).map(|_| random_value()).collect();
        assert_eq!(values.len(), 3 * POOL / 16);
        let u = random_unit();
        assert!((0.0..1.0).contains(&u));
    }
}
