// Grey-level dilation / erosion on the last two axes (tropic/core/morphology.py) and the image part
// of their vjp (the structuring-element part is tropic_tap_partials in sums.cu).
//
// The image is read through the line maps of the two AxisWindows: candidate t = (u, v) of output
// (i, j) reads source row row_line[i + tap_row[t]] and column col_line[j + tap_col[t]], -1 meaning
// the border value `fill`. The taps are the support's entries in increasing flat index u * kw + v.
#include "common.cuh"

using namespace tropic;

template <typename T>
__global__ void tropic_morphology(const T* __restrict__ image, T* __restrict__ out, int* __restrict__ winner,
                                  long long n, int H, int W, const int* __restrict__ row_line,
                                  const int* __restrict__ col_line, const int* __restrict__ tap_row,
                                  const int* __restrict__ tap_col, const int* __restrict__ tap_index,
                                  const T* __restrict__ tap_weight, int taps, int has_weight,
                                  typename Traits<T>::C fill, int maximise) {
    typedef typename Traits<T>::C C;
    const long long total = n * H * W;
    const C border = Traits<T>::round(fill);  // the fill in the image's precision
    TROPIC_GRID_LOOP(o, total) {
        const int j = (int)(o % W);
        const int i = (int)((o / W) % H);
        const T* img = image + (o / ((long long)H * W)) * H * W;
        Best<T> best(maximise != 0);
        for (int t = 0; t < taps && !best.decided; ++t) {
            const int r = row_line[i + tap_row[t]];
            const int c = col_line[j + tap_col[t]];
            const C x = (r < 0 || c < 0) ? border : Traits<T>::load(img[(long long)r * W + c]);
            const C w = has_weight ? Traits<T>::load(tap_weight[t]) : (C)0;
            best.offer(x, w, has_weight != 0, tap_index[t]);
        }
        out[o] = Traits<T>::store(best.value);
        winner[o] = best.index;
    }
}

// dL/dimage[p, r, c] = sum over outputs (i, j), in increasing flat order, of g[p, i, j] when the
// winner (u, v) of (i, j) reads (r, c). The inverse line maps are CSR lists on the host:
// row_ptr[r] .. row_ptr[r + 1] index the pairs (row_out, row_tap) = (i, u) with rows[i, u] = r,
// sorted by (i, u); likewise col_* for (j, v). An output has one winner, so for each i the pairs
// (u, v) of that i are tried against it and at most one matches.
template <typename T>
__global__ void tropic_morphology_vjp_image(const T* __restrict__ g, const int* __restrict__ winner,
                                            T* __restrict__ grad_image, long long n, int H, int W,
                                            const int* __restrict__ row_ptr, const int* __restrict__ row_out,
                                            const int* __restrict__ row_tap, const int* __restrict__ col_ptr,
                                            const int* __restrict__ col_out, const int* __restrict__ col_tap,
                                            int kw) {
    const long long total = n * H * W;
    TROPIC_GRID_LOOP(o, total) {
        const int c = (int)(o % W);
        const int r = (int)((o / W) % H);
        const long long base = (o / ((long long)H * W)) * H * W;
        double sum = 0.0;
        const int p_end = row_ptr[r + 1];
        for (int p = row_ptr[r]; p < p_end;) {
            const int i = row_out[p];
            int p_next = p + 1;
            while (p_next < p_end && row_out[p_next] == i) ++p_next;
            for (int q = col_ptr[c]; q < col_ptr[c + 1]; ++q) {
                const int j = col_out[q];
                const long long at = base + (long long)i * W + j;
                const int t = winner[at];
                if (t < 0) continue;
                for (int pp = p; pp < p_next; ++pp) {
                    if (t == row_tap[pp] * kw + col_tap[q]) sum += exact_to_double(Traits<T>::load(g[at]));
                }
            }
            p = p_next;
        }
        grad_image[o] = store_sum<T>(sum);
    }
}

