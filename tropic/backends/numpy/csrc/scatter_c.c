/* Compiled backward passes (vector-Jacobian products) of tropic's products, morphology and
 * convolutions: every output's gradient goes to its winner. Built as an extension module so that pip
 * compiles it; called through ctypes (tropic/backends/numpy/compiled.py).
 *
 * Contract: the same numbers as the NumPy path, bit for bit. That path is np.bincount with weights:
 * each slot is a float64 sum of its contributions taken in the row-major order of the outputs. So
 * these loops visit the outputs in that order, add in double into caller-zeroed double arrays, and
 * the caller rounds once to the gradient's dtype (the morphology's image gradient is rounded here).
 * Each sum runs on one thread: the order is the determinism (the morphology's image gradients are
 * independent per image, so their images are split over the thread pool).
 * Outputs whose index is -1 (no winner) send nothing; contributions that land on padding are
 * dropped. Indices arrive as int32. Returns 0, or 3 at the first index outside [-1, candidates): the
 * caller raises (the gradient arrays are its own fresh ones, so what was added before is discarded).
 * A gradient the caller does not need is passed as NULL and not computed. The products' pass also
 * has a Python entry point (matmul_vjp, end of the file) that takes the arrays themselves. */
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "thread_pool.h"

#define NOINLINE __attribute__((noinline))

/* Products: g, idx (n, M, N) -> ga (n, M, K) and gb (n, K, N), or with gb_transposed gb laid out as
 * (n, N, K) (the gradient of a weight W that entered as W.T: the same sums, written where W's
 * gradient wants them, so no transposing copy follows). Both are written whole (not caller-zeroed):
 * in T when out_t, else as the float64 sums (the caller still sums broadcast batches). bias_k:
 * candidate K is a bias of shape (N,), whose gradient gbias (if not NULL) adds the n * M rows of g
 * where it won, in T and in row order, a row's 0 where the bias lost too (so -0.0 sums to +0.0):
 * NumPy's reduction of np.where(idx == K, g, 0) over the leading axes, bit for bit (for N >= 2:
 * with N = 1 NumPy sums pairwise, and the caller does not ask).
 * ga[b, i, k] sums row (b, i) of the outputs (over j in order) and gb[b, k, j] column j of batch b
 * (over i in order), so rows and columns are independent tasks of the thread pool: row tasks sum
 * each row in a float64 buffer of K and write it out, column tasks each column (all batches of one
 * j, so gbias[j] keeps its order). Same sums in the same order as the one-pass scatter. */
/* The pool's task of a backward pass: its float or double instance (NAME##_f32 / _f64, from the
 * pass's macro), chosen by the job's is_f64. */
#define TASK_BY_DTYPE(NAME, JOB)                                                                    \
  static int NAME(void *ctx, int task, int tasks) {                                                 \
    const struct JOB *j = ctx;                                                                      \
    return j->is_f64 ? NAME##_f64(ctx, task, tasks) : NAME##_f32(ctx, task, tasks);                 \
  }

struct matmul_vjp_job {
  const void *g;
  const int32_t *idx;
  int64_t n, M, N, K, row_tasks, rows_per_task, columns_per_task;
  void *ga, *gb, *gbias;
  int gb_transposed, bias_k, out_t, is_f64;
};

/* A gb laid out as (n, K, N) is summed a tile of COLUMN_TILE columns at a time in a (K, tile)
 * buffer, so that each row k gets a contiguous run of the tile's columns, not one value per row (N
 * apart: a cache line each) for every column. The same adds in the same order per slot. */
#define COLUMN_TILE 16
#define COLUMN_GROUP 4 /* columns of a transposed gb summed together (at most COLUMN_TILE) */
#define ROW_GROUP 4    /* rows of ga summed together (at most COLUMN_TILE) */
/* A line of sums is written whole (each of its K slots converted) unless fewer than K /
 * SPARSE_FLUSH winners touched it: then it is zeroed and only their slots written, each winner
 * read twice (write, then reset). Measured on a Xeon, 64-row batches: whole lines at K / 4 to K / 2
 * winners took 0.7-0.8x the sparse pass's time (MPM layers, K 120 to 784), at K / 16 1.05-1.1x. At
 * K / 8 it depends on the shape: 0.87-0.92x for a 512 x 512 weight's gradient (a Sparse-Morph
 * layer), 1.1-1.3x for 512 x 64, 1.1x for the input gradient at K = 1024 (its four lines no longer
 * fit in L1); 8 favours the papers' layers. */
#define SPARSE_FLUSH 8
/* GCC turns a short loop of zero stores into a memset, and a memset of a few cache lines into `rep
 * stos`, whose start-up costs more than the stores: the column tiles reset each row of their sums
 * (128 bytes) that way, K times per tile, at 0.5-0.8x the time with plain stores (x 64xK @ B, B's
 * gradient in B's layout, K 84 to 400). Clang has no such attribute and no such habit. */
#if defined(__GNUC__) && !defined(__clang__)
#define PLAIN_STORES __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define PLAIN_STORES
#endif

/* A gradient out of its float64 sums (a product's line, an image, a batch entry): out[p] =
 * (T)acc[p], each sum rounded once; for float, AVX2 code where the CPU has it (the portable build's
 * SSE2 rounds two doubles per instruction). Not AVX-512: on the Xeon its 512-bit rounding made the
 * whole morphology backward 2-8% slower, and zeroing acc in the same pass (instead of a memset per
 * image) 1-13% slower. */
#define ROUND_OUT(NAME, ATTRIBUTES)                                                                 \
  ATTRIBUTES static void NAME(const double *acc, float *out, int64_t count) {                       \
    for (int64_t p = 0; p < count; p++) out[p] = (float)acc[p];                                     \
  }
ROUND_OUT(round_out_portable, )
#if defined(__x86_64__) || defined(__i386__)
ROUND_OUT(round_out_avx2, __attribute__((target("avx2"))))
#endif

static void round_out_float(const double *acc, float *out, int64_t count) {
#if defined(__x86_64__) || defined(__i386__)
  if (__builtin_cpu_supports("avx2")) {
    round_out_avx2(acc, out, count);
    return;
  }
#endif
  round_out_portable(acc, out, count);
}

static void round_out_double(const double *acc, double *out, int64_t count) {
  memcpy(out, acc, (size_t)count * sizeof(double));
}

