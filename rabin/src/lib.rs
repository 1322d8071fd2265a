//! Rabin fingerprints of a sliding window of bytes, as restic's content-defined chunker
//! computes them: the items rustic_core takes from the `rustic_cdc` crate, written here and put
//! in its place with cargo's `[patch]`.
//!
//! A fingerprint is the remainder, modulo an irreducible polynomial `P` of degree `k` over
//! GF(2), of the last `w` bytes read as a polynomial (the oldest byte the highest power). Two
//! tables make a slide cost a few operations: `out[b]`, the term a byte `b` leaving the window
//! contributes (`b·x^(8(w−1)) mod P`), and `reduce[b]`, which takes the byte `b` that a shift
//! by 8 pushes above degree `k` back below it (`(b·x^k mod P) + b·x^k`). Building them costs
//! about as much as hashing a hundred kilobytes; rustic_core makes a fingerprint for every file,
//! so the tables are computed once per polynomial and window, and shared.

use std::sync::{Mutex, PoisonError};

/// A polynomial over GF(2) of degree below 64: bit `i` is the coefficient of `x^i`.
pub type Polynom64 = u64;

/// Arithmetic on polynomials over GF(2).
pub trait Polynom {
    /// The degree; -1 for the zero polynomial.
    fn degree(&self) -> i32;
    /// The remainder of the division by `m`, which must not be zero.
    fn modulo(&self, m: &Self) -> Self;
}

impl Polynom for Polynom64 {
    fn degree(&self) -> i32 {
        63 - self.leading_zeros() as i32
    }

    fn modulo(&self, m: &Self) -> Self {
        assert!(*m != 0, "division by the zero polynomial");
        let divisor = m.degree();
        let mut rest = *self;
        while rest.degree() >= divisor {
            rest ^= m << (rest.degree() - divisor);
        }
        rest
    }
}

/// A fingerprint that slides over a stream a byte at a time.
pub trait RollingHash64 {
    /// Empties the window and the fingerprint.
    fn reset(&mut self);
    /// Slides in up to one byte less than the window holds from `iter`; returns how many.
    fn prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>;
    /// [`RollingHash64::reset`], then [`RollingHash64::prefill_window`].
    fn reset_and_prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>;
    /// Slides `byte` in, and the oldest byte of the window out.
    fn slide(&mut self, byte: u8);
    /// The fingerprint of the window.
    fn get_hash(&self) -> &Polynom64;
}

/// The tables of one polynomial and window size.
#[derive(Debug)]
struct Tables {
    out: [Polynom64; 256],
    reduce: [Polynom64; 256],
}

/// The tables made so far, by polynomial and window size in bits: a repository has one
/// polynomial, so this stays tiny, and each entry lives as long as the process.
static TABLES: Mutex<Vec<(Polynom64, u32, &'static Tables)>> = Mutex::new(Vec::new());

impl Tables {
    /// The tables of `polynom` and a window of `2^window_bits` bytes, made on first use.
    fn of(polynom: Polynom64, window_bits: u32) -> &'static Tables {
        let mut made = TABLES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, tables)) =
            (made.iter()).find(|(p, w, _)| *p == polynom && *w == window_bits)
        {
            return tables;
        }
        let tables: &'static Tables = Box::leak(Box::new(Tables::new(polynom, 1 << window_bits)));
        made.push((polynom, window_bits, tables));
        tables
    }

    fn new(polynom: Polynom64, window: usize) -> Self {
        let degree = polynom.degree();
        let mut out = [0; 256];
        let mut reduce = [0; 256];
        for byte in 0..256u64 {
            let mut term = byte.modulo(&polynom);
            for _ in 1..window {
                term = (term << 8).modulo(&polynom);
            }
            out[byte as usize] = term;
            let high = byte << degree;
            reduce[byte as usize] = high.modulo(&polynom) | high;
        }
        Tables { out, reduce }
    }
}

/// The Rabin fingerprint of a window of `2^n` bytes.
#[derive(Debug, Clone)]
pub struct Rabin64 {
    /// The fingerprint of the window.
    pub hash: Polynom64,
    tables: &'static Tables,
    window: Vec<u8>,
    next: usize,
    /// How far right the fingerprint shifts to find the byte above the degree: `k − 8`.
    shift: i32,
}

impl Rabin64 {
    /// A fingerprint of a window of `2^window_size_nb_bits` bytes modulo `mod_polynom`, which
    /// must be of degree 8 or more.
    #[must_use]
    pub fn new_with_polynom(window_size_nb_bits: u32, mod_polynom: &Polynom64) -> Self {
        Self {
            hash: 0,
            tables: Tables::of(*mod_polynom, window_size_nb_bits),
            window: vec![0; 1 << window_size_nb_bits],
            next: 0,
            shift: mod_polynom.degree() - 8,
        }
    }

    /// Appends `byte` to the fingerprint, reducing it below the polynomial's degree.
    #[inline]
    fn append(&mut self, byte: u8) {
        self.window[self.next] = byte;
        let above = (self.hash >> self.shift) & 0xff;
        self.hash = ((self.hash << 8) | Polynom64::from(byte)) ^ self.tables.reduce[above as usize];
        self.next = (self.next + 1) & (self.window.len() - 1);
    }
}

impl RollingHash64 for Rabin64 {
    fn reset(&mut self) {
        self.window.fill(0);
        self.next = 0;
        self.hash = 0;
    }

