// maxplus_conv2d / minplus_conv2d (tropic/core/conv.py): x (B, Cin, H, W), w (Cout, Cg, kh, kw),
// y[b, o, i, j] = (+)_{c, u, v} x[b, g(o) Cg + c, i sh + u - ph, j sw + v - pw] (x) w[o, c, u, v],
// candidates in increasing (c * kh + u) * kw + v, padding the tropical zero; and the x part of the
// vjp (the w part is tropic_tap_partials in sums.cu).
#include "common.cuh"
#include "tiled.cuh"

using namespace tropic;

template <typename T>
__global__ void tropic_conv2d(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                              int* __restrict__ winner, int B, int C_in, int H, int W, int C_out, int C_group,
                              int kh, int kw, int sh, int sw, int ph, int pw, int groups, int H_out,
                              int W_out, int maximise) {
    typedef typename Traits<T>::C C;
    const long long total = (long long)B * C_out * H_out * W_out;
    const C zero = maximise ? -infinity<C>() : infinity<C>();
    const int per_group = C_out / groups;
    TROPIC_GRID_LOOP(o, total) {
        const int j = (int)(o % W_out);
        const int i = (int)((o / W_out) % H_out);
        const int oc = (int)((o / ((long long)W_out * H_out)) % C_out);
        const long long b = o / ((long long)W_out * H_out * C_out);
        const int first_channel = (oc / per_group) * C_group;
        const T* wo = w + (long long)oc * C_group * kh * kw;
        Best<T> best(maximise != 0);
        for (int c = 0; c < C_group && !best.decided; ++c) {
            const T* xc = x + ((b * C_in + first_channel + c) * H) * (long long)W;
            for (int u = 0; u < kh && !best.decided; ++u) {
                const int r = i * sh + u - ph;
                for (int v = 0; v < kw && !best.decided; ++v) {
                    const int col = j * sw + v - pw;
                    const bool inside = r >= 0 && r < H && col >= 0 && col < W;
                    const C xv = inside ? Traits<T>::load(xc[(long long)r * W + col]) : zero;
                    const int k = (c * kh + u) * kw + v;
                    best.offer(xv, Traits<T>::load(wo[k]), true, k);
                }
            }
        }
        y[o] = Traits<T>::store(best.value);
        winner[o] = best.index;
    }
}

// The tiled kernel: tiled.cuh's block tile (its comment is the correctness argument). The convolution
// of group g is the product of the implicit unfold X_g, rows i = (b, oi, oj) of the output plane
// (M = B H_out W_out), columns k = (c kh + u) kw + v (K = Cg kh kw), entries
// x[b, g Cg + c, oi sh + u - ph, oj sw + v - pw] or the tropical zero outside the image, with W_g^T
// (K x per_group): the same candidates in the same order as tropic_conv2d, so the same winners. The
// host passes the weights transposed, wt (groups, K, per_group) row-major, so that W_g^T is a plain
// matrix for tiled.cuh's MatrixCols. Grid (row tiles of M, column tiles of per_group, groups); int
// offsets throughout (the host checks they fit: layout.conv_tiled_fits).

// Row i of the block tile: where its image's channels of the group start, the corner of its window
// (oi sh - ph, oj sw - pw), and where its outputs start (b C_out H_out W_out + oi W_out + oj).
struct alignas(16) ConvRow {
    int x, top, left, y;
};
// A row past the last one: top this far above the image puts every window row outside (kh <= 2^30), so
// it stages only the zero: no loads, and no NaN of the image that would send its block down the slow
// path (its outputs are never written, so any value would give the same results).
#define TROPIC_CONV_NO_ROW (-(1 << 30))

// a: the unfold X_g, through the block's table of rows (shared memory).
template <typename T> struct UnfoldRows {
    typedef typename Traits<T>::C C;
    typedef TileMap<C> Map;
    const T* x;
    const ConvRow* rows;  // rows[ii]: row i0 + ii
    int i0, K, kh, kw, H, W, a_ii, kk;
    C zero;
    struct Step {
        const T* x;
        const ConvRow* rows;  // this thread's first row
        int H, W, channel, u, v;
        bool in;
        C zero;
        __device__ __forceinline__ C at(int n) const {
            const ConvRow r = rows[n * Map::A_STEP];
            const int row = r.top + u, col = r.left + v;
            if (in && (unsigned)row < (unsigned)H && (unsigned)col < (unsigned)W)
                return Traits<T>::load(x[r.x + channel + row * W + col]);
            return zero;
        }
        __device__ __forceinline__ void advance() {}  // at(n) indexes the row table
    };
    // Column k0 + kk of the step: (c, u, v) once per step, shared by the thread's rows.
    __device__ __forceinline__ Step step(int k0) const {
        const bool in = k0 + kk < K;
        const int k = in ? k0 + kk : 0, c = k / (kh * kw), uv = k - c * (kh * kw), u = uv / kw;
        return Step{x, rows + a_ii, H, W, c * H * W, u, uv - u * kw, in, zero};
    }
    struct Cursor {
        const T* x;
        ConvRow r;
        int H, W, kh, kw, c, u, v;
        C zero;
        __device__ __forceinline__ C value() const {
            const int row = r.top + u, col = r.left + v;
            if ((unsigned)row < (unsigned)H && (unsigned)col < (unsigned)W)
                return Traits<T>::load(x[r.x + (c * H + row) * W + col]);
            return zero;
        }
        __device__ __forceinline__ void next() {
            if (++v == kw) {
                v = 0;
                if (++u == kh) {
                    u = 0;
                    ++c;
                }
            }
        }
    };
    __device__ __forceinline__ Cursor cursor(int i, int k0) const {
        const int c = k0 / (kh * kw), uv = k0 - c * (kh * kw), u = uv / kw;
        return Cursor{x, rows[i - i0], H, W, kh, kw, c, u, uv - u * kw, zero};
    }
};

