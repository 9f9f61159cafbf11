/* Compiled grey-level morphology kernels of tropic's NumPy backend, called through ctypes (compiled.py).
 *
 *   tropic_taps_strided_{f32,f64}  any structuring element, as a list of taps over a once-padded image
 *                          batch, images and outputs spaced by given strides (the stride-1 tropical
 *                          convolutions: channels of a group stacked as one tall image)
 *   tropic_taps_rounded_strided_f32  the same for half-precision images widened to float32: every
 *                          weighted sum rounded to float16 or bfloat16 before it compares (AVX2 + F16C)
 *   tropic_rect_{f32,f64}  flat full rectangle, van Herk / Gil-Werman: O(1) comparisons per pixel in kh, kw
 *   tropic_morphology_pooled_{f32,f64}, tropic_conv_pooled_{f32,f64}, tropic_rect_pooled_{f32,f64}
 *                          a whole call's blocks (padded and reduced, or one kernel call each) on the
 *                          task pool of thread_pool.h: what Python calls for more than a few taps (the
 *                          convolutions' tap loop takes up to 4 output channels at once)
 *   tropic_isa             "avx512+avx2", "avx2" or "generic": the code paths chosen at load time
 *
 * Contract (bitwise, the same as the NumPy kernel in kernels.py):
 *  - candidates are taken in order (the taps as given; the rectangle's in flat index order) and replace
 *    the best only if strictly better (v > best to maximise, v < best to minimise). Ordered comparisons
 *    are false for NaN, so NaN candidates (inf + -inf among them) never win, and ties keep the earliest:
 *    -0.0 == +0.0 is a tie, and the stored value is exactly the winner's bits. Sums are in the array's
 *    own precision (no wider accumulator, no FMA).
 *  - taps: P (n, Hp, Wp); out[b,i,j] = best over t of P[b, i+tap_row[t], j+tap_col[t]] (+ tap_weight[t]),
 *    idx = tap_index[t] of the winner; no winner: the tropical zero and -1. idx NULL: the values only (no
 *    comparison is spent on the winners; not with a rounding).
 *  - rect: out (n, Hp-kh+1, Wp-kw+1) = best over the kh x kw window, idx = u*kw + v of the lowest-index
 *    maximum. P holds no NaN (the caller guarantees it); an output equal to the tropical zero may carry
 *    any index (the caller resets it to -1).
 *  - returns 0 on success, 1 on bad arguments, 2 when scratch memory could not be allocated, 3 for a
 *    rounding the CPU cannot do (no AVX2 + F16C).
 * The AVX2 path (picked once at load time with __builtin_cpu_supports; TROPIC_FORCE_GENERIC=1 in the
 * environment forces the generic path, for tests), the AVX-512 convolution tap loop (also the unrounded
 * morphology taps' on CPUs that do not split 512-bit operations; TROPIC_MAX_ISA=avx2 caps it)
 * and the generic C path give identical results, for any number of threads: only comparisons, selects
 * and one add per candidate, in the same order.
 *
 * The f32 and f64 kernels are one template: this file includes itself once per element type (the part
 * after `#else` below), so the algorithms are written once. The Python module stub exists only so that
 * pip builds the file as an extension; nothing is called through it.
 */
#ifndef TROPIC_T /* ------------------------------------------------------------------ common part */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#define TROPIC_X86 1
#include <immintrin.h>

#include "half_rounding.h"
#else
#define TROPIC_X86 0
#endif
#include "thread_pool.h"

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_morphology_c", "ctypes-loaded kernels", -1, NULL};
PyMODINIT_FUNC PyInit__morphology_c(void) { return PyModule_Create(&module); }

#define EXPORT __attribute__((visibility("default")))
#define INLINE static inline __attribute__((always_inline))
#define BAD_ARGUMENT 1
#define NO_MEMORY 2
#define UNSUPPORTED 3 /* half-precision rounding without AVX2 + F16C: the caller keeps its NumPy path */
/* Below this many candidates (some 50 us on one core) one thread: a team's barrier stalls for
 * milliseconds when other processes hold the cores, which a small call should not risk. */
#define PARALLEL_MIN_WORK (1 << 20)
/* Rectangle: images per pass are limited so that the row-pass buffer stays about this many elements. */
#define RECT_BUFFER_ELEMENTS ((int64_t)1 << 22)
/* Rectangle column pass: a task covers at most this many columns of one block of kh output rows. */
#define RECT_STRIP 256

/* The calling convention of the exported functions: compiled.py refuses a build whose number is not
   the one it was written for (2: tropic_conv_pooled takes the winners' array and width). */
EXPORT int tropic_abi_version(void) { return 2; }

static int use_avx2 = 0;
static int use_f16c = 0;   /* AVX2 and F16C: the half-precision roundings of the tap loop */
static int use_avx512 = 0; /* AVX-512 F/VL/BW/DQ: the unrounded convolution tap loop (TROPIC_MAX_ISA=avx2 caps it) */
/* ... and the morphology tap loop (unrounded), on CPUs whose 512-bit operations are not two 256-bit halves:
   there (an Intel Xeon, 8x16x64x64, 3x3-7x7, one thread) it took 0.5-1.0x the AVX2 loop's time (with
   winners 0.5-0.8x); on a Zen 4, which splits them, it gained nothing (values up to 1.1x slower). */
static int use_avx512_taps = 0;

/* Read once when the library is loaded, so every call takes the same path (no data race either). */
__attribute__((constructor)) static void select_isa(void)
{
    const char *force = getenv("TROPIC_FORCE_GENERIC"); /* "1": the generic path, to test it on AVX2 machines */
    if (force != NULL && strcmp(force, "1") == 0)
        return;
#if TROPIC_X86
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    use_f16c = use_avx2 && __builtin_cpu_supports("f16c");
    const char *cap = getenv("TROPIC_MAX_ISA");
    use_avx512 = use_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                 !(cap != NULL && strcmp(cap, "avx2") == 0);
    use_avx512_taps = use_avx512 && !__builtin_cpu_is("amd");
#endif
}

EXPORT const char *tropic_isa(void) { return use_avx512 ? "avx512+avx2" : use_avx2 ? "avx2" : "generic"; }

static void *scratch_alloc(size_t bytes)
{
    size_t rounded = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, rounded ? rounded : 64);
}

