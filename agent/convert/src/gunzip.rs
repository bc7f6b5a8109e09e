//! The gzip decoder on the way in: ISA-L's inflate (Debian `libisal2`) through the C shim in
//! `csrc/isal_gzip.c`. It decodes with 28 % less CPU than zlib-rs, the fastest pure-Rust
//! decoder, on a Debian root filesystem (40 % on the bench's layers), and inflating is the
//! largest part of a converting upgrade after the SquashFS compression itself
//! (docs/performance.md, "Decoders").
//!
//! Multi-member streams (pigz and friends concatenate members) are decoded member after
//! member. Each member's header is parsed here (ISA-L 2.30 misreads a header split between two
//! reads, see the shim); ISA-L inflates the deflate data and checks the trailer's CRC-32 and
//! length. A stream that ends inside a member, or bytes after a member that are not another
//! one, are errors, and a decoder that returned an error keeps returning it.
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
    phase: Phase,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first member's header.
    Start,
    /// Inside a member's deflate data or trailer.
    Member,
    /// After a complete member: the end, or the next member's header.
    BetweenMembers,
    /// An error was returned; the state is not to be used again.
    Failed,
}

impl<R: BufRead> GzipDecoder<R> {
    pub fn new(inner: R) -> io::Result<Self> {
        Ok(Self {
            inner,
            state: State::new()?,
            phase: Phase::Start,
        })
    }

    fn read_step(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.phase {
                Phase::Failed => {
                    return Err(io::Error::other("the gzip stream failed to decode earlier"));
                }
                Phase::Start => {
                    read_header(&mut self.inner, true)?;
                    self.phase = Phase::Member;
                }
                Phase::BetweenMembers => {
                    if self.inner.fill_buf()?.is_empty() {
                        return Ok(0);
                    }
                    read_header(&mut self.inner, false)?;
                    self.state.reset();
                    self.phase = Phase::Member;
                }
                Phase::Member => {
                    let input = self.inner.fill_buf()?;
                    let at_end = input.is_empty();
                    let (rc, consumed, produced, done) = self.state.step(input, out);
                    self.inner.consume(consumed);
                    if rc < 0 {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, describe(rc)));
                    }
                    if done {
                        self.phase = Phase::BetweenMembers;
                    }
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
                        // Input left, room for output, and neither was used: ISA-L is stuck,
                        // which it never is on a stream it can decode.
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "gzip decoder made no progress",
                        ));
                    }
                }
            }
        }
    }
}

impl<R: BufRead> Read for GzipDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let result = self.read_step(out);
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        result
    }
}

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const RESERVED_FLAGS: u8 = 0xe0;

/// Reads one member header (RFC 1952, 2.3) up to its deflate data. The optional name,
/// comment and extra field are skipped, the header CRC is not checked (the member's own
/// CRC-32 still covers every byte of content).
fn read_header(input: &mut impl BufRead, first: bool) -> io::Result<()> {
    let mut fixed = [0u8; 10];
    input.read_exact(&mut fixed)?;
    if fixed[..2] != [0x1f, 0x8b] {
        let what = if first {
            "not a gzip stream"
        } else {
            "unexpected bytes after a gzip member"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, what));
    }
    if fixed[2] != 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unsupported gzip compression method {}", fixed[2]),
        ));
    }
    let flags = fixed[3];
    if flags & RESERVED_FLAGS != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("reserved gzip header flags set ({flags:#04x})"),
        ));
    }
    if flags & FEXTRA != 0 {
        let mut len = [0u8; 2];
        input.read_exact(&mut len)?;
        skip(input, usize::from(u16::from_le_bytes(len)))?;
    }
    if flags & FNAME != 0 {
        skip_past_nul(input)?;
    }
    if flags & FCOMMENT != 0 {
        skip_past_nul(input)?;
    }
    if flags & FHCRC != 0 {
        skip(input, 2)?;
    }
    Ok(())
}

fn skip(input: &mut impl BufRead, mut n: usize) -> io::Result<()> {
    while n > 0 {
        let available = input.fill_buf()?.len();
        if available == 0 {
            return Err(eof_in_header());
        }
        let take = available.min(n);
        input.consume(take);
        n -= take;
    }
    Ok(())
}

