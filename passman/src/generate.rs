//! Password generation: uniform choice over the selected character classes, at least one of
//! each, by rejection sampling on the platform's entropy (no modulo bias).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use platform_api::Entropy;
use zeroize::Zeroizing;

/// Shortest password generated.
pub const MIN_LEN: usize = 4;
/// Longest password generated.
pub const MAX_LEN: usize = 256;
/// Length when the request names none.
pub const DEFAULT_LEN: usize = 24;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
const SYMBOLS: &[u8] = b"!#$%&()*+,-./:;<=>?@[]^_{|}~";

/// Which classes a generated password draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classes {
    /// `a-z`.
    pub lower: bool,
    /// `A-Z`.
    pub upper: bool,
    /// `0-9`.
    pub digits: bool,
    /// Punctuation (no quotes, backslash or space).
    pub symbols: bool,
}

impl Default for Classes {
    fn default() -> Self {
        Classes {
            lower: true,
            upper: true,
            digits: true,
            symbols: true,
        }
    }
}

/// Why a generation request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerateError {
    /// Length outside `MIN_LEN..=MAX_LEN`.
    Length,
    /// No class selected, or a letter other than `l u d s`.
    Classes,
}

impl fmt::Display for GenerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenerateError::Length => write!(f, "length must be {MIN_LEN} to {MAX_LEN}"),
            GenerateError::Classes => {
                f.write_str("classes: one or more of l (lower) u (upper) d (digits) s (symbols)")
            }
        }
    }
}

impl Classes {
    /// From letters `l u d s` (e.g. `"lud"`).
    pub fn parse(s: &str) -> Result<Classes, GenerateError> {
        let mut c = Classes {
            lower: false,
            upper: false,
            digits: false,
            symbols: false,
        };
        for b in s.bytes() {
            match b {
                b'l' => c.lower = true,
                b'u' => c.upper = true,
                b'd' => c.digits = true,
                b's' => c.symbols = true,
                _ => return Err(GenerateError::Classes),
            }
        }
        if c.sets().is_empty() {
            return Err(GenerateError::Classes);
        }
        Ok(c)
    }

    fn sets(&self) -> Vec<&'static [u8]> {
        [
            (self.lower, LOWER),
            (self.upper, UPPER),
            (self.digits, DIGITS),
            (self.symbols, SYMBOLS),
        ]
        .into_iter()
        .filter_map(|(on, set)| on.then_some(set))
        .collect()
    }
}

/// A uniform index below `n` (1..=256).
fn below<E: Entropy + ?Sized>(entropy: &mut E, n: usize) -> usize {
    // Largest multiple of n that fits a byte: bytes at or above it are redrawn.
    let limit = 256 - (256 % n);
    loop {
        let mut b = [0u8; 1];
        entropy.fill(&mut b);
        if usize::from(b[0]) < limit {
            return usize::from(b[0]) % n;
        }
    }
}

/// A password of `len` characters from `classes`, holding at least one of each class.
pub fn generate<E: Entropy + ?Sized>(
    len: usize,
    classes: Classes,
    entropy: &mut E,
) -> Result<Zeroizing<String>, GenerateError> {
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Err(GenerateError::Length);
    }
    let sets = classes.sets();
    if sets.is_empty() {
        return Err(GenerateError::Classes);
    }
    let alphabet: Vec<u8> = sets.iter().flat_map(|s| s.iter().copied()).collect();
    let mut pw = Zeroizing::new(Vec::with_capacity(len));
    // Draw whole passwords until every class appears: uniform over the qualifying passwords.
    loop {
        pw.clear();
        for _ in 0..len {
            pw.push(alphabet[below(entropy, alphabet.len())]);
        }
        if sets.iter().all(|s| pw.iter().any(|c| s.contains(c))) {
            break;
        }
    }
    // Every byte comes from the ASCII alphabets above.
    Ok(Zeroizing::new(pw.iter().map(|&b| char::from(b)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic xorshift source, good enough to exercise the sampler.
    pub(crate) struct TestRng(pub u64);
    impl Entropy for TestRng {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *b = self.0 as u8;
            }
        }
    }

    #[test]
    fn generated_passwords_have_the_length_and_every_class() {
        let mut rng = TestRng(0x1234_5678);
        for len in [MIN_LEN, 8, 24, MAX_LEN] {
            let pw = generate(len, Classes::default(), &mut rng).unwrap();
            assert_eq!(pw.len(), len);
            assert!(pw.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(pw.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(pw.bytes().any(|b| b.is_ascii_digit()));
            assert!(pw.bytes().any(|b| SYMBOLS.contains(&b)));
        }
        let digits = generate(12, Classes::parse("d").unwrap(), &mut rng).unwrap();
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn bad_lengths_and_classes_are_refused() {
        let mut rng = TestRng(7);
        assert_eq!(
            generate(3, Classes::default(), &mut rng).unwrap_err(),
            GenerateError::Length
        );
        assert_eq!(
            generate(MAX_LEN + 1, Classes::default(), &mut rng).unwrap_err(),
            GenerateError::Length
        );
        assert_eq!(Classes::parse("").unwrap_err(), GenerateError::Classes);
        assert_eq!(Classes::parse("lx").unwrap_err(), GenerateError::Classes);
    }

    #[test]
    fn sampler_is_unbiased_over_a_digit_alphabet() {
        let mut rng = TestRng(99);
        let mut counts = [0u32; 10];
        for _ in 0..20_000 {
            counts[below(&mut rng, 10)] += 1;
        }
        // 2,000 expected each; 10% slack is far beyond the noise of 20,000 draws.
        assert!(
            counts.iter().all(|&c| (1800..=2200).contains(&c)),
            "{counts:?}"
        );
    }
}
