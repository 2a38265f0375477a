// elementwise: pointwise activations, broadcast add/mul, GEGLU, nearest 2x upsample, strided copy
// (channel concat, cast), batched transpose (NCHW <-> tokens),
// token + position embedding lookup.
//
// Every tensor is `array<u32>`: F32 elements are one word (bitcast), F16 elements two per word
// (unpack2x16float). `X_HALF` / `X2_HALF` / `Y_HALF` (Defs) say which, so the dead branch folds.
// A tensor may be bound as a window (Binding::range) of a bigger buffer: params carry *local*
// element indices (relative to the window start), so tensors above the binding limit are
// processed in several dispatches.
// Math is f32 on both compute paths: these kernels are bandwidth bound, f16 ALU saves nothing and
// would cost accuracy (erf, exp).
//
// Output ownership: a thread owns one output *word pair* (elements 2j, 2j+1 of the window). For F16
// outputs an element pair shares a u32, so words half inside the range are read-modified-written;
// dispatch ranges never share a word within one dispatch, so this is race free.
//
// Bindings (group 0), per entry point (binding numbers are reused across entry points):
//   unary     0 x (read), 1 y (rw), 2 UnaryP
//   binary    0 a (read), 1 b (read), 2 y (rw), 3 BinaryP
//   geglu     0 x [rows, 2F] (read), 1 y [rows, F] (rw), 2 GegluP
//   upsample  0 x [.., H, W] (read), 1 y [.., 2H, 2W] (rw), 2 UpP
//   upsample_to 0 x [P, H, W] (read), 1 y [P, OH, OW] (rw), 2 UpToP
//   transpose 0 x [B, R, S] (read), 1 y [B, S, R] (rw), 2 TrP
//   embed     0 ids [N] u32 (read), 1 tok [V, C] (read, a row window), 2 pos [T, C] (read), 3 y (rw), 4 EmbP
// Dispatch: 1-D over element pairs, 256 threads per workgroup, split over x/y by `gpu::grid`
//   (linear id = gid.x + gid.y * num_workgroups.x * 256); transpose: (ceil(S/32), ceil(R/32), 1)
//   workgroups of 256 threads for one batch row-block.

const WG: u32 = 256u;

// ---- unary -------------------------------------------------------------------------------------
// y[y0 + k] = op(x[x0 + k]) for k < n. OP: 0 copy/cast, 1 silu, 2 gelu (erf), 3 quick_gelu,
// 4 alpha * x + beta.
struct UnaryP {
    n: u32,
    y0: u32,
    x0: u32,
    _p0: u32,
    alpha: f32,
    beta: f32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<storage, read> ux: array<u32>;
@group(0) @binding(1) var<storage, read_write> uy: array<u32>;
@group(0) @binding(2) var<uniform> up: UnaryP;

// Faithfully rounded erf (max error ~1 ulp), N. Juffa's erff, stackoverflow.com/a/35148199.
fn erf_f32(a: f32) -> f32 {
    let t = abs(a);
    let s = a * a;
    var r: f32;
    if (t > 0.927734375) {
        r = fma(-1.72853470e-5, t, 3.83197126e-4);
        let u = fma(-3.88396438e-3, t, 2.42546219e-2);
        r = fma(r, s, u);
        r = fma(r, t, -1.06777877e-1);
        r = fma(r, t, -6.34846687e-1);
        r = fma(r, t, -1.28717512e-1);
        r = fma(r, t, -t);
        r = 1.0 - exp(r);
        r = select(r, -r, a < 0.0);
    } else {
        r = -5.96761703e-4;
        r = fma(r, s, 4.99119423e-3);
        r = fma(r, s, -2.67681349e-2);
        r = fma(r, s, 1.12819925e-1);
        r = fma(r, s, -3.76125336e-1);
        r = fma(r, s, 1.28379166e-1);
        r = fma(r, a, a);
    }
    return r;
}

fn sigmoid(x: f32) -> f32 {
    // exp(-x) overflows to inf for x < -88: 1 / inf = 0, the right limit.
    return 1.0 / (1.0 + exp(-x));
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752));
}

