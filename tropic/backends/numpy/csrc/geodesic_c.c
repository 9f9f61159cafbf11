/* Compiled geodesic reconstruction of tropic's NumPy backend, called through ctypes (compiled.py).
 *
 *   tropic_reconstruct_{f32,f64,i64,u64}          reconstruction by dilation (flip = 0) or by erosion
 *                                                  (flip = 1) of a seed under / above a mask, any ndim
 *   tropic_reconstruct_winners_{f32,f64,i64,u64}  the same, and the winner of every output
 *
 * Arguments: (seed, mask, ndim, shape, steps, nsteps, flip, out[, winner], found). seed, mask and out
 * are C-contiguous arrays of `shape`; steps is an (nsteps, ndim) int64 array of neighbour steps: the
 * value at pixel p reaches p + steps[k] (the zero step is ignored). With D(J)(x) = max_k J(x - steps[k]),
 * the result is the least fixed point of
 *     J = max(J, min(D(J), mask))      from J = min(seed, mask)      (by dilation),
 * and the dual with max and min exchanged by erosion (computed as a dilation of the order-reversed
 * values: -x for floats, ~x for integers, both exact). Outside the image is the neutral value.
 *
 * Algorithm: L. Vincent's hybrid reconstruction (IEEE Trans. Image Processing 2(2), 1993): a raster
 * scan, an anti-raster scan, then a queue that propagates what the scans left unstable. Vincent's queue
 * is first-in first-out; here it is a radix heap that pops the highest value first, so that a pixel is
 * raised once, by the pixel that sets its final value, rather than once per path (a single marker
 * flooding a 1024x1024 noise image: 0.1 s instead of 1 s). The image is copied into a buffer padded
 * with the neutral value by the largest step on every side, so that neighbours are flat offsets (any
 * ndim) and no read needs a bounds check; a pixel's marker and mask sit side by side.
 *
 * Winners (the _winners entries): candidates are identified by an id, seed pixel i -> i and mask pixel
 * i -> n + i (n pixels), and the reconstruction runs on the pairs (value, id) ordered by value, then by
 * the LOWER id ((v, i) > (v, j) for i < j): at ties a maximum keeps the lower id, a minimum with the mask
 * the higher one (a seed pixel equal to its own mask pixel gives way to it). That order is total, so the fixed point and each output's winner are unique (no dependence on the scan
 * order); the values are those of the plain reconstruction (the pairs' first component).
 *
 * NaN (floats): an output reached from a NaN (of the seed or of the mask, along steps) is NaN (the quiet
 * NaN of the C library; no winner: -1); the other outputs are the reconstruction of the pixels that no NaN
 * reaches. found |= 1 if the seed or the mask holds a +0.0, 2 for a -0.0, 4 for a NaN.
 *
 * Returns 0 on success, 1 on bad arguments, 2 when the work space could not be allocated. Sequential
 * (one thread): the scans carry a dependency from each pixel to the next.
 */
#ifndef TROPIC_T /* ------------------------------------------------------------------ common part */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_geodesic_c", "ctypes-loaded kernels", -1, NULL};
PyMODINIT_FUNC PyInit__geodesic_c(void) { return PyModule_Create(&module); }

#define EXPORT __attribute__((visibility("default")))
#define INLINE static inline __attribute__((always_inline))
#define BAD_ARGUMENT 1
#define NO_MEMORY 2
#define MAX_NDIM 64
#define NO_ID INT64_MAX /* id of the padding and of NaN-reached pixels: loses to every candidate */
#define FREE 0          /* pixel states of the NaN pass */
#define BLOCKED 1
#define OUTSIDE 2

/* The calling convention of the exported functions: compiled.py refuses a build whose number is not
   the one it was written for. */
EXPORT int tropic_geodesic_abi_version(void) { return 1; }

/* Scalar code: the scans carry a dependency from one pixel to the next, and the queue is irregular. */
EXPORT const char *tropic_isa(void) { return "generic"; }

/* FIFO of flat indices: a ring buffer (power-of-two capacity) that doubles when full. */
typedef struct {
    int64_t *data;
    int64_t mask, head, count;
} fifo;

