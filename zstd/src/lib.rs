//! Zstandard compression of whole blobs, for the repository engine.
//!
//! rustic_core compresses every blob it stores, and decompresses every blob it checks, through
//! `zstd::stream::{encode_all, copy_encode, decode_all}`. Made as streams, each of those calls
//! creates a new zstd context and, not knowing the input's length, sizes its tables for the
//! largest input: about a megabyte allocated and cleared for a blob of three kilobytes. On a
//! volume of small files that was a fifth of a backup's CPU time.
//!
//! This crate takes that crate's name and keeps the items the engine uses, with the same
//! signatures. Each thread keeps one compression and one decompression context, and every blob
//! is compressed in one call with its length known, so zstd sizes its tables to the blob. The
//! output is standard zstd frames (with the content size in the header), which every decoder
//! reads, restic's among them; what is stored is decided by the plaintext, so deduplication is
//! unchanged.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::ops::RangeInclusive;

use zstd_safe::{CCtx, CParameter, DCtx, InBuffer, OutBuffer, ResetDirective};

pub use stream::{decode_all, encode_all};

/// The compression levels zstd accepts.
pub fn compression_level_range() -> RangeInclusive<i32> {
    zstd_safe::min_c_level()..=zstd_safe::max_c_level()
}

/// Whole-input compression and decompression, in the shape of the zstd crate's `stream`
/// functions.
pub mod stream {
    use super::{Read, Write, io};

    /// Compresses everything `source` holds into one frame at `level` (0: zstd's default).
    pub fn encode_all<R: Read>(source: R, level: i32) -> io::Result<Vec<u8>> {
        let input = super::read_all(source)?;
        super::compress(&input, level)
    }

    /// Compresses everything `source` holds into one frame at `level` and writes it to
    /// `destination`.
    pub fn copy_encode<R: Read, W: Write>(
        source: R,
        mut destination: W,
        level: i32,
    ) -> io::Result<()> {
        destination.write_all(&encode_all(source, level)?)
    }

    /// Decompresses every frame `source` holds, one after the other.
    pub fn decode_all<R: Read>(source: R) -> io::Result<Vec<u8>> {
        let input = super::read_all(source)?;
        super::decompress_frames(&input)
    }
}

/// One-shot compression, and decompression into a buffer of a known size, in the shape of the
/// zstd crate's `bulk` functions.
pub mod bulk {
    use super::io;

    /// Compresses `source` into one frame at `level` (0: zstd's default).
    pub fn compress(source: &[u8], level: i32) -> io::Result<Vec<u8>> {
        super::compress(source, level)
    }

    /// Decompresses `source` into a buffer of `capacity` bytes; more output is an error.
    pub fn decompress(source: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
        super::with_decompressor(|context| {
            let mut output = Vec::with_capacity(capacity);
            context
                .decompress(&mut output, source)
                .map_err(super::error)?;
            Ok(output)
        })
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

fn error(code: usize) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(code))
}

fn read_all<R: Read>(mut source: R) -> io::Result<Vec<u8>> {
    let mut input = Vec::new();
    source.read_to_end(&mut input)?;
    Ok(input)
}

/// Runs `work` with this thread's compression context. A context that failed is dropped, so
/// the next call starts from a new one.
fn with_compressor<T>(work: impl FnOnce(&mut CCtx<'static>) -> io::Result<T>) -> io::Result<T> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let result = work(slot.get_or_insert_with(CCtx::create));
        if result.is_err() {
            *slot = None;
        }
        result
    })
}

/// Runs `work` with this thread's decompression context, reset to a new frame.
fn with_decompressor<T>(work: impl FnOnce(&mut DCtx<'static>) -> io::Result<T>) -> io::Result<T> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let context = slot.get_or_insert_with(DCtx::create);
        let result = context
            .reset(ResetDirective::SessionOnly)
            .map_err(error)
            .and_then(|_| work(context));
        if result.is_err() {
            *slot = None;
        }
        result
    })
}

/// Compresses `input` into one frame whose header holds its length.
fn compress(input: &[u8], level: i32) -> io::Result<Vec<u8>> {
    with_compressor(|context| {
        context
            .set_parameter(CParameter::CompressionLevel(level))
            .map_err(error)?;
        let mut output = Vec::with_capacity(zstd_safe::compress_bound(input.len()));
        context.compress2(&mut output, input).map_err(error)?;
        Ok(output)
    })
}

/// The most output reserved up front from a frame header's content size, which a damaged
/// header could make absurd; the output grows past it as needed.
const MOST_RESERVED: usize = 64 << 20;

/// Decompresses the frames of `input` one after the other; an input that ends inside a frame
/// is an error.
fn decompress_frames(input: &[u8]) -> io::Result<Vec<u8>> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let expected = match zstd_safe::get_frame_content_size(input) {
        Ok(Some(size)) => usize::try_from(size).unwrap_or(MOST_RESERVED),
        _ => input.len().saturating_mul(4),
    };
    with_decompressor(|context| {
        let mut output = Vec::with_capacity(expected.clamp(64, MOST_RESERVED));
        let mut source = InBuffer::around(input);
        loop {
            if output.len() == output.capacity() {
                output.reserve(output.len().max(64 << 10));
            }
            let start = output.len();
            let mut sink = OutBuffer::around_pos(&mut output, start);
            let hint = context
                .decompress_stream(&mut sink, &mut source)
                .map_err(error)?;
            let filled = sink.pos() == sink.capacity();
            // With all input read, 0 means the last frame is whole and flushed; anything else
            // means more output to take, or a frame cut short.
            if source.pos() == input.len() {
                if hint == 0 {
                    return Ok(output);
                }
                if !filled {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the compressed data ends inside a zstd frame",
                    ));
                }
            }
        }
    })
}
