/* Kernels compiled twice by _core.c: once with TARGET = avx2,fma,f16c and once plain (the scalar
 * fallback). FN(name) gives each copy its own suffix. Plain loops here are vectorized by the
 * compiler for the copy's instruction set (`omp simd` lets it reorder float reductions).
 * Layout: every matrix is C-contiguous, row-major. */

/* out[q * ldo + r] = dot(rows[r], qs[q]) for r < nr, q < nq; rows (nr, d), qs (nq, d) float32. */
TARGET static void FN(tile_dots)(const float *rows, int64_t nr, const float *qs, int64_t nq,
                                 int64_t d, float *out, int64_t ldo);

/* Converts rows [r0, r0 + nr) of a float16 / int8 matrix to float32 (nr, d). */
TARGET static void FN(rows_to_f32)(const void *m, int mtype, int64_t r0, int64_t nr, int64_t d,
                                   float *dst)
{
    if (mtype == MT_F16) {
        const uint16_t *src = (const uint16_t *)m + r0 * d;
        int64_t i = 0;
#if IS_AVX2
        for (; i + 8 <= nr * d; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
        for (; i < nr * d; i++) dst[i] = half_to_float(src[i]);
    } else {
        const int8_t *src = (const int8_t *)m + r0 * d;
#pragma omp simd
        for (int64_t i = 0; i < nr * d; i++) dst[i] = (float)src[i];
    }
}

TARGET static double FN(sumsq)(const float *x, int64_t d)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < d; i++) s += (double)x[i] * (double)x[i];
    return s;
}

/* Scores of rows [r0, r0 + nr) against every query into out (nq, ldo); returns 1 if any score is
 * not finite (NaN/inf in the input, or overflow). conv: scratch (TILE_ROWS, d) float32. */
TARGET static int FN(score_block)(const ScoreCtx *c, int64_t r0, int64_t nr, float *conv,
                                  float *out, int64_t ldo)
{
    const float *rows = (const float *)c->m + r0 * c->d;
    if (c->mtype != MT_F32) {
        FN(rows_to_f32)(c->m, c->mtype, r0, nr, c->d, conv);
        rows = conv;
    }
    FN(tile_dots)(rows, nr, c->q, c->nq, c->d, out, ldo);
    int bad = 0;
    for (int64_t r = 0; r < nr; r++) {
        float f = c->factor;
        if (c->cosine) {
            double n2 = FN(sumsq)(rows + r * c->d, c->d);
            f *= n2 > 0.0 ? (float)(1.0 / sqrt(n2)) : 0.0f;
        } else if (c->scale) {
            f *= c->scale[r0 + r];
        }
        for (int64_t q = 0; q < c->nq; q++) {
            float v = out[q * ldo + r] * f;
            out[q * ldo + r] = v;
            bad |= !isfinite(v);
        }
    }
    return bad;
}

/* Per-chunk two-pass statistics, then Chan's combination into (count, mean, m2). */
#define MOMENTS_CHUNK(NAME, T)                                                                    \
    TARGET static void NAME(const T *x, int64_t rows, int64_t d, double *cm, double *cq)        \
    {                                                                                             \
        if (d == 1) {                                                                             \
            double s = 0.0, q = 0.0;                                                              \
            _Pragma("omp simd reduction(+ : s)") for (int64_t i = 0; i < rows; i++) s += x[i];    \
            double m = s / (double)rows;                                                          \
            _Pragma("omp simd reduction(+ : q)") for (int64_t i = 0; i < rows; i++)               \
            {                                                                                     \
                double t = (double)x[i] - m;                                                      \
                q += t * t;                                                                       \
            }                                                                                     \
            cm[0] = m;                                                                            \
            cq[0] = q;                                                                            \
            return;                                                                               \
        }                                                                                         \
        for (int64_t j = 0; j < d; j++) cm[j] = cq[j] = 0.0;                                      \
        for (int64_t r = 0; r < rows; r++) {                                                      \
            const T *xr = x + r * d;                                                              \
            _Pragma("omp simd") for (int64_t j = 0; j < d; j++) cm[j] += xr[j];                   \
        }                                                                                         \
        for (int64_t j = 0; j < d; j++) cm[j] /= (double)rows;                                    \
        for (int64_t r = 0; r < rows; r++) {                                                      \
            const T *xr = x + r * d;                                                              \
            _Pragma("omp simd") for (int64_t j = 0; j < d; j++)                                   \
            {                                                                                     \
                double t = (double)xr[j] - cm[j];                                                 \
                cq[j] += t * t;                                                                   \
            }                                                                                     \
        }                                                                                         \
    }
MOMENTS_CHUNK(FN(moments_chunk_f32), float)
MOMENTS_CHUNK(FN(moments_chunk_f64), double)
#undef MOMENTS_CHUNK

/* Adds rows of x (n, d) float32 into sums (k, d) float64 by label. */
TARGET static void FN(add_rows_by_label)(const float *x, int64_t n, int64_t d, const int64_t *labels,
                                         double *sums, int64_t *counts)
{
    for (int64_t r = 0; r < n; r++) {
        double *s = sums + labels[r] * d;
        const float *xr = x + r * d;
#pragma omp simd
        for (int64_t j = 0; j < d; j++) s[j] += xr[j];
        counts[labels[r]]++;
    }
}

/* acc (dv,) float64 += w * v (dv,) float32 */
TARGET static void FN(axpy_f64)(double *acc, double w, const float *v, int64_t dv)
{
#pragma omp simd
    for (int64_t j = 0; j < dv; j++) acc[j] += w * (double)v[j];
}

/* Pearson correlation of a (m,) and b (m,) float64; 0 when either side is constant. */
TARGET static double FN(pearson)(const double *a, const double *b, int64_t m)
{
    double sa = 0.0, sb = 0.0;
#pragma omp simd reduction(+ : sa, sb)
    for (int64_t i = 0; i < m; i++) {
        sa += a[i];
        sb += b[i];
    }
    double ma = sa / (double)m, mb = sb / (double)m, ab = 0.0, aa = 0.0, bb = 0.0;
#pragma omp simd reduction(+ : ab, aa, bb)
    for (int64_t i = 0; i < m; i++) {
        double da = a[i] - ma, db = b[i] - mb;
        ab += da * db;
        aa += da * da;
        bb += db * db;
    }
    double den = sqrt(aa * bb);
    return den > 0.0 ? ab / den : 0.0;
}
