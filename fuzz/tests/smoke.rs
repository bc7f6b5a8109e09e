//! The fuzz smoke run of CI, on stable Rust: every target gets its committed corpus
//! (`fuzz/corpus/NAME`), its regression inputs (`fuzz/regressions/NAME`, one per finding
//! fixed) and a bounded run of seeded mutations of them. The long runs are libFuzzer's
//! (`scripts/fuzz`, docs/reliability.md); this proves in every CI run that each target still
//! accepts what the fuzzer found and that no fixed finding came back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clb_fuzz_targets::TARGETS;
use clb_testsupport::Rng;

/// Mutated inputs per target: about a second each in a debug build, well under a minute in all.
const MUTATIONS: usize = 10_000;
/// A single input running this long is a hang, not a slow parser.
const HANG: Duration = Duration::from_secs(30);
/// Mutants grow by insertions; libFuzzer's runs use the same cap (`-max_len`).
const MAX_LEN: usize = 256 * 1024;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"-1",
    b"0",
    b"4294967296",
    b"18446744073709551616",
    b"\"",
    b"\\",
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b"{{",
    b"}}",
    b"..",
    b"/",
    b":",
    b"=",
    b"%",
    b"\xef\xbf\xbd",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next_u64() as u8;
            }
            2 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, token.iter().copied());
            }
            3 if at < v.len() => {
                let end = (at + 1 + rng.below(64)).min(v.len());
                v.drain(at..end);
            }
            4 if at < v.len() => {
                let end = (at + 1 + rng.below(256)).min(v.len());
                let copy = v[at..end].to_vec();
                v.splice(at..at, copy);
            }
            5 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(512)).min(other.len());
                v.splice(at..at, other[from..end].iter().copied());
            }
            _ => v.truncate(at),
        }
    }
    v.truncate(MAX_LEN);
    v
}

/// Runs `input` through `target`; a panic or a hang fails with the input saved for replay.
fn run(name: &str, target: fn(&[u8]), input: &[u8], what: &str) {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| target(input)));
    let took = started.elapsed();
    if result.is_err() || took > HANG {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-smoke-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}-{}", std::process::id()));
        std::fs::write(&file, input).unwrap();
        panic!(
            "{name}: {what} {} after {took:?}; input saved to {} (replay: scripts/fuzz {name} FILE)",
            if result.is_err() { "panicked" } else { "hung" },
            file.display()
        );
    }
}

#[test]
fn every_target_survives_its_corpus_regressions_and_mutants() {
    let mut lines = Vec::new();
    for (index, (name, target)) in TARGETS.iter().enumerate() {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "{name}: fuzz/corpus/{name} is missing or empty: every target ships a corpus"
        );
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for (file, input) in corpus.iter().chain(&regressions) {
            run(name, *target, input, &format!("input {file}"));
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
        for i in 0..MUTATIONS {
            let base = &corpus[rng.below(corpus.len())].1;
            let other = &corpus[rng.below(corpus.len())].1;
            let mutant = mutate(&mut rng, base, other);
            run(name, *target, &mutant, &format!("mutant {i}"));
        }
        lines.push(format!(
            "{name}: {} corpus inputs, {} regression inputs, {MUTATIONS} mutants",
            corpus.len(),
            regressions.len()
        ));
    }
    // Every target of the libFuzzer build has its function here, and no more.
    let mut built: Vec<String> = std::fs::read_dir(fuzz_dir().join("libfuzzer/fuzz_targets"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    built.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(
        built, listed,
        "fuzz/libfuzzer/fuzz_targets/*.rs and TARGETS differ"
    );
    println!("{}", lines.join("\n"));
}