static int fifo_init(fifo *q)
{
    q->mask = (1 << 12) - 1;
    q->head = q->count = 0;
    q->data = malloc(sizeof(int64_t) * (size_t)(q->mask + 1));
    return q->data == NULL;
}

static int fifo_grow(fifo *q)
{
    int64_t cap = q->mask + 1;
    int64_t *data = realloc(q->data, sizeof(int64_t) * (size_t)(2 * cap));
    if (data == NULL)
        return 1;
    /* the wrapped part [0, head) moves behind the old end */
    memcpy(data + cap, data, sizeof(int64_t) * (size_t)q->head);
    q->data = data;
    q->mask = 2 * cap - 1;
    return 0;
}

INLINE int fifo_push(fifo *q, int64_t v)
{
    if (q->count > q->mask && fifo_grow(q))
        return 1;
    q->data[(q->head + q->count) & q->mask] = v;
    q->count++;
    return 0;
}

INLINE int64_t fifo_pop(fifo *q)
{
    int64_t v = q->data[q->head];
    q->head = (q->head + 1) & q->mask;
    q->count--;
    return v;
}

/* The padded buffer's geometry: interior rows (the last axis) and the neighbours' flat offsets. */
typedef struct {
    int64_t n, padded, rows, row_len;
    int64_t *row_start; /* padded flat index of the first pixel of each interior row */
    int64_t *off;       /* x receives from x - off[k] and sends to x + off[k] */
    int64_t nsteps, nfwd; /* off[0, nfwd) > 0 (read by the raster scan), the rest < 0 */
} geometry;

static void geometry_free(geometry *g)
{
    free(g->row_start);
    free(g->off);
}

static int geometry_init(geometry *g, int64_t ndim, const int64_t *shape, const int64_t *steps, int64_t nsteps)
{
    int64_t reach[MAX_NDIM], pshape[MAX_NDIM], pstride[MAX_NDIM];
    memset(g, 0, sizeof(*g));
    if (ndim < 1 || ndim > MAX_NDIM || nsteps < 0)
        return BAD_ARGUMENT;
    g->n = 1;
    for (int64_t d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return BAD_ARGUMENT;
        g->n *= shape[d];
        reach[d] = 0;
    }
    for (int64_t k = 0; k < nsteps; k++)
        for (int64_t d = 0; d < ndim; d++) {
            int64_t s = steps[k * ndim + d];
            if (s < -(INT64_C(1) << 30) || s > (INT64_C(1) << 30))
                return BAD_ARGUMENT;
            if (llabs(s) > reach[d])
                reach[d] = llabs(s);
        }
    if (g->n == 0)
        return 0;
    g->padded = 1;
    for (int64_t d = ndim - 1; d >= 0; d--) {
        pshape[d] = shape[d] + 2 * reach[d];
        pstride[d] = g->padded;
        if (g->padded > INT64_MAX / 4 / pshape[d])
            return NO_MEMORY;
        g->padded *= pshape[d];
    }
    g->row_len = shape[ndim - 1];
    g->rows = g->n / g->row_len;
    g->row_start = malloc(sizeof(int64_t) * (size_t)g->rows);
    g->off = malloc(sizeof(int64_t) * (size_t)(nsteps > 0 ? nsteps : 1));
    if (g->row_start == NULL || g->off == NULL) {
        geometry_free(g);
        return NO_MEMORY;
    }
    for (int64_t r = 0; r < g->rows; r++) { /* r in C order over the axes before the last */
        int64_t rest = r, start = reach[ndim - 1];
        for (int64_t d = ndim - 2; d >= 0; d--) {
            start += (rest % shape[d] + reach[d]) * pstride[d];
            rest /= shape[d];
        }
        g->row_start[r] = start;
    }
    /* Distinct steps give distinct offsets (each |step| is at most the padding); the zero step is dropped. */
    int64_t forward = 0, backward = 0, *flat = g->off; /* in place: positives first, then negatives */
    for (int64_t k = 0; k < nsteps; k++) {
        flat[k] = 0;
        for (int64_t d = 0; d < ndim; d++)
            flat[k] += steps[k * ndim + d] * pstride[d];
        forward += flat[k] > 0;
        backward += flat[k] < 0;
    }
    g->nfwd = forward;
    g->nsteps = forward + backward;
    int64_t kept = 0; /* drop the zero step, then partition: a stable order is not needed */
    for (int64_t k = 0; k < nsteps; k++)
        if (flat[k] != 0)
            flat[kept++] = flat[k];
    for (int64_t a = 0, b = kept - 1; a < b;) {
        if (flat[a] > 0)
            a++;
        else {
            int64_t t = flat[a];
            flat[a] = flat[b];
            flat[b--] = t;
        }
    }
    return 0;
}