// y[b, g per_group + j, oi, oj] and its winner for row i = (b, oi, oj), column j of the group.
template <typename T> struct ConvOut {
    T* y;
    int* winner;
    const ConvRow* rows;
    int i0, first_channel, plane;  // g per_group, H_out W_out
    __device__ __forceinline__ void write(int i, int j, typename Traits<T>::C v, int k) const {
        const int o = rows[i - i0].y + (first_channel + j) * plane;
        y[o] = Traits<T>::store(v);
        winner[o] = k;
    }
};

template <typename T>
__global__ void __launch_bounds__(TROPIC_TILE_TM * TROPIC_TILE_TN)
tropic_conv2d_tiled(const T* __restrict__ x, const T* __restrict__ wt, T* __restrict__ y,
                    int* __restrict__ winner, int B, int C_in, int H, int W, int C_out, int C_group, int kh,
                    int kw, int sh, int sw, int ph, int pw, int groups, int H_out, int W_out, int maximise) {
    typedef typename Traits<T>::C C;
    typedef TileMap<C> Map;
    __shared__ ConvRow rows[Map::BM];
    const TileMap<C> map(threadIdx.x);
    const int per_group = C_out / groups, g = blockIdx.z, K = C_group * kh * kw;
    const int plane = H_out * W_out, M = B * plane;
    const int i0 = blockIdx.x * Map::BM, j0 = blockIdx.y * Map::BN;
    for (int t = threadIdx.x; t < Map::BM; t += Map::THREADS) {
        const int i = i0 + t;
        ConvRow r = {0, TROPIC_CONV_NO_ROW, 0, 0};
        if (i < M) {
            const int b = i / plane, s = i - b * plane, oi = s / W_out;
            r.x = (b * C_in + g * C_group) * H * W;
            r.top = oi * sh - ph;
            r.left = (s - oi * W_out) * sw - pw;
            r.y = b * C_out * plane + s;
        }
        rows[t] = r;
    }
    __syncthreads();
    const bool max_ = maximise != 0;
    const C zero = max_ ? -infinity<C>() : infinity<C>();
    const UnfoldRows<T> a{x, rows, i0, K, kh, kw, H, W, map.a_ii, map.a_kk, zero};
    const MatrixCols<T> b(wt + (long long)g * K * per_group, K, per_group, j0, map, zero);
    const ConvOut<T> out{y, winner, rows, i0, g * per_group, plane};
    tiled_product<T>(map, a, b, out, M, K, per_group, i0, j0, max_);
}

// dL/dx[b, ch, r, col] = sum over outputs (o, i, j) of the group of ch, in increasing flat order,
// of g[b, o, i, j] when its winner (c, u, v) reads (ch, r, col).
template <typename T>
__global__ void tropic_conv2d_vjp_x(const T* __restrict__ g, const int* __restrict__ winner,
                                    T* __restrict__ grad_x, int B, int C_in, int H, int W, int C_out,
                                    int C_group, int kh, int kw, int sh, int sw, int ph, int pw, int groups,
                                    int H_out, int W_out) {
    const long long total = (long long)B * C_in * H * W;
    const int per_group = C_out / groups;
    TROPIC_GRID_LOOP(e, total) {
        const int col = (int)(e % W);
        const int r = (int)((e / W) % H);
        const int ch = (int)((e / ((long long)W * H)) % C_in);
        const long long b = e / ((long long)W * H * C_in);
        const int grp = ch / C_group, c = ch % C_group;
        // outputs rows i with u = r + ph - i sh in [0, kh), columns j with v = col + pw - j sw in [0, kw)
        const int ry = r + ph, cx = col + pw;
        const int i_lo = ry - kh + 1 <= 0 ? 0 : (ry - kh + 1 + sh - 1) / sh;
        const int i_hi = min(H_out - 1, ry / sh);
        const int j_lo = cx - kw + 1 <= 0 ? 0 : (cx - kw + 1 + sw - 1) / sw;
        const int j_hi = min(W_out - 1, cx / sw);
        double sum = 0.0;
        for (int oc = grp * per_group; oc < (grp + 1) * per_group; ++oc) {
            const long long plane = (b * C_out + oc) * (long long)H_out * W_out;
            for (int i = i_lo; i <= i_hi; ++i) {
                const int u = ry - i * sh;
                for (int j = j_lo; j <= j_hi; ++j) {
                    const int v = cx - j * sw;
                    const long long at = plane + (long long)i * W_out + j;
                    if (winner[at] == (c * kh + u) * kw + v) sum += exact_to_double(Traits<T>::load(g[at]));
                }
            }
        }
        grad_x[e] = store_sum<T>(sum);
    }
}
