// matmul: y = x·Wᵀ + b (PyTorch nn.Linear), x [M, K] f16 or f32, W [N, K] f16, b [N] f16,
// y [M, N] f16 or f32; f32 accumulation on both compute paths.
//
// `tiled`: a 64×64 output tile per workgroup of 8×8 threads, 8×8 outputs per thread in
// registers, K in steps of 32 staged through workgroup memory (stored transposed, k-major, so the
// inner loop reads two vec4 of x rows and two vec4 of W rows per k: 64 FMAs per 4 loads). With VEC the global loads
// are vec4<u32> (8 halves or 4 floats; needs K % 8 == 0), otherwise per-element. With HALF_MATH
// (f16 path and f16 x) the tiles hold f16 and products are summed in f16 over 4 k, then added
// into the f32 accumulators; otherwise everything is f32.
// `naive`: one output per thread, the benchmark's baseline (not used by the model).
//
// Defs: X_HALF, Y_HALF, VEC, HALF_MATH: bool; alias XW = vec4<u32> (VEC) | u32; alias MT = f16 | f32.
// Bindings (group 0): 0 x: array<XW> (read), 1 w: array<XW> (read), 2 bias: array<u32> (f16
//   pairs, read; a dummy when has_bias == 0), 3 y: array<atomic<u32>> (write),
//   4 params: uniform Params. x and y may be windows of bigger tensors: x_off / y_off are the
//   element offsets of row 0 inside the bound range (row blocks for tensors over the binding limit).
// Dispatch: tiled [ceil(N/64), ceil(M/64), 1] workgroups of 64; naive [ceil(N/64), M, 1] of 64.
// f16 y: elements are written as whole words where a thread owns both halves, else by
// compare-exchange of one half, so odd N is race-free.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    x_off: u32,
    y_off: u32,
    has_bias: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<XW>;
@group(0) @binding(1) var<storage, read> w: array<XW>;
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> p: Params;

const BM = 64u;
const BN = 64u;
const BK = 32u;

// Transposed tiles: As[k * 16 + m / 4][m % 4], Bs[k * 16 + n / 4][n % 4].
var<workgroup> As: array<vec4<MT>, 512>;
var<workgroup> Bs: array<vec4<MT>, 512>;

// u32 word i of a binding, whichever XW is (vec4<u32>(u32) splats, vec4<u32>(vec4) is identity).
fn x_word(i: u32) -> u32 {
    if (VEC) {
        return vec4<u32>(x[i >> 2u])[i & 3u];
    }
    return vec4<u32>(x[i]).x;
}

fn w_word(i: u32) -> u32 {
    if (VEC) {
        return vec4<u32>(w[i >> 2u])[i & 3u];
    }
    return vec4<u32>(w[i]).x;
}

fn half_of(word: u32, e: u32) -> f32 {
    let v = unpack2x16float(word);
    return select(v.x, v.y, (e & 1u) == 1u);
}

fn x_at(e: u32) -> f32 {
    if (X_HALF) {
        return half_of(x_word(e >> 1u), e);
    }
    return bitcast<f32>(x_word(e));
}

fn w_at(e: u32) -> f32 {
    return half_of(w_word(e >> 1u), e);
}

fn bias_at(n: u32) -> f32 {
    return half_of(bias[n >> 1u], n);
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

// 8 consecutive elements of row `row` from column `col` (col % 8 == 0) as two vec4, zero past
// the edges. Vectors, not arrays, so nothing is spilled to memory.
struct V8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn load8_x(row: u32, col: u32) -> V8 {
    var r = V8(vec4<f32>(0.0), vec4<f32>(0.0));
    if (row >= p.m || col >= p.k) {
        return r;
    }
    let e = p.x_off + row * p.k + col;
    if (VEC) {
        if (X_HALF) {
            let q = vec4<u32>(x[e >> 3u]);
            r.lo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
            r.hi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
        } else {
            r.lo = bitcast<vec4<f32>>(vec4<u32>(x[e >> 2u]));
            r.hi = bitcast<vec4<f32>>(vec4<u32>(x[(e >> 2u) + 1u]));
        }
    } else {
        for (var i = 0u; i < 4u; i++) {
            if (col + i < p.k) {
                r.lo[i] = x_at(e + i);
            }
            if (col + 4u + i < p.k) {
                r.hi[i] = x_at(e + 4u + i);
            }
        }
    }
    return r;
}

fn load8_w(row: u32, col: u32) -> V8 {
    var r = V8(vec4<f32>(0.0), vec4<f32>(0.0));
    if (row >= p.n || col >= p.k) {
        return r;
    }
    let e = row * p.k + col;
    if (VEC) {
        let q = vec4<u32>(w[e >> 3u]);
        r.lo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
        r.hi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    } else {
        for (var i = 0u; i < 4u; i++) {
            if (col + i < p.k) {
                r.lo[i] = w_at(e + i);
            }
            if (col + 4u + i < p.k) {
                r.hi[i] = w_at(e + 4u + i);
            }
        }
    }
    return r;
}

fn bias4(gn: u32) -> vec4<f32> {
    var b = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        for (var j = 0u; j < 4u; j++) {
            if (gn + j < p.n) {
                b[j] = bias_at(gn + j);
            }
        }
    }
    return b;
}

// Outputs (gm, gn .. gn + 8) of the tiled kernel, clipped to the matrix.
fn out_row(gm: u32, gn: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (gm >= p.m) {
        return;
    }
    if (gn < p.n) {
        write_run(p.y_off + gm * p.n + gn, v0, min(4u, p.n - gn));
    }
    if (gn + 4u < p.n) {
        write_run(p.y_off + gm * p.n + gn + 4u, v1, min(4u, p.n - gn - 4u));
    }
}

