/* Compiled max-plus / min-plus matrix products with their winners (argmax / argmin), for tropic's
 * NumPy backend. Built as an extension module so that pip compiles it; called through ctypes
 * (tropic/backends/numpy/compiled.py binds the names below), and for small one-thread products
 * through the module's own function `product` (end of the file).
 *
 *   int tropic_matmul_f32(a, b, c, idx, M, K, N, maximise, threads)   (and _f64)
 *   const char *tropic_isa(void)     "avx512+avx2" (float32 AVX-512, float64 AVX2), "avx2" or
 *                                    "generic": the path the run-time dispatch chose
 *
 * a (M, K), b (K, N), c and idx (M, N): C-contiguous. For every output, in increasing k:
 *   v = a[i,k] + b[k,j]                  plain add in the array's precision (no wider type, no FMA)
 *   if (v > best) { best = v; win = k; } max-plus (maximise=1): best starts at -inf, win at -1
 *   if (v < best) { best = v; win = k; } min-plus (maximise=0): best starts at +inf
 * so ties keep the lowest k (-0.0 and +0.0 tie), NaN candidates never win (ordered compares are
 * false; so inf + -inf never wins, which is the absorbing rule), an output no candidate beats keeps
 * the tropical zero and -1, and the stored value is the winner's exact bits. Results are bitwise
 * independent of the ISA path and of the thread count. The caller applies the NaN rule and narrows
 * the int32 indices; K < 2^31 is the caller's job (K = 0 gives zeros and -1).
 * idx NULL: the values only (every path has instances without the index work: per pair an add and
 * a max, exactly "v > best ? v : best", so the values are the same bits).
 * Returns 0, or 2 when a work buffer could not be allocated.
 *   int tropic_matmul_part_f32(a, b, c, idx, M, K, N, maximise, task, tasks)   (and _f64): one share
 *                                    of a tasks-way split, on the calling thread
 *   int tropic_matmul_pooled_f32(a, b, c, idx, M, K, N, maximise, rounding, tasks, threads)
 *                                    (and _f64, rounding 0 only): the shares on the thread pool
 *
 * Fast path (x86-64 with AVX2, chosen once at run time), GEMM-style blocking:
 *  - B is packed, one block of at most KC rows x 16 column panels at a time, into a per-thread
 *    buffer (512 KiB: stays in L2), each panel KC x 16 floats (x 8 doubles) contiguous. Packing reads
 *    B rows in long contiguous runs, which DRAM and the prefetchers like (a pass down one narrow
 *    column panel, one cache line per row, crawled from DRAM for thin products). Given B's
 *    transpose instead (the direct entry's b_transposed: a layer's W in x @ W^T), the panels are
 *    packed from W's rows in 8 x 8 (4 x 4) tiles transposed in registers: no copy of W, no transposed
 *    product and no transposes of its results (x 64x256 @ W^T, W 256x256: 104 against 142 us).
 *  - A register-blocked micro-kernel keeps 3 rows x 16 columns of best values in 6 ymm registers and
 *    runs k innermost, in increasing order: per 8 pairs one add and one max (whose operand order,
 *    max(v, best), is exactly "v > best ? v : best"). Products with winners keep 2 rows x 16
 *    columns and take one compare and blend per 8 k and a rescan of the winning 8, read from W's
 *    row when B comes as its transpose W (kernel_*_blocked_winners; half precision rounds the sums,
 *    and with winners only the bests).
 *    Between k-blocks (in increasing order) the best so far waits in c / idx.
 *    The N tail uses masked loads / stores; M tails use 1- or 2-row instances.
 *  - OpenMP gives each thread a contiguous range of column panels, or of row blocks when that
 *    splits more evenly (few panels), so thin products (M = 64, large N) use every thread too.
 * AVX-512 path (float32 only; chosen ahead of AVX2 when the CPU has AVX-512F/VL/BW/DQ): the same
 *    packing, blocking, tails and split, with up to 8 rows x 16 columns per micro-kernel (one zmm of
 *    bests per row and product): per 16 pairs one add (A broadcast from memory) and one max. With
 *    winners, k-ranges of at least 256 (a pair's: 192) fold in blocks of 8 k and rescan, as the AVX2
 *    kernels; shorter ones compare each sum into a mask register and move value and index under it,
 *    exactly "v > best ? v : best" (ties and NaN keep best). An MPM layer's pair has its own kernel
 *    here too. The N tail uses mask-register loads / stores; M tails use 1- to 7-row instances.
 *    float64 stays AVX2.
 * Portable path: plain C with the same loop, for CPUs without AVX2 and non-x86 builds.
 * TROPIC_FORCE_GENERIC=1 in the environment (read at the first call) forces the portable path;
 * TROPIC_MAX_ISA=avx2 (read at the first call) caps the dispatch at AVX2 (skips AVX-512).
 * Tests use them to check that the paths agree. */
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "half_rounding.h"
#define TROPIC_X86 1
#endif
#include "thread_pool.h"

/* The calling convention of the exported functions: compiled.py refuses a build whose number is not
 * the one it was written for. */
int tropic_abi_version(void) { return 1; }

/* Products smaller than this many pairs (about 100^3, some 50 us on one core) run on one thread:
 * a team's barrier costs little on an idle machine but stalls for milliseconds when another process
 * (or another library's OpenMP pool, e.g. PyTorch's) holds the other cores, and a small product
 * should not pay that. */
#ifndef PARALLEL_PAIRS
#define PARALLEL_PAIRS (1 << 20)
#endif

static int thread_count(int threads, int64_t M, int64_t K, int64_t N, int64_t tiles) {
  if (threads < 1 || (double)M * (double)K * (double)N < PARALLEL_PAIRS) return 1;
  return tiles < threads ? (int)tiles : threads;
}

/* ------------------------------------------------------------------------------------------------
 * Portable path: for each row, a block of outputs stays in L1 while k runs over the whole of K. */
#define GENERIC_JB 512

/* Unconditional loads and the index select written as mask arithmetic, so that gcc vectorises the
 * j loop for float (a `t ? k : win` select defeats it); the double / int32 mix stays scalar. */
#define DEFINE_GENERIC(T, NAME)                                                                     \
  static void NAME##_step(T *restrict cr, int32_t *restrict ir, const T *restrict br, T x,          \
                          int32_t k, int64_t nj, int maximise) {                                    \
    if (ir == NULL) { /* values only */                                                            \
      if (maximise)                                                                                 \
        for (int64_t j = 0; j < nj; j++) {                                                          \
          const T v = x + br[j], cur = cr[j];                                                       \
          cr[j] = v > cur ? v : cur;                                                                \
        }                                                                                           \
      else                                                                                          \
        for (int64_t j = 0; j < nj; j++) {                                                          \
          const T v = x + br[j], cur = cr[j];                                                       \
          cr[j] = v < cur ? v : cur;                                                                \
        }                                                                                           \
    } else if (maximise) {                                                                          \
      for (int64_t j = 0; j < nj; j++) {                                                           \
        const T v = x + br[j], cur = cr[j];                                                         \
        const int32_t win = ir[j], t = -(int32_t)(v > cur);                                         \
        cr[j] = v > cur ? v : cur;                                                                  \
        ir[j] = (k & t) | (win & ~t);                                                               \
      }                                                                                             \
    } else {                                                                                        \
      for (int64_t j = 0; j < nj; j++) {                                                            \
        const T v = x + br[j], cur = cr[j];                                                         \
        const int32_t win = ir[j], t = -(int32_t)(v < cur);                                         \
        cr[j] = v < cur ? v : cur;                                                                  \
        ir[j] = (k & t) | (win & ~t);                                                               \
      }                                                                                             \
    }                                                                                               \
  }                                                                                                 \
  static void NAME##_rows(const T *a, const T *b, T *c, int32_t *idx, int64_t i, int64_t K,          \
                          int64_t N, int maximise) {                                               \
    const T zero = maximise ? (T)-INFINITY : (T)INFINITY;                                           \
    for (int64_t j0 = 0; j0 < N; j0 += GENERIC_JB) {                                                \
      const int64_t nj = N - j0 < GENERIC_JB ? N - j0 : GENERIC_JB;                                 \
      T *cr = c + i * N + j0;                                                                       \
      int32_t *ir = idx ? idx + i * N + j0 : NULL;                                                  \
      for (int64_t j = 0; j < nj; j++) cr[j] = zero;                                                \
      if (ir) for (int64_t j = 0; j < nj; j++) ir[j] = -1;                                          \
      for (int64_t k = 0; k < K; k++)                                                               \
        NAME##_step(cr, ir, b + k * N + j0, a[i * K + k], (int32_t)k, nj, maximise);                \
    }                                                                                               \
  }                                                                                                 \
  static int NAME##_share(const T *a, const T *b, T *c, int32_t *idx, int64_t M, int64_t K,        \
                          int64_t N, int maximise, int t, int n) {                                  \
    for (int64_t i = M * t / n; i < M * (t + 1) / n; i++) NAME##_rows(a, b, c, idx, i, K, N, maximise); \
    return 0;                                                                                       \
  }                                                                                                 \
  static int NAME(const T *a, const T *b, T *c, int32_t *idx, int64_t M, int64_t K, int64_t N,      \
                  int maximise, int threads) {                                                      \
    const int nt = thread_count(threads, M, K, N, M);                                               \
    _Pragma("omp parallel for num_threads(nt) schedule(static)")                                    \
    for (int64_t i = 0; i < M; i++) NAME##_rows(a, b, c, idx, i, K, N, maximise);                   \
    return 0;                                                                                       \
  }

DEFINE_GENERIC(float, generic_f32)
DEFINE_GENERIC(double, generic_f64)

/* ------------------------------------------------------------------------------------------------
 * AVX2 path. */
#ifdef TROPIC_X86

#define MR 3 /* rows per micro-kernel: 12 accumulators + broadcast, sum, mask, k = 16 ymm */
#ifndef PANELS
#define PANELS 16 /* column panels per packed block */
#endif
#ifndef KC
#define KC 512 /* most k per packed block: 512 x 16 panels x 64 bytes = 512 KiB */
#endif

#define AVX2 __attribute__((target("avx2")))
/* The float32 kernel also serves half-precision products (float16 rounding needs F16C's
 * conversions; they run only where tropic_rounding_supported() says the CPU has them). */
#define AVX2F16C __attribute__((target("avx2,f16c")))
#define INLINE static inline __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))

/* Copy rows k0 .. k0+kc-1 of pn panels of b starting at column j0 into buf, panel q at
 * buf + q*kc*NR, padding columns past N with the tropical zero. */
#define DEFINE_PACK(T, NR, NAME)                                                                    \
  static void NAME(const T *b, T *buf, int64_t N, int64_t k0, int64_t kc, int64_t j0, int64_t pn,   \
                   T zero) {                                                                        \
    for (int64_t k = 0; k < kc; k++) {                                                              \
      const T *src = b + (k0 + k) * N + j0;                                                         \
      for (int64_t q = 0; q < pn; q++) {                                                            \
        T *dst = buf + (q * kc + k) * NR;                                                           \
        const int64_t nj = N - j0 - q * NR;                                                         \
        if (nj >= NR) {                                                                             \
          memcpy(dst, src + q * NR, NR * sizeof(T));                                                \
        } else {                                                                                    \
          for (int64_t j = 0; j < NR; j++) dst[j] = j < nj ? src[q * NR + j] : zero;                \
        }                                                                                           \
      }                                                                                             \
    }                                                                                               \
  }

DEFINE_PACK(float, 16, pack_f32)
DEFINE_PACK(double, 8, pack_f64)

/* The same block packed from B's transpose: bt (N, K) C-contiguous, b[k][j] = bt[j * K + k] (the
 * W of a layer's x @ W^T, read where it lies instead of copied into B's layout first). W x W tiles
 * (8 floats, 4 doubles) are transposed in registers: TILE reads W rows of bt (src, K apart) and
 * writes W rows of the panel (dst, NR apart). Past N a tile's rows are the zero: such a tile is
 * read from a copy of its real rows and rows of the zero (one by one, it took a tenth of a 64 x
 * 256 @ 256 x 10 product). k tails go one by one. Only values move, so the products are bitwise
 * those of the packed B. */
#define DEFINE_PACK_T(T, NR, W, NAME, TILE)                                                         \
  static AVX2 void NAME(const T *bt, T *buf, int64_t N, int64_t K, int64_t k0, int64_t kc,         \
                        int64_t j0, int64_t pn, T zero) {                                           \
    for (int64_t q = 0; q < pn; q++) {                                                              \
      T *panel = buf + q * kc * NR;                                                                 \
      for (int64_t h = 0; h < NR; h += W) {                                                         \
        const int64_t col = j0 + q * NR + h, real = N - col; /* real: columns of B from col on */  \
        const T *src = bt + col * K + k0;                                                           \
        int64_t k = 0;                                                                              \
        if (real >= W) {                                                                            \
          for (; k + W <= kc; k += W) TILE(src + k, K, panel + k * NR + h, NR);                    \
        } else if (kc >= W) {                                                                       \
          T rows[W * W];                                                                            \
          for (int64_t v = (real > 0 ? real : 0) * W; v < W * W; v++) rows[v] = zero;               \
          for (; k + W <= kc; k += W) {                                                             \
            for (int64_t j = 0; j < real; j++)                                                      \
              memcpy(rows + j * W, src + j * K + k, W * sizeof(T));                                 \
            TILE(rows, W, panel + k * NR + h, NR);                                                  \
          }                                                                                         \
        }                                                                                           \
        for (; k < kc; k++)                                                                         \
          for (int64_t j = 0; j < W; j++) panel[k * NR + h + j] = j < real ? src[j * K + k] : zero; \
      }                                                                                             \
    }                                                                                               \
  }

/* dst rows 0..7 (ldd apart) = the columns of the 8 x 8 tile whose rows are src (lds apart). */
static inline AVX2 void transpose_tile_f32(const float *src, int64_t lds, float *dst, int64_t ldd) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) { /* elements 0, 1 | 4, 5 and 2, 3 | 6, 7 of rows i, i + 1 */
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) { /* columns 0 | 4, 1 | 5, 2 | 6, 3 | 7 of rows i .. i + 3 */
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; i++) { /* rows 0-3 from u[i], rows 4-7 from u[i + 4] */
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}

/* The same for a 4 x 4 tile of doubles. */
static inline AVX2 void transpose_tile_f64(const double *src, int64_t lds, double *dst, int64_t ldd) {
  const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + lds);
  const __m256d r2 = _mm256_loadu_pd(src + 2 * lds), r3 = _mm256_loadu_pd(src + 3 * lds);
  const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1); /* 0 | 2, 1 | 3 */
  const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}

DEFINE_PACK_T(float, 16, 8, pack_t_f32, transpose_tile_f32)
DEFINE_PACK_T(double, 8, 4, pack_t_f64, transpose_tile_f64)

/* Which lanes of a panel row hold real columns (ncols of them): `half` 0 or 1 of its 16 float32
 * (or int32) lanes, or of its 8 float64 lanes. */
INLINE AVX2 __m256i tail_mask_f32(int64_t ncols, int half) {
  const __m256i lane = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(8 * half));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)ncols), lane);
}
INLINE AVX2 __m256i tail_mask_f64(int64_t ncols, int half) {
  const __m256i lane = _mm256_add_epi64(_mm256_setr_epi64x(0, 1, 2, 3), _mm256_set1_epi64x(4 * half));
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(ncols), lane);
}

/* One pair step on 8 float lanes into the best s: max(v, s) == (v > s ? v : s) keeps s on ties and
 * NaN. */
#define STEP_F32(s, av, bv)                                                                         \
  do {                                                                                              \
    const __m256 v_ = tropic_rounded_sums(_mm256_add_ps(av, bv), rounding);                         \
    s = maximise ? _mm256_max_ps(v_, s) : _mm256_min_ps(v_, s);                                     \
  } while (0)

/* The values only (the winners: kernel_f32_blocked_winners below), `rows` (1..3) rows x 16 columns
 * for k in [k0, k1), each sum rounded to `rounding` (0: none). a: row 0 of A (row stride lda,
 * indexed by absolute k); bp: the panel's 16 values for k0, then ldb apart (16 when packed, N when
 * B is read in place); c: outputs (row stride ldc), of which the first ncols columns are real. For
 * k0 > 0 they hold the best so far and are read back. */
