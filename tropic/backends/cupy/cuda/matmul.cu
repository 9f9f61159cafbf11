// Max-plus / min-plus matrix products c[b, i, j] = (+)_k a[b, i, k] (x) b[b, k, j] and their vjp.
#include "common.cuh"

using namespace tropic;

// Reference kernel: one thread per output, k in increasing order. a and b are C-contiguous
// matrices (M, K) and (K, N) at the element offsets a_offset[b], b_offset[b] (broadcast batches
// share an offset); c and winner are (batch, M, N) contiguous.
template <typename T>
__global__ void tropic_matmul(const T* __restrict__ a, const T* __restrict__ b,
                              const long long* __restrict__ a_offset,
                              const long long* __restrict__ b_offset, T* __restrict__ c,
                              int* __restrict__ winner, long long batch, int M, int K, int N,
                              int maximise) {
    const long long total = batch * M * N;
    TROPIC_GRID_LOOP(o, total) {
        const long long j = o % N;
        const long long i = (o / N) % M;
        const long long p = o / ((long long)M * N);
        const T* row = a + a_offset[p] + i * K;
        const T* col = b + b_offset[p] + j;
        Best<T> best(maximise != 0);
        for (int k = 0; k < K && !best.decided; ++k) {
            best.offer(Traits<T>::load(row[k]), Traits<T>::load(col[(long long)k * N]), true, k);
        }
        c[o] = Traits<T>::store(best.value);
        winner[o] = best.index;
    }
}

// Shared-memory tiled kernel with register tiles. A block of TM x TN threads computes a BM x BN =
// TM*RM x TN*RN tile of c, each thread an RM x RN block of adjacent outputs (rows ty*RM.., columns
// tx*RN..), so that its operands are contiguous in shared memory and read as 16-byte vectors. k goes
// in steps of BK: the step's columns of a (transposed: sa[kk][ii]) and rows of b are staged in shared
// memory, padded with the tropical zero beyond the matrix edges (a zero candidate never wins, so the
// padding changes nothing and every step runs all BK values of k).
//
// A step with no NaN operand (a block-wide vote) takes the fast path, an add and a max per pair:
// each output keeps only the step's best sum m (max.f32 / min.f32, no index), and after the step
//     if m is strictly better than the output's best: best = m, index = "the step at k0".
// Why this is what tropic_matmul computes. The sequential rule ends with the FIRST k whose sum is
// the overall best. In a step, strict compares against the best so far change the winner iff some
// sum of the step is strictly better, that is iff m is; the rule then ends the step on the first k
// of the step whose sum equals m (earlier sums are smaller, later equal ones are ties). A step whose
// m is not strictly better changes nothing. So the steps keep the sequential winner's step, and
// best = m compares exactly as that candidate's own sum would (equal numbers; only the sign of a
// zero may differ, and -0 == +0 in every compare). A -inf + inf sum is NaN: better_of ignores it
// and m starts at the tropical zero, so it never wins (nor does the padding).
// The k inside the winning step is found once, at the end: that step's sums are recomputed in
// increasing k, the first one equal to the best is the winner, and its own sum (not m: -0.0 vs
// +0.0) is the output, bit for bit the sequential one. (Rescanning after every step that beats the
// best instead would diverge within a warp whenever any of its 32 outputs sets a record: on random
// data a third to a half of the steps of a 4096-long k, roughly doubling the work.)
// A step with a NaN operand takes the slow path: Best<T>'s per-pair rule with the exact k. An output
// whose winner is a NaN holds NaN, which no strict compare beats, so both paths leave it as it is.
// index: k >= 0 exact; -1 no winner (all candidates the zero); <= -2 the step at k0 = -2 - index.
#define TROPIC_TILE_TM 16  // threads along the rows of the block tile
#define TROPIC_TILE_TN 16  // threads along its columns
#define TROPIC_TILE_RM 8   // rows of c per thread
#define TROPIC_TILE_RN 4   // columns of c per thread
#define TROPIC_TILE_PAD 4  // sa's row padding (keeps rows 16-byte aligned; see the staging map)

// k values per step: 32 for the float compute type (25 KiB of shared memory), 16 for double (the
// static shared memory limit is 48 KiB).
template <typename C> struct TileDepth {
    enum { BK = 32 };
};
template <> struct TileDepth<double> {
    enum { BK = 16 };
};

// The step's best m updated with a sum v: v unless v is strictly worse or NaN (-inf + inf). m is never
// NaN (it starts at the tropical zero). Which of two equal operands comes back (-0.0 / +0.0) does not
// matter: the output's value is recomputed from the winning candidate. float as PTX max.f32 / min.f32
// (one instruction; a NaN operand yields the other) without .ftz, as CuPy compiles with -ftz=true and
// NumPy keeps subnormals. Elsewhere (double has no min/max instruction on sm_80 / sm_90; the tests'
// CPU emulation) a compare and a select that returns the later of equal operands, so that the
// emulated tests would see any reliance on m's sign of zero.
template <bool MAX> __device__ __forceinline__ double better_of(double m, double v) {
    return (MAX ? v >= m : v <= m) ? v : m;
}
template <bool MAX> __device__ __forceinline__ float better_of(float m, float v) {
#ifdef __CUDA_ARCH__
    float r;
    if (MAX)
        asm("max.f32 %0, %1, %2;" : "=f"(r) : "f"(m), "f"(v));
    else
        asm("min.f32 %0, %1, %2;" : "=f"(r) : "f"(m), "f"(v));
    return r;
#else
    return (MAX ? v >= m : v <= m) ? v : m;
#endif
}

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

