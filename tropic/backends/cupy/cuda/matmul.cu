// Max-plus / min-plus matrix products c[b, i, j] = (+)_k a[b, i, k] (x) b[b, k, j] and their vjp.
#include "common.cuh"
#include "tiled.cuh"

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

// The tiled kernel: tiled.cuh's block tile (its comment is the correctness argument) with a and b
// as the matrices at the batch's offsets; grid (column tiles, row tiles, batches).
template <typename T> struct MatrixOut {
    T* c;
    int* winner;
    long long first_row;  // p * M
    int N;
    __device__ __forceinline__ void write(int i, int j, typename Traits<T>::C v, int k) const {
        const long long o = (first_row + i) * N + j;
        c[o] = Traits<T>::store(v);
        winner[o] = k;
    }
};

template <typename T>
__global__ void __launch_bounds__(TROPIC_TILE_TM * TROPIC_TILE_TN)
tropic_matmul_tiled(const T* __restrict__ a, const T* __restrict__ b,
                    const long long* __restrict__ a_offset, const long long* __restrict__ b_offset,
                    T* __restrict__ c, int* __restrict__ winner, int M, int K, int N, int maximise) {
    typedef typename Traits<T>::C C;
    const TileMap<C> map(threadIdx.x);
    const long long p = blockIdx.z;
    const int i0 = blockIdx.y * TileMap<C>::BM, j0 = blockIdx.x * TileMap<C>::BN;
    const bool max_ = maximise != 0;
    const C zero = max_ ? -infinity<C>() : infinity<C>();
    const MatrixRows<T> rows(a + a_offset[p], M, K, i0, map, zero);
    const MatrixCols<T> cols(b + b_offset[p], K, N, j0, map, zero);
    const MatrixOut<T> out{c, winner, p * M, N};
    tiled_product<T>(map, rows, cols, out, M, K, N, i0, j0, max_);
}