INLINE AVX2F16C void kernel_f32_rounded(const float *a, int64_t lda, const float *bp, int64_t ldb,
                                        int64_t k0, int64_t k1, float *c, int64_t ldc, int64_t ncols,
                                        const int rows, const int maximise, const int rounding) {
  const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda;
  const int full = ncols >= 16;
  const __m256i mask0 = tail_mask_f32(ncols, 0), mask1 = tail_mask_f32(ncols, 1);
#define LD(p) (full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask0))
#define LD8(p) (full ? _mm256_loadu_ps((p) + 8) : _mm256_maskload_ps((p) + 8, mask1))
#define ST(p, v) (full ? _mm256_storeu_ps(p, v) : _mm256_maskstore_ps(p, mask0, v))
#define ST8(p, v) (full ? _mm256_storeu_ps((p) + 8, v) : _mm256_maskstore_ps((p) + 8, mask1, v))
  __m256 s00, s01, s10, s11, s20, s21;
  s00 = s01 = s10 = s11 = s20 = s21 = _mm256_set1_ps(maximise ? -INFINITY : INFINITY);
  if (k0 > 0) {
    s00 = LD(c); s01 = LD8(c);
    if (rows > 1) { s10 = LD(c + ldc); s11 = LD8(c + ldc); }
    if (rows > 2) { s20 = LD(c + 2 * ldc); s21 = LD8(c + 2 * ldc); }
  }
  for (int64_t k = k0; k < k1; k++, bp += ldb) {
    const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
    __m256 av = _mm256_broadcast_ss(a0 + k);
    STEP_F32(s00, av, b0);
    STEP_F32(s01, av, b1);
    if (rows > 1) {
      av = _mm256_broadcast_ss(a1 + k);
      STEP_F32(s10, av, b0);
      STEP_F32(s11, av, b1);
    }
    if (rows > 2) {
      av = _mm256_broadcast_ss(a2 + k);
      STEP_F32(s20, av, b0);
      STEP_F32(s21, av, b1);
    }
  }
  ST(c, s00); ST8(c, s01);
  if (rows > 1) { ST(c + ldc, s10); ST8(c + ldc, s11); }
  if (rows > 2) { ST(c + 2 * ldc, s20); ST8(c + 2 * ldc, s21); }
#undef LD
#undef LD8
#undef ST
#undef ST8
}

#define DEFINE_ROUNDING(NAME, ROUNDING)                                                             \
  INLINE AVX2F16C void NAME(const float *a, int64_t lda, const float *bp, int64_t ldb, int64_t k0,  \
                            int64_t k1, float *c, int64_t ldc, int64_t ncols, const int rows,       \
                            const int maximise) {                                                   \
    kernel_f32_rounded(a, lda, bp, ldb, k0, k1, c, ldc, ncols, rows, maximise, ROUNDING);          \
  }
DEFINE_ROUNDING(kernel_f32_values, 0)
DEFINE_ROUNDING(kernel_f32_f16_values, 1)
DEFINE_ROUNDING(kernel_f32_bf16_values, 2)

/* The same on 4 double lanes, rows x 8 outputs (the winners: kernel_f64_blocked_winners, whose
 * int32 winners ride in 64-bit lanes, converted from and narrowed to int32 at the ends). */
#define STEP_F64(s, av, bv)                                                                         \
  do {                                                                                              \
    const __m256d v_ = _mm256_add_pd(av, bv);                                                       \
    s = maximise ? _mm256_max_pd(v_, s) : _mm256_min_pd(v_, s);                                     \
  } while (0)

INLINE AVX2 void load_idx64(const int32_t *src, int full, __m256i mask, __m256d *lo, __m256d *hi) {
  const __m256i v = full ? _mm256_loadu_si256((const __m256i *)src) : _mm256_maskload_epi32(src, mask);
  *lo = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
  *hi = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
}

INLINE AVX2 void store_idx64(int32_t *dst, int full, __m256i mask, __m256d lo4, __m256d hi4) {
  const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m256i lo = _mm256_permutevar8x32_epi32(_mm256_castpd_si256(lo4), pick);
  const __m256i hi = _mm256_permutevar8x32_epi32(_mm256_castpd_si256(hi4), pick);
  const __m256i v = _mm256_blend_epi32(lo, hi, 0xf0);
  if (full) _mm256_storeu_si256((__m256i *)dst, v);
  else _mm256_maskstore_epi32(dst, mask, v);
}

INLINE AVX2 void kernel_f64_values(const double *a, int64_t lda, const double *bp, int64_t ldb, int64_t k0,
                                   int64_t k1, double *c, int64_t ldc, int64_t ncols, const int rows,
                                   const int maximise) {
  const double *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda;
  const int full = ncols >= 8;
  const __m256i mask0 = tail_mask_f64(ncols, 0), mask1 = tail_mask_f64(ncols, 1);
#define LD(p) (full ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, mask0))
#define LD4(p) (full ? _mm256_loadu_pd((p) + 4) : _mm256_maskload_pd((p) + 4, mask1))
#define ST(p, v) (full ? _mm256_storeu_pd(p, v) : _mm256_maskstore_pd(p, mask0, v))
#define ST4(p, v) (full ? _mm256_storeu_pd((p) + 4, v) : _mm256_maskstore_pd((p) + 4, mask1, v))
  __m256d s00, s01, s10, s11, s20, s21;
  s00 = s01 = s10 = s11 = s20 = s21 = _mm256_set1_pd(maximise ? -INFINITY : INFINITY);
  if (k0 > 0) {
    s00 = LD(c); s01 = LD4(c);
    if (rows > 1) { s10 = LD(c + ldc); s11 = LD4(c + ldc); }
    if (rows > 2) { s20 = LD(c + 2 * ldc); s21 = LD4(c + 2 * ldc); }
  }
  for (int64_t k = k0; k < k1; k++, bp += ldb) {
    const __m256d b0 = _mm256_loadu_pd(bp), b1 = _mm256_loadu_pd(bp + 4);
    __m256d av = _mm256_broadcast_sd(a0 + k);
    STEP_F64(s00, av, b0);
    STEP_F64(s01, av, b1);
    if (rows > 1) {
      av = _mm256_broadcast_sd(a1 + k);
      STEP_F64(s10, av, b0);
      STEP_F64(s11, av, b1);
    }
    if (rows > 2) {
      av = _mm256_broadcast_sd(a2 + k);
      STEP_F64(s20, av, b0);
      STEP_F64(s21, av, b1);
    }
  }
  ST(c, s00); ST4(c, s01);
  if (rows > 1) { ST(c + ldc, s10); ST4(c + ldc, s11); }
  if (rows > 2) { ST(c + 2 * ldc, s20); ST4(c + 2 * ldc, s21); }
#undef LD
#undef LD4
#undef ST
#undef ST4
}

/* Winners with one compare and blend per 8 pairs (plain float32 and float64 products). The compare
 * and blend that track the winner of every pair run on the vector pipes the max needs, and cost a
 * product with winners about twice the time of its values alone on AVX2. Here k runs in blocks of
 * WINNER_BLOCK: the values fold exactly as above, max(v, best) per pair, and only at the end of a
 * block is the best compared with the best at its start; where it grew, the block's first k becomes
 * the winner. After the last block, each winner so marked in [k0, k1) is resolved by a rescan of
 * its block: the first k whose sum equals the final best. That is the sequential rule's winner:
 * the best grew for the last time in that block (it was below the final best before the block and
 * never grows after it), and it grew there at the first pair whose sum reaches the final best (a
 * NaN sum equals nothing). float32 64x256 @ 256x256 on one AVX2 core: 1.8-2.0x the values-only
 * time before, 1.3-1.4x with this.
 * `rows` 1 or 2: 4 best, 4 saved best, 4 winners, two B vectors and a broadcast in 16 ymm. The
 * template is written once for both types: P is the intrinsics' suffix (ps, pd), W the lanes per
 * vector, and the type's helpers below load, store and mark the winners and rescan a block. */
#define WINNER_BLOCK 8

/* A row's 2 W columns of the panel as two vectors of W lanes (T, V, intrinsics suffix P), loaded and
 * stored under tail_mask_SFX where the panel has fewer real columns. */
#define DEFINE_VALUES_IO(T, V, P, W, SFX)                                                           \
  INLINE AVX2 void values_load_##SFX(const T *src, int64_t ncols, V *v0, V *v1) {                   \
    *v0 = ncols >= 2 * W ? _mm256_loadu_##P(src) : _mm256_maskload_##P(src, tail_mask_##SFX(ncols, 0)); \
    *v1 = ncols >= 2 * W ? _mm256_loadu_##P(src + W)                                                \
                         : _mm256_maskload_##P(src + W, tail_mask_##SFX(ncols, 1));                 \
  }                                                                                                 \
  INLINE AVX2 void values_store_##SFX(T *dst, int64_t ncols, V v0, V v1) {                          \
    if (ncols >= 2 * W) {                                                                           \
      _mm256_storeu_##P(dst, v0);                                                                   \
      _mm256_storeu_##P(dst + W, v1);                                                               \
    } else {                                                                                        \
      _mm256_maskstore_##P(dst, tail_mask_##SFX(ncols, 0), v0);                                     \
      _mm256_maskstore_##P(dst + W, tail_mask_##SFX(ncols, 1), v1);                                 \
    }                                                                                               \
  }

/* float32: 16 columns as two vectors of 8; winners as int32 bit patterns in float lanes. */
DEFINE_VALUES_IO(float, __m256, ps, 8, f32)
INLINE AVX2 void winners_load_f32(const int32_t *src, int64_t ncols, __m256 *x0, __m256 *x1) {
  values_load_f32((const float *)src, ncols, x0, x1);
}
INLINE AVX2 void winners_store_f32(int32_t *dst, int64_t ncols, __m256 x0, __m256 x1) {
  values_store_f32((float *)dst, ncols, x0, x1);
}
INLINE AVX2 __m256 block_mark_f32(int64_t kb) { return _mm256_castsi256_ps(_mm256_set1_epi32((int32_t)kb)); }
/* Where in a full block of 8 the first sum a[k] + b[k][j] (rounded as the kernel rounds it) equal
 * to `best` lies (ak: a[kb]; bq: b[kb][j], rows ldb apart); the block holds it, so the 8th needs no
 * test. _row: B's column read as its transpose's row (bq: bt[j][kb], the 8 contiguous). */
INLINE AVX2F16C int first_equal_f32(const float *ak, const float *bq, int64_t ldb, float best,
                                    const int rounding) {
  const __m256 bcol = _mm256_setr_ps(bq[0], bq[ldb], bq[2 * ldb], bq[3 * ldb], bq[4 * ldb], bq[5 * ldb],
                                     bq[6 * ldb], bq[7 * ldb]);
  const __m256 v = tropic_rounded_sums(_mm256_add_ps(_mm256_loadu_ps(ak), bcol), rounding);
  return __builtin_ctz(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(best), _CMP_EQ_OQ)) | 128);
}
INLINE AVX2F16C int first_equal_row_f32(const float *ak, const float *bq, float best, const int rounding) {
  const __m256 v = tropic_rounded_sums(_mm256_add_ps(_mm256_loadu_ps(ak), _mm256_loadu_ps(bq)), rounding);
  return __builtin_ctz(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(best), _CMP_EQ_OQ)) | 128);
}

/* float64: 8 columns as two vectors of 4; winners in 64-bit lanes (load_idx64 / store_idx64). */
DEFINE_VALUES_IO(double, __m256d, pd, 4, f64)
INLINE AVX2 void winners_load_f64(const int32_t *src, int64_t ncols, __m256d *x0, __m256d *x1) {
  load_idx64(src, ncols >= 8, tail_mask_f32(ncols, 0), x0, x1);
}
INLINE AVX2 void winners_store_f64(int32_t *dst, int64_t ncols, __m256d x0, __m256d x1) {
  store_idx64(dst, ncols >= 8, tail_mask_f32(ncols, 0), x0, x1);
}
INLINE AVX2 __m256d block_mark_f64(int64_t kb) { return _mm256_castsi256_pd(_mm256_set1_epi64x(kb)); }
INLINE AVX2 int first_equal_f64(const double *ak, const double *bq, int64_t ldb, double best,
                                const int rounding) {
  (void)rounding; /* half precision is widened to float32 only */
  const __m256d target = _mm256_set1_pd(best);
  const __m256d lo = _mm256_add_pd(_mm256_loadu_pd(ak), _mm256_setr_pd(bq[0], bq[ldb], bq[2 * ldb], bq[3 * ldb]));
  const __m256d hi = _mm256_add_pd(_mm256_loadu_pd(ak + 4),
                                   _mm256_setr_pd(bq[4 * ldb], bq[5 * ldb], bq[6 * ldb], bq[7 * ldb]));
  const int hit = _mm256_movemask_pd(_mm256_cmp_pd(lo, target, _CMP_EQ_OQ)) |
                  _mm256_movemask_pd(_mm256_cmp_pd(hi, target, _CMP_EQ_OQ)) << 4;
  return __builtin_ctz(hit | 128);
}
INLINE AVX2 int first_equal_row_f64(const double *ak, const double *bq, double best, const int rounding) {
  (void)rounding;
  const __m256d target = _mm256_set1_pd(best);
  const __m256d lo = _mm256_add_pd(_mm256_loadu_pd(ak), _mm256_loadu_pd(bq));
  const __m256d hi = _mm256_add_pd(_mm256_loadu_pd(ak + 4), _mm256_loadu_pd(bq + 4));
  const int hit = _mm256_movemask_pd(_mm256_cmp_pd(lo, target, _CMP_EQ_OQ)) |
                  _mm256_movemask_pd(_mm256_cmp_pd(hi, target, _CMP_EQ_OQ)) << 4;
  return __builtin_ctz(hit | 128);
}

/* One sum rounded as the kernels round it (rescans' last, partial blocks). */
INLINE AVX2F16C float rounded_sum_f32(float sum, const int rounding) {
  return rounding ? _mm256_cvtss_f32(tropic_rounded_sums(_mm256_set1_ps(sum), rounding)) : sum;
}
INLINE AVX2 double rounded_sum_f64(double sum, const int rounding) {
  (void)rounding;
  return sum;
}

/* The kernel for type T (vectors V of W lanes; intrinsics suffix P; helpers named _SFX). `rounding`
 * (float32 only: 1 float16, 2 bfloat16): the candidates are the rounded sums, as in
 * kernel_f32_rounded, but only the bests are rounded. Rounding to nearest is monotone, so the best
 * of the rounded sums is the rounded best of the sums (no nonzero sum of two half-precision numbers
 * rounds to zero: the signed zeros agree too), and the rounded best grew in a block exactly when the
 * rounded best at its end is above the one at its start; the rescan then looks for the first
 * rounded sum equal to the final (rounded) best. Per pair, an add and a max, as unrounded. */
