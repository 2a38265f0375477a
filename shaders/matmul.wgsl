// matmul: y = x·Wᵀ + b (PyTorch nn.Linear), x [M, K] f16 or f32, W [N, K] f16, b [N] f16,
// y [M, N] f16 or f32; f32 accumulation on both compute paths.
//
// `tiled`: a 64×64 output tile per workgroup of 16×16 threads, 4×4 outputs per thread in
// registers, K in steps of 32 staged through workgroup memory (stored transposed, k-major, so the
// inner loop reads one vec4 of x rows and one vec4 of W rows per k). With VEC the global loads
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
// Dispatch: tiled [ceil(N/64), ceil(M/64), 1] workgroups of 256; naive [ceil(N/64), M, 1] of 64.
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

// 8 consecutive elements of row `row` from column `col` (col % 8 == 0), zero past the edges.
fn load8_x(row: u32, col: u32) -> array<f32, 8> {
    var r: array<f32, 8>;
    if (row >= p.m || col >= p.k) {
        return r;
    }
    let e = p.x_off + row * p.k + col;
    if (VEC) {
        if (X_HALF) {
            let q = vec4<u32>(x[e >> 3u]);
            for (var i = 0u; i < 4u; i++) {
                let h = unpack2x16float(q[i]);
                r[2u * i] = h.x;
                r[2u * i + 1u] = h.y;
            }
        } else {
            let q0 = bitcast<vec4<f32>>(vec4<u32>(x[e >> 2u]));
            let q1 = bitcast<vec4<f32>>(vec4<u32>(x[(e >> 2u) + 1u]));
            for (var i = 0u; i < 4u; i++) {
                r[i] = q0[i];
                r[i + 4u] = q1[i];
            }
        }
    } else {
        for (var i = 0u; i < 8u; i++) {
            if (col + i < p.k) {
                r[i] = x_at(e + i);
            }
        }
    }
    return r;
}

fn load8_w(row: u32, col: u32) -> array<f32, 8> {
    var r: array<f32, 8>;
    if (row >= p.n || col >= p.k) {
        return r;
    }
    let e = row * p.k + col;
    if (VEC) {
        let q = vec4<u32>(w[e >> 3u]);
        for (var i = 0u; i < 4u; i++) {
            let h = unpack2x16float(q[i]);
            r[2u * i] = h.x;
            r[2u * i + 1u] = h.y;
        }
    } else {
        for (var i = 0u; i < 8u; i++) {
            if (col + i < p.k) {
                r[i] = w_at(e + i);
            }
        }
    }
    return r;
}

@compute @workgroup_size(256)
fn tiled(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let tx = t & 15u;
    let ty = t >> 4u;
    // Loader role: tile row t / 4, 8 columns from (t % 4) · 8.
    let lr = t >> 2u;
    let lk = (t & 3u) * 8u;

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let a = load8_x(m0 + lr, k0 + lk);
        let b = load8_w(n0 + lr, k0 + lk);
        for (var j = 0u; j < 8u; j++) {
            As[(lk + j) * 16u + (lr >> 2u)][lr & 3u] = MT(a[j]);
            Bs[(lk + j) * 16u + (lr >> 2u)][lr & 3u] = MT(b[j]);
        }
        workgroupBarrier();
        for (var kc = 0u; kc < BK; kc += 4u) {
            if (HALF_MATH) {
                var ph: array<vec4<MT>, 4>;
                for (var kk = kc; kk < kc + 4u; kk++) {
                    let av = As[kk * 16u + ty];
                    let bv = Bs[kk * 16u + tx];
                    for (var i = 0u; i < 4u; i++) {
                        ph[i] = fma(vec4<MT>(av[i]), bv, ph[i]);
                    }
                }
                for (var i = 0u; i < 4u; i++) {
                    acc[i] += vec4<f32>(ph[i]);
                }
            } else {
                for (var kk = kc; kk < kc + 4u; kk++) {
                    let av = vec4<f32>(As[kk * 16u + ty]);
                    let bv = vec4<f32>(Bs[kk * 16u + tx]);
                    for (var i = 0u; i < 4u; i++) {
                        acc[i] = fma(vec4<f32>(av[i]), bv, acc[i]);
                    }
                }
            }
        }
        workgroupBarrier();
    }

    let gn = n0 + tx * 4u;
    if (gn >= p.n) {
        return;
    }
    let cnt = min(4u, p.n - gn);
    var bv = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        for (var j = 0u; j < cnt; j++) {
            bv[j] = bias_at(gn + j);
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let gm = m0 + ty * 4u + i;
        if (gm < p.m) {
            write_run(p.y_off + gm * p.n + gn, acc[i] + bv, cnt);
        }
    }
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
