// The shared-memory and register tiled tropical product c[i, j] = (+)_k a[i, k] (x) b[k, j] of one block
// tile, written once for every kernel built on it: tropic_matmul_tiled (matmul.cu; a and b matrices)
// and tropic_conv2d_tiled (conv.cu; a the implicit unfold of the image, b the transposed weights).
// The kernels differ only in their operand policies (how an element of a or b is found, or is the
// tropical zero) and their output policy (where c[i, j] and its winner go); the staging, the fast and
// slow steps and the winner's recovery below are the same code for both.
//
// A block of TM x TN threads computes a BM x BN = TM*RM x TN*RN tile of c, each thread an RM x RN block
// of adjacent outputs (rows ty*RM.., columns tx*RN..), so that its operands are contiguous in shared
// memory and read as 16-byte vectors. k goes in steps of BK: the step's columns of a (transposed:
// sa[kk][ii]) and rows of b are staged in shared memory, padded with the tropical zero beyond the
// matrix edges (a zero candidate never wins, so the padding changes nothing and every step runs all
// BK values of k).
//
// A step with no NaN operand (a block-wide vote) takes the fast path, an add and a max per pair:
// each output keeps only the step's best sum m (max.f32 / min.f32, no index), and after the step
//     if m is strictly better than the output's best: best = m, index = "the step at k0".
// Why this is what the one-thread-per-output kernels compute. The sequential rule ends with the FIRST
// k whose sum is the overall best. In a step, strict compares against the best so far change the
// winner iff some sum of the step is strictly better, that is iff m is; the rule then ends the step on
// the first k of the step whose sum equals m (earlier sums are smaller, later equal ones are ties). A
// step whose m is not strictly better changes nothing. So the steps keep the sequential winner's step,
// and best = m compares exactly as that candidate's own sum would (equal numbers; only the sign of a
// zero may differ, and -0 == +0 in every compare). A -inf + inf sum is NaN: better_of ignores it and
// m starts at the tropical zero, so it never wins (nor does the padding).
// The k inside the winning step is found once, at the end: that step's sums are recomputed in
// increasing k through the same operand policies, the first one equal to the best is the winner, and
// its own sum (not m: -0.0 vs +0.0) is the output, bit for bit the sequential one. (Rescanning after
// every step that beats the best instead would diverge within a warp whenever any of its 32 outputs
// sets a record: on random data a third to a half of the steps of a 4096-long k, roughly doubling the
// work.)
// A step with a NaN operand takes the slow path: Best<T>'s per-pair rule with the exact k. An output
// whose winner is a NaN holds NaN, which no strict compare beats, so both paths leave it as it is.
// index: k >= 0 exact; -1 no winner (all candidates the zero); <= -2 the step at k0 = -2 - index.
#pragma once
#include "common.cuh"

#define TROPIC_TILE_TM 16  // threads along the rows of the block tile
#define TROPIC_TILE_TN 16  // threads along its columns
#define TROPIC_TILE_RM 8   // rows of c per thread
#define TROPIC_TILE_RN 4   // columns of c per thread
#define TROPIC_TILE_PAD 4  // sa's row padding (keeps rows 16-byte aligned; see the staging map)

