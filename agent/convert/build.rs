//! Compiles the ISA-L gzip shim (`csrc/isal_gzip.c`) against Debian's `libisal-dev` headers
//! and links `libisal`. Without the headers the build stops here with the compiler's
//! "isa-l/igzip_lib.h: No such file" (`scripts/install-test-deps` installs them).

fn main() {
    println!("cargo::rerun-if-changed=csrc/isal_gzip.c");
    cc::Build::new()
        .file("csrc/isal_gzip.c")
        .warnings(true)
        .compile("clb_isal_gzip");
    println!("cargo::rustc-link-lib=dylib=isal");
}