#define MATMUL_VJP_TASK(NAME, T)                                                                    \
  /* One line of sums out: out[at + k] = acc[k] for k < K (in T when out_t, else double; nothing    \
   * when out is NULL), leaving acc zeroed. Only the `count` winners idx[0], idx[stride], ...       \
   * touched the line: with fewer of them than K / SPARSE_FLUSH, the line is zeroed and just their  \
   * slots are written and reset (an untouched slot holds +0.0, what the zeroing writes), not all K \
   * slots converted (a weight's gradient line: K inputs, one batch's winners). */                  \
  static void NAME##_flush(double *acc, void *out, int64_t at, int out_t, int64_t K,                \
                           const int32_t *idx, int64_t stride, int64_t count) {                     \
    if (count * SPARSE_FLUSH >= K) {                                                                \
      if (out != NULL && out_t)                                                                     \
        round_out_##T(acc, (T *)out + at, K);                                                       \
      else if (out != NULL)                                                                         \
        memcpy((double *)out + at, acc, (size_t)K * sizeof(double));                                \
      memset(acc, 0, (size_t)K * sizeof(double));                                                   \
      return;                                                                                       \
    }                                                                                               \
    if (out != NULL) {                                                                              \
      if (out_t) memset((T *)out + at, 0, (size_t)K * sizeof(T));                                   \
      else memset((double *)out + at, 0, (size_t)K * sizeof(double));                               \
      for (int64_t c = 0; c < count; c++) { /* -1 and the bias (K) touched nothing */               \
        const int64_t k = idx[c * stride];                                                          \
        if (k < 0 || k >= K) continue;                                                              \
        if (out_t) ((T *)out)[at + k] = (T)acc[k];                                                  \
        else ((double *)out)[at + k] = acc[k];                                                      \
      }                                                                                             \
    }                                                                                               \
    for (int64_t c = 0; c < count; c++) { /* reset after writing: a slot may come again */          \
      const int64_t k = idx[c * stride];                                                            \
      if (k >= 0 && k < K) acc[k] = 0.0;                                                            \
    }                                                                                               \
  }                                                                                                 \
  /* Adds batch b's outputs of columns t0 .. t0 + width - 1, in (i, column) order, into acc (slot k \
   * of column c at acc[k * k_stride + c * c_stride]) and the bias's wins into bias_sum[c]; 3 at a   \
   * winner outside [-1, K) (K: the bias, when there is one). */                                    \
  static inline int NAME##_add_columns(const struct matmul_vjp_job *j, int64_t b, int64_t t0,       \
                                       int64_t width, double *acc, int64_t k_stride,                \
                                       int64_t c_stride, T *bias_sum) {                             \
    const T *g = j->g;                                                                              \
    const int64_t M = j->M, N = j->N, K = j->K;                                                     \
    for (int64_t i = 0; i < M; i++) {                                                               \
      const int64_t row = (b * M + i) * N + t0;                                                     \
      for (int64_t c = 0; c < width; c++) {                                                         \
        const int64_t k = j->idx[row + c];                                                          \
        if (j->bias_k) {                                                                            \
          bias_sum[c] += k == K ? g[row + c] : (T)0;                                                \
          if (k == K) continue;                                                                     \
        }                                                                                           \
        if (k < 0 || k >= K) {                                                                      \
          if (k == -1) continue;                                                                    \
          return 3;                                                                                 \
        }                                                                                           \
        acc[k * k_stride + c * c_stride] += (double)g[row + c];                                     \
      }                                                                                             \
    }                                                                                               \
    return 0;                                                                                       \
  }                                                                                                 \
  /* Adds the outputs of rows r .. r + rows - 1 (lines (b, i) of g) into acc, row u's in order of  \
   * column into its line acc[u * K : (u + 1) * K] (a constant `rows` unrolls the interleave); 3 at \
   * a winner outside [-1, K) (K: the bias, when there is one, whose wins are not ga's). */         \
  static inline int NAME##_add_rows(const struct matmul_vjp_job *j, int64_t r, int64_t rows,        \
                                    double *acc) {                                                  \
    const T *g = j->g;                                                                              \
    const int64_t N = j->N, K = j->K;                                                               \
    for (int64_t c = 0; c < N; c++) {                                                               \
      for (int64_t u = 0; u < rows; u++) {                                                          \
        const int64_t at = (r + u) * N + c, k = j->idx[at];                                        \
        if ((uint64_t)k >= (uint64_t)K) {                                                           \
          if (k == -1 || (j->bias_k && k == K)) continue;                                           \
          return 3;                                                                                 \
        }                                                                                           \
        acc[u * K + k] += (double)g[at];                                                            \
      }                                                                                             \
    }                                                                                               \
    return 0;                                                                                       \
  }                                                                                                 \
  /* columns c0 .. c1 of gb (n, K, N) and gbias; acc: K * COLUMN_TILE doubles */                    \
  PLAIN_STORES static int NAME##_column_tiles(const struct matmul_vjp_job *j, int64_t c0,          \
                                              int64_t c1, double *acc) {                            \
    const int64_t n = j->n, N = j->N, K = j->K;                                                     \
    memset(acc, 0, (size_t)K * COLUMN_TILE * sizeof(double));                                       \
    for (int64_t t0 = c0; t0 < c1; t0 += COLUMN_TILE) {                                             \
      const int64_t width = c1 - t0 < COLUMN_TILE ? c1 - t0 : COLUMN_TILE;                          \
      T bias_sum[COLUMN_TILE] = {0}; /* each column's, over (b, i) in order */                      \
      for (int64_t b = 0; b < n; b++) {                                                             \
        if (NAME##_add_columns(j, b, t0, width, acc, COLUMN_TILE, 1, bias_sum)) return 3;           \
        for (int64_t k = 0; k < K; k++) { /* gb[b, k, t0 : t0 + width], and the sums reset */       \
          double *sums = acc + k * COLUMN_TILE;                                                     \
          if (j->out_t)                                                                             \
            for (int64_t c = 0; c < width; c++)                                                     \
              ((T *)j->gb)[(b * K + k) * N + t0 + c] = (T)sums[c];                                  \
          else                                                                                      \
            memcpy((double *)j->gb + (b * K + k) * N + t0, sums, (size_t)width * sizeof(double));   \
          for (int c = 0; c < COLUMN_TILE; c++) sums[c] = 0.0;                                      \
        }                                                                                           \
      }                                                                                             \
      if (j->gbias)                                                                                 \
        for (int64_t c = 0; c < width; c++) ((T *)j->gbias)[t0 + c] = bias_sum[c];                  \
    }                                                                                               \
    return 0;                                                                                       \
  }                                                                                                 \
  static int NAME(void *ctx, int task, int tasks) {                                                 \
    const struct matmul_vjp_job *j = ctx;                                                           \
    const int64_t n = j->n, M = j->M, N = j->N, K = j->K;                                           \
    (void)tasks;                                                                                    \
    /* a line's sums, or a column tile's */                                                         \
    const size_t bytes = (size_t)(K > 0 ? K : 1) * COLUMN_TILE * sizeof(double);                    \
    double *acc = tropic_task_buffer(bytes);                                                        \
    if (acc == NULL) return 2;                                                                      \
    int status = 0;                                                                                 \
    if (task < j->row_tasks) { /* rows (b, i) -> ga */                                              \
      const int64_t r0 = task * j->rows_per_task;                                                   \
      const int64_t r1 = r0 + j->rows_per_task < n * M ? r0 + j->rows_per_task : n * M;             \
      /* ROW_GROUP rows at a time, each in its own line of acc, their adds interleaved: a row's    \
       * outputs often share a winner (an input's largest entries win most of its outputs), and    \
       * adds to one slot wait on each other's store; another row's do not. */                     \
      memset(acc, 0, (size_t)K * ROW_GROUP * sizeof(double)); /* NAME##_flush leaves it zeroed */  \
      for (int64_t r = r0; r < r1; r += ROW_GROUP) {                                                \
        const int64_t rows = r1 - r < ROW_GROUP ? r1 - r : ROW_GROUP;                               \
        status = rows == ROW_GROUP ? NAME##_add_rows(j, r, ROW_GROUP, acc)                          \
                                   : NAME##_add_rows(j, r, rows, acc);                              \
        if (status) goto done;                                                                      \
        for (int64_t u = 0; u < rows; u++)                                                          \
          NAME##_flush(acc + u * K, j->ga, (r + u) * K, j->out_t, K, j->idx + (r + u) * N, 1, N);   \
      }                                                                                             \
      goto done;                                                                                    \
    }                                                                                               \
    /* columns j -> gb[:, :, j] (every batch, in order) and gbias[j] */                             \
    const int64_t c0 = (task - j->row_tasks) * j->columns_per_task;                                 \
    const int64_t c1 = c0 + j->columns_per_task < N ? c0 + j->columns_per_task : N;                 \
    if (j->gb != NULL && !j->gb_transposed) {                                                       \
      status = NAME##_column_tiles(j, c0, c1, acc);                                                 \
      goto done;                                                                                    \
    }                                                                                               \
    /* gb (n, N, K): row c of batch b sums column c of the batch's outputs. COLUMN_GROUP columns at \
     * a time, their adds interleaved: a column's outputs often share a winner (a sparse weight    \
     * has about two per column), and adds to one slot wait on each other's store; those of other  \
     * columns (their own K slots of acc) do not. Each slot still adds its outputs in order. */     \
    memset(acc, 0, (size_t)K * COLUMN_GROUP * sizeof(double));                                      \
    for (int64_t c = c0; c < c1; c += COLUMN_GROUP) {                                               \
      const int64_t width = c1 - c < COLUMN_GROUP ? c1 - c : COLUMN_GROUP;                          \
      T bias_sum[COLUMN_GROUP] = {0};                                                               \
      for (int64_t b = 0; b < n; b++) {                                                             \
        status = NAME##_add_columns(j, b, c, width, acc, 1, K, bias_sum);                           \
        if (status) goto done;                                                                      \
        for (int64_t u = 0; u < width; u++) /* without gb, acc is only reset */                     \
          NAME##_flush(acc + u * K, j->gb, (b * N + c + u) * K, j->out_t, K,                        \
                       j->idx + b * M * N + c + u, N, M);                                           \
      }                                                                                             \
      if (j->gbias)                                                                                 \
        for (int64_t u = 0; u < width; u++) ((T *)j->gbias)[c + u] = bias_sum[u];                   \
    }                                                                                               \
  done:                                                                                             \
    tropic_task_buffer_done(acc, bytes);                                                            \
    return status;                                                                                  \
  }
