// Gradients of the max-plus / min-plus products (forward kernels: matmul.cu).
#include "common.cuh"

using namespace tropic;

// dL/da[p, i, k] = sum_j g[p, i, j] [winner[p, i, j] = k], j increasing, in double.
template <typename T>
__global__ void tropic_matmul_vjp_a(const T* __restrict__ g, const int* __restrict__ winner,
                                    T* __restrict__ grad_a, long long batch, int M, int K, int N) {
    const long long total = batch * M * K;
    TROPIC_GRID_LOOP(o, total) {
        const int k = (int)(o % K);
        const long long row = o / K;  // p * M + i
        const T* gr = g + row * N;
        const int* wr = winner + row * N;
        double sum = 0.0;
        for (int j = 0; j < N; ++j) {
            if (wr[j] == k) sum += exact_to_double(Traits<T>::load(gr[j]));
        }
        grad_a[o] = store_sum<T>(sum);
    }
}

// dL/db[p, k, j] = sum_i g[p, i, j] [winner[p, i, j] = k], i increasing, in double.
template <typename T>
__global__ void tropic_matmul_vjp_b(const T* __restrict__ g, const int* __restrict__ winner,
                                    T* __restrict__ grad_b, long long batch, int M, int K, int N) {
    const long long total = batch * K * N;
    TROPIC_GRID_LOOP(o, total) {
        const long long j = o % N;
        const int k = (int)((o / N) % K);
        const long long p = o / ((long long)K * N);
        const T* gc = g + p * M * N + j;
        const int* wc = winner + p * M * N + j;
        double sum = 0.0;
        for (int i = 0; i < M; ++i) {
            if (wc[(long long)i * N] == k) sum += exact_to_double(Traits<T>::load(gc[(long long)i * N]));
        }
        grad_b[o] = store_sum<T>(sum);
    }
}
