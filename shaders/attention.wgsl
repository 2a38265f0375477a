// attention: multi-head scaled dot-product attention, flash style (online softmax; the Tq x Tk
// score matrix never exists beyond one workgroup tile).
//
// q [B, Tq, H*D], k/v [B, Tk, H*D], o [B, Tq, H*D] (heads packed in channels, as the linears
// produce them); softmax(q k^T / sqrt(D)) v per head, optionally causal (key j > query i masked,
// torch's top-left alignment). All tensors share one storage dtype (X_HALF Def), as `array<u32>`.
// Arithmetic type `at` (Def alias): f16 on the f16 path with f16 activations (products and
// 4-term dot sums in f16), else f32. Running max, sum and the output accumulator are f32.
// Scores use exp2: `scale` = log2(e) / sqrt(D).
//
// Entry points:
//   attn64   D = 64 fast path: one thread per query row (q row and 64 accumulators in registers),
//            K/V tiles of BK keys staged in workgroup memory and read by all 64 rows.
//   attn_gen any D (multiple of 4, <= 1024): GQ query rows per workgroup; scores of a GQ x GK
//            tile computed from Q/K chunks of 32 dims staged in workgroup memory (SPT scores per
//            thread), softmax update per row, then each thread accumulates NS vec4 slots of the
//            GQ x D output (V read straight from storage, coalesced along D).
//
// Bindings (group 0): 0 q (read), 1 k (read), 2 v (read), 3 o (rw), 4 state accumulator
//   [B, Tq, C] f32 (rw), 5 state (max, sum) [B, Tq, H, 2] f32 (rw), 6 AttnP (uniform). The state
//   is only touched when the keys are split over several dispatches (mode != 0; else a dummy).
// Dispatch: (ceil((r1 - r0) / rows per workgroup), H, batches) workgroups of 64 threads;
//   rows per workgroup = 64 (attn64) or GQ (attn_gen). q0/k0/v0/o0 are local (in-window)
//   indices of q[b0, r0, 0], k[b0, 0, 0], v[b0, 0, 0], o[b0, r0, 0].

struct AttnP {
    tk: u32,
    d: u32,
    c: u32,
    causal: u32,
    r0: u32,
    r1: u32,
    q_bstride: u32,
    kv_bstride: u32,
    q0: u32,
    k0: u32,
    v0: u32,
    o0: u32,
    scale: f32,
    // Key split (K/V of one batch element over the binding limit): this dispatch sees keys
    // k_lo .. k_lo + tk. mode 0: all keys, write o; 1: first part, write the state; 2: middle
    // part, merge into the state; 3: last part, merge and write o.
    k_lo: u32,
    mode: u32,
    // Local indices of the f32 state for row (b0, r0): accumulator [B, Tq, C] (unnormalised,
    // relative to the running max) and (max, sum) pairs [B, Tq, H, 2].
    s0: u32,
    m0: u32,
    heads: u32,
    ml_bstride: u32,
    _p: u32,
}

@group(0) @binding(0) var<storage, read> aq: array<u32>;
@group(0) @binding(1) var<storage, read> ak: array<u32>;
@group(0) @binding(2) var<storage, read> av: array<u32>;
@group(0) @binding(3) var<storage, read_write> ao: array<u32>;
@group(0) @binding(4) var<storage, read_write> sacc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> sml: array<f32>;
@group(0) @binding(6) var<uniform> p: AttnP;

// attn64's key loop runs to a constant bound and breaks at the data-dependent end: Tint (Chrome)
// guards each loop whose trip count it cannot bound with an extra counter, and with that guard
// llvmpipe compiled attn64 7x slower (44 s vs 6 s cold on Mesa 25 lavapipe via Dawn).
// (attn_gen compiled no faster this way, so it keeps its plain loops.) 16-key tiles: 2^32 keys.
const MAX_KEY_TILES: u32 = 268435456u;

// Finite stand-in for -inf: exp2(NEG - m) is 0 and NEG - NEG is 0, never NaN.
const NEG: f32 = -3.0e38;

