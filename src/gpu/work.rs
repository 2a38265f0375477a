//! Work accounting: while a count is open (`begin_work_count`), the main ops report each call's
//! kernel family, FLOPs (compute-bound families) or bytes moved (memory-bound ones) and shape, and
//! `dispatch` counts the dispatches. It works on dry twins too (they count without running), so
//! the work of a full-size SDXL UNet step is known in milliseconds from the model's structure;
//! `crate::timing` divides it by rates measured on the device.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DType, Gpu};

/// Kernel families as the estimator times them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `linear` (matmul); dims [m, k, n].
    Linear,
    /// 3×3 convolutions; dims [b, c, h, w, o, k, stride, pad, pad_after].
    Conv3x3,
    /// Other convolutions (1×1 skips, …); dims as Conv3x3.
    ConvOther,
    /// Attention with as many keys as queries; dims [b, heads, tq, tk, d].
    AttnSelf,
    /// Attention over another sequence (the text context); dims as AttnSelf.
    AttnCross,
    /// Group norm (+ SiLU); dims [b, c, inner, groups, silu].
    GroupNorm,
    /// Layer norm; dims [rows, c].
    LayerNorm,
    /// Elementwise, layout and copy kernels; dims [elements of the output].
    Elementwise,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Linear => "linear",
            Family::Conv3x3 => "conv3x3",
            Family::ConvOther => "conv_other",
            Family::AttnSelf => "attn_self",
            Family::AttnCross => "attn_cross",
            Family::GroupNorm => "group_norm",
            Family::LayerNorm => "layer_norm",
            Family::Elementwise => "elementwise",
        }
    }

    /// Memory-bound families are timed in bytes per second, the others in FLOP/s.
    pub fn memory_bound(self) -> bool {
        matches!(self, Family::GroupNorm | Family::LayerNorm | Family::Elementwise)
    }
}

/// One op call: enough to run it again at the same shape (`dims` as documented per family).
#[derive(Clone, Debug, Serialize)]
pub struct OpShape {
    pub family: Family,
    pub dims: Vec<usize>,
    /// Input and output activation dtypes.
    pub x: DType,
    pub y: DType,
}

/// The work of one op call.
#[derive(Clone, Debug)]
pub struct Work {
    pub shape: OpShape,
    pub flops: f64,
    pub bytes: f64,
}

impl Work {
    /// The figure the family is timed by.
    pub fn amount(&self) -> f64 {
        if self.shape.family.memory_bound() {
            self.bytes
        } else {
            self.flops
        }
    }
}

/// What one family dispatched while a count was open.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FamilyWork {
    pub calls: u64,
    pub dispatches: u64,
    pub flops: f64,
    pub bytes: f64,
    /// The call with the most work: the shape the family is timed at.
    pub largest: Option<OpShape>,
    /// Its FLOPs or bytes (by the family's kind).
    pub largest_work: f64,
}

impl FamilyWork {
    /// FLOPs or bytes, by the family's kind.
    pub fn amount(&self, f: Family) -> f64 {
        if f.memory_bound() {
            self.bytes
        } else {
            self.flops
        }
    }
}

/// A closed count.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkTally {
    pub families: BTreeMap<Family, FamilyWork>,
    /// Every dispatch, including those of ops that report no family (embeddings, …).
    pub dispatches: u64,
    #[serde(skip)]
    current: Option<Family>,
}

impl WorkTally {
    pub fn flops(&self) -> f64 {
        self.families.values().map(|f| f.flops).sum()
    }
}

impl Gpu {
    /// Start counting the work the ops report (replaces an open count).
    pub fn begin_work_count(&self) {
        *self.work.lock().unwrap_or_else(|p| p.into_inner()) = Some(WorkTally::default());
    }

    /// Stop counting; the tally (empty when no count was open).
    pub fn end_work_count(&self) -> WorkTally {
        self.work.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default()
    }

    /// Ops call this before dispatching: the dispatches that follow belong to its family.
    pub fn tally(&self, w: impl FnOnce() -> Work) {
        let mut slot = self.work.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = slot.as_mut() else { return };
        let w = w();
        let fam = w.shape.family;
        t.current = Some(fam);
        let e = t.families.entry(fam).or_default();
        e.calls += 1;
        e.flops += w.flops;
        e.bytes += w.bytes;
        let amount = w.amount();
        if e.largest.is_none() || amount > e.largest_work {
            e.largest_work = amount;
            e.largest = Some(w.shape);
        }
    }

    /// Called by `dispatch` (real or dry).
    pub(crate) fn tally_dispatch(&self) {
        let mut slot = self.work.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = slot.as_mut() else { return };
        t.dispatches += 1;
        if let Some(f) = t.current {
            if let Some(e) = t.families.get_mut(&f) {
                e.dispatches += 1;
            }
        }
    }
}

/// Bytes of `n` elements of `d`.
pub fn bytes_of(n: usize, d: DType) -> f64 {
    n as f64 * d.size() as f64
}

/// An elementwise / layout op writing `n_out` elements of `y` from `in_bytes` of input.
pub fn elementwise(n_out: usize, in_bytes: f64, x: DType, y: DType) -> Work {
    Work {
        shape: OpShape { family: Family::Elementwise, dims: vec![n_out], x, y },
        flops: 0.0,
        bytes: in_bytes + bytes_of(n_out, y),
    }
}