MATMUL_VJP_TASK(matmul_vjp_task_f32, float)
MATMUL_VJP_TASK(matmul_vjp_task_f64, double)

TASK_BY_DTYPE(matmul_vjp_task, matmul_vjp_job)

/* One product's backward as a job for the pool: fills *job and returns its task count, or 0 when
 * there is nothing to run (no output: the gradients zeroed here), or -1 for bad sizes. */
static int64_t matmul_vjp_plan(struct matmul_vjp_job *job, const void *g, const int32_t *idx, int64_t n, int64_t M,
                               int64_t N, int64_t K, void *ga, void *gb, int gb_transposed, int bias_k, void *gbias,
                               int out_t, int threads, int is_f64) {
  if (n < 0 || M < 0 || N < 0 || K < 0 || threads < 1) return -1;
  if (!bias_k) gbias = NULL; /* no bias candidate: the caller's gbias is not this kernel's */
  if (n == 0 || M == 0 || N == 0) { /* no output: zero gradients */
    const size_t item = out_t ? (is_f64 ? sizeof(double) : sizeof(float)) : sizeof(double);
    if (ga) memset(ga, 0, (size_t)(n * M * K) * item);
    if (gb) memset(gb, 0, (size_t)(n * K * N) * item);
    if (gbias) memset(gbias, 0, (size_t)N * (is_f64 ? sizeof(double) : sizeof(float)));
    return 0;
  }
  /* the column side runs unless only ga is asked for (then the row side checks the winners) */
  const int64_t rows_per_task = tropic_items_per_task(n * M, threads);
  const int64_t row_tasks = ga != NULL ? (n * M + rows_per_task - 1) / rows_per_task : 0;
  int64_t columns_per_task = tropic_items_per_task(N, threads);
  if (gb != NULL && !gb_transposed) /* whole column tiles per task */
    columns_per_task = (columns_per_task + COLUMN_TILE - 1) / COLUMN_TILE * COLUMN_TILE;
  const int64_t column_tasks = gb != NULL || gbias != NULL || ga == NULL ? (N + columns_per_task - 1) / columns_per_task : 0;
  *job = (struct matmul_vjp_job){g,  idx, n,  M,     N,             K,      row_tasks, rows_per_task, columns_per_task,
                                 ga, gb,  gbias, gb_transposed, bias_k, out_t,     is_f64};
  return row_tasks + column_tasks;
}

static int matmul_vjp(const void *g, const int32_t *idx, int64_t n, int64_t M, int64_t N, int64_t K, void *ga,
                      void *gb, int gb_transposed, int bias_k, void *gbias, int out_t, int threads, int is_f64) {
  struct matmul_vjp_job job;
  const int64_t tasks = matmul_vjp_plan(&job, g, idx, n, M, N, K, ga, gb, gb_transposed, bias_k, gbias, out_t,
                                        threads, is_f64);
  return tasks < 0 ? 1 : tasks == 0 ? 0 : tropic_pool_run(matmul_vjp_task, &job, (int)tasks, threads);
}

/* Two products' backwards from one g (an MPM layer's max-plus and min-plus products): both jobs'
 * tasks in one pool run, each job's exactly as it would run alone (the same sums, in the same
 * order). */
struct matmul_vjp_pair {
  struct matmul_vjp_job job[2];
  int64_t first_tasks;
};

static int matmul_vjp_pair_task(void *ctx, int task, int tasks) {
  struct matmul_vjp_pair *p = ctx;
  const int first = task < p->first_tasks;
  return matmul_vjp_task(&p->job[!first], first ? task : task - (int)p->first_tasks,
                         first ? (int)p->first_tasks : tasks - (int)p->first_tasks);
}

int tropic_matmul_vjp_f32(const float *g, const int32_t *idx, int64_t n, int64_t M, int64_t N, int64_t K, void *ga,
                          void *gb, int gb_transposed, int bias_k, float *gbias, int out_t, int threads) {
  return matmul_vjp(g, idx, n, M, N, K, ga, gb, gb_transposed, bias_k, gbias, out_t, threads, 0);
}

int tropic_matmul_vjp_f64(const double *g, const int32_t *idx, int64_t n, int64_t M, int64_t N, int64_t K,
                          void *ga, void *gb, int gb_transposed, int bias_k, double *gbias, int out_t, int threads) {
  return matmul_vjp(g, idx, n, M, N, K, ga, gb, gb_transposed, bias_k, gbias, out_t, threads, 1);
}

/* Morphology: g, idx (n, H, W; int8, int16 or int32: idx_bytes); rows (H, kh) and cols (W, kw) are
 * the source tables of the window (-1: border) -> gimg (n, H, W), written in T (not caller-zeroed),
 * and gw (kh * kw, double, caller-zeroed). Images are independent for gimg: each task of the
 * thread pool takes a run of images and sums each in a float64 buffer of one image (cache-sized
 * for the usual images, where a whole-batch accumulator went to memory and back three times), in
 * the outputs' row-major order, then rounds it into gimg. gw's sums run over every output in
 * order, so it is one task of its own (task 0), beside the image tasks. A tap's (row, column) in
 * the element is decoded once into a table, not by two divisions per output. Returns 2 if a buffer
 * cannot be allocated. */
/* The element's gradient of a small element (at most 16 taps) with its sums in registers, AVX2:
 * slot t lives in lane t % 4 of vector t / 4; each output adds its value to its slot's lane and +0.0
 * to every other lane, so every slot gets the same adds in the same order as through memory (and
 * +0.0 changes nothing a sum can hold: one that starts at +0.0 is never -0.0; NaN and infinities
 * stay). Through memory, outputs that hit the same slot wait on each other's store; here each
 * vector's adds wait only on its previous add. gw: the caller-zeroed sums; returns 3 at an index
 * outside [-1, taps). */
