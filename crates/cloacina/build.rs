//! Exports the target triple this crate is compiled for as `CLOACINA_HOST_TARGET`, so the
//! library knows which `lib/<target-triple>/` entry of a `.cloacina` archive it can load.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo::rustc-env=CLOACINA_HOST_TARGET={target}");
    println!("cargo::rerun-if-changed=build.rs");
}
