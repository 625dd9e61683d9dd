/* native._quant: model-math kernels over GGUF block formats, and a whole-stack llama forward.
 *
 * Numerics follow llama.cpp's x86 CPU backend (ggml-cpu/arch/x86/quants.c), so greedy tokens agree:
 *   - activations are quantized to Q8_1 (for Q4_1 weights) or Q8_0 (Q4_0/Q8_0 weights), blocks of 32,
 *     d = amax/127, q = round_half_even(x * 127/amax), scales stored as f16;
 *   - block dot products are integer sums of 4 adjacent products (8 lanes), accumulated per lane with
 *     fma(d_w * d_x, lane, acc) and reduced as hsum_float_8, plus sum(m_w * s_x) for Q4_1;
 *   - the KV cache is f16, q is rounded to f16 before q.k.
 * AVX2/FMA kernels are chosen at run time; the scalar fallback computes the same lanes in the same order.
 * The GIL is released around all work; OpenMP splits matrix rows over threads.
 */
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
#include <immintrin.h>
#define HAVE_X86 1
#endif

enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q8_0 = 8, T_Q8_1 = 9 };
#define QK 32

static int use_avx2 = 0;

/* ---------- f16 <-> f32 (bit exact, round to nearest even) ---------- */

static inline float bits_f32(uint32_t w) { float f; memcpy(&f, &w, 4); return f; }
static inline uint32_t f32_bits(float f) { uint32_t w; memcpy(&w, &f, 4); return w; }

static float f16_table[65536];

static float f16_to_f32_calc(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    const float normalized = bits_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = bits_f32((two_w >> 17) | (126u << 23)) - 0.5f;
    return bits_f32(sign | (two_w < (1u << 27) ? f32_bits(denormalized) : f32_bits(normalized)));
}

static inline float f16f(uint16_t h) { return f16_table[h]; }
static inline float f16p(const uint8_t *p) { uint16_t h; memcpy(&h, p, 2); return f16_table[h]; }

static inline uint16_t f32_to_f16(float f) {
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = bits_f32((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = f32_bits(base);
    const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

/* ---------- formats ---------- */

static int block_size(int t) {
    switch (t) {
    case T_F32: return 4; case T_F16: return 2; case T_Q4_0: return 18; case T_Q4_1: return 20;
    case T_Q8_0: return 34; case T_Q8_1: return 36; default: return -1;
    }
}
static int block_values(int t) { return (t == T_F32 || t == T_F16) ? 1 : QK; }
static int64_t row_size(int t, int64_t cols) { return cols / block_values(t) * block_size(t); }
static int act_type(int wt) { return wt == T_Q4_1 ? T_Q8_1 : T_Q8_0; }

static void dequant_row(int t, const uint8_t *src, float *dst, int64_t cols) {
    if (t == T_F32) { memcpy(dst, src, cols * 4); return; }
    if (t == T_F16) { for (int64_t i = 0; i < cols; i++) dst[i] = f16p(src + 2 * i); return; }
    const int bs = block_size(t);
    for (int64_t b = 0; b < cols / QK; b++, src += bs, dst += QK) {
        const float d = f16p(src);
        if (t == T_Q4_0 || t == T_Q4_1) {
            const float m = t == T_Q4_1 ? f16p(src + 2) : 0.0f;
            const uint8_t *qs = src + (t == T_Q4_1 ? 4 : 2);
            const int off = t == T_Q4_0 ? 8 : 0;
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((qs[j] & 0x0F) - off) * d + m;
                dst[j + 16] = (float)((qs[j] >> 4) - off) * d + m;
            }
        } else { /* Q8_0 / Q8_1 */
            const int8_t *qs = (const int8_t *)(src + (t == T_Q8_1 ? 4 : 2));
            for (int j = 0; j < QK; j++) dst[j] = (float)qs[j] * d;
        }
    }
}

/* activation quantization, as llama.cpp's x86 quantize_row_q8_0 / quantize_row_q8_1 */
static void quantize_act_row_scalar(const float *x, int64_t cols, int at, uint8_t *out) {
    const int bs = block_size(at), hdr = at == T_Q8_1 ? 4 : 2;
    for (int64_t b = 0; b < cols / QK; b++, x += QK, out += bs) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) { const float a = fabsf(x[j]); amax = a > amax ? a : amax; }
        const float d = amax / 127.f, id = amax != 0.0f ? 127.f / amax : 0.0f;
        int8_t *q = (int8_t *)(out + hdr);
        int sum = 0;
        for (int j = 0; j < QK; j++) { q[j] = (int8_t)nearbyintf(x[j] * id); sum += q[j]; }
        const uint16_t dh = f32_to_f16(d);
        memcpy(out, &dh, 2);
        if (at == T_Q8_1) { const uint16_t sh = f32_to_f16(d * (float)sum); memcpy(out + 2, &sh, 2); }
    }
}

/* ---------- block dot products: scalar (same lanes and order as the AVX2 code) ---------- */

static inline float hsum8(const float *a) {
    /* hsum_float_8: (0+4,1+5,2+6,3+7) -> (0+4)+(2+6), (1+5)+(3+7) -> sum */
    const float r0 = a[0] + a[4], r1 = a[1] + a[5], r2 = a[2] + a[6], r3 = a[3] + a[7];
    return (r0 + r2) + (r1 + r3);
}

static float dot_q_scalar(int wt, const uint8_t *w, const uint8_t *a, int64_t nb) {
    float acc[8] = {0}, summs = 0.0f;
    const int wbs = block_size(wt), abs_ = block_size(act_type(wt));
    for (int64_t b = 0; b < nb; b++, w += wbs, a += abs_) {
        int8_t qw[QK];
        const int8_t *qa = (const int8_t *)(a + (wt == T_Q4_1 ? 4 : 2));
        float d;
        if (wt == T_Q8_0) {
            memcpy(qw, w + 2, QK);
            d = f16p(w) * f16p(a);
        } else {
            const uint8_t *qs = w + (wt == T_Q4_1 ? 4 : 2);
            const int off = wt == T_Q4_0 ? 8 : 0;
            for (int j = 0; j < 16; j++) { qw[j] = (int8_t)((qs[j] & 15) - off); qw[j + 16] = (int8_t)((qs[j] >> 4) - off); }
            d = f16p(w) * f16p(a);
            if (wt == T_Q4_1) summs = fmaf(f16p(w + 2), f16p(a + 2), summs);
        }
        for (int l = 0; l < 8; l++) {
            int s = 0;
            for (int k = 0; k < 4; k++) s += qw[4 * l + k] * qa[4 * l + k];
            acc[l] = fmaf(d, (float)s, acc[l]);
        }
    }
    return hsum8(acc) + summs;
}

static float dot_f32_scalar(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) for (int l = 0; l < 8; l++) acc[l] = fmaf(a[i + l], b[i + l], acc[l]);
    float s = hsum8(acc);
    for (; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

/* ---------- AVX2 ---------- */
#ifdef HAVE_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float f16c(const uint8_t *p) { uint16_t h; memcpy(&h, p, 2); return _cvtsh_ss(h); }

AVX2 static inline float hsum8_avx(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

AVX2 static inline __m256i nibbles32(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m256i b = _mm256_insertf128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

AVX2 static inline __m256 sum_us8_pairs(__m256i ax, __m256i sy) {
    const __m256i dot = _mm256_maddubs_epi16(ax, sy);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), dot));
}

AVX2 static inline __m256 sum_i8_pairs(__m256i x, __m256i y) {
    return sum_us8_pairs(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

AVX2 static float dot_q_avx2(int wt, const uint8_t *w, const uint8_t *a, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    if (wt == T_Q4_1) {
        for (int64_t b = 0; b < nb; b++, w += 20, a += 36) {
            summs = fmaf(f16c(w + 2), f16c(a + 2), summs);
            const __m256 d = _mm256_mul_ps(_mm256_set1_ps(f16c(w)), _mm256_set1_ps(f16c(a)));
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 4));
            acc = _mm256_fmadd_ps(d, sum_us8_pairs(nibbles32(w + 4), qy), acc);
        }
    } else if (wt == T_Q4_0) {
        for (int64_t b = 0; b < nb; b++, w += 18, a += 34) {
            const __m256 d = _mm256_set1_ps(f16c(w) * f16c(a));
            const __m256i qx = _mm256_sub_epi8(nibbles32(w + 2), _mm256_set1_epi8(8));
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 2));
            acc = _mm256_fmadd_ps(d, sum_i8_pairs(qx, qy), acc);
        }
    } else { /* Q8_0 */
        for (int64_t b = 0; b < nb; b++, w += 34, a += 34) {
            const __m256 d = _mm256_set1_ps(f16c(w) * f16c(a));
            const __m256i qx = _mm256_loadu_si256((const __m256i *)(w + 2));
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 2));
            acc = _mm256_fmadd_ps(d, sum_i8_pairs(qx, qy), acc);
        }
    }
    return hsum8_avx(acc) + summs;
}


/* four weight rows against one activation row: four independent fma chains (the latency of one chain
 * bounds a single-row loop), each chain identical to dot_q_avx2 on its row */