/* Threads for a call: one for small work, never more than there are tasks (each has its own scratch). */
static int team_size(int threads, int64_t work, int64_t tasks)
{
    if (threads < 1 || work < PARALLEL_MIN_WORK)
        return 1;
    return tasks < threads ? (int)tasks : threads;
}

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int team_count(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* The next 64-byte aligned piece of one allocation (the caller sized it, rounding included). */
static void *carve(char **cursor, size_t bytes)
{
    char *piece = *cursor;
    *cursor += (bytes + 63) / 64 * 64;
    return piece;
}

/* Contiguous share [lo, hi) of `tasks` for this thread: uniform tasks, so a static split balances. */
static void share(int64_t tasks, int64_t *lo, int64_t *hi)
{
    int64_t tid = thread_id(), nt = team_count();
    *lo = tasks * tid / nt;
    *hi = tasks * (tid + 1) / nt;
}

/* to[q] = won[q] for q < count, in the caller's index type of `bytes` (1, 2 or 8; tap indices fit
   it): the tap loops write int32 winners, and a narrower dtype is the result. One loop per width,
   so that each vectorises. The callers narrow blocks still in cache: a whole int32 array cast
   afterwards (by NumPy: 11% of a one-channel 3x3 convolution's profile) goes through memory. */
static void narrow_winners(const int32_t *restrict won, void *to, int bytes, int64_t count)
{
    if (bytes == 1) {
        int8_t *restrict out = to;
        for (int64_t q = 0; q < count; q++)
            out[q] = (int8_t)won[q];
    } else if (bytes == 2) {
        int16_t *restrict out = to;
        for (int64_t q = 0; q < count; q++)
            out[q] = (int16_t)won[q];
    } else {
        int64_t *restrict out = to;
        for (int64_t q = 0; q < count; q++)
            out[q] = won[q];
    }
}

/* The checks shared by the tap-loop entries, then the taps' offsets into a padded image (a malloc'd
   array the caller frees). NULL with *status set: BAD_ARGUMENT, UNSUPPORTED (a rounding without AVX2 +
   F16C), NO_MEMORY, or 0 when there is nothing to compute. `item`: the element size (rounding is for
   float32 only). */
static int64_t *tap_offsets(int64_t n, int64_t Hp, int64_t Wp, int64_t pstride, int64_t H, int64_t W,
                            int64_t ostride, const int64_t *tap_row, const int64_t *tap_col, int64_t T_count,
                            int rounding, size_t item, int *status)
{
    *status = BAD_ARGUMENT;
    if (rounding != 0 && (rounding < 0 || rounding > 2 || item != sizeof(float)))
        return NULL;
    if (rounding != 0 && !use_f16c) {
        *status = UNSUPPORTED;
        return NULL;
    }
    if (n < 0 || H < 0 || W < 0 || T_count < 0 || Hp < H || Wp < W || pstride < Hp * Wp || ostride < H * W)
        return NULL;
    *status = 0;
    if (n == 0 || H == 0 || W == 0)
        return NULL;
    int64_t *off = scratch_alloc(sizeof(int64_t) * (size_t)(T_count > 0 ? T_count : 1));
    if (off == NULL) {
        *status = NO_MEMORY;
        return NULL;
    }
    for (int64_t t = 0; t < T_count; t++) { /* every read must stay inside its own padded image */
        if (tap_row[t] < 0 || tap_row[t] > Hp - H || tap_col[t] < 0 || tap_col[t] > Wp - W) {
            free(off);
            *status = BAD_ARGUMENT;
            return NULL;
        }
        off[t] = tap_row[t] * Wp + tap_col[t];
    }
    return off;
}

#if TROPIC_X86
/* F16C for the float16 rounding of half-precision sums; its instructions run only where use_f16c. */
#define AVX2 __attribute__((target("avx2,f16c")))
#define AVX2_INLINE static inline __attribute__((target("avx2,f16c"), always_inline))

/* Per-type vector vocabulary for the template. Index lanes match the value lanes: int32 for f32, int64
   for f64; `*32` load/store the int32 arrays of the interface. sel(m, a, b) = m ? a : b per lane. */
AVX2_INLINE __m256 vload_f32(const float *p) { return _mm256_loadu_ps(p); }
AVX2_INLINE void vstore_f32(float *p, __m256 x) { _mm256_storeu_ps(p, x); }
AVX2_INLINE __m256 vset1_f32(float x) { return _mm256_set1_ps(x); }
AVX2_INLINE __m256 vadd_f32(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
/* A sum rounded to float16 / bfloat16 (half_rounding.h): the half-precision ops' candidates. */
AVX2_INLINE __m256 vround_f32(__m256 v, const int rounding) { return tropic_rounded_sums(v, rounding); }
AVX2_INLINE __m256 vgt_f32(__m256 a, __m256 b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
AVX2_INLINE __m256 vge_f32(__m256 a, __m256 b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
/* max(a, b) / min(a, b) return b on ties (+0 vs -0) and when either is NaN: exactly "a if strictly
   better than b, else b", the selection rule, without the compare in the dependency chain. */
AVX2_INLINE __m256 vmax_f32(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
AVX2_INLINE __m256 vmin_f32(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
AVX2_INLINE __m256 vsel_f32(__m256 m, __m256 a, __m256 b) { return _mm256_blendv_ps(b, a, m); }
AVX2_INLINE __m256i isel_f32(__m256 m, __m256i a, __m256i b)
{
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a), m));
}
AVX2_INLINE __m256i iset1_f32(int64_t x) { return _mm256_set1_epi32((int32_t)x); }
AVX2_INLINE __m256i iadd_f32(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }
AVX2_INLINE __m256i isub_f32(__m256i a, __m256i b) { return _mm256_sub_epi32(a, b); }
AVX2_INLINE __m256i iload_f32(const int32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
AVX2_INLINE void istore_f32(int32_t *p, __m256i x) { _mm256_storeu_si256((__m256i *)p, x); }
AVX2_INLINE __m256i iload32_f32(const int32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
AVX2_INLINE void istore32_f32(int32_t *p, __m256i x) { _mm256_storeu_si256((__m256i *)p, x); }
AVX2_INLINE __m256i tailmask_f32(int64_t count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
AVX2_INLINE __m256 vmaskload_f32(const float *p, __m256i m) { return _mm256_maskload_ps(p, m); }
AVX2_INLINE void vmaskstore_f32(float *p, __m256i m, __m256 x) { _mm256_maskstore_ps(p, m, x); }
AVX2_INLINE void imaskstore32_f32(int32_t *p, __m256i m, __m256i x) { _mm256_maskstore_epi32(p, m, x); }
AVX2_INLINE void transpose_f32(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
AVX2_INLINE void itranspose_f32(__m256i r[8])
{
    __m256 f[8];
    for (int k = 0; k < 8; k++)
        f[k] = _mm256_castsi256_ps(r[k]);
    transpose_f32(f);
    for (int k = 0; k < 8; k++)
        r[k] = _mm256_castps_si256(f[k]);
}

/* Half width (SSE): a row's last 4 outputs, where a full vector would compute 8. On a CPU that splits each
   256-bit operation in two (first-generation Zen) it costs half of one. */
AVX2_INLINE __m128 hload_f32(const float *p) { return _mm_loadu_ps(p); }
AVX2_INLINE void hstore_f32(float *p, __m128 x) { _mm_storeu_ps(p, x); }
AVX2_INLINE __m128 hset1_f32(float x) { return _mm_set1_ps(x); }
AVX2_INLINE __m128 hadd_f32(__m128 a, __m128 b) { return _mm_add_ps(a, b); }
AVX2_INLINE __m128 hgt_f32(__m128 a, __m128 b) { return _mm_cmp_ps(a, b, _CMP_GT_OQ); }
AVX2_INLINE __m128 hmax_f32(__m128 a, __m128 b) { return _mm_max_ps(a, b); } /* b on ties and NaN, as vmax */
AVX2_INLINE __m128 hmin_f32(__m128 a, __m128 b) { return _mm_min_ps(a, b); }
AVX2_INLINE __m128i hiset1_f32(int64_t x) { return _mm_set1_epi32((int32_t)x); }
AVX2_INLINE __m128i hisel_f32(__m128 m, __m128i a, __m128i b)
{
    return _mm_castps_si128(_mm_blendv_ps(_mm_castsi128_ps(b), _mm_castsi128_ps(a), m));
}
AVX2_INLINE void histore32_f32(int32_t *p, __m128i x) { _mm_storeu_si128((__m128i *)p, x); }

AVX2_INLINE __m256d vload_f64(const double *p) { return _mm256_loadu_pd(p); }
AVX2_INLINE void vstore_f64(double *p, __m256d x) { _mm256_storeu_pd(p, x); }
AVX2_INLINE __m256d vset1_f64(double x) { return _mm256_set1_pd(x); }
AVX2_INLINE __m256d vadd_f64(__m256d a, __m256d b) { return _mm256_add_pd(a, b); }
AVX2_INLINE __m256d vround_f64(__m256d v, const int rounding)
{
    (void)rounding; /* half precision is widened to float32 only */
    return v;
}
AVX2_INLINE __m256d vgt_f64(__m256d a, __m256d b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
AVX2_INLINE __m256d vge_f64(__m256d a, __m256d b) { return _mm256_cmp_pd(a, b, _CMP_GE_OQ); }
AVX2_INLINE __m256d vmax_f64(__m256d a, __m256d b) { return _mm256_max_pd(a, b); }
AVX2_INLINE __m256d vmin_f64(__m256d a, __m256d b) { return _mm256_min_pd(a, b); }
AVX2_INLINE __m256d vsel_f64(__m256d m, __m256d a, __m256d b) { return _mm256_blendv_pd(b, a, m); }
AVX2_INLINE __m256i isel_f64(__m256d m, __m256i a, __m256i b)
{
    return _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(b), _mm256_castsi256_pd(a), m));
}
AVX2_INLINE __m256i iset1_f64(int64_t x) { return _mm256_set1_epi64x(x); }
AVX2_INLINE __m256i iadd_f64(__m256i a, __m256i b) { return _mm256_add_epi64(a, b); }
AVX2_INLINE __m256i isub_f64(__m256i a, __m256i b) { return _mm256_sub_epi64(a, b); }
AVX2_INLINE __m256i iload_f64(const int64_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
AVX2_INLINE void istore_f64(int64_t *p, __m256i x) { _mm256_storeu_si256((__m256i *)p, x); }
AVX2_INLINE __m256i iload32_f64(const int32_t *p)
{
    return _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)p));
}
/* The low halves of the four int64 lanes (all indices fit in int32). */
AVX2_INLINE __m128i narrow_f64(__m256i x)
{
    return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
}
AVX2_INLINE void istore32_f64(int32_t *p, __m256i x) { _mm_storeu_si128((__m128i *)p, narrow_f64(x)); }
AVX2_INLINE __m256i tailmask_f64(int64_t count)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
}
AVX2_INLINE __m256d vmaskload_f64(const double *p, __m256i m) { return _mm256_maskload_pd(p, m); }
AVX2_INLINE void vmaskstore_f64(double *p, __m256i m, __m256d x) { _mm256_maskstore_pd(p, m, x); }
AVX2_INLINE void imaskstore32_f64(int32_t *p, __m256i m, __m256i x)
{
    _mm_maskstore_epi32(p, narrow_f64(m), narrow_f64(x));
}
AVX2_INLINE __m128d hload_f64(const double *p) { return _mm_loadu_pd(p); }
AVX2_INLINE void hstore_f64(double *p, __m128d x) { _mm_storeu_pd(p, x); }
AVX2_INLINE __m128d hset1_f64(double x) { return _mm_set1_pd(x); }
AVX2_INLINE __m128d hadd_f64(__m128d a, __m128d b) { return _mm_add_pd(a, b); }
AVX2_INLINE __m128d hgt_f64(__m128d a, __m128d b) { return _mm_cmp_pd(a, b, _CMP_GT_OQ); }
AVX2_INLINE __m128d hmax_f64(__m128d a, __m128d b) { return _mm_max_pd(a, b); }
AVX2_INLINE __m128d hmin_f64(__m128d a, __m128d b) { return _mm_min_pd(a, b); }
AVX2_INLINE __m128i hiset1_f64(int64_t x) { return _mm_set1_epi64x(x); }
AVX2_INLINE __m128i hisel_f64(__m128d m, __m128i a, __m128i b)
{
    return _mm_castpd_si128(_mm_blendv_pd(_mm_castsi128_pd(b), _mm_castsi128_pd(a), m));
}
/* The low halves of the two int64 lanes (all indices fit in int32). */
AVX2_INLINE void histore32_f64(int32_t *p, __m128i x)
{
    _mm_storel_epi64((__m128i *)p, _mm_shuffle_epi32(x, 0x08));
}

AVX2_INLINE void transpose_f64(__m256d r[4])
{
    __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}
AVX2_INLINE void itranspose_f64(__m256i r[4])
{
    __m256d f[4];
    for (int k = 0; k < 4; k++)
        f[k] = _mm256_castsi256_pd(r[k]);
    transpose_f64(f);
    for (int k = 0; k < 4; k++)
        r[k] = _mm256_castpd_si256(f[k]);
}

/* AVX-512 vocabulary of the unrounded convolution tap loop: a compare gives a lane mask, so keeping the winners
   costs one masked move per candidate, and a row's last, partial vector is a masked load / store
   (masked-off lanes read nothing, so nothing past the array faults). f32: 16 lanes and int32 indices in
   one zmm; f64: 8 lanes, their int32 indices in a ymm under the same 8-bit mask. */
#define AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#define AVX512_INLINE static inline __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq"), always_inline))

AVX512_INLINE __mmask16 ztail_f32(int64_t count) { return (__mmask16)((1u << count) - 1u); }
AVX512_INLINE __m512 zload_f32(const float *p, __mmask16 m, const int masked)
{
    return masked ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p);
}
AVX512_INLINE void zstore_f32(float *p, __m512 x, __mmask16 m, const int masked)
{
    if (masked)
        _mm512_mask_storeu_ps(p, m, x);
    else
        _mm512_storeu_ps(p, x);
}
AVX512_INLINE __m512 zset1_f32(float x) { return _mm512_set1_ps(x); }
AVX512_INLINE __m512 zadd_f32(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
AVX512_INLINE __mmask16 zgt_f32(__m512 a, __m512 b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
/* b on ties and NaN, as vmax_f32 */
AVX512_INLINE __m512 zmax_f32(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
AVX512_INLINE __m512 zmin_f32(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
AVX512_INLINE __m512i ziset1_f32(int32_t x) { return _mm512_set1_epi32(x); }
AVX512_INLINE __m512i zisel_f32(__mmask16 m, __m512i a, __m512i b) { return _mm512_mask_mov_epi32(b, m, a); }
AVX512_INLINE void zistore_f32(int32_t *p, __m512i x, __mmask16 m, const int masked)
{
    if (masked)
        _mm512_mask_storeu_epi32(p, m, x);
    else
        _mm512_storeu_si512((void *)p, x);
}

AVX512_INLINE __mmask8 ztail_f64(int64_t count) { return (__mmask8)((1u << count) - 1u); }
AVX512_INLINE __m512d zload_f64(const double *p, __mmask8 m, const int masked)
{
    return masked ? _mm512_maskz_loadu_pd(m, p) : _mm512_loadu_pd(p);
}
AVX512_INLINE void zstore_f64(double *p, __m512d x, __mmask8 m, const int masked)
{
    if (masked)
        _mm512_mask_storeu_pd(p, m, x);
    else
        _mm512_storeu_pd(p, x);
}
AVX512_INLINE __m512d zset1_f64(double x) { return _mm512_set1_pd(x); }
AVX512_INLINE __m512d zadd_f64(__m512d a, __m512d b) { return _mm512_add_pd(a, b); }
AVX512_INLINE __mmask8 zgt_f64(__m512d a, __m512d b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
AVX512_INLINE __m512d zmax_f64(__m512d a, __m512d b) { return _mm512_max_pd(a, b); }
AVX512_INLINE __m512d zmin_f64(__m512d a, __m512d b) { return _mm512_min_pd(a, b); }
AVX512_INLINE __m256i ziset1_f64(int32_t x) { return _mm256_set1_epi32(x); }
AVX512_INLINE __m256i zisel_f64(__mmask8 m, __m256i a, __m256i b) { return _mm256_mask_mov_epi32(b, m, a); }
AVX512_INLINE void zistore_f64(int32_t *p, __m256i x, __mmask8 m, const int masked)
{
    if (masked)
        _mm256_mask_storeu_epi32(p, m, x);
    else
        _mm256_storeu_si256((__m256i *)p, x);
}
#endif /* TROPIC_X86 */

#define TROPIC_CAT2(a, b) a##_##b
#define TROPIC_CAT(a, b) TROPIC_CAT2(a, b)

#define TROPIC_T float
#define TROPIC_SUFFIX f32
#define TROPIC_LANES 8
#define TROPIC_IT int32_t
#define TROPIC_VT __m256
#define TROPIC_HLANES 4
#define TROPIC_HT __m128
#define TROPIC_ZLANES 16
#define TROPIC_ZT __m512
#define TROPIC_ZIT __m512i
#define TROPIC_ZMASK __mmask16
#include "morphology_c.c"
#undef TROPIC_T
#undef TROPIC_SUFFIX
#undef TROPIC_LANES
#undef TROPIC_IT
#undef TROPIC_VT
#undef TROPIC_HLANES
#undef TROPIC_HT
#undef TROPIC_ZLANES
#undef TROPIC_ZT
#undef TROPIC_ZIT
#undef TROPIC_ZMASK

#define TROPIC_T double
#define TROPIC_SUFFIX f64
#define TROPIC_LANES 4
#define TROPIC_IT int64_t
#define TROPIC_VT __m256d
#define TROPIC_HLANES 2
#define TROPIC_HT __m128d
#define TROPIC_ZLANES 8
#define TROPIC_ZT __m512d
#define TROPIC_ZIT __m256i
#define TROPIC_ZMASK __mmask8
#include "morphology_c.c"
#undef TROPIC_T
#undef TROPIC_SUFFIX
#undef TROPIC_LANES
#undef TROPIC_IT
#undef TROPIC_VT
#undef TROPIC_HLANES
#undef TROPIC_HT
#undef TROPIC_ZLANES
#undef TROPIC_ZT
#undef TROPIC_ZIT
#undef TROPIC_ZMASK

#else /* ------------------------------------------------------- template part, once per element type */

#define T TROPIC_T
#define L TROPIC_LANES         /* lanes of one AVX2 vector of T */
#define IT TROPIC_IT           /* index lane type of the same width */
#define VT TROPIC_VT           /* AVX2 vector of T */
#define HL TROPIC_HLANES       /* lanes of one half-width (SSE) vector of T */
#define HT TROPIC_HT           /* SSE vector of T */
#define ZL TROPIC_ZLANES       /* lanes of one AVX-512 vector of T */
#define ZT TROPIC_ZT           /* AVX-512 vector of T */
#define ZIT TROPIC_ZIT         /* the int32 winners of ZL lanes */
#define ZMASK TROPIC_ZMASK     /* a mask of ZL lanes */
#define ZBETTER(a, b) (mx ? SUF(zgt)(a, b) : SUF(zgt)(b, a))
#define ZBEST(a, b) (mx ? SUF(zmax)(a, b) : SUF(zmin)(a, b))
#define SUF(name) TROPIC_CAT(name, TROPIC_SUFFIX)
#define ZERO ((T)(mx ? -INFINITY : INFINITY))
/* `mx` is a compile-time constant in every kernel body (always_inline, called with 1 or 0). */
#define BETTER(a, b) (mx ? (a) > (b) : (a) < (b))
#define BETTER_EQ(a, b) (mx ? (a) >= (b) : (a) <= (b))
#define VBETTER(a, b) (mx ? SUF(vgt)(a, b) : SUF(vgt)(b, a))
/* a if strictly better than b, else b (see vmax_f32) */
#define VBEST(a, b) (mx ? SUF(vmax)(a, b) : SUF(vmin)(a, b))
#define HBETTER(a, b) (mx ? SUF(hgt)(a, b) : SUF(hgt)(b, a))
#define HBEST(a, b) (mx ? SUF(hmax)(a, b) : SUF(hmin)(a, b))
#define VBETTER_EQ(a, b) (mx ? SUF(vge)(a, b) : SUF(vge)(b, a))
/* Calls body(..., mx) with a literal mx, so each direction is compiled without a run-time test. */
#define BY_DIRECTION(call_1, call_0) \
    do {                             \
        if (maximise)                \
            call_1;                  \
        else                         \
            call_0;                  \
    } while (0)

/* ====================================================================================== taps */

/* Generic: per output row, tap-outer loops over the row (unit stride, vectorisable by the compiler). */
INLINE void SUF(taps_generic_body)(const T *P, int64_t pstride, int64_t Wp, int64_t H, int64_t W,
                                    int64_t ostride, const int64_t *off, const T *w, const int32_t *tap_index,
                                    int64_t ntaps, T *out, int32_t *idx, int64_t q0, int64_t q1, const int mx,
                                    const int weighted, const int track)
{
    for (int64_t q = q0; q < q1; q++) {
        const int64_t b = q / H, i = q - b * H;
        const T *base = P + b * pstride + i * Wp;
        T *restrict o = out + b * ostride + i * W;
        int32_t *restrict ix = track ? idx + b * ostride + i * W : NULL;
        for (int64_t j = 0; j < W; j++) {
            o[j] = ZERO;
            if (track)
                ix[j] = -1;
        }
        for (int64_t t = 0; t < ntaps; t++) {
            const T *restrict p = base + off[t];
            const T wt = weighted ? w[t] : (T)0;
            const int32_t tt = tap_index[t];
            for (int64_t j = 0; j < W; j++) { /* written so that GCC vectorises it: a select on a mask */
                const T v = weighted ? (T)(p[j] + wt) : p[j], best = o[j];
                o[j] = BETTER(v, best) ? v : best;
                if (track) {
                    const IT m = -(IT)BETTER(v, best), old = ix[j]; /* mask as wide as T */
                    ix[j] = (int32_t)((tt & m) | (old & ~m));
                }
            }
        }
    }
}

static void SUF(taps_generic)(const T *P, int64_t pstride, int64_t Wp, int64_t H, int64_t W, int64_t ostride,
                              const int64_t *off, const T *w, const int32_t *tap_index, int64_t ntaps,
                              int maximise, T *out, int32_t *idx, int64_t q0, int64_t q1)
{
#define GENERIC_BODY(mx, weighted, track) \
    SUF(taps_generic_body)(P, pstride, Wp, H, W, ostride, off, w, tap_index, ntaps, out, idx, q0, q1, mx, weighted, track)
    if (idx == NULL && w != NULL) /* values only */
        BY_DIRECTION(GENERIC_BODY(1, 1, 0), GENERIC_BODY(0, 1, 0));
    else if (idx == NULL)
        BY_DIRECTION(GENERIC_BODY(1, 0, 0), GENERIC_BODY(0, 0, 0));
    else if (w != NULL)
        BY_DIRECTION(GENERIC_BODY(1, 1, 1), GENERIC_BODY(0, 1, 1));
    else
        BY_DIRECTION(GENERIC_BODY(1, 0, 1), GENERIC_BODY(0, 0, 1));
#undef GENERIC_BODY
}

#if TROPIC_X86
/* NV vectors of one output row: the best values and indices stay in registers over all taps. */
AVX2_INLINE void SUF(taps_avx2_block)(const T *base, const int64_t *off, const T *w, const int32_t *tap_index,
                                       int64_t ntaps, T *o, int32_t *ix, const int mx, const int weighted,
                                       const int NV, const int rounding, const int track)
{
    VT best[4];
    __m256i win[4];
    for (int k = 0; k < NV; k++) {
        best[k] = SUF(vset1)(ZERO);
        win[k] = SUF(iset1)(-1);
    }
    for (int64_t t = 0; t < ntaps; t++) {
        const T *p = base + off[t];
        const __m256i tt = SUF(iset1)(tap_index[t]);
        for (int k = 0; k < NV; k++) {
            VT v = SUF(vload)(p + k * L);
            if (weighted)
                v = SUF(vround)(SUF(vadd)(v, SUF(vset1)(w[t])), rounding);
            if (track)
                win[k] = SUF(isel)(VBETTER(v, best[k]), tt, win[k]);
            best[k] = VBEST(v, best[k]);
        }
    }
    for (int k = 0; k < NV; k++) {
        SUF(vstore)(o + k * L, best[k]);
        if (track)
            SUF(istore32)(ix + k * L, win[k]);
    }
}

AVX2_INLINE void SUF(taps_avx2_body)(const T *P, int64_t pstride, int64_t Wp, int64_t H, int64_t W,
                                      int64_t ostride, const int64_t *off, const T *w, const int32_t *tap_index,
                                      int64_t ntaps, T *out, int32_t *idx, int64_t q0, int64_t q1, const int mx,
                                      const int weighted, const int rounding, const int track)
{
    for (int64_t q = q0; q < q1; q++) {
        const int64_t b = q / H, i = q - b * H;
        const T *base = P + b * pstride + i * Wp;
        T *o = out + b * ostride + i * W;
        int32_t *ix = track ? idx + b * ostride + i * W : NULL;
        int64_t j = 0;
        for (; j + 4 * L <= W; j += 4 * L)
            SUF(taps_avx2_block)(base + j, off, w, tap_index, ntaps, o + j, track ? ix + j : NULL, mx, weighted, 4,
                                 rounding, track);
        for (; j + L <= W; j += L)
            SUF(taps_avx2_block)(base + j, off, w, tap_index, ntaps, o + j, track ? ix + j : NULL, mx, weighted, 1,
                                 rounding, track);
        if (j < W && W >= L) /* the row's last L outputs, unmasked: lanes before j get their own bits again */
            SUF(taps_avx2_block)(base + W - L, off, w, tap_index, ntaps, o + W - L, track ? ix + W - L : NULL, mx,
                                 weighted, 1, rounding, track);
        else if (j < W) { /* masked lanes read nothing (no fault past the array) and are not stored */
            const __m256i lanes = SUF(tailmask)(W - j);
            VT best = SUF(vset1)(ZERO);
            __m256i win = SUF(iset1)(-1);
            for (int64_t t = 0; t < ntaps; t++) {
                VT v = SUF(vmaskload)(base + off[t] + j, lanes);
                if (weighted)
                    v = SUF(vround)(SUF(vadd)(v, SUF(vset1)(w[t])), rounding);
                if (track)
                    win = SUF(isel)(VBETTER(v, best), SUF(iset1)(tap_index[t]), win);
                best = VBEST(v, best);
            }
            SUF(vmaskstore)(o + j, lanes, best);
            if (track)
                SUF(imaskstore32)(ix + j, lanes, win);
        }
    }
}

AVX2 static void SUF(taps_avx2)(const T *P, int64_t pstride, int64_t Wp, int64_t H, int64_t W, int64_t ostride,
                                const int64_t *off, const T *w, const int32_t *tap_index, int64_t ntaps,
                                int maximise, int rounding, T *out, int32_t *idx, int64_t q0, int64_t q1)
{
#define TAPS_BODY(mx, weighted, rounding) \
    SUF(taps_avx2_body)(P, pstride, Wp, H, W, ostride, off, w, tap_index, ntaps, out, idx, q0, q1, mx, weighted, \
                        rounding, 1)
#define VALUES_BODY(mx, weighted) \
    SUF(taps_avx2_body)(P, pstride, Wp, H, W, ostride, off, w, tap_index, ntaps, out, NULL, q0, q1, mx, weighted, 0, 0)
    if (idx == NULL && w != NULL) /* values only (never with a rounding: taps_strided checks) */
        BY_DIRECTION(VALUES_BODY(1, 1), VALUES_BODY(0, 1));
    else if (idx == NULL)
        BY_DIRECTION(VALUES_BODY(1, 0), VALUES_BODY(0, 0));
    else if (w == NULL) /* no sums: nothing to round */
        BY_DIRECTION(TAPS_BODY(1, 0, 0), TAPS_BODY(0, 0, 0));
    else if (rounding == 1)
        BY_DIRECTION(TAPS_BODY(1, 1, 1), TAPS_BODY(0, 1, 1));
    else if (rounding == 2)
        BY_DIRECTION(TAPS_BODY(1, 1, 2), TAPS_BODY(0, 1, 2));
    else
        BY_DIRECTION(TAPS_BODY(1, 1, 0), TAPS_BODY(0, 1, 0));
#undef VALUES_BODY
#undef TAPS_BODY
}
#endif

#if TROPIC_X86
/* NV (1 or 2) vectors of one output row, at columns j0 and j1, for OC output channels of a convolution
   (the same input, OC weight sets `wstride` apart, outputs `cstride` apart): each image vector loaded
   serves OC channels and each weight broadcast NV vectors, which keeps the loads below the arithmetic.
   `masked` (NV 1): the row's last, partial vector. `track` 0: the values only (no compare or select
   is spent on the winners, and ix is not written). */
AVX2_INLINE void SUF(channels_avx2_vector)(const T *base, int64_t j0, int64_t j1, const int64_t *off, const T *w,
                                            int64_t wstride, const int32_t *tap_index, int64_t ntaps, T *o,
                                            int32_t *ix, int64_t cstride, const int mx, const int OC, const int NV,
                                            const int rounding, const int masked, __m256i lanes, const int track)
{
    const int64_t at[2] = {j0, j1};
    VT best[4][2];
    __m256i win[4][2];
    for (int c = 0; c < OC; c++)
        for (int k = 0; k < NV; k++) {
            best[c][k] = SUF(vset1)(ZERO);
            win[c][k] = SUF(iset1)(-1);
        }
    for (int64_t t = 0; t < ntaps; t++) {
        VT v[2];
        for (int k = 0; k < NV; k++)
            v[k] = masked ? SUF(vmaskload)(base + at[k] + off[t], lanes) : SUF(vload)(base + at[k] + off[t]);
        const __m256i tt = SUF(iset1)(tap_index[t]);
        for (int c = 0; c < OC; c++) {
            const VT wc = SUF(vset1)(w[c * wstride + t]);
            for (int k = 0; k < NV; k++) {
                const VT sum = SUF(vround)(SUF(vadd)(v[k], wc), rounding);
                if (track)
                    win[c][k] = SUF(isel)(VBETTER(sum, best[c][k]), tt, win[c][k]);
                best[c][k] = VBEST(sum, best[c][k]);
            }
        }
    }
    for (int c = 0; c < OC; c++)
        for (int k = 0; k < NV; k++) {
            T *oc = o + at[k] + c * cstride;
            int32_t *ixc = track ? ix + at[k] + c * cstride : NULL;
            if (masked) {
                SUF(vmaskstore)(oc, lanes, best[c][k]);
                if (track)
                    SUF(imaskstore32)(ixc, lanes, win[c][k]);
            } else {
                SUF(vstore)(oc, best[c][k]);
                if (track)
                    SUF(istore32)(ixc, win[c][k]);
            }
        }
}

/* channels_avx2_vector on half a vector (HL lanes) at column j, unrounded. */
AVX2_INLINE void SUF(channels_half_vector)(const T *base, int64_t j, const int64_t *off, const T *w, int64_t wstride,
                                            const int32_t *tap_index, int64_t ntaps, T *o, int32_t *ix,
                                            int64_t cstride, const int mx, const int OC, const int track)
{
    HT best[4];
    __m128i win[4];
    for (int c = 0; c < OC; c++) {
        best[c] = SUF(hset1)(ZERO);
        win[c] = SUF(hiset1)(-1);
    }
    for (int64_t t = 0; t < ntaps; t++) {
        const HT v = SUF(hload)(base + j + off[t]);
        const __m128i tt = SUF(hiset1)(tap_index[t]);
        for (int c = 0; c < OC; c++) {
            const HT sum = SUF(hadd)(v, SUF(hset1)(w[c * wstride + t]));
            if (track)
                win[c] = SUF(hisel)(HBETTER(sum, best[c]), tt, win[c]);
            best[c] = HBEST(sum, best[c]);
        }
    }
    for (int c = 0; c < OC; c++) {
        SUF(hstore)(o + j + c * cstride, best[c]);
        if (track)
            SUF(histore32)(ix + j + c * cstride, win[c]);
    }
}

/* A row's vectors: the full ones at 0, L, 2 L, ..., then the rest: where it is at most HL outputs
   (and the sums are not rounded), the row's last HL outputs as half a vector; else, where the row has
   at least L outputs, its last L outputs again as a full vector; else one masked vector. Lanes that
   an earlier vector wrote get their own bits again. Values only: two full vectors per tap loop. */
AVX2_INLINE void SUF(channels_avx2_body)(const T *P, int64_t pstride, int64_t Wp, int64_t H, int64_t W,
                                          int64_t ostride, int64_t cstride, const int64_t *off, const T *w,
                                          int64_t wstride, const int32_t *tap_index, int64_t ntaps, T *out,
                                          int32_t *idx, int64_t q0, int64_t q1, const int mx, const int OC,
                                          const int rounding, const int track)
{
    const __m256i none = SUF(tailmask)(0);
    const int64_t full = W / L, rest = W - full * L;
    const int half = rest > 0 && rest <= HL && W >= HL && rounding == 0;
    const int64_t vectors = full + (rest > 0 && W >= L && !half);
#define POSITION(k) ((k) < full ? (k) * L : W - L)
#define VECTORS(j0, j1, nv)                                                                                    \
    SUF(channels_avx2_vector)(base, j0, j1, off, w, wstride, tap_index, ntaps, o, ix, cstride, mx, OC, nv,      \
                              rounding, 0, none, track)
    for (int64_t q = q0; q < q1; q++) {
        const int64_t b = q / H, i = q - b * H;
        const T *base = P + b * pstride + i * Wp;
        T *o = out + b * ostride + i * W;
        int32_t *ix = track ? idx + b * ostride + i * W : NULL;
        int64_t k = 0;
        if (!track) /* with the winners (two channels x two vectors in 16 registers), no faster here */
            for (; k + 2 <= vectors; k += 2)
                VECTORS(POSITION(k), POSITION(k + 1), 2);
        for (; k < vectors; k++)
            VECTORS(POSITION(k), 0, 1);
        if (half)
            SUF(channels_half_vector)(base, W - HL, off, w, wstride, tap_index, ntaps, o, ix, cstride, mx, OC,
                                      track);
        else if (0 < W && W < L)
            SUF(channels_avx2_vector)(base, 0, 0, off, w, wstride, tap_index, ntaps, o, ix, cstride, mx, OC, 1,
                                      rounding, 1, SUF(tailmask)(W), track);
    }
#undef VECTORS
#undef POSITION
}

/* Dispatch to a body compiled for each (channels, direction, rounding). */
AVX2 static void SUF(channels_avx2)(const T *P, int64_t pstride, int64_t Wp, int64_t H, int64_t W, int64_t ostride,
                                    int64_t cstride, const int64_t *off, const T *w, int64_t wstride,
                                    const int32_t *tap_index, int64_t ntaps, int OC, int maximise, int rounding,
                                    T *out, int32_t *idx, int64_t q0, int64_t q1)
{
#define CHANNELS(oc, m, r)                                                                                       \
    do {                                                                                                         \
        if (idx != NULL)                                                                                         \
            SUF(channels_avx2_body)(P, pstride, Wp, H, W, ostride, cstride, off, w, wstride, tap_index, ntaps,   \
                                    out, idx, q0, q1, m, oc, r, 1);                                              \
        else /* values only */                                                                                   \
            SUF(channels_avx2_body)(P, pstride, Wp, H, W, ostride, cstride, off, w, wstride, tap_index, ntaps,   \
                                    out, NULL, q0, q1, m, oc, r, 0);                                             \
    } while (0)
#define BY_CHANNELS(m, r)        \
    do {                         \
        if (OC == 1)             \
            CHANNELS(1, m, r);   \
        else if (OC == 2)        \
            CHANNELS(2, m, r);   \
        else if (OC == 3)        \
            CHANNELS(3, m, r);   \
        else                     \
            CHANNELS(4, m, r);   \
    } while (0)
#define BY_ROUNDING(m)           \
    do {                         \
        if (rounding == 1)       \
            BY_CHANNELS(m, 1);   \
        else if (rounding == 2)  \
            BY_CHANNELS(m, 2);   \
        else                     \
            BY_CHANNELS(m, 0);   \
    } while (0)
    BY_DIRECTION(BY_ROUNDING(1), BY_ROUNDING(0));
#undef BY_ROUNDING
#undef BY_CHANNELS
#undef CHANNELS
}
#endif

#if TROPIC_X86
/* AVX-512 twin of channels_avx2_vector, unrounded: NV (1, 2, or 4 for one channel) vectors of one
   output row for OC (1..4) output channels; each image vector loaded serves OC channels and each
   weight broadcast NV vectors. The weights are tap-major: tap t's OC weights at w[t * OC .. + OC].
   weighted 0 (a flat footprint's taps, OC 1): the image values themselves, no add (+0 would turn -0
   into +0). */
AVX512_INLINE void SUF(channels_avx512_block)(const T *base, const int64_t *off, const T *w,
                                               const int32_t *tap_index, int64_t ntaps, T *o, int32_t *ix,
                                               int64_t cstride, const int mx, const int OC, const int NV,
                                               const int masked, ZMASK last, const int track, const int weighted)
{
    ZT best[4][4];
    ZIT win[4][4];
    for (int c = 0; c < OC; c++)
        for (int k = 0; k < NV; k++) {
            best[c][k] = SUF(zset1)(ZERO);
            win[c][k] = SUF(ziset1)(-1);
        }
    for (int64_t t = 0; t < ntaps; t++) {
        const T *p = base + off[t];
        ZT v[4];
        for (int k = 0; k < NV; k++)
            v[k] = SUF(zload)(p + k * ZL, last, masked && k == NV - 1);
        const ZIT tt = SUF(ziset1)(tap_index[t]);
        for (int c = 0; c < OC; c++) {
            const ZT wc = weighted ? SUF(zset1)(w[t * OC + c]) : SUF(zset1)(ZERO);
            for (int k = 0; k < NV; k++) {
                const ZT sum = weighted ? SUF(zadd)(v[k], wc) : v[k];
                if (track)
                    win[c][k] = SUF(zisel)(ZBETTER(sum, best[c][k]), tt, win[c][k]);
                best[c][k] = ZBEST(sum, best[c][k]);
            }
        }
    }
    for (int c = 0; c < OC; c++)
        for (int k = 0; k < NV; k++) {
            SUF(zstore)(o + c * cstride + k * ZL, best[c][k], last, masked && k == NV - 1);
            if (track)
                SUF(zistore)(ix + c * cstride + k * ZL, win[c][k], last, masked && k == NV - 1);
        }
}

AVX512_INLINE void SUF(channels_avx512_body)(const T *P, int64_t pstride, int64_t Wp, int64_t H, int64_t W,
                                              int64_t ostride, int64_t cstride, const int64_t *off, const T *w,
                                              const int32_t *tap_index, int64_t ntaps, T *out,
                                              int32_t *idx, int64_t q0, int64_t q1, const int mx, const int OC,
                                              const int track, const int weighted)
{
#define BLOCK(nv, masked, last)                                                                                 \
    SUF(channels_avx512_block)(base + j, off, w, tap_index, ntaps, o + j, track ? ix + j : NULL, cstride, mx, OC, \
                               nv, masked, last, track, weighted)
    for (int64_t q = q0; q < q1; q++) {
        const int64_t b = q / H, i = q - b * H;
        const T *base = P + b * pstride + i * Wp;
        T *o = out + b * ostride + i * W;
        int32_t *ix = track ? idx + b * ostride + i * W : NULL;
        int64_t j = 0;
        if (OC == 1) /* four chains of bests: two leave one channel's loop waiting on the max's latency */
            for (; j + 4 * ZL <= W; j += 4 * ZL)
                BLOCK(4, 0, 0);
        for (; j + 2 * ZL <= W; j += 2 * ZL)
            BLOCK(2, 0, 0);
        const int64_t rest = W - j; /* 0 .. 2 ZL - 1 */
        if (rest > ZL)
            BLOCK(2, 1, SUF(ztail)(rest - ZL));
        else if (rest == ZL)
            BLOCK(1, 0, 0);
        else if (rest > 0)
            BLOCK(1, 1, SUF(ztail)(rest));
    }
#undef BLOCK
}

/* channels_avx2 for rounding 0 (the caller's choice) on AVX-512, its weights tap-major (w[t * OC + c]);
   w NULL (OC 1): a flat footprint's taps. */
AVX512 static void SUF(channels_avx512)(const T *P, int64_t pstride, int64_t Wp, int64_t H, int64_t W,
                                        int64_t ostride, int64_t cstride, const int64_t *off, const T *w,
                                        const int32_t *tap_index, int64_t ntaps, int OC,
                                        int maximise, T *out, int32_t *idx, int64_t q0, int64_t q1)
{
#define CHANNELS(oc, m, weighted)                                                                                \
    do {                                                                                                         \
        if (idx != NULL)                                                                                         \
            SUF(channels_avx512_body)(P, pstride, Wp, H, W, ostride, cstride, off, w, tap_index, ntaps, out,      \
                                      idx, q0, q1, m, oc, 1, weighted);                                          \
        else                                                                                                     \
            SUF(channels_avx512_body)(P, pstride, Wp, H, W, ostride, cstride, off, w, tap_index, ntaps, out,      \
                                      NULL, q0, q1, m, oc, 0, weighted);                                         \
    } while (0)
#define BY_CHANNELS(m)          \
    do {                        \
        if (w == NULL)          \
            CHANNELS(1, m, 0);  \
        else if (OC == 1)       \
            CHANNELS(1, m, 1);  \
        else if (OC == 2)       \
            CHANNELS(2, m, 1);  \
        else if (OC == 3)       \
            CHANNELS(3, m, 1);  \
        else                    \
            CHANNELS(4, m, 1);  \
    } while (0)
    BY_DIRECTION(BY_CHANNELS(1), BY_CHANNELS(0));
#undef BY_CHANNELS
#undef CHANNELS
}
#endif

/* A stride-1 tropical convolution's tap loop for OC (1..4) output channels at once, rows q0 .. q1 - 1
   (row q: image q / H, its row q % H), on this CPU's loop: as tropic_taps_strided with the OC weight
   rows `wstride` apart (the AVX-512 loop reads `tap_major`, the same weights tap by tap:
   tap_major[t * OC + c]) and their outputs `cstride` apart (images and outputs of the batch pstride /
   ostride apart; `off`: the taps' offsets, from conv_offsets). Bit for bit the same as OC calls of
   tropic_taps_rounded_strided (rounding 0: tropic_taps_strided), one per channel; idx NULL: the
   values only. */
static void SUF(conv_rows)(const T *P, int64_t pstride, int64_t Wp, int64_t H, int64_t W, int64_t ostride,
                           int64_t cstride, const int64_t *off, const T *tap_weight, int64_t wstride,
                           const T *tap_major, const int32_t *tap_index, int64_t T_count, int64_t OC, int maximise,
                           int rounding, T *out, int32_t *idx, int64_t q0, int64_t q1)
{
#if TROPIC_X86
    if (use_avx512 && rounding == 0) {
        SUF(channels_avx512)(P, pstride, Wp, H, W, ostride, cstride, off, tap_major, tap_index, T_count, (int)OC,
                             maximise, out, idx, q0, q1);
        return;
    }
    if (use_avx2) {
        SUF(channels_avx2)(P, pstride, Wp, H, W, ostride, cstride, off, tap_weight, wstride, tap_index, T_count,
                           (int)OC, maximise, rounding, out, idx, q0, q1);
        return;
    }
#endif
    for (int64_t c = 0; c < OC; c++)
        SUF(taps_generic)(P, pstride, Wp, H, W, ostride, off, tap_weight + c * wstride, tap_index, T_count, maximise,
                          out + c * cstride, idx ? idx + c * cstride : NULL, q0, q1);
}

/* conv_rows's argument checks, then the taps' offsets (tap_offsets: NULL with *status set). */
static int64_t *SUF(conv_offsets)(int64_t n, int64_t Hp, int64_t Wp, int64_t pstride, int64_t H, int64_t W,
                                  int64_t ostride, int64_t cstride, const int64_t *tap_row, const int64_t *tap_col,
                                  const T *tap_weight, int64_t wstride, int64_t T_count, int64_t OC, int rounding,
                                  int *status)
{
    if (OC < 1 || OC > 4 || wstride < T_count || cstride < H * W || tap_weight == NULL) {
        *status = BAD_ARGUMENT;
        return NULL;
    }
    return tap_offsets(n, Hp, Wp, pstride, H, W, ostride, tap_row, tap_col, T_count, rounding, sizeof(T), status);
}

/* A whole stride-1 convolution's tap loops on the thread pool (thread_pool.h): task t is
   tasks[t] = (o, oc, b0, b1), output channels o .. o + oc - 1 (one group's) for batch entries
   b0 .. b1 - 1, on one thread. `padded`: (B, C_in, Hp, Wp) C-ordered, the group's C_group channels one
   tall image of C_group * Hp rows; weights (C_out, T_count); y and winner (B, C_out, H, W), winner
   NULL for the values only, else of winner_bytes (4: int32, written by the tap loop; 1, 2 or 8: the
   caller's index type, into which a task narrows each batch entry's int32 winners from a buffer of
   its thread, which stays in cache, instead of sending an int32 array through memory and back). A
   task runs its batch entries one at a time either way. Tasks write disjoint outputs. */
struct SUF(conv_job) {
    const T *padded, *weights;
    const int64_t *tap_row, *tap_col, *tasks;
    const int32_t *tap_index;
    int64_t C_in, C_group, Hp, Wp, H, W, C_out, per_group, T_count;
    int maximise, rounding, winner_bytes;
    T *y;
    void *winner;
};

static int SUF(conv_task)(void *ctx, int t, int tasks)
{
    const struct SUF(conv_job) *j = ctx;
    const int64_t o = j->tasks[4 * t], oc = j->tasks[4 * t + 1], b0 = j->tasks[4 * t + 2], b1 = j->tasks[4 * t + 3];
    const int64_t plane = j->H * j->W, at = (b0 * j->C_out + o) * plane, pstride = j->C_in * j->Hp * j->Wp;
    const T *source = j->padded + (b0 * j->C_in + (o / j->per_group) * j->C_group) * j->Hp * j->Wp;
    const T *weights = j->weights + o * j->T_count;
    const int narrow = j->winner != NULL && j->winner_bytes != 4;
    (void)tasks;
    int status;
    int64_t *off = SUF(conv_offsets)(1, j->C_group * j->Hp, j->Wp, pstride, j->H, j->W, j->C_out * plane, plane,
                                     j->tap_row, j->tap_col, weights, j->T_count, j->T_count, oc, j->rounding,
                                     &status);
    if (off == NULL)
        return status;
    int32_t *won = narrow ? tropic_thread_buffer(1, (size_t)(oc * plane) * sizeof(int32_t)) : NULL;
    /* The AVX-512 loop reads the oc weights of a tap side by side (tap-major, w[t * oc + c]): with a
       pointer per weight row it ran out of general registers and moved addresses through vector ones
       on every tap. One channel's row is already in that order; the other loops read the rows. */
    const int interleave = use_avx512 && j->rounding == 0 && oc > 1;
    T *tap_major = interleave ? tropic_thread_buffer(2, (size_t)(oc * j->T_count) * sizeof(T)) : (T *)weights;
    if ((narrow && won == NULL) || tap_major == NULL) {
        free(off);
        return NO_MEMORY;
    }
    if (interleave)
        for (int64_t t = 0; t < j->T_count; t++)
            for (int64_t c = 0; c < oc; c++)
                tap_major[t * oc + c] = weights[c * j->T_count + t];
    for (int64_t b = 0; b < b1 - b0; b++) { /* batch entry b0 + b: its channels o .. o + oc - 1 are contiguous */
        const int64_t first = at + b * j->C_out * plane;
        int32_t *idx = narrow ? won : j->winner != NULL ? (int32_t *)j->winner + first : NULL;
        SUF(conv_rows)(source + b * pstride, pstride, j->Wp, j->H, j->W, j->C_out * plane, plane, off, weights,
                       j->T_count, tap_major, j->tap_index, j->T_count, oc, j->maximise != 0, j->rounding,
                       j->y + first, idx, 0, j->H);
        if (narrow)
            narrow_winners(won, (char *)j->winner + first * j->winner_bytes, j->winner_bytes, oc * plane);
    }
    free(off);
    return 0;
}

EXPORT int SUF(tropic_conv_pooled)(const T *padded, int64_t C_in, int64_t C_group, int64_t Hp, int64_t Wp, int64_t H,
                                   int64_t W, int64_t C_out, int64_t per_group, const int64_t *tap_row,
                                   const int64_t *tap_col, const T *weights, const int32_t *tap_index,
                                   int64_t T_count, int maximise, int rounding, T *y, void *winner,
                                   int winner_bytes, const int64_t *tasks, int64_t ntasks, int threads)
{
    if (ntasks < 0 || ntasks > INT32_MAX || per_group < 1 || C_group < 1) return BAD_ARGUMENT;
    if (winner != NULL && winner_bytes != 1 && winner_bytes != 2 && winner_bytes != 4 && winner_bytes != 8)
        return BAD_ARGUMENT;
    struct SUF(conv_job) job = {padded,   weights,      tap_row, tap_col, tasks, tap_index, C_in,    C_group, Hp,
                                Wp,       H,            W,       C_out,   per_group, T_count, maximise,
                                rounding, winner_bytes, y,       winner};
    return tropic_pool_run(SUF(conv_task), &job, (int)ntasks, threads);
}

/* Images and outputs `pstride` and `ostride` elements apart (packed: Hp * Wp and H * W).
   `rounding` (float32 holding half-precision values only): 1 / 2 round every weighted sum to float16 /
   bfloat16 before it compares, so values and winners are those of the narrow dtype; UNSUPPORTED
   without AVX2 + F16C. */
static int SUF(taps_strided)(const T *P, int64_t n, int64_t Hp, int64_t Wp, int64_t pstride, int64_t H, int64_t W,
                             int64_t ostride, const int64_t *tap_row, const int64_t *tap_col, const T *tap_weight,
                             const int32_t *tap_index, int64_t T_count, int maximise, int rounding, T *out,
                             int32_t *idx, int threads)
{
    if (idx == NULL && rounding != 0)
        return BAD_ARGUMENT;
    int status;
    int64_t *off =
        tap_offsets(n, Hp, Wp, pstride, H, W, ostride, tap_row, tap_col, T_count, rounding, sizeof(T), &status);
    if (off == NULL)
        return status;
    const int64_t rows = n * H;
    const int team = team_size(threads, rows * W * (T_count > 0 ? T_count : 1), rows);
    const int avx2 = use_avx2;
    /* Unrounded taps are the convolution's tap loop with one output channel (the same adds, or none for
       a flat footprint, the same compares and tap indices), which has an AVX-512 form. */
    const int avx512 = use_avx512_taps && rounding == 0;
    maximise = maximise != 0;
#pragma omp parallel num_threads(team) if (team > 1)
    {
        int64_t q0, q1;
        share(rows, &q0, &q1);
#if TROPIC_X86
        if (avx512)
            SUF(channels_avx512)(P, pstride, Wp, H, W, ostride, 0, off, tap_weight, tap_index, T_count, 1, maximise,
                                 out, idx, q0, q1);
        else if (avx2)
            SUF(taps_avx2)(P, pstride, Wp, H, W, ostride, off, tap_weight, tap_index, T_count, maximise, rounding, out,
                           idx, q0, q1);
        else
#endif
            SUF(taps_generic)(P, pstride, Wp, H, W, ostride, off, tap_weight, tap_index, T_count, maximise, out, idx, q0, q1);
    }
    (void)avx2;
    (void)avx512;
    free(off);
    return 0;
}

EXPORT int SUF(tropic_taps_strided)(const T *P, int64_t n, int64_t Hp, int64_t Wp, int64_t pstride, int64_t H,
                                    int64_t W, int64_t ostride, const int64_t *tap_row, const int64_t *tap_col,
                                    const T *tap_weight, const int32_t *tap_index, int64_t T_count, int maximise,
                                    T *out, int32_t *idx, int threads)
{
    return SUF(taps_strided)(P, n, Hp, Wp, pstride, H, W, ostride, tap_row, tap_col, tap_weight, tap_index, T_count,
                             maximise, 0, out, idx, threads);
}

EXPORT int SUF(tropic_taps_rounded_strided)(const T *P, int64_t n, int64_t Hp, int64_t Wp, int64_t pstride,
                                            int64_t H, int64_t W, int64_t ostride, const int64_t *tap_row,
                                            const int64_t *tap_col, const T *tap_weight, const int32_t *tap_index,
                                            int64_t T_count, int maximise, int rounding, T *out, int32_t *idx,
                                            int threads)
{
    return SUF(taps_strided)(P, n, Hp, Wp, pstride, H, W, ostride, tap_row, tap_col, tap_weight, tap_index, T_count,
                             maximise, rounding, out, idx, threads);
}


/* A whole tap-loop morphology on the thread pool (thread_pool.h). Task t is the block
   blocks[t] = (b0, b1, i0, i1): images b0 .. b1 - 1 (whole: i0 = 0, i1 = H) or a band of rows
   i0 .. i1 - 1 of one image (b1 = b0 + 1); its output, (b0 * H + i0) * W elements into out, is
   contiguous either way. The task pads the rows its outputs read (tropic_pad with the line maps from
   row i0 on: i1 - i0 + kh - 1 padded rows) into a buffer of its thread, small enough to stay in
   cache for the tap loop that follows, and reduces it (taps_strided). Winners (winner NULL: values
   only) are written as int32 into `winner` when winner_bytes is 4, else through a buffer of the
   thread narrowed to 1, 2 or 8 bytes (the caller's index type, which holds every tap index).
   *nan_found: 1 if any padded value was NaN. */
EXPORT int SUF(tropic_pad)(const T *src, int64_t n, int64_t H, int64_t W, const int64_t *row_line, int64_t Hp,
                           const int64_t *col_line, int64_t Wp, int64_t left, T fill, T *dst, int *nan_found);

struct SUF(morphology_job) {
    const T *src;
    int64_t H, W, Wp, left, kh, T_count;
    const int64_t *row_line, *col_line, *tap_row, *tap_col, *blocks;
    T fill;
    const T *tap_weight;
    const int32_t *tap_index;
    int maximise, rounding, winner_bytes;
    T *out;
    void *winner;
    atomic_int nan;
};

static int SUF(morphology_task)(void *ctx, int t, int tasks)
{
    struct SUF(morphology_job) *j = ctx;
    const int64_t *block = j->blocks + 4 * t;
    const int64_t b0 = block[0], n = block[1] - block[0], i0 = block[2], rows_out = block[3] - block[2];
    const int64_t rows = rows_out + j->kh - 1, outputs = n * rows_out * j->W, at = (b0 * j->H + i0) * j->W;
    (void)tasks;
    T *padded = tropic_thread_buffer(0, (size_t)(n * rows * j->Wp) * sizeof(T));
    int32_t *won = NULL;
    if (j->winner != NULL)
        won = j->winner_bytes == 4 ? (int32_t *)j->winner + at : tropic_thread_buffer(1, (size_t)outputs * 4);
    if (padded == NULL || (j->winner != NULL && won == NULL))
        return NO_MEMORY;
    int nan = 0;
    int status = SUF(tropic_pad)(j->src + b0 * j->H * j->W, n, j->H, j->W, j->row_line + i0, rows, j->col_line,
                                 j->Wp, j->left, j->fill, padded, &nan);
    if (status)
        return status;
    if (nan)
        atomic_store(&j->nan, 1);
    status = SUF(taps_strided)(padded, n, rows, j->Wp, rows * j->Wp, rows_out, j->W, rows_out * j->W, j->tap_row,
                               j->tap_col, j->tap_weight, j->tap_index, j->T_count, j->maximise, j->rounding,
                               j->out + at, won, 1);
    if (status || won == NULL || j->winner_bytes == 4)
        return status;
    narrow_winners(won, (char *)j->winner + at * j->winner_bytes, j->winner_bytes, outputs);
    return 0;
}

EXPORT int SUF(tropic_morphology_pooled)(const T *src, int64_t H, int64_t W, const int64_t *row_line,
                                         const int64_t *col_line, int64_t Wp, int64_t left, T fill, int64_t kh,
                                         const int64_t *tap_row, const int64_t *tap_col, const T *tap_weight,
                                         const int32_t *tap_index, int64_t T_count, int maximise, int rounding,
                                         T *out, void *winner, int winner_bytes, const int64_t *blocks,
                                         int64_t nblocks, int *nan_found, int threads)
{
    if (nblocks < 0 || nblocks > INT32_MAX || kh < 1 || (winner != NULL && winner_bytes != 1 && winner_bytes != 2
                                                         && winner_bytes != 4 && winner_bytes != 8))
        return BAD_ARGUMENT;
    struct SUF(morphology_job) job = {src, H, W, Wp, left, kh, T_count, row_line, col_line, tap_row, tap_col, blocks,
                                      fill, tap_weight, tap_index, maximise, rounding, winner_bytes, out, winner, 0};
    const int status = tropic_pool_run(SUF(morphology_task), &job, (int)nblocks, threads);
    *nan_found = atomic_load(&job.nan);
    return status;
}

/* ====================================================================================== pad */
/* dst (n, Hp, Wp): dst[b, r, c] = src[b, row_line[r], col_line[c]], or `fill` where either map is -1 (the
   border value). Columns [left, left + W) must map to 0..W-1, so the middle of a row is a plain copy.
   An image without rows or columns (H or W 0) is all border: its maps hold only -1.
   *nan_found becomes 1 if a copied value or the fill is NaN (the caller then applies the NaN rule). */
EXPORT int SUF(tropic_pad)(const T *src, int64_t n, int64_t H, int64_t W, const int64_t *row_line, int64_t Hp,
                           const int64_t *col_line, int64_t Wp, int64_t left, T fill, T *dst, int *nan_found)
{
    if (n < 0 || H < 0 || W < 0 || Hp < 0 || left < 0 || left + W > Wp)
        return BAD_ARGUMENT;
    for (int64_t r = 0; r < Hp; r++)
        if (row_line[r] < -1 || row_line[r] >= H)
            return BAD_ARGUMENT;
    for (int64_t c = 0; c < Wp; c++)
        if (col_line[c] < -1 || col_line[c] >= W || ((c >= left && c < left + W) && col_line[c] != c - left))
            return BAD_ARGUMENT;
    int nan = fill != fill;
    for (int64_t b = 0; b < n; b++) {
        for (int64_t r = 0; r < Hp; r++) {
            T *restrict d = dst + (b * Hp + r) * Wp;
            if (row_line[r] < 0) {
                for (int64_t c = 0; c < Wp; c++)
                    d[c] = fill;
                continue;
            }
            const T *restrict s = src + (b * H + row_line[r]) * W;
            for (int64_t c = 0; c < left; c++)
                d[c] = col_line[c] < 0 ? fill : s[col_line[c]];
            int bad = 0; /* a separate loop per row so that GCC vectorises copy and NaN test together */
            for (int64_t j = 0; j < W; j++) {
                d[left + j] = s[j];
                bad |= s[j] != s[j];
            }
            nan |= bad;
            for (int64_t c = left + W; c < Wp; c++)
                d[c] = col_line[c] < 0 ? fill : s[col_line[c]];
        }
    }
    *nan_found = nan;
    return 0;
}

/* ================================================================================= rectangle */
/* Separable: the row pass takes the best of kw along each padded row (R, with the lowest offset v of the
   row maximum in V), the column pass the best of kh rows of R (lowest u). Flat order is u-major, so this
   picks the lowest u*kw+v among all maxima. Both passes are van Herk / Gil-Werman: blocks of length k,
   a prefix best left to right (strict: keeps the lowest index), a suffix best right to left (non-strict:
   moves to the lower index on ties), and window [s, s+k-1] = suffix[s] unless prefix[s+k-1] is strictly
   better (the suffix holds the lower indices). */

/* Scratch of one thread, sized for either path. */
typedef struct {
    T *X, *G, *Hs; /* row pass: transposed rows, prefix, suffix (Wp * L each) */
    IT *GI, *HI;   /* their indices */
    T *S;          /* column pass: suffix of one block (kh * max(RECT_STRIP, 4L)) */
    IT *SI;
} SUF(rect_scratch);

/* Generic row pass of one padded row x (length Wp) into R, V (length Wo). The scans are branch-free
   (selects, not jumps: which side wins is data-dependent), the merge is a vectorisable select. */
INLINE void SUF(rect_row_generic)(const T *restrict x, int64_t Wp, int64_t kw, T *restrict R, int32_t *restrict V,
                                   const SUF(rect_scratch) *sc, const int mx)
{
    const int64_t Wo = Wp - kw + 1;
    T *restrict G = sc->G, *restrict Hs = sc->Hs;
    IT *restrict GI = sc->GI, *restrict HI = sc->HI;
    for (int64_t s0 = 0; s0 < Wp; s0 += kw) {
        const int64_t e = s0 + kw < Wp ? s0 + kw : Wp;
        T g = x[s0];
        IT gi = s0;
        G[s0] = g;
        GI[s0] = gi;
        for (int64_t j = s0 + 1; j < e; j++) {
            const T xj = x[j];
            const int take = BETTER(xj, g);
            g = take ? xj : g;
            gi = take ? j : gi;
            G[j] = g;
            GI[j] = gi;
        }
        if (s0 >= Wo) /* no window starts in this block */
            continue;
        T h = x[e - 1];
        IT hi = e - 1;
        Hs[e - 1] = h;
        HI[e - 1] = hi;
        for (int64_t j = e - 2; j >= s0; j--) {
            const T xj = x[j];
            const int take = BETTER_EQ(xj, h);
            h = take ? xj : h;
            hi = take ? j : hi;
            Hs[j] = h;
            HI[j] = hi;
        }
    }
    const T *restrict Ge = G + kw - 1;
    const IT *restrict GIe = GI + kw - 1;
    for (int64_t s = 0; s < Wo; s++) {
        const T a = Hs[s], c = Ge[s];
        const IT m = -(IT)BETTER(c, a);
        R[s] = BETTER(c, a) ? c : a;
        V[s] = (int32_t)(((GIe[s] & m) | (HI[s] & ~m)) - s);
    }
}

/* Generic column pass of columns [j0, j1) of one block: R, V at its first row (r0 = m*kh), o, ix at output
   row r0; nout output rows. Flat indices are kept relative to row r0 (c = (r - r0)*kw + v). Loops run
   along the columns with masks for selects, so that the compiler vectorises them. */
INLINE void SUF(rect_cols_generic)(const T *R, const int32_t *V, int64_t Wo, int64_t kh, int64_t kw, int64_t nout,
                                    int64_t j0, int64_t j1, T *o, int32_t *ix, const SUF(rect_scratch) *sc,
                                    const int mx)
{
    const int64_t sw = j1 - j0;
    T *restrict S = sc->S, *restrict G = sc->G; /* S: suffix rows of the block (kh * sw); G: running prefix */
    IT *restrict SI = sc->SI, *restrict GI = sc->GI;
    R += j0;
    V += j0;
    o += j0;
    ix += j0;
    {
        const T *restrict x = R + (kh - 1) * Wo;
        const int32_t *restrict v = V + (kh - 1) * Wo;
        T *restrict s = S + (kh - 1) * sw;
        IT *restrict si = SI + (kh - 1) * sw;
        const IT base = (kh - 1) * kw;
        for (int64_t j = 0; j < sw; j++) {
            s[j] = x[j];
            si[j] = base + v[j];
        }
    }
    for (int64_t d = kh - 2; d >= 0; d--) {
        const T *restrict x = R + d * Wo, *restrict below = S + (d + 1) * sw;
        const int32_t *restrict v = V + d * Wo;
        const IT *restrict below_i = SI + (d + 1) * sw;
        T *restrict s = S + d * sw;
        IT *restrict si = SI + d * sw;
        const IT base = d * kw;
        for (int64_t j = 0; j < sw; j++) {
            const T a = x[j], h = below[j];
            const IT m = -(IT)BETTER_EQ(a, h);
            s[j] = BETTER_EQ(a, h) ? a : h;
            si[j] = ((base + v[j]) & m) | (below_i[j] & ~m);
        }
    }
    for (int64_t j = 0; j < sw; j++) { /* output row 0: the whole window is the block */
        o[j] = S[j];
        ix[j] = (int32_t)SI[j];
    }
    for (int64_t d = 1; d < nout; d++) {
        const int64_t r = kh + d - 1; /* the prefix of the next block grows by row r */
        const T *restrict x = R + r * Wo, *restrict s = S + d * sw;
        const int32_t *restrict v = V + r * Wo;
        const IT *restrict si = SI + d * sw;
        T *restrict od = o + d * Wo;
        int32_t *restrict ixd = ix + d * Wo;
        const IT base = r * kw, shift = d * kw;
        if (d == 1)
            for (int64_t j = 0; j < sw; j++) {
                G[j] = x[j];
                GI[j] = base + v[j];
            }
        else
            for (int64_t j = 0; j < sw; j++) {
                const T a = x[j], g = G[j];
                const IT m = -(IT)BETTER(a, g);
                G[j] = BETTER(a, g) ? a : g;
                GI[j] = ((base + v[j]) & m) | (GI[j] & ~m);
            }
        for (int64_t j = 0; j < sw; j++) {
            const T g = G[j], h = s[j];
            const IT m = -(IT)BETTER(g, h);
            od[j] = BETTER(g, h) ? g : h;
            ixd[j] = (int32_t)(((GI[j] & m) | (si[j] & ~m)) - shift);
        }
    }
}

static void SUF(rect_rows_generic)(const T *P, int64_t Hp, int64_t Wp, int64_t kw, T *R, int32_t *V,
                                   int64_t t0, int64_t t1, const SUF(rect_scratch) *sc, int maximise)
{
    const int64_t Wo = Wp - kw + 1, groups = (Hp + L - 1) / L;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / groups, r0 = (t - b * groups) * L;
        const int64_t r1 = r0 + L < Hp ? r0 + L : Hp;
        for (int64_t r = r0; r < r1; r++) {
            const T *x = P + (b * Hp + r) * Wp;
            T *Rr = R + (b * Hp + r) * Wo;
            int32_t *Vr = V + (b * Hp + r) * Wo;
            BY_DIRECTION(SUF(rect_row_generic)(x, Wp, kw, Rr, Vr, sc, 1),
                         SUF(rect_row_generic)(x, Wp, kw, Rr, Vr, sc, 0));
        }
    }
}

/* Column-pass task t of the image group: (image, block of kh output rows, strip of columns). */
#define RECT_COL_TASK                                                          \
    const int64_t strips = (Wo + RECT_STRIP - 1) / RECT_STRIP;                 \
    const int64_t blocks = (Ho + kh - 1) / kh;                                 \
    const int64_t b = t / (blocks * strips), rest = t - b * blocks * strips;   \
    const int64_t m = rest / strips, strip = rest - m * strips;                \
    const int64_t r0 = m * kh, nout = Ho - r0 < kh ? Ho - r0 : kh;             \
    const int64_t j0 = strip * RECT_STRIP;                                     \
    const int64_t j1 = j0 + RECT_STRIP < Wo ? j0 + RECT_STRIP : Wo;            \
    const T *Rb = R + (b * Hp + r0) * Wo;                                      \
    const int32_t *Vb = V + (b * Hp + r0) * Wo;                                \
    T *ob = out + (b * Ho + r0) * Wo;                                          \
    int32_t *ib = idx + (b * Ho + r0) * Wo;

static void SUF(rect_cols_all_generic)(const T *R, const int32_t *V, int64_t Hp, int64_t Wo, int64_t kh,
                                       int64_t kw, T *out, int32_t *idx, int64_t t0, int64_t t1,
                                       const SUF(rect_scratch) *sc, int maximise)
{
    const int64_t Ho = Hp - kh + 1;
    for (int64_t t = t0; t < t1; t++) {
        RECT_COL_TASK
        BY_DIRECTION(SUF(rect_cols_generic)(Rb, Vb, Wo, kh, kw, nout, j0, j1, ob, ib, sc, 1),
                     SUF(rect_cols_generic)(Rb, Vb, Wo, kh, kw, nout, j0, j1, ob, ib, sc, 0));
    }
}

#if TROPIC_X86
/* AVX2 row pass of L rows r0.. (cnt of them valid; the rest repeat the last row and are not stored):
   transpose them so that each vector holds one column of the L rows, run the scan down the columns with
   one lane per row, transpose back. */
AVX2_INLINE void SUF(rect_rows_avx2_body)(const T *Pimg, int64_t Wp, int64_t kw, int64_t r0, int64_t cnt,
                                           T *Rimg, int32_t *Vimg, const SUF(rect_scratch) *sc, const int mx)
{
    const int64_t Wo = Wp - kw + 1;
    T *X = sc->X, *G = sc->G, *Hs = sc->Hs;
    IT *GI = sc->GI, *HI = sc->HI;
    const T *rp[L];
    for (int l = 0; l < L; l++)
        rp[l] = Pimg + (r0 + (l < cnt ? l : cnt - 1)) * Wp;
    int64_t j = 0;
    for (; j + L <= Wp; j += L) {
        VT r[L];
        for (int l = 0; l < L; l++)
            r[l] = SUF(vload)(rp[l] + j);
        SUF(transpose)(r);
        for (int l = 0; l < L; l++)
            SUF(vstore)(X + (j + l) * L, r[l]);
    }
    for (; j < Wp; j++)
        for (int l = 0; l < L; l++)
            X[j * L + l] = rp[l][j];

    for (int64_t s0 = 0; s0 < Wp; s0 += kw) {
        const int64_t e = s0 + kw < Wp ? s0 + kw : Wp;
        VT g = SUF(vload)(X + s0 * L);
        __m256i gi = SUF(iset1)(s0);
        SUF(vstore)(G + s0 * L, g);
        SUF(istore)(GI + s0 * L, gi);
        for (int64_t jj = s0 + 1; jj < e; jj++) {
            const VT x = SUF(vload)(X + jj * L);
            const VT m = VBETTER(x, g);
            g = SUF(vsel)(m, x, g);
            gi = SUF(isel)(m, SUF(iset1)(jj), gi);
            SUF(vstore)(G + jj * L, g);
            SUF(istore)(GI + jj * L, gi);
        }
        if (s0 >= Wo)
            continue;
        VT h = SUF(vload)(X + (e - 1) * L);
        __m256i hi = SUF(iset1)(e - 1);
        SUF(vstore)(Hs + (e - 1) * L, h);
        SUF(istore)(HI + (e - 1) * L, hi);
        for (int64_t jj = e - 2; jj >= s0; jj--) {
            const VT x = SUF(vload)(X + jj * L);
            const VT m = VBETTER_EQ(x, h);
            h = SUF(vsel)(m, x, h);
            hi = SUF(isel)(m, SUF(iset1)(jj), hi);
            SUF(vstore)(Hs + jj * L, h);
            SUF(istore)(HI + jj * L, hi);
        }
    }
    /* window s: merged in place into Hs, HI (each slot is read just before it is written) */
    for (int64_t s = 0; s < Wo; s++) {
        const VT a = SUF(vload)(Hs + s * L), c = SUF(vload)(G + (s + kw - 1) * L);
        const __m256i ai = SUF(iload)(HI + s * L), ci = SUF(iload)(GI + (s + kw - 1) * L);
        const VT m = VBETTER(c, a);
        SUF(vstore)(Hs + s * L, SUF(vsel)(m, c, a));
        SUF(istore)(HI + s * L, SUF(isub)(SUF(isel)(m, ci, ai), SUF(iset1)(s)));
    }

    int64_t s = 0;
    for (; s + L <= Wo; s += L) {
        VT r[L];
        __m256i ri[L];
        for (int l = 0; l < L; l++) {
            r[l] = SUF(vload)(Hs + (s + l) * L);
            ri[l] = SUF(iload)(HI + (s + l) * L);
        }
        SUF(transpose)(r);
        SUF(itranspose)(ri);
        for (int l = 0; l < L; l++)
            if (l < cnt) {
                SUF(vstore)(Rimg + (r0 + l) * Wo + s, r[l]);
                SUF(istore32)(Vimg + (r0 + l) * Wo + s, ri[l]);
            }
    }
    for (; s < Wo; s++)
        for (int l = 0; l < cnt; l++) {
            Rimg[(r0 + l) * Wo + s] = Hs[s * L + l];
            Vimg[(r0 + l) * Wo + s] = (int32_t)HI[s * L + l];
        }
}

AVX2 static void SUF(rect_rows_avx2)(const T *P, int64_t Hp, int64_t Wp, int64_t kw, T *R, int32_t *V, int64_t t0,
                                     int64_t t1, const SUF(rect_scratch) *sc, int maximise)
{
    const int64_t Wo = Wp - kw + 1, groups = (Hp + L - 1) / L;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / groups, r0 = (t - b * groups) * L;
        const int64_t cnt = Hp - r0 < L ? Hp - r0 : L;
        const T *Pimg = P + b * Hp * Wp;
        T *Rimg = R + b * Hp * Wo;
        int32_t *Vimg = V + b * Hp * Wo;
        BY_DIRECTION(SUF(rect_rows_avx2_body)(Pimg, Wp, kw, r0, cnt, Rimg, Vimg, sc, 1),
                     SUF(rect_rows_avx2_body)(Pimg, Wp, kw, r0, cnt, Rimg, Vimg, sc, 0));
    }
}

/* AVX2 column pass of NV vectors (NV*L columns from j) of one block, across columns: each step is a whole
   row segment of R, so the scan runs down the rows with one lane per column. */
AVX2_INLINE void SUF(rect_cols_avx2_block)(const T *R, const int32_t *V, int64_t Wo, int64_t kh, int64_t kw,
                                            int64_t nout, int64_t j, T *o, int32_t *ix,
                                            const SUF(rect_scratch) *sc, const int mx, const int NV)
{
    T *S = sc->S;
    IT *SI = sc->SI;
    VT h[4];
    __m256i hi[4];
    {
        const int64_t d = kh - 1;
        const __m256i base = SUF(iset1)(d * kw);
        for (int k = 0; k < NV; k++) {
            h[k] = SUF(vload)(R + d * Wo + j + k * L);
            hi[k] = SUF(iadd)(SUF(iload32)(V + d * Wo + j + k * L), base);
            SUF(vstore)(S + (d * NV + k) * L, h[k]);
            SUF(istore)(SI + (d * NV + k) * L, hi[k]);
        }
    }
    for (int64_t d = kh - 2; d >= 0; d--) {
        const __m256i base = SUF(iset1)(d * kw);
        for (int k = 0; k < NV; k++) {
            const VT x = SUF(vload)(R + d * Wo + j + k * L);
            const VT m = VBETTER_EQ(x, h[k]);
            h[k] = SUF(vsel)(m, x, h[k]);
            hi[k] = SUF(isel)(m, SUF(iadd)(SUF(iload32)(V + d * Wo + j + k * L), base), hi[k]);
            SUF(vstore)(S + (d * NV + k) * L, h[k]);
            SUF(istore)(SI + (d * NV + k) * L, hi[k]);
        }
    }
    for (int k = 0; k < NV; k++) { /* output row 0: the whole window is the block */
        SUF(vstore)(o + j + k * L, h[k]);
        SUF(istore32)(ix + j + k * L, hi[k]);
    }
    VT g[4];
    __m256i gi[4];
    for (int64_t d = 1; d < nout; d++) {
        const int64_t r = kh + d - 1;
        const __m256i base = SUF(iset1)(r * kw), shift = SUF(iset1)(d * kw);
        for (int k = 0; k < NV; k++) {
            const VT x = SUF(vload)(R + r * Wo + j + k * L);
            const __m256i xi = SUF(iadd)(SUF(iload32)(V + r * Wo + j + k * L), base);
            if (d == 1) {
                g[k] = x;
                gi[k] = xi;
            } else {
                const VT m = VBETTER(x, g[k]);
                g[k] = SUF(vsel)(m, x, g[k]);
                gi[k] = SUF(isel)(m, xi, gi[k]);
            }
            const VT sv = SUF(vload)(S + (d * NV + k) * L);
            const __m256i si = SUF(iload)(SI + (d * NV + k) * L);
            const VT take = VBETTER(g[k], sv);
            SUF(vstore)(o + d * Wo + j + k * L, SUF(vsel)(take, g[k], sv));
            SUF(istore32)(ix + d * Wo + j + k * L, SUF(isub)(SUF(isel)(take, gi[k], si), shift));
        }
    }
}

AVX2_INLINE void SUF(rect_cols_avx2_body)(const T *R, const int32_t *V, int64_t Wo, int64_t kh, int64_t kw,
                                           int64_t nout, int64_t j0, int64_t j1, T *o, int32_t *ix,
                                           const SUF(rect_scratch) *sc, const int mx)
{
    int64_t j = j0;
    for (; j + 4 * L <= j1; j += 4 * L)
        SUF(rect_cols_avx2_block)(R, V, Wo, kh, kw, nout, j, o, ix, sc, mx, 4);
    for (; j + L <= j1; j += L)
        SUF(rect_cols_avx2_block)(R, V, Wo, kh, kw, nout, j, o, ix, sc, mx, 1);
    SUF(rect_cols_generic)(R, V, Wo, kh, kw, nout, j, j1, o, ix, sc, mx);
}

AVX2 static void SUF(rect_cols_all_avx2)(const T *R, const int32_t *V, int64_t Hp, int64_t Wo, int64_t kh,
                                         int64_t kw, T *out, int32_t *idx, int64_t t0, int64_t t1,
                                         const SUF(rect_scratch) *sc, int maximise)
{
    const int64_t Ho = Hp - kh + 1;
    for (int64_t t = t0; t < t1; t++) {
        RECT_COL_TASK
        BY_DIRECTION(SUF(rect_cols_avx2_body)(Rb, Vb, Wo, kh, kw, nout, j0, j1, ob, ib, sc, 1),
                     SUF(rect_cols_avx2_body)(Rb, Vb, Wo, kh, kw, nout, j0, j1, ob, ib, sc, 0));
    }
}
#endif

EXPORT int SUF(tropic_rect)(const T *P, int64_t n, int64_t Hp, int64_t Wp, int64_t kh, int64_t kw, int maximise,
                            T *out, int32_t *idx, int threads)
{
    if (n < 0 || kh < 1 || kw < 1 || Hp < kh || Wp < kw || Wp > INT32_MAX || kh > INT32_MAX / 2 / kw)
        return BAD_ARGUMENT; /* flat indices relative to a block (< 2*kh*kw) must fit in int32 */
    if (n == 0)
        return 0;
    const int64_t Ho = Hp - kh + 1, Wo = Wp - kw + 1;
    const int64_t per_image = Hp * Wo;
    int64_t group = RECT_BUFFER_ELEMENTS / per_image;
    group = group < 1 ? 1 : group > n ? n : group;
    const int64_t row_tasks = (Hp + L - 1) / L;
    const int team = team_size(threads, n * Hp * Wp, n * row_tasks);

    /* one allocation: R, V of the image group, then each thread's scratch */
    const size_t row_elems = (size_t)(Wp * L);
    const size_t col_elems = (size_t)(kh * (RECT_STRIP > 4 * L ? RECT_STRIP : 4 * L));
    const size_t thread_bytes = 3 * row_elems * sizeof(T) + 2 * row_elems * sizeof(IT) +
                                col_elems * (sizeof(T) + sizeof(IT)) + sizeof(SUF(rect_scratch)) + 8 * 64;
    const size_t group_bytes = (size_t)(group * per_image) * (sizeof(T) + sizeof(int32_t)) + 2 * 64;
    char *memory = scratch_alloc(group_bytes + (size_t)team * thread_bytes);
    if (memory == NULL)
        return NO_MEMORY;
    char *cursor = memory;
    T *R = carve(&cursor, (size_t)(group * per_image) * sizeof(T));
    int32_t *V = carve(&cursor, (size_t)(group * per_image) * sizeof(int32_t));
    SUF(rect_scratch) *scratch = carve(&cursor, (size_t)team * sizeof(SUF(rect_scratch)));
    for (int k = 0; k < team; k++) {
        scratch[k].X = carve(&cursor, row_elems * sizeof(T));
        scratch[k].G = carve(&cursor, row_elems * sizeof(T));
        scratch[k].Hs = carve(&cursor, row_elems * sizeof(T));
        scratch[k].GI = carve(&cursor, row_elems * sizeof(IT));
        scratch[k].HI = carve(&cursor, row_elems * sizeof(IT));
        scratch[k].S = carve(&cursor, col_elems * sizeof(T));
        scratch[k].SI = carve(&cursor, col_elems * sizeof(IT));
    }
    const int avx2 = use_avx2;
    maximise = maximise != 0;
    const int64_t col_tasks = ((Ho + kh - 1) / kh) * ((Wo + RECT_STRIP - 1) / RECT_STRIP);
#pragma omp parallel num_threads(team) if (team > 1)
    {
        const SUF(rect_scratch) *sc = &scratch[thread_id()];
        for (int64_t g0 = 0; g0 < n; g0 += group) { /* every thread runs the same loop: barriers match */
            const int64_t count = n - g0 < group ? n - g0 : group;
            const T *Pg = P + g0 * Hp * Wp;
            T *og = out + g0 * Ho * Wo;
            int32_t *ig = idx + g0 * Ho * Wo;
            int64_t t0, t1;
            share(count * row_tasks, &t0, &t1);
#if TROPIC_X86
            if (avx2)
                SUF(rect_rows_avx2)(Pg, Hp, Wp, kw, R, V, t0, t1, sc, maximise);
            else
#endif
                SUF(rect_rows_generic)(Pg, Hp, Wp, kw, R, V, t0, t1, sc, maximise);
#pragma omp barrier
            share(count * col_tasks, &t0, &t1);
#if TROPIC_X86
            if (avx2)
                SUF(rect_cols_all_avx2)(R, V, Hp, Wo, kh, kw, og, ig, t0, t1, sc, maximise);
            else
#endif
                SUF(rect_cols_all_generic)(R, V, Hp, Wo, kh, kw, og, ig, t0, t1, sc, maximise);
#pragma omp barrier
        }
    }
    (void)avx2;
    free(memory);
    return 0;
}

/* tropic_rect per block on the thread pool (thread_pool.h): task t is blocks[t] = (b0, b1, i0, i1),
   images b0 .. b1 - 1 of the padded (n, Hp, Wp) stack whole (i0 = 0, i1 = H), or output rows
   i0 .. i1 - 1 of one image, which read padded rows i0 .. i1 + kh - 2 (a sub-image the kernel takes
   as it is); outputs (n, H, W) with H = Hp - kh + 1, W = Wp - kw + 1. */
struct SUF(rect_job) {
    const T *P;
    int64_t Hp, Wp, kh, kw;
    const int64_t *blocks;
    int maximise;
    T *out;
    int32_t *idx;
};

static int SUF(rect_task)(void *ctx, int t, int tasks)
{
    const struct SUF(rect_job) *j = ctx;
    const int64_t *block = j->blocks + 4 * t;
    const int64_t b0 = block[0], n = block[1] - block[0], i0 = block[2], i1 = block[3];
    const int64_t H = j->Hp - j->kh + 1, W = j->Wp - j->kw + 1;
    const int64_t rows = n == 1 ? i1 - i0 + j->kh - 1 : j->Hp, at = (b0 * H + i0) * W;
    (void)tasks;
    return SUF(tropic_rect)(j->P + (b0 * j->Hp + i0) * j->Wp, n, rows, j->Wp, j->kh, j->kw, j->maximise,
                            j->out + at, j->idx + at, 1);
}

EXPORT int SUF(tropic_rect_pooled)(const T *P, int64_t Hp, int64_t Wp, int64_t kh, int64_t kw, int maximise, T *out,
                                   int32_t *idx, const int64_t *blocks, int64_t nblocks, int threads)
{
    if (nblocks < 0 || nblocks > INT32_MAX || kh < 1 || kw < 1 || Hp < kh || Wp < kw)
        return BAD_ARGUMENT;
    struct SUF(rect_job) job = {P, Hp, Wp, kh, kw, blocks, maximise, out, idx};
    return tropic_pool_run(SUF(rect_task), &job, (int)nblocks, threads);
}

#undef RECT_COL_TASK
#undef BY_DIRECTION
#undef VBETTER_EQ
#undef VBETTER
#undef HBEST
#undef HBETTER
#undef BETTER_EQ
#undef BETTER
#undef ZERO
#undef SUF
#undef ZBEST
#undef ZBETTER
#undef ZMASK
#undef ZIT
#undef ZT
#undef ZL
#undef VT
#undef HT
#undef HL
#undef IT
#undef L
#undef T

#endif /* TROPIC_T */