#define DEFINE_BLOCKED_WINNERS(T, V, W, P, BROADCAST, SFX)                                          \
  /* The winner of a block kb marked for the final best `best`: the first k in [kb, min(kb + 8, k1)) \
   * whose sum equals it (bq: b[kb][j], `step` apart; row: bq is bt[j][kb], step 1). The block   \
   * holds it (kb is returned only where it does not, which cannot happen). */                    \
  INLINE AVX2F16C int32_t block_winner_##SFX(const T *ar, const T *bq, int64_t step, const int row,  \
                                             int64_t kb, int64_t k1, T best, const int rounding) {  \
    if (k1 - kb >= WINNER_BLOCK)                                                                    \
      return (int32_t)kb + (row ? first_equal_row_##SFX(ar + kb, bq, best, rounding)               \
                                : first_equal_##SFX(ar + kb, bq, step, best, rounding));            \
    for (int64_t k = kb; k < k1; k++, bq += step)                                                   \
      if (rounded_sum_##SFX(ar[k] + *bq, rounding) == best) return (int32_t)k;                     \
    return (int32_t)kb;                                                                             \
  }                                                                                                 \
  /* One row's rescans: each winner marked in [k0, k1) (the first k of its block) becomes the first \
   * k of that block whose sum equals the final best cr[j] (ar: the row of A; bp0: B's row k0; or, \
   * bcols not NULL, B's columns as rows of its transpose, ldw apart: k in a row, contiguous). */  \
  INLINE AVX2F16C void rescan_lanes_##SFX(const T *ar, const T *bp0, int64_t ldb, const T *bcols,     \
                                          int64_t ldw, int64_t k0, int64_t k1, const T *cr, int32_t *xr, \
                                          int64_t ncols, const int rounding, const int row) {       \
    for (int64_t j = 0; j < ncols; j++) {                                                           \
      const int64_t kb = xr[j];                                                                     \
      if (kb < k0) continue; /* no growth in this call (or -1: none at all) */                     \
      xr[j] = row ? block_winner_##SFX(ar, bcols + j * ldw + kb, 1, 1, kb, k1, cr[j], rounding)     \
                  : block_winner_##SFX(ar, bp0 + (kb - k0) * ldb + j, ldb, 0, kb, k1, cr[j], rounding); \
    }                                                                                               \
  }                                                                                                 \
  /* Out of line: inlined beside the panel's, it changed the register allocation of the kernels. */ \
  static NOINLINE AVX2F16C void rescan_rows_##SFX(const T *ar, const T *bcols, int64_t ldw, int64_t k0, \
                                                  int64_t k1, const T *cr, int32_t *xr, int64_t ncols, \
                                                  const int rounding) {                             \
    rescan_lanes_##SFX(ar, NULL, 0, bcols, ldw, k0, k1, cr, xr, ncols, rounding, 1);                \
  }                                                                                                 \
  INLINE AVX2F16C void rescan_##SFX(const T *ar, const T *bp0, int64_t ldb, const T *bcols, int64_t ldw, \
                                    int64_t k0, int64_t k1, const T *cr, int32_t *xr, int64_t ncols, \
                                    const int rounding) {                                           \
    if (bcols != NULL)                                                                              \
      rescan_rows_##SFX(ar, bcols, ldw, k0, k1, cr, xr, ncols, rounding);                           \
    else                                                                                            \
      rescan_lanes_##SFX(ar, bp0, ldb, NULL, 0, k0, k1, cr, xr, ncols, rounding, 0);                \
  }                                                                                                 \
  INLINE AVX2F16C void kernel_##SFX##_blocked_winners(const T *a, int64_t lda, const T *bp,          \
                                                      int64_t ldb, int64_t k0, int64_t k1, T *c,     \
                                                      int32_t *ix, int64_t ldc, int64_t ncols,       \
                                                      const int rows, const int maximise,            \
                                                      const int rounding, const T *bcols) {          \
    const T *a0 = a, *a1 = a + lda, *const bp0 = bp;                                                \
    V s00, s01, s10, s11, x00, x01, x10, x11;                                                       \
    s00 = s01 = s10 = s11 = _mm256_set1_##P(maximise ? -INFINITY : INFINITY);                       \
    x00 = x01 = x10 = x11 = _mm256_castsi256_##P(_mm256_set1_epi32(-1)); /* -1 in either width */   \
    if (k0 > 0) {                                                                                   \
      values_load_##SFX(c, ncols, &s00, &s01);                                                      \
      winners_load_##SFX(ix, ncols, &x00, &x01);                                                    \
      if (rows > 1) {                                                                               \
        values_load_##SFX(c + ldc, ncols, &s10, &s11);                                              \
        winners_load_##SFX(ix + ldc, ncols, &x10, &x11);                                            \
      }                                                                                             \
    }                                                                                               \
    for (int64_t kb = k0; kb < k1; kb += WINNER_BLOCK) {                                            \
      const V o00 = s00, o01 = s01, o10 = s10, o11 = s11;                                           \
      const int64_t ke = k1 - kb < WINNER_BLOCK ? k1 : kb + WINNER_BLOCK;                           \
      if (ke - kb == WINNER_BLOCK) { /* a constant trip count, unrolled */                         \
        for (int g = 0; g < WINNER_BLOCK; g++) FOLD_ROWS(kb + g, V, W, P, BROADCAST);               \
      } else {                                                                                      \
        for (int64_t k = kb; k < ke; k++) FOLD_ROWS(k, V, W, P, BROADCAST);                         \
      }                                                                                             \
      const V kv = block_mark_##SFX(kb);                                                            \
      x00 = _mm256_blendv_##P(x00, kv, GREW(ROUNDED_##P(s00), ROUNDED_##P(o00), P));                \
      x01 = _mm256_blendv_##P(x01, kv, GREW(ROUNDED_##P(s01), ROUNDED_##P(o01), P));                \
      if (rows > 1) {                                                                               \
        x10 = _mm256_blendv_##P(x10, kv, GREW(ROUNDED_##P(s10), ROUNDED_##P(o10), P));              \
        x11 = _mm256_blendv_##P(x11, kv, GREW(ROUNDED_##P(s11), ROUNDED_##P(o11), P));              \
      }                                                                                             \
    }                                                                                               \
    values_store_##SFX(c, ncols, ROUNDED_##P(s00), ROUNDED_##P(s01));                               \
    winners_store_##SFX(ix, ncols, x00, x01);                                                       \
    if (rows > 1) {                                                                                 \
      values_store_##SFX(c + ldc, ncols, ROUNDED_##P(s10), ROUNDED_##P(s11));                       \
      winners_store_##SFX(ix + ldc, ncols, x10, x11);                                               \
    }                                                                                               \
    for (int r = 0; r < rows; r++) /* the rescans */                                               \
      rescan_##SFX(a + r * lda, bp0, ldb, bcols, lda, k0, k1, c + r * ldc, ix + r * ldc, ncols, rounding); \
  }
#define FOLD(s, av, bv, P)                                                                          \
  (maximise ? _mm256_max_##P(_mm256_add_##P(av, bv), s) : _mm256_min_##P(_mm256_add_##P(av, bv), s))
#define ROUNDED_ps(v) tropic_rounded_sums(v, rounding)
#define ROUNDED_pd(v) (v) /* half precision is widened to float32 only */
#define FOLD_ROWS(k, V, W, P, BROADCAST) /* pair k of one or two rows into the best (bp: row k of B) */ \
  do {                                                                                              \
    const V b0 = _mm256_loadu_##P(bp), b1 = _mm256_loadu_##P(bp + W);                               \
    V av = BROADCAST(a0 + (k));                                                                     \
    s00 = FOLD(s00, av, b0, P);                                                                     \
    s01 = FOLD(s01, av, b1, P);                                                                     \
    if (rows > 1) {                                                                                 \
      av = BROADCAST(a1 + (k));                                                                     \
      s10 = FOLD(s10, av, b0, P);                                                                   \
      s11 = FOLD(s11, av, b1, P);                                                                   \
    }                                                                                               \
    bp += ldb;                                                                                      \
  } while (0)
#define GREW(s, o, P) (maximise ? _mm256_cmp_##P(s, o, _CMP_GT_OQ) : _mm256_cmp_##P(s, o, _CMP_LT_OQ))
DEFINE_BLOCKED_WINNERS(float, __m256, 8, ps, _mm256_broadcast_ss, f32)
DEFINE_BLOCKED_WINNERS(double, __m256d, 4, pd, _mm256_broadcast_sd, f64)
#undef FOLD_ROWS
#undef FOLD
#undef ROUNDED_ps
#undef ROUNDED_pd
#undef GREW

/* An MPM layer's two products in one pass: the max-plus and the min-plus product of one A and one
 * packed B (the layer's shared weight). Each pair's sum is added once and folded into both bests,
 * max(v, best) and min(v, best), exactly as the two kernels above fold it: their values and
 * winners, bit for bit, for one add, one max and one min per pair instead of two adds, a max and a
 * min (and one pass over A and the packed B instead of two). The max-plus outputs are at c (ix),
 * the min-plus ones `second` elements further. With winners one row per call (4 bests, 4 saved
 * bests, 4 winners, two B vectors and a broadcast in 16 ymm), blocked as above, then both products'
 * rescans; values only, up to 3 rows (12 bests). On the first-generation Zen VM, one AVX2 core, a
 * standalone loop of the row with winners over 784 k took 0.71x the time of the two blocked
 * kernels' rows. */
#define PAIR_STEP(av, s0, s1, m0, m1, P) /* one row's pair k into both bests (b0, b1: row k of B) */ \
  do {                                                                                              \
    const __typeof__(b0) v0_ = _mm256_add_##P(av, b0), v1_ = _mm256_add_##P(av, b1);               \
    s0 = _mm256_max_##P(v0_, s0);                                                                   \
    s1 = _mm256_max_##P(v1_, s1);                                                                   \
    m0 = _mm256_min_##P(v0_, m0);                                                                   \
    m1 = _mm256_min_##P(v1_, m1);                                                                   \
  } while (0)
#define DEFINE_PAIR(T, V, W, P, BROADCAST, SFX)                                                     \
  INLINE AVX2F16C void pair_winners_##SFX(const T *a, const T *bp, int64_t ldb, int64_t k0, int64_t k1, \
                                      T *c, int32_t *ix, int64_t ncols, int64_t second,              \
                                      const T *bcols, int64_t ldw) {                                 \
    const T *const bp0 = bp;                                                                        \
    T *const d = c + second;                                                                        \
    int32_t *const jx = ix + second;                                                                \
    V s0, s1, m0, m1, x0, x1, y0, y1;                                                               \
    s0 = s1 = _mm256_set1_##P(-INFINITY);                                                           \
    m0 = m1 = _mm256_set1_##P(INFINITY);                                                            \
    x0 = x1 = y0 = y1 = _mm256_castsi256_##P(_mm256_set1_epi32(-1)); /* -1 in either width */      \
    if (k0 > 0) {                                                                                   \
      values_load_##SFX(c, ncols, &s0, &s1);                                                        \
      winners_load_##SFX(ix, ncols, &x0, &x1);                                                      \
      values_load_##SFX(d, ncols, &m0, &m1);                                                        \
      winners_load_##SFX(jx, ncols, &y0, &y1);                                                      \
    }                                                                                               \
    for (int64_t kb = k0; kb < k1; kb += WINNER_BLOCK) {                                            \
      const V o0 = s0, o1 = s1, p0 = m0, p1 = m1;                                                   \
      const int64_t ke = k1 - kb < WINNER_BLOCK ? k1 : kb + WINNER_BLOCK;                           \
      if (ke - kb == WINNER_BLOCK) { /* a constant trip count, unrolled */                         \
        for (int g = 0; g < WINNER_BLOCK; g++, bp += ldb) {                                         \
          const V b0 = _mm256_loadu_##P(bp), b1 = _mm256_loadu_##P(bp + W);                         \
          PAIR_STEP(BROADCAST(a + kb + g), s0, s1, m0, m1, P);                                      \
        }                                                                                           \
      } else {                                                                                      \
        for (int64_t k = kb; k < ke; k++, bp += ldb) {                                              \
          const V b0 = _mm256_loadu_##P(bp), b1 = _mm256_loadu_##P(bp + W);                         \
          PAIR_STEP(BROADCAST(a + k), s0, s1, m0, m1, P);                                           \
        }                                                                                           \
      }                                                                                             \
      const V kv = block_mark_##SFX(kb);                                                            \
      x0 = _mm256_blendv_##P(x0, kv, _mm256_cmp_##P(s0, o0, _CMP_GT_OQ));                           \
      x1 = _mm256_blendv_##P(x1, kv, _mm256_cmp_##P(s1, o1, _CMP_GT_OQ));                           \
      y0 = _mm256_blendv_##P(y0, kv, _mm256_cmp_##P(m0, p0, _CMP_LT_OQ));                           \
      y1 = _mm256_blendv_##P(y1, kv, _mm256_cmp_##P(m1, p1, _CMP_LT_OQ));                           \
    }                                                                                               \
    values_store_##SFX(c, ncols, s0, s1);                                                           \
    winners_store_##SFX(ix, ncols, x0, x1);                                                         \
    values_store_##SFX(d, ncols, m0, m1);                                                           \
    winners_store_##SFX(jx, ncols, y0, y1);                                                         \
    rescan_##SFX(a, bp0, ldb, bcols, ldw, k0, k1, c, ix, ncols, 0);                                 \
    rescan_##SFX(a, bp0, ldb, bcols, ldw, k0, k1, d, jx, ncols, 0);                                 \
  }                                                                                                 \
  INLINE AVX2F16C void pair_values_##SFX(const T *a, int64_t lda, const T *bp, int64_t ldb, int64_t k0,  \
                                     int64_t k1, T *c, int64_t ldc, int64_t ncols, int64_t second,   \
                                     const int rows) {                                              \
    V s00, s01, s10, s11, s20, s21, m00, m01, m10, m11, m20, m21;                                   \
    s00 = s01 = s10 = s11 = s20 = s21 = _mm256_set1_##P(-INFINITY);                                 \
    m00 = m01 = m10 = m11 = m20 = m21 = _mm256_set1_##P(INFINITY);                                  \
    if (k0 > 0) {                                                                                   \
      values_load_##SFX(c, ncols, &s00, &s01);                                                      \
      values_load_##SFX(c + second, ncols, &m00, &m01);                                             \
      if (rows > 1) {                                                                               \
        values_load_##SFX(c + ldc, ncols, &s10, &s11);                                              \
        values_load_##SFX(c + ldc + second, ncols, &m10, &m11);                                     \
      }                                                                                             \
      if (rows > 2) {                                                                               \
        values_load_##SFX(c + 2 * ldc, ncols, &s20, &s21);                                          \
        values_load_##SFX(c + 2 * ldc + second, ncols, &m20, &m21);                                 \
      }                                                                                             \
    }                                                                                               \
    for (int64_t k = k0; k < k1; k++, bp += ldb) {                                                  \
      const V b0 = _mm256_loadu_##P(bp), b1 = _mm256_loadu_##P(bp + W);                             \
      PAIR_STEP(BROADCAST(a + k), s00, s01, m00, m01, P);                                           \
      if (rows > 1) PAIR_STEP(BROADCAST(a + lda + k), s10, s11, m10, m11, P);                       \
      if (rows > 2) PAIR_STEP(BROADCAST(a + 2 * lda + k), s20, s21, m20, m21, P);                   \
    }                                                                                               \
    values_store_##SFX(c, ncols, s00, s01);                                                         \
    values_store_##SFX(c + second, ncols, m00, m01);                                                \
    if (rows > 1) {                                                                                 \
      values_store_##SFX(c + ldc, ncols, s10, s11);                                                 \
      values_store_##SFX(c + ldc + second, ncols, m10, m11);                                        \
    }                                                                                               \
    if (rows > 2) {                                                                                 \
      values_store_##SFX(c + 2 * ldc, ncols, s20, s21);                                             \
      values_store_##SFX(c + 2 * ldc + second, ncols, m20, m21);                                    \
    }                                                                                               \
  }                                                                                                 \
  INLINE AVX2F16C void kernel_##SFX##_pair(const T *a, int64_t lda, const T *bp, int64_t ldb, int64_t k0, \
                                       int64_t k1, T *c, int32_t *ix, int64_t ldc, int64_t ncols,    \
                                       int64_t second, const T *bcols, const int rows, const int indexed) { \
    if (!indexed) {                                                                                 \
      pair_values_##SFX(a, lda, bp, ldb, k0, k1, c, ldc, ncols, second, rows);                      \
      return;                                                                                       \
    }                                                                                               \
    for (int r = 0; r < rows; r++)                                                                  \
      pair_winners_##SFX(a + r * lda, bp, ldb, k0, k1, c + r * ldc, ix + r * ldc, ncols, second, bcols, lda); \
  }
DEFINE_PAIR(float, __m256, 8, ps, _mm256_broadcast_ss, f32)
DEFINE_PAIR(double, __m256d, 4, pd, _mm256_broadcast_sd, f64)
#undef PAIR_STEP

/* The kernels the drivers call: values only as above, winners in blocks (three rows as two and
 * one: twelve blocked accumulators do not fit in 16 ymm); ROUNDING as kernel_f32_rounded's. */
#define DEFINE_KERNEL(T, NAME, SFX, VALUES, ROUNDING)                                               \
  INLINE AVX2F16C void NAME(const T *a, int64_t lda, const T *bp, int64_t ldb, int64_t k0,           \
                            int64_t k1, T *c, int32_t *ix, int64_t ldc, int64_t ncols,               \
                            const T *bcols, const int rows, const int maximise, const int indexed) { \
    if (!indexed) {                                                                                 \
      VALUES(a, lda, bp, ldb, k0, k1, c, ldc, ncols, rows, maximise);                               \
    } else {                                                                                        \
      kernel_##SFX##_blocked_winners(a, lda, bp, ldb, k0, k1, c, ix, ldc, ncols, rows < 2 ? rows : 2, \
                                     maximise, ROUNDING, bcols);                                    \
      if (rows == 3)                                                                                \
        kernel_##SFX##_blocked_winners(a + 2 * lda, lda, bp, ldb, k0, k1, c + 2 * ldc, ix + 2 * ldc, \
                                       ldc, ncols, 1, maximise, ROUNDING, bcols);                   \
    }                                                                                               \
  }