#if defined(__x86_64__) || defined(__i386__)
#define TROPIC_LANE_SUMS 1
typedef double lane_vector __attribute__((vector_size(32)));
typedef long long lane_mask __attribute__((vector_size(32)));
#define LANE_SUMS(NAME, T)                                                                          \
  __attribute__((target("avx2"))) static int NAME(const T *g, const int32_t *idx, int64_t count,   \
                                                  int64_t taps, double *gw) {                       \
    lane_mask picks[16][4];                                                                         \
    for (int t = 0; t < 16; t++)                                                                    \
      for (int q = 0; q < 4; q++)                                                                   \
        for (int l = 0; l < 4; l++) picks[t][q][l] = 4 * q + l == t ? -1 : 0;                      \
    lane_vector lanes[4];                                                                           \
    for (int q = 0; q < 4; q++)                                                                     \
      for (int l = 0; l < 4; l++) lanes[q][l] = 4 * q + l < taps ? gw[4 * q + l] : 0.0;            \
    for (int64_t at = 0; at < count; at++) {                                                        \
      const int64_t t = idx[at];                                                                    \
      if (t < 0 || t >= taps) {                                                                     \
        if (t == -1) continue;                                                                      \
        return 3;                                                                                   \
      }                                                                                             \
      const double v = (double)g[at];                                                               \
      const lane_mask value = (lane_mask)(lane_vector){v, v, v, v};                                 \
      lanes[0] += (lane_vector)(value & picks[t][0]);                                               \
      lanes[1] += (lane_vector)(value & picks[t][1]);                                               \
      lanes[2] += (lane_vector)(value & picks[t][2]);                                               \
      lanes[3] += (lane_vector)(value & picks[t][3]);                                               \
    }                                                                                               \
    for (int q = 0; q < 4; q++)                                                                     \
      for (int l = 0; l < 4; l++)                                                                   \
        if (4 * q + l < taps) gw[4 * q + l] = lanes[q][l];                                          \
    return 0;                                                                                       \
  }
LANE_SUMS(lane_sums_f32, float)
LANE_SUMS(lane_sums_f64, double)
#endif


struct morphology_vjp_job {
  const void *g;
  const void *idx; /* int8, int16 or int32 winners (idx_bytes) */
  int64_t n, H, W, kh, kw, per_task;
  int64_t c0, c1, shift; /* output columns [c0, c1): tap v of column c reads image column c + shift + v */
  const int64_t *rows, *cols, *tap; /* tap t: its row u, column v, and offset u * W + v */
  void *gimg;
  double *gw;
  int is_f64, fused, idx_bytes;
};

/* `count` winners of idx (`bytes` wide: 1, 2 or 4) from `from` on as int32: in place when they are
 * int32, else widened from int8 or int16 into `wide` (a buffer of the task, in cache: an image's or
 * an entry's at a time; the caller no longer converts the whole array through memory first). */
static const int32_t *widened_winners(const void *idx, int bytes, int64_t from, int64_t count, int32_t *wide) {
  if (bytes == 4) return (const int32_t *)idx + from;
  if (bytes == 1) {
    const int8_t *narrow = (const int8_t *)idx + from;
    for (int64_t q = 0; q < count; q++) wide[q] = narrow[q];
  } else {
    const int16_t *narrow = (const int16_t *)idx + from;
    for (int64_t q = 0; q < count; q++) wide[q] = narrow[q];
  }
  return wide;
}

#ifdef TROPIC_LANE_SUMS
#define LANES_FIT(taps) ((taps) <= 16 && __builtin_cpu_supports("avx2"))
#define LANES_float lane_sums_f32
#define LANES_double lane_sums_f64
#else
#define LANES_FIT(taps) 0
#define LANES_float(...) 0
#define LANES_double(...) 0
#endif

/* Whether a window's source columns (or rows) line[0 .. k - 1] are k consecutive ones inside the
 * image (no -1 of the border). */
static int window_inside(const int64_t *line, int64_t k) {
  for (int64_t v = 0; v < k; v++)
    if (line[v] < 0 || line[v] != line[0] + v) return 0;
  return 1;
}

/* Each output of plane b in order: its winner t (an output without one skipped, an index out of
 * range status 3), the pixel p = r * W + q it reads (-1: outside the image) and its gradient gv;
 * then the statements given. A row's outputs run in three loops: those whose whole window reads
 * inside the image (the row's window inside, the column in [c0, c1)) take p as the window's first
 * pixel plus the tap's offset, without the two table reads or a test per output; the columns
 * before and after them read the tables. */
#define MORPHOLOGY_WINNER(c)                                                                        \
  const int64_t t = i_row[c];                                                                       \
  if ((uint64_t)t >= (uint64_t)taps) { /* -1 (no winner) or out of range */                         \
    if (t == -1) continue;                                                                          \
    status = 3;                                                                                     \
    goto done;                                                                                      \
  }                                                                                                 \
  const double gv = (double)g_row[c];
#define MORPHOLOGY_BORDER_OUTPUTS(from, to, ...)                                                    \
  for (int64_t c = from; c < to; c++) {                                                             \
    MORPHOLOGY_WINNER(c)                                                                            \
    const int64_t r = window[j->tap[3 * t]], q = j->cols[c * kw + j->tap[3 * t + 1]];               \
    const int64_t p = r >= 0 && q >= 0 ? r * W + q : -1;                                            \
    __VA_ARGS__                                                                                     \
  }
#define MORPHOLOGY_OUTPUTS(...)                                                                     \
  for (int64_t i = 0; i < H; i++) {                                                                 \
    const int64_t *window = j->rows + i * kh;                                                       \
    const int inside = window_inside(window, kh);                                                   \
    const int64_t c0 = inside ? j->c0 : W, c1 = inside ? j->c1 : W, at_x = window[0] * W + j->shift; \
    __typeof__(gb) g_row = gb + i * W;                                                              \
    const int32_t *i_row = ib + i * W;                                                              \
    MORPHOLOGY_BORDER_OUTPUTS(0, c0, __VA_ARGS__)                                                   \
    for (int64_t c = c0; c < c1; c++) {                                                             \
      MORPHOLOGY_WINNER(c)                                                                          \
      const int64_t p = at_x + c + j->tap[3 * t + 2];                                               \
      __VA_ARGS__                                                                                   \
    }                                                                                               \
    MORPHOLOGY_BORDER_OUTPUTS(c1, W, __VA_ARGS__)                                                   \
  }

#define MORPHOLOGY_VJP_TASK(NAME, T)                                                                \
  static int NAME(void *ctx, int task, int tasks) {                                                 \
    const struct morphology_vjp_job *j = ctx;                                                       \
    const T *g = j->g;                                                                              \
    const int64_t H = j->H, W = j->W, kh = j->kh, kw = j->kw, taps = kh * kw, plane = H * W;        \
    (void)tasks;                                                                                    \
    const size_t wide_bytes = j->idx_bytes == 4 ? 0 : (size_t)plane * sizeof(int32_t);             \
    if (j->gw != NULL && task == 0 && !j->fused) { /* the element's gradient: every output, in order */ \
      int32_t *wide = wide_bytes ? tropic_task_buffer(wide_bytes) : NULL;                           \
      if (wide_bytes && wide == NULL) return 2;                                                     \
      int status = 0;                                                                               \
      for (int64_t b = 0; b < j->n && !status; b++) { /* image by image: the winners widened */     \
        const int32_t *ib = widened_winners(j->idx, j->idx_bytes, b * plane, plane, wide);          \
        const T *gb = g + b * plane;                                                                \
        if (LANES_FIT(taps)) {                                                                      \
          status = LANES_##T(gb, ib, plane, taps, j->gw);                                           \
          continue;                                                                                 \
        }                                                                                           \
        for (int64_t at = 0; at < plane; at++) {                                                    \
          const int64_t t = ib[at];                                                                 \
          if (t < 0 || t >= taps) {                                                                 \
            if (t == -1) continue;                                                                  \
            status = 3;                                                                             \
            break;                                                                                  \
          }                                                                                         \
          j->gw[t] += (double)gb[at];                                                               \
        }                                                                                           \
      }                                                                                             \
      if (wide_bytes) tropic_task_buffer_done(wide, wide_bytes);                                    \
      return status;                                                                                \
    }                                                                                               \
    if (j->gimg == NULL) return 0;                                                                  \
    double *gw = j->fused ? j->gw : NULL; /* one thread: gw's sums in the same pass */              \
    const int64_t first = (task - (j->gw != NULL && !j->fused)) * j->per_task;                      \
    const int64_t last = first + j->per_task < j->n ? first + j->per_task : j->n;                   \
    const size_t bytes = (size_t)plane * sizeof(double) + wide_bytes; /* the sums, the winners */  \
    double *acc = tropic_task_buffer(bytes);                                                        \
    if (acc == NULL) return 2;                                                                      \
    int32_t *wide = wide_bytes ? (int32_t *)(acc + plane) : NULL;                                   \
    int status = 0;                                                                                 \
    for (int64_t b = first; b < last; b++) {                                                        \
      memset(acc, 0, (size_t)plane * sizeof(double));                                               \
      const T *gb = g + b * plane;                                                                  \
      const int32_t *ib = widened_winners(j->idx, j->idx_bytes, b * plane, plane, wide);            \
      /* Outputs whose winners share a pixel add to it through memory, one after the other. A       \
       * running sum kept in a register for windows 5 or more wide (stored when the pixel           \
       * changed) cost 9-37% more once the rows' inside columns ran without their tests (Xeon,      \
       * random, plateau and sparse-peak images): its test mispredicts. */                          \
      MORPHOLOGY_OUTPUTS(if (p >= 0) acc[p] += gv; if (gw) gw[t] += gv;)                            \
      round_out_##T(acc, (T *)j->gimg + b * plane, plane);                                          \
    }                                                                                               \
  done:                                                                                             \
    tropic_task_buffer_done(acc, bytes);                                                            \
    return status;                                                                                  \
  }