namespace tropic {

// k values per step: 32 for the float compute type (25 KiB of shared memory), 16 for double (the
// static shared memory limit is 48 KiB).
template <typename C> struct TileDepth {
    enum { BK = 32 };
};
template <> struct TileDepth<double> {
    enum { BK = 16 };
};

// The block tile's sizes and this thread's place in it and in the staging maps, for compute type C.
// Staging map of a: each warp stores 8 consecutive k of 4 consecutive rows, so that its reads of a
// row-major a are 32-byte segments and its transposed stores hit 32 distinct banks (float: a row of
// sa is 4 banks mod 32 further on); this thread stages rows a_ii + n * A_STEP (n < A_LOADS) of the
// step's column a_kk. b: each warp a run of 32 columns of one row; this thread stages rows
// b_kk + n * B_STEP (n < B_LOADS) of the tile's column b_jj.
template <typename C> struct TileMap {
    enum {
        BK = TileDepth<C>::BK,
        RM = TROPIC_TILE_RM,
        RN = TROPIC_TILE_RN,
        BM = TROPIC_TILE_TM * TROPIC_TILE_RM,
        BN = TROPIC_TILE_TN * TROPIC_TILE_RN,
        LDA = BM + TROPIC_TILE_PAD,
        THREADS = TROPIC_TILE_TM * TROPIC_TILE_TN,
        A_STEP = THREADS / BK,
        B_STEP = THREADS / BN,
        A_LOADS = BM * BK / THREADS,
        B_LOADS = BN * BK / THREADS
    };
    static_assert(BK % 8 == 0 && THREADS % (4 * BK) == 0 && THREADS % BN == 0, "staging map");
    static_assert((BM * BK) % THREADS == 0 && (BN * BK) % THREADS == 0, "staging map");
    int tx, ty, a_kk, a_ii, b_jj, b_kk;
    __device__ __forceinline__ explicit TileMap(int t)
        : tx(t % TROPIC_TILE_TN), ty(t / TROPIC_TILE_TN), a_kk(t % 8 + 8 * ((t / 32) % (BK / 8))),
          a_ii((t / 8) % 4 + 4 * (t / (4 * BK))), b_jj(t % BN), b_kk(t / BN) {}
};

// The fast path of one step for this thread's RM x RN outputs (no NaN operand in sa, sb).
template <typename T, bool MAX, int BK, int LDA, int LDB>
__device__ __forceinline__ void tile_fast_step(const typename Traits<T>::C (&sa)[BK][LDA],
                                               const typename Traits<T>::C (&sb)[BK][LDB], int ty, int tx,
                                               typename Traits<T>::C (&value)[TROPIC_TILE_RM][TROPIC_TILE_RN],
                                               int (&index)[TROPIC_TILE_RM][TROPIC_TILE_RN], int step_code) {
    typedef typename Traits<T>::C C;
    C m[TROPIC_TILE_RM][TROPIC_TILE_RN];
#pragma unroll
    for (int r = 0; r < TROPIC_TILE_RM; ++r)
#pragma unroll
        for (int s = 0; s < TROPIC_TILE_RN; ++s) m[r][s] = MAX ? -infinity<C>() : infinity<C>();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
        C ra[TROPIC_TILE_RM], rb[TROPIC_TILE_RN];
#pragma unroll
        for (int r = 0; r < TROPIC_TILE_RM; ++r) ra[r] = sa[kk][ty * TROPIC_TILE_RM + r];
#pragma unroll
        for (int s = 0; s < TROPIC_TILE_RN; ++s) rb[s] = sb[kk][tx * TROPIC_TILE_RN + s];
#pragma unroll
        for (int r = 0; r < TROPIC_TILE_RM; ++r)
#pragma unroll
            for (int s = 0; s < TROPIC_TILE_RN; ++s) {
                const C v = Traits<T>::round(exact_add(ra[r], rb[s]));
                m[r][s] = better_of<MAX>(m[r][s], v);
            }
    }
#pragma unroll
    for (int r = 0; r < TROPIC_TILE_RM; ++r)
#pragma unroll
        for (int s = 0; s < TROPIC_TILE_RN; ++s)
            if (better(MAX, m[r][s], value[r][s])) {
                value[r][s] = m[r][s];
                index[r][s] = step_code;
            }
}

// Operand policies. An A policy gives the block's rows i0.. of a (M x K); a B policy its columns j0..
// of b (K x N); both the tropical zero outside the matrix:
//   A::Step s = a.step(k0);  s.at(n): a[i0 + map.a_ii + n * A_STEP, k0 + map.a_kk]  (the staging;
//   B::Step s = b.step(k0);  s.at(n): b[k0 + map.b_kk + n * B_STEP, j0 + map.b_jj]   n = 0, 1, ..., in
//                            order, s.advance() after each: a pointer walks instead of n * stride)
//   a.cursor(i, k0) / b.cursor(j, k0): a[i, k] / b[k, j] by .value(), from k = k0 on by .next()
//                                       (the winner's recovery; i < M, j < N, k < K only).
// An output policy writes c[i, j] and its winner: out.write(i, j, value, k) (i < M, j < N).

// a: a row-major M x K matrix (the block's rows from i0).
template <typename T> struct MatrixRows {
    typedef typename Traits<T>::C C;
    typedef TileMap<C> Map;
    const T* a;
    int K, rows, kk;  // this thread's row n is in a iff n * A_STEP < rows
    long long at, stride;
    C zero;
    __device__ __forceinline__ MatrixRows(const T* a_, int M, int K_, int i0, const Map& map, C zero_)
        : a(a_), K(K_), rows(M - i0 - map.a_ii), kk(map.a_kk), at((long long)(i0 + map.a_ii) * K_ + map.a_kk),
          stride((long long)Map::A_STEP * K_), zero(zero_) {}
    struct Step {
        const T* src;
        long long stride;
        int rows;
        bool in;
        C zero;
        __device__ __forceinline__ C at(int n) const {
            return (in && n * Map::A_STEP < rows) ? Traits<T>::load(*src) : zero;
        }
        __device__ __forceinline__ void advance() { src += stride; }
    };
    __device__ __forceinline__ Step step(int k0) const { return Step{a + at + k0, stride, rows, k0 + kk < K, zero}; }
    struct Cursor {
        const T* p;
        __device__ __forceinline__ C value() const { return Traits<T>::load(*p); }
        __device__ __forceinline__ void next() { ++p; }
    };
    __device__ __forceinline__ Cursor cursor(int i, int k0) const { return Cursor{a + (long long)i * K + k0}; }
};