DEFINE_KERNEL(float, kernel_f32, f32, kernel_f32_values, 0)
DEFINE_KERNEL(float, kernel_f32_f16, f32, kernel_f32_f16_values, 1)
DEFINE_KERNEL(float, kernel_f32_bf16, f32, kernel_f32_bf16_values, 2)
DEFINE_KERNEL(double, kernel_f64, f64, kernel_f64_values, 0)
#undef DEFINE_KERNEL

/* One instance per (winners or values only, min/max/pair, rows), so that all three are constants
 * inside the loop: KERNEL##_table[indexed][maximise][rows - 1], maximise 0 (min-plus), 1 (max-plus)
 * or 2 (both at once: KERNEL##_pair, the min-plus outputs `second` elements after the max-plus
 * ones; PAIR_ROW is PAIRS, or NO_PAIRS for a kernel without one). */
#define DEFINE_INSTANCES(T, KERNEL, PAIR_ROW)                                                       \
  typedef void (*KERNEL##_fn)(const T *, int64_t, const T *, int64_t, int64_t, int64_t, T *,        \
                              int32_t *, int64_t, int64_t, int64_t, const T *);                    \
  DEFINE_INSTANCE(T, KERNEL, 1, 0, 0) DEFINE_INSTANCE(T, KERNEL, 2, 0, 0)                           \
  DEFINE_INSTANCE(T, KERNEL, 3, 0, 0) DEFINE_INSTANCE(T, KERNEL, 1, 1, 0)                           \
  DEFINE_INSTANCE(T, KERNEL, 2, 1, 0) DEFINE_INSTANCE(T, KERNEL, 3, 1, 0)                           \
  DEFINE_INSTANCE(T, KERNEL, 1, 0, 1) DEFINE_INSTANCE(T, KERNEL, 2, 0, 1)                           \
  DEFINE_INSTANCE(T, KERNEL, 3, 0, 1) DEFINE_INSTANCE(T, KERNEL, 1, 1, 1)                           \
  DEFINE_INSTANCE(T, KERNEL, 2, 1, 1) DEFINE_INSTANCE(T, KERNEL, 3, 1, 1)                           \
  static const KERNEL##_fn KERNEL##_table[2][3][MR] = {                                             \
      {{KERNEL##_1_0_0, KERNEL##_2_0_0, KERNEL##_3_0_0}, {KERNEL##_1_1_0, KERNEL##_2_1_0, KERNEL##_3_1_0}, \
       PAIR_ROW(KERNEL, 0)},                                                                        \
      {{KERNEL##_1_0_1, KERNEL##_2_0_1, KERNEL##_3_0_1}, {KERNEL##_1_1_1, KERNEL##_2_1_1, KERNEL##_3_1_1}, \
       PAIR_ROW(KERNEL, 1)}};
#define DEFINE_INSTANCE(T, KERNEL, ROWS, MAX, IDX)                                                  \
  static AVX2F16C void KERNEL##_##ROWS##_##MAX##_##IDX(const T *a, int64_t lda, const T *bp,        \
                                                       int64_t ldb, int64_t k0, int64_t k1, T *c,   \
                                                       int32_t *ix, int64_t ldc, int64_t ncols,     \
                                                       int64_t second, const T *bcols) {            \
    (void)second;                                                                                   \
    KERNEL(a, lda, bp, ldb, k0, k1, c, ix, ldc, ncols, bcols, ROWS, MAX, IDX);                      \
  }
#define DEFINE_PAIR_INSTANCE(T, KERNEL, ROWS, IDX)                                                  \
  static AVX2F16C void KERNEL##_##ROWS##_2_##IDX(const T *a, int64_t lda, const T *bp, int64_t ldb, \
                                                 int64_t k0, int64_t k1, T *c, int32_t *ix,         \
                                                 int64_t ldc, int64_t ncols, int64_t second,        \
                                                 const T *bcols) {                                  \
    KERNEL##_pair(a, lda, bp, ldb, k0, k1, c, ix, ldc, ncols, second, bcols, ROWS, IDX);            \
  }
#define DEFINE_PAIR_INSTANCES(T, KERNEL)                                                            \
  DEFINE_PAIR_INSTANCE(T, KERNEL, 1, 0) DEFINE_PAIR_INSTANCE(T, KERNEL, 2, 0)                       \
  DEFINE_PAIR_INSTANCE(T, KERNEL, 3, 0) DEFINE_PAIR_INSTANCE(T, KERNEL, 1, 1)                       \
  DEFINE_PAIR_INSTANCE(T, KERNEL, 2, 1) DEFINE_PAIR_INSTANCE(T, KERNEL, 3, 1)
#define PAIRS(KERNEL, IDX) {KERNEL##_1_2_##IDX, KERNEL##_2_2_##IDX, KERNEL##_3_2_##IDX}
#define NO_PAIRS(KERNEL, IDX) {NULL}

DEFINE_PAIR_INSTANCES(float, kernel_f32)
DEFINE_INSTANCES(float, kernel_f32, PAIRS)
DEFINE_INSTANCES(float, kernel_f32_f16, NO_PAIRS)
DEFINE_INSTANCES(float, kernel_f32_bf16, NO_PAIRS)
DEFINE_PAIR_INSTANCES(double, kernel_f64)
DEFINE_INSTANCES(double, kernel_f64, PAIRS)

/* Split the work by column panels unless row blocks divide more evenly among the threads. */
static int split_columns(int64_t npan, int64_t nrb, int nt) {
  const double cols = (double)npan / (double)(nt * ((npan + nt - 1) / nt));
  const double rows = (double)nrb / (double)(nt * ((nrb + nt - 1) / nt));
  return cols >= rows;
}

#ifdef _OPENMP
#define TROPIC_THREAD_ID(t, n) (t = omp_get_thread_num(), n = omp_get_num_threads())
#else
#define TROPIC_THREAD_ID(t, n) ((void)0)
#endif

/* A product with a single row block (M <= 3) uses each element of B once: packing would cost as
 * much as the product. Such products read full panels of B in place, THIN_KB rows per visit, all
 * panels per k-block (few enough concurrent row streams for the prefetchers when B comes from
 * DRAM, and when it comes from cache, long enough runs to amortise the reloaded outputs). */
#ifndef THIN_KB
#define THIN_KB(bytes) ((bytes) > (4 << 20) ? 8 : 64)
#endif

/* Each thread: its range of panels x its range of row blocks; per block of PANELS panels, k-blocks
 * in increasing order; per k-block, pack, then every (row block, panel) tile of it. Row blocks run
 * outside panels so that a row block's slice of A stays in L1 while the packed block (L2) streams.
 * The N tail panel is always packed (padded), in place reading would run past the end of B. */
#define DEFINE_DRIVER(T, NR, NAME, PACK, PACK_T, KERNEL, MR)                                        \
  /* Share t of an n-way split of the tiles (one thread's work); returns 2 if its buffer failed.   \
   * bt: b is B's transpose, (N, K) C-contiguous (packed with PACK_T; never read in place). */      \
  static int NAME##_share(const T *a, const T *b, T *c, int32_t *idx, int64_t M, int64_t K,        \
                          int64_t N, int maximise, int bt, int t, int n) {                          \
    const T zero = maximise ? (T)-INFINITY : (T)INFINITY;                                           \
    const int64_t npan = (N + NR - 1) / NR, nrb = (M + MR - 1) / MR;                                \
    const int thin = nrb == 1 && !bt;                                                               \
    const int64_t nkb = (K + KC - 1) / KC;                                                          \
    const int64_t kc = thin ? THIN_KB(K * N * (int64_t)sizeof(T)) : (K + nkb - 1) / nkb;            \
    const int by_cols = split_columns(npan, nrb, n);                                                \
    const KERNEL##_fn *kern = KERNEL##_table[idx != NULL][maximise];                                \
    const int64_t second = maximise == 2 ? M * N : 0; /* a pair's min-plus outputs: after c's M x N */ \
    if (kern[0] == NULL) return 1; /* a pair without a pair kernel */                               \
    const int64_t p_lo = by_cols ? npan * t / n : 0, p_hi = by_cols ? npan * (t + 1) / n : npan;     \
    const int64_t r_lo = by_cols ? 0 : nrb * t / n, r_hi = by_cols ? nrb : nrb * (t + 1) / n;        \
    if (p_lo >= p_hi || r_lo >= r_hi) return 0;                                                     \
    T *buf = aligned_alloc(64, (size_t)kc * PANELS * NR * sizeof(T));                               \
    if (buf == NULL) return 2;                                                                      \
    const int64_t chunk = thin ? p_hi - p_lo : PANELS; /* thin: sweep all panels per k */          \
    for (int64_t pc = p_lo; pc < p_hi; pc += chunk) {                                               \
      const int64_t pn = p_hi - pc < chunk ? p_hi - pc : chunk;                                     \
      for (int64_t k0 = 0; k0 < K; k0 += kc) {                                                      \
        const int64_t k1 = K - k0 < kc ? K : k0 + kc;                                               \
        const int64_t tail = (pc + pn) * NR > N; /* the block holds the N tail panel */             \
        if (bt) PACK_T(b, buf, N, K, k0, k1 - k0, pc * NR, pn, zero);                               \
        else if (!thin) PACK(b, buf, N, k0, k1 - k0, pc * NR, pn, zero);                            \
        else if (tail) PACK(b, buf, N, k0, k1 - k0, (pc + pn - 1) * NR, 1, zero);                   \
        for (int64_t rb = r_lo; rb < r_hi; rb++) {                                                  \
          const int64_t i0 = rb * MR, rows = M - i0 < MR ? M - i0 : MR;                             \
          for (int64_t q = 0; q < pn; q++) {                                                        \
            const int64_t j0 = (pc + q) * NR, nj = N - j0 < NR ? N - j0 : NR;                       \
            const T *panel = !thin ? buf + q * (k1 - k0) * NR : nj < NR ? buf : b + k0 * N + j0;    \
            kern[rows - 1](a + i0 * K, K, panel, thin && nj == NR ? N : NR, k0, k1,                  \
                           c + i0 * N + j0, idx ? idx + i0 * N + j0 : NULL, N, nj, second,          \
                           bt ? b + j0 * K : NULL); /* the rescans' B columns, as W's rows */     \
          }                                                                                         \
        }                                                                                           \
      }                                                                                             \
    }                                                                                               \
    free(buf);                                                                                      \
    return 0;                                                                                       \
  }                                                                                                 \
  static int NAME(const T *a, const T *b, T *c, int32_t *idx, int64_t M, int64_t K, int64_t N,      \
                  int maximise, int threads) {                                                      \
    const int64_t npan = (N + NR - 1) / NR, nrb = (M + MR - 1) / MR;                                \
    const int nt = thread_count(threads, M, K, N, npan * nrb);                                      \
    int failed = 0;                                                                                 \
    _Pragma("omp parallel num_threads(nt)")                                                         \
    {                                                                                               \
      int t = 0, n = 1;                                                                             \
      TROPIC_THREAD_ID(t, n);                                                                       \
      if (NAME##_share(a, b, c, idx, M, K, N, maximise, 0, t, n)) {                                 \
        _Pragma("omp atomic write") failed = 2;                                                     \
      }                                                                                             \
    }                                                                                               \
    return failed;                                                                                  \
  }

DEFINE_DRIVER(float, 16, avx2_f32, pack_f32, pack_t_f32, kernel_f32, MR)
DEFINE_DRIVER(float, 16, avx2_f32_f16, pack_f32, pack_t_f32, kernel_f32_f16, MR)
DEFINE_DRIVER(float, 16, avx2_f32_bf16, pack_f32, pack_t_f32, kernel_f32_bf16, MR)
DEFINE_DRIVER(double, 8, avx2_f64, pack_f64, pack_t_f64, kernel_f64, MR)

/* ------------------------------------------------------------------------------------------------
 * AVX-512 float32 path: the same packing, blocking, tails and split as the AVX2 one, with up to MR5
 * rows x 16 columns per micro-kernel call and one zmm per row and product; mask registers select
 * the N tail's columns. Values only: per 16 pairs one add (A broadcast from memory) and one max
 * (min). Winners in blocks, as kernel_*_blocked_winners: the values fold exactly as without them,
 * and per WINNER_BLOCK k each best is compared with the best at the block's start, into a mask
 * register, and the block's first k moves into the winners under that mask; rescan512 then
 * resolves each marked winner to its first k. A rescan costs about as much per output as 200-300
 * k of the blocks save (a Xeon), so shorter k-ranges (BLOCKED_K, a pair's PAIR_BLOCKED_K) track
 * the winners pair by pair instead (tracked512). The pair (an MPM layer's max-plus and min-plus
 * products of one A and one B) folds each sum into both bests. Half precision (kernel512_f32_f16 /
 * _bf16) rounds every sum where winners are tracked pair by pair; elsewhere it folds the unrounded
 * sums and rounds only the bests: rounding to nearest is monotone, so the best of the rounded sums
 * is the rounded best of the sums (kernel_f32_blocked_winners says why the signed zeros and the
 * winners agree too). float64 stays on the AVX2 path. */
#define MR5 8 /* rows per call; values: 8 bests (a pair's: 16) + sum and B in 32 zmm */
#define WR5 4 /* rows per winners pass: best, block start and winners (a pair's: 6 zmm) per row */
#ifndef BLOCKED_K
#define BLOCKED_K 256 /* shorter k-ranges track winners pair by pair (tracked512) */
#endif
#ifndef PAIR_BLOCKED_K
#define PAIR_BLOCKED_K 192
#endif
/* avx2 and f16c: the AVX2 path's rescans inline here (every AVX-512 CPU has both). */
#define AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")))

INLINE AVX512 __mmask16 columns512(int64_t ncols) {
  return ncols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << ncols) - 1u);
}
/* max(v, best) == (v > best ? v : best) (min: <): ties and NaN keep best, as the AVX2 fold. */
#define FOLD512(best, v, maximise) ((maximise) ? _mm512_max_ps(v, best) : _mm512_min_ps(v, best))
#define SUM512(r, k, b0) _mm512_add_ps(_mm512_set1_ps(a[(r) * lda + (k)]), b0)
/* Pair k of every row into the bests s (bp: row k of B), and for a pair into the min-plus ones m. */
#define FOLD_ROWS512(k)                                                                             \
  do {                                                                                              \
    const __m512 b0 = _mm512_loadu_ps(bp);                                                          \
    _Pragma("GCC unroll 8") for (int r = 0; r < rows; r++) s[r] = FOLD512(s[r], SUM512(r, k, b0), maximise); \
  } while (0)
/* The bests and winners at k0: the tropical zero and -1, or, after a first k-block, the best so far
 * and its winner from c and ix (a pair's min-plus ones `second` elements further, in m and y). */
#define START_ROWS512()                                                                             \
  _Pragma("GCC unroll 8") for (int r = 0; r < rows; r++) {                                          \
    s[r] = k0 > 0 ? _mm512_maskz_loadu_ps(mk, c + r * ldc) : _mm512_set1_ps(first_max ? -INFINITY : INFINITY); \
    x[r] = k0 > 0 ? _mm512_maskz_loadu_epi32(mk, ix + r * ldc) : _mm512_set1_epi32(-1);            \
    if (pair) {                                                                                     \
      m[r] = k0 > 0 ? _mm512_maskz_loadu_ps(mk, c + r * ldc + second) : _mm512_set1_ps(INFINITY);   \
      y[r] = k0 > 0 ? _mm512_maskz_loadu_epi32(mk, ix + r * ldc + second) : _mm512_set1_epi32(-1);  \
    }                                                                                               \
  }
#define PAIR_ROWS512(k)                                                                             \
  do {                                                                                              \
    const __m512 b0 = _mm512_loadu_ps(bp);                                                          \
    _Pragma("GCC unroll 8") for (int r = 0; r < rows; r++) {                                        \
      const __m512 v = SUM512(r, k, b0);                                                            \
      s[r] = FOLD512(s[r], v, 1);                                                                   \
      m[r] = FOLD512(m[r], v, 0);                                                                   \
    }                                                                                               \
  } while (0)