// vec4 loads/stores at element index i (a multiple of 4).
fn ld4_q(i: u32) -> vec4<f32> {
    if (X_HALF) {
        let w = i >> 1u;
        return vec4<f32>(unpack2x16float(aq[w]), unpack2x16float(aq[w + 1u]));
    }
    return vec4<f32>(bitcast<f32>(aq[i]), bitcast<f32>(aq[i + 1u]), bitcast<f32>(aq[i + 2u]), bitcast<f32>(aq[i + 3u]));
}

fn ld4_k(i: u32) -> vec4<f32> {
    if (X_HALF) {
        let w = i >> 1u;
        return vec4<f32>(unpack2x16float(ak[w]), unpack2x16float(ak[w + 1u]));
    }
    return vec4<f32>(bitcast<f32>(ak[i]), bitcast<f32>(ak[i + 1u]), bitcast<f32>(ak[i + 2u]), bitcast<f32>(ak[i + 3u]));
}

fn ld4_v(i: u32) -> vec4<f32> {
    if (X_HALF) {
        let w = i >> 1u;
        return vec4<f32>(unpack2x16float(av[w]), unpack2x16float(av[w + 1u]));
    }
    return vec4<f32>(bitcast<f32>(av[i]), bitcast<f32>(av[i + 1u]), bitcast<f32>(av[i + 2u]), bitcast<f32>(av[i + 3u]));
}

fn st4_o(i: u32, v: vec4<f32>) {
    if (X_HALF) {
        let w = i >> 1u;
        ao[w] = pack2x16float(v.xy);
        ao[w + 1u] = pack2x16float(v.zw);
    } else {
        ao[i] = bitcast<u32>(v.x);
        ao[i + 1u] = bitcast<u32>(v.y);
        ao[i + 2u] = bitcast<u32>(v.z);
        ao[i + 3u] = bitcast<u32>(v.w);
    }
}

// Local keys [0, kend) can matter to rows [row_base, row_end): all of them, or with the causal
// mask only those up to the last row.
fn key_end(row_base: u32, rows: u32) -> u32 {
    if (p.causal != 0u) {
        let re = min(row_base + rows, p.r1);
        return select(0u, min(p.tk, re - p.k_lo), re > p.k_lo);
    }
    return p.tk;
}

fn masked_key(key: u32, row: u32) -> bool {
    return key >= p.tk || (p.causal != 0u && p.k_lo + key > row);
}

// Index of the state accumulator vec4 for (b, row, head h, dims 4c..4c+3).
fn state_at(b: u32, row: u32, h: u32, c: u32) -> u32 {
    return (p.s0 + b * p.q_bstride + (row - p.r0) * p.c + h * p.d) / 4u + c;
}

fn ml_at(b: u32, row: u32, h: u32) -> u32 {
    return p.m0 + b * p.ml_bstride + ((row - p.r0) * p.heads + h) * 2u;
}

// ---- D = 64 fast path ----------------------------------------------------------------------------
const BK: u32 = 16u;

var<workgroup> k64: array<vec4<at>, 256>; // BK keys x 16 vec4
var<workgroup> v64: array<vec4<at>, 256>;