/* Radix heap (Ahuja, Mehlhorn, Orlin, Tarjan 1990) of pixels keyed by a uint64, smallest key first, for
   monotone use: no key pushed is below the last one popped. Bucket b > 0 holds the keys whose highest bit
   that differs from `last` is bit b - 1; bucket 0 the keys equal to `last`. A pop refills bucket 0 from the
   lowest non-empty bucket, whose keys all move to lower buckets: each key moves at most 64 times, and in
   practice a handful, with sequential memory access (a binary heap of a million entries misses the cache on
   every level). */
typedef struct {
    uint64_t key;
    int64_t x;
} radix_entry;

/* The candidate ids of a pixel's marker J and mask I (winners only). */
typedef struct {
    int64_t j, i;
} pair;

typedef struct {
    radix_entry *data;
    int64_t count, cap;
} radix_bucket;

typedef struct {
    radix_bucket bucket[65];
    uint64_t last;
    int64_t size;
} radix_heap;

INLINE int radix_bucket_of(uint64_t key, uint64_t last)
{
    uint64_t d = key ^ last;
    return d ? 64 - __builtin_clzll(d) : 0;
}

static int radix_append(radix_bucket *b, uint64_t key, int64_t x)
{
    if (b->count == b->cap) {
        int64_t cap = b->cap ? 2 * b->cap : 1024;
        radix_entry *data = realloc(b->data, sizeof(radix_entry) * (size_t)cap);
        if (data == NULL)
            return 1;
        b->data = data;
        b->cap = cap;
    }
    b->data[b->count].key = key;
    b->data[b->count].x = x;
    b->count++;
    return 0;
}

INLINE int radix_push(radix_heap *h, uint64_t key, int64_t x)
{
    h->size++;
    return radix_append(&h->bucket[radix_bucket_of(key, h->last)], key, x);
}

/* Pops one entry of the smallest key (h->size > 0); 1 if memory ran out while refilling bucket 0. */
static int radix_pop(radix_heap *h, radix_entry *out)
{
    if (h->bucket[0].count == 0) {
        int i = 1;
        while (h->bucket[i].count == 0)
            i++;
        radix_bucket *src = &h->bucket[i];
        uint64_t least = src->data[0].key;
        for (int64_t j = 1; j < src->count; j++)
            if (src->data[j].key < least)
                least = src->data[j].key;
        h->last = least;
        for (int64_t j = 0; j < src->count; j++) /* every key goes to a bucket below i */
            if (radix_append(&h->bucket[radix_bucket_of(src->data[j].key, least)], src->data[j].key, src->data[j].x))
                return 1;
        src->count = 0;
    }
    *out = h->bucket[0].data[--h->bucket[0].count];
    h->size--;
    return 0;
}

static void radix_free(radix_heap *h)
{
    for (int b = 0; b < 65; b++)
        free(h->bucket[b].data);
}

#define TROPIC_T float
#define TROPIC_SUFFIX f32
#define TROPIC_FLOAT 1
#define TROPIC_LOWEST (-INFINITY)
#include "geodesic_c.c"
#undef TROPIC_T
#undef TROPIC_SUFFIX
#undef TROPIC_FLOAT
#undef TROPIC_LOWEST

#define TROPIC_T double
#define TROPIC_SUFFIX f64
#define TROPIC_FLOAT 1
#define TROPIC_LOWEST (-(double)INFINITY)
#include "geodesic_c.c"
#undef TROPIC_T
#undef TROPIC_SUFFIX
#undef TROPIC_FLOAT
#undef TROPIC_LOWEST