    fn prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>,
    {
        let wanted = self.window.len() - 1;
        let mut read = 0;
        for byte in iter.take(wanted) {
            self.slide(byte);
            read += 1;
        }
        read
    }

    /// The window's old bytes are taken as zeroes, which contribute nothing: the bytes read
    /// are appended without sliding any out, and the slot after them is zeroed for the first
    /// slide to take out.
    fn reset_and_prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>,
    {
        self.hash = 0;
        let wanted = self.window.len() - 1;
        let mut read = 0;
        for byte in iter.take(wanted) {
            self.append(byte);
            read += 1;
        }
        self.window[self.next] = 0;
        read
    }

    #[inline]
    fn slide(&mut self, byte: u8) {
        let leaving = self.window[self.next];
        self.hash ^= self.tables.out[leaving as usize];
        self.append(byte);
    }

    fn get_hash(&self) -> &Polynom64 {
        &self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A polynomial of degree 53 as restic's repositories have.
    const POLYNOM: Polynom64 = 0x003D_A335_8B4D_C173;

    /// The fingerprint of `bytes` (the first the highest power), from its definition.
    fn fingerprint(bytes: &[u8]) -> Polynom64 {
        (bytes.iter()).fold(0, |hash, byte| {
            ((hash << 8) | Polynom64::from(*byte)).modulo(&POLYNOM)
        })
    }

    /// Bytes of a fixed pseudo-random sequence.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn degrees_and_remainders_are_those_of_gf2_polynomials() {
        assert_eq!(
            (0u64.degree(), 1u64.degree(), POLYNOM.degree()),
            (-1, 0, 53)
        );
        // x^3 + x + 1 divides x^7 + 1 over GF(2).
        assert_eq!(0b1000_0001u64.modulo(&0b1011), 0);
        assert_eq!(0b1000_0000u64.modulo(&0b1011), 1);
        assert_eq!(0b110u64.modulo(&0b1011), 0b110);
    }

    #[test]
    fn each_slide_gives_the_fingerprint_of_the_last_window_of_bytes() {
        let data = noise(4096);
        let mut rabin = Rabin64::new_with_polynom(6, &POLYNOM);
        for (at, byte) in data.iter().enumerate() {
            rabin.slide(*byte);
            let start = (at + 1).saturating_sub(64);
            assert_eq!(
                rabin.hash,
                fingerprint(&data[start..=at]),
                "after byte {at}"
            );
            assert_eq!(rabin.get_hash(), &rabin.hash);
        }
    }

    #[test]
    fn a_prefilled_window_takes_one_byte_less_and_then_slides_as_if_a_zero_came_first() {
        let data = noise(1000);
        let mut rabin = Rabin64::new_with_polynom(6, &POLYNOM);
        for byte in noise(300) {
            rabin.slide(byte);
        }
        let read = rabin.reset_and_prefill_window(&mut data[..64].iter().copied());
        assert_eq!(read, 63);
        assert_eq!(rabin.hash, fingerprint(&data[..63]));
        let mut seen = vec![0];
        seen.extend_from_slice(&data[..63]);
        for byte in &data[100..400] {
            rabin.slide(*byte);
            seen.push(*byte);
            assert_eq!(rabin.hash, fingerprint(&seen[seen.len() - 64..]));
        }
        rabin.reset();
        assert_eq!(rabin.prefill_window(&mut data.iter().copied()), 63);
        assert_eq!(rabin.hash, fingerprint(&data[..63]));
    }

    /// Fingerprints of 200,000 bytes of [`noise`], re-prefilled every 50,000 bytes, folded into
    /// one number, and the last fingerprint, for three polynomials: the values the crate this
    /// one replaces gives (rustic_cdc 0.3.1, run once outside the workspace).
    #[test]
    fn the_fingerprints_are_those_of_the_crate_this_one_replaces() {
        let expected = [
            (
                0x003D_A335_8B4D_C173,
                0x56a2_234d_a753_e853,
                0x1d_48b9_ccea_8ddd,
            ),
            (
                0x002A_8E7B_3C1D_6F85,
                0x37cb_e09f_e467_af9b,
                0x1b_0094_e9da_0fb9,
            ),
            (
                0x003F_2C5B_7A9E_1D03,
                0x3d5e_7565_a649_bb44,
                0x08_d518_8922_6586,
            ),
        ];
        let data = noise(200_000);
        for (polynom, folded, last) in expected {
            let mut rabin = Rabin64::new_with_polynom(6, &polynom);
            let mut sum = 0u64;
            for (at, byte) in data.iter().enumerate() {
                if at % 50_000 == 0 {
                    rabin.reset_and_prefill_window(&mut data[at..at + 64].iter().copied());
                }
                rabin.slide(*byte);
                sum = sum.wrapping_mul(31).wrapping_add(rabin.hash);
            }
            assert_eq!((sum, rabin.hash), (folded, last), "polynomial {polynom:x}");
        }
    }

    #[test]
    fn the_tables_are_made_once_per_polynomial_and_window() {
        let first = Rabin64::new_with_polynom(6, &POLYNOM);
        let second = Rabin64::new_with_polynom(6, &POLYNOM);
        let wider = Rabin64::new_with_polynom(7, &POLYNOM);
        assert!(std::ptr::eq(first.tables, second.tables));
        assert!(!std::ptr::eq(first.tables, wider.tables));
    }
}