/// Skips a zero-terminated field without holding it (a hostile name may be gigabytes long).
fn skip_past_nul(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Err(eof_in_header());
        }
        match buf.iter().position(|&b| b == 0) {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

fn eof_in_header() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "gzip stream ends inside a member header",
    )
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
        gzip_at(data, 6)
    }

    fn gzip_at(data: &[u8], level: u32) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
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
    fn every_length_and_level_decodes_to_what_was_encoded() {
        // Level 0 writes stored blocks, 1 and 9 the two ends of flate2's Huffman coding.
        for seed in 0..20u64 {
            let len = (seed as usize * 7919) % 200_000;
            let data = sample(len, seed + 100);
            for level in [0, 1, 9] {
                let gz = gzip_at(&data, level);
                let out = decode_with(&gz, 8192, 65_536).unwrap();
                assert!(out == data, "seed {seed}, {len} bytes at level {level}");
            }
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_hang() {
        let gz = gzip(&sample(200_000, 3));
        let cuts = [1, 5, 10, 11, 100, gz.len() / 2, gz.len() - 8, gz.len() - 1];
        assert_truncations_fail(&gz, &cuts, 4096);
    }

    fn assert_truncations_fail(gz: &[u8], cuts: &[usize], chunk: usize) {
        for &cut in cuts {
            let err = decode_with(&gz[..cut], chunk, 65_536).unwrap_err();
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
        assert!(err.to_string().contains("after a gzip member"), "{err}");
        let mut method = gz.clone();
        method[2] = 7;
        let err = decode_with(&method, 4096, 65_536).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("compression method 7"), "{err}");
        let mut reserved = gz;
        reserved[3] |= 0x20;
        let err = decode_with(&reserved, 4096, 65_536).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    /// A member whose header carries every optional field (RFC 1952: extra, name, comment,
    /// header CRC), built by hand: flate2 cannot write a header CRC.
    fn member_with_every_header_field(data: &[u8]) -> Vec<u8> {
        let mut out = vec![
            0x1f,
            0x8b,
            8,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
            0,
            0,
            0,
            0,
            0,
            3,
        ];
        let extra = b"AB\x04\x00wxyz".repeat(9);
        out.extend_from_slice(&u16::try_from(extra.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(b"a-rather-long-file-name-for-the-header.tar\0");
        out.extend_from_slice(b"a comment, also spread over several reads\0");
        let mut crc = flate2::Crc::new();
        crc.update(&out);
        out.extend_from_slice(&(crc.sum() as u16).to_le_bytes());
        let mut deflate =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        deflate.write_all(data).unwrap();
        out.extend(deflate.finish().unwrap());
        let mut crc = flate2::Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        out
    }

    #[test]
    fn headers_with_every_optional_field_decode_however_the_reads_split_them() {
        // ISA-L 2.30's own header parser fails this stream when its header is split (checksum
        // error): the header is parsed in Rust.
        let (a, b) = (sample(30_000, 8), sample(20_000, 9));
        let mut gz = member_with_every_header_field(&a);
        let second = gz.len();
        gz.extend(member_with_every_header_field(&b));
        let want = [a, b].concat();
        for chunk in [1, 2, 5, 13, 40, 4096] {
            let out = decode_with(&gz, chunk, 8192).unwrap();
            assert!(out == want, "chunk {chunk}: bytes differ");
        }
        // Cut inside the second member's fixed header, its extra field, its name, and its
        // deflate data.
        let cuts = [second + 5, second + 30, second + 120, gz.len() - 20];
        assert_truncations_fail(&gz, &cuts, 1);
    }

    #[test]
    fn a_decoder_that_failed_keeps_failing() {
        let mut gz = gzip(&sample(10_000, 11));
        let n = gz.len();
        gz[n - 6] ^= 0x01; // the CRC-32
        let mut dec = GzipDecoder::new(io::BufReader::new(&gz[..])).unwrap();
        let mut out = Vec::new();
        assert!(dec.read_to_end(&mut out).is_err());
        let mut buf = [0u8; 100];
        assert!(dec.read(&mut buf).is_err(), "a failed stream read as ended");
    }
}
