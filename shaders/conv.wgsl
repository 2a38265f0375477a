// conv: 2-D convolution, NCHW, as an implicit GEMM: y[b, o, p] = Σ_k W[o, k]·im2col(x)[b, k, p] + bias[o]
// with p = output pixel, k = (c, ky, kx). x [B, C, H, W] f16 or f32, W [O, C, KH, KW] f16,
// bias [O] f16, y [B, O, Ho, Wo] f16 or f32, Ho = (H + 2·PAD − KH) / STRIDE + 1 (as PyTorch).
//
// Same tiling as matmul.wgsl: a 64-pixel × 64-channel output tile per workgroup of 8×8 threads,
// 8×8 outputs per thread in registers, k in steps of 32 staged through workgroup memory (k-major,
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
// Dispatch: [pixel tiles (≤ 65,535, offset by p_tile0), ceil(O_block / 64), batch] workgroups of 64.

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

// Outputs (channel go, pixels gp0 .. gp0 + 8) of one image, clipped to the block.
fn out_channel(yb: u32, go: u32, gp0: u32, v0: vec4<f32>, v1: vec4<f32>) {
    let np = p.ho * p.wo;
    if (go >= p.o) {
        return;
    }
    var bv = 0.0;
    if ((p.flags & HAS_BIAS) != 0u) {
        let bo = p.o0 + go;
        bv = half_of(bias[bo >> 1u], bo);
    }
    for (var h = 0u; h < 2u; h++) {
        let gp = gp0 + h * 4u;
        if (gp >= np) {
            break;
        }
        let cnt = min(4u, np - gp);
        var v = select(v0, v1, h == 1u) + vec4<f32>(bv);
        let e0 = yb + go * np + gp;
        if ((p.flags & ACCUMULATE) != 0u) {
            for (var j = 0u; j < cnt; j++) {
                v[j] += y_at(e0 + j);
            }
        }
        write_run(e0, v, cnt);
    }
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let np = p.ho * p.wo;
    let p0 = (p.p_tile0 + wid.x) * 64u;
    let o_t0 = wid.y * 64u;
    let xb = p.x_off + wid.z * p.x_bs;
    let kk_n = p.c * u32(KH * KW);
    // This thread's outputs: channels ty·8 .. +8, pixels tx·8 .. +8.
    let tx = t & 7u;
    let ty = t >> 3u;

    // im2col loader: pixel t of the tile (neighbouring threads read neighbouring pixels), all
    // 32 k of the step, walking (c, ky, kx) incrementally.
    let gp = p0 + t;
    let pix_ok = gp < np;
    let oy = gp / p.wo;
    let ox = gp % p.wo;
    let iy0 = i32(oy * u32(STRIDE)) - i32(PAD);
    let ix0 = i32(ox * u32(STRIDE)) - i32(PAD);
    let hw = p.h_in * p.w_in;
    // weight loader: channel rows q·16 + t / 4, 8 consecutive k from (t % 4) · 8.
    let lr = t >> 2u;
    let lk = (t & 3u) * 8u;

    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < kk_n; k0 += BK) {
        var c = k0 / u32(KH * KW);
        let r0 = k0 % u32(KH * KW);
        var ky = r0 / u32(KW);
        var kx = r0 % u32(KW);
        for (var j = 0u; j < BK; j++) {
            var v = 0.0;
            let iy = iy0 + i32(ky);
            let ix = ix0 + i32(kx);
            if (pix_ok && k0 + j < kk_n && iy >= 0 && iy < i32(p.h_in) && ix >= 0 && ix < i32(p.w_in)) {
                v = x_at(xb + c * hw + u32(iy) * p.w_in + u32(ix));
            }
            As[j * 16u + (t >> 2u)][t & 3u] = MT(v);
            kx += 1u;
            if (kx == u32(KW)) {
                kx = 0u;
                ky += 1u;
                if (ky == u32(KH)) {
                    ky = 0u;
                    c += 1u;
                }
            }
        }
        for (var q = 0u; q < 4u; q++) {
            let ol = q * 16u + lr;
            let go = o_t0 + ol;
            let wrow = (p.o0 + go) * p.k_total + p.k0w;
            for (var j = 0u; j < 8u; j++) {
                let k = k0 + lk + j;
                var v = 0.0;
                if (go < p.o && k < kk_n) {
                    let e = wrow + k;
                    v = half_of(w[e >> 1u], e);
                }
                Bs[(lk + j) * 16u + (ol >> 2u)][ol & 3u] = MT(v);
            }
        }
        workgroupBarrier();
        for (var kq = 0u; kq < BK; kq += 4u) {
            if (HALF_MATH) {
                // Zeroed explicitly: a loop-body declaration's implicit zero value is not
                // re-applied each iteration by every WGSL compiler (seen on Chrome/SwiftShader).
                var ph: array<vec4<MT>, 16>;
                for (var z = 0u; z < 16u; z++) {
                    ph[z] = vec4<MT>(0.0);
                }
                for (var kk = kq; kk < kq + 4u; kk++) {
                    let a0 = As[kk * 16u + tx * 2u];
                    let a1 = As[kk * 16u + tx * 2u + 1u];
                    let b0 = Bs[kk * 16u + ty * 2u];
                    let b1 = Bs[kk * 16u + ty * 2u + 1u];
                    ph[0] = fma(vec4<MT>(b0.x), a0, ph[0]);
                    ph[1] = fma(vec4<MT>(b0.x), a1, ph[1]);
                    ph[8] = fma(vec4<MT>(b1.x), a0, ph[8]);
                    ph[9] = fma(vec4<MT>(b1.x), a1, ph[9]);
                    ph[2] = fma(vec4<MT>(b0.y), a0, ph[2]);
                    ph[3] = fma(vec4<MT>(b0.y), a1, ph[3]);
                    ph[10] = fma(vec4<MT>(b1.y), a0, ph[10]);
                    ph[11] = fma(vec4<MT>(b1.y), a1, ph[11]);
                    ph[4] = fma(vec4<MT>(b0.z), a0, ph[4]);
                    ph[5] = fma(vec4<MT>(b0.z), a1, ph[5]);
                    ph[12] = fma(vec4<MT>(b1.z), a0, ph[12]);
                    ph[13] = fma(vec4<MT>(b1.z), a1, ph[13]);
                    ph[6] = fma(vec4<MT>(b0.w), a0, ph[6]);
                    ph[7] = fma(vec4<MT>(b0.w), a1, ph[7]);
                    ph[14] = fma(vec4<MT>(b1.w), a0, ph[14]);
                    ph[15] = fma(vec4<MT>(b1.w), a1, ph[15]);
                }
                acc[0] += vec4<f32>(ph[0]);
                acc[1] += vec4<f32>(ph[1]);
                acc[2] += vec4<f32>(ph[2]);
                acc[3] += vec4<f32>(ph[3]);
                acc[4] += vec4<f32>(ph[4]);
                acc[5] += vec4<f32>(ph[5]);
                acc[6] += vec4<f32>(ph[6]);
                acc[7] += vec4<f32>(ph[7]);
                acc[8] += vec4<f32>(ph[8]);
                acc[9] += vec4<f32>(ph[9]);
                acc[10] += vec4<f32>(ph[10]);
                acc[11] += vec4<f32>(ph[11]);
                acc[12] += vec4<f32>(ph[12]);
                acc[13] += vec4<f32>(ph[13]);
                acc[14] += vec4<f32>(ph[14]);
                acc[15] += vec4<f32>(ph[15]);
            } else {
                for (var kk = kq; kk < kq + 4u; kk++) {
                    let a0 = vec4<f32>(As[kk * 16u + tx * 2u]);
                    let a1 = vec4<f32>(As[kk * 16u + tx * 2u + 1u]);
                    let b0 = vec4<f32>(Bs[kk * 16u + ty * 2u]);
                    let b1 = vec4<f32>(Bs[kk * 16u + ty * 2u + 1u]);
                    acc[0] = fma(vec4<f32>(b0.x), a0, acc[0]);
                    acc[1] = fma(vec4<f32>(b0.x), a1, acc[1]);
                    acc[8] = fma(vec4<f32>(b1.x), a0, acc[8]);
                    acc[9] = fma(vec4<f32>(b1.x), a1, acc[9]);
                    acc[2] = fma(vec4<f32>(b0.y), a0, acc[2]);
                    acc[3] = fma(vec4<f32>(b0.y), a1, acc[3]);
                    acc[10] = fma(vec4<f32>(b1.y), a0, acc[10]);
                    acc[11] = fma(vec4<f32>(b1.y), a1, acc[11]);
                    acc[4] = fma(vec4<f32>(b0.z), a0, acc[4]);
                    acc[5] = fma(vec4<f32>(b0.z), a1, acc[5]);
                    acc[12] = fma(vec4<f32>(b1.z), a0, acc[12]);
                    acc[13] = fma(vec4<f32>(b1.z), a1, acc[13]);
                    acc[6] = fma(vec4<f32>(b0.w), a0, acc[6]);
                    acc[7] = fma(vec4<f32>(b0.w), a1, acc[7]);
                    acc[14] = fma(vec4<f32>(b1.w), a0, acc[14]);
                    acc[15] = fma(vec4<f32>(b1.w), a1, acc[15]);
                }
            }
        }
        workgroupBarrier();
    }

    // acc[r·2 + h]: output channel ty·8 + r, pixels tx·8 + h·4 .. +4. Constant indices only, so
    // the accumulators can stay in registers.
    let yb = p.y_off + wid.z * p.y_bs;
    let gp0 = p0 + tx * 8u;
    out_channel(yb, o_t0 + ty * 8u + 0u, gp0, acc[0], acc[1]);
    out_channel(yb, o_t0 + ty * 8u + 1u, gp0, acc[2], acc[3]);
    out_channel(yb, o_t0 + ty * 8u + 2u, gp0, acc[4], acc[5]);
    out_channel(yb, o_t0 + ty * 8u + 3u, gp0, acc[6], acc[7]);
    out_channel(yb, o_t0 + ty * 8u + 4u, gp0, acc[8], acc[9]);
    out_channel(yb, o_t0 + ty * 8u + 5u, gp0, acc[10], acc[11]);
    out_channel(yb, o_t0 + ty * 8u + 6u, gp0, acc[12], acc[13]);
    out_channel(yb, o_t0 + ty * 8u + 7u, gp0, acc[14], acc[15]);
}
