// tropic CUDA kernels: shared helpers (inlined into every source by tropic/backends/cupy/module.py).
//
// Semantics (DESIGN.md, tropic/core/semiring.py), the same in every kernel:
// * candidates of an output are visited in increasing index order and a candidate replaces the
//   current best only if it is strictly better (`v > best` for max-plus, `v < best` for min-plus),
//   so ties keep the lowest index;
// * the best starts at the tropical zero (-inf / +inf) with index -1, so an output whose candidates
//   are all the zero keeps index -1;
// * a candidate with a NaN operand decides the output: the first one wins and the output is NaN;
// * `-inf + +inf` (IEEE NaN from non-NaN operands) is the tropical zero: it never wins;
// * the add is done in the compute type (float for float/__half/__nv_bfloat16, double for double)
//   and rounded to the input type before the compare (float then round-to-nearest to a half type is
//   the correctly rounded half sum: 24 >= 2 * 11 + 2 bits, so the double rounding is harmless).
// Gradients are sums in an order fixed by the shapes, with double accumulators: deterministic, no
// atomics.
#pragma once

// The half types are compiled in their own modules (module.py defines TROPIC_FP16 or TROPIC_BF16),
// so that a missing header costs only its own dtype.
#ifdef TROPIC_FP16
#include <cuda_fp16.h>
#endif
#ifdef TROPIC_BF16
#include <cuda_bf16.h>
#endif