#define TROPIC_T int64_t
#define TROPIC_SUFFIX i64
#define TROPIC_FLOAT 0
#define TROPIC_SIGNED 1
#define TROPIC_LOWEST INT64_MIN
#include "geodesic_c.c"
#undef TROPIC_T
#undef TROPIC_SUFFIX
#undef TROPIC_FLOAT
#undef TROPIC_LOWEST

#undef TROPIC_SIGNED
#define TROPIC_T uint64_t
#define TROPIC_SUFFIX u64
#define TROPIC_FLOAT 0
#define TROPIC_SIGNED 0
#define TROPIC_LOWEST ((uint64_t)0)
#include "geodesic_c.c"

#else /* ------------------------------------------------------------- one element type: TROPIC_T */

#define T TROPIC_T
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define SUF(name) CAT(name, TROPIC_SUFFIX)
#if TROPIC_FLOAT
#define FLIP(x) (-(x))
#else
#define FLIP(x) (~(x))
#endif
/* A pixel of the padded buffer: the marker J (the reconstruction so far) and the mask I side by side, so
   that a neighbour costs one cache line, not two. */
typedef struct {
    T j, i;
} SUF(cell);

/* (a, ia) better than (b, ib): a greater value, or with winners the same value and a lower id */
#define BETTER(a, ia, b, ib) ((a) > (b) || (track && (a) == (b) && (ia) < (ib)))

/* The radix heap's key of a value: larger values get smaller keys (best first); -0.0 and +0.0 the same
   key, so that the keys pushed while propagating never fall below the last one popped. */
INLINE uint64_t SUF(key)(T v)
{
#if TROPIC_FLOAT
    if (v == 0)
        v = 0;
    if (sizeof(T) == 4) {
        uint32_t u;
        memcpy(&u, &v, 4);
        u = (u >> 31) ? ~u : (u | UINT32_C(0x80000000));
        return ~(uint64_t)u;
    }
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return ~((u >> 63) ? ~u : (u | (UINT64_C(1) << 63)));
#else
#if TROPIC_SIGNED
    return ~((uint64_t)v ^ (UINT64_C(1) << 63));
#else
    return ~(uint64_t)v;
#endif
#endif
}

#if TROPIC_FLOAT
/* Marks in `reached` (one byte per pixel, C order) the pixels that a NaN reaches along the steps, and
   makes them inert in the padded buffers: seed = mask = lowest, id NO_ID, like the padding. */
static int SUF(block_nan)(const T *seed, const T *mask, const geometry *g, SUF(cell) * C, pair *W, int track,
                          uint8_t *reached)
{
    uint8_t *state = malloc((size_t)g->padded);
    fifo q;
    if (state == NULL || fifo_init(&q)) {
        free(state);
        return NO_MEMORY;
    }
    memset(state, OUTSIDE, (size_t)g->padded);
    for (int64_t r = 0; r < g->rows; r++)
        memset(state + g->row_start[r], FREE, (size_t)g->row_len);
    int status = 0;
    for (int64_t r = 0; r < g->rows && !status; r++)
        for (int64_t j = 0; j < g->row_len; j++) {
            const int64_t i = r * g->row_len + j, x = g->row_start[r] + j;
            if (isnan(seed[i]) || isnan(mask[i])) {
                state[x] = BLOCKED;
                if (fifo_push(&q, x)) {
                    status = NO_MEMORY;
                    break;
                }
            }
        }
    while (q.count > 0 && !status) {
        const int64_t p = fifo_pop(&q);
        for (int64_t k = 0; k < g->nsteps; k++) {
            const int64_t y = p + g->off[k];
            if (state[y] == FREE) {
                state[y] = BLOCKED;
                if (fifo_push(&q, y)) {
                    status = NO_MEMORY;
                    break;
                }
            }
        }
    }
    for (int64_t r = 0; r < g->rows && !status; r++)
        for (int64_t j = 0; j < g->row_len; j++) {
            const int64_t x = g->row_start[r] + j;
            reached[r * g->row_len + j] = state[x] == BLOCKED;
            if (state[x] == BLOCKED) {
                C[x].j = C[x].i = TROPIC_LOWEST;
                if (track)
                    W[x].j = W[x].i = NO_ID;
            }
        }
    free(q.data);
    free(state);
    return status;
}
#endif

