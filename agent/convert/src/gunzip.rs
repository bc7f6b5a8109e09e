//! The gzip decoder on the way in: ISA-L's inflate (Debian `libisal2`) through the C shim in
//! `csrc/isal_gzip.c`. It decodes with 28 % less CPU than zlib-rs, the fastest pure-Rust
//! decoder, on a Debian root filesystem (40 % on the bench's layers), and inflating is the
//! largest part of a converting upgrade after the SquashFS compression itself
//! (docs/performance.md, "Decoders").
//!
//! Multi-member streams (pigz and friends concatenate members) are decoded member after
//! member. Every member's CRC-32 and size are checked; a stream that ends inside a member, or
//! bytes after a member that are not another one, are errors.
// The FFI calls below are the only unsafe code of clb-convert; each says why it is sound.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::io::{self, BufRead, Read};
use std::ptr::NonNull;

/// ISA-L's `struct inflate_state`, never looked into from Rust.
#[repr(C)]
struct InflateState {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn clb_isal_gzip_new() -> *mut InflateState;
    fn clb_isal_gzip_free(state: *mut InflateState);
    fn clb_isal_gzip_reset(state: *mut InflateState);
    fn clb_isal_gzip_step(
        state: *mut InflateState,
        input: *const u8,
        in_len: usize,
        consumed: *mut usize,
        output: *mut u8,
        out_len: usize,
        produced: *mut usize,
        member_done: *mut c_int,
    ) -> c_int;
}

/// One allocated ISA-L inflate state, freed on drop.
struct State(NonNull<InflateState>);

// SAFETY: the state is plain memory owned by this value alone (no thread-local or shared
// parts in ISA-L's inflate); moving it to another thread moves that ownership.
unsafe impl Send for State {}

impl State {
    fn new() -> io::Result<Self> {
        // SAFETY: no arguments; returns a fresh, initialised state or null when malloc fails.
        let raw = unsafe { clb_isal_gzip_new() };
        NonNull::new(raw)
            .map(Self)
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "allocating a gzip decoder"))
    }

    fn reset(&mut self) {
        // SAFETY: self.0 came from clb_isal_gzip_new and is not freed until drop.
        unsafe { clb_isal_gzip_reset(self.0.as_ptr()) }
    }

    /// Inflates from `input` into `output`: (return code, bytes consumed, bytes produced,
    /// member complete).
    fn step(&mut self, input: &[u8], output: &mut [u8]) -> (c_int, usize, usize, bool) {
        let (mut consumed, mut produced, mut done) = (0usize, 0usize, 0 as c_int);
        // SAFETY: the state is live (see reset); `input` and `output` are valid for reads and
        // writes of their lengths for the duration of the call, and the shim clears its
        // pointers to them before returning, so nothing keeps them; the out-parameters point
        // to locals.
        let rc = unsafe {
            clb_isal_gzip_step(
                self.0.as_ptr(),
                input.as_ptr(),
                input.len(),
                &mut consumed,
                output.as_mut_ptr(),
                output.len(),
                &mut produced,
                &mut done,
            )
        };
        // The shim never reports more than it was given; clamp anyway so that a broken
        // library cannot make `consume` skip past the buffer.
        (
            rc,
            consumed.min(input.len()),
            produced.min(output.len()),
            done != 0,
        )
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // SAFETY: allocated by clb_isal_gzip_new, freed exactly once, here.
        unsafe { clb_isal_gzip_free(self.0.as_ptr()) }
    }
}

/// A streaming gzip decoder over a buffered reader.
pub struct GzipDecoder<R> {
    inner: R,
    state: State,
    /// The current member ended with its trailer checked.
    member_done: bool,
}

impl<R: BufRead> GzipDecoder<R> {
    pub fn new(inner: R) -> io::Result<Self> {
        Ok(Self {
            inner,
            state: State::new()?,
            member_done: false,
        })
    }
}