// Shared-memory tiled forward kernel: the same values and winners as tropic_morphology, bit for bit.
// A block of TX x TY threads computes a TILE x TILE tile of outputs of image blockIdx.z, each thread
// RM outputs of one column (tile rows ty, ty + TY, ...: a warp reads 32 consecutive words of a staged
// row, so no bank conflicts, and the RM reads of a tap are one address plus compile-time offsets).
// The block stages once, in shared memory, the source values its outputs read: line positions
// (i0 + pi, j0 + pj) for pi < TILE + kh - 1, pj < TILE + kw - 1 (the tile plus the window's halo),
// each read through row_line / col_line exactly as tropic_morphology reads it (the border `fill`,
// rounded to the image's precision, where a line says -1); positions past a line's end are read
// only by outputs outside the image and hold the tropical zero. The taps (their offset into the
// staged region and their weight) are staged too, so the tap loop reads shared memory only.
//
// A block with no NaN among its staged values and weights (a block-wide vote) takes the fast path:
// the taps run in steps of STEP; per tap and output an add and a max (the step's best m, no index),
// and after each step
//     if m is strictly better than the output's best: best = m, code = the step's first tap.
// Why this is tropic_morphology's answer (the reasoning of tropic_matmul_tiled in matmul.cu, with
// the taps in place of k). The sequential rule ends on the FIRST tap whose candidate equals the
// overall best. Within a step, strict compares against the best so far change the winner iff some
// candidate of the step is strictly better than it, that is iff m is; the rule then ends the step
// on the step's first candidate equal to m (earlier ones are smaller, later equal ones are ties). A
// step whose m is not strictly better changes nothing. So the steps keep the sequential winner's
// step, and best = m compares in later steps exactly as that candidate would (equal numbers; only
// the sign of a zero may differ, and -0 == +0 in every compare). A -inf + inf sum is NaN, which the
// max ignores, and m starts at the tropical zero, so such a candidate never wins; an output whose
// candidates are all the zero keeps code -1: value the zero, winner -1, as sequentially.
// The tap inside the winning step is found once, at the end: the step's candidates are recomputed
// in increasing tap order, the first one equal to the best is the winner, and its own value (not m:
// -0.0 vs +0.0) is the output. Flat elements: the candidate is the staged value itself, no add.
// A block with a NaN takes the slow path: Best<T>'s per-tap rule, as tropic_morphology.
// The host (layout.morphology_tiled_fits) sends elements larger than KMAX x KMAX to tropic_morphology.
#define TROPIC_MORPH_TX 32    // threads along a tile row (one warp), one output column each
#define TROPIC_MORPH_TY 8     // warps, each a row of threads
#define TROPIC_MORPH_RM 4     // outputs per thread, TY rows apart: the tile is 32 x 32
#define TROPIC_MORPH_KMAX 32  // the largest kh and kw whose halo the staged region holds
#define TROPIC_MORPH_LD 64    // row pitch of the staged region (>= TX + KMAX - 1)
#define TROPIC_MORPH_STEP 8   // taps per step of the fast path

// One staged tap: its candidate for the thread's output r is at (its base) + offset + r * TY * LD,
// the offset in bytes (an address is then one integer add, not an add and a scaling).
template <typename C> struct MorphTap {
    C weight;
    int offset;
};

template <typename C> __device__ __forceinline__ const C* morph_at(const C* base, int byte_offset) {
    return reinterpret_cast<const C*>(reinterpret_cast<const char*>(base) + byte_offset);
}

// The candidate of a staged value x at a tap of weight w: x (+) w rounded to T, or x when flat.
template <typename T, bool WEIGHTED>
__device__ __forceinline__ typename Traits<T>::C morph_candidate(typename Traits<T>::C x,
                                                                 typename Traits<T>::C w) {
    return WEIGHTED ? Traits<T>::round(exact_add(x, w)) : x;
}

