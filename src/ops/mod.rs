//! Ops: one Rust file per shader file — shape checks, then dispatch.

pub mod attention;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod conv;
pub mod elementwise;
pub mod linear;
pub mod norm;
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
        v.extend(elementwise::variants(f16));
        v.extend(norm::variants(f16));
        v.extend(attention::variants(f16));
    }
    v
}
