/* Half-precision rounding of float32 candidate sums, shared by the product (matmul_c.c) and the tap
 * loops (morphology_c.c). Include after <immintrin.h>, on x86 only.
 *
 * tropic_rounded_sums(v, rounding): each lane rounded to float16 (rounding 1, F16C) or bfloat16 (2, on
 * the bits), to nearest even, and widened back; rounding 0 returns v (tropic_rounded_sums512: the same
 * on 16 lanes). The float32 sum of two such
 * numbers rounded once is their correctly rounded sum in that dtype, so candidates compare exactly as
 * in the narrow dtype. NaN stays NaN and never wins: a NaN sum carries the payload of a NaN operand,
 * whose low 16 bits are 0 for a widened bfloat16 (the bfloat16 rounding adds at most 0x8000 to them:
 * no carry), or is the default NaN of inf - inf. Call it only where the CPU has AVX2 and F16C. */
#ifndef TROPIC_HALF_ROUNDING_H
#define TROPIC_HALF_ROUNDING_H

static inline __attribute__((target("avx2,f16c"), always_inline)) __m256 tropic_rounded_sums(__m256 v,
                                                                                             const int rounding)
{
    if (rounding == 1)
        return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    if (rounding == 2) {
        const __m256i bits = _mm256_castps_si256(v);
        const __m256i lowest_kept = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
        const __m256i sum = _mm256_add_epi32(bits, _mm256_add_epi32(lowest_kept, _mm256_set1_epi32(0x7FFF)));
        return _mm256_castsi256_ps(_mm256_and_si256(sum, _mm256_set1_epi32((int)0xFFFF0000u)));
    }
    return v;
}

/* The same on 16 lanes, for the AVX-512 product kernels (the same conversion and bit arithmetic, so the
 * same bits). Call it only where the CPU has AVX-512 F (which has the 512-bit conversions). */
static inline __attribute__((target("avx512f"), always_inline)) __m512 tropic_rounded_sums512(__m512 v,
                                                                                          const int rounding)
{
    if (rounding == 1)
        return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    if (rounding == 2) {
        const __m512i bits = _mm512_castps_si512(v);
        const __m512i lowest_kept = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
        const __m512i sum = _mm512_add_epi32(bits, _mm512_add_epi32(lowest_kept, _mm512_set1_epi32(0x7FFF)));
        return _mm512_castsi512_ps(_mm512_and_si512(sum, _mm512_set1_epi32((int)0xFFFF0000u)));
    }
    return v;
}

#endif /* TROPIC_HALF_ROUNDING_H */