MORPHOLOGY_VJP_TASK(morphology_vjp_task_f32, float)
MORPHOLOGY_VJP_TASK(morphology_vjp_task_f64, double)

TASK_BY_DTYPE(morphology_vjp_task, morphology_vjp_job)

static int morphology_vjp(const void *g, const void *idx, int idx_bytes, int64_t n, int64_t H, int64_t W,
                          const int64_t *rows, int64_t kh, const int64_t *cols, int64_t kw, void *gimg,
                          double *gw, int threads, int is_f64) {
  if (n < 0 || H < 0 || W < 0 || kh < 1 || kw < 1 || threads < 1) return 1;
  if (idx_bytes != 1 && idx_bytes != 2 && idx_bytes != 4) return 1;
  if (n == 0 || H == 0 || W == 0) return 0;
  const int64_t taps = kh * kw;
  int64_t *tap = malloc((size_t)(3 * taps) * sizeof(int64_t));
  if (tap == NULL) return 2;
  for (int64_t t = 0; t < taps; t++) {
    tap[3 * t] = t / kw;
    tap[3 * t + 1] = t % kw;
    tap[3 * t + 2] = t / kw * W + t % kw;
  }
  /* The run of output columns whose windows read image columns c + shift .. c + shift + kw - 1 (the
   * first such column's shift): the middle of the image under every border mode. */
  int64_t c0 = 0, c1 = 0, shift = 0;
  while (c0 < W && !window_inside(cols + c0 * kw, kw)) c0++;
  if (c0 < W) shift = cols[c0 * kw] - c0;
  for (c1 = c0; c1 < W && window_inside(cols + c1 * kw, kw) && cols[c1 * kw] == c1 + shift;) c1++;
  /* image tasks plus gw's; on one thread a single task computes both in one pass (their two
   * chains of dependent adds overlap) */
  const int fused = threads == 1 && gimg != NULL && gw != NULL;
  const int64_t per_task = tropic_items_per_task(n, threads);
  const int64_t image_tasks = gimg != NULL ? (n + per_task - 1) / per_task : 0;
  const int64_t tasks = image_tasks + (gw != NULL && !fused);
  struct morphology_vjp_job job = {g,    idx,  n,   H,    W,  kh,     kw,    per_task, c0,       c1,
                                   shift, rows, cols, tap, gimg, gw, is_f64, fused, idx_bytes};
  const int status = tropic_pool_run(morphology_vjp_task, &job, (int)tasks, threads);
  free(tap);
  return status;
}

int tropic_morphology_vjp_f32(const float *g, const void *idx, int idx_bytes, int64_t n, int64_t H, int64_t W,
                              const int64_t *rows, int64_t kh, const int64_t *cols, int64_t kw, float *gimg,
                              double *gw, int threads) {
  return morphology_vjp(g, idx, idx_bytes, n, H, W, rows, kh, cols, kw, gimg, gw, threads, 0);
}

int tropic_morphology_vjp_f64(const double *g, const void *idx, int idx_bytes, int64_t n, int64_t H, int64_t W,
                              const int64_t *rows, int64_t kh, const int64_t *cols, int64_t kw, double *gimg,
                              double *gw, int threads) {
  return morphology_vjp(g, idx, idx_bytes, n, H, W, rows, kh, cols, kw, gimg, gw, threads, 1);
}

/* Convolutions: g, idx (B, Cout, Ho, Wo); winner t = (c * kh + u) * kw + v within output channel
 * o's group -> gx (B, Cin, H, W), written in T (not caller-zeroed), and gw (Cout, Cg, kh, kw),
 * double, caller-zeroed. As the morphology's: gx of batch entry b sums only b's outputs, so runs of
 * batch entries go to the thread pool, each entry summed in a float64 buffer and rounded into gx;
 * gw sums every output in order, a task of its own. Each tap's (c, u, v), and its offset in an
 * entry's x, is decoded once into a table (three integer divisions per output were most of the
 * time); an output row's columns whose taps all read inside the image add at that offset, without
 * bounds tests. Returns 2 if a buffer cannot be allocated. */
struct conv2d_vjp_job {
  const void *g;
  const void *idx; /* idx_bytes wide: 1, 2 or 4 */
  int64_t B, Cout, Ho, Wo, Cin, H, W, sh, sw, ph, pw, per_group, Cg, taps, per_task;
  int64_t kh, c0, c1; /* output columns [c0, c1): every tap of theirs reads inside the image's columns */
  const int64_t *tap; /* per tap t: its (c, u, v) and its offset (c * H + u) * W + v in an entry's x */
  void *gx;
  double *gw;
  int is_f64, fused, idx_bytes;
};

/* Neighbouring outputs often win at one tap, so gw's adds to a slot often follow each other, each
 * waiting for the one before it through a store and a reload. The weight's pass therefore follows
 * GW_STREAMS output channels at once, one output of each in turn: their slots are disjoint, and each
 * slot still gets its adds in the outputs' order (over b, then the plane). */
#define GW_STREAMS 4

