// conv: 2-D convolution, NCHW, as an implicit GEMM: y[b, o, p] = Σ_k W[o, k]·im2col(x)[b, k, p] + bias[o]
// with p = output pixel, k = (c, ky, kx). x [B, C, H, W] f16 or f32, W [O, C, KH, KW] f16,
// bias [O] f16, y [B, O, Ho, Wo] f16 or f32, Ho = (H + 2·PAD − KH) / STRIDE + 1 (as PyTorch).
//
// Same tiling as matmul.wgsl: a 64-pixel × 64-channel output tile per workgroup of 16×16 threads,
// 4×4 outputs per thread in registers, k in steps of 32 staged through workgroup memory (k-major,
// vec4 reads in the inner loop). The im2col tile is gathered on the fly (zero padding at the
// borders); consecutive threads read consecutive pixels. f32 accumulation; with HALF_MATH (f16
// path and f16 x) tiles hold f16 and products are summed in f16 over 4 k before the f32
// accumulators.
//
// Defs: X_HALF, Y_HALF, HALF_MATH: bool; alias MT = f16 | f32; KH, KW, STRIDE, PAD: integers.
// Bindings (group 0): 0 x: array<u32> (read), 1 w: array<u32> (f16 pairs, read), 2 bias:
//   array<u32> (f16 pairs, read; a dummy without bias), 3 y: array<atomic<u32>> (read_write),
//   4 params: uniform Params. x / y may be windows of bigger tensors (channel blocks, for tensors
//   over the binding limit): the kernel then sees C = this block's input channels, weights from
//   column k0w, and with ACCUMULATE adds into y (the partial sums of earlier channel blocks).
// Dispatch: [pixel tiles (≤ 65,535, offset by p_tile0), ceil(O_block / 64), batch] workgroups of 256.

struct Params {
    c: u32,
    h_in: u32,
    w_in: u32,
    o: u32,
    ho: u32,
    wo: u32,
    k_total: u32,
    k0w: u32,
    o0: u32,
    x_off: u32,
    y_off: u32,
    flags: u32,
    x_bs: u32,
    y_bs: u32,
    p_tile0: u32,
    _p: u32,
}

const HAS_BIAS = 1u;
const ACCUMULATE = 2u;

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> p: Params;

const BK = 32u;

// Transposed tiles: As[k * 16 + pixel / 4][pixel % 4], Bs[k * 16 + o / 4][o % 4].
var<workgroup> As: array<vec4<MT>, 512>;
var<workgroup> Bs: array<vec4<MT>, 512>;

fn half_of(word: u32, e: u32) -> f32 {
    let v = unpack2x16float(word);
    return select(v.x, v.y, (e & 1u) == 1u);
}

fn x_at(e: u32) -> f32 {
    if (X_HALF) {
        return half_of(x[e >> 1u], e);
    }
    return bitcast<f32>(x[e]);
}

fn y_at(e: u32) -> f32 {
    if (Y_HALF) {
        return half_of(atomicLoad(&y[e >> 1u]), e);
    }
    return bitcast<f32>(atomicLoad(&y[e]));
}

// Replace one half of word wi, leaving the other (owned by another thread) intact.
fn store_half(wi: u32, hi: bool, v: f32) {
    let h = pack2x16float(vec2<f32>(v, 0.0)) & 0xffffu;
    var old = atomicLoad(&y[wi]);
    loop {
        let nw = select((old & 0xffff0000u) | h, (old & 0xffffu) | (h << 16u), hi);
        let r = atomicCompareExchangeWeak(&y[wi], old, nw);
        if (r.exchanged) {
            break;
        }
        old = r.old_value;
    }
}

