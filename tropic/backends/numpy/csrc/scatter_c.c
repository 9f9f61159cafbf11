/* Compiled backward passes (vector-Jacobian products) of tropic's products, morphology and
 * convolutions: every output's gradient goes to its winner. Built as an extension module so that pip
 * compiles it; called through ctypes (tropic/backends/numpy/compiled.py).
 *
 * Contract: the same numbers as the NumPy path, bit for bit. That path is np.bincount with weights:
 * each slot is a float64 sum of its contributions taken in the row-major order of the outputs. So
 * these loops visit the outputs in that order, add in double into caller-zeroed double arrays, and
 * the caller rounds once to the gradient's dtype. Single-threaded: the order is the determinism.
 * Outputs whose index is -1 (no winner) send nothing; contributions that land on padding are
 * dropped. Indices arrive as int32. Returns 0, or 3 at the first index outside [-1, candidates): the
 * caller raises (the gradient arrays are its own fresh ones, so what was added before is discarded).
 * A gradient the caller does not need is passed as NULL and not computed. */
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scatter_c", "ctypes-loaded kernels", -1, NULL};
PyMODINIT_FUNC PyInit__scatter_c(void) { return PyModule_Create(&module); }

/* Products: g, idx (n, M, N) -> ga (n, M, K) and gb (n, K, N), or with gb_transposed gb laid out as
 * (n, N, K) (the gradient of a weight W that entered as W.T: the same sums, written where W's
 * gradient wants them, so no transposing copy follows). bias_k: candidate K is a bias of shape (N,),
 * whose gradient gbias (caller-zeroed, if not NULL) adds the n * M rows of g where it won, in T and
 * in row order, a row's 0 where the bias lost too (so -0.0 sums to +0.0): NumPy's reduction of
 * np.where(idx == K, g, 0) over the leading axes, bit for bit (for N >= 2: with N = 1 NumPy sums
 * pairwise, and the caller does not ask). */
#define MATMUL_VJP(NAME, T)                                                                         \
  int NAME(const T *g, const int32_t *idx, int64_t n, int64_t M, int64_t N, int64_t K, double *ga,  \
           double *gb, int gb_transposed, int bias_k, T *gbias) {                                   \
    for (int64_t b = 0; b < n; b++)                                                                 \
      for (int64_t i = 0; i < M; i++)                                                               \
        for (int64_t j = 0; j < N; j++) {                                                           \
          int64_t at = (b * M + i) * N + j, k = idx[at];                                            \
          if (bias_k) {                                                                             \
            const T add = k == K ? g[at] : (T)0;                                                    \
            if (gbias) gbias[j] += add;                                                             \
            if (k == K) continue;                                                                   \
          }                                                                                         \
          if (k < 0 || k >= K) {                                                                    \
            if (k == -1) continue;                                                                  \
            return 3;                                                                               \
          }                                                                                         \
          if (ga) ga[(b * M + i) * K + k] += (double)g[at];                                         \
          if (gb) gb[gb_transposed ? (b * N + j) * K + k : (b * K + k) * N + j] += (double)g[at];   \
        }                                                                                           \
    return 0;                                                                                       \
  }
MATMUL_VJP(tropic_matmul_vjp_f32, float)
MATMUL_VJP(tropic_matmul_vjp_f64, double)

/* Morphology: g, idx (n, H, W); rows (H, kh) and cols (W, kw) are the source tables of the window
 * (-1: border) -> gimg (n, H, W) and gw (kh * kw). A tap's (row, column) in the element is decoded
 * once into a table, not by two divisions per output; returns 2 if it cannot be allocated. */
