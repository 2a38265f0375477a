// norm: group norm (NCHW, optional fused SiLU), layer norm (last dim) and softmax (last dim),
// all as "statistics over contiguous groups, then an elementwise apply".
//
// Statistics are f32 on both compute paths and numerically stable for large means (VAE
// activations): each workgroup reduces one slice of a group as sums of (x - x_first) and
// (x - x_first)², giving (n, mean, M2) per slice; `finalize` merges the slices of a group with
// Chan's parallel formula. Groups are split into slices so a big group (the VAE's 4 channels at
// 1024², 4 M elements) spreads over many workgroups, and so any window of slices fits a binding.
// Tensors are `array<u32>` (F32: one word, F16: two halves; X_HALF / X2_HALF / Y_HALF Defs for
// the input, gamma/beta and output). Windowed bindings get local indices in the params.
//
// Bindings (group 0), per entry point:
//   stats    0 x (read), 1 part [slices, 3] f32 (rw), 2 StatsP
//   finalize 0 part (read), 1 stats [groups, 2] f32 (rw: mean, 1/sqrt(var + eps)), 2 FinP
//   apply    0 x (read), 1 stats (read), 2 gamma [C] (read), 3 beta [C] (read), 4 y (rw), 5 ApplyP
//   sm_stats 0 x (read), 1 stats [rows, 2] f32 (rw: max, sum exp), 2 SmP
//   sm_apply 0 x (read), 1 stats (read), 2 y (rw), 3 SmApplyP
// Dispatch: stats: one 256-thread workgroup per slice; sm_stats: one 64-thread workgroup per row
//   (both linear over x/y: id = wid.x + wid.y * num_workgroups.x); finalize: one thread per group,
//   64 per workgroup; apply / sm_apply: one thread per output element pair, 256 per workgroup,
//   split over x/y by `gpu::grid`.

// ---- slice statistics --------------------------------------------------------------------------------
struct StatsP {
    n_units: u32,
    u0: u32,
    start0: u32,
    x0: u32,
    group_len: u32,
    slice_len: u32,
    spg: u32,
    _p: u32,
}

@group(0) @binding(0) var<storage, read> sx: array<u32>;
@group(0) @binding(1) var<storage, read_write> spart: array<f32>;
@group(0) @binding(2) var<uniform> sp: StatsP;

var<workgroup> red1: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;