@compute @workgroup_size(64)
fn attn64(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.y;
    let b = wid.z;
    let row_base = p.r0 + wid.x * 64u;
    let row = row_base + lid;
    let valid = row < p.r1;
    let qi = p.q0 + b * p.q_bstride + (min(row, p.r1 - 1u) - p.r0) * p.c + h * 64u;
    var q: array<vec4<at>, 16>;
    for (var c = 0u; c < 16u; c++) {
        q[c] = vec4<at>(ld4_q(qi + 4u * c) * p.scale);
    }
    var acc: array<vec4<f32>, 16>;
    var m = NEG;
    var l = 0.0;
    let kb = p.k0 + b * p.kv_bstride + h * 64u;
    let vb = p.v0 + b * p.kv_bstride + h * 64u;
    let kend = key_end(row_base, 64u);
    for (var tile = 0u; tile < MAX_KEY_TILES; tile++) {
        let t0 = tile * BK;
        if (t0 >= kend) {
            break;
        }
        workgroupBarrier();
        for (var i = 0u; i < BK * 16u / 64u; i++) {
            let idx = lid + 64u * i;
            let key = t0 + idx / 16u;
            let c = idx % 16u;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (key < p.tk) {
                kv = ld4_k(kb + key * p.c + 4u * c);
                vv = ld4_v(vb + key * p.c + 4u * c);
            }
            k64[idx] = vec4<at>(kv);
            v64[idx] = vec4<at>(vv);
        }
        workgroupBarrier();
        var s: array<f32, BK>;
        var mt = m;
        for (var j = 0u; j < BK; j++) {
            var d = 0.0;
            for (var c = 0u; c < 16u; c++) {
                d += f32(dot(q[c], k64[j * 16u + c]));
            }
            let key = t0 + j;
            s[j] = select(d, NEG, masked_key(key, row));
            mt = max(mt, s[j]);
        }
        let alpha = exp2(m - mt);
        l *= alpha;
        for (var c = 0u; c < 16u; c++) {
            acc[c] *= alpha;
        }
        for (var j = 0u; j < BK; j++) {
            let pj = exp2(s[j] - mt);
            l += pj;
            let pa = at(pj);
            for (var c = 0u; c < 16u; c++) {
                acc[c] += vec4<f32>(v64[j * 16u + c] * pa);
            }
        }
        m = mt;
    }
    if (!valid) {
        return;
    }
    if (p.mode >= 2u) {
        // Merge with the keys of earlier dispatches.
        let mi = ml_at(b, row, h);
        let mp = sml[mi];
        let mm = max(mp, m);
        let a = exp2(mp - mm);
        let bb = exp2(m - mm);
        for (var c = 0u; c < 16u; c++) {
            acc[c] = sacc[state_at(b, row, h, c)] * a + acc[c] * bb;
        }
        l = sml[mi + 1u] * a + l * bb;
        m = mm;
    }
    if (p.mode == 1u || p.mode == 2u) {
        for (var c = 0u; c < 16u; c++) {
            sacc[state_at(b, row, h, c)] = acc[c];
        }
        let mi = ml_at(b, row, h);
        sml[mi] = m;
        sml[mi + 1u] = l;
        return;
    }
    let oi = p.o0 + b * p.q_bstride + (row - p.r0) * p.c + h * 64u;
    let inv = 1.0 / l;
    for (var c = 0u; c < 16u; c++) {
        st4_o(oi + 4u * c, acc[c] * inv);
    }
}

// ---- generic head dim --------------------------------------------------------------------------------
const GK: u32 = 16u;
const SPT: u32 = GQ * GK / 64u;

var<workgroup> gq: array<vec4<at>, GQ * 8u>; // Q chunk: GQ rows x 32 dims
var<workgroup> gk: array<vec4<at>, GK * 8u>; // K chunk: GK keys x 32 dims
var<workgroup> gs: array<f32, GQ * GK>; // scores, then probabilities
var<workgroup> galpha: array<f32, GQ>;
var<workgroup> gbeta: array<f32, GQ>;
var<workgroup> gl: array<f32, GQ>;