#define CONV2D_VJP_TASK(NAME, T)                                                                    \
  /* output `at` (row i, column c of its plane; its group's first input channel `channel0`), won at \
   * tap t, into its entry's input gradient acc; 3 at a winner outside [-1, taps) */               \
  static inline int NAME##_to_input(const struct conv2d_vjp_job *j, int64_t at, int64_t t, int64_t i, \
                                    int64_t c, int64_t channel0, double *acc, double *gw) {         \
    if (t < 0 || t >= j->taps) return t == -1 ? 0 : 3;                                              \
    const int64_t channel = channel0 + j->tap[4 * t];                                               \
    const int64_t row = i * j->sh + j->tap[4 * t + 1] - j->ph;                                      \
    const int64_t col = c * j->sw + j->tap[4 * t + 2] - j->pw;                                      \
    const double v = (double)((const T *)j->g)[at];                                                 \
    if (row >= 0 && row < j->H && col >= 0 && col < j->W) acc[(channel * j->H + row) * j->W + col] += v; \
    if (gw) gw[t] += v;                                                                             \
    return 0;                                                                                       \
  }                                                                                                 \
  /* the same for an output all of whose taps read inside the image: its pixel is acc[at_x + the    \
   * tap's offset] (at_x: the pixel its tap (0, 0, 0) reads) */                                     \
  static inline int NAME##_to_inside(const T *g, const int64_t *tap, int64_t taps, int64_t at,      \
                                     int64_t t, int64_t at_x, double *acc, double *gw) {            \
    if (t < 0 || t >= taps) return t == -1 ? 0 : 3;                                                 \
    const double v = (double)g[at];                                                                 \
    acc[at_x + tap[4 * t + 3]] += v;                                                                \
    if (gw) gw[t] += v;                                                                             \
    return 0;                                                                                       \
  }                                                                                                 \
  /* A row's run [c0, c1) of such outputs, in a function of its own, with the job's fields as       \
   * arguments: inlined into the task, the loop read them through j again after every store to the  \
   * sums (Python's extensions are built with -fno-strict-aliasing) and ran out of registers. */    \
  static NOINLINE int NAME##_inside_run(const T *g, const int32_t *t, const int64_t *tap,           \
                                        int64_t taps, int64_t at, int64_t c0, int64_t c1,           \
                                        int64_t at_x, int64_t sw, double *acc, double *gw) {        \
    int status = 0;                                                                                 \
    for (int64_t c = c0; c < c1; c++)                                                               \
      status |= NAME##_to_inside(g, tap, taps, at + c, t[c], at_x + c * sw, acc, gw);               \
    return status;                                                                                  \
  }                                                                                                 \
  /* output `at`, won at tap t, into its channel's weight gradient gw (taps slots; the job's        \
   * fields as arguments, as in the run above) */                                                   \
  static inline int NAME##_to_weight(const T *g, int64_t taps, int64_t at, int64_t t, double *gw) { \
    if (t < 0 || t >= taps) return t == -1 ? 0 : 3;                                                 \
    gw[t] += (double)g[at];                                                                         \
    return 0;                                                                                       \
  }                                                                                                 \
  static int NAME##_weights(const struct conv2d_vjp_job *j) {                                       \
    const int64_t plane = j->Ho * j->Wo, taps = j->taps;                                            \
    const T *g = (const T *)j->g;                                                                   \
    const size_t wide_bytes = j->idx_bytes == 4 ? 0 : (size_t)(GW_STREAMS * plane) * sizeof(int32_t); \
    int32_t *wide = wide_bytes ? tropic_task_buffer(wide_bytes) : NULL;                             \
    if (wide_bytes && wide == NULL) return 2;                                                       \
    int status = 0;                                                                                 \
    for (int64_t o0 = 0; o0 < j->Cout && !status; o0 += GW_STREAMS) {                              \
      const int64_t streams = j->Cout - o0 < GW_STREAMS ? j->Cout - o0 : GW_STREAMS;                \
      double *gw = j->gw + o0 * taps;                                                               \
      for (int64_t b = 0; b < j->B && !status; b++) {                                               \
        const int64_t base = (b * j->Cout + o0) * plane; /* the streams' planes, one after another */ \
        const int32_t *won = widened_winners(j->idx, j->idx_bytes, base, streams * plane, wide);     \
        if (streams == GW_STREAMS) /* a constant count: the streams unrolled */                    \
          for (int64_t p = 0; p < plane; p++)                                                       \
            for (int s = 0; s < GW_STREAMS; s++)                                                    \
              status |= NAME##_to_weight(g, taps, base + p + s * plane, won[p + s * plane],         \
                                         gw + s * taps);                                            \
        else                                                                                        \
          for (int64_t p = 0; p < plane; p++)                                                       \
            for (int64_t s = 0; s < streams; s++)                                                   \
              status |= NAME##_to_weight(g, taps, base + p + s * plane, won[p + s * plane],         \
                                         gw + s * taps);                                            \
      }                                                                                             \
    }                                                                                               \
    if (wide_bytes) tropic_task_buffer_done(wide, wide_bytes);                                      \
    return status;                                                                                  \
  }                                                                                                 \
  static int NAME(void *ctx, int task, int tasks) {                                                 \
    const struct conv2d_vjp_job *j = ctx;                                                           \
    (void)tasks;                                                                                    \
    if (j->gw != NULL && !j->fused && task == 0) return NAME##_weights(j);                          \
    const int64_t first = (task - (j->gw != NULL && !j->fused)) * j->per_task;                      \
    const int64_t last = first + j->per_task < j->B ? first + j->per_task : j->B;                   \
    const int64_t x_plane = j->Cin * j->H * j->W, outputs = j->Cout * j->Ho * j->Wo; /* an entry's */ \
    const size_t sums_bytes = (size_t)x_plane * sizeof(double);                                     \
    const size_t bytes = sums_bytes + (j->idx_bytes == 4 ? 0 : (size_t)outputs * sizeof(int32_t)); \
    double *acc = tropic_task_buffer(bytes); /* the entry's sums, then its winners widened */       \
    if (acc == NULL) return 2;                                                                      \
    int32_t *wide = (int32_t *)(acc + x_plane);                                                     \
    const T *g = (const T *)j->g;                                                                   \
    const int64_t *tap = j->tap, taps = j->taps, sw = j->sw;                                        \
    int status = 0;                                                                                 \
    for (int64_t b = first; b < last && !status; b++) {                                             \
      memset(acc, 0, sums_bytes);                                                                   \
      const int32_t *won = widened_winners(j->idx, j->idx_bytes, b * outputs, outputs, wide);      \
      for (int64_t o = 0; o < j->Cout && !status; o++) {                                            \
        const int64_t channel0 = (o / j->per_group) * j->Cg;                                        \
        double *gw = j->fused ? j->gw + o * j->taps : NULL; /* one thread: gw's sums too */         \
        for (int64_t i = 0; i < j->Ho; i++) {                                                       \
          const int64_t at = ((b * j->Cout + o) * j->Ho + i) * j->Wo, row0 = i * j->sh - j->ph;     \
          const int inside = row0 >= 0 && row0 + j->kh <= j->H; /* the row's taps read inside */   \
          const int64_t c0 = inside ? j->c0 : j->Wo, c1 = inside ? j->c1 : j->Wo;                   \
          const int64_t at_x = (channel0 * j->H + row0) * j->W - j->pw;                             \
          const int32_t *t = won + (o * j->Ho + i) * j->Wo; /* the row's winners */                \
          for (int64_t c = 0; c < c0; c++)                                                          \
            status |= NAME##_to_input(j, at + c, t[c], i, c, channel0, acc, gw);                    \
          status |= NAME##_inside_run(g, t, tap, taps, at, c0, c1, at_x, sw, acc, gw);             \
          for (int64_t c = c1; c < j->Wo; c++) /* c1 >= c0: both Wo off the inside rows */         \
            status |= NAME##_to_input(j, at + c, t[c], i, c, channel0, acc, gw);                    \
        }                                                                                           \
      }                                                                                             \
      round_out_##T(acc, (T *)j->gx + b * x_plane, x_plane);                                        \
    }                                                                                               \
    tropic_task_buffer_done(acc, bytes);                                                            \
    return status;                                                                                  \
  }
CONV2D_VJP_TASK(conv2d_vjp_task_f32, float)
CONV2D_VJP_TASK(conv2d_vjp_task_f64, double)

TASK_BY_DTYPE(conv2d_vjp_task, conv2d_vjp_job)

