//! Content-defined chunking, with restic's boundaries, so that Ferry and restic deduplicate
//! against each other.
//!
//! A chunk holds at least `min` bytes, unless the file ends first. From there a Rabin
//! fingerprint of the last 64 bytes is checked before each further byte is taken: the chunk
//! ends where the fingerprint's low bits (`avg - 1`) are all zero, or at `max` bytes. The
//! window is prefilled from the 64 bytes that end at `min` exactly as rustic_core's chunker
//! prefills it, so Ferry's chunks are rustic's; the bytes before them are never fingerprinted,
//! and a file smaller than `min` costs no fingerprinting at all.

use std::io::{self, Read};

use rustic_cdc::{Rabin64, RollingHash64};
use rustic_core::repofile::{Chunker, ConfigFile};

/// Bytes of the sliding window: 2^6.
const WINDOW_BITS: u32 = 6;
const WINDOW: usize = 1 << WINDOW_BITS;

/// Bytes read at a time past the minimum, while looking for a boundary.
const READ_AHEAD: usize = 256 << 10;

/// How a repository cuts files into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkParams {
    /// restic's content-defined chunks.
    Rabin {
        polynomial: u64,
        min: usize,
        max: usize,
        /// `avg - 1`, for an average size `avg` that is a power of two.
        mask: u64,
    },
    /// Chunks of one size; the last may be shorter.
    Fixed { size: usize },
}

impl ChunkParams {
    /// The repository's chunker, checked so that chunking cannot fail on it.
    pub(super) fn of(config: &ConfigFile) -> Result<Self, String> {
        match config.chunker() {
            Chunker::FixedSize if config.chunk_size() > 0 => Ok(Self::Fixed {
                size: config.chunk_size(),
            }),
            Chunker::FixedSize => Err("the repository's fixed chunk size is 0".to_owned()),
            Chunker::Rabin => {
                let polynomial = config.poly().map_err(|err| err.to_string())?;
                let (avg, min, max) = (
                    config.chunk_size(),
                    config.chunk_min_size(),
                    config.chunk_max_size(),
                );
                if !avg.is_power_of_two() || min < WINDOW || min > avg || max < avg {
                    return Err(format!(
                        "the repository's chunk sizes (min {min}, average {avg}, max {max}) are \
                         not ones a Rabin chunker can use"
                    ));
                }
                Ok(Self::Rabin {
                    polynomial,
                    min,
                    max,
                    mask: avg as u64 - 1,
                })
            }
        }
    }

    /// The smallest size at which a file may be cut into more than one chunk.
    pub(super) fn min(&self) -> usize {
        match *self {
            Self::Rabin { min, .. } => min,
            Self::Fixed { size } => size,
        }
    }
}

/// The chunks of one reader, in order.
pub(super) struct Chunks<R> {
    reader: R,
    params: ChunkParams,
    rabin: Option<Rabin64>,
    /// Bytes read past the end of the last chunk: the start of the next.
    carry: Vec<u8>,
    /// Bytes still expected, as the file's size said: a hint for what to reserve.
    expected: usize,
    done: bool,
}

impl<R: Read> Chunks<R> {
    /// Chunks `reader`, expected to hold `size` bytes.
    pub(super) fn new(params: ChunkParams, reader: R, size: u64) -> Self {
        let rabin = match params {
            ChunkParams::Rabin { polynomial, .. } => {
                Some(Rabin64::new_with_polynom(WINDOW_BITS, &polynomial))
            }
            ChunkParams::Fixed { .. } => None,
        };
        Self {
            reader,
            params,
            rabin,
            carry: Vec::new(),
            expected: usize::try_from(size).unwrap_or(usize::MAX),
            done: false,
        }
    }

    /// The next chunk, or `None` after the last.
    pub(super) fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let min = self.params.min();
        let mut chunk = std::mem::take(&mut self.carry);
        chunk.reserve(self.expected.clamp(1, min).saturating_sub(chunk.len()));
        fill(&mut self.reader, &mut chunk, min)?;
        if chunk.len() < min {
            self.done = true;
        } else if let (ChunkParams::Rabin { max, mask, .. }, Some(rabin)) =
            (self.params, self.rabin.as_mut())
        {
            let cut = boundary(&mut self.reader, rabin, &mut chunk, min, max, mask)?;
            match cut {
                Some(cut) => self.carry = chunk.split_off(cut),
                None => self.done = true,
            }
        }
        self.expected = self.expected.saturating_sub(chunk.len());
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}

/// Reads into `chunk` until it holds `len` bytes or the reader ends.
fn fill(reader: &mut impl Read, chunk: &mut Vec<u8>, len: usize) -> io::Result<()> {
    if chunk.len() < len {
        let wanted = (len - chunk.len()) as u64;
        reader.take(wanted).read_to_end(chunk)?;
    }
    Ok(())
}