/* One row's rescans (rescan_f32's, from registers): each winner in `marks` marked in [k0, k1) (the
 * first k of its block) becomes the first k of that block whose sum, rounded as the kernel rounds
 * it, equals the final best `best`; returns the winners. Lanes go through a local copy: reading
 * back the masked stores of c and idx instead would wait for them (no store forwarding). B's column
 * comes from the panel (bp0: row k0, ldb apart) or, bcols not NULL, from its transpose's rows (ldw
 * apart: the 8 k of a block in one load), in rescan512_rows, kept out of the kernels: inlined
 * beside the panel's, it changed the register allocation of their hot loops. */
INLINE AVX512 __m512i rescan512_lanes(const float *ar, const float *bp0, int64_t ldb, const float *bcols,
                                      int64_t ldw, int64_t k0, int64_t k1, __m512 best, __m512i marks,
                                      __mmask16 mk, const int rounding, const int row) {
  float bests[16] __attribute__((aligned(64)));
  int32_t winners[16] __attribute__((aligned(64)));
  _mm512_store_ps(bests, best);
  _mm512_store_si512((__m512i *)winners, marks);
  for (uint32_t lanes = _mm512_mask_cmpge_epi32_mask(mk, marks, _mm512_set1_epi32((int32_t)k0)); lanes;
       lanes &= lanes - 1) {
    const int j = __builtin_ctz(lanes);
    const int64_t kb = winners[j];
    winners[j] = row ? block_winner_f32(ar, bcols + j * ldw + kb, 1, 1, kb, k1, bests[j], rounding)
                     : block_winner_f32(ar, bp0 + (kb - k0) * ldb + j, ldb, 0, kb, k1, bests[j], rounding);
  }
  return _mm512_load_si512((const __m512i *)winners);
}
static NOINLINE AVX512 __m512i rescan512_rows(const float *ar, const float *bcols, int64_t ldw, int64_t k0,
                                              int64_t k1, __m512 best, __m512i marks, __mmask16 mk,
                                              const int rounding) {
  return rescan512_lanes(ar, NULL, 0, bcols, ldw, k0, k1, best, marks, mk, rounding, 1);
}
INLINE AVX512 __m512i rescan512(const float *ar, const float *bp0, int64_t ldb, const float *bcols, int64_t ldw,
                                int64_t k0, int64_t k1, __m512 best, __m512i marks, __mmask16 mk,
                                const int rounding) {
  if (bcols != NULL) return rescan512_rows(ar, bcols, ldw, k0, k1, best, marks, mk, rounding);
  return rescan512_lanes(ar, bp0, ldb, NULL, 0, k0, k1, best, marks, mk, rounding, 0);
}

/* The values only: `rows` (1..MR5) rows' bests for k in [k0, k1) (arguments as kernel_f32_rounded). */
INLINE AVX512 void values512(const float *a, int64_t lda, const float *bp, int64_t ldb, int64_t k0,
                             int64_t k1, float *c, int64_t ldc, int64_t ncols, const int rows,
                             const int maximise, const int rounding) {
  const __mmask16 mk = columns512(ncols);
  __m512 s[MR5];
#pragma GCC unroll 8
  for (int r = 0; r < rows; r++)
    s[r] = k0 > 0 ? _mm512_maskz_loadu_ps(mk, c + r * ldc) : _mm512_set1_ps(maximise ? -INFINITY : INFINITY);
  for (int64_t k = k0; k < k1; k++, bp += ldb) FOLD_ROWS512(k);
#pragma GCC unroll 8
  for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(c + r * ldc, mk, tropic_rounded_sums512(s[r], rounding));
}

/* With winners: `rows` (1..WR5) rows, blocked as described above; maximise 2: the pair (rounding 0;
 * the min-plus outputs `second` elements after c), both products' bests and winners, then both
 * products' rescans. */
INLINE AVX512 void winners512(const float *a, int64_t lda, const float *bp, int64_t ldb, int64_t k0,
                              int64_t k1, float *c, int32_t *ix, int64_t ldc, int64_t ncols, int64_t second,
                              const float *bcols, const int rows, const int maximise, const int rounding) {
  const __mmask16 mk = columns512(ncols);
  const int pair = maximise == 2, first_max = maximise != 0; /* the first product's sense */
  const float *const bp0 = bp;
  __m512 s[WR5], m[WR5];
  __m512i x[WR5], y[WR5];
  START_ROWS512();
  for (int64_t kb = k0; kb < k1; kb += WINNER_BLOCK) {
    __m512 o[WR5], p[WR5];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) {
      o[r] = s[r];
      if (pair) p[r] = m[r];
    }
    if (k1 - kb >= WINNER_BLOCK) { /* a constant trip count, unrolled */
#pragma GCC unroll 8
      for (int g = 0; g < WINNER_BLOCK; g++, bp += ldb) {
        if (pair) PAIR_ROWS512(kb + g);
        else FOLD_ROWS512(kb + g);
      }
    } else {
      for (int64_t k = kb; k < k1; k++, bp += ldb) {
        if (pair) PAIR_ROWS512(k);
        else FOLD_ROWS512(k);
      }
    }
    const __m512i kv = _mm512_set1_epi32((int32_t)kb);
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) {
      const __m512 now = tropic_rounded_sums512(s[r], rounding), then = tropic_rounded_sums512(o[r], rounding);
      const __mmask16 grew = first_max ? _mm512_cmp_ps_mask(now, then, _CMP_GT_OQ)
                                       : _mm512_cmp_ps_mask(now, then, _CMP_LT_OQ);
      x[r] = _mm512_mask_mov_epi32(x[r], grew, kv);
      if (pair) y[r] = _mm512_mask_mov_epi32(y[r], _mm512_cmp_ps_mask(m[r], p[r], _CMP_LT_OQ), kv);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < rows; r++) {
    const __m512 best = tropic_rounded_sums512(s[r], rounding);
    _mm512_mask_storeu_ps(c + r * ldc, mk, best);
    _mm512_mask_storeu_epi32(ix + r * ldc, mk, rescan512(a + r * lda, bp0, ldb, bcols, lda, k0, k1, best, x[r], mk, rounding));
    if (pair) {
      _mm512_mask_storeu_ps(c + r * ldc + second, mk, m[r]);
      _mm512_mask_storeu_epi32(ix + r * ldc + second, mk,
                               rescan512(a + r * lda, bp0, ldb, bcols, lda, k0, k1, m[r], y[r], mk, 0));
    }
  }
}

/* The pair, values only: `rows` (1..MR5) rows; the min-plus bests `second` elements after c. */
INLINE AVX512 void pair_values512(const float *a, int64_t lda, const float *bp, int64_t ldb, int64_t k0,
                                  int64_t k1, float *c, int64_t ldc, int64_t ncols, int64_t second,
                                  const int rows) {
  const __mmask16 mk = columns512(ncols);
  __m512 s[MR5], m[MR5];
#pragma GCC unroll 8
  for (int r = 0; r < rows; r++) {
    s[r] = k0 > 0 ? _mm512_maskz_loadu_ps(mk, c + r * ldc) : _mm512_set1_ps(-INFINITY);
    m[r] = k0 > 0 ? _mm512_maskz_loadu_ps(mk, c + r * ldc + second) : _mm512_set1_ps(INFINITY);
  }
  for (int64_t k = k0; k < k1; k++, bp += ldb) PAIR_ROWS512(k);
#pragma GCC unroll 8
  for (int r = 0; r < rows; r++) {
    _mm512_mask_storeu_ps(c + r * ldc, mk, s[r]);
    _mm512_mask_storeu_ps(c + r * ldc + second, mk, m[r]);
  }
}

/* Winners pair by pair, for short k-ranges (where a rescan per output costs more than the blocks
 * save): per 16 sums one compare into a mask register and two masked moves (value and k) under it
 * per product, so the value is exactly "v > best ? v : best" (ties and NaN keep best) and the
 * winner is the k of the last growth. `rows` rows: 1..MR5 for one product, 1..WR5 for the pair
 * (maximise 2: the min-plus outputs `second` elements after c); each sum rounded to `rounding`. */
INLINE AVX512 void tracked512(const float *a, int64_t lda, const float *bp, int64_t ldb, int64_t k0, int64_t k1,
                              float *c, int32_t *ix, int64_t ldc, int64_t ncols, int64_t second, const int rows,
                              const int maximise, const int rounding) {
  const __mmask16 mk = columns512(ncols);
  const int pair = maximise == 2, first_max = maximise != 0; /* the first product's sense */
  __m512 s[MR5], m[MR5];
  __m512i x[MR5], y[MR5];
  START_ROWS512();
  __m512i kv = _mm512_set1_epi32((int32_t)k0);
  for (int64_t k = k0; k < k1; k++, bp += ldb, kv = _mm512_add_epi32(kv, _mm512_set1_epi32(1))) {
    const __m512 b0 = _mm512_loadu_ps(bp);
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) {
      const __m512 v = tropic_rounded_sums512(SUM512(r, k, b0), rounding);
      const __mmask16 up = first_max ? _mm512_cmp_ps_mask(v, s[r], _CMP_GT_OQ) : _mm512_cmp_ps_mask(v, s[r], _CMP_LT_OQ);
      s[r] = _mm512_mask_mov_ps(s[r], up, v);
      x[r] = _mm512_mask_mov_epi32(x[r], up, kv);
      if (pair) {
        const __mmask16 down = _mm512_cmp_ps_mask(v, m[r], _CMP_LT_OQ);
        m[r] = _mm512_mask_mov_ps(m[r], down, v);
        y[r] = _mm512_mask_mov_epi32(y[r], down, kv);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < rows; r++) {
    _mm512_mask_storeu_ps(c + r * ldc, mk, s[r]);
    _mm512_mask_storeu_epi32(ix + r * ldc, mk, x[r]);
    if (pair) {
      _mm512_mask_storeu_ps(c + r * ldc + second, mk, m[r]);
      _mm512_mask_storeu_epi32(ix + r * ldc + second, mk, y[r]);
    }
  }
}
#undef START_ROWS512
#undef PAIR_ROWS512
#undef FOLD_ROWS512
#undef SUM512
#undef FOLD512

/* The kernel the drivers call (`rows` 1..MR5; maximise 2: the pair, rounding 0 only; bcols: the
 * rescans' B columns as rows of its transpose, or NULL): winners in passes of at most WR5 rows. */
INLINE AVX512 void kernel512(const float *a, int64_t lda, const float *bp, int64_t ldb, int64_t k0, int64_t k1,
                             float *c, int32_t *ix, int64_t ldc, int64_t ncols, int64_t second, const float *bcols,
                             const int rows, const int maximise, const int rounding, const int indexed) {
  const int first = rows < WR5 ? rows : WR5, rest = rows - first; /* constants in every instance */
  if (maximise == 2 && !indexed) {
    pair_values512(a, lda, bp, ldb, k0, k1, c, ldc, ncols, second, rows);
  } else if (maximise == 2 && k1 - k0 < PAIR_BLOCKED_K) {
    tracked512(a, lda, bp, ldb, k0, k1, c, ix, ldc, ncols, second, first, maximise, 0);
    if (rest > 0)
      tracked512(a + WR5 * lda, lda, bp, ldb, k0, k1, c + WR5 * ldc, ix + WR5 * ldc, ldc, ncols, second, rest, maximise,
                 0);
  } else if (indexed && maximise != 2 && k1 - k0 < BLOCKED_K) {
    tracked512(a, lda, bp, ldb, k0, k1, c, ix, ldc, ncols, second, rows, maximise, rounding);
  } else if (!indexed) {
    values512(a, lda, bp, ldb, k0, k1, c, ldc, ncols, rows, maximise, rounding);
  } else {
    winners512(a, lda, bp, ldb, k0, k1, c, ix, ldc, ncols, second, bcols, first, maximise, rounding);
    if (rest > 0)
      winners512(a + WR5 * lda, lda, bp, ldb, k0, k1, c + WR5 * ldc, ix + WR5 * ldc, ldc, ncols, second, bcols, rest,
                 maximise, rounding);
  }
}

/* One instance per (rounding, winners or values only, min/max/pair, rows):
 * NAME##_table[indexed][maximise][rows - 1], as the AVX2 tables (pairs for rounding 0 only). */
#define DEFINE_INSTANCE512(NAME, ROUNDING, ROWS, MAX, IDX)                                          \
  static AVX512 void NAME##_##ROWS##_##MAX##_##IDX(const float *a, int64_t lda, const float *bp,    \
                                                   int64_t ldb, int64_t k0, int64_t k1, float *c,   \
                                                   int32_t *ix, int64_t ldc, int64_t ncols,         \
                                                   int64_t second, const float *bcols) {            \
    kernel512(a, lda, bp, ldb, k0, k1, c, ix, ldc, ncols, second, bcols, ROWS, MAX, ROUNDING, IDX); \
  }
#define DEFINE_ROWS512(NAME, ROUNDING, ROWS)                                                        \
  DEFINE_INSTANCE512(NAME, ROUNDING, ROWS, 0, 0) DEFINE_INSTANCE512(NAME, ROUNDING, ROWS, 1, 0)     \
  DEFINE_INSTANCE512(NAME, ROUNDING, ROWS, 0, 1) DEFINE_INSTANCE512(NAME, ROUNDING, ROWS, 1, 1)
#define DEFINE_PAIR_ROWS512(NAME, ROWS)                                                             \
  DEFINE_INSTANCE512(NAME, 0, ROWS, 2, 0) DEFINE_INSTANCE512(NAME, 0, ROWS, 2, 1)
#define K512_ROW(NAME, MAX, IDX)                                                                    \
  {NAME##_1_##MAX##_##IDX, NAME##_2_##MAX##_##IDX, NAME##_3_##MAX##_##IDX, NAME##_4_##MAX##_##IDX,  \
   NAME##_5_##MAX##_##IDX, NAME##_6_##MAX##_##IDX, NAME##_7_##MAX##_##IDX, NAME##_8_##MAX##_##IDX}
#define PAIRS512(NAME, IDX) K512_ROW(NAME, 2, IDX)
#define NO_PAIRS512(NAME, IDX) {NULL}
#define DEFINE_INSTANCES512(NAME, ROUNDING, PAIR_ROW)                                               \
  typedef void (*NAME##_fn)(const float *, int64_t, const float *, int64_t, int64_t, int64_t,       \
                            float *, int32_t *, int64_t, int64_t, int64_t, const float *);          \
  DEFINE_ROWS512(NAME, ROUNDING, 1) DEFINE_ROWS512(NAME, ROUNDING, 2)                               \
  DEFINE_ROWS512(NAME, ROUNDING, 3) DEFINE_ROWS512(NAME, ROUNDING, 4)                               \
  DEFINE_ROWS512(NAME, ROUNDING, 5) DEFINE_ROWS512(NAME, ROUNDING, 6)                               \
  DEFINE_ROWS512(NAME, ROUNDING, 7) DEFINE_ROWS512(NAME, ROUNDING, 8)                               \
  static const NAME##_fn NAME##_table[2][3][MR5] = {                                                \
      {K512_ROW(NAME, 0, 0), K512_ROW(NAME, 1, 0), PAIR_ROW(NAME, 0)},                              \
      {K512_ROW(NAME, 0, 1), K512_ROW(NAME, 1, 1), PAIR_ROW(NAME, 1)}};
DEFINE_PAIR_ROWS512(kernel512_f32, 1) DEFINE_PAIR_ROWS512(kernel512_f32, 2)
DEFINE_PAIR_ROWS512(kernel512_f32, 3) DEFINE_PAIR_ROWS512(kernel512_f32, 4)
DEFINE_PAIR_ROWS512(kernel512_f32, 5) DEFINE_PAIR_ROWS512(kernel512_f32, 6)
DEFINE_PAIR_ROWS512(kernel512_f32, 7) DEFINE_PAIR_ROWS512(kernel512_f32, 8)
DEFINE_INSTANCES512(kernel512_f32, 0, PAIRS512)
DEFINE_INSTANCES512(kernel512_f32_f16, 1, NO_PAIRS512)
DEFINE_INSTANCES512(kernel512_f32_bf16, 2, NO_PAIRS512)

