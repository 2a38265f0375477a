//! Ops: one Rust file per shader file — shape checks, then dispatch.

pub mod attention;
pub mod elementwise;
pub mod norm;
pub mod smoke;

use crate::gpu::Variant;

/// Every variant of every shader the engine can compile, for both compute paths; validated by
/// naga in `tests/shaders.rs`.
pub fn all_variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for f16 in [false, true] {
        v.extend(smoke::variants(f16));
        v.extend(elementwise::variants(f16));
        v.extend(norm::variants(f16));
        v.extend(attention::variants(f16));
    }
    v
}