fn ld_sx(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(sx[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(sx[i]);
}

@compute @workgroup_size(256)
fn stats(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let wi = wid.x + wid.y * nwg.x;
    if (wi >= sp.n_units) {
        return;
    }
    let u = sp.u0 + wi;
    let g = u / sp.spg;
    let s = u - g * sp.spg;
    let start = g * sp.group_len + s * sp.slice_len;
    let len = min(sp.slice_len, sp.group_len - s * sp.slice_len);
    let l0 = sp.x0 + (start - sp.start0);
    // Shift by the slice's first value: sums of (x - k) stay small when the mean is large.
    let k = ld_sx(l0);
    var a = 0.0;
    var b = 0.0;
    for (var i = lid; i < len; i += 256u) {
        let d = ld_sx(l0 + i) - k;
        a += d;
        b = fma(d, d, b);
    }
    red1[lid] = a;
    red2[lid] = b;
    workgroupBarrier();
    for (var st = 128u; st > 0u; st >>= 1u) {
        if (lid < st) {
            red1[lid] += red1[lid + st];
            red2[lid] += red2[lid + st];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let n = f32(len);
        let s1 = red1[0];
        spart[3u * u] = n;
        spart[3u * u + 1u] = k + s1 / n;
        spart[3u * u + 2u] = max(red2[0] - s1 * (s1 / n), 0.0);
    }
}

// ---- merge slices per group -------------------------------------------------------------------------
struct FinP {
    groups: u32,
    spg: u32,
    eps: f32,
    _p: u32,
}

@group(0) @binding(0) var<storage, read> fpart: array<f32>;
@group(0) @binding(1) var<storage, read_write> fstats: array<f32>;
@group(0) @binding(2) var<uniform> fp: FinP;

@compute @workgroup_size(64)
fn finalize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = gid.x + gid.y * nwg.x * 64u;
    if (g >= fp.groups) {
        return;
    }
    var n = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var s = 0u; s < fp.spg; s++) {
        let u = g * fp.spg + s;
        let nb = fpart[3u * u];
        let mb = fpart[3u * u + 1u];
        let nt = n + nb;
        let d = mb - mean;
        let w = nb / nt;
        mean += d * w;
        m2 += fpart[3u * u + 2u] + d * d * n * w;
        n = nt;
    }
    fstats[2u * g] = mean;
    fstats[2u * g + 1u] = inverseSqrt(m2 / n + fp.eps);
}

// ---- normalise + affine (+ SiLU) ---------------------------------------------------------------------
// Element e = e0 + k: group e / group_len, channel (e / inner) % c.
struct ApplyP {
    n: u32,
    y0: u32,
    x0: u32,
    e0: u32,
    group_len: u32,
    inner: u32,
    c: u32,
    silu: u32,
}

@group(0) @binding(0) var<storage, read> ax: array<u32>;
@group(0) @binding(1) var<storage, read> astats: array<f32>;
@group(0) @binding(2) var<storage, read> agamma: array<u32>;
@group(0) @binding(3) var<storage, read> abeta: array<u32>;
@group(0) @binding(4) var<storage, read_write> ay: array<u32>;
@group(0) @binding(5) var<uniform> ap: ApplyP;

fn ld_ax(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(ax[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(ax[i]);
}

fn ld_w(i: u32, beta: bool) -> f32 {
    if (X2_HALF) {
        if (beta) {
            return unpack2x16float(abeta[i >> 1u])[i & 1u];
        }
        return unpack2x16float(agamma[i >> 1u])[i & 1u];
    }
    if (beta) {
        return bitcast<f32>(abeta[i]);
    }
    return bitcast<f32>(agamma[i]);
}

fn apply_elem(k: u32) -> f32 {
    let e = ap.e0 + k;
    let g = e / ap.group_len;
    let ch = (e / ap.inner) % ap.c;
    var v = (ld_ax(ap.x0 + k) - astats[2u * g]) * astats[2u * g + 1u];
    v = fma(v, ld_w(ch, false), ld_w(ch, true));
    if (ap.silu != 0u) {
        v = v / (1.0 + exp(-v));
    }
    return v;
}

fn st_pair(j: u32, v: vec2<f32>, lo: bool, hi: bool) {
    if (Y_HALF) {
        let w = j >> 1u;
        if (lo && hi) {
            ay[w] = pack2x16float(v);
        } else if (lo || hi) {
            let old = unpack2x16float(ay[w]);
            ay[w] = pack2x16float(select(old, v, vec2<bool>(lo, hi)));
        }
    } else {
        if (lo) { ay[j] = bitcast<u32>(v.x); }
        if (hi) { ay[j + 1u] = bitcast<u32>(v.y); }
    }
}

@compute @workgroup_size(256)
fn apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = ((ap.y0 >> 1u) + gid.x + gid.y * nwg.x * 256u) * 2u;
    if (j >= ap.y0 + ap.n) {
        return;
    }
    let lo = j >= ap.y0;
    let hi = j + 1u < ap.y0 + ap.n;
    var v = vec2<f32>(0.0);
    if (lo) { v.x = apply_elem(j - ap.y0); }
    if (hi) { v.y = apply_elem(j + 1u - ap.y0); }
    st_pair(j, v, lo, hi);
}

// ---- softmax over the last dimension -------------------------------------------------------------------
struct SmP {
    rows: u32,
    len: u32,
    x0: u32,
    r0: u32,
}

@group(0) @binding(0) var<storage, read> mx: array<u32>;
@group(0) @binding(1) var<storage, read_write> mstats: array<f32>;
@group(0) @binding(2) var<uniform> mp: SmP;

var<workgroup> red_m: array<f32, 64>;
var<workgroup> red_s: array<f32, 64>;

fn ld_mx(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(mx[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(mx[i]);
}

// Finite stand-in for -inf, so exp(NEG - NEG) stays 1 instead of NaN.
const NEG: f32 = -3.0e38;

@compute @workgroup_size(64)
fn sm_stats(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= mp.rows) {
        return;
    }
    let l0 = mp.x0 + row * mp.len;
    var m = NEG;
    var s = 0.0;
    for (var i = lid; i < mp.len; i += 64u) {
        let v = ld_mx(l0 + i);
        if (v > m) {
            s = s * exp(m - v) + 1.0;
            m = v;
        } else {
            s += exp(v - m);
        }
    }
    red_m[lid] = m;
    red_s[lid] = s;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st >>= 1u) {
        if (lid < st) {
            let ma = red_m[lid];
            let mb = red_m[lid + st];
            let mm = max(ma, mb);
            red_s[lid] = red_s[lid] * exp(ma - mm) + red_s[lid + st] * exp(mb - mm);
            red_m[lid] = mm;
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        mstats[2u * (mp.r0 + row)] = red_m[0];
        mstats[2u * (mp.r0 + row) + 1u] = red_s[0];
    }
}

struct SmApplyP {
    n: u32,
    y0: u32,
    x0: u32,
    e0: u32,
    len: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<storage, read> qx: array<u32>;
@group(0) @binding(1) var<storage, read> qstats: array<f32>;
@group(0) @binding(2) var<storage, read_write> qy: array<u32>;
@group(0) @binding(3) var<uniform> qp: SmApplyP;

fn ld_qx(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(qx[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(qx[i]);
}

fn sm_elem(k: u32) -> f32 {
    let r = (qp.e0 + k) / qp.len;
    return exp(ld_qx(qp.x0 + k) - qstats[2u * r]) / qstats[2u * r + 1u];
}

@compute @workgroup_size(256)
fn sm_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = ((qp.y0 >> 1u) + gid.x + gid.y * nwg.x * 256u) * 2u;
    if (j >= qp.y0 + qp.n) {
        return;
    }
    let lo = j >= qp.y0;
    let hi = j + 1u < qp.y0 + qp.n;
    var v = vec2<f32>(0.0);
    if (lo) { v.x = sm_elem(j - qp.y0); }
    if (hi) { v.y = sm_elem(j + 1u - qp.y0); }
    if (Y_HALF) {
        let w = j >> 1u;
        if (lo && hi) {
            qy[w] = pack2x16float(v);
        } else if (lo || hi) {
            let old = unpack2x16float(qy[w]);
            qy[w] = pack2x16float(select(old, v, vec2<bool>(lo, hi)));
        }
    } else {
        if (lo) { qy[j] = bitcast<u32>(v.x); }
        if (hi) { qy[j + 1u] = bitcast<u32>(v.y); }
    }
}
