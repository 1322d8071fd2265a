//! The blob compression against zstd's own streaming frames, and its errors.

use std::io::Cursor;

use zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer};

/// Bytes that compress: log-like lines with a counter, then some noise from a simple LCG.
fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut state = seed;
    let mut line = 0_u64;
    while out.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if state >> 62 == 0 {
            out.extend_from_slice(&state.to_le_bytes());
        } else {
            line += 1;
            out.extend_from_slice(
                format!("{line} INFO request served in {}ms\n", state >> 54).as_bytes(),
            );
        }
    }
    out.truncate(len);
    out
}

/// A frame as a stream encoder writes it: no content size in the header, windows sized for
/// any length. This is what the engine read before, and what other tools write.
fn streamed_frame(data: &[u8], level: i32) -> Vec<u8> {
    let mut context = CCtx::create();
    context
        .set_parameter(CParameter::CompressionLevel(level))
        .unwrap();
    let mut frame = Vec::with_capacity(zstd_safe::compress_bound(data.len()) + 64);
    {
        let mut input = InBuffer::around(data);
        let mut output = OutBuffer::around(&mut frame);
        while input.pos() < data.len() {
            context.compress_stream(&mut output, &mut input).unwrap();
        }
        while context.end_stream(&mut output).unwrap() != 0 {}
    }
    frame
}

const SIZES: [usize; 9] = [0, 1, 100, 3_000, 4_096, 65_537, 1 << 20, 3 << 20, 8 << 20];

#[test]
fn what_is_compressed_decompresses_to_the_same_bytes_at_every_size() {
    for (seed, size) in SIZES.into_iter().enumerate() {
        let data = sample(size, seed as u64);
        for level in [0, 1, 3, 9, -5] {
            let frame = zstd::encode_all(&data[..], level).unwrap();
            assert_eq!(
                zstd::decode_all(&frame[..]).unwrap(),
                data,
                "size {size} level {level}"
            );
            assert_eq!(zstd::bulk::decompress(&frame, size).unwrap(), data);
            let mut appended = vec![2_u8];
            zstd::stream::copy_encode(&data[..], &mut appended, level).unwrap();
            assert_eq!(appended[0], 2, "copy_encode appends");
            assert_eq!(zstd::stream::decode_all(&appended[1..]).unwrap(), data);
        }
    }
}

#[test]
fn frames_written_by_a_stream_encoder_decompress() {
    for (seed, size) in SIZES.into_iter().enumerate().skip(1) {
        let data = sample(size, seed as u64 + 100);
        let frame = streamed_frame(&data, 3);
        assert_eq!(zstd_safe::get_frame_content_size(&frame).unwrap(), None);
        assert_eq!(
            zstd::decode_all(Cursor::new(&frame)).unwrap(),
            data,
            "size {size}"
        );
        assert_eq!(zstd::bulk::decompress(&frame, size).unwrap(), data);
    }
}

#[test]
fn a_blob_s_frame_names_its_length_and_a_window_no_larger_than_the_blob() {
    let data = sample(3_000, 7);
    let frame = zstd::encode_all(&data[..], 0).unwrap();
    assert_eq!(
        zstd_safe::get_frame_content_size(&frame).unwrap(),
        Some(3_000)
    );
    // A single-segment frame: its window is the content, so a decoder needs no more memory.
    let descriptor = frame[4];
    assert_ne!(
        descriptor & 0x20,
        0,
        "single segment flag in {descriptor:#x}"
    );
    assert!(
        frame.len() < data.len(),
        "it compresses: {} bytes",
        frame.len()
    );
}

#[test]
fn frames_one_after_the_other_decompress_into_one_output() {
    let (first, second) = (sample(5_000, 1), sample(70_000, 2));
    let mut frames = zstd::encode_all(&first[..], 3).unwrap();
    frames.extend(streamed_frame(&second, 1));
    let mut expected = first;
    expected.extend(second);
    assert_eq!(zstd::decode_all(&frames[..]).unwrap(), expected);
}

#[test]
fn damaged_or_cut_frames_are_errors_and_the_next_call_still_works() {
    let data = sample(200_000, 9);
    let frame = zstd::encode_all(&data[..], 3).unwrap();
    let cut = &frame[..frame.len() / 2];
    let err = zstd::decode_all(cut).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    let mut damaged = frame.clone();
    damaged[0] ^= 0xff;
    assert!(zstd::decode_all(&damaged[..]).is_err());
    assert!(zstd::bulk::decompress(&damaged, data.len()).is_err());
    let too_small = zstd::bulk::decompress(&frame, data.len() - 1).unwrap_err();
    assert!(!too_small.to_string().is_empty());
    assert_eq!(zstd::decode_all(&frame[..]).unwrap(), data);
}

#[test]
fn the_level_range_is_zstd_s() {
    let range = zstd::compression_level_range();
    assert!(range.contains(&1) && range.contains(&22) && range.contains(&-5));
}