impl<R: BufRead> Read for GzipDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let input = self.inner.fill_buf()?;
            if self.member_done {
                if input.is_empty() {
                    return Ok(0);
                }
                // More bytes after a complete member: the next member.
                self.state.reset();
                self.member_done = false;
            }
            let at_end = input.is_empty();
            let (rc, consumed, produced, done) = self.state.step(input, out);
            self.inner.consume(consumed);
            if rc < 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, describe(rc)));
            }
            self.member_done = done;
            if produced > 0 {
                return Ok(produced);
            }
            if at_end && !done {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "gzip stream ends inside a member",
                ));
            }
            if consumed == 0 && !done {
                // Input left, room for output, and neither was used: ISA-L is stuck, which
                // it never is on a stream it can decode.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "gzip decoder made no progress",
                ));
            }
        }
    }
}

/// ISA-L's error codes (igzip_lib.h), as a reason a user can act on.
fn describe(rc: c_int) -> String {
    let what = match rc {
        -1 => "invalid deflate block",
        -2 => "invalid deflate symbol",
        -3 => "invalid back-reference distance",
        -4 => "invalid gzip header",
        -5 => "unsupported gzip compression method",
        -6 => "gzip checksum mismatch",
        _ => "corrupt gzip stream",
    };
    format!("{what} (ISA-L inflate error {rc})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// Deterministic bytes that compress somewhat: words from a small alphabet plus noise.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 7 == 0 {
                    b' '
                } else {
                    b"etaoinshr"[(x % 9) as usize] ^ ((x >> 40) as u8 & 1)
                }
            })
            .collect()
    }

    fn decode_with(gz: &[u8], chunk: usize, read_size: usize) -> io::Result<Vec<u8>> {
        let reader = io::BufReader::with_capacity(chunk, gz);
        let mut dec = GzipDecoder::new(reader)?;
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = dec.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn decodes_what_flate2_encodes_at_any_buffer_sizes() {
        let data = sample(300_000, 7);
        let gz = gzip(&data);
        for (chunk, read_size) in [
            (1, 1),
            (7, 4096),
            (4096, 3),
            (1 << 20, 1 << 20),
            (65_536, 100_000),
        ] {
            let out = decode_with(&gz, chunk, read_size).unwrap();
            assert_eq!(out.len(), data.len(), "chunk {chunk}, reads of {read_size}");
            assert!(
                out == data,
                "chunk {chunk}, reads of {read_size}: bytes differ"
            );
        }
    }

    #[test]
    fn multi_member_streams_decode_to_the_concatenation() {
        let (a, b) = (sample(100_000, 1), sample(50_000, 2));
        let mut gz = gzip(&a);
        gz.extend(gzip(b""));
        gz.extend(gzip(&b));
        let out = decode_with(&gz, 4096, 8192).unwrap();
        assert_eq!(out, [a, b].concat());
    }

    #[test]
    fn same_bytes_as_flate2_on_random_streams() {
        for seed in 0..20u64 {
            let len = (seed as usize * 7919) % 200_000;
            let data = sample(len, seed + 100);
            let gz = gzip(&data);
            let mut reference = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut reference)
                .unwrap();
            assert_eq!(
                decode_with(&gz, 8192, 65_536).unwrap(),
                reference,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_hang() {
        let gz = gzip(&sample(200_000, 3));
        for cut in [1, 5, 10, 11, 100, gz.len() / 2, gz.len() - 8, gz.len() - 1] {
            let err = decode_with(&gz[..cut], 4096, 65_536).unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::UnexpectedEof,
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn a_wrong_checksum_or_length_is_an_error() {
        let data = sample(10_000, 4);
        let gz = gzip(&data);
        let n = gz.len();
        for at in [n - 8, n - 5, n - 4, n - 1] {
            let mut bad = gz.clone();
            bad[at] ^= 0x01;
            let err = decode_with(&bad, 4096, 65_536).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "byte {at}: {err}");
        }
    }

    #[test]
    fn corrupt_deflate_data_and_trailing_garbage_are_errors() {
        let gz = gzip(&sample(50_000, 5));
        let mut bad = gz.clone();
        bad[20] ^= 0xff;
        bad[21] ^= 0x55;
        assert!(
            decode_with(&bad, 4096, 65_536).is_err(),
            "corrupt deflate data decoded"
        );
        let mut trailing = gz.clone();
        trailing.extend_from_slice(b"not gzip at all");
        let err = decode_with(&trailing, 4096, 65_536).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let mut header = gz;
        header[2] = 7; // compression method other than deflate
        let err = decode_with(&header, 4096, 65_536).unwrap_err();
        assert!(err.to_string().contains("gzip"), "{err}");
    }
}