// One fast step over taps t0 .. t0 + len - 1 (len == STEP when FULL) for the thread's RM outputs.
template <typename T, bool MAX, bool WEIGHTED, bool FULL>
__device__ __forceinline__ void morph_fast_step(const typename Traits<T>::C* at,
                                                const MorphTap<typename Traits<T>::C>* tap, int t0, int len,
                                                typename Traits<T>::C (&value)[TROPIC_MORPH_RM],
                                                int (&code)[TROPIC_MORPH_RM]) {
    typedef typename Traits<T>::C C;
    C m[TROPIC_MORPH_RM];
#pragma unroll
    for (int r = 0; r < TROPIC_MORPH_RM; ++r) m[r] = MAX ? -infinity<C>() : infinity<C>();
#pragma unroll
    for (int kk = 0; kk < TROPIC_MORPH_STEP; ++kk) {
        if (!FULL && kk >= len) break;
        const MorphTap<C> tp = tap[t0 + kk];
        const C* p = morph_at(at, tp.offset);
#pragma unroll
        for (int r = 0; r < TROPIC_MORPH_RM; ++r)
            m[r] = better_of<MAX>(
                m[r], morph_candidate<T, WEIGHTED>(p[r * TROPIC_MORPH_TY * TROPIC_MORPH_LD], tp.weight));
    }
#pragma unroll
    for (int r = 0; r < TROPIC_MORPH_RM; ++r)
        if (better(MAX, m[r], value[r])) {
            value[r] = m[r];
            code[r] = t0;
        }
}

template <typename T, bool MAX, bool WEIGHTED>
__device__ __forceinline__ void morph_fast(const typename Traits<T>::C* at,
                                           const MorphTap<typename Traits<T>::C>* tap, int taps,
                                           typename Traits<T>::C (&value)[TROPIC_MORPH_RM],
                                           int (&code)[TROPIC_MORPH_RM]) {
    int t0 = 0;
    for (; t0 + TROPIC_MORPH_STEP <= taps; t0 += TROPIC_MORPH_STEP)
        morph_fast_step<T, MAX, WEIGHTED, true>(at, tap, t0, TROPIC_MORPH_STEP, value, code);
    if (t0 < taps) morph_fast_step<T, MAX, WEIGHTED, false>(at, tap, t0, taps - t0, value, code);
}