fn apply_op(v: f32, alpha: f32, beta: f32) -> f32 {
    switch (OP) {
        case 1u: { return v * sigmoid(v); }
        case 2u: { return gelu(v); }
        case 3u: { return v * sigmoid(1.702 * v); }
        case 4u: { return fma(alpha, v, beta); }
        default: { return v; }
    }
}

fn ld_ux(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(ux[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(ux[i]);
}

// Store the element pair starting at local (even) index j; lo/hi: whether each is in range.
fn st_uy(j: u32, v: vec2<f32>, lo: bool, hi: bool) {
    if (Y_HALF) {
        let w = j >> 1u;
        if (lo && hi) {
            uy[w] = pack2x16float(v);
        } else if (lo || hi) {
            let old = unpack2x16float(uy[w]);
            uy[w] = pack2x16float(select(old, v, vec2<bool>(lo, hi)));
        }
    } else {
        if (lo) { uy[j] = bitcast<u32>(v.x); }
        if (hi) { uy[j + 1u] = bitcast<u32>(v.y); }
    }
}

fn pair_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(256)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // Local y indices y0 .. y0+n; pairs aligned to even local indices.
    let j = ((up.y0 >> 1u) + pair_id(gid, nwg)) * 2u;
    if (j >= up.y0 + up.n) {
        return;
    }
    let lo = j >= up.y0;
    let hi = j + 1u < up.y0 + up.n;
    var v = vec2<f32>(0.0);
    if (lo) { v.x = apply_op(ld_ux(up.x0 + (j - up.y0)), up.alpha, up.beta); }
    if (hi) { v.y = apply_op(ld_ux(up.x0 + (j + 1u - up.y0)), up.alpha, up.beta); }
    st_uy(j, v, lo, hi);
}

// ---- binary with broadcast -----------------------------------------------------------------------
// y[y0 + k] = a op b for output element e = e0 + k (global index into the 4-D output `dims`).
// An operand in full mode (a_bc == 0) is read at a0 + k (windowed like y); in broadcast mode at
// dot(coords(e), sa) (bound whole). OP: 0 add, 1 mul.
struct BinaryP {
    n: u32,
    y0: u32,
    a0: u32,
    b0: u32,
    e0: u32,
    a_bc: u32,
    b_bc: u32,
    _p: u32,
    dims: vec4<u32>,
    sa: vec4<u32>,
    sb: vec4<u32>,
}

@group(0) @binding(0) var<storage, read> ba: array<u32>;
@group(0) @binding(1) var<storage, read> bb: array<u32>;
@group(0) @binding(2) var<storage, read_write> by: array<u32>;
@group(0) @binding(3) var<uniform> bp: BinaryP;

fn ld_ba(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(ba[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(ba[i]);
}

fn ld_bb(i: u32) -> f32 {
    if (X2_HALF) {
        return unpack2x16float(bb[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(bb[i]);
}

fn st_by(j: u32, v: vec2<f32>, lo: bool, hi: bool) {
    if (Y_HALF) {
        let w = j >> 1u;
        if (lo && hi) {
            by[w] = pack2x16float(v);
        } else if (lo || hi) {
            let old = unpack2x16float(by[w]);
            by[w] = pack2x16float(select(old, v, vec2<bool>(lo, hi)));
        }
    } else {
        if (lo) { by[j] = bitcast<u32>(v.x); }
        if (hi) { by[j + 1u] = bitcast<u32>(v.y); }
    }
}

fn coords(e: u32) -> vec4<u32> {
    let d = bp.dims;
    let c3 = e % d.w;
    let t2 = e / d.w;
    let c2 = t2 % d.z;
    let t1 = t2 / d.z;
    let c1 = t1 % d.y;
    let c0 = t1 / d.y;
    return vec4<u32>(c0, c1, c2, c3);
}

fn binary_elem(k: u32) -> f32 {
    var ia = bp.a0 + k;
    var ib = bp.b0 + k;
    if (bp.a_bc != 0u || bp.b_bc != 0u) {
        let c = coords(bp.e0 + k);
        if (bp.a_bc != 0u) { ia = dot(c, bp.sa); }
        if (bp.b_bc != 0u) { ib = dot(c, bp.sb); }
    }
    let a = ld_ba(ia);
    let b = ld_bb(ib);
    if (OP == 1u) {
        return a * b;
    }
    return a + b;
}

@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = ((bp.y0 >> 1u) + pair_id(gid, nwg)) * 2u;
    if (j >= bp.y0 + bp.n) {
        return;
    }
    let lo = j >= bp.y0;
    let hi = j + 1u < bp.y0 + bp.n;
    var v = vec2<f32>(0.0);
    if (lo) { v.x = binary_elem(j - bp.y0); }
    if (hi) { v.y = binary_elem(j + 1u - bp.y0); }
    st_by(j, v, lo, hi);
}

// ---- GEGLU ----------------------------------------------------------------------------------------
// Rows of x [.., 2F] -> y [.., F]: y = x[:F] * gelu(x[F:]) (diffusers GEGLU: hidden, gate = chunk(2)).
// The dispatch starts at a row boundary: k = r * F + f.
struct GegluP {
    n: u32,
    y0: u32,
    x0: u32,
    f: u32,
}

@group(0) @binding(0) var<storage, read> gx: array<u32>;
@group(0) @binding(1) var<storage, read_write> gy: array<u32>;
@group(0) @binding(2) var<uniform> gp: GegluP;

fn ld_gx(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(gx[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(gx[i]);
}

fn st_gy(j: u32, v: vec2<f32>, lo: bool, hi: bool) {
    if (Y_HALF) {
        let w = j >> 1u;
        if (lo && hi) {
            gy[w] = pack2x16float(v);
        } else if (lo || hi) {
            let old = unpack2x16float(gy[w]);
            gy[w] = pack2x16float(select(old, v, vec2<bool>(lo, hi)));
        }
    } else {
        if (lo) { gy[j] = bitcast<u32>(v.x); }
        if (hi) { gy[j + 1u] = bitcast<u32>(v.y); }
    }
}

fn geglu_elem(k: u32) -> f32 {
    let r = k / gp.f;
    let c = k - r * gp.f;
    let i = gp.x0 + r * 2u * gp.f + c;
    return ld_gx(i) * gelu(ld_gx(i + gp.f));
}

@compute @workgroup_size(256)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = ((gp.y0 >> 1u) + pair_id(gid, nwg)) * 2u;
    if (j >= gp.y0 + gp.n) {
        return;
    }
    let lo = j >= gp.y0;
    let hi = j + 1u < gp.y0 + gp.n;
    var v = vec2<f32>(0.0);
    if (lo) { v.x = geglu_elem(j - gp.y0); }
    if (hi) { v.y = geglu_elem(j + 1u - gp.y0); }
    st_gy(j, v, lo, hi);
}

// ---- nearest 2x upsample ---------------------------------------------------------------------------
// x [.., H, W] -> y [.., 2H, 2W], seen as input rows: input row i (of all planes) becomes output
// rows 2i and 2i+1. The dispatch starts at a row boundary.
struct UpP {
    n: u32,
    y0: u32,
    x0: u32,
    w: u32,
}

@group(0) @binding(0) var<storage, read> sx: array<u32>;
@group(0) @binding(1) var<storage, read_write> sy: array<u32>;
@group(0) @binding(2) var<uniform> sp: UpP;

fn ld_sx(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(sx[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(sx[i]);
}

fn st_sy(j: u32, v: vec2<f32>, lo: bool, hi: bool) {
    if (Y_HALF) {
        let w = j >> 1u;
        if (lo && hi) {
            sy[w] = pack2x16float(v);
        } else if (lo || hi) {
            let old = unpack2x16float(sy[w]);
            sy[w] = pack2x16float(select(old, v, vec2<bool>(lo, hi)));
        }
    } else {
        if (lo) { sy[j] = bitcast<u32>(v.x); }
        if (hi) { sy[j + 1u] = bitcast<u32>(v.y); }
    }
}

fn up_elem(k: u32) -> f32 {
    let w2 = sp.w * 2u;
    let orow = k / w2;
    let ox = k - orow * w2;
    return ld_sx(sp.x0 + (orow >> 1u) * sp.w + (ox >> 1u));
}

@compute @workgroup_size(256)
fn upsample(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = ((sp.y0 >> 1u) + pair_id(gid, nwg)) * 2u;
    if (j >= sp.y0 + sp.n) {
        return;
    }
    let lo = j >= sp.y0;
    let hi = j + 1u < sp.y0 + sp.n;
    var v = vec2<f32>(0.0);
    if (lo) { v.x = up_elem(j - sp.y0); }
    if (hi) { v.y = up_elem(j + 1u - sp.y0); }
    st_sy(j, v, lo, hi);
}

// ---- nearest upsample to any size ---------------------------------------------------------------
// x [P, H, W] -> y [P, OH, OW] as torch's F.interpolate(size=(OH, OW), mode="nearest"):
// src = min(floor(dst * (in / out)), in - 1) with the scale an f32 (torch's nearest_idx). The UNet
// needs it when a latent side is not a multiple of its downsampling factor (diffusers'
// upsample_size). The dispatch starts at a plane boundary; x0 / y0 are local plane starts.
struct UpToP {
    n: u32,
    y0: u32,
    x0: u32,
    w: u32,
    h: u32,
    ow: u32,
    oh: u32,
    _p0: u32,
    sw: f32,
    sh: f32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(2) var<uniform> sq: UpToP;

fn up_to_elem(k: u32) -> f32 {
    let plane = k / (sq.oh * sq.ow);
    let r = k - plane * sq.oh * sq.ow;
    let oy = r / sq.ow;
    let ox = r - oy * sq.ow;
    let iy = min(u32(floor(f32(oy) * sq.sh)), sq.h - 1u);
    let ix = min(u32(floor(f32(ox) * sq.sw)), sq.w - 1u);
    return ld_sx(sq.x0 + plane * sq.h * sq.w + iy * sq.w + ix);
}

@compute @workgroup_size(256)
fn upsample_to(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = ((sq.y0 >> 1u) + pair_id(gid, nwg)) * 2u;
    if (j >= sq.y0 + sq.n) {
        return;
    }
    let lo = j >= sq.y0;
    let hi = j + 1u < sq.y0 + sq.n;
    var v = vec2<f32>(0.0);
    if (lo) { v.x = up_to_elem(j - sq.y0); }
    if (hi) { v.y = up_to_elem(j + 1u - sq.y0); }
    st_sy(j, v, lo, hi);
}

// ---- batched transpose [B, R, S] -> [B, S, R] ---------------------------------------------------------
// One dispatch covers one batch and the block r in [r_lo, r_hi), s in [s_lo, s_hi); x0 / y0 are
// the local indices of x[b, r_lo, 0] and y[b, s_lo, 0]. A 32x32 tile goes through workgroup
// memory so both the reads (along s) and the writes (along r) are contiguous.
// F16 output: the thread whose tile holds a word's first element writes the whole word; the
// second element may lie in another tile (odd R: it is y[s+1, 0]) and is then read from x.
struct TrP {
    r: u32,
    s: u32,
    r_lo: u32,
    r_hi: u32,
    s_lo: u32,
    s_hi: u32,
    x0: u32,
    y0: u32,
}

@group(0) @binding(0) var<storage, read> tx: array<u32>;
@group(0) @binding(1) var<storage, read_write> ty: array<u32>;
@group(0) @binding(2) var<uniform> tp: TrP;

var<workgroup> tile: array<f32, 1056>; // 32 rows x 33 (padded against bank conflicts)

fn ld_tx(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(tx[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(tx[i]);
}

// x[r, s] of the current batch, r >= r_lo.
fn x_at(r: u32, s: u32) -> f32 {
    return ld_tx(tp.x0 + (r - tp.r_lo) * tp.s + s);
}

@compute @workgroup_size(256)
fn transpose(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let s_t = tp.s_lo + wid.x * 32u;
    let r_t = tp.r_lo + wid.y * 32u;
    for (var i = 0u; i < 4u; i++) {
        let idx = lid + i * WG;
        let rr = idx / 32u;
        let ss = idx % 32u;
        let r = r_t + rr;
        let s = s_t + ss;
        var v = 0.0;
        if (r < tp.r_hi && s < tp.s_hi) {
            v = x_at(r, s);
        }
        tile[rr * 33u + ss] = v;
    }
    workgroupBarrier();
    for (var i = 0u; i < 4u; i++) {
        let idx = lid + i * WG;
        let ss = idx / 32u;
        let rr = idx % 32u;
        let r = r_t + rr;
        let s = s_t + ss;
        if (r >= tp.r_hi || s >= tp.s_hi) {
            continue;
        }
        // Local output index of y[s, r].
        let j = tp.y0 + (s - tp.s_lo) * tp.r + r;
        let v = tile[rr * 33u + ss];
        if (Y_HALF) {
            // F16 windows start on a word, so local and global parity agree.
            if ((j & 1u) != 0u) {
                // Owned by the thread holding the word's first element, unless that element is
                // in the previous batch (odd R*S): then each dispatch writes its own half.
                if (s == 0u && r == 0u) {
                    let w = j >> 1u;
                    ty[w] = pack2x16float(vec2<f32>(unpack2x16float(ty[w]).x, v));
                }
                continue;
            }
            // The word's second element: y[s, r + 1] or, past the row end, y[s + 1, 0]; past the
            // batch's end it belongs to the next dispatch (or is the pad half).
            if (r + 1u < tp.r) {
                var v2: f32;
                if (rr + 1u < 32u && r + 1u < tp.r_hi) {
                    v2 = tile[(rr + 1u) * 33u + ss];
                } else {
                    v2 = x_at(r + 1u, s);
                }
                ty[j >> 1u] = pack2x16float(vec2<f32>(v, v2));
            } else if (s + 1u < tp.s) {
                ty[j >> 1u] = pack2x16float(vec2<f32>(v, x_at(0u, s + 1u)));
            } else {
                let w = j >> 1u;
                ty[w] = pack2x16float(vec2<f32>(v, unpack2x16float(ty[w]).y));
            }
        } else {
            ty[j] = bitcast<u32>(v);
        }
    }
}

// ---- token + position embedding -------------------------------------------------------------------------
// y[n, c] = tok[ids[n], c] + pos[n % T, c]. The token table may exceed one binding: each dispatch
// binds rows [row_lo, row_hi) and fills only the elements whose id falls there (the others keep
// what an earlier dispatch wrote).
struct EmbP {
    n: u32,
    c: u32,
    t: u32,
    row_lo: u32,
    row_hi: u32,
    tok0: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<storage, read> eids: array<u32>;
@group(0) @binding(1) var<storage, read> etok: array<u32>;
@group(0) @binding(2) var<storage, read> epos: array<u32>;
@group(0) @binding(3) var<storage, read_write> ey: array<u32>;
@group(0) @binding(4) var<uniform> ep: EmbP;

fn ld_etok(i: u32) -> f32 {
    if (X_HALF) {
        return unpack2x16float(etok[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(etok[i]);
}

fn ld_epos(i: u32) -> f32 {
    if (X2_HALF) {
        return unpack2x16float(epos[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(epos[i]);
}

// Whether element k is owned by this dispatch, and its value.
fn emb_elem(k: u32) -> vec2<f32> {
    let n = k / ep.c;
    let c = k - n * ep.c;
    let id = eids[n];
    if (id < ep.row_lo || id >= ep.row_hi) {
        return vec2<f32>(0.0, 0.0);
    }
    let v = ld_etok(ep.tok0 + (id - ep.row_lo) * ep.c + c) + ld_epos((n % ep.t) * ep.c + c);
    return vec2<f32>(1.0, v);
}

@compute @workgroup_size(256)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = pair_id(gid, nwg) * 2u;
    if (j >= ep.n) {
        return;
    }
    let a = emb_elem(j);
    var b = vec2<f32>(0.0, 0.0);
    if (j + 1u < ep.n) {
        b = emb_elem(j + 1u);
    }
    let lo = a.x > 0.0;
    let hi = b.x > 0.0;
    let v = vec2<f32>(a.y, b.y);
    if (Y_HALF) {
        let w = j >> 1u;
        if (lo && hi) {
            ey[w] = pack2x16float(v);
        } else if (lo || hi) {
            let old = unpack2x16float(ey[w]);
            ey[w] = pack2x16float(select(old, v, vec2<bool>(lo, hi)));
        }
    } else {
        if (lo) { ey[j] = bitcast<u32>(v.x); }
        if (hi) { ey[j + 1u] = bitcast<u32>(v.y); }
    }
}