INLINE int SUF(reconstruct_body)(const T *seed, const T *mask, int64_t ndim, const int64_t *shape,
                                 const int64_t *steps, int64_t nsteps, int flip, T *out, int64_t *winner,
                                 int *found, const int track)
{
    if (seed == NULL || mask == NULL || out == NULL || shape == NULL || found == NULL || (nsteps > 0 && steps == NULL))
        return BAD_ARGUMENT;
    *found = 0;
    geometry g;
    int status = geometry_init(&g, ndim, shape, steps, nsteps);
    if (status || g.n == 0)
        return status;
    const int64_t n = g.n, P = g.padded, rows = g.rows, len = g.row_len, nfwd = g.nfwd, nst = g.nsteps;
    const int64_t *off = g.off, *row_start = g.row_start;
    SUF(cell) *C = malloc(sizeof(SUF(cell)) * (size_t)P);
    pair *W = track ? malloc(sizeof(pair) * (size_t)P) : NULL;
    uint8_t *nan_reached = NULL;
    radix_heap q;
    memset(&q, 0, sizeof(q));
    if (C == NULL || (track && W == NULL)) {
        status = NO_MEMORY;
        goto done;
    }
    for (int64_t x = 0; x < P; x++)
        C[x].j = C[x].i = TROPIC_LOWEST;
    if (track)
        for (int64_t x = 0; x < P; x++)
            W[x].j = W[x].i = NO_ID;

    /* copy in (order-reversed for erosion); J = min(seed, mask) as pairs */
    int seen = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = row_start[r], src = r * len;
        for (int64_t j = 0; j < len; j++) {
            T s = seed[src + j], m = mask[src + j];
#if TROPIC_FLOAT
            if (s == 0)
                seen |= signbit(s) ? 2 : 1;
            if (m == 0)
                seen |= signbit(m) ? 2 : 1;
            if (isnan(s) || isnan(m))
                seen |= 4;
#endif
            if (flip) {
                s = FLIP(s);
                m = FLIP(m);
            }
            const int64_t x = base + j, is = src + j, im = n + src + j;
            C[x].i = m;
            if (track)
                W[x].i = im;
            if (BETTER(s, is, m, im)) { /* seed above mask (the caller checked that it is not): clip */
                C[x].j = m;
                if (track)
                    W[x].j = im;
            } else {
                C[x].j = s;
                if (track)
                    W[x].j = is;
            }
        }
    }
    *found = seen;
#if TROPIC_FLOAT
    if (seen & 4) {
        nan_reached = malloc((size_t)n);
        if (nan_reached == NULL) {
            status = NO_MEMORY;
            goto done;
        }
        status = SUF(block_nan)(seed, mask, &g, C, W, track, nan_reached);
        if (status)
            goto done;
    }