DEFINE_DRIVER(float, 16, avx512_f32, pack_f32, pack_t_f32, kernel512_f32, MR5)
DEFINE_DRIVER(float, 16, avx512_f32_f16, pack_f32, pack_t_f32, kernel512_f32_f16, MR5)
DEFINE_DRIVER(float, 16, avx512_f32_bf16, pack_f32, pack_t_f32, kernel512_f32_bf16, MR5)

#endif /* TROPIC_X86 */

/* ------------------------------------------------------------------------------------------------
 * Run-time dispatch, decided once: 2 = AVX-512 (float32; float64 uses AVX2), 1 = AVX2, 0 = portable. */
static int isa_choice = -1;

static int choose_isa(void) {
  int choice = __atomic_load_n(&isa_choice, __ATOMIC_RELAXED);
  if (choice >= 0) return choice;
  choice = 0;
#ifdef TROPIC_X86
  const char *force = getenv("TROPIC_FORCE_GENERIC");
  const char *cap = getenv("TROPIC_MAX_ISA");
  if (!(force != NULL && force[0] != '\0' && strcmp(force, "0") != 0)) {
    __builtin_cpu_init();
    choice = __builtin_cpu_supports("avx2") ? 1 : 0;
    if (choice && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        !(cap != NULL && strcmp(cap, "avx2") == 0))
      choice = 2;
  }
#endif
  __atomic_store_n(&isa_choice, choice, __ATOMIC_RELAXED);
  return choice;
}

/* K = 0 (the caller handles it, but stay defined): every output is the zero, with no winner. */
#define DEFINE_EMPTY(T, NAME)                                                                       \
  static int NAME(T *c, int32_t *idx, int64_t n, int maximise) {                                    \
    for (int64_t i = 0; i < n; i++) {                                                               \
      c[i] = maximise ? (T)-INFINITY : (T)INFINITY;                                                 \
      if (idx) idx[i] = -1;                                                                         \
    }                                                                                               \
    return 0;                                                                                       \
  }
DEFINE_EMPTY(float, empty_f32)
DEFINE_EMPTY(double, empty_f64)

const char *tropic_isa(void) {
  const int choice = choose_isa();
  return choice == 2 ? "avx512+avx2" : choice ? "avx2" : "generic"; /* float32 + float64 paths */
}

int tropic_matmul_f32(const float *a, const float *b, float *c, int32_t *idx, int64_t M, int64_t K,
                      int64_t N, int maximise, int threads) {
  if (M <= 0 || N <= 0) return 0;
  if (K <= 0) return empty_f32(c, idx, M * N, maximise);
#ifdef TROPIC_X86
  const int choice = choose_isa();
  if (choice == 2) return avx512_f32(a, b, c, idx, M, K, N, maximise != 0, threads);
  if (choice) return avx2_f32(a, b, c, idx, M, K, N, maximise != 0, threads);
#endif
  return generic_f32(a, b, c, idx, M, K, N, maximise != 0, threads);
}

/* Share `task` of a `tasks`-way split of the product, on the calling thread: the caller runs the
 * shares on its own threads (tasks claimed one by one, so a late thread cannot stall the others).
 * Shares write disjoint outputs; together they give bitwise the result of tropic_matmul_*. K >= 1. */
/* One share with B in its own layout (bt = 0) or as its transpose (bt = 1: b is (N, K)
 * C-contiguous; the x86 paths only: the portable one returns 1, and its callers transpose first). */
/* maximise 2: the pair, where the path has a pair kernel (else 1; see pair_kernel). */
static int share_f32(const float *a, const float *b, float *c, int32_t *idx, int64_t M, int64_t K,
                     int64_t N, int maximise, int bt, int task, int tasks) {
#ifdef TROPIC_X86
  const int choice = choose_isa();
  if (choice == 2) return avx512_f32_share(a, b, c, idx, M, K, N, maximise, bt, task, tasks);
  if (choice) return avx2_f32_share(a, b, c, idx, M, K, N, maximise, bt, task, tasks);
#endif
  return bt || maximise == 2 ? 1 : generic_f32_share(a, b, c, idx, M, K, N, maximise, task, tasks);
}

static int share_f64(const double *a, const double *b, double *c, int32_t *idx, int64_t M, int64_t K,
                     int64_t N, int maximise, int bt, int task, int tasks) {
#ifdef TROPIC_X86
  if (choose_isa()) return avx2_f64_share(a, b, c, idx, M, K, N, maximise, bt, task, tasks);
#endif
  return bt || maximise == 2 ? 1 : generic_f64_share(a, b, c, idx, M, K, N, maximise, task, tasks);
}

int tropic_matmul_part_f32(const float *a, const float *b, float *c, int32_t *idx, int64_t M,
                           int64_t K, int64_t N, int maximise, int task, int tasks) {
  if (M <= 0 || N <= 0 || K <= 0 || tasks < 1 || task < 0 || task >= tasks) return 1;
  return share_f32(a, b, c, idx, M, K, N, maximise != 0, 0, task, tasks);
}

int tropic_matmul_part_f64(const double *a, const double *b, double *c, int32_t *idx, int64_t M,
                           int64_t K, int64_t N, int maximise, int task, int tasks) {
  if (M <= 0 || N <= 0 || K <= 0 || tasks < 1 || task < 0 || task >= tasks) return 1;
  return share_f64(a, b, c, idx, M, K, N, maximise != 0, 0, task, tasks);
}

/* The bias as candidate K of every output (the product's c, (rows, N), in place): the bias wins
 * where it is better or equal or NaN (c[i, j] = bias[j]), c keeps its value otherwise, and where
 * !(c > bias) (to maximise; < to minimise) the winner (if not NULL; int8, int16 or int32 as
 * winner_bytes says) becomes K, so that a NaN product beside a number keeps its NaN and reports the
 * bias: core's rule (tropic.core.matmul.apply_bias). Selects, not branches: the loops vectorise. */
#define BIAS_ROWS(T, I)                                                                             \
  for (int64_t i = 0; i < rows; i++)                                                                \
    for (int64_t j = 0; j < N; j++) {                                                               \
      const T bj = bias[j], v = c[i * N + j];                                                       \
      const int bias_better = maximise ? bj > v : bj < v;                                           \
      const int product_better = maximise ? v > bj : v < bj;                                       \
      c[i * N + j] = bias_better || bj != bj ? bj : v;                                              \
      if (winner != NULL) ((I *)winner)[i * N + j] = product_better ? ((I *)winner)[i * N + j] : (I)K; \
    }
#define DEFINE_BIAS_SELECT(T, NAME)                                                                 \
  int NAME(T *c, const T *bias, int64_t rows, int64_t N, int maximise, void *winner, int winner_bytes, \
           int64_t K) {                                                                             \
    if (winner == NULL || winner_bytes == 4) {                                                      \
      BIAS_ROWS(T, int32_t)                                                                         \
    } else if (winner_bytes == 2) {                                                                 \
      BIAS_ROWS(T, int16_t)                                                                         \
    } else if (winner_bytes == 1) {                                                                 \
      BIAS_ROWS(T, int8_t)                                                                          \
    } else                                                                                          \
      return 1;                                                                                     \
    return 0;                                                                                       \
  }
DEFINE_BIAS_SELECT(float, tropic_bias_select_f32)
DEFINE_BIAS_SELECT(double, tropic_bias_select_f64)

/* Half-precision products: float32 operands holding float16 (rounding 1) or bfloat16 (2) values,
 * every candidate sum rounded to that dtype before it compares, so values and winners are those of
 * the product in the narrow dtype. AVX2 + F16C only: elsewhere these return 3 and the caller keeps
 * its NumPy path (tropic_rounding_supported() says which). Otherwise as tropic_matmul_f32 / _part_. */
int tropic_rounding_supported(void) {
#ifdef TROPIC_X86
  if (choose_isa() == 0) return 0; /* also TROPIC_FORCE_GENERIC */
  __builtin_cpu_init();
  return __builtin_cpu_supports("f16c") ? 1 : 0;
#else
  return 0;
#endif
}

int tropic_matmul_rounded_f32(const float *a, const float *b, float *c, int32_t *idx, int64_t M,
                              int64_t K, int64_t N, int maximise, int rounding, int threads) {
  if (rounding != 1 && rounding != 2) return 1;
  if (!tropic_rounding_supported()) return 3;
  if (M <= 0 || N <= 0) return 0;
  if (K <= 0) return empty_f32(c, idx, M * N, maximise);
#ifdef TROPIC_X86
  if (choose_isa() == 2) {
    if (rounding == 1) return avx512_f32_f16(a, b, c, idx, M, K, N, maximise != 0, threads);
    return avx512_f32_bf16(a, b, c, idx, M, K, N, maximise != 0, threads);
  }
  if (rounding == 1) return avx2_f32_f16(a, b, c, idx, M, K, N, maximise != 0, threads);
  return avx2_f32_bf16(a, b, c, idx, M, K, N, maximise != 0, threads);
#else
  return 3;
#endif
}

int tropic_matmul_rounded_part_f32(const float *a, const float *b, float *c, int32_t *idx, int64_t M,
                                   int64_t K, int64_t N, int maximise, int rounding, int task,
                                   int tasks) {
  if (rounding != 1 && rounding != 2) return 1;
  if (!tropic_rounding_supported()) return 3;
  if (M <= 0 || N <= 0 || K <= 0 || tasks < 1 || task < 0 || task >= tasks) return 1;
#ifdef TROPIC_X86
  if (choose_isa() == 2) {
    if (rounding == 1) return avx512_f32_f16_share(a, b, c, idx, M, K, N, maximise != 0, 0, task, tasks);
    return avx512_f32_bf16_share(a, b, c, idx, M, K, N, maximise != 0, 0, task, tasks);
  }
  if (rounding == 1) return avx2_f32_f16_share(a, b, c, idx, M, K, N, maximise != 0, 0, task, tasks);
  return avx2_f32_bf16_share(a, b, c, idx, M, K, N, maximise != 0, 0, task, tasks);
#else
  return 3;
#endif
}

/* A tasks-way split of the product run on the thread pool (thread_pool.h): the shares of
 * tropic_matmul_part_* (rounding 0) or tropic_matmul_rounded_part_f32 (rounding 1 or 2), claimed
 * one at a time by the calling thread and up to threads - 1 helpers. Bitwise the one-thread result.
 * M, N, K >= 1. */
struct product_job {
  const void *a, *b;
  void *c;
  int32_t *idx;
  int64_t M, K, N;
  int maximise, rounding, is_f64, bt; /* bt: b is B's transpose (rounding 0 only) */
};

static int product_task(void *ctx, int task, int tasks) {
  const struct product_job *p = ctx;
  if (p->is_f64) return share_f64(p->a, p->b, p->c, p->idx, p->M, p->K, p->N, p->maximise, p->bt, task, tasks);
  if (p->rounding)
    return tropic_matmul_rounded_part_f32(p->a, p->b, p->c, p->idx, p->M, p->K, p->N, p->maximise,
                                          p->rounding, task, tasks);
  return share_f32(p->a, p->b, p->c, p->idx, p->M, p->K, p->N, p->maximise, p->bt, task, tasks);
}

int tropic_matmul_pooled_f32(const float *a, const float *b, float *c, int32_t *idx, int64_t M,
                             int64_t K, int64_t N, int maximise, int rounding, int tasks, int threads) {
  struct product_job job = {a, b, c, idx, M, K, N, maximise != 0, rounding, 0, 0};
  return tropic_pool_run(product_task, &job, tasks, threads);
}

int tropic_matmul_pooled_f64(const double *a, const double *b, double *c, int32_t *idx, int64_t M,
                             int64_t K, int64_t N, int maximise, int rounding, int tasks, int threads) {
  if (rounding != 0) return 1;
  struct product_job job = {a, b, c, idx, M, K, N, maximise != 0, 0, 1, 0};
  return tropic_pool_run(product_task, &job, tasks, threads);
}

/* ------------------------------------------------------------------------------------------------
 * Sparse B (the Sparse-Morph layers' weights: about 2 finite entries per output of a 512 x 512
 * layer). A candidate whose b[k][j] is the tropical zero (-inf to maximise, +inf to minimise) is
 * -inf (+inf) or NaN, and never beats the best, which starts at that zero: skipping it changes
 * nothing. Where most of B is the zero, each column's other entries are listed (k ascending, with
 * their values) and every output takes its best over its list only, in increasing k with the same
 * strict compare: the values and winners of the dense kernel, bit for bit, at the cost of the
 * entries that can win. A sample of B decides first, so that a dense B costs a few loads. The
 * lists are walked by tiles of rows, vectorised across the rows (NAME##_tiles, below). On the
 * first-generation Zen VM, one thread, with winners: x 64 x 512 @ B 512 x 512 with 1/256 of B kept
 * (the Sparse-Morph layer) about 200 us (walked one output at a time: 346 us), dense about 1900 us.
 * How much of B may be listed depends on the rows (sparse_product). */
#define SPARSE_SAMPLE 64          /* entries of B looked at before a full scan */
#define SPARSE_MIN_ENTRIES 4096   /* smaller B: the dense kernel */
#define SPARSE_BLOCK 16           /* entries of B per zero test of the scan */
#define SPARSE_PARALLEL_WORK (1 << 18) /* fewer candidates and outputs than this: one thread */
#define SPARSE_VECTORS 4         /* vectors of rows per tile (AVX2: 32 float rows, 16 double) */

struct sparse_lists {
  int64_t *start; /* N + 1: column j's entries are start[j] .. start[j + 1] - 1 */
  int32_t *k;
  void *value;
};

/* The zero test reads the bits: only the infinity itself has the infinity's bits (so the same as
 * `!= zero`, NaN included), and an OR of XORs vectorises where gcc keeps float compares scalar. */
typedef uint32_t __attribute__((may_alias)) bits_f32;
typedef uint64_t __attribute__((may_alias)) bits_f64;