#define MORPHOLOGY_VJP(NAME, T)                                                                     \
  int NAME(const T *g, const int32_t *idx, int64_t n, int64_t H, int64_t W, const int64_t *rows,    \
           int64_t kh, const int64_t *cols, int64_t kw, double *gimg, double *gw) {                 \
    int64_t taps = kh * kw;                                                                         \
    int64_t *tap = malloc((size_t)(2 * taps + 1) * sizeof(int64_t));                                \
    if (tap == NULL) return 2;                                                                      \
    for (int64_t t = 0; t < taps; t++) {                                                            \
      tap[2 * t] = t / kw;                                                                          \
      tap[2 * t + 1] = t % kw;                                                                      \
    }                                                                                               \
    int status = 0;                                                                                 \
    for (int64_t b = 0; b < n; b++)                                                                 \
      for (int64_t i = 0; i < H; i++)                                                               \
        for (int64_t j = 0; j < W; j++) {                                                           \
          int64_t at = (b * H + i) * W + j, t = idx[at];                                            \
          if (t < 0 || t >= taps) {                                                                 \
            if (t == -1) continue;                                                                  \
            status = 3;                                                                             \
            goto done;                                                                              \
          }                                                                                         \
          int64_t r = rows[i * kh + tap[2 * t]], c = cols[j * kw + tap[2 * t + 1]];                 \
          if (gimg && r >= 0 && c >= 0) gimg[(b * H + r) * W + c] += (double)g[at];                 \
          if (gw) gw[t] += (double)g[at];                                                           \
        }                                                                                           \
  done:                                                                                             \
    free(tap);                                                                                      \
    return status;                                                                                  \
  }
MORPHOLOGY_VJP(tropic_morphology_vjp_f32, float)
MORPHOLOGY_VJP(tropic_morphology_vjp_f64, double)

/* Convolutions: g, idx (B, Cout, Ho, Wo); winner t = (c * kh + u) * kw + v within output channel
 * o's group -> gx (B, Cin, H, W) and gw (Cout, Cg, kh, kw). Each tap's (c, u, v) is decoded once into
 * a table (three integer divisions per output were most of the time); returns 2 if the table cannot
 * be allocated. */
#define CONV2D_VJP(NAME, T)                                                                         \
  int NAME(const T *g, const int32_t *idx, int64_t B, int64_t Cout, int64_t Ho, int64_t Wo,         \
           int64_t Cin, int64_t H, int64_t W, int64_t Cg, int64_t kh, int64_t kw, int64_t sh,       \
           int64_t sw, int64_t ph, int64_t pw, int64_t groups, double *gx, double *gw) {            \
    int64_t per_group = Cout / groups, taps = Cg * kh * kw;                                         \
    int64_t *tap = malloc((size_t)(3 * taps + 1) * sizeof(int64_t));                                \
    if (tap == NULL) return 2;                                                                      \
    for (int64_t t = 0; t < taps; t++) {                                                            \
      tap[3 * t] = t / (kh * kw);                                                                   \
      tap[3 * t + 1] = t % (kh * kw) / kw;                                                          \
      tap[3 * t + 2] = t % kw;                                                                      \
    }                                                                                               \
    int status = 0;                                                                                 \
    for (int64_t b = 0; b < B; b++)                                                                 \
      for (int64_t o = 0; o < Cout; o++) {                                                          \
        int64_t first_channel = (o / per_group) * Cg;                                               \
        for (int64_t i = 0; i < Ho; i++)                                                            \
          for (int64_t j = 0; j < Wo; j++) {                                                        \
            int64_t at = ((b * Cout + o) * Ho + i) * Wo + j, t = idx[at];                           \
            if (t < 0 || t >= taps) {                                                               \
              if (t == -1) continue;                                                                \
              status = 3;                                                                           \
              goto done;                                                                            \
            }                                                                                       \
            int64_t channel = first_channel + tap[3 * t];                                           \
            int64_t row = i * sh + tap[3 * t + 1] - ph, col = j * sw + tap[3 * t + 2] - pw;         \
            if (gx && row >= 0 && row < H && col >= 0 && col < W)                                   \
              gx[((b * Cin + channel) * H + row) * W + col] += (double)g[at];                       \
            if (gw) gw[o * taps + t] += (double)g[at];                                              \
          }                                                                                         \
      }                                                                                             \
  done:                                                                                             \
    free(tap);                                                                                      \
    return status;                                                                                  \
  }
CONV2D_VJP(tropic_conv2d_vjp_f32, float)
CONV2D_VJP(tropic_conv2d_vjp_f64, double)

/* Scalar code: scatter-adds in a fixed order do not vectorise. */
const char *tropic_isa(void) { return "generic"; }
