// Deterministic masked sums for the weight gradients of morphology and conv2d:
//   out[o, t] = sum over (b, s) of g[b, o, s] [winner[b, o, s] = t]
// for g and winner of layout (B, O, S). Pass 1 (tropic_tap_partials): block (chunk, key) sums its
// chunk of the B * S positions of key = o * taps + t, each thread a fixed strided subset in double,
// then a fixed shared-memory tree; pass 2 (tropic_tap_finish) adds the chunk partials in chunk
// order. No atomics: the result depends only on the shapes, never on scheduling. (The NumPy
// backend adds in flat order instead: the two agree bitwise when the sums are exact, e.g. for
// dyadic gradients, and to within float64 rounding otherwise.)
#include "common.cuh"

using namespace tropic;

#define TROPIC_SUM_THREADS 256

template <typename T>
__global__ void __launch_bounds__(TROPIC_SUM_THREADS)
tropic_tap_partials(const T* __restrict__ g, const int* __restrict__ winner, double* __restrict__ partial,
                    long long B, long long O, long long S, int taps, int chunks, long long chunk_size) {
    __shared__ double part[TROPIC_SUM_THREADS];
    const long long positions = B * S;
    for (long long key = blockIdx.y; key < O * taps; key += gridDim.y) {
        const long long o = key / taps;
        const int t = (int)(key % taps);
        for (long long chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
            const long long lo = chunk * chunk_size;
            const long long hi = min(lo + chunk_size, positions);
            double sum = 0.0;
            for (long long q = lo + threadIdx.x; q < hi; q += TROPIC_SUM_THREADS) {
                const long long b = q / S, s = q % S;
                const long long at = (b * O + o) * S + s;
                if (winner[at] == t) sum += exact_to_double(Traits<T>::load(g[at]));
            }
            part[threadIdx.x] = sum;
            __syncthreads();
            for (int half = TROPIC_SUM_THREADS / 2; half > 0; half /= 2) {
                if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
                __syncthreads();
            }
            if (threadIdx.x == 0) partial[key * chunks + chunk] = part[0];
            __syncthreads();
        }
    }
}

template <typename T>
__global__ void tropic_tap_finish(const double* __restrict__ partial, T* __restrict__ out, long long keys,
                                  int chunks) {
    TROPIC_GRID_LOOP(key, keys) {
        double sum = 0.0;
        for (int c = 0; c < chunks; ++c) sum += partial[key * chunks + c];
        out[key] = store_sum<T>(sum);
    }
}
