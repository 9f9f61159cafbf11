// Maxout: y[r] = max_p x[r, p] over groups of `pieces` consecutive entries, and its vjp.
#include "common.cuh"

using namespace tropic;

template <typename T>
__global__ void tropic_maxout(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ winner,
                              long long rows, int pieces) {
    TROPIC_GRID_LOOP(r, rows) {
        const T* group = x + r * pieces;
        Best<T> best(true);
        for (int p = 0; p < pieces && !best.decided; ++p) {
            best.offer(Traits<T>::load(group[p]), 0, false, p);
        }
        y[r] = Traits<T>::store(best.value);
        winner[r] = best.index;
    }
}

// dL/dx[r, p] = g[r] if winner[r] = p else +0.
template <typename T>
__global__ void tropic_maxout_vjp(const T* __restrict__ g, const int* __restrict__ winner,
                                  T* __restrict__ grad_x, long long rows, int pieces) {
    const long long total = rows * pieces;
    TROPIC_GRID_LOOP(o, total) {
        const long long r = o / pieces;
        const int p = (int)(o % pieces);
        grad_x[o] = winner[r] == p ? g[r] : Traits<T>::store(0);
    }
}