#define DEFINE_SPARSE(T, NAME, BITS)                                                                \
  /* Whether b (K x N; bt: its transpose, N x K) looks mostly zero, from SPARSE_SAMPLE spread       \
   * entries (the same positions of the buffer either way). */                                      \
  static int NAME##_sample(const T *b, int64_t count, T zero, int64_t share) {                      \
    int zeros = 0;                                                                                  \
    for (int s = 0; s < SPARSE_SAMPLE; s++) zeros += b[count / SPARSE_SAMPLE * s] == zero;          \
    return SPARSE_SAMPLE - zeros <= 2 * SPARSE_SAMPLE / share; /* twice the share listed at most */  \
  }                                                                                                 \
  /* The first block of SPARSE_BLOCK entries from `from` on (count: the end) with an entry that is \
   * not the zero, or count. A block's test reads the bits, 16 bytes at a time (an OR of XORs in   \
   * vector registers, without an early exit). */                                                   \
  static int64_t NAME##_next_block(const T *b, int64_t from, int64_t count, T zero) {               \
    typedef BITS lanes __attribute__((vector_size(16)));                                             \
    enum { L = 16 / sizeof(BITS) };                                                                 \
    const BITS *raw = (const BITS *)b, zero_bits = *(const BITS *)&zero;                            \
    lanes zeros;                                                                                    \
    for (int l = 0; l < L; l++) zeros[l] = zero_bits;                                               \
    int64_t p0 = from;                                                                              \
    for (; p0 + SPARSE_BLOCK <= count; p0 += SPARSE_BLOCK) {                                        \
      lanes differ = {0};                                                                           \
      for (int i = 0; i < SPARSE_BLOCK; i += L) {                                                   \
        lanes v;                                                                                    \
        memcpy(&v, raw + p0 + i, sizeof v);                                                         \
        differ |= v ^ zeros;                                                                        \
      }                                                                                             \
      BITS any = 0;                                                                                 \
      for (int l = 0; l < L; l++) any |= differ[l];                                                 \
      if (any) return p0;                                                                           \
    }                                                                                               \
    for (int64_t p = p0; p < count; p++)                                                            \
      if (raw[p] != zero_bits) return p0;                                                           \
    return count;                                                                                   \
  }                                                                                                 \
  /* The lists of b's columns, or 0 (nothing allocated) if more than 1 / share of b is listed; 2 if  \
   * memory ran out. One pass over b in its own order, a line (row of b, or of its transpose) at a  \
   * time, by blocks (NAME##_next_block; the blocks with an entry are read again one by one, with   \
   * no branch on the data): an entry's column and k are its line and its place in the line, with no\
   * division. Given the transpose, a line is one column and its entries come in the lists' order; \
   * otherwise a stable counting sort by column follows: k ascending within each list either way. */\
  static int NAME##_lists(const T *b, int64_t K, int64_t N, int bt, T zero, int64_t share,          \
                          struct sparse_lists *l) {                                                 \
    const int64_t cap = K * N / share + 1, lines = bt ? N : K, len = bt ? K : N;                    \
    int64_t *start = calloc((size_t)N + 1, sizeof(int64_t)), listed = 0;                            \
    const size_t room = (size_t)(cap + SPARSE_BLOCK); /* a block's writes land before its check */ \
    int32_t *ks = malloc(room * sizeof(int32_t));                                                   \
    T *values = malloc(room * sizeof(T));                                                           \
    int64_t *columns = bt ? NULL : malloc(room * sizeof(int64_t)); /* for the sort */              \
    if (start == NULL || ks == NULL || values == NULL || (!bt && columns == NULL)) {                \
      free(start), free(ks), free(values), free(columns);                                          \
      return 2;                                                                                     \
    }                                                                                               \
    for (int64_t r = 0; r < lines; r++) {                                                           \
      const T *line = b + r * len;                                                                  \
      const int64_t line_start = listed;                                                            \
      for (int64_t p0 = NAME##_next_block(line, 0, len, zero); p0 < len;                            \
           p0 = NAME##_next_block(line, p0 + SPARSE_BLOCK, len, zero)) {                            \
        const int64_t p1 = len - p0 < SPARSE_BLOCK ? len : p0 + SPARSE_BLOCK;                       \
        for (int64_t p = p0; p < p1; p++) { /* every entry written, the next one's place kept only  \
                                              * past a kept entry: no branch on the data */         \
          const T v = line[p];                                                                      \
          const int kept = v != zero; /* NaN too: it is not the zero */                             \
          ks[listed] = (int32_t)(bt ? p : r), values[listed] = v;                                   \
          if (!bt) columns[listed] = p, start[p + 1] += kept;                                       \
          listed += kept;                                                                           \
        }                                                                                           \
        if (listed > cap) { /* not sparse enough */                                                 \
          free(start), free(ks), free(values), free(columns);                                      \
          return 0;                                                                                 \
        }                                                                                           \
      }                                                                                             \
      if (bt) start[r + 1] = listed - line_start;                                                   \
      /* on course for half as much again as the cap, past a 32nd of b and 4096 entries: the dense \
       * kernel, without the rest of the pass (which costs most at densities just over the cap) */ \
      if (32 * (r + 1) >= lines && (r + 1) * len >= 4096 && 2 * listed * lines > 3 * cap * (r + 1)) { \
        free(start), free(ks), free(values), free(columns);                                        \
        return 0;                                                                                   \
      }                                                                                             \
    }                                                                                               \
    for (int64_t j = 0; j < N; j++) start[j + 1] += start[j];                                       \
    if (!bt) { /* b's order is k-major: sorted by column into fresh lists, stable */                \
      int64_t *fill = malloc((size_t)(N > 0 ? N : 1) * sizeof(int64_t));                            \
      int32_t *sorted_k = malloc((size_t)(listed > 0 ? listed : 1) * sizeof(int32_t));              \
      T *sorted_values = malloc((size_t)(listed > 0 ? listed : 1) * sizeof(T));                     \
      if (fill == NULL || sorted_k == NULL || sorted_values == NULL) {                              \
        free(fill), free(sorted_k), free(sorted_values);                                            \
        free(start), free(ks), free(values), free(columns);                                        \
        return 2;                                                                                   \
      }                                                                                             \
      memcpy(fill, start, (size_t)N * sizeof(int64_t));                                             \
      for (int64_t e = 0; e < listed; e++) {                                                        \
        const int64_t to = fill[columns[e]]++;                                                      \
        sorted_k[to] = ks[e], sorted_values[to] = values[e];                                        \
      }                                                                                             \
      free(fill), free(ks), free(values), free(columns);                                            \
      ks = sorted_k, values = sorted_values;                                                        \
    }                                                                                               \
    l->start = start, l->k = ks, l->value = values;                                                 \
    return 1;                                                                                       \
  }
DEFINE_SPARSE(float, sparse_f32, bits_f32)
DEFINE_SPARSE(double, sparse_f64, bits_f64)

/* dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols, by blocks: with `tile` (an AVX2
 * transpose of TW x TW blocks) the whole blocks go through it and the edges are copied one by one;
 * without (NULL), every block of TRANSPOSE_TILE x TRANSPOSE_TILE is copied one by one. A plain
 * transposing copy walks one side a whole row apart, which for power-of-two widths maps the
 * accesses to a few cache sets; a block's 8 rows fit in the sets they alias to (larger blocks
 * thrash them again): NumPy's copy of a 512 x 512 float32 transpose takes 0.84 ms, this 0.16 ms. */
#define TRANSPOSE_TILE 8
#define DEFINE_TRANSPOSE_BLOCK(T, NAME, TW)                                                         \
  static void NAME(const T *src, int64_t lds, int64_t rows, int64_t cols, T *dst, int64_t ldd,      \
                   void (*tile)(const T *, int64_t, T *, int64_t)) {                                \
    const int64_t bw = tile ? TW : TRANSPOSE_TILE;                                                  \
    for (int64_t i0 = 0; i0 < rows; i0 += bw) {                                                     \
      const int64_t i1 = rows - i0 < bw ? rows : i0 + bw;                                           \
      for (int64_t j0 = 0; j0 < cols; j0 += bw) {                                                   \
        const int64_t j1 = cols - j0 < bw ? cols : j0 + bw;                                         \
        if (tile && i1 - i0 == bw && j1 - j0 == bw) {                                               \
          tile(src + i0 * lds + j0, lds, dst + j0 * ldd + i0, ldd);                                 \
          continue;                                                                                 \
        }                                                                                           \
        for (int64_t i = i0; i < i1; i++)                                                           \
          for (int64_t j = j0; j < j1; j++) dst[j * ldd + i] = src[i * lds + j];                    \
      }                                                                                             \
    }                                                                                               \
  }
DEFINE_TRANSPOSE_BLOCK(float, transpose_block_f32, 8)
DEFINE_TRANSPOSE_BLOCK(double, transpose_block_f64, 4)
DEFINE_TRANSPOSE_BLOCK(int32_t, transpose_block_i32, 8)

/* Winners, transposed as transpose_block does (int64 lanes narrowed to int32). The AVX2 one moves
 * int32 bits through the float tile (shuffles only: the bits as they are). */
#ifdef TROPIC_X86
static AVX2 void transpose_tile_i32(const int32_t *src, int64_t lds, int32_t *dst, int64_t ldd) {
  transpose_tile_f32((const float *)src, lds, (float *)dst, ldd);
}
static void transpose_winners_avx2(const int32_t *src, int64_t lds, int64_t rows, int64_t cols, int32_t *dst,
                                   int64_t ldd) {
  transpose_block_i32(src, lds, rows, cols, dst, ldd, transpose_tile_i32);
}
#endif
static void transpose_winners(const int32_t *src, int64_t lds, int64_t rows, int64_t cols, int32_t *dst,
                              int64_t ldd) {
  transpose_block_i32(src, lds, rows, cols, dst, ldd, NULL);
}
static void narrow_winners(const int64_t *src, int64_t lds, int64_t rows, int64_t cols, int32_t *dst,
                           int64_t ldd) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) dst[j * ldd + i] = (int32_t)src[i * lds + j];
}

/* Row tiles t, t + n, ... of c = a (x) B over the lists (T with LANE, the integer of its width, in
 * BYTES-byte vectors), vectorised across the rows of a tile (up to SPARSE_VECTORS vectors of rows).
 * The tile of a is first transposed into `at` (each k's rows side by side); then each column j runs
 * its list in increasing k, every lane doing best = v > best ? v : best (v < best to minimise) with
 * a mask and taking k as its winner where it took v: the same compares in the same order as one
 * output at a time, without a branch on the data (one output at a time, the compare and the list's
 * end each mispredict about once per output). Each column's lanes go to `ct` / `wt` (the tile's
 * outputs transposed: column j's rows side by side), transposed into c / idx at the end. `buffer`
 * holds at, ct and wt: (K + 2 N) * SPARSE_VECTORS * BYTES bytes. */
#define DEFINE_SPARSE_TILES(T, NAME, LANE, BYTES, ATTR, TRANSPOSE, TILE, WINNERS)                   \
  static ATTR void NAME(const T *a, const struct sparse_lists *l, T *c, int32_t *idx, int64_t M,    \
                        int64_t K, int64_t N, int maximise, void *buffer, int t, int n) {           \
    typedef T values_v __attribute__((vector_size(BYTES)));                                         \
    typedef LANE lanes_v __attribute__((vector_size(BYTES)));                                       \
    enum { LANES = BYTES / sizeof(T), ROWS = SPARSE_VECTORS * LANES };                              \
    T *at = buffer, *ct = at + K * ROWS;                                                            \
    LANE *wt = (LANE *)(ct + N * ROWS);                                                             \
    const T zero = maximise ? (T)-INFINITY : (T)INFINITY;                                           \
    const T *values = l->value;                                                                     \
    const int64_t tiles = (M + ROWS - 1) / ROWS;                                                    \
    for (int64_t tile = t; tile < tiles; tile += n) {                                               \
      const int64_t i0 = tile * ROWS, rows = M - i0 < ROWS ? M - i0 : ROWS;                         \
      const int vectors = (int)((rows + LANES - 1) / LANES), width = vectors * LANES;               \
      TRANSPOSE(a + i0 * K, K, rows, K, at, width, TILE);                                           \
      for (int64_t j = 0; j < N; j++) {                                                             \
        values_v best[SPARSE_VECTORS];                                                              \
        lanes_v win[SPARSE_VECTORS];                                                                \
        for (int q = 0; q < SPARSE_VECTORS; q++)                                                    \
          best[q] = (values_v){0} + zero, win[q] = (lanes_v){0} - 1;                                \
        for (int64_t p = l->start[j]; p < l->start[j + 1]; p++) {                                   \
          const T w = values[p];                                                                    \
          const LANE k = l->k[p];                                                                   \
          for (int q = 0; q < SPARSE_VECTORS && q < vectors; q++) {                                 \
            values_v v; /* lanes past the tile's rows: whatever `at` held, never stored */           \
            memcpy(&v, at + k * width + q * LANES, sizeof v);                                       \
            v += w;                                                                                 \
            const lanes_v took = maximise ? v > best[q] : v < best[q];                              \
            best[q] = (values_v)(((lanes_v)v & took) | ((lanes_v)best[q] & ~took));                 \
            win[q] = (k & took) | (win[q] & ~took);                                                 \
          }                                                                                         \
        }                                                                                           \
        for (int q = 0; q < SPARSE_VECTORS && q < vectors; q++) {                                   \
          memcpy(ct + j * width + q * LANES, &best[q], sizeof best[q]);                             \
          memcpy(wt + j * width + q * LANES, &win[q], sizeof win[q]);                               \
        }                                                                                           \
      }                                                                                             \
      TRANSPOSE(ct, width, N, rows, c + i0 * N, N, TILE);                                           \
      if (idx) WINNERS(wt, width, N, rows, idx + i0 * N, N);                                        \
    }                                                                                               \
  }
#ifdef TROPIC_X86
DEFINE_SPARSE_TILES(float, sparse_f32_tiles_avx2, int32_t, 32, AVX2, transpose_block_f32, transpose_tile_f32,
                    transpose_winners_avx2)
DEFINE_SPARSE_TILES(double, sparse_f64_tiles_avx2, int64_t, 32, AVX2, transpose_block_f64, transpose_tile_f64,
                    narrow_winners)
#endif
DEFINE_SPARSE_TILES(float, sparse_f32_tiles, int32_t, 16, , transpose_block_f32, NULL, transpose_winners)
DEFINE_SPARSE_TILES(double, sparse_f64_tiles, int64_t, 16, , transpose_block_f64, NULL, narrow_winners)

struct sparse_job {
  const void *a;
  const struct sparse_lists *lists;
  void *c;
  int32_t *idx;
  int64_t M, K, N;
  int maximise, is_f64;
};

static int sparse_task(void *ctx, int task, int tasks) {
  const struct sparse_job *j = ctx;
  const int wide = choose_isa() >= 1; /* AVX2: 32-byte vectors, else 16 */
  const int64_t bytes_per_k = SPARSE_VECTORS * (wide ? 32 : 16); /* one k's rows of a tile */
  const int64_t rows = bytes_per_k / (j->is_f64 ? sizeof(double) : sizeof(float));
  if (task >= (j->M + rows - 1) / rows) return 0; /* no tile left for this task */
  const size_t bytes = (size_t)((j->K + 2 * j->N) * bytes_per_k); /* a's tile and c's, transposed */
  void *at = tropic_task_buffer(bytes);
  if (at == NULL) return 2;
#ifdef TROPIC_X86
  if (wide && j->is_f64)
    sparse_f64_tiles_avx2(j->a, j->lists, j->c, j->idx, j->M, j->K, j->N, j->maximise, at, task, tasks);
  else if (wide)
    sparse_f32_tiles_avx2(j->a, j->lists, j->c, j->idx, j->M, j->K, j->N, j->maximise, at, task, tasks);
  else
#endif
  if (j->is_f64)
    sparse_f64_tiles(j->a, j->lists, j->c, j->idx, j->M, j->K, j->N, j->maximise, at, task, tasks);
  else
    sparse_f32_tiles(j->a, j->lists, j->c, j->idx, j->M, j->K, j->N, j->maximise, at, task, tasks);
  tropic_task_buffer_done(at, bytes);
  return 0;
}

/* The product over B's lists when B is mostly the tropical zero: 1 (done: c and idx written, and
 * *b_nan whether b holds a NaN), 0 (B is not sparse enough: the caller runs the dense kernel), 2
 * (out of memory). M, K, N >= 1. */
static int sparse_product(const void *a, const void *b, void *c, int32_t *idx, int64_t M, int64_t K, int64_t N,
                          int maximise, int bt, int is_f64, int tasks, int threads, int *b_nan) {
  if (K * N < SPARSE_MIN_ENTRIES) return 0;
  /* The lists are kept up to 1/share of B. Their cost is mostly the pass over B and the work per
   * column, which few rows do not repay, and the dense kernel is faster without winners: x M x 512
   * @ 512 x 512, one thread, lists against the dense kernel, with winners: M = 16 at 1/32 of B
   * 451-553 against 506-559 us, M = 32 at 1/16 611-616 against 859-1050 us, M = 64 at 1/16
   * 794-1043 against 1659-2099 us; values only, at 1/20: M = 64 925 against 1480 us, M = 32 819
   * against 813 us; at 1/40, M = 16 497 against 457 us. */
  const int winners = idx != NULL;
  const int64_t share = M >= (winners ? 32 : 64) ? 16 : M >= (winners ? 16 : 32) ? 32 : 128;
  struct sparse_lists lists;
  int found;
  if (is_f64) {
    const double zero = maximise ? -INFINITY : INFINITY;
    if (!sparse_f64_sample(b, K * N, zero, share)) return 0;
    found = sparse_f64_lists(b, K, N, bt, zero, share, &lists);
  } else {
    const float zero = maximise ? -INFINITY : INFINITY;
    if (!sparse_f32_sample(b, K * N, zero, share)) return 0;
    found = sparse_f32_lists(b, K, N, bt, zero, share, &lists);
  }
  if (found != 1) return found;
  /* A NaN of b is not the zero, so it is listed: b's NaN scan reads the lists, not all of b. */
  *b_nan = 0;
  for (int64_t e = 0; e < lists.start[N] && !*b_nan; e++)
    *b_nan = is_f64 ? isnan(((const double *)lists.value)[e]) : isnan(((const float *)lists.value)[e]);
  struct sparse_job job = {a, &lists, c, idx, M, K, N, maximise, is_f64};
  const int64_t work = M * (lists.start[N] + N);
  const int status = work < SPARSE_PARALLEL_WORK || threads < 2 ? sparse_task(&job, 0, 1)
                                                     : tropic_pool_run(sparse_task, &job, tasks, threads);
  free(lists.start), free(lists.k), free(lists.value);
  return status == 0 ? 1 : status;
}

/* float16 <-> float32 conversions of whole arrays (F16C, 8 at a time; narrowing rounds to nearest
 * even, overflow to infinity): the torch engine's widening of float16 operands and narrowing of the
 * results, several times faster than NumPy's casts. 3 where the CPU lacks AVX2 + F16C. */