template <typename T>
__global__ void __launch_bounds__(TROPIC_MORPH_TX * TROPIC_MORPH_TY)
tropic_morphology_tiled(const T* __restrict__ image, T* __restrict__ out, int* __restrict__ winner, int H,
                        int W, const int* __restrict__ row_line, const int* __restrict__ col_line,
                        const int* __restrict__ tap_row, const int* __restrict__ tap_col,
                        const int* __restrict__ tap_index, const T* __restrict__ tap_weight, int taps,
                        int has_weight, int kh, int kw, typename Traits<T>::C fill, int maximise) {
    typedef typename Traits<T>::C C;
    const int TX = TROPIC_MORPH_TX, TY = TROPIC_MORPH_TY, RM = TROPIC_MORPH_RM, LD = TROPIC_MORPH_LD;
    const int TILE = TY * RM, KMAX = TROPIC_MORPH_KMAX, THREADS = TX * TY;
    static_assert(TILE == TX && LD >= TX + KMAX - 1, "a square tile whose halo rows fit the pitch");
    alignas(16) __shared__ C s_img[(TILE + KMAX - 1) * LD];
    __shared__ MorphTap<C> s_tap[KMAX * KMAX];
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    const int i0 = blockIdx.y * TILE, j0 = blockIdx.x * TX;
    const long long plane = (long long)blockIdx.z * H * W;
    const T* img = image + plane;
    const bool max_ = maximise != 0, weighted = has_weight != 0;
    const C zero = max_ ? -infinity<C>() : infinity<C>();
    const C border = Traits<T>::round(fill);  // the fill in the image's precision
    const int rows = TILE + kh - 1, cols = TX + kw - 1;
    int nan_seen = 0;
    // This lane stages columns tx and tx + TX of each staged row (cols <= 2 * TX); -2: past the
    // line's end (or the halo's), the tropical zero.
    int c_src[2];
#pragma unroll
    for (int q = 0; q < 2; ++q) {
        const int pj = tx + q * TX;
        c_src[q] = (pj < cols && j0 + pj < W + kw - 1) ? col_line[j0 + pj] : -2;
    }
    for (int pi = ty; pi < rows; pi += TY) {
        const int r = i0 + pi < H + kh - 1 ? row_line[i0 + pi] : -2;
#pragma unroll
        for (int q = 0; q < 2; ++q) {
            const int pj = tx + q * TX, c = c_src[q];
            if (pj >= cols) continue;
            C x;
            if (r == -2 || c == -2)
                x = zero;
            else if (r < 0 || c < 0)
                x = border;
            else
                x = Traits<T>::load(img[(long long)r * W + c]);
            nan_seen |= isnan(x) ? 1 : 0;
            s_img[pi * LD + pj] = x;
        }
    }
    for (int t = threadIdx.x; t < taps; t += THREADS) {
        MorphTap<C> tp;
        tp.offset = (tap_row[t] * LD + tap_col[t]) * (int)sizeof(C);
        tp.weight = weighted ? Traits<T>::load(tap_weight[t]) : (C)0;
        nan_seen |= isnan(tp.weight) ? 1 : 0;
        s_tap[t] = tp;
    }
    const bool block_has_nan = __syncthreads_or(nan_seen) != 0;
    const C* at = s_img + ty * LD + tx;  // output r reads morph_at(at, offset)[r * TY * LD]
    C value[RM];
    int index[RM];
    if (!block_has_nan) {
        int code[RM];
#pragma unroll
        for (int r = 0; r < RM; ++r) {
            value[r] = zero;
            code[r] = -1;
        }
        if (max_) {
            if (weighted)
                morph_fast<T, true, true>(at, s_tap, taps, value, code);
            else
                morph_fast<T, true, false>(at, s_tap, taps, value, code);
        } else {
            if (weighted)
                morph_fast<T, false, true>(at, s_tap, taps, value, code);
            else
                morph_fast<T, false, false>(at, s_tap, taps, value, code);
        }
#pragma unroll
        for (int r = 0; r < RM; ++r) {
            index[r] = -1;
            if (code[r] < 0) continue;  // every candidate the tropical zero: value is the zero
            // The winner is the step's first candidate equal to the best: none of the step is
            // strictly better than the step's best, so "not worse" is "equal".
            const int tend = min(code[r] + TROPIC_MORPH_STEP, taps);
            for (int t = code[r]; t < tend; ++t) {
                const MorphTap<C> tp = s_tap[t];
                const C x = morph_at(at, tp.offset)[r * TY * LD];
                const C v = weighted ? Traits<T>::round(exact_add(x, tp.weight)) : x;
                if (!isnan(v) && !better(max_, value[r], v)) {
                    value[r] = v;
                    index[r] = tap_index[t];
                    break;
                }
            }
        }
    } else {
#pragma unroll
        for (int r = 0; r < RM; ++r) {
            Best<T> best(max_);
            for (int t = 0; t < taps && !best.decided; ++t) {
                const MorphTap<C> tp = s_tap[t];
                best.offer(morph_at(at, tp.offset)[r * TY * LD], tp.weight, weighted, t);
            }
            value[r] = best.value;
            index[r] = best.index >= 0 ? tap_index[best.index] : -1;
        }
    }
    const int j = j0 + tx;
#pragma unroll
    for (int r = 0; r < RM; ++r) {
        const int i = i0 + ty + r * TY;
        if (i < H && j < W) {
            const long long o = plane + (long long)i * W + j;
            out[o] = Traits<T>::store(value[r]);
            winner[o] = index[r];
        }
    }
}