@compute @workgroup_size(64)
fn tiled(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    // This thread's outputs: rows ty·8 .. +8, columns tx·8 .. +8.
    let tx = t & 7u;
    let ty = t >> 3u;
    // Loader role: rows q·16 + t / 4 (q = 0..3), 8 columns from (t % 4) · 8: four neighbouring
    // threads read 64 contiguous bytes of a row.
    let lr = t >> 2u;
    let lk = (t & 3u) * 8u;

    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var q = 0u; q < 4u; q++) {
            let r = q * 16u + lr;
            let a = load8_x(m0 + r, k0 + lk);
            let b = load8_w(n0 + r, k0 + lk);
            for (var j = 0u; j < 4u; j++) {
                As[(lk + j) * 16u + (r >> 2u)][r & 3u] = MT(a.lo[j]);
                As[(lk + 4u + j) * 16u + (r >> 2u)][r & 3u] = MT(a.hi[j]);
                Bs[(lk + j) * 16u + (r >> 2u)][r & 3u] = MT(b.lo[j]);
                Bs[(lk + 4u + j) * 16u + (r >> 2u)][r & 3u] = MT(b.hi[j]);
            }
        }
        workgroupBarrier();
        for (var kc = 0u; kc < BK; kc += 4u) {
            if (HALF_MATH) {
                // Zeroed explicitly: a loop-body declaration's implicit zero value is not
                // re-applied each iteration by every WGSL compiler (seen on Chrome/SwiftShader).
                var ph: array<vec4<MT>, 16>;
                for (var z = 0u; z < 16u; z++) {
                    ph[z] = vec4<MT>(0.0);
                }
                for (var kk = kc; kk < kc + 4u; kk++) {
                    let a0 = As[kk * 16u + ty * 2u];
                    let a1 = As[kk * 16u + ty * 2u + 1u];
                    let b0 = Bs[kk * 16u + tx * 2u];
                    let b1 = Bs[kk * 16u + tx * 2u + 1u];
                    ph[0] = fma(vec4<MT>(a0.x), b0, ph[0]);
                    ph[1] = fma(vec4<MT>(a0.x), b1, ph[1]);
                    ph[8] = fma(vec4<MT>(a1.x), b0, ph[8]);
                    ph[9] = fma(vec4<MT>(a1.x), b1, ph[9]);
                    ph[2] = fma(vec4<MT>(a0.y), b0, ph[2]);
                    ph[3] = fma(vec4<MT>(a0.y), b1, ph[3]);
                    ph[10] = fma(vec4<MT>(a1.y), b0, ph[10]);
                    ph[11] = fma(vec4<MT>(a1.y), b1, ph[11]);
                    ph[4] = fma(vec4<MT>(a0.z), b0, ph[4]);
                    ph[5] = fma(vec4<MT>(a0.z), b1, ph[5]);
                    ph[12] = fma(vec4<MT>(a1.z), b0, ph[12]);
                    ph[13] = fma(vec4<MT>(a1.z), b1, ph[13]);
                    ph[6] = fma(vec4<MT>(a0.w), b0, ph[6]);
                    ph[7] = fma(vec4<MT>(a0.w), b1, ph[7]);
                    ph[14] = fma(vec4<MT>(a1.w), b0, ph[14]);
                    ph[15] = fma(vec4<MT>(a1.w), b1, ph[15]);
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
                for (var kk = kc; kk < kc + 4u; kk++) {
                    let a0 = vec4<f32>(As[kk * 16u + ty * 2u]);
                    let a1 = vec4<f32>(As[kk * 16u + ty * 2u + 1u]);
                    let b0 = vec4<f32>(Bs[kk * 16u + tx * 2u]);
                    let b1 = vec4<f32>(Bs[kk * 16u + tx * 2u + 1u]);
                    acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
                    acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
                    acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]);
                    acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
                    acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]);
                    acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
                    acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]);
                    acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
                    acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]);
                    acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
                    acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]);
                    acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
                    acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]);
                    acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
                    acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]);
                    acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
                }
            }
        }
        workgroupBarrier();
    }

    // Constant indices only, so the accumulators can stay in registers.
    let gn = n0 + tx * 8u;
    let bv0 = bias4(gn);
    let bv1 = bias4(gn + 4u);
    out_row(m0 + ty * 8u + 0u, gn, acc[0] + bv0, acc[1] + bv1);
    out_row(m0 + ty * 8u + 1u, gn, acc[2] + bv0, acc[3] + bv1);
    out_row(m0 + ty * 8u + 2u, gn, acc[4] + bv0, acc[5] + bv1);
    out_row(m0 + ty * 8u + 3u, gn, acc[6] + bv0, acc[7] + bv1);
    out_row(m0 + ty * 8u + 4u, gn, acc[8] + bv0, acc[9] + bv1);
    out_row(m0 + ty * 8u + 5u, gn, acc[10] + bv0, acc[11] + bv1);
    out_row(m0 + ty * 8u + 6u, gn, acc[12] + bv0, acc[13] + bv1);
    out_row(m0 + ty * 8u + 7u, gn, acc[14] + bv0, acc[15] + bv1);
}

@compute @workgroup_size(64)
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    let m = gid.y;
    if (n >= p.n || m >= p.m) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < p.k; k++) {
        s = fma(x_at(p.x_off + m * p.k + k), w_at(n * p.k + k), s);
    }
    if (p.has_bias != 0u) {
        s += bias_at(n);
    }
    write_run(p.y_off + m * p.n + n, vec4<f32>(s), 1u);
}