#ifdef TROPIC_X86
static AVX2F16C void widen_f16(const uint16_t *src, float *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  for (; i < n; i++) _mm_store_ss(dst + i, _mm_cvtph_ps(_mm_cvtsi32_si128(src[i])));
}

static AVX2F16C void narrow_f16(const float *src, uint16_t *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++)
    dst[i] = (uint16_t)_mm_cvtsi128_si32(_mm_cvtps_ph(_mm_load_ss(src + i), _MM_FROUND_TO_NEAREST_INT));
}

/* bfloat16 <-> float32: widening puts the 16 bits on top; narrowing rounds to nearest even on the
 * bits, and a NaN keeps its top bits with the quiet bit set (so it stays a NaN). */
static AVX2 void widen_bf16(const uint16_t *src, float *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
    _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(wide, 16));
  }
  for (; i < n; i++) {
    const uint32_t bits = (uint32_t)src[i] << 16;
    memcpy(dst + i, &bits, 4);
  }
}

static inline uint16_t narrow_bf16_one(float x) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  if (x != x) return (uint16_t)((bits >> 16) | 0x0040);
  return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

static AVX2 void narrow_bf16(const float *src, uint16_t *dst, int64_t n) {
  int64_t i = 0;
  const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7FFF), quiet = _mm256_set1_epi32(0x0040);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(bits, _mm256_add_epi32(half, _mm256_and_si256(_mm256_srli_epi32(bits, 16), one))), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    const __m256i kept = _mm256_or_si256(_mm256_srli_epi32(bits, 16), quiet);
    const __m256i top = _mm256_blendv_epi8(rounded, kept, nan);
    /* 8 x 32-bit lanes (each < 2^16) to 8 x 16 bits: pack within lanes, then join the two halves */
    const __m256i packed = _mm256_packus_epi32(top, top);
    const __m128i out = _mm_unpacklo_epi64(_mm256_castsi256_si128(packed), _mm256_extracti128_si256(packed, 1));
    _mm_storeu_si128((__m128i *)(dst + i), out);
  }
  for (; i < n; i++) dst[i] = narrow_bf16_one(src[i]);
}
#endif

/* float32 rounded in place to bfloat16's 8 significand bits, to nearest even; a NaN is left as it
 * is (its low bits could carry out of the exponent): kernels.py's _round_to_bfloat16, bit for bit. */
static inline void round_bf16_one(float *x) {
  uint32_t bits;
  memcpy(&bits, x, 4);
  if (*x != *x) return;
  bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000u;
  memcpy(x, &bits, 4);
}

#ifdef TROPIC_X86
static AVX2F16C void round_bf16(float *x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    _mm256_storeu_ps(x + i, _mm256_blendv_ps(tropic_rounded_sums(v, 2), v, nan));
  }
  for (; i < n; i++) round_bf16_one(x + i);
}
#endif

int tropic_round_bf16(float *x, int64_t n) {
#ifdef TROPIC_X86
  if (tropic_rounding_supported()) {
    round_bf16(x, n);
    return 0;
  }
#endif
  for (int64_t i = 0; i < n; i++) round_bf16_one(x + i);
  return 0;
}

int tropic_widen_bf16(const uint16_t *src, float *dst, int64_t n) {
#ifdef TROPIC_X86
  if (choose_isa() != 0) {
    widen_bf16(src, dst, n);
    return 0;
  }
#endif
  for (int64_t i = 0; i < n; i++) {
    const uint32_t bits = (uint32_t)src[i] << 16;
    memcpy(dst + i, &bits, 4);
  }
  return 0;
}

int tropic_narrow_bf16(const float *src, uint16_t *dst, int64_t n) {
#ifdef TROPIC_X86
  if (choose_isa() != 0) {
    narrow_bf16(src, dst, n);
    return 0;
  }
#endif
  for (int64_t i = 0; i < n; i++) dst[i] = narrow_bf16_one(src[i]);
  return 0;
}

int tropic_widen_f16(const uint16_t *src, float *dst, int64_t n) {
  if (!tropic_rounding_supported()) return 3;
#ifdef TROPIC_X86
  widen_f16(src, dst, n);
#endif
  return 0;
}

int tropic_narrow_f16(const float *src, uint16_t *dst, int64_t n) {
  if (!tropic_rounding_supported()) return 3;
#ifdef TROPIC_X86
  narrow_f16(src, dst, n);
#endif
  return 0;
}

int tropic_matmul_f64(const double *a, const double *b, double *c, int32_t *idx, int64_t M, int64_t K,
                      int64_t N, int maximise, int threads) {
  if (M <= 0 || N <= 0) return 0;
  if (K <= 0) return empty_f64(c, idx, M * N, maximise);
#ifdef TROPIC_X86
  if (choose_isa()) return avx2_f64(a, b, c, idx, M, K, N, maximise != 0, threads);
#endif
  return generic_f64(a, b, c, idx, M, K, N, maximise != 0, threads);
}


/* dst (cols x rows) = the transpose of src (rows x cols), both C-contiguous (transpose_block's
 * blocks): a layer's product x W^T hands the kernels B = W^T, a transposed view. */
int tropic_transpose_f32(const float *src, float *dst, int64_t rows, int64_t cols) {
  transpose_block_f32(src, cols, rows, cols, dst, rows, NULL);
  return 0;
}

int tropic_transpose_f64(const double *src, double *dst, int64_t rows, int64_t cols) {
  transpose_block_f64(src, cols, rows, cols, dst, rows, NULL);
  return 0;
}

/* Python entry point, for the small products where ctypes' per-call costs (an address per array, the
 * argument conversions) and a separate NaN scan in NumPy would cost more than the product itself:
 *
 *   product(a, b, c, idx, maximise, tasks=1, threads=1, b_transposed=False, bias=None)
 *       -> (status, nan_found)
 *
 * a (M, K), b (K, N) C-contiguous float32 or float64 of one type (buffer protocol, no copy); with
 * b_transposed, b is B's transpose, (N, K) C-contiguous (a layer's W in x @ W^T, packed straight
 * from where it lies); c and idx (M, N) writable, of a's type and int32 (idx None: the values
 * only). bias (N,) of a's type: candidate K of every output (tropic_bias_select_*), applied after the
 * product unless a NaN was found (the caller applies the NaN rule, then the bias). Without the GIL;
 * on one thread, or with threads > 1 in `tasks` shares on the thread pool.
 * nan_found says whether a or b holds a NaN (the caller then applies the NaN rule). Argument
 * errors raise TypeError / ValueError (the caller checks first, so they mean a bug on its side). */
static int get_matrix(PyObject *obj, Py_buffer *view, int writable, const char *name) {
  const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
  if (view->ndim != 2) {
    PyErr_Format(PyExc_ValueError, "product: %s must be 2-D", name);
    PyBuffer_Release(view);
    return -1;
  }
  return 0;
}

/* Whether x holds a NaN. No early exit inside a block, so that the compiler vectorises the unordered
 * compares (the element-wise loop with a `return` in it ran one compare per cycle: 20-70 us of a
 * layer-sized product); a block of 2048 elements is a few L1 loads. */
#define NAN_SCAN_BLOCK 2048
#define DEFINE_ANY_NAN(T, NAME, ATTRIBUTES)                                                         \
  ATTRIBUTES static int NAME(const T *x, Py_ssize_t n) {                                            \
    for (Py_ssize_t start = 0; start < n; start += NAN_SCAN_BLOCK) {                               \
      const Py_ssize_t end = n - start < NAN_SCAN_BLOCK ? n : start + NAN_SCAN_BLOCK;               \
      int found = 0;                                                                                \
      for (Py_ssize_t i = start; i < end; i++) found |= x[i] != x[i];                               \
      if (found) return 1;                                                                          \
    }                                                                                               \
    return 0;                                                                                       \
  }
DEFINE_ANY_NAN(float, any_nan_f32, )
DEFINE_ANY_NAN(double, any_nan_f64, )
#ifdef TROPIC_X86
/* The same scans compiled for AVX2 (8 floats a compare, where the portable build's SSE2 does 4):
 * a tenth of a 64 x 256 @ 256 x 10 product's time went to them. */
DEFINE_ANY_NAN(float, any_nan_f32_avx2, AVX2)
DEFINE_ANY_NAN(double, any_nan_f64_avx2, AVX2)
#endif

static int any_nan(const char *data, Py_ssize_t n, int is_double) {
#ifdef TROPIC_X86
  if (choose_isa() >= 1)
    return is_double ? any_nan_f64_avx2((const double *)data, n) : any_nan_f32_avx2((const float *)data, n);
#endif
  return is_double ? any_nan_f64((const double *)data, n) : any_nan_f32((const float *)data, n);
}

/* Whether the pair (maximise 2: an MPM layer's max-plus and min-plus products of one A and one B)
 * has a kernel of its own on this CPU: the AVX2 and AVX-512 ones. The portable path runs the two
 * products one after the other. */
static int pair_kernel(void) { return choose_isa() >= 1; }

static PyObject *py_product(PyObject *self, PyObject *args) {
  PyObject *objects[6] = {NULL, NULL, NULL, NULL, Py_None, Py_None};
  int maximise, tasks = 1, threads = 1, bt = 0;
  (void)self;
  if (!PyArg_ParseTuple(args, "OOOOi|iipOO", &objects[0], &objects[1], &objects[2], &objects[3], &maximise,
                        &tasks, &threads, &bt, &objects[4], &objects[5]))
    return NULL;
  if (maximise < 0 || maximise > 2 || (maximise != 2 && objects[5] != Py_None)) {
    PyErr_SetString(PyExc_ValueError, "product: maximise must be 0, 1 or 2 (bias_min only with 2)");
    return NULL;
  }
  const int pair = maximise == 2, planes = pair ? 2 : 1;
  Py_buffer views[6];
  const char *names[6] = {"a", "b", "c", "idx", "bias", "bias_min"};
  int held[6] = {0, 0, 0, 0, 0, 0}, ok = 1;
  for (int i = 0; i < 6 && ok; i++) {
    if (objects[i] == Py_None && i >= 3) continue; /* idx None: the values only; bias None: none */
    if (i < 4) {
      ok = get_matrix(objects[i], &views[i], i == 2 || i == 3, names[i]) == 0;
    } else {
      ok = PyObject_GetBuffer(objects[i], &views[i], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) == 0;
      if (ok && views[i].ndim != 1) {
        PyErr_SetString(PyExc_ValueError, "product: bias and bias_min must be 1-D");
        PyBuffer_Release(&views[i]);
        ok = 0;
      }
    }
    held[i] = ok;
  }
  PyObject *result = NULL;
  if (ok) {
    const char *type = views[0].format;
    const int is_double = type[0] == 'd' && type[1] == 0;
    const int is_float = type[0] == 'f' && type[1] == 0;
    const Py_ssize_t M = views[0].shape[0], K = views[0].shape[1], N = views[1].shape[!bt];
    const int indexed = held[3];
    int bias_type_ok = 1, bias_shape_ok = 1;
    for (int i = 4; i < 6; i++)
      if (held[i]) {
        bias_type_ok = bias_type_ok && !strcmp(views[i].format, type);
        bias_shape_ok = bias_shape_ok && views[i].shape[0] == N;
      }
    if (!(is_double || is_float) || strcmp(views[1].format, type) || strcmp(views[2].format, type) || !bias_type_ok ||
        (indexed && (views[3].itemsize != 4 || (views[3].format[0] != 'i' && views[3].format[0] != 'l')))) {
      PyErr_SetString(PyExc_TypeError,
                      "product: a, b, c (and bias) must be float32 or float64 of one type, idx int32");
    } else if (views[1].shape[bt] != K || views[2].shape[0] != planes * M || views[2].shape[1] != N ||
               (indexed && (views[3].shape[0] != planes * M || views[3].shape[1] != N)) || !bias_shape_ok) {
      PyErr_SetString(PyExc_ValueError,
                      bt ? "product: shapes must be (M, K), (N, K), (M, N), (M, N), bias (N,); c and idx "
                           "(2 M, N) for a pair"
                         : "product: shapes must be (M, K), (K, N), (M, N), (M, N), bias (N,); c and idx "
                           "(2 M, N) for a pair");
    } else if (tasks < 1 || threads < 1) {
      PyErr_SetString(PyExc_ValueError, "product: tasks and threads must be at least 1");
    } else {
      int status = 0, nan_found;
      int32_t *idx = indexed ? views[3].buf : NULL;
      const void *b = views[1].buf;
      void *b_copy = NULL; /* B in its own layout, for the portable path given B's transpose */
      const size_t plane = (size_t)(M * N) * (is_double ? sizeof(double) : sizeof(float));
      Py_BEGIN_ALLOW_THREADS
      nan_found = any_nan(views[0].buf, M * K, is_double);
      int b_nan = -1; /* unknown until the sparse product reads b's lists or the scan below reads b */
      const int empty = M == 0 || K == 0 || N == 0; /* nothing to pack or share: the plain calls fill */
      if (empty) bt = 0;
      if (bt && choose_isa() == 0) {
        b_copy = malloc((size_t)(K * N) * (is_double ? sizeof(double) : sizeof(float)));
        if (b_copy == NULL) status = 2;
        else if (is_double) tropic_transpose_f64(b, b_copy, N, K);
        else tropic_transpose_f32(b, b_copy, N, K);
        b = b_copy, bt = 0;
      }
      /* A pair in one pass where a pair kernel exists, else the max-plus plane, then the min-plus */
      const int fused = pair && !empty && pair_kernel();
      for (int pass = 0; pass < (fused ? 1 : planes) && status == 0; pass++) {
        const int sense = pair && !fused ? 1 - pass : maximise;
        void *c = (char *)views[2].buf + pass * plane;
        int32_t *ix = idx ? idx + pass * M * N : NULL;
        int done = 0;
        if (!empty && !fused) { /* B mostly the tropical zero: the product over its lists */
          const int sparse = sparse_product(views[0].buf, b, c, ix, M, K, N, sense, bt, is_double, tasks, threads,
                                            &b_nan);
          if (sparse == 2) status = 2;
          done = sparse == 1;
        }
        if (status == 0 && !done) {
          if (!empty && (bt || threads > 1 || fused)) {
            struct product_job job = {views[0].buf, b, c, ix, M, K, N, sense, 0, is_double, bt};
            status = threads > 1 ? tropic_pool_run(product_task, &job, tasks, threads) : product_task(&job, 0, 1);
          } else if (is_double) {
            status = tropic_matmul_f64(views[0].buf, b, c, ix, M, K, N, sense, 1);
          } else {
            status = tropic_matmul_f32(views[0].buf, b, c, ix, M, K, N, sense, 1);
          }
        }
      }
      if (!nan_found) nan_found = b_nan >= 0 ? b_nan : any_nan(b, K * N, is_double);
      for (int p = 0; p < planes && status == 0 && !nan_found; p++) { /* the biases, plane by plane */
        if (!held[4 + p]) continue;
        void *c = (char *)views[2].buf + p * plane;
        int32_t *ix = idx ? idx + p * M * N : NULL;
        const int sense = pair ? 1 - p : maximise;
        status = is_double ? tropic_bias_select_f64(c, views[4 + p].buf, M, N, sense, ix, 4, K)
                           : tropic_bias_select_f32(c, views[4 + p].buf, M, N, sense, ix, 4, K);
      }
      free(b_copy);
      Py_END_ALLOW_THREADS
      result = Py_BuildValue("(ii)", status, nan_found);
    }
  }
  for (int i = 0; i < 6; i++)
    if (held[i]) PyBuffer_Release(&views[i]);
  return result;
}

static PyMethodDef methods[] = {
    {"product", py_product, METH_VARARGS,
     "product(a, b, c, idx, maximise, tasks=1, threads=1, b_transposed=False, bias=None, bias_min=None) -> "
     "(status, nan_found); idx None: the values only; b_transposed: b is B's transpose, (N, K); bias (N,): "
     "applied unless nan_found; maximise 2: the pair, max-plus into c[:M] (idx[:M]) with bias, min-plus "
     "into c[M:] (idx[M:]) with bias_min"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_matmul_c",
                                    "tropic's compiled products (ctypes names and a direct entry point)",
                                    -1, methods};
PyMODINIT_FUNC PyInit__matmul_c(void) { return PyModule_Create(&module); }