// Write `cnt` (1..4) consecutive outputs v[0..cnt] at element e0 of y.
fn write_run(e0: u32, v: vec4<f32>, cnt: u32) {
    if (!Y_HALF) {
        for (var j = 0u; j < cnt; j++) {
            atomicStore(&y[e0 + j], bitcast<u32>(v[j]));
        }
        return;
    }
    var j = 0u;
    loop {
        if (j >= cnt) {
            break;
        }
        let e = e0 + j;
        if ((e & 1u) == 0u && j + 1u < cnt) {
            atomicStore(&y[e >> 1u], pack2x16float(vec2<f32>(v[j], v[j + 1u])));
            j += 2u;
        } else {
            store_half(e >> 1u, (e & 1u) == 1u, v[j]);
            j += 1u;
        }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let np = p.ho * p.wo;
    let p0 = (p.p_tile0 + wid.x) * 64u;
    let o_t0 = wid.y * 64u;
    let xb = p.x_off + wid.z * p.x_bs;
    let kk_n = p.c * u32(KH * KW);
    let tx = t & 15u;
    let ty = t >> 4u;

    // im2col loader: one pixel, 8 consecutive k.
    let pl = t & 63u;
    let kr = (t >> 6u) * 8u;
    let gp = p0 + pl;
    let pix_ok = gp < np;
    let oy = gp / p.wo;
    let ox = gp % p.wo;
    let iy0 = i32(oy * u32(STRIDE)) - i32(PAD);
    let ix0 = i32(ox * u32(STRIDE)) - i32(PAD);
    let hw = p.h_in * p.w_in;
    // weight loader: one output channel, 8 consecutive k.
    let ol = t >> 2u;
    let kc = (t & 3u) * 8u;
    let go_l = o_t0 + ol;
    let wrow = (p.o0 + go_l) * p.k_total + p.k0w;

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < kk_n; k0 += BK) {
        for (var j = 0u; j < 8u; j++) {
            let k = k0 + kr + j;
            var v = 0.0;
            if (pix_ok && k < kk_n) {
                let c = k / u32(KH * KW);
                let r = k % u32(KH * KW);
                let iy = iy0 + i32(r / u32(KW));
                let ix = ix0 + i32(r % u32(KW));
                if (iy >= 0 && iy < i32(p.h_in) && ix >= 0 && ix < i32(p.w_in)) {
                    v = x_at(xb + c * hw + u32(iy) * p.w_in + u32(ix));
                }
            }
            As[(kr + j) * 16u + (pl >> 2u)][pl & 3u] = MT(v);
        }
        for (var j = 0u; j < 8u; j++) {
            let k = k0 + kc + j;
            var v = 0.0;
            if (go_l < p.o && k < kk_n) {
                let e = wrow + k;
                v = half_of(w[e >> 1u], e);
            }
            Bs[(kc + j) * 16u + (ol >> 2u)][ol & 3u] = MT(v);
        }
        workgroupBarrier();
        for (var kq = 0u; kq < BK; kq += 4u) {
            if (HALF_MATH) {
                var ph: array<vec4<MT>, 4>;
                for (var kk = kq; kk < kq + 4u; kk++) {
                    let av = As[kk * 16u + tx];
                    let bv = Bs[kk * 16u + ty];
                    for (var i = 0u; i < 4u; i++) {
                        ph[i] = fma(vec4<MT>(bv[i]), av, ph[i]);
                    }
                }
                for (var i = 0u; i < 4u; i++) {
                    acc[i] += vec4<f32>(ph[i]);
                }
            } else {
                for (var kk = kq; kk < kq + 4u; kk++) {
                    let av = vec4<f32>(As[kk * 16u + tx]);
                    let bv = vec4<f32>(Bs[kk * 16u + ty]);
                    for (var i = 0u; i < 4u; i++) {
                        acc[i] = fma(vec4<f32>(bv[i]), av, acc[i]);
                    }
                }
            }
        }
        workgroupBarrier();
    }

    let gp0 = p0 + tx * 4u;
    if (gp0 >= np) {
        return;
    }
    let cnt = min(4u, np - gp0);
    let yb = p.y_off + wid.z * p.y_bs;
    for (var i = 0u; i < 4u; i++) {
        let go = o_t0 + ty * 4u + i;
        if (go >= p.o) {
            break;
        }
        var v = acc[i];
        if ((p.flags & HAS_BIAS) != 0u) {
            let bo = p.o0 + go;
            v += vec4<f32>(half_of(bias[bo >> 1u], bo));
        }
        let e0 = yb + go * np + gp0;
        if ((p.flags & ACCUMULATE) != 0u) {
            for (var j = 0u; j < cnt; j++) {
                v[j] += y_at(e0 + j);
            }
        }
        write_run(e0, v, cnt);
    }
}