// b: a row-major K x N matrix (the block's columns from j0).
template <typename T> struct MatrixCols {
    typedef typename Traits<T>::C C;
    typedef TileMap<C> Map;
    const T* b;
    int K, N, kk;
    bool in;  // this thread's column is in b
    long long at, stride;
    C zero;
    __device__ __forceinline__ MatrixCols(const T* b_, int K_, int N_, int j0, const Map& map, C zero_)
        : b(b_), K(K_), N(N_), kk(map.b_kk), in(j0 + map.b_jj < N_), at((long long)map.b_kk * N_ + j0 + map.b_jj),
          stride((long long)Map::B_STEP * N_), zero(zero_) {}
    struct Step {
        const T* src;
        long long stride;
        int rows;  // row n is in b iff n * B_STEP < rows
        bool in;
        C zero;
        __device__ __forceinline__ C at(int n) const {
            return (in && n * Map::B_STEP < rows) ? Traits<T>::load(*src) : zero;
        }
        __device__ __forceinline__ void advance() { src += stride; }
    };
    __device__ __forceinline__ Step step(int k0) const {
        return Step{b + at + (long long)k0 * N, stride, K - k0 - kk, in, zero};
    }
    struct Cursor {
        const T* p;
        int N;
        __device__ __forceinline__ C value() const { return Traits<T>::load(*p); }
        __device__ __forceinline__ void next() { p += N; }
    };
    __device__ __forceinline__ Cursor cursor(int j, int k0) const {
        return Cursor{b + (long long)k0 * N + j, N};
    }
};

// The block tile (i0, j0) of the product of a (M x K) and b (K x N) through the policies (see the
// comment at the top). Every thread of the block calls it (it holds barriers).
template <typename T, typename A, typename B, typename Out>
__device__ __forceinline__ void tiled_product(const TileMap<typename Traits<T>::C>& map, const A& a, const B& b,
                                              const Out& out, int M, int K, int N, int i0, int j0, bool max_) {
    typedef typename Traits<T>::C C;
    typedef TileMap<C> Map;
    const int BK = Map::BK, RM = Map::RM, RN = Map::RN;
    alignas(16) __shared__ C sa[BK][Map::LDA];
    alignas(16) __shared__ C sb[BK][Map::BN];
    const C zero = max_ ? -infinity<C>() : infinity<C>();
    C value[RM][RN];
    int index[RM][RN];
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
        for (int s = 0; s < RN; ++s) {
            value[r][s] = zero;
            index[r][s] = -1;
        }
    for (int k0 = 0; k0 < K; k0 += BK) {
        int nan_seen = 0;
        {
            typename A::Step step = a.step(k0);
#pragma unroll
            for (int n = 0; n < Map::A_LOADS; ++n, step.advance()) {
                const C x = step.at(n);
                nan_seen |= isnan(x) ? 1 : 0;
                sa[map.a_kk][map.a_ii + n * Map::A_STEP] = x;
            }
        }
        {
            typename B::Step step = b.step(k0);
#pragma unroll
            for (int n = 0; n < Map::B_LOADS; ++n, step.advance()) {
                const C w = step.at(n);
                nan_seen |= isnan(w) ? 1 : 0;
                sb[map.b_kk + n * Map::B_STEP][map.b_jj] = w;
            }
        }
        const bool tile_has_nan = __syncthreads_or(nan_seen) != 0;
        if (!tile_has_nan) {
            if (max_)
                tile_fast_step<T, true>(sa, sb, map.ty, map.tx, value, index, -2 - k0);
            else
                tile_fast_step<T, false>(sa, sb, map.ty, map.tx, value, index, -2 - k0);
        } else {
            for (int kk = 0; kk < BK; ++kk) {
#pragma unroll
                for (int r = 0; r < RM; ++r)
#pragma unroll
                    for (int s = 0; s < RN; ++s) {
                        const C x = sa[kk][map.ty * RM + r], w = sb[kk][map.tx * RN + s];
                        if (isnan(value[r][s])) continue;  // decided by an earlier NaN
                        if (isnan(x) || isnan(w)) {
                            value[r][s] = exact_add(x, w);
                            index[r][s] = k0 + kk;
                            continue;
                        }
                        const C v = Traits<T>::round(exact_add(x, w));
                        // NaN v (-inf + inf) compares false both ways: never wins.
                        if (better(max_, v, value[r][s])) {
                            value[r][s] = v;
                            index[r][s] = k0 + kk;
                        }
                    }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
        for (int s = 0; s < RN; ++s) {
            const int i = i0 + map.ty * RM + r, j = j0 + map.tx * RN + s;
            if (i < M && j < N) {
                C v = value[r][s];
                int k = index[r][s];
                if (k <= -2) {
                    // The winner is the first k of the step whose sum equals the best: no sum of the
                    // step is strictly better than the step's best, so "not worse" is "equal".
                    const int k0 = -2 - k, kend = min(k0 + BK, K);
                    typename A::Cursor x = a.cursor(i, k0);
                    typename B::Cursor w = b.cursor(j, k0);
                    for (k = k0; k < kend; ++k, x.next(), w.next()) {
                        const C sum = Traits<T>::round(exact_add(x.value(), w.value()));
                        if (!isnan(sum) && !better(max_, v, sum)) {
                            v = sum;
                            break;
                        }
                    }
                }
                out.write(i, j, v, k);
            }
        }
}

}  // namespace tropic
