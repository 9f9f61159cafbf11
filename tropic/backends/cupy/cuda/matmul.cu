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

// Shared-memory tiled kernel with register tiles: a block computes a TM*RM x TN*RN tile of c,
// each thread RM x RN outputs; BK columns of a and rows of b are staged in shared memory per step,
// padded with the tropical zero beyond the matrix edges (a zero candidate never wins, so padding
// changes nothing). Every output still sees k in increasing order with the same strict compare and
// NaN rule as tropic_matmul: the two agree bitwise (tests/test_cupy_backend.py checks it).
#define TROPIC_TILE_BK 16
#define TROPIC_TILE_TM 16
#define TROPIC_TILE_TN 16
#define TROPIC_TILE_RM 4
#define TROPIC_TILE_RN 4

template <typename T>
__global__ void __launch_bounds__(TROPIC_TILE_TM * TROPIC_TILE_TN)
tropic_matmul_tiled(const T* __restrict__ a, const T* __restrict__ b,
                    const long long* __restrict__ a_offset, const long long* __restrict__ b_offset,
                    T* __restrict__ c, int* __restrict__ winner, int M, int K, int N, int maximise) {
    typedef typename Traits<T>::C C;
    const int BM = TROPIC_TILE_TM * TROPIC_TILE_RM, BN = TROPIC_TILE_TN * TROPIC_TILE_RN;
    __shared__ C sa[TROPIC_TILE_BK][TROPIC_TILE_TM * TROPIC_TILE_RM];
    __shared__ C sb[TROPIC_TILE_BK][TROPIC_TILE_TN * TROPIC_TILE_RN];
    const long long p = blockIdx.z;
    const T* A = a + a_offset[p];
    const T* B = b + b_offset[p];
    const int i0 = blockIdx.y * BM, j0 = blockIdx.x * BN;
    const int tx = threadIdx.x % TROPIC_TILE_TN, ty = threadIdx.x / TROPIC_TILE_TN;
    const bool max_ = maximise != 0;
    const C zero = max_ ? -infinity<C>() : infinity<C>();
    C value[TROPIC_TILE_RM][TROPIC_TILE_RN];
    int index[TROPIC_TILE_RM][TROPIC_TILE_RN];
    bool decided[TROPIC_TILE_RM][TROPIC_TILE_RN];
#pragma unroll
    for (int r = 0; r < TROPIC_TILE_RM; ++r)
#pragma unroll
        for (int s = 0; s < TROPIC_TILE_RN; ++s) {
            value[r][s] = zero;
            index[r][s] = -1;
            decided[r][s] = false;
        }
    const int threads = TROPIC_TILE_TM * TROPIC_TILE_TN;
    for (int k0 = 0; k0 < K; k0 += TROPIC_TILE_BK) {
        int nan_seen = 0;
        for (int e = threadIdx.x; e < TROPIC_TILE_BK * BM; e += threads) {
            const int kk = e % TROPIC_TILE_BK, ii = e / TROPIC_TILE_BK;
            const int i = i0 + ii, k = k0 + kk;
            const C x = (i < M && k < K) ? Traits<T>::load(A[(long long)i * K + k]) : zero;
            nan_seen |= isnan(x) ? 1 : 0;
            sa[kk][ii] = x;
        }
        for (int e = threadIdx.x; e < TROPIC_TILE_BK * BN; e += threads) {
            const int jj = e % BN, kk = e / BN;
            const int j = j0 + jj, k = k0 + kk;
            const C w = (j < N && k < K) ? Traits<T>::load(B[(long long)k * N + j]) : zero;
            nan_seen |= isnan(w) ? 1 : 0;
            sb[kk][jj] = w;
        }
        const bool tile_has_nan = __syncthreads_or(nan_seen) != 0;
        const int kend = min(TROPIC_TILE_BK, K - k0);
        if (!tile_has_nan) {
            // Fast path, no NaN operand in this step: an output decided earlier holds NaN, and
            // strict compares with NaN are false, so it stays as it is; a -inf + inf sum is NaN and
            // never wins either. Exactly the slow path's result, with 4 operations per pair.
            for (int kk = 0; kk < kend; ++kk) {
                C ra[TROPIC_TILE_RM], rb[TROPIC_TILE_RN];
#pragma unroll
                for (int r = 0; r < TROPIC_TILE_RM; ++r) ra[r] = sa[kk][ty + r * TROPIC_TILE_TM];
#pragma unroll
                for (int s = 0; s < TROPIC_TILE_RN; ++s) rb[s] = sb[kk][tx + s * TROPIC_TILE_TN];
#pragma unroll
                for (int r = 0; r < TROPIC_TILE_RM; ++r)
#pragma unroll
                    for (int s = 0; s < TROPIC_TILE_RN; ++s) {
                        const C v = Traits<T>::round(exact_add(ra[r], rb[s]));
                        if (better(max_, v, value[r][s])) {
                            value[r][s] = v;
                            index[r][s] = k0 + kk;
                        }
                    }
            }
        } else {
            for (int kk = 0; kk < kend; ++kk) {
                C ra[TROPIC_TILE_RM], rb[TROPIC_TILE_RN];
#pragma unroll
                for (int r = 0; r < TROPIC_TILE_RM; ++r) ra[r] = sa[kk][ty + r * TROPIC_TILE_TM];
#pragma unroll
                for (int s = 0; s < TROPIC_TILE_RN; ++s) rb[s] = sb[kk][tx + s * TROPIC_TILE_TN];
#pragma unroll
                for (int r = 0; r < TROPIC_TILE_RM; ++r)
#pragma unroll
                    for (int s = 0; s < TROPIC_TILE_RN; ++s) {
                        const C x = ra[r], w = rb[s];
                        if (decided[r][s]) continue;
                        if (isnan(x) || isnan(w)) {
                            value[r][s] = exact_add(x, w);
                            index[r][s] = k0 + kk;
                            decided[r][s] = true;
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
    for (int r = 0; r < TROPIC_TILE_RM; ++r)
#pragma unroll
        for (int s = 0; s < TROPIC_TILE_RN; ++s) {
            const int i = i0 + ty + r * TROPIC_TILE_TM, j = j0 + tx + s * TROPIC_TILE_TN;
            if (i < M && j < N) {
                const long long o = (p * M + i) * (long long)N + j;
                c[o] = Traits<T>::store(value[r][s]);
                winner[o] = index[r][s];
            }
        }
}