AVX2 static void dot4_q_avx2(int wt, const uint8_t *w, int64_t wrs, const uint8_t *a, int64_t nb, float *out) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    float summs[4] = {0, 0, 0, 0};
    if (wt == T_Q4_1) {
        for (int64_t b = 0; b < nb; b++, a += 36) {
            const float da = f16c(a), sa = f16c(a + 2);
            const __m256 dav = _mm256_set1_ps(da);
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 4));
            for (int r = 0; r < 4; r++) {
                const uint8_t *wb = w + r * wrs + b * 20;
                summs[r] = fmaf(f16c(wb + 2), sa, summs[r]);
                const __m256 d = _mm256_mul_ps(_mm256_set1_ps(f16c(wb)), dav);
                acc[r] = _mm256_fmadd_ps(d, sum_us8_pairs(nibbles32(wb + 4), qy), acc[r]);
            }
        }
    } else if (wt == T_Q4_0) {
        for (int64_t b = 0; b < nb; b++, a += 34) {
            const float da = f16c(a);
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 2));
            for (int r = 0; r < 4; r++) {
                const uint8_t *wb = w + r * wrs + b * 18;
                const __m256 d = _mm256_set1_ps(f16c(wb) * da);
                const __m256i qx = _mm256_sub_epi8(nibbles32(wb + 2), _mm256_set1_epi8(8));
                acc[r] = _mm256_fmadd_ps(d, sum_i8_pairs(qx, qy), acc[r]);
            }
        }
    } else {
        for (int64_t b = 0; b < nb; b++, a += 34) {
            const float da = f16c(a);
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 2));
            for (int r = 0; r < 4; r++) {
                const uint8_t *wb = w + r * wrs + b * 34;
                const __m256 d = _mm256_set1_ps(f16c(wb) * da);
                acc[r] = _mm256_fmadd_ps(d, sum_i8_pairs(_mm256_loadu_si256((const __m256i *)(wb + 2)), qy), acc[r]);
            }
        }
    }
    for (int r = 0; r < 4; r++) out[r] = hsum8_avx(acc[r]) + summs[r];
}

/* dot4_q_avx2 for T activation rows: the four weight rows are unpacked once (integer and f16->f32
 * conversions are exact, so every chain is still identical to dot_q_avx2) and reused for each row of x */
#define MAXNB 64
AVX2 static void dot4_q_multi_avx2(int wt, const uint8_t *w, int64_t wrs, const uint8_t *xq, int64_t ars, int64_t T,
                                   int64_t nb, float *y, int64_t ystride) {
    __m256i qx[4][MAXNB];
    float dw[4][MAXNB], mw[4][MAXNB];
    const int bs = block_size(wt), off = wt == T_Q4_1 ? 4 : 2;
    for (int r = 0; r < 4; r++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *wb = w + r * wrs + b * bs;
            dw[r][b] = f16c(wb);
            mw[r][b] = wt == T_Q4_1 ? f16c(wb + 2) : 0.0f;
            if (wt == T_Q8_0) qx[r][b] = _mm256_loadu_si256((const __m256i *)(wb + 2));
            else if (wt == T_Q4_0) qx[r][b] = _mm256_sub_epi8(nibbles32(wb + off), _mm256_set1_epi8(8));
            else qx[r][b] = nibbles32(wb + off);
        }
    for (int64_t t = 0; t < T; t++) {
        const uint8_t *a = xq + t * ars;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        float summs[4] = {0, 0, 0, 0};
        if (wt == T_Q4_1) {
            for (int64_t b = 0; b < nb; b++, a += 36) {
                const float da = f16c(a), sa = f16c(a + 2);
                const __m256 dav = _mm256_set1_ps(da);
                const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 4));
                for (int r = 0; r < 4; r++) {
                    summs[r] = fmaf(mw[r][b], sa, summs[r]);
                    acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(dw[r][b]), dav), sum_us8_pairs(qx[r][b], qy), acc[r]);
                }
            }
        } else {
            for (int64_t b = 0; b < nb; b++, a += 34) {
                const float da = f16c(a);
                const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 2));
                for (int r = 0; r < 4; r++)
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw[r][b] * da), sum_i8_pairs(qx[r][b], qy), acc[r]);
            }
        }
        for (int r = 0; r < 4; r++) y[t * ystride + r] = hsum8_avx(acc[r]) + summs[r];
    }
}

/* dot4_q_avx2 with AVX512-VNNI (256-bit vpdpbusd) for Q4_1 and Q8_0: the same four fma chains, bit for bit.
 * vpdpbusd sums the four u8*s8 products of each 32-bit lane exactly, as maddubs + madd(1) do (no 16-bit
 * saturation is possible: |q8| <= 127, nibbles <= 15). The four rows' f16 scales (and Q4_1 mins) are
 * converted in one vcvtph2ps; d_w*d_x is the same single multiply per lane, and each Q4_1 min sum is the
 * same fmaf chain held in its own vector lane. */
#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
static int use_vnni = 0;
static int vnni_supported(void);

VNNI static void dot4_q_vnni(int wt, const uint8_t *w, int64_t wrs, const uint8_t *a, int64_t nb, float *out) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    const __m256i i0 = _mm256_set1_epi32(0), i1 = _mm256_set1_epi32(1), i2 = _mm256_set1_epi32(2), i3 = _mm256_set1_epi32(3);
    if (wt == T_Q4_1) {
        const __m256i i4 = _mm256_set1_epi32(4), i6 = _mm256_set1_epi32(6);
        const __m256i m4 = _mm256_set1_epi8(0x0F), sh = _mm256_set_epi64x(4, 4, 0, 0);
        __m256 summs = _mm256_setzero_ps(); /* lanes 1,3,5,7: rows 0..3 */
        const uint8_t *w0 = w, *w1 = w + wrs, *w2 = w + 2 * wrs, *w3 = w + 3 * wrs;
        for (int64_t b = 0; b < nb; b++, a += 36, w0 += 20, w1 += 20, w2 += 20, w3 += 20) {
            uint32_t h0, h1, h2, h3, ha;
            memcpy(&h0, w0, 4); memcpy(&h1, w1, 4); memcpy(&h2, w2, 4); memcpy(&h3, w3, 4); memcpy(&ha, a, 4);
            const __m256 dm = _mm256_cvtph_ps(_mm_setr_epi32((int)h0, (int)h1, (int)h2, (int)h3)); /* d0 m0 d1 m1 .. */
            const __m256 dsa = _mm256_cvtph_ps(_mm_set1_epi32((int)ha)); /* da sa da sa .. */
            const __m256 da = _mm256_permutevar8x32_ps(dsa, i0), sa = _mm256_permutevar8x32_ps(dsa, i1);
            summs = _mm256_fmadd_ps(dm, sa, summs);
            const __m256 dd = _mm256_mul_ps(dm, da);
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 4));
            const __m256i n0 = _mm256_and_si256(_mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w0 + 4))), sh), m4);
            const __m256i n1 = _mm256_and_si256(_mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w1 + 4))), sh), m4);
            const __m256i n2 = _mm256_and_si256(_mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w2 + 4))), sh), m4);
            const __m256i n3 = _mm256_and_si256(_mm256_srlv_epi64(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w3 + 4))), sh), m4);
            acc0 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dd, i0), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), n0, qy)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dd, i2), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), n1, qy)), acc1);
            acc2 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dd, i4), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), n2, qy)), acc2);
            acc3 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dd, i6), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), n3, qy)), acc3);
        }
        float sm[8];
        _mm256_storeu_ps(sm, summs);
        out[0] = hsum8_avx(acc0) + sm[1]; out[1] = hsum8_avx(acc1) + sm[3];
        out[2] = hsum8_avx(acc2) + sm[5]; out[3] = hsum8_avx(acc3) + sm[7];
    } else { /* Q8_0 */
        const uint8_t *w0 = w, *w1 = w + wrs, *w2 = w + 2 * wrs, *w3 = w + 3 * wrs;
        for (int64_t b = 0; b < nb; b++, a += 34, w0 += 34, w1 += 34, w2 += 34, w3 += 34) {
            uint16_t h0, h1, h2, h3, ha;
            memcpy(&h0, w0, 2); memcpy(&h1, w1, 2); memcpy(&h2, w2, 2); memcpy(&h3, w3, 2); memcpy(&ha, a, 2);
            const __m128 d4 = _mm_cvtph_ps(_mm_setr_epi16((short)h0, (short)h1, (short)h2, (short)h3, 0, 0, 0, 0));
            const __m256 dd = _mm256_castps128_ps256(_mm_mul_ps(d4, _mm_cvtph_ps(_mm_set1_epi16((short)ha))));
            const __m256i qy = _mm256_loadu_si256((const __m256i *)(a + 2));
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)(w0 + 2)), x1 = _mm256_loadu_si256((const __m256i *)(w1 + 2));
            const __m256i x2 = _mm256_loadu_si256((const __m256i *)(w2 + 2)), x3 = _mm256_loadu_si256((const __m256i *)(w3 + 2));
            acc0 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dd, i0), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(x0), _mm256_sign_epi8(qy, x0))), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dd, i1), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(x1), _mm256_sign_epi8(qy, x1))), acc1);
            acc2 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dd, i2), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(x2), _mm256_sign_epi8(qy, x2))), acc2);
            acc3 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dd, i3), _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(x3), _mm256_sign_epi8(qy, x3))), acc3);
        }
        out[0] = hsum8_avx(acc0); out[1] = hsum8_avx(acc1); out[2] = hsum8_avx(acc2); out[3] = hsum8_avx(acc3);
    }
}

static inline void dot4_q(int wt, const uint8_t *w, int64_t wrs, const uint8_t *a, int64_t nb, float *out) {
    if (use_vnni && wt != T_Q4_0) dot4_q_vnni(wt, w, wrs, a, nb, out);
    else dot4_q_avx2(wt, w, wrs, a, nb, out);
}

/* quantize_act_row for Q8_0/Q8_1, 8 lanes at a time: max |x| is exact in any order, x * id is one rounded
 * multiply per lane, _mm256_round_ps(nearest) == nearbyintf, and the integer sum is exact */
