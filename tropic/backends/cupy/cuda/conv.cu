// maxplus_conv2d / minplus_conv2d (tropic/core/conv.py): x (B, Cin, H, W), w (Cout, Cg, kh, kw),
// y[b, o, i, j] = (+)_{c, u, v} x[b, g(o) Cg + c, i sh + u - ph, j sw + v - pw] (x) w[o, c, u, v],
// candidates in increasing (c * kh + u) * kw + v, padding the tropical zero; and the x part of the
// vjp (the w part is tropic_tap_partials in sums.cu).
#include "common.cuh"

using namespace tropic;

template <typename T>
__global__ void tropic_conv2d(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                              int* __restrict__ winner, int B, int C_in, int H, int W, int C_out, int C_group,
                              int kh, int kw, int sh, int sw, int ph, int pw, int groups, int H_out,
                              int W_out, int maximise) {
    typedef typename Traits<T>::C C;
    const long long total = (long long)B * C_out * H_out * W_out;
    const C zero = maximise ? -infinity<C>() : infinity<C>();
    const int per_group = C_out / groups;
    TROPIC_GRID_LOOP(o, total) {
        const int j = (int)(o % W_out);
        const int i = (int)((o / W_out) % H_out);
        const int oc = (int)((o / ((long long)W_out * H_out)) % C_out);
        const long long b = o / ((long long)W_out * H_out * C_out);
        const int first_channel = (oc / per_group) * C_group;
        const T* wo = w + (long long)oc * C_group * kh * kw;
        Best<T> best(maximise != 0);
        for (int c = 0; c < C_group && !best.decided; ++c) {
            const T* xc = x + ((b * C_in + first_channel + c) * H) * (long long)W;
            for (int u = 0; u < kh && !best.decided; ++u) {
                const int r = i * sh + u - ph;
                for (int v = 0; v < kw && !best.decided; ++v) {
                    const int col = j * sw + v - pw;
                    const bool inside = r >= 0 && r < H && col >= 0 && col < W;
                    const C xv = inside ? Traits<T>::load(xc[(long long)r * W + col]) : zero;
                    const int k = (c * kh + u) * kw + v;
                    best.offer(xv, Traits<T>::load(wo[k]), true, k);
                }
            }
        }
        y[o] = Traits<T>::store(best.value);
        winner[o] = best.index;
    }
}

// dL/dx[b, ch, r, col] = sum over outputs (o, i, j) of the group of ch, in increasing flat order,
// of g[b, o, i, j] when its winner (c, u, v) reads (ch, r, col).
template <typename T>
__global__ void tropic_conv2d_vjp_x(const T* __restrict__ g, const int* __restrict__ winner,
                                    T* __restrict__ grad_x, int B, int C_in, int H, int W, int C_out,
                                    int C_group, int kh, int kw, int sh, int sw, int ph, int pw, int groups,
                                    int H_out, int W_out) {
    const long long total = (long long)B * C_in * H * W;
    const int per_group = C_out / groups;
    TROPIC_GRID_LOOP(e, total) {
        const int col = (int)(e % W);
        const int r = (int)((e / W) % H);
        const int ch = (int)((e / ((long long)W * H)) % C_in);
        const long long b = e / ((long long)W * H * C_in);
        const int grp = ch / C_group, c = ch % C_group;
        // outputs rows i with u = r + ph - i sh in [0, kh), columns j with v = col + pw - j sw in [0, kw)
        const int ry = r + ph, cx = col + pw;
        const int i_lo = ry - kh + 1 <= 0 ? 0 : (ry - kh + 1 + sh - 1) / sh;
        const int i_hi = min(H_out - 1, ry / sh);
        const int j_lo = cx - kw + 1 <= 0 ? 0 : (cx - kw + 1 + sw - 1) / sw;
        const int j_hi = min(W_out - 1, cx / sw);
        double sum = 0.0;
        for (int oc = grp * per_group; oc < (grp + 1) * per_group; ++oc) {
            const long long plane = (b * C_out + oc) * (long long)H_out * W_out;
            for (int i = i_lo; i <= i_hi; ++i) {
                const int u = ry - i * sh;
                for (int j = j_lo; j <= j_hi; ++j) {
                    const int v = cx - j * sw;
                    const long long at = plane + (long long)i * W_out + j;
                    if (winner[at] == (c * kh + u) * kw + v) sum += exact_to_double(Traits<T>::load(g[at]));
                }
            }
        }
        grad_x[e] = store_sum<T>(sum);
    }
}