@compute @workgroup_size(64)
fn attn_gen(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.y;
    let b = wid.z;
    let row_base = p.r0 + wid.x * GQ;
    let d4 = p.d / 4u;
    let qb = p.q0 + b * p.q_bstride + h * p.d;
    let kb = p.k0 + b * p.kv_bstride + h * p.d;
    let vb = p.v0 + b * p.kv_bstride + h * p.d;
    var acc: array<vec4<f32>, NS>;
    // Thread r < GQ keeps row r's running max and sum.
    var m = NEG;
    var l = 0.0;
    let kend = key_end(row_base, GQ);
    for (var t0 = 0u; t0 < kend; t0 += GK) {
        // Zeroed explicitly each tile: relying on the loop-body declaration to re-zero it gave
        // stale sums from the previous tile on Chrome/SwiftShader.
        var sc: array<f32, SPT>;
        for (var e = 0u; e < SPT; e++) {
            sc[e] = 0.0;
        }
        for (var dc = 0u; dc < p.d; dc += 32u) {
            workgroupBarrier();
            for (var i = lid; i < GQ * 8u; i += 64u) {
                let row = row_base + i / 8u;
                let dd = dc + 4u * (i % 8u);
                var v = vec4<f32>(0.0);
                if (row < p.r1 && dd < p.d) {
                    v = ld4_q(qb + (row - p.r0) * p.c + dd);
                }
                gq[i] = vec4<at>(v);
            }
            for (var i = lid; i < GK * 8u; i += 64u) {
                let key = t0 + i / 8u;
                let dd = dc + 4u * (i % 8u);
                var v = vec4<f32>(0.0);
                if (key < p.tk && dd < p.d) {
                    v = ld4_k(kb + key * p.c + dd);
                }
                gk[i] = vec4<at>(v);
            }
            workgroupBarrier();
            for (var e = 0u; e < SPT; e++) {
                let idx = lid + 64u * e;
                let r = idx / GK;
                let j = idx % GK;
                var d = 0.0;
                for (var c = 0u; c < 8u; c++) {
                    d += f32(dot(gq[r * 8u + c], gk[j * 8u + c]));
                }
                sc[e] += d;
            }
        }
        for (var e = 0u; e < SPT; e++) {
            let idx = lid + 64u * e;
            let key = t0 + idx % GK;
            let row = row_base + idx / GK;
            gs[idx] = select(sc[e] * p.scale, NEG, masked_key(key, row));
        }
        workgroupBarrier();
        if (lid < GQ) {
            var mt = m;
            for (var j = 0u; j < GK; j++) {
                mt = max(mt, gs[lid * GK + j]);
            }
            let alpha = exp2(m - mt);
            var sum = 0.0;
            for (var j = 0u; j < GK; j++) {
                let pj = exp2(gs[lid * GK + j] - mt);
                gs[lid * GK + j] = pj;
                sum += pj;
            }
            l = l * alpha + sum;
            m = mt;
            galpha[lid] = alpha;
        }
        workgroupBarrier();
        let jn = min(GK, p.tk - t0);
        for (var i = 0u; i < NS; i++) {
            let slot = lid + 64u * i;
            let r = slot / d4;
            if (r < GQ) {
                let c4 = slot - r * d4;
                var a = acc[i] * galpha[r];
                for (var j = 0u; j < jn; j++) {
                    let vv = vec4<at>(ld4_v(vb + (t0 + j) * p.c + 4u * c4));
                    a += vec4<f32>(vv * at(gs[r * GK + j]));
                }
                acc[i] = a;
            }
        }
    }
    if (lid < GQ) {
        let row = row_base + lid;
        var a = 0.0;
        var bb = 1.0;
        if (p.mode >= 2u && row < p.r1) {
            // Merge with the keys of earlier dispatches.
            let mi = ml_at(b, row, h);
            let mp = sml[mi];
            let mm = max(mp, m);
            a = exp2(mp - mm);
            bb = exp2(m - mm);
            l = sml[mi + 1u] * a + l * bb;
            m = mm;
        }
        if ((p.mode == 1u || p.mode == 2u) && row < p.r1) {
            let mi = ml_at(b, row, h);
            sml[mi] = m;
            sml[mi + 1u] = l;
        }
        galpha[lid] = a;
        gbeta[lid] = bb;
        gl[lid] = l;
    }
    workgroupBarrier();
    for (var i = 0u; i < NS; i++) {
        let slot = lid + 64u * i;
        let r = slot / d4;
        let row = row_base + r;
        if (r < GQ && row < p.r1) {
            let c4 = slot - r * d4;
            var v = acc[i];
            if (p.mode >= 2u) {
                v = sacc[state_at(b, row, h, c4)] * galpha[r] + v * gbeta[r];
            }
            if (p.mode == 1u || p.mode == 2u) {
                sacc[state_at(b, row, h, c4)] = v;
            } else {
                st4_o(p.o0 + b * p.q_bstride + (row - p.r0) * p.c + h * p.d + 4u * c4, v / gl[r]);
            }
        }
    }
}