AVX2 static void quantize_act_row_avx2(const float *x, int64_t cols, int at, uint8_t *out) {
    const int bs = block_size(at), hdr = at == T_Q8_1 ? 4 : 2;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < cols / QK; b++, x += QK, out += bs) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                  _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mx, 1), _mm256_castps256_ps128(mx));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.f, id = amax != 0.0f ? 127.f / amax : 0.0f;
        const __m256 mul = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        const __m256i s32 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        /* int32 -> int8 in element order (packs interleave 128-bit lanes; permute back) */
        const __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
        __m256i p8 = _mm256_packs_epi16(p16a, p16b);
        p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(out + hdr), p8);
        __m128i s4 = _mm_add_epi32(_mm256_extracti128_si256(s32, 1), _mm256_castsi256_si128(s32));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        const int sum = _mm_cvtsi128_si32(s4);
        const uint16_t dh = f32_to_f16(d);
        memcpy(out, &dh, 2);
        if (at == T_Q8_1) { const uint16_t sh = f32_to_f16(d * (float)sum); memcpy(out + 2, &sh, 2); }
    }
}

AVX2 static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = hsum8_avx(acc);
    for (; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

/* q (f32, rounded to f16) . k (f16), hd values */
AVX2 static float dot_f16_avx2(const float *q16, const uint16_t *k, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q16 + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i))), acc);
    float s = hsum8_avx(acc);
    for (; i < n; i++) s = fmaf(q16[i], f16f(k[i]), s);
    return s;
}

/* out += p * v (f16), n values */
AVX2 static void axpy_f16_avx2(float *out, float p, const uint16_t *v, int64_t n) {
    const __m256 pv = _mm256_set1_ps(p);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))), _mm256_loadu_ps(out + i)));
    for (; i < n; i++) out[i] = fmaf(p, f16f(v[i]), out[i]);
}
#endif

static void quantize_act_row(const float *x, int64_t cols, int at, uint8_t *out) {
#ifdef HAVE_X86
    if (use_avx2) { quantize_act_row_avx2(x, cols, at, out); return; }
#endif
    quantize_act_row_scalar(x, cols, at, out);
}

static inline float dot_q(int wt, const uint8_t *w, const uint8_t *a, int64_t nb) {
#ifdef HAVE_X86
    if (use_avx2) return dot_q_avx2(wt, w, a, nb);
#endif
    return dot_q_scalar(wt, w, a, nb);
}

static inline float dot_f32(const float *a, const float *b, int64_t n) {
#ifdef HAVE_X86
    if (use_avx2) return dot_f32_avx2(a, b, n);
#endif
    return dot_f32_scalar(a, b, n);
}

static inline float dot_f16(const float *q16, const uint16_t *k, int64_t n) {
#ifdef HAVE_X86
    if (use_avx2) return dot_f16_avx2(q16, k, n);
#endif
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) for (int l = 0; l < 8; l++) acc[l] = fmaf(q16[i + l], f16f(k[i + l]), acc[l]);
    float s = hsum8(acc);
    for (; i < n; i++) s = fmaf(q16[i], f16f(k[i]), s);
    return s;
}

static inline void axpy_f16(float *out, float p, const uint16_t *v, int64_t n) {
#ifdef HAVE_X86
    if (use_avx2) { axpy_f16_avx2(out, p, v, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) out[i] = fmaf(p, f16f(v[i]), out[i]);
}

/* ---------- matrices ---------- */

typedef struct { const uint8_t *data; int qtype; int64_t rows, cols; } qmat;

static int threads_for(int64_t work) {
#ifdef _OPENMP
    return work >= 32768 ? omp_get_max_threads() : 1;
#else
    (void)work; return 1;
#endif
}

/* Y (T, rows_total) from up to 3 matrices sharing input X (T, cols): outputs ys[m] (T, rows_m).
 * xq: X quantized to act_type (one row per t), or NULL for float weights. */
static void multi_matmul(const qmat *ms, int nm, float **ys, const float *x, const uint8_t *xq, int64_t T) {
    int64_t total = 0, starts[4];
    for (int m = 0; m < nm; m++) { starts[m] = total; total += ms[m].rows; }
    starts[nm] = total;
    const int64_t cols = ms[0].cols;
    const int nth = threads_for(total * cols * (T > 4 ? 4 : T));
    #pragma omp parallel num_threads(nth)
    {
        float *tmp = NULL;
        #pragma omp for schedule(static)
        for (int64_t g4 = 0; g4 < (total + 3) / 4; g4++) {
          for (int64_t r = g4 * 4; r < g4 * 4 + 4 && r < total; r++) {
            int m = 0;
            while (r >= starts[m + 1]) m++;
            const qmat *W = &ms[m];
            const int64_t i = r - starts[m];
            const uint8_t *wrow = W->data + i * row_size(W->qtype, cols);
#ifdef HAVE_X86
            if (xq && use_avx2 && r % 4 == 0 && r + 4 <= starts[m + 1] && r - starts[m] + 4 <= W->rows) {
                const int64_t ars = row_size(act_type(W->qtype), cols);
                float o4[4];
                if (T > 1 && cols / QK <= MAXNB) {
                    dot4_q_multi_avx2(W->qtype, wrow, row_size(W->qtype, cols), xq, ars, T, cols / QK, ys[m] + i, W->rows);
                    r += 3;
                    continue;
                }
                for (int64_t t = 0; t < T; t++) {
                    dot4_q(W->qtype, wrow, row_size(W->qtype, cols), xq + t * ars, cols / QK, o4);
                    for (int k = 0; k < 4; k++) ys[m][t * W->rows + i + k] = o4[k];
                }
                r += 3;
                continue;
            }
#endif
            if (xq) {
                const int64_t ars = row_size(act_type(W->qtype), cols);
                for (int64_t t = 0; t < T; t++)
                    ys[m][t * W->rows + i] = dot_q(W->qtype, wrow, xq + t * ars, cols / QK);
            } else {
                if (!tmp) tmp = malloc(cols * sizeof(float));
                dequant_row(W->qtype, wrow, tmp, cols);
                for (int64_t t = 0; t < T; t++) ys[m][t * W->rows + i] = dot_f32(tmp, x + t * cols, cols);
            }
          }
        }
        free(tmp);
    }
}

static int is_quant(int t) { return t == T_Q4_0 || t == T_Q4_1 || t == T_Q8_0; }

/* quantized-activation matmul where possible (llama.cpp path), float otherwise */
static void matmul_auto(const qmat *ms, int nm, float **ys, const float *x, int64_t T, uint8_t *scratch) {
    if (!is_quant(ms[0].qtype)) { multi_matmul(ms, nm, ys, x, NULL, T); return; }
    const int at = act_type(ms[0].qtype);
    const int64_t ars = row_size(at, ms[0].cols);
    for (int64_t t = 0; t < T; t++) quantize_act_row(x + t * ms[0].cols, ms[0].cols, at, scratch + t * ars);
    multi_matmul(ms, nm, ys, x, scratch, T);
}

/* ---------- elementwise / norms / rope / attention ---------- */

static void rms_norm_row(const float *x, const float *w, float *y, int64_t n, float eps) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)(x[i] * x[i]);
    const float scale = 1.0f / sqrtf((float)(s / n) + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

static void layer_norm_row(const float *x, const float *w, const float *b, float *y, int64_t n, float eps) {
    double mu = 0.0, var = 0.0;
    for (int64_t i = 0; i < n; i++) mu += x[i];
    mu /= n;
    for (int64_t i = 0; i < n; i++) { const double d = x[i] - mu; var += d * d; }
    const double inv = 1.0 / sqrt(var / n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (float)((x[i] - mu) * inv) * w[i] + b[i];
}

/* cos/sin cache for one position, as ggml_rope_cache_init: theta *= base^(-2/dims) */
static void rope_cache(int64_t pos, int64_t dims, float base, float *cs) {
    const float scale = powf(base, -2.0f / (float)dims);
    float theta = (float)pos;
    for (int64_t i = 0; i < dims / 2; i++) { cs[2 * i] = cosf(theta); cs[2 * i + 1] = sinf(theta); theta *= scale; }
}

static void rope_row(float *x, int64_t nh, int64_t hd, const float *cs, int neox) {
    for (int64_t h = 0; h < nh; h++, x += hd)
        for (int64_t i = 0; i < hd / 2; i++) {
            const int64_t a = neox ? i : 2 * i, b = neox ? i + hd / 2 : 2 * i + 1;
            const float c = cs[2 * i], s = cs[2 * i + 1], x0 = x[a], x1 = x[b];
            x[a] = fmaf(x0, c, -(x1 * s)); /* as ggml's rotate_pairs compiled with fp-contract */
            x[b] = fmaf(x0, s, x1 * c);
        }
}

static void softmax_row(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

static inline float silu1(float x) { return x / (1.0f + expf(-x)); }
static inline float gelu_tanh1(float x) {
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
static inline float gelu_erf1(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

/* one query position, one head: q (hd) f32, k/v cache rows with stride (Hkv*hd) f16 -> out (hd), probs (n) */
static void attend_head(const float *q, const uint16_t *kc, const uint16_t *vc, int64_t stride, int64_t n,
                        int64_t hd, float *out, float *probs) {
    float q16[256];
    for (int64_t i = 0; i < hd; i++) q16[i] = f16f(f32_to_f16(q[i]));
    const float scale = 1.0f / sqrtf((float)hd);
    for (int64_t j = 0; j < n; j++) probs[j] = dot_f16(q16, kc + j * stride, hd) * scale;
    softmax_row(probs, n);
    for (int64_t i = 0; i < hd; i++) out[i] = 0.0f;
    for (int64_t j = 0; j < n; j++) axpy_f16(out, f16f(f32_to_f16(probs[j])), vc + j * stride, hd);
}

/* ---------- llama.cpp CPU numerics, emulated operation for operation ----------
 * ggml built for this CPU (AVX512) computes exp with ggml_v_expf (ARM optimized-routines polynomial),
 * f16 dot products with 4x16 fma lanes + a halving tree (ggml_vec_dot_f16), and for batches of >= 2
 * tokens f16 matmuls with tinyBLAS (16 fma lanes + the same tree). Every lane is an independent fma
 * chain, so scalar code reproduces the bits. */

static inline float ggml_expf(float x) {
    const float r = 0x1.8p23f, z = fmaf(x, 0x1.715476p+0f, r), n = z - r;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    if (fabsf(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
                         fmaf(0x1.ffffecp-1f, b, 1.0f));
    return ldexpf(j, (int)n);
}

static inline float ggml_silu(float x) { return x / (1.0f + ggml_expf(0.0f - x)); }

static inline float halving_sum(float *a, int n) { /* n a power of two */
    for (int h = n / 2; h >= 1; h /= 2) for (int i = 0; i < h; i++) a[i] += a[i + h];
    return a[0];
}

/* f16 x (n valid values, zero beyond) . float y (f16-exact values), summed as ggml does:
 * lanes 64 = ggml_vec_dot_f16 (AVX512 build: 4 x 16 fma lanes over steps of 64, halving tree, positions
 * past n_kv & ~63 added in double); lanes 16 = tinyBLAS (16 fma lanes over steps of 16, halving tree). */
static float dot_emul_scalar(const uint16_t *x, const float *y, int64_t n, int64_t n_kv, int lanes) {
    float acc[64] = {0};
    const int64_t np = lanes == 64 ? (n_kv & ~(int64_t)63) : n_kv, lim = n < np ? n : np;
    for (int64_t i = 0; i < lim; i += lanes)
        for (int c = 0; c < lanes && i + c < lim; c++) acc[c] = fmaf(f16f(x[i + c]), y[i + c], acc[c]);
    double s = halving_sum(acc, lanes);
    for (int64_t i = np; i < n; i++) s += (double)(f16f(x[i]) * y[i]);
    return (float)s;
}

/* ggml_vec_soft_max_f32 over n_kv entries of which the first n are unmasked (the rest are -inf -> 0) */
static void ggml_softmax_scalar(float *x, int64_t n, int64_t n_kv) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    double sum = 0.0;
    int64_t i = 0;
    for (; i + 15 < n_kv && i < n; i += 16) {
        float e[16];
        for (int c = 0; c < 16; c++) e[c] = i + c < n ? ggml_expf(x[i + c] - mx) : 0.0f;
        for (int c = 0; c < 16 && i + c < n; c++) x[i + c] = e[c];
        sum += (double)halving_sum(e, 16);
    }
    for (; i < n; i++) { x[i] = expf(x[i] - mx); sum += (double)x[i]; }
    const float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < n; j++) x[j] *= inv;
}

#ifdef HAVE_X86
AVX2 static float dot_emul_avx2(const uint16_t *x, const float *y, int64_t n, int64_t n_kv, int lanes) {
    const int nr = lanes / 8;
    __m256 acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
    const int64_t np = lanes == 64 ? (n_kv & ~(int64_t)63) : n_kv, lim = n < np ? n : np;
    const int64_t full = lim / lanes * lanes;
    for (int64_t i = 0; i < full; i += lanes)
        for (int r = 0; r < nr; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8 * r))),
                                     _mm256_loadu_ps(y + i + 8 * r), acc[r]);
    if (full < lim) { /* last partial step: zeros past n, as llama.cpp's zero probabilities */
        uint16_t xt[64] = {0};
        float yt[64] = {0};
        memcpy(xt, x + full, (lim - full) * 2);
        memcpy(yt, y + full, (lim - full) * 4);
        for (int r = 0; r < nr; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(xt + 8 * r))), _mm256_loadu_ps(yt + 8 * r), acc[r]);
    }
    for (int h = nr / 2; h >= 1; h /= 2)
        for (int r = 0; r < h; r++) acc[r] = _mm256_add_ps(acc[r], acc[r + h]);
    double s = hsum8_avx(acc[0]); /* the last three halvings, same tree */
    for (int64_t i = np; i < n; i++) s += (double)(f16f(x[i]) * y[i]);
    return (float)s;
}

