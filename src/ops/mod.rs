//! Ops: one Rust file per shader file — shape checks, then dispatch.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod conv;
pub mod linear;
pub mod peak;
pub mod smoke;

use crate::gpu::Variant;

/// Every variant of every shader the engine can compile, for both compute paths; validated by
/// naga in `tests/shaders.rs`.
pub fn all_variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for f16 in [false, true] {
        v.extend(smoke::variants(f16));
        v.extend(peak::variants(f16));
        v.extend(linear::variants(f16));
        v.extend(conv::variants(f16));
    }
    v
}