template <typename T>
__global__ void __launch_bounds__(TROPIC_TILE_TM * TROPIC_TILE_TN)
tropic_matmul_tiled(const T* __restrict__ a, const T* __restrict__ b,
                    const long long* __restrict__ a_offset, const long long* __restrict__ b_offset,
                    T* __restrict__ c, int* __restrict__ winner, int M, int K, int N, int maximise) {
    typedef typename Traits<T>::C C;
    const int BK = TileDepth<C>::BK, RM = TROPIC_TILE_RM, RN = TROPIC_TILE_RN;
    const int BM = TROPIC_TILE_TM * RM, BN = TROPIC_TILE_TN * RN, LDA = BM + TROPIC_TILE_PAD;
    const int THREADS = TROPIC_TILE_TM * TROPIC_TILE_TN;
    static_assert(BK % 8 == 0 && THREADS % (4 * BK) == 0 && THREADS % BN == 0, "staging map");
    static_assert((BM * BK) % THREADS == 0 && (BN * BK) % THREADS == 0, "staging map");
    alignas(16) __shared__ C sa[BK][LDA];
    alignas(16) __shared__ C sb[BK][BN];
    const long long p = blockIdx.z;
    const T* A = a + a_offset[p];
    const T* B = b + b_offset[p];
    const int i0 = blockIdx.y * BM, j0 = blockIdx.x * BN;
    const int t = threadIdx.x, tx = t % TROPIC_TILE_TN, ty = t / TROPIC_TILE_TN;
    // Staging map of a: each warp stores 8 consecutive k of 4 consecutive rows, so that its reads are
    // 32-byte segments and its transposed stores hit 32 distinct banks (float: a row of sa is 4 banks
    // mod 32 further on).
    const int a_kk = t % 8 + 8 * ((t / 32) % (BK / 8)), a_ii = (t / 8) % 4 + 4 * (t / (4 * BK));
    const int b_jj = t % BN, b_kk = t / BN;  // b: each warp a run of 32 columns of one row
    const bool max_ = maximise != 0;
    const C zero = max_ ? -infinity<C>() : infinity<C>();
    // This thread stages rows a_ii + n * A_STEP (column a_kk of the step) of a and rows
    // b_kk + n * B_STEP (column b_jj) of b; element offsets advance by a step each step.
    const int A_STEP = THREADS / BK, B_STEP = THREADS / BN;
    const int a_rows = M - i0 - a_ii;  // row n of this thread is in a iff n * A_STEP < a_rows
    const bool b_in = j0 + b_jj < N;
    long long a_at = (long long)(i0 + a_ii) * K + a_kk, b_at = (long long)b_kk * N + j0 + b_jj;
    const long long a_stride = (long long)A_STEP * K, b_stride = (long long)B_STEP * N;
    C value[RM][RN];
    int index[RM][RN];
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
        for (int s = 0; s < RN; ++s) {
            value[r][s] = zero;
            index[r][s] = -1;
        }
    for (int k0 = 0; k0 < K; k0 += BK, a_at += BK, b_at += (long long)BK * N) {
        int nan_seen = 0;
        const bool a_in = k0 + a_kk < K;
        const T* a_src = A + a_at;
#pragma unroll
        for (int n = 0; n < BM * BK / THREADS; ++n, a_src += a_stride) {
            const C x = (a_in && n * A_STEP < a_rows) ? Traits<T>::load(*a_src) : zero;
            nan_seen |= isnan(x) ? 1 : 0;
            sa[a_kk][a_ii + n * A_STEP] = x;
        }
        const T* b_src = B + b_at;
#pragma unroll
        for (int n = 0; n < BN * BK / THREADS; ++n, b_src += b_stride) {
            const C w = (b_in && k0 + b_kk + n * B_STEP < K) ? Traits<T>::load(*b_src) : zero;
            nan_seen |= isnan(w) ? 1 : 0;
            sb[b_kk + n * B_STEP][b_jj] = w;
        }
        const bool tile_has_nan = __syncthreads_or(nan_seen) != 0;
        if (!tile_has_nan) {
            if (max_)
                tile_fast_step<T, true>(sa, sb, ty, tx, value, index, -2 - k0);
            else
                tile_fast_step<T, false>(sa, sb, ty, tx, value, index, -2 - k0);
        } else {
            for (int kk = 0; kk < BK; ++kk) {
#pragma unroll
                for (int r = 0; r < RM; ++r)
#pragma unroll
                    for (int s = 0; s < RN; ++s) {
                        const C x = sa[kk][ty * RM + r], w = sb[kk][tx * RN + s];
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
            const int i = i0 + ty * RM + r, j = j0 + tx * RN + s;
            if (i < M && j < N) {
                C v = value[r][s];
                int k = index[r][s];
                if (k <= -2) {
                    // The winner is the first k of the step whose sum equals the best: no sum of the
                    // step is strictly better than the step's best, so "not worse" is "equal".
                    const int k0 = -2 - k, kend = min(k0 + BK, K);
                    for (k = k0; k < kend; ++k) {
                        const C sum = Traits<T>::round(exact_add(Traits<T>::load(A[(long long)i * K + k]),
                                                                 Traits<T>::load(B[(long long)k * N + j])));
                        if (!isnan(sum) && !better(max_, v, sum)) {
                            v = sum;
                            break;
                        }
                    }
                }
                const long long o = (p * M + i) * (long long)N + j;
                c[o] = Traits<T>::store(v);
                winner[o] = k;
            }
        }
}