/* ggml_v_expf, lane by lane; lanes whose exponent leaves [-126, 126] are redone by the scalar copy */
AVX2 static __m256 ggml_expf8(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    const __m256 absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const int special = _mm256_movemask_ps(_mm256_cmp_ps(absn, _mm256_set1_ps(126.0f), _CMP_NLE_UQ));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 res = _mm256_mul_ps(j, _mm256_castsi256_ps(e));
    if (special) {
        float xs[8], rs[8];
        _mm256_storeu_ps(xs, x);
        _mm256_storeu_ps(rs, res);
        for (int l = 0; l < 8; l++) if (special >> l & 1) rs[l] = ggml_expf(xs[l]);
        res = _mm256_loadu_ps(rs);
    }
    return res;
}

/* scores[j] = (k_j . q16) * scale for j < n, hd == 64, q held in registers; lanes 64 = ggml_vec_dot_f16
 * (products, then the halving tree), lanes 16 = tinyBLAS (16-lane fma chain over 4 steps, then the tree) */
AVX2 static void kq_scores64_avx2(const uint16_t *k, int64_t kstride, const float *q16, int64_t n, int lanes,
                                  float scale, float *scores) {
    __m256 q[8];
    for (int r = 0; r < 8; r++) q[r] = _mm256_loadu_ps(q16 + 8 * r);
    for (int64_t j = 0; j < n; j++) {
        const uint16_t *kj = k + j * kstride;
        __m256 x[8];
        for (int r = 0; r < 8; r++) x[r] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kj + 8 * r)));
        __m256 a0, a1;
        if (lanes == 64) {
            __m256 p[8];
            for (int r = 0; r < 8; r++) p[r] = _mm256_mul_ps(x[r], q[r]);
            for (int r = 0; r < 4; r++) p[r] = _mm256_add_ps(p[r], p[r + 4]);
            a0 = _mm256_add_ps(p[0], p[2]);
            a1 = _mm256_add_ps(p[1], p[3]);
        } else {
            a0 = _mm256_mul_ps(x[0], q[0]);
            a1 = _mm256_mul_ps(x[1], q[1]);
            for (int st = 1; st < 4; st++) {
                a0 = _mm256_fmadd_ps(x[2 * st], q[2 * st], a0);
                a1 = _mm256_fmadd_ps(x[2 * st + 1], q[2 * st + 1], a1);
            }
        }
        scores[j] = hsum8_avx(_mm256_add_ps(a0, a1)) * scale;
    }
}

AVX2 static void ggml_softmax_avx2(float *x, int64_t n, int64_t n_kv) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    double sum = 0.0;
    int64_t i = 0;
    const __m256 m = _mm256_set1_ps(mx);
    for (; i + 15 < n_kv && i < n; i += 16) {
        float buf[16];
        for (int c = 0; c < 16; c++) buf[c] = i + c < n ? x[i + c] : -INFINITY;
        const __m256 e0 = ggml_expf8(_mm256_sub_ps(_mm256_loadu_ps(buf), m));
        const __m256 e1 = ggml_expf8(_mm256_sub_ps(_mm256_loadu_ps(buf + 8), m));
        _mm256_storeu_ps(buf, e0);
        _mm256_storeu_ps(buf + 8, e1);
        for (int c = 0; c < 16 && i + c < n; c++) x[i + c] = buf[c];
        sum += (double)hsum8_avx(_mm256_add_ps(e0, e1));
    }
    for (; i < n; i++) { x[i] = expf(x[i] - mx); sum += (double)x[i]; }
    const __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), inv));
    for (; j < n; j++) x[j] *= (float)(1.0 / sum);
}

/* dst[j] = f32 value of f16(src[j]) for j < n & ~7: vcvtps2ph with round-to-nearest-even is f32_to_f16
 * for every non-NaN input (probabilities are never NaN); returns how many were done */
AVX2 static int64_t round_f16_avx2(const float *src, float *dst, int64_t n) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    return j;
}

/* y = silu(g) * u as ggml_vec_swiglu_f32 (x / (1 + exp(0 - x)) with ggml_v_expf) */
AVX2 static void ggml_swiglu_avx2(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = ggml_expf8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = ggml_silu(g[i]) * u[i];
}
#endif

static inline float dot_emul(const uint16_t *x, const float *y, int64_t n, int64_t n_kv, int lanes) {
#ifdef HAVE_X86
    if (use_avx2) return dot_emul_avx2(x, y, n, n_kv, lanes);
#endif
    return dot_emul_scalar(x, y, n, n_kv, lanes);
}

static inline void ggml_softmax(float *x, int64_t n, int64_t n_kv) {
#ifdef HAVE_X86
    if (use_avx2) { ggml_softmax_avx2(x, n, n_kv); return; }
#endif
    ggml_softmax_scalar(x, n, n_kv);
}