static int conv2d_vjp(const void *g, const void *idx, int idx_bytes, int64_t B, int64_t Cout, int64_t Ho, int64_t Wo,
                      int64_t Cin, int64_t H, int64_t W, int64_t Cg, int64_t kh, int64_t kw, int64_t sh,
                      int64_t sw, int64_t ph, int64_t pw, int64_t groups, void *gx, double *gw, int threads,
                      int is_f64) {
  if (groups < 1 || Cout % groups || Cg < 0 || kh < 1 || kw < 1 || threads < 1) return 1;
  if (idx_bytes != 1 && idx_bytes != 2 && idx_bytes != 4) return 1;
  if (B <= 0 || Cout <= 0 || Ho <= 0 || Wo <= 0) { /* no output: gx is all zero */
    if (gx) memset(gx, 0, (size_t)(B * Cin * H * W) * (is_f64 ? sizeof(double) : sizeof(float)));
    return 0;
  }
  const int64_t taps = Cg * kh * kw;
  int64_t *tap = malloc((size_t)(4 * taps + 4) * sizeof(int64_t)); /* taps may be 0 (no channel) */
  if (tap == NULL) return 2;
  for (int64_t t = 0; t < taps; t++) {
    tap[4 * t] = t / (kh * kw);
    tap[4 * t + 1] = t % (kh * kw) / kw;
    tap[4 * t + 2] = t % kw;
    tap[4 * t + 3] = (tap[4 * t] * H + tap[4 * t + 1]) * W + tap[4 * t + 2];
  }
  /* the first output column whose window starts inside (c sw >= pw), and the first past the last
   * whose window ends inside (c sw - pw + kw <= W) */
  int64_t c0 = (pw + sw - 1) / sw, c1 = W + pw - kw >= 0 ? (W + pw - kw) / sw + 1 : 0;
  if (c1 > Wo) c1 = Wo;
  if (c0 > c1) c0 = c1 = Wo;
  /* entry tasks plus gw's; on one thread the entries' pass also makes gw's sums (for each output
   * channel over b, then its plane: the weight pass's order), so g and idx are read once */
  const int fused = threads == 1 && gx != NULL && gw != NULL;
  const int64_t per_task = tropic_items_per_task(B, threads);
  const int64_t entry_tasks = gx != NULL ? (B + per_task - 1) / per_task : 0;
  const int64_t tasks = entry_tasks + (gw != NULL && !fused);
  struct conv2d_vjp_job job = {g,  idx, B,  Cout, Ho,          Wo,    Cin,      H,   W,  sh,    sw,
                               ph, pw,  Cout / groups, Cg, taps, per_task, kh, c0, c1, tap, gx, gw, is_f64, fused,
                               idx_bytes};
  const int status = tropic_pool_run(conv2d_vjp_task, &job, (int)tasks, threads);
  free(tap);
  return status;
}

int tropic_conv2d_vjp_f32(const float *g, const void *idx, int idx_bytes, int64_t B, int64_t Cout, int64_t Ho,
                          int64_t Wo, int64_t Cin, int64_t H, int64_t W, int64_t Cg, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t groups, float *gx, double *gw,
                          int threads) {
  return conv2d_vjp(g, idx, idx_bytes, B, Cout, Ho, Wo, Cin, H, W, Cg, kh, kw, sh, sw, ph, pw, groups, gx, gw,
                    threads, 0);
}

int tropic_conv2d_vjp_f64(const double *g, const void *idx, int idx_bytes, int64_t B, int64_t Cout, int64_t Ho,
                          int64_t Wo, int64_t Cin, int64_t H, int64_t W, int64_t Cg, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t groups, double *gx, double *gw,
                          int threads) {
  return conv2d_vjp(g, idx, idx_bytes, B, Cout, Ho, Wo, Cin, H, W, Cg, kh, kw, sh, sw, ph, pw, groups, gx, gw,
                    threads, 1);
}

/* Maxout, forward and backward (no sums: a grouped max and its one-slot scatter), beside the scatters
 * because its backward is one. Forward: x (groups, pieces) -> y (groups), idx (int32) with NumPy's
 * argmax rule, which the NumPy kernel uses: the first NaN if there is one (its bits copied), else
 * the first maximum (ties, -0.0 against +0.0 among them, keep the earlier piece); an output equal
 * to -inf has no winner (-1). Backward: g, idx (groups) -> gx (groups, pieces), caller-zeroed,
 * gx[j, idx[j]] = g[j]; 3 at the first index outside [-1, pieces). */
/* Groups j .. j + n - 1 (n <= 4) side by side: the select chains of four groups overlap, where one
 * group's pieces wait on each other. Selected on the bits, without a branch (random data would
 * mispredict one comparison in two): a piece is taken if it is greater, or a NaN while none was
 * found (NaN is maximal; the first one stays). */
#define MAXOUT_GROUPS(T, BITS)                                                                      \
  static inline void maxout_groups_##T(const T *x, int64_t j, int n, int64_t pieces, T *y,         \
                                       int32_t *idx) {                                              \
    BITS best[4];                                                                                   \
    uint32_t won[4] = {0, 0, 0, 0};                                                                 \
    for (int q = 0; q < n; q++) memcpy(&best[q], x + (j + q) * pieces, sizeof(T));                  \
    for (int64_t p = 1; p < pieces; p++)                                                            \
      for (int q = 0; q < n; q++) {                                                                 \
        T v, b;                                                                                     \
        BITS vbits;                                                                                 \
        memcpy(&v, x + (j + q) * pieces + p, sizeof(T));                                            \
        memcpy(&vbits, &v, sizeof(T));                                                              \
        memcpy(&b, &best[q], sizeof(T));                                                            \
        const BITS take = (BITS)0 - (BITS)(!(v <= b) & (b == b));                                   \
        best[q] = (vbits & take) | (best[q] & ~take);                                               \
        won[q] = ((uint32_t)p & (uint32_t)take) | (won[q] & ~(uint32_t)take);                       \
      }                                                                                             \
    for (int q = 0; q < n; q++) {                                                                   \
      T b;                                                                                          \
      memcpy(&b, &best[q], sizeof(T));                                                              \
      y[j + q] = b;                                                                                 \
      idx[j + q] = b == (T)-INFINITY ? -1 : (int32_t)won[q];                                        \
    }                                                                                               \
  }
MAXOUT_GROUPS(float, uint32_t)
MAXOUT_GROUPS(double, uint64_t)

#define MAXOUT(NAME, T)                                                                             \
  int NAME(const T *x, int64_t groups, int64_t pieces, T *y, int32_t *idx) {                        \
    if (pieces < 1) return 1;                                                                       \
    int64_t j = 0;                                                                                  \
    for (; j + 4 <= groups; j += 4) maxout_groups_##T(x, j, 4, pieces, y, idx);                     \
    if (j < groups) maxout_groups_##T(x, j, (int)(groups - j), pieces, y, idx);                     \
    return 0;                                                                                       \
  }
MAXOUT(tropic_maxout_f32, float)
MAXOUT(tropic_maxout_f64, double)

#define MAXOUT_VJP(NAME, T)                                                                         \
  int NAME(const T *g, const int32_t *idx, int64_t groups, int64_t pieces, T *gx) {                 \
    for (int64_t j = 0; j < groups; j++) {                                                          \
      const int32_t p = idx[j];                                                                     \
      if (p < 0 || p >= pieces) {                                                                   \
        if (p == -1) continue;                                                                      \
        return 3;                                                                                   \
      }                                                                                             \
      gx[j * pieces + p] = g[j];                                                                    \
    }                                                                                               \
    return 0;                                                                                       \
  }
MAXOUT_VJP(tropic_maxout_vjp_f32, float)
MAXOUT_VJP(tropic_maxout_vjp_f64, double)

/* Scalar code: scatter-adds in a fixed order do not vectorise. */
const char *tropic_isa(void) { return "generic"; }

/* The calling convention of the exported functions: compiled.py refuses a build whose number is not
 * the one it was written for (2: tropic_morphology_vjp takes the winners' width; 3:
 * tropic_conv2d_vjp too). */
int tropic_abi_version(void) { return 3; }

/* Python entry point of the products' pass, for layer-sized backwards where ctypes' per-call costs
 * (an address per array, the argument conversions) and a widening copy of narrow winners cost as
 * much as a tenth of the pass:
 *
 *   matmul_vjp(g, idx, ga, gb, gbias, n, M, N, K, gb_transposed, bias_k, out_t, threads,
 *              idx2=None, ga2=None, gb2=None, gbias2=None, bias_k2=False) -> status
 *
 * g (n * M * N elements) float32 or float64, idx (as many) int8, int16 or int32 (narrower winners are
 * widened here, without the GIL), ga / gb / gbias writable or None: C-contiguous buffers of the sizes
 * tropic_matmul_vjp_* writes (ga n * M * K, gb n * K * N elements, of g's type when out_t, else
 * float64; gbias N of g's type). Returns tropic_matmul_vjp_*'s status. Buffers that do not fit raise
 * ValueError / TypeError (the caller makes them, so that means a bug on its side). With idx2, a
 * second product's backward from the same g (its winners idx2, outputs ga2, gb2, gbias2 of the
 * first's sizes, its own bias_k2) in the same pool run: an MPM layer's two products. */
