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