namespace tropic {

// CuPy compiles every kernel with -ftz=true (float32 subnormals flushed to zero). NumPy does not
// flush, so the float32 adds, compares and conversions whose operands may be subnormal are written
// as PTX without .ftz on the device (and as plain C++ elsewhere, e.g. the tests' CPU emulation).
// float64 is never flushed.
__device__ __forceinline__ float exact_add(float a, float b) {
#ifdef __CUDA_ARCH__
    float r;
    asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
#else
    return a + b;
#endif
}
__device__ __forceinline__ double exact_add(double a, double b) { return a + b; }

__device__ __forceinline__ bool exact_greater(float a, float b) {
#ifdef __CUDA_ARCH__
    unsigned r;
    asm("{\n\t.reg .pred p;\n\tsetp.gt.f32 p, %1, %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(r) : "f"(a), "f"(b));
    return r != 0;
#else
    return a > b;
#endif
}
__device__ __forceinline__ bool exact_greater(double a, double b) { return a > b; }

__device__ __forceinline__ bool exact_less(float a, float b) {
#ifdef __CUDA_ARCH__
    unsigned r;
    asm("{\n\t.reg .pred p;\n\tsetp.lt.f32 p, %1, %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(r) : "f"(a), "f"(b));
    return r != 0;
#else
    return a < b;
#endif
}
__device__ __forceinline__ bool exact_less(double a, double b) { return a < b; }

// Strictly better under the semiring (false whenever either side is NaN).
template <typename C> __device__ __forceinline__ bool better(bool maximise, C v, C best) {
    return maximise ? exact_greater(v, best) : exact_less(v, best);
}

// The running best m of a step of the tiled kernels' fast paths, updated with a candidate sum v: v
// unless v is strictly worse or NaN (-inf + inf). m is never NaN (it starts at the tropical zero).
// Which of two equal operands comes back (-0.0 / +0.0) does not matter: the kernels recompute the
// output's value from the winning candidate. float as PTX max.f32 / min.f32
// (one instruction; a NaN operand yields the other) without .ftz, as CuPy compiles with -ftz=true and
// NumPy keeps subnormals. Elsewhere (double has no min/max instruction on sm_80 / sm_90; the tests'
// CPU emulation) a compare and a select that returns the later of equal operands, so that the
// emulated tests would see any reliance on m's sign of zero.
template <bool MAX> __device__ __forceinline__ double better_of(double m, double v) {
    return (MAX ? v >= m : v <= m) ? v : m;
}
template <bool MAX> __device__ __forceinline__ float better_of(float m, float v) {
#ifdef __CUDA_ARCH__
    float r;
    if (MAX)
        asm("max.f32 %0, %1, %2;" : "=f"(r) : "f"(m), "f"(v));
    else
        asm("min.f32 %0, %1, %2;" : "=f"(r) : "f"(m), "f"(v));
    return r;
#else
    return (MAX ? v >= m : v <= m) ? v : m;
#endif
}

__device__ __forceinline__ double exact_to_double(float a) {
#ifdef __CUDA_ARCH__
    double r;
    asm("cvt.f64.f32 %0, %1;" : "=d"(r) : "f"(a));
    return r;
#else
    return (double)a;
#endif
}
__device__ __forceinline__ double exact_to_double(double a) { return a; }

__device__ __forceinline__ float exact_to_float(double a) {
#ifdef __CUDA_ARCH__
    float r;
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(a));
    return r;
#else
    return (float)a;
#endif
}

template <typename T> struct Traits {
    typedef float C;  // compute type
    static __device__ __forceinline__ float load(T x) { return (float)x; }
    static __device__ __forceinline__ float round(float s) { return s; }
    static __device__ __forceinline__ T store(float s) { return (T)s; }
};

template <> struct Traits<double> {
    typedef double C;
    static __device__ __forceinline__ double load(double x) { return x; }
    static __device__ __forceinline__ double round(double s) { return s; }
    static __device__ __forceinline__ double store(double s) { return s; }
};

#ifdef TROPIC_FP16
template <> struct Traits<__half> {
    typedef float C;
    static __device__ __forceinline__ float load(__half x) { return __half2float(x); }
    static __device__ __forceinline__ float round(float s) { return __half2float(__float2half_rn(s)); }
    static __device__ __forceinline__ __half store(float s) { return __float2half_rn(s); }
};
#endif

#ifdef TROPIC_BF16
template <> struct Traits<__nv_bfloat16> {
    typedef float C;
    static __device__ __forceinline__ float load(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ float round(float s) {
        return __bfloat162float(__float2bfloat16_rn(s));
    }
    static __device__ __forceinline__ __nv_bfloat16 store(float s) { return __float2bfloat16_rn(s); }
};
#endif

// Accumulator of the gradient sums: double for every input type (the NumPy backend sums in float64
// too, so sums taken in the same order agree bitwise).
template <typename T> __device__ __forceinline__ T store_sum(double s) { return exact_to_float(s); }
template <> __device__ __forceinline__ double store_sum<double>(double s) { return s; }
// Half types straight from double: one rounding, as NumPy's float64 -> float16 cast.
#ifdef TROPIC_FP16
template <> __device__ __forceinline__ __half store_sum<__half>(double s) { return __double2half(s); }
#endif
#ifdef TROPIC_BF16
template <> __device__ __forceinline__ __nv_bfloat16 store_sum<__nv_bfloat16>(double s) {
    return __double2bfloat16(s);
}
#endif

template <typename C> __device__ __forceinline__ C infinity();
template <> __device__ __forceinline__ float infinity<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double infinity<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

// The running winner of one output.
template <typename T> struct Best {
    typedef typename Traits<T>::C C;
    C value;
    int index;
    bool decided;  // a NaN candidate was met: nothing later changes the output
    bool maximise;

    __device__ __forceinline__ explicit Best(bool maximise_)
        : value(maximise_ ? -infinity<C>() : infinity<C>()), index(-1), decided(false),
          maximise(maximise_) {}

    // Offer candidate k with value x (+) w (or x alone when !has_w).
    __device__ __forceinline__ void offer(C x, C w, bool has_w, int k) {
        if (decided) return;
        if (isnan(x) || (has_w && isnan(w))) {
            value = has_w ? exact_add(x, w) : x;  // NaN
            index = k;
            decided = true;
            return;
        }
        C v = has_w ? Traits<T>::round(exact_add(x, w)) : x;
        if (isnan(v)) return;  // -inf + inf: the tropical zero, never wins
        if (better(maximise, v, value)) {
            value = v;
            index = k;
        }
    }
};

// Launch helper: a grid-stride loop over n items (64-bit).
#define TROPIC_GRID_LOOP(i, n)                                                                   \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                \
         i += (long long)blockDim.x * gridDim.x)

}  // namespace tropic