static int get_flat(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t items, Py_ssize_t itemsize,
                    const char *name) {
  if (obj == Py_None) return 0;
  if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
    return -1;
  if ((itemsize && view->itemsize != itemsize) || view->len != items * view->itemsize) {
    PyErr_Format(PyExc_ValueError, "matmul_vjp: %s has the wrong size or element type", name);
    PyBuffer_Release(view);
    return -1;
  }
  return 1;
}

static PyObject *py_matmul_vjp(PyObject *self, PyObject *args) {
  PyObject *objects[9] = {NULL, NULL, NULL, NULL, NULL, Py_None, Py_None, Py_None, Py_None};
  long long n, M, N, K;
  int gb_transposed, bias_k, out_t, threads, bias_k2 = 0;
  (void)self;
  if (!PyArg_ParseTuple(args, "OOOOOLLLLpppi|OOOOp", &objects[0], &objects[1], &objects[2], &objects[3], &objects[4],
                        &n, &M, &N, &K, &gb_transposed, &bias_k, &out_t, &threads, &objects[5], &objects[6],
                        &objects[7], &objects[8], &bias_k2))
    return NULL;
  if (n < 0 || M < 0 || N < 0 || K < 0) {
    PyErr_SetString(PyExc_ValueError, "matmul_vjp: sizes must be >= 0");
    return NULL;
  }
  const int pair = objects[5] != Py_None; /* idx2: a second product of the same g */
  Py_buffer views[9];
  int held[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  PyObject *result = NULL;
  held[0] = get_flat(objects[0], &views[0], 0, n * M * N, 0, "g");
  if (held[0] != 1) {
    if (held[0] == 0) PyErr_SetString(PyExc_TypeError, "matmul_vjp: g is required");
    return NULL;
  }
  const char f = views[0].format[0];
  const int is_f64 = f == 'd' && views[0].format[1] == 0;
  if (!is_f64 && !(f == 'f' && views[0].format[1] == 0)) {
    PyErr_SetString(PyExc_TypeError, "matmul_vjp: g must be float32 or float64");
    goto done;
  }
  const Py_ssize_t item = is_f64 ? (Py_ssize_t)sizeof(double) : (Py_ssize_t)sizeof(float);
  const Py_ssize_t sums = out_t ? item : (Py_ssize_t)sizeof(double);
  const Py_ssize_t sizes[5] = {n * M * N, n * M * N, n * M * K, n * K * N, N};
  const Py_ssize_t items[5] = {item, 0, sums, sums, item};
  const char *names[9] = {"g", "idx", "ga", "gb", "gbias", "idx2", "ga2", "gb2", "gbias2"};
  for (int i = 1; i < 9; i++) { /* 5..8: the second product's, of the first's sizes */
    const int of = i < 5 ? i : i - 4;
    held[i] = get_flat(objects[i], &views[i], of >= 2, sizes[of], items[of], names[i]);
    if (held[i] < 0) goto done;
  }
  for (int i = 1; i < (pair ? 6 : 2); i += 4) {
    const char k = held[i] ? views[i].format[0] : 0;
    const Py_ssize_t width = held[i] ? views[i].itemsize : 0;
    if (!held[i] || !((width == 1 && k == 'b') || (width == 2 && k == 'h') || (width == 4 && (k == 'i' || k == 'l')))) {
      PyErr_Format(PyExc_TypeError, "matmul_vjp: %s must be int8, int16 or int32", names[i]);
      goto done;
    }
  }
  int status = 0;
  Py_BEGIN_ALLOW_THREADS
  const int32_t *idx[2] = {views[1].buf, pair ? views[5].buf : NULL};
  int32_t *wide[2] = {NULL, NULL};
  for (int p = 0; p < 1 + pair && status == 0; p++) {
    const Py_buffer *v = &views[1 + 4 * p];
    if (v->itemsize == 4) continue;
    wide[p] = malloc((size_t)(sizes[1] > 0 ? sizes[1] : 1) * sizeof(int32_t)); /* the winners as int32 */
    if (wide[p] == NULL) status = 2;
    else if (v->itemsize == 1) for (Py_ssize_t i = 0; i < sizes[1]; i++) wide[p][i] = ((const int8_t *)v->buf)[i];
    else for (Py_ssize_t i = 0; i < sizes[1]; i++) wide[p][i] = ((const int16_t *)v->buf)[i];
    idx[p] = wide[p];
  }
#define OUT(i) (held[i] ? views[i].buf : NULL)
  if (status == 0 && !pair) {
    status = matmul_vjp(views[0].buf, idx[0], n, M, N, K, OUT(2), OUT(3), gb_transposed, bias_k, OUT(4), out_t,
                        threads, is_f64);
  } else if (status == 0) {
    struct matmul_vjp_pair jobs;
    const int64_t first = matmul_vjp_plan(&jobs.job[0], views[0].buf, idx[0], n, M, N, K, OUT(2), OUT(3),
                                          gb_transposed, bias_k, OUT(4), out_t, threads, is_f64);
    const int64_t second = matmul_vjp_plan(&jobs.job[1], views[0].buf, idx[1], n, M, N, K, OUT(6), OUT(7),
                                           gb_transposed, bias_k2, OUT(8), out_t, threads, is_f64);
    jobs.first_tasks = first;
    if (first < 0 || second < 0) status = 1;
    else if (first + second > 0) status = tropic_pool_run(matmul_vjp_pair_task, &jobs, (int)(first + second), threads);
  }
#undef OUT
  free(wide[0]);
  free(wide[1]);
  Py_END_ALLOW_THREADS
  result = PyLong_FromLong(status);
done:
  for (int i = 0; i < 9; i++)
    if (held[i] == 1) PyBuffer_Release(&views[i]);
  return result;
}

/* addresses(*arrays): the address of each array's first element (as ``a.ctypes.data``; None stays
 * None), through the buffer protocol: about half a microsecond each, where ``a.ctypes.data`` builds
 * a helper object for every read (5 us on this project's VM, and the raw kernels take up to a
 * dozen addresses a call). */
static PyObject *py_addresses(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  (void)self;
  PyObject *result = PyTuple_New(nargs);
  if (result == NULL) return NULL;
  for (Py_ssize_t i = 0; i < nargs; i++) {
    PyObject *item;
    if (args[i] == Py_None) {
      Py_INCREF(Py_None);
      item = Py_None;
    } else {
      Py_buffer view;
      if (PyObject_GetBuffer(args[i], &view, PyBUF_STRIDES) < 0) {
        Py_DECREF(result);
        return NULL;
      }
      item = PyLong_FromVoidPtr(view.buf);
      PyBuffer_Release(&view);
      if (item == NULL) {
        Py_DECREF(result);
        return NULL;
      }
    }
    PyTuple_SET_ITEM(result, i, item);
  }
  return result;
}

static PyMethodDef methods[] = {
    {"matmul_vjp", py_matmul_vjp, METH_VARARGS,
     "matmul_vjp(g, idx, ga, gb, gbias, n, M, N, K, gb_transposed, bias_k, out_t, threads, idx2=None, ga2=None, "
     "gb2=None, gbias2=None, bias_k2=False) -> status; with idx2, a second product's backward from the same g"},
    {"addresses", (PyCFunction)(void (*)(void))py_addresses, METH_FASTCALL,
     "addresses(*arrays) -> the address of each array's first element (None for None)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scatter_c",
                                    "tropic's compiled backward passes (ctypes names and a direct entry point)",
                                    -1, methods};
PyMODINIT_FUNC PyInit__scatter_c(void) { return PyModule_Create(&module); }
