//! `clb-decoder-bench gzip|isal|zstd FILE`: decompresses FILE the way clb-convert reads a layer
//! (a buffered reader into a streaming decoder) into nothing, and prints the decompressed
//! byte count. Timing is left to the caller (GNU time), so that CPU seconds are the kernel's.

use std::io::{BufReader, Read};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, codec, path] = args.as_slice() else {
        eprintln!("usage: clb-decoder-bench gzip|isal|zstd FILE");
        std::process::exit(2);
    };
    let input = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut decoder: Box<dyn Read> = match codec.as_str() {
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(input)),
        #[cfg(feature = "isal")]
        "isal" => Box::new(clb_convert::gunzip::GzipDecoder::new(input)?),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(input)?),
        other => {
            eprintln!("unknown codec {other}");
            std::process::exit(2);
        }
    };
    let n = std::io::copy(&mut decoder, &mut std::io::sink())?;
    println!("{n}");
    Ok(())
}