static void ggml_swiglu(float *g, const float *u, int64_t n) {
#ifdef HAVE_X86
    if (use_avx2) { ggml_swiglu_avx2(g, u, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) g[i] = ggml_silu(g[i]) * u[i];
}

/* One head, one query, llama.cpp semantics. q: (hd) f32; k rows f16 with stride; vt: (hd, ctx) f16
 * (V transposed, as llama.cpp stores it); n valid positions, n_kv the padded row length; batched: the
 * query came in a batch of >= 2 tokens (tinyBLAS path). Writes out (hd) and probs (n); work: n floats. */
static void attend_head_ggml(const float *q, const uint16_t *k, int64_t kstride, const uint16_t *vt, int64_t ctx,
                             int64_t n, int64_t n_kv, int64_t hd, int batched, float *out, float *probs, float *work) {
    float q16[256];
    for (int64_t i = 0; i < hd; i++) q16[i] = f16f(f32_to_f16(q[i]));
    const float scale = 1.0f / sqrtf((float)hd);
    const int kq_lanes = batched && hd % 16 == 0 ? 16 : 64;
#ifdef HAVE_X86
    if (use_avx2 && hd == 64) kq_scores64_avx2(k, kstride, q16, n, kq_lanes, scale, probs);
    else
#endif
    for (int64_t j = 0; j < n; j++) probs[j] = dot_emul(k + j * kstride, q16, hd, hd, kq_lanes) * scale;
    ggml_softmax(probs, n, n_kv);
    int64_t j0 = 0;
#ifdef HAVE_X86
    if (use_avx2) j0 = round_f16_avx2(probs, work, n);
#endif
    for (int64_t j = j0; j < n; j++) work[j] = f16f(f32_to_f16(probs[j]));
    const int kqv_lanes = batched && n_kv % 16 == 0 ? 16 : 64;
    for (int64_t d = 0; d < hd; d++) out[d] = dot_emul(vt + d * ctx, work, n, n_kv, kqv_lanes);
}

/* ---------- Python helpers ---------- */

static int get_buf(PyObject *o, Py_buffer *b, int writable, Py_ssize_t need, const char *what) {
    if (PyObject_GetBuffer(o, b, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (need >= 0 && b->len != need) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what, need, b->len);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static int check_qtype(int t, int64_t cols) {
    if (block_size(t) < 0 || t == T_Q8_1) { PyErr_Format(PyExc_ValueError, "unsupported qtype %d", t); return -1; }
    if (cols <= 0 || cols % block_values(t)) { PyErr_Format(PyExc_ValueError, "cols %lld not a multiple of the block", (long long)cols); return -1; }
    return 0;
}

/* dequantize(raw, qtype, rows, cols, out_f32) */
static PyObject *py_dequantize(PyObject *self, PyObject *args) {
    PyObject *ro, *oo; int qt; long long rows, cols;
    if (!PyArg_ParseTuple(args, "OiLLO", &ro, &qt, &rows, &cols, &oo)) return NULL;
    if (check_qtype(qt, cols) < 0) return NULL;
    Py_buffer r, o;
    if (get_buf(ro, &r, 0, rows * row_size(qt, cols), "raw") < 0) return NULL;
    if (get_buf(oo, &o, 1, rows * cols * 4, "out") < 0) { PyBuffer_Release(&r); return NULL; }
    const int64_t rs = row_size(qt, cols);
    Py_BEGIN_ALLOW_THREADS
    #pragma omp parallel for schedule(static) num_threads(threads_for(rows * cols))
    for (long long i = 0; i < rows; i++) dequant_row(qt, (const uint8_t *)r.buf + i * rs, (float *)o.buf + i * cols, cols);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&r); PyBuffer_Release(&o);
    Py_RETURN_NONE;
}

/* quantize_act(x_f32 (T, cols), act_qtype (8|9), T, cols, out) */
static PyObject *py_quantize_act(PyObject *self, PyObject *args) {
    PyObject *xo, *oo; int at; long long T, cols;
    if (!PyArg_ParseTuple(args, "OiLLO", &xo, &at, &T, &cols, &oo)) return NULL;
    if ((at != T_Q8_0 && at != T_Q8_1) || cols % QK) { PyErr_SetString(PyExc_ValueError, "act qtype must be Q8_0/Q8_1 and cols % 32 == 0"); return NULL; }
    Py_buffer x, o;
    if (get_buf(xo, &x, 0, T * cols * 4, "x") < 0) return NULL;
    if (get_buf(oo, &o, 1, T * row_size(at, cols), "out") < 0) { PyBuffer_Release(&x); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    for (long long t = 0; t < T; t++) quantize_act_row((const float *)x.buf + t * cols, cols, at, (uint8_t *)o.buf + t * row_size(at, cols));
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x); PyBuffer_Release(&o);
    Py_RETURN_NONE;
}

/* matmul(raw, qtype, rows, cols, x (T, cols) f32, T, out (T, rows) f32, quantized_act: bool) */
static PyObject *py_matmul(PyObject *self, PyObject *args) {
    PyObject *ro, *xo, *oo; int qt, qact; long long rows, cols, T;
    if (!PyArg_ParseTuple(args, "OiLLOLOp", &ro, &qt, &rows, &cols, &xo, &T, &oo, &qact)) return NULL;
    if (check_qtype(qt, cols) < 0) return NULL;
    Py_buffer r, x, o;
    if (get_buf(ro, &r, 0, rows * row_size(qt, cols), "raw") < 0) return NULL;
    if (get_buf(xo, &x, 0, T * cols * 4, "x") < 0) { PyBuffer_Release(&r); return NULL; }
    if (get_buf(oo, &o, 1, T * rows * 4, "out") < 0) { PyBuffer_Release(&r); PyBuffer_Release(&x); return NULL; }
    qmat W = {(const uint8_t *)r.buf, qt, rows, cols};
    float *ys[1] = {(float *)o.buf};
    int fail = 0;
    Py_BEGIN_ALLOW_THREADS
    if (qact && is_quant(qt)) {
        uint8_t *scratch = malloc((size_t)(T * row_size(T_Q8_1, cols)) + 1);
        if (scratch) { matmul_auto(&W, 1, ys, (const float *)x.buf, T, scratch); free(scratch); } else fail = 1;
    } else {
        multi_matmul(&W, 1, ys, (const float *)x.buf, NULL, T);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&r); PyBuffer_Release(&x); PyBuffer_Release(&o);
    if (fail) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* rows-wise ops on (N, D) f32: op 0 rms_norm(w, eps), 1 layer_norm(w, b, eps), 2 softmax, 3 silu,
 * 4 gelu_erf, 5 gelu_tanh, 6 swiglu(gate=x, up=w) -- out may alias x */
static PyObject *py_rowwise(PyObject *self, PyObject *args) {
    int op; PyObject *xo, *wo, *bo, *oo; long long N, D; double eps;
    if (!PyArg_ParseTuple(args, "iOOOLLdO", &op, &xo, &wo, &bo, &N, &D, &eps, &oo)) return NULL;
    Py_buffer x, w = {0}, b = {0}, o;
    if (get_buf(xo, &x, 0, N * D * 4, "x") < 0) return NULL;
    const int need_w = op == 0 || op == 1, need_b = op == 1;
    if (need_w && get_buf(wo, &w, 0, D * 4, "weight") < 0) { PyBuffer_Release(&x); return NULL; }
    if (op == 6 && get_buf(wo, &w, 0, N * D * 4, "up") < 0) { PyBuffer_Release(&x); return NULL; }
    if (need_b && get_buf(bo, &b, 0, D * 4, "bias") < 0) { PyBuffer_Release(&x); PyBuffer_Release(&w); return NULL; }
    if (get_buf(oo, &o, 1, N * D * 4, "out") < 0) {
        PyBuffer_Release(&x); if (w.obj) PyBuffer_Release(&w); if (b.obj) PyBuffer_Release(&b); return NULL;
    }
    const float *xp = x.buf, *wp = w.buf, *bp = b.buf; float *op_ = o.buf;
    Py_BEGIN_ALLOW_THREADS
    #pragma omp parallel for schedule(static) num_threads(threads_for(N * D * 8))
    for (long long n = 0; n < N; n++) {
        const float *xr = xp + n * D; float *yr = op_ + n * D;
        switch (op) {
        case 0: rms_norm_row(xr, wp, yr, D, (float)eps); break;
        case 1: layer_norm_row(xr, wp, bp, yr, D, (float)eps); break;
        case 2: if (yr != xr) memcpy(yr, xr, D * 4); softmax_row(yr, D); break;
        case 3: for (long long i = 0; i < D; i++) yr[i] = silu1(xr[i]); break;
        case 4: for (long long i = 0; i < D; i++) yr[i] = gelu_erf1(xr[i]); break;
        case 5: for (long long i = 0; i < D; i++) yr[i] = gelu_tanh1(xr[i]); break;
        case 6: for (long long i = 0; i < D; i++) yr[i] = silu1(xr[i]) * wp[n * D + i]; break;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x); if (w.obj) PyBuffer_Release(&w); if (b.obj) PyBuffer_Release(&b); PyBuffer_Release(&o);
    Py_RETURN_NONE;
}

/* rope(x (T, H, hd) f32 in place, pos (T,) int64, T, H, hd, base, neox) */
static PyObject *py_rope(PyObject *self, PyObject *args) {
    PyObject *xo, *po; long long T, H, hd; double base; int neox;
    if (!PyArg_ParseTuple(args, "OOLLLdp", &xo, &po, &T, &H, &hd, &base, &neox)) return NULL;
    if (hd % 2 || hd > 1024) { PyErr_SetString(PyExc_ValueError, "head dim must be even and <= 1024"); return NULL; }
    Py_buffer x, p;
    if (get_buf(xo, &x, 1, T * H * hd * 4, "x") < 0) return NULL;
    if (get_buf(po, &p, 0, T * 8, "pos") < 0) { PyBuffer_Release(&x); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    float cs[1024];
    for (long long t = 0; t < T; t++) {
        rope_cache(((const int64_t *)p.buf)[t], hd, (float)base, cs);
        rope_row((float *)x.buf + t * H * hd, H, hd, cs, neox);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x); PyBuffer_Release(&p);
    Py_RETURN_NONE;
}

/* attention_step(q (H, hd) f32, k_cache, v_cache (Tmax, Hkv, hd) f16, H, Hkv, hd, Tmax, n_ctx, out (H, hd), probs (H, n_ctx)) */
static PyObject *py_attention_step(PyObject *self, PyObject *args) {
    PyObject *qo, *ko, *vo, *oo, *po; long long H, Hkv, hd, Tmax, n;
    if (!PyArg_ParseTuple(args, "OOOLLLLLOO", &qo, &ko, &vo, &H, &Hkv, &hd, &Tmax, &n, &oo, &po)) return NULL;
    if (hd > 256 || Hkv <= 0 || H % Hkv || n < 1 || n > Tmax) { PyErr_SetString(PyExc_ValueError, "bad attention shape"); return NULL; }
    Py_buffer q, k, v, o, p;
    if (get_buf(qo, &q, 0, H * hd * 4, "q") < 0) return NULL;
    if (get_buf(ko, &k, 0, Tmax * Hkv * hd * 2, "k_cache") < 0) { PyBuffer_Release(&q); return NULL; }
    if (get_buf(vo, &v, 0, Tmax * Hkv * hd * 2, "v_cache") < 0) { PyBuffer_Release(&q); PyBuffer_Release(&k); return NULL; }
    if (get_buf(oo, &o, 1, H * hd * 4, "out") < 0) { PyBuffer_Release(&q); PyBuffer_Release(&k); PyBuffer_Release(&v); return NULL; }
    if (get_buf(po, &p, 1, H * n * 4, "probs") < 0) {
        PyBuffer_Release(&q); PyBuffer_Release(&k); PyBuffer_Release(&v); PyBuffer_Release(&o); return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    const int64_t g = H / Hkv;
    for (long long h = 0; h < H; h++)
        attend_head((const float *)q.buf + h * hd, (const uint16_t *)k.buf + (h / g) * hd, (const uint16_t *)v.buf + (h / g) * hd,
                    Hkv * hd, n, hd, (float *)o.buf + h * hd, (float *)p.buf + h * n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&q); PyBuffer_Release(&k); PyBuffer_Release(&v); PyBuffer_Release(&o); PyBuffer_Release(&p);
    Py_RETURN_NONE;
}

/* ---------- whole llama stack ---------- */

enum { W_NORM, W_Q, W_K, W_V, W_O, W_FNORM, W_GATE, W_UP, W_DOWN, W_PER_LAYER };

typedef struct {
    int64_t n_layer, dim, ffn, H, Hkv, hd, vocab, ctx, kv_pad;
    float eps, rope_base;
    qmat embd, output;
    const float *out_norm;
    qmat *layers; /* n_layer * W_PER_LAYER; norms as F32 qmats */
    Py_buffer *bufs;
    int nbufs;
} llama_model;

static void model_free(PyObject *cap) {
    llama_model *m = PyCapsule_GetPointer(cap, "hartonomous.llama");
    if (!m) return;
    for (int i = 0; i < m->nbufs; i++) PyBuffer_Release(&m->bufs[i]);
    free(m->bufs); free(m->layers); free(m);
}

static int take_weight(llama_model *m, PyObject *item, qmat *dst, int64_t rows, int64_t cols, const char *what) {
    PyObject *bo; int qt;
    if (!PyArg_ParseTuple(item, "Oi", &bo, &qt)) return -1;
    if (check_qtype(qt, cols) < 0) return -1;
    Py_buffer *b = &m->bufs[m->nbufs];
    if (get_buf(bo, b, 0, rows * row_size(qt, cols), what) < 0) return -1;
    m->nbufs++;
    *dst = (qmat){(const uint8_t *)b->buf, qt, rows, cols};
    return 0;
}

/* llama_new((n_layer, dim, ffn, H, Hkv, hd, vocab, ctx, kv_pad, eps, rope_base), [(buf, qtype), ...]) -> capsule
 * kv_pad: attention rows are padded to a multiple of this (llama.cpp's KV-cache padding; it decides
 * which summation path llama.cpp takes, so it matters for bit-exact agreement only).
 * weights: token_embd, output, output_norm, then per layer: attn_norm, q, k, v, o, ffn_norm, gate, up, down */
static PyObject *py_llama_new(PyObject *self, PyObject *args) {
    PyObject *ws; llama_model cfg = {0};
    double eps, base;
    if (!PyArg_ParseTuple(args, "(LLLLLLLLLdd)O!", &cfg.n_layer, &cfg.dim, &cfg.ffn, &cfg.H, &cfg.Hkv, &cfg.hd,
                          &cfg.vocab, &cfg.ctx, &cfg.kv_pad, &eps, &base, &PyList_Type, &ws)) return NULL;
    if (cfg.hd > 256 || cfg.hd % 2 || cfg.Hkv < 1 || cfg.H % cfg.Hkv || cfg.H * cfg.hd != cfg.dim || cfg.kv_pad < 1 || cfg.ctx < 1) {
        PyErr_SetString(PyExc_ValueError, "inconsistent llama config"); return NULL;
    }
    const Py_ssize_t need = 3 + cfg.n_layer * W_PER_LAYER;
    if (PyList_GET_SIZE(ws) != need) { PyErr_Format(PyExc_ValueError, "expected %zd weights", need); return NULL; }
    llama_model *m = calloc(1, sizeof *m);
    *m = cfg; m->eps = (float)eps; m->rope_base = (float)base;
    m->layers = calloc(cfg.n_layer * W_PER_LAYER, sizeof(qmat));
    m->bufs = calloc(need, sizeof(Py_buffer));
    PyObject *cap = PyCapsule_New(m, "hartonomous.llama", model_free);
    if (!cap) { free(m->layers); free(m->bufs); free(m); return NULL; }
    qmat on;
    const int64_t D = cfg.dim, KV = cfg.Hkv * cfg.hd, F = cfg.ffn;
    if (take_weight(m, PyList_GET_ITEM(ws, 0), &m->embd, cfg.vocab, D, "token_embd") < 0 ||
        take_weight(m, PyList_GET_ITEM(ws, 1), &m->output, cfg.vocab, D, "output") < 0 ||
        take_weight(m, PyList_GET_ITEM(ws, 2), &on, 1, D, "output_norm") < 0) { Py_DECREF(cap); return NULL; }
    if (on.qtype != T_F32) { PyErr_SetString(PyExc_ValueError, "norms must be F32"); Py_DECREF(cap); return NULL; }
    m->out_norm = (const float *)on.data;
    const int64_t shapes[W_PER_LAYER][2] = {{1, D}, {D, D}, {KV, D}, {KV, D}, {D, D}, {1, D}, {F, D}, {F, D}, {D, F}};
    for (int64_t l = 0; l < cfg.n_layer; l++)
        for (int j = 0; j < W_PER_LAYER; j++) {
            qmat *dst = &m->layers[l * W_PER_LAYER + j];
            if (take_weight(m, PyList_GET_ITEM(ws, 3 + l * W_PER_LAYER + j), dst, shapes[j][0], shapes[j][1], "layer weight") < 0) {
                Py_DECREF(cap); return NULL;
            }
            if ((j == W_NORM || j == W_FNORM) && dst->qtype != T_F32) {
                PyErr_SetString(PyExc_ValueError, "norms must be F32"); Py_DECREF(cap); return NULL;
            }
        }
    return cap;
}

typedef struct {
    float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up, *probs, *work; uint8_t *xq;
    int64_t n_kv;
} scratch_t;

/* Run T tokens at positions pos0..pos0+T-1 through the stack, updating the caches.
 * h: (T, D) embeddings in, final hidden states (pre-norm) out. attn_sel: per layer, where to write the
 * last position's probs (H, n_ctx) or NULL. */
static void llama_run(const llama_model *m, float *h, int64_t T, int64_t pos0, uint16_t *kc, uint16_t *vc,
                      float **attn_sel, scratch_t *s) {
    const int64_t D = m->dim, H = m->H, Hkv = m->Hkv, hd = m->hd, KV = Hkv * hd, F = m->ffn, g = H / Hkv;
    const int64_t n_end = pos0 + T;
    float cs[512];
    for (int64_t l = 0; l < m->n_layer; l++) {
        const qmat *W = &m->layers[l * W_PER_LAYER];
        uint16_t *kl = kc + l * m->ctx * KV, *vl = vc + l * m->ctx * KV;
        for (int64_t t = 0; t < T; t++) rms_norm_row(h + t * D, (const float *)W[W_NORM].data, s->xn + t * D, D, m->eps);
        float *qkv[3] = {s->q, s->k, s->v};
        matmul_auto(&W[W_Q], 3, qkv, s->xn, T, s->xq);
        for (int64_t t = 0; t < T; t++) {
            rope_cache(pos0 + t, hd, m->rope_base, cs);
            rope_row(s->q + t * D, H, hd, cs, 0);
            rope_row(s->k + t * KV, Hkv, hd, cs, 0);
            for (int64_t i = 0; i < KV; i++) {
                kl[(pos0 + t) * KV + i] = f32_to_f16(s->k[t * KV + i]);
                vl[i * m->ctx + pos0 + t] = f32_to_f16(s->v[t * KV + i]); /* V transposed: (Hkv*hd, ctx) */
            }
        }
        const int nth = threads_for(T * H * n_end * hd * 4);
        #pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
        for (int64_t th = 0; th < T * H; th++) {
            const int64_t t = th / H, hh = th % H, n = pos0 + t + 1;
            float *pr = s->probs + th * n_end;
#ifdef _OPENMP
            float *work = s->work + (int64_t)omp_get_thread_num() * 2 * s->n_kv;
#else
            float *work = s->work;
#endif
            attend_head_ggml(s->q + t * D + hh * hd, kl + (hh / g) * hd, KV, vl + (hh / g) * hd * m->ctx, m->ctx,
                             n, s->n_kv, hd, T > 1, s->att + t * D + hh * hd, pr, work);
            if (attn_sel && attn_sel[l] && t == T - 1) memcpy(attn_sel[l] + hh * n, pr, n * sizeof(float));
        }
        float *o[1] = {s->tmp};
        matmul_auto(&W[W_O], 1, o, s->att, T, s->xq);
        for (int64_t i = 0; i < T * D; i++) h[i] += s->tmp[i];
        for (int64_t t = 0; t < T; t++) rms_norm_row(h + t * D, (const float *)W[W_FNORM].data, s->xn + t * D, D, m->eps);
        float *gu[2] = {s->gate, s->up};
        matmul_auto(&W[W_GATE], 2, gu, s->xn, T, s->xq);
        ggml_swiglu(s->gate, s->up, T * F);
        matmul_auto(&W[W_DOWN], 1, o, s->gate, T, s->xq);
        for (int64_t i = 0; i < T * D; i++) h[i] += s->tmp[i];
    }
}

/* ---------- one-token decode: one OpenMP region for the whole token ----------
 * llama_run forks a thread team per matmul and does norms, activation quantization, RoPE and SwiGLU on
 * one thread in between. For T == 1 that overhead, not bandwidth, dominates the small matrices, so here
 * a single parallel region runs all 30 layers and the output projection with five barriers per layer:
 *   each thread keeps a private copy of the residual stream h and computes the norm and the activation
 *   quantization itself (identical bits on every thread, so no barrier is needed for them);
 *   the matrix rows are split statically (multiples of 8 rows; K/V by whole heads, so the thread that
 *   computes a head's k/v also ropes and stores it in the cache before the barrier);
 *   SwiGLU is applied by the thread that computed those gate/up rows.
 * Every output row is the same dot product as in llama_run (dot4_q_avx2 == dot_q per row), so the
 * results are bit-identical to the batched path. */

static inline void split_range(int64_t n, int64_t align, int nth, int tid, int64_t *a, int64_t *b) {
    const int64_t units = (n + align - 1) / align;
    const int64_t u0 = units * tid / nth, u1 = units * (tid + 1) / nth;
    *a = u0 * align < n ? u0 * align : n;
    *b = u1 * align < n ? u1 * align : n;
}

/* thread i's start in the fused [K | V | Q] row space: K and V rows by whole heads, Q rows by 8 */
static inline int64_t qkv_bound(int i, int nt, int64_t KV, int64_t D, int64_t hd) {
    const int64_t total = 2 * KV + D, tg = total * i / nt;
    if (i <= 0) return 0;
    if (i >= nt) return total;
    if (tg <= 2 * KV) return (tg + hd / 2) / hd * hd;
    const int64_t r = 2 * KV + (tg - 2 * KV + 4) / 8 * 8;
    return r < total ? r : total;
}

/* rows [r0, r1) of y = W x for one quantized activation row */
static void mm_rows(const qmat *W, int64_t r0, int64_t r1, const uint8_t *xq, float *y) {
    const int64_t cols = W->cols, rs = row_size(W->qtype, cols), nb = cols / QK;
    int64_t r = r0;
#ifdef HAVE_X86
    if (use_avx2) for (; r + 4 <= r1; r += 4) dot4_q(W->qtype, W->data + r * rs, rs, xq, nb, y + r);
#endif
    for (; r < r1; r++) y[r] = dot_q(W->qtype, W->data + r * rs, xq, nb);
}

/* whether llama_decode1 can run this model: every matrix quantized, one activation type per shared input */
static int decode1_ok(const llama_model *m) {
    if (!is_quant(m->output.qtype)) return 0;
    for (int64_t l = 0; l < m->n_layer; l++) {
        const qmat *W = &m->layers[l * W_PER_LAYER];
        const int js[] = {W_Q, W_K, W_V, W_O, W_GATE, W_UP, W_DOWN};
        for (int j = 0; j < 7; j++) if (!is_quant(W[js[j]].qtype)) return 0;
        if (act_type(W[W_K].qtype) != act_type(W[W_Q].qtype) || act_type(W[W_V].qtype) != act_type(W[W_Q].qtype) ||
            act_type(W[W_UP].qtype) != act_type(W[W_GATE].qtype)) return 0;
    }
    return 1;
}

/* One token at position pos: h (D) embedding in; hidden_out (D) pre-norm final state; logits (vocab).
 * priv: nth blocks of priv_stride bytes (h copy, normed x, quantized x). */
static void llama_decode1(const llama_model *m, const float *h0, int64_t pos, uint16_t *kc, uint16_t *vc,
                          float **attn_sel, scratch_t *s, float *hidden_out, float *logits, uint8_t *priv,
                          size_t priv_stride, int nth) {
    const int64_t D = m->dim, H = m->H, Hkv = m->Hkv, hd = m->hd, KV = Hkv * hd, F = m->ffn, g = H / Hkv;
    const int64_t n = pos + 1;
    float cs[512];
    rope_cache(pos, hd, m->rope_base, cs);
    #pragma omp parallel num_threads(nth)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int tid = 0, nt = 1;
#endif
        uint8_t *pv = priv + (size_t)tid * priv_stride;
        float *hp = (float *)pv, *xn = hp + D;
        uint8_t *xq = (uint8_t *)(xn + D);
        float *work = s->work + (int64_t)tid * 2 * s->n_kv;
        memcpy(hp, h0, D * sizeof(float));
        /* this thread's share of the fused [K | V | Q] rows: K and V by whole heads, Q by 8 rows */
        const int64_t qa = qkv_bound(tid, nt, KV, D, hd), qb = qkv_bound(tid + 1, nt, KV, D, hd);
        int64_t ha, hb, oa, ob, fa, fb, da, db, va, vb;
        split_range(H, 1, nt, tid, &ha, &hb);
        split_range(D, 8, nt, tid, &oa, &ob);
        split_range(F, 8, nt, tid, &fa, &fb);
        split_range(D, 8, nt, tid, &da, &db);
        split_range(m->vocab, 8, nt, tid, &va, &vb);
        for (int64_t l = 0; l < m->n_layer; l++) {
            const qmat *W = &m->layers[l * W_PER_LAYER];
            uint16_t *kl = kc + l * m->ctx * KV, *vl = vc + l * m->ctx * KV;
            /* attention input */
            rms_norm_row(hp, (const float *)W[W_NORM].data, xn, D, m->eps);
            quantize_act_row(xn, D, act_type(W[W_Q].qtype), xq);
            /* K heads: matmul, rope, store */
            for (int64_t r = qa; r < qb && r < KV; r += hd) {
                mm_rows(&W[W_K], r, r + hd, xq, s->k);
                rope_row(s->k + r, 1, hd, cs, 0);
                for (int64_t i = r; i < r + hd; i++) kl[pos * KV + i] = f32_to_f16(s->k[i]);
            }
            /* V heads: matmul, store transposed */
            for (int64_t r = qa > KV ? qa : KV; r < qb && r < 2 * KV; r += hd) {
                mm_rows(&W[W_V], r - KV, r - KV + hd, xq, s->v);
                for (int64_t i = r - KV; i < r - KV + hd; i++) vl[i * m->ctx + pos] = f32_to_f16(s->v[i]);
            }
            if (qb > 2 * KV) mm_rows(&W[W_Q], (qa > 2 * KV ? qa : 2 * KV) - 2 * KV, qb - 2 * KV, xq, s->q);
            #pragma omp barrier
            for (int64_t hh = ha; hh < hb; hh++) {
                float *pr = s->probs + hh * n;
                rope_row(s->q + hh * hd, 1, hd, cs, 0);
                attend_head_ggml(s->q + hh * hd, kl + (hh / g) * hd, KV, vl + (hh / g) * hd * m->ctx, m->ctx,
                                 n, s->n_kv, hd, 0, s->att + hh * hd, pr, work);
                if (attn_sel && attn_sel[l]) memcpy(attn_sel[l] + hh * n, pr, n * sizeof(float));
            }
            #pragma omp barrier
            quantize_act_row(s->att, D, act_type(W[W_O].qtype), xq);
            mm_rows(&W[W_O], oa, ob, xq, s->tmp);
            #pragma omp barrier
            for (int64_t i = 0; i < D; i++) hp[i] += s->tmp[i];
            rms_norm_row(hp, (const float *)W[W_FNORM].data, xn, D, m->eps);
            quantize_act_row(xn, D, act_type(W[W_GATE].qtype), xq);
            mm_rows(&W[W_GATE], fa, fb, xq, s->gate);
            mm_rows(&W[W_UP], fa, fb, xq, s->up);
            ggml_swiglu(s->gate + fa, s->up + fa, fb - fa);
            #pragma omp barrier
            quantize_act_row(s->gate, F, act_type(W[W_DOWN].qtype), xq);
            mm_rows(&W[W_DOWN], da, db, xq, s->tmp);
            #pragma omp barrier
            for (int64_t i = 0; i < D; i++) hp[i] += s->tmp[i];
        }
        if (tid == 0) memcpy(hidden_out, hp, D * sizeof(float));
        rms_norm_row(hp, m->out_norm, xn, D, m->eps);
        quantize_act_row(xn, D, act_type(m->output.qtype), xq);
        mm_rows(&m->output, va, vb, xq, logits);
    }
}

/* llama_forward(model, tokens int32 (T,), pos0, k_cache (L, ctx, Hkv, hd) f16, v_cache (L, Hkv, hd, ctx) f16,
 *               logits_out (vocab,)|(T, vocab) f32, hidden_out (D,)|(T, D) f32,
 *               attn: list of L (None | f32 buffer (H, pos0+T)))
 * -> None. Logits and hidden states are for the last position, or for every position when the output
 * buffers hold T rows (scoring a text, building a kNN-LM datastore). */
static PyObject *py_llama_forward(PyObject *self, PyObject *args) {
    PyObject *cap, *to, *ko, *vo, *lo, *ho, *ao; long long pos0;
    if (!PyArg_ParseTuple(args, "OOLOOOOO", &cap, &to, &pos0, &ko, &vo, &lo, &ho, &ao)) return NULL;
    llama_model *m = PyCapsule_GetPointer(cap, "hartonomous.llama");
    if (!m) return NULL;
    const int64_t D = m->dim, KV = m->Hkv * m->hd, L = m->n_layer;
    Py_buffer tb, kb, vb, lb, hb;
    if (get_buf(to, &tb, 0, -1, "tokens") < 0) return NULL;
    const int64_t T = tb.len / 4;
    if (T < 1 || tb.len % 4 || pos0 < 0 || pos0 + T > m->ctx) {
        PyBuffer_Release(&tb); PyErr_SetString(PyExc_ValueError, "tokens empty or past the context"); return NULL;
    }
    const int32_t *tok = tb.buf;
    for (int64_t t = 0; t < T; t++)
        if (tok[t] < 0 || tok[t] >= m->vocab) { PyBuffer_Release(&tb); PyErr_SetString(PyExc_ValueError, "token id out of range"); return NULL; }
    const Py_ssize_t cache_bytes = L * m->ctx * KV * 2;
    if (get_buf(ko, &kb, 1, cache_bytes, "k_cache") < 0) { PyBuffer_Release(&tb); return NULL; }
    if (get_buf(vo, &vb, 1, cache_bytes, "v_cache") < 0) { PyBuffer_Release(&tb); PyBuffer_Release(&kb); return NULL; }
    if (get_buf(lo, &lb, 1, -1, "logits") < 0) { PyBuffer_Release(&tb); PyBuffer_Release(&kb); PyBuffer_Release(&vb); return NULL; }
    if (get_buf(ho, &hb, 1, -1, "hidden") < 0) {
        PyBuffer_Release(&tb); PyBuffer_Release(&kb); PyBuffer_Release(&vb); PyBuffer_Release(&lb); return NULL;
    }
    const int64_t rows_out = lb.len == T * m->vocab * 4 && T > 1 ? T : 1;
    if (lb.len != rows_out * m->vocab * 4 || hb.len != rows_out * D * 4) {
        PyErr_Format(PyExc_ValueError, "logits/hidden must hold 1 or T=%lld rows of (vocab, dim), got %zd and %zd bytes",
                     (long long)T, lb.len, hb.len);
        PyBuffer_Release(&tb); PyBuffer_Release(&kb); PyBuffer_Release(&vb); PyBuffer_Release(&lb); PyBuffer_Release(&hb);
        return NULL;
    }
    /* optional attention outputs */
    Py_buffer *ab = calloc(L, sizeof(Py_buffer));
    float **sel = calloc(L, sizeof(float *));
    int err = 0;
    if (ao != Py_None) {
        if (!PyList_Check(ao) || PyList_GET_SIZE(ao) != L) { PyErr_SetString(PyExc_ValueError, "attn must be a list with one entry per layer"); err = 1; }
        for (int64_t l = 0; !err && l < L; l++) {
            PyObject *it = PyList_GET_ITEM(ao, l);
            if (it == Py_None) continue;
            if (get_buf(it, &ab[l], 1, m->H * (pos0 + T) * 4, "attn") < 0) { err = 1; break; }
            sel[l] = ab[l].buf;
        }
    }
    const Py_ssize_t F = m->ffn, n_end = pos0 + T;
    scratch_t s = {0};
    float *h = NULL;
    if (!err) {
        h = malloc(T * D * 4);
        s.xn = malloc(T * D * 4); s.q = malloc(T * D * 4); s.k = malloc(T * KV * 4); s.v = malloc(T * KV * 4);
        s.att = malloc(T * D * 4); s.tmp = malloc(T * D * 4); s.gate = malloc(T * F * 4); s.up = malloc(T * F * 4);
        s.probs = malloc(T * m->H * n_end * 4); s.xq = malloc(T * row_size(T_Q8_1, F > D ? F : D) + 64);
        s.n_kv = (n_end + m->kv_pad - 1) / m->kv_pad * m->kv_pad;
#ifdef _OPENMP
        s.work = malloc((size_t)omp_get_max_threads() * 2 * s.n_kv * 4);
#else
        s.work = malloc((size_t)2 * s.n_kv * 4);
#endif
        if (!h || !s.xn || !s.q || !s.k || !s.v || !s.att || !s.tmp || !s.gate || !s.up || !s.probs || !s.xq || !s.work) { PyErr_NoMemory(); err = 1; }
    }
    if (!err && T == 1 && rows_out == 1 && decode1_ok(m)) {
#ifdef _OPENMP
        const int nth = threads_for(m->n_layer * (4 * D * D + 3 * D * F));
#else
        const int nth = 1;
#endif
        const size_t priv_stride = ((size_t)2 * D * 4 + row_size(T_Q8_1, F > D ? F : D) + 64 + 63) / 64 * 64;
        uint8_t *priv = malloc(priv_stride * nth + 64);
        if (!priv) { PyErr_NoMemory(); err = 1; }
        else {
            uint8_t *pa = (uint8_t *)(((uintptr_t)priv + 63) & ~(uintptr_t)63);
            Py_BEGIN_ALLOW_THREADS
            dequant_row(m->embd.qtype, m->embd.data + tok[0] * row_size(m->embd.qtype, D), h, D);
            llama_decode1(m, h, pos0, kb.buf, vb.buf, sel, &s, hb.buf, lb.buf, pa, priv_stride, nth);
            Py_END_ALLOW_THREADS
            free(priv);
        }
    } else if (!err) {
        Py_BEGIN_ALLOW_THREADS
        const int64_t ers = row_size(m->embd.qtype, D);
        for (int64_t t = 0; t < T; t++) dequant_row(m->embd.qtype, m->embd.data + tok[t] * ers, h + t * D, D);
        llama_run(m, h, T, pos0, kb.buf, vb.buf, sel, &s);
        float *first = h + (T - rows_out) * D;
        memcpy(hb.buf, first, rows_out * D * 4);
        for (int64_t t = 0; t < rows_out; t++) rms_norm_row(first + t * D, m->out_norm, s.xn + t * D, D, m->eps);
        float *lg[1] = {lb.buf};
        matmul_auto(&m->output, 1, lg, s.xn, rows_out, s.xq);
        Py_END_ALLOW_THREADS
    }
    free(h); free(s.xn); free(s.q); free(s.k); free(s.v); free(s.att); free(s.tmp); free(s.gate); free(s.up); free(s.probs); free(s.xq); free(s.work);
    for (int64_t l = 0; l < L; l++) if (sel[l]) PyBuffer_Release(&ab[l]);
    free(ab); free(sel);
    PyBuffer_Release(&tb); PyBuffer_Release(&kb); PyBuffer_Release(&vb); PyBuffer_Release(&lb); PyBuffer_Release(&hb);
    if (err) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_simd(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(use_avx2 ? "avx2" : "scalar"); }

static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
#ifdef HAVE_X86
    use_avx2 = on && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    use_vnni = use_avx2 && vnni_supported();
#else
    use_avx2 = 0;
#endif
    return py_simd(self, NULL);
}

#ifdef HAVE_X86
static int vnni_supported(void) {
    const char *env = getenv("HARTONOMOUS_QUANT_VNNI");
    if (env && env[0] == '0') return 0;
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#endif

/* set_vnni(on) -> whether the AVX512-VNNI matvec kernels are in use (same bits as the AVX2 ones) */
static PyObject *py_set_vnni(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
#ifdef HAVE_X86
    use_vnni = on && use_avx2 && vnni_supported();
    return PyBool_FromLong(use_vnni);
#else
    return PyBool_FromLong(0);
#endif
}

static PyObject *py_threads(PyObject *self, PyObject *args) {
    int n = 0;
    if (!PyArg_ParseTuple(args, "|i", &n)) return NULL;
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
    return PyLong_FromLong(omp_get_max_threads());
#else
    return PyLong_FromLong(1);
#endif
}

static PyMethodDef methods[] = {
    {"dequantize", py_dequantize, METH_VARARGS, "dequantize(raw, qtype, rows, cols, out_f32)"},
    {"quantize_act", py_quantize_act, METH_VARARGS, "quantize_act(x_f32, act_qtype, T, cols, out)"},
    {"matmul", py_matmul, METH_VARARGS, "matmul(raw, qtype, rows, cols, x, T, out, quantized_act)"},
    {"rowwise", py_rowwise, METH_VARARGS, "rowwise(op, x, w, b, N, D, eps, out)"},
    {"rope", py_rope, METH_VARARGS, "rope(x, pos_i64, T, H, hd, base, neox) in place"},
    {"attention_step", py_attention_step, METH_VARARGS, "attention_step(q, k, v, H, Hkv, hd, Tmax, n, out, probs)"},
    {"llama_new", py_llama_new, METH_VARARGS, "llama_new(config, weights) -> model"},
    {"llama_forward", py_llama_forward, METH_VARARGS, "llama_forward(model, tokens, pos0, k, v, logits, hidden, attn)"},
    {"simd", py_simd, METH_NOARGS, "the SIMD path in use: 'avx2' or 'scalar'"},
    {"set_simd", py_set_simd, METH_VARARGS, "set_simd(on): use AVX2 if the CPU has it (tests use off)"},
    {"set_vnni", py_set_vnni, METH_VARARGS, "set_vnni(on) -> bool: AVX512-VNNI matvec kernels (bit-identical to AVX2)"},
    {"threads", py_threads, METH_VARARGS, "threads([n]) -> OpenMP threads in use"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_quant", "GGUF model-math kernels", -1, methods};

PyMODINIT_FUNC PyInit__quant(void) {
    for (uint32_t i = 0; i < 65536; i++) f16_table[i] = f16_to_f32_calc((uint16_t)i);
#ifdef HAVE_X86
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    use_vnni = use_avx2 && vnni_supported();
#endif
    return PyModule_Create(&moduledef);
}