/// Finds where the chunk that starts `chunk` ends, reading more as needed; `chunk` holds at
/// least `min` bytes. Returns `None` when the reader ended first: the chunk is all of `chunk`.
fn boundary(
    reader: &mut impl Read,
    rabin: &mut Rabin64,
    chunk: &mut Vec<u8>,
    min: usize,
    max: usize,
    mask: u64,
) -> io::Result<Option<usize>> {
    rabin.reset_and_prefill_window(&mut chunk[min - WINDOW..min].iter().copied());
    let mut position = min;
    loop {
        let end = chunk.len().min(max);
        for &byte in &chunk[position..end] {
            if rabin.hash & mask == 0 {
                return Ok(Some(position));
            }
            rabin.slide(byte);
            position += 1;
        }
        if position >= max || rabin.hash & mask == 0 {
            return Ok(Some(position));
        }
        let before = chunk.len();
        fill(reader, chunk, (before + READ_AHEAD).min(max))?;
        if chunk.len() == before {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// restic's default chunk sizes with a fixed polynomial.
    const PARAMS: ChunkParams = ChunkParams::Rabin {
        polynomial: 0x3DA3358B4DC173,
        min: 512 << 10,
        max: 8 << 20,
        mask: (1 << 20) - 1,
    };

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn chunks(params: ChunkParams, data: &[u8]) -> Vec<Vec<u8>> {
        let mut chunker = Chunks::new(params, data, data.len() as u64);
        std::iter::from_fn(|| chunker.next_chunk().expect("no I/O error")).collect()
    }

    /// The boundaries of the plain definition: fingerprint each byte after the minimum, one at
    /// a time, and cut before the byte where the fingerprint's masked bits are zero.
    fn reference_cuts(data: &[u8], min: usize, max: usize, mask: u64, poly: u64) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut start = 0;
        while data.len() - start >= min {
            let mut rabin = Rabin64::new_with_polynom(WINDOW_BITS, &poly);
            rabin
                .reset_and_prefill_window(&mut data[start + min - 64..start + min].iter().copied());
            let mut len = min;
            while len < max && rabin.hash & mask != 0 && start + len < data.len() {
                rabin.slide(data[start + len]);
                len += 1;
            }
            start += len;
            cuts.push(start);
        }
        if start < data.len() {
            cuts.push(data.len());
        }
        cuts
    }

    #[test]
    fn the_chunks_cut_where_the_plain_definition_cuts_and_join_to_the_input() {
        let ChunkParams::Rabin {
            polynomial,
            min,
            max,
            mask,
        } = PARAMS
        else {
            unreachable!()
        };
        for (len, seed) in [
            (0, 1),
            (100, 2),
            (min, 3),
            (min + 1, 4),
            (9 << 20, 5),
            (20 << 20, 6),
        ] {
            let data = noise(len, seed);
            let found = chunks(PARAMS, &data);
            assert_eq!(found.concat(), data, "length {len}");
            let cuts: Vec<usize> = found
                .iter()
                .scan(0, |end, chunk| {
                    *end += chunk.len();
                    Some(*end)
                })
                .collect();
            assert_eq!(
                cuts,
                reference_cuts(&data, min, max, mask, polynomial),
                "length {len}"
            );
        }
    }

    #[test]
    fn zeros_cut_at_the_minimum_and_data_without_a_boundary_at_the_maximum() {
        // The fingerprint of zeros is zero, which is a boundary wherever it is looked for.
        let zeros = vec![0u8; 2 << 20];
        let sizes: Vec<usize> = chunks(PARAMS, &zeros).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![512 << 10; 4]);
        // A 40-bit mask is as good as never met.
        let ChunkParams::Rabin { polynomial, .. } = PARAMS else {
            unreachable!()
        };
        let rare = ChunkParams::Rabin {
            polynomial,
            min: 512 << 10,
            max: 8 << 20,
            mask: (1 << 40) - 1,
        };
        let sizes: Vec<usize> = chunks(rare, &noise(20 << 20, 8))
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![8 << 20, 8 << 20, 4 << 20]);
    }

    #[test]
    fn fixed_chunks_have_one_size_and_a_shorter_last() {
        let data = noise(10_000, 7);
        let sizes: Vec<usize> = chunks(ChunkParams::Fixed { size: 4096 }, &data)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![4096, 4096, 1808]);
    }

    #[test]
    fn an_empty_file_has_no_chunks() {
        assert!(chunks(PARAMS, &[]).is_empty());
    }
}
