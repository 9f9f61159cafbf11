// Gradients of the max-plus / min-plus products (forward kernels: matmul.cu):
//   dL/da[p, i, k] = sum_j g[p, i, j] [winner[p, i, j] = k]   (j increasing)
//   dL/db[p, k, j] = sum_i g[p, i, j] [winner[p, i, j] = k]   (i increasing)
// Both are keyed sums along the lines of g: a row (p, i) for dL/da, a column (p, j) for dL/db. Each
// line is cut into `chunks` runs of consecutive positions (a function of the shapes only, see
// layout.vjp_chunking); one thread walks one run in increasing order and adds g into its own float64
// bins partial[chunk, line, 0:K] (no other thread touches them: no atomics). tropic_matmul_vjp_finish
// adds a line's partials in chunk order and rounds once to T. So the work is O(batch * M * N), a run
// repeats bitwise, and with one chunk the sums are those of the NumPy backend (flat order, float64).
#include "common.cuh"

using namespace tropic;

// g and winner: (batch, M, N) contiguous, seen as `lines` lines of `positions` elements: line r is
// at (r / per_batch) * M * N + (r % per_batch) * line_step, position q at q * position_step beyond it.
template <typename T>
__global__ void tropic_matmul_vjp_scatter(const T* __restrict__ g, const int* __restrict__ winner,
                                          double* __restrict__ partial, long long lines, int per_batch,
                                          long long batch_size, int line_step, int position_step,
                                          int positions, int K, int chunks, int chunk_size) {
    TROPIC_GRID_LOOP(t, lines * chunks) {
        const long long r = t % lines;  // consecutive threads, consecutive lines
        const int chunk = (int)(t / lines);
        const long long start = (r / per_batch) * batch_size + (r % per_batch) * line_step;
        double* bins = partial + (chunk * lines + r) * (long long)K;
        const int hi = min(positions, (chunk + 1) * chunk_size);
        for (int q = chunk * chunk_size; q < hi; ++q) {
            const long long at = start + (long long)q * position_step;
            const int k = winner[at];
            if (k >= 0) bins[k] += exact_to_double(Traits<T>::load(g[at]));  // -1: sends nothing
        }
    }
}

// out[line r, key k] = sum over chunks c (in order) of partial[c, r, k], rounded once to T; the
// output element of (r, k) is (r / per_batch) * per_batch * K + (r % per_batch) * line_step + k * key_step.
template <typename T>
__global__ void tropic_matmul_vjp_finish(const double* __restrict__ partial, T* __restrict__ out,
                                         long long lines, int per_batch, int line_step, int key_step,
                                         int K, int chunks) {
    TROPIC_GRID_LOOP(o, lines * K) {
        const long long r = o / K;
        const int k = (int)(o % K);
        double sum = 0.0;
        for (int c = 0; c < chunks; ++c) sum += partial[(c * lines + r) * K + k];
        const long long at = (r / per_batch) * per_batch * (long long)K + (r % per_batch) * line_step +
                             (long long)k * key_step;
        out[at] = store_sum<T>(sum);
    }
}