#endif

    /* raster scan: x reads the neighbours before it (off > 0) */
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = row_start[r];
        for (int64_t j = 0; j < len; j++) {
            const int64_t x = base + j;
            T v = C[x].j;
            int64_t w = track ? W[x].j : 0;
            for (int64_t k = 0; k < nfwd; k++) {
                const int64_t y = x - off[k];
                if (BETTER(C[y].j, track ? W[y].j : 0, v, w)) {
                    v = C[y].j;
                    if (track)
                        w = W[y].j;
                }
            }
            if (BETTER(v, w, C[x].i, track ? W[x].i : 0)) {
                v = C[x].i;
                if (track)
                    w = W[x].i;
            }
            C[x].j = v;
            if (track)
                W[x].j = w;
        }
    }
    /* anti-raster scan: x reads the neighbours after it (off < 0); x goes into the queue if it can still
       raise one of the pixels after it that it sends to (off > 0, already scanned) */
    for (int64_t r = rows - 1; r >= 0; r--) {
        const int64_t base = row_start[r];
        for (int64_t j = len - 1; j >= 0; j--) {
            const int64_t x = base + j;
            T v = C[x].j;
            int64_t w = track ? W[x].j : 0;
            for (int64_t k = nfwd; k < nst; k++) {
                const int64_t y = x - off[k];
                if (BETTER(C[y].j, track ? W[y].j : 0, v, w)) {
                    v = C[y].j;
                    if (track)
                        w = W[y].j;
                }
            }
            if (BETTER(v, w, C[x].i, track ? W[x].i : 0)) {
                v = C[x].i;
                if (track)
                    w = W[x].i;
            }
            C[x].j = v;
            if (track)
                W[x].j = w;
            int raises = 0; /* without a branch per neighbour: which way it goes is unpredictable */
            for (int64_t k = 0; k < nfwd; k++) {
                const int64_t y = x + off[k];
                const int64_t jy = track ? W[y].j : 0, iy = track ? W[y].i : 0;
                raises |= BETTER(v, w, C[y].j, jy) & BETTER(C[y].i, iy, C[y].j, jy);
            }
            if (raises && radix_push(&q, SUF(key)(v), x)) {
                status = NO_MEMORY;
                goto done;
            }
        }
    }
    /* propagation, best value first: a pixel raises each neighbour it sends to, up to the neighbour's
       mask. An entry whose pixel has risen since it was queued is stale (J only rises). */
    while (q.size > 0) {
        radix_entry e;
        if (radix_pop(&q, &e)) {
            status = NO_MEMORY;
            goto done;
        }
        const int64_t p = e.x;
        const T v = C[p].j;
        const int64_t w = track ? W[p].j : 0;
        if (SUF(key)(v) != e.key)
            continue;
        for (int64_t k = 0; k < nst; k++) {
            const int64_t y = p + off[k];
            const int64_t jy = track ? W[y].j : 0, iy = track ? W[y].i : 0;
            if (BETTER(v, w, C[y].j, jy) && BETTER(C[y].i, iy, C[y].j, jy)) {
                T nv = v;
                int64_t nw = w;
                if (BETTER(v, w, C[y].i, iy)) {
                    nv = C[y].i;
                    nw = iy;
                }
                C[y].j = nv;
                if (track)
                    W[y].j = nw;
                if (radix_push(&q, SUF(key)(nv), y)) {
                    status = NO_MEMORY;
                    goto done;
                }
            }
        }
    }
    /* copy out */
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = row_start[r], dst = r * len;
        for (int64_t j = 0; j < len; j++) {
            T v = C[base + j].j;
            out[dst + j] = flip ? FLIP(v) : v;
            if (track)
                winner[dst + j] = W[base + j].j;
        }
    }
#if TROPIC_FLOAT
    if (nan_reached != NULL)
        for (int64_t i = 0; i < n; i++)
            if (nan_reached[i]) {
                out[i] = (T)NAN;
                if (track)
                    winner[i] = -1;
            }
#endif
done:
    radix_free(&q);
    free(nan_reached);
    free(C);
    free(W);
    geometry_free(&g);
    return status;
}

EXPORT int SUF(tropic_reconstruct)(const T *seed, const T *mask, int64_t ndim, const int64_t *shape,
                                   const int64_t *steps, int64_t nsteps, int flip, T *out, int *found)
{
    return SUF(reconstruct_body)(seed, mask, ndim, shape, steps, nsteps, flip, out, NULL, found, 0);
}

EXPORT int SUF(tropic_reconstruct_winners)(const T *seed, const T *mask, int64_t ndim, const int64_t *shape,
                                           const int64_t *steps, int64_t nsteps, int flip, T *out,
                                           int64_t *winner, int *found)
{
    if (winner == NULL)
        return BAD_ARGUMENT;
    return SUF(reconstruct_body)(seed, mask, ndim, shape, steps, nsteps, flip, out, winner, found, 1);
}

#undef BETTER
#undef FLIP
#undef SUF
#undef CAT
#undef CAT_
#undef T

#endif /* TROPIC_T */
