/* native._core: the fast CPU path of native/vector.py (spec: native/reference.py).
 *
 * Vector search (dot/cosine scores, exact top-k over float32/float16/int8 rows), streaming moments,
 * k-means steps, attention aggregate, lagged cross-correlation, Granger RSS, n-gram repetition and
 * RFC 6962 Merkle trees with a built-in SHA-256.
 *
 * AVX2/FMA/F16C is chosen at run time (__builtin_cpu_supports), the plain build is the fallback.
 * Every entry point expects validated, C-contiguous arrays (native/vector.py does the checks),
 * releases the GIL around the work and splits rows over OpenMP threads. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { MT_F32 = 0, MT_F16 = 1, MT_I8 = 2 };
#define TILE_ROWS 64
#define PAR_MIN_WORK 4000000 /* multiply-adds below which one thread is faster (~0.2 ms) */

typedef struct {
    const void *m;      /* (n, d) rows: float32, float16 or int8 */
    int mtype;
    const float *scale; /* (n,) int8 row scales, or NULL */
    int64_t n, d;
    const float *q;     /* (nq, d) float32 queries (unit length for cosine) */
    int64_t nq;
    int cosine;
    float factor;       /* multiplies every score (1/sqrt(d) for attention) */
} ScoreCtx;

static int use_avx2 = 0;

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000 | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalize */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static int nthreads_for(double work) { return work < PAR_MIN_WORK ? 1 : omp_get_max_threads(); }

/* ------------------------------------------------------------------ AVX2 tile dot micro-kernel */

static const int32_t MASK_TABLE[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* R rows x Q queries of dots, R <= 4, Q <= 3; constant R, Q after inlining keep acc in registers. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
micro_dots(const float *rows, int R, const float *qs, int Q, int64_t d, float *out, int64_t ldo)
{
    __m256 acc[4][3];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < Q; q++) acc[r][q] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256 qv[3], rv;
        for (int q = 0; q < Q; q++) qv[q] = _mm256_loadu_ps(qs + q * d + i);
        for (int r = 0; r < R; r++) {
            rv = _mm256_loadu_ps(rows + r * d + i);
            for (int q = 0; q < Q; q++) acc[r][q] = _mm256_fmadd_ps(rv, qv[q], acc[r][q]);
        }
    }
    if (i < d) {
        __m256i mask = _mm256_loadu_si256((const __m256i *)(MASK_TABLE + 8 - (d - i)));
        __m256 qv[3], rv;
        for (int q = 0; q < Q; q++) qv[q] = _mm256_maskload_ps(qs + q * d + i, mask);
        for (int r = 0; r < R; r++) {
            rv = _mm256_maskload_ps(rows + r * d + i, mask);
            for (int q = 0; q < Q; q++) acc[r][q] = _mm256_fmadd_ps(rv, qv[q], acc[r][q]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int q = 0; q < Q; q++) out[q * ldo + r] = hsum256(acc[r][q]);
}

__attribute__((target("avx2,fma,f16c"))) static void tile_dots_avx2(const float *rows, int64_t nr,
                                                                    const float *qs, int64_t nq,
                                                                    int64_t d, float *out, int64_t ldo)
{
    if (nq * d <= 6144) { /* all queries fit L1 beside 4 rows: stream each row group once */
        int64_t r0 = 0;
        for (; r0 + 4 <= nr; r0 += 4)
            for (int64_t q0 = 0; q0 < nq; q0 += 3) {
                int qn = nq - q0 < 3 ? (int)(nq - q0) : 3;
                if (qn == 3)
                    micro_dots(rows + r0 * d, 4, qs + q0 * d, 3, d, out + q0 * ldo + r0, ldo);
                else if (qn == 2)
                    micro_dots(rows + r0 * d, 4, qs + q0 * d, 2, d, out + q0 * ldo + r0, ldo);
                else
                    micro_dots(rows + r0 * d, 4, qs + q0 * d, 1, d, out + q0 * ldo + r0, ldo);
            }
        for (; r0 < nr; r0++)
            for (int64_t q0 = 0; q0 < nq; q0 += 3) {
                int qn = nq - q0 < 3 ? (int)(nq - q0) : 3;
                micro_dots(rows + r0 * d, 1, qs + q0 * d, qn, d, out + q0 * ldo + r0, ldo);
            }
        return;
    }
    for (int64_t q0 = 0; q0 < nq; q0 += 3) {
        int qn = nq - q0 < 3 ? (int)(nq - q0) : 3;
        const float *qp = qs + q0 * d;
        float *op = out + q0 * ldo;
        int64_t r0 = 0;
        for (; r0 + 4 <= nr; r0 += 4) {
            if (qn == 3)
                micro_dots(rows + r0 * d, 4, qp, 3, d, op + r0, ldo);
            else if (qn == 2)
                micro_dots(rows + r0 * d, 4, qp, 2, d, op + r0, ldo);
            else
                micro_dots(rows + r0 * d, 4, qp, 1, d, op + r0, ldo);
        }
        for (; r0 < nr; r0++) micro_dots(rows + r0 * d, 1, qp, qn, d, op + r0, ldo);
    }
}

static void tile_dots_scalar(const float *rows, int64_t nr, const float *qs, int64_t nq, int64_t d,
                             float *out, int64_t ldo)
{
    for (int64_t q = 0; q < nq; q++)
        for (int64_t r = 0; r < nr; r++) {
            const float *a = rows + r * d, *b = qs + q * d;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < d; i++) s += a[i] * b[i];
            out[q * ldo + r] = s;
        }
}

/* ------------------------------------------------------------------ the two compiled copies */

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define FN(name) name##_avx2
#define IS_AVX2 1
#include "_core_kernels.h"
#undef TARGET
#undef FN
#undef IS_AVX2

#define TARGET
#define FN(name) name##_scalar
#define IS_AVX2 0
#include "_core_kernels.h"
#undef TARGET
#undef FN
#undef IS_AVX2

#define DISPATCH(name) (use_avx2 ? name##_avx2 : name##_scalar)

/* ------------------------------------------------------------------ helpers */

static PyArrayObject *as_array(PyObject *o, int type, int ndim_min, int ndim_max, const char *what)
{
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OTF(o, type, NPY_ARRAY_IN_ARRAY);
    if (!a) return NULL;
    if (PyArray_NDIM(a) < ndim_min || PyArray_NDIM(a) > ndim_max) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d..%d dimensions, got %d", what, ndim_min,
                     ndim_max, PyArray_NDIM(a));
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

static int matrix_type(PyArrayObject *m)
{
    switch (PyArray_TYPE(m)) {
    case NPY_FLOAT32: return MT_F32;
    case NPY_FLOAT16: return MT_F16;
    case NPY_INT8: return MT_I8;
    default: return -1;
    }
}

/* Unit-length copy of the queries for cosine (zero query stays zero). q (nq, d) float32. */
static float *prepare_queries(const float *q, int64_t nq, int64_t d, int cosine)
{
    float *out = malloc(sizeof(float) * (size_t)(nq * d + 8));
    if (!out) return NULL;
    for (int64_t i = 0; i < nq; i++) {
        double s = 0.0;
        for (int64_t j = 0; j < d; j++) s += (double)q[i * d + j] * q[i * d + j];
        float f = (cosine && s > 0.0) ? (float)(1.0 / sqrt(s)) : (cosine ? 0.0f : 1.0f);
        for (int64_t j = 0; j < d; j++) out[i * d + j] = q[i * d + j] * f;
    }
    return out;
}

/* Parses (queries, matrix, scale|None, metric_is_cosine) into ctx; returns new refs via *qa, *ma. */
static int parse_score_args(PyObject *qo, PyObject *mo, PyObject *so, int cosine, ScoreCtx *c,
                            PyArrayObject **qa, PyArrayObject **ma, PyArrayObject **sa)
{
    *qa = *ma = *sa = NULL;
    *ma = as_array(mo, NPY_NOTYPE, 2, 2, "matrix");
    if (!*ma) return -1;
    int mt = matrix_type(*ma);
    if (mt < 0) {
        PyErr_SetString(PyExc_ValueError, "matrix: dtype must be float32, float16 or int8");
        return -1;
    }
    *qa = as_array(qo, NPY_FLOAT32, 2, 2, "queries");
    if (!*qa) return -1;
    if (PyArray_DIM(*qa, 1) != PyArray_DIM(*ma, 1)) {
        PyErr_SetString(PyExc_ValueError, "queries and matrix differ in dimension");
        return -1;
    }
    memset(c, 0, sizeof *c);
    c->m = PyArray_DATA(*ma);
    c->mtype = mt;
    c->n = PyArray_DIM(*ma, 0);
    c->d = PyArray_DIM(*ma, 1);
    c->nq = PyArray_DIM(*qa, 0);
    c->cosine = cosine;
    c->factor = 1.0f;
    if (so != Py_None) {
        *sa = as_array(so, NPY_FLOAT32, 1, 1, "scale");
        if (!*sa) return -1;
        if (PyArray_DIM(*sa, 0) != c->n) {
            PyErr_SetString(PyExc_ValueError, "scale must have one entry per row");
            return -1;
        }
        c->scale = PyArray_DATA(*sa);
    }
    return 0;
}

/* Scores of all rows into out (nq, n); returns 1 if any is not finite, -1 on allocation failure. */
static int score_all(const ScoreCtx *c, float *out)
{
    int bad = 0, oom = 0;
    int nt = nthreads_for((double)c->n * c->d * c->nq);
#pragma omp parallel num_threads(nt) reduction(| : bad, oom)
    {
        float *conv = malloc(sizeof(float) * TILE_ROWS * c->d);
        if (!conv) {
            oom = 1;
        } else {
#pragma omp for schedule(dynamic, 8)
            for (int64_t r0 = 0; r0 < c->n; r0 += TILE_ROWS) {
                int64_t nr = c->n - r0 < TILE_ROWS ? c->n - r0 : TILE_ROWS;
                bad |= DISPATCH(score_block)(c, r0, nr, conv, out + r0, c->n);
            }
        }
        free(conv);
    }
    return oom ? -1 : bad;
}

/* ------------------------------------------------------------------ scores / top-k */

static PyObject *py_scores(PyObject *self, PyObject *args)
{
    PyObject *qo, *mo, *so;
    int cosine;
    if (!PyArg_ParseTuple(args, "OOOp", &qo, &mo, &so, &cosine)) return NULL;
    ScoreCtx c;
    PyArrayObject *qa, *ma, *sa, *out = NULL;
    if (parse_score_args(qo, mo, so, cosine, &c, &qa, &ma, &sa) < 0) goto done;
    npy_intp dims[2] = {c.nq, c.n};
    out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) goto done;
    int rc;
    float *qn = prepare_queries(PyArray_DATA(qa), c.nq, c.d, cosine);
    if (!qn) {
        PyErr_NoMemory();
        Py_CLEAR(out);
        goto done;
    }
    c.q = qn;
    Py_BEGIN_ALLOW_THREADS rc = score_all(&c, PyArray_DATA(out));
    Py_END_ALLOW_THREADS free(qn);
    if (rc != 0) {
        if (rc < 0) PyErr_NoMemory();
        else PyErr_SetString(PyExc_ValueError, "non-finite score: NaN/inf in the input (or overflow)");
        Py_CLEAR(out);
    }
done:
    Py_XDECREF(qa);
    Py_XDECREF(ma);
    Py_XDECREF(sa);
    return (PyObject *)out;
}

typedef struct {
    float s;
    int64_t i;
} Item;

/* a ranks below b: lower score, or equal score and higher index */
static inline int worse(Item a, Item b) { return a.s < b.s || (a.s == b.s && a.i > b.i); }

static void heap_push(Item *h, int64_t *size, int64_t k, Item it)
{
    int64_t j;
    if (*size < k) {
        j = (*size)++;
        while (j > 0 && worse(it, h[(j - 1) / 2])) {
            h[j] = h[(j - 1) / 2];
            j = (j - 1) / 2;
        }
        h[j] = it;
        return;
    }
    if (!worse(h[0], it)) return;
    j = 0;
    for (;;) { /* sift the new item down from the root */
        int64_t l = 2 * j + 1, m = j;
        Item cur = it;
        if (l < k && worse(h[l], cur)) {
            m = l;
            cur = h[l];
        }
        if (l + 1 < k && worse(h[l + 1], cur)) m = l + 1;
        if (m == j) break;
        h[j] = h[m];
        j = m;
    }
    h[j] = it;
}

static int better_first(const void *a, const void *b)
{
    Item x = *(const Item *)a, y = *(const Item *)b;
    return worse(y, x) ? -1 : (worse(x, y) ? 1 : 0);
}

/* Exact top-k: each thread keeps a heap per query over its rows; heaps are merged at the end. */
static int topk_run(const ScoreCtx *c, int64_t k, int64_t *out_i, float *out_s)
{
    int nt = nthreads_for((double)c->n * c->d * c->nq);
    Item *heaps = malloc(sizeof(Item) * (size_t)(nt * c->nq * k));
    int64_t *sizes = calloc((size_t)(nt * c->nq), sizeof(int64_t));
    int bad = 0, oom = !heaps || !sizes;
    if (!oom) {
#pragma omp parallel num_threads(nt) reduction(| : bad, oom)
        {
            int t = omp_get_thread_num();
            float *conv = malloc(sizeof(float) * TILE_ROWS * c->d);
            float *buf = malloc(sizeof(float) * TILE_ROWS * c->nq);
            if (!conv || !buf) oom = 1;
#pragma omp for schedule(dynamic, 8)
            for (int64_t r0 = 0; r0 < c->n; r0 += TILE_ROWS) {
                if (oom) continue;
                int64_t nr = c->n - r0 < TILE_ROWS ? c->n - r0 : TILE_ROWS;
                bad |= DISPATCH(score_block)(c, r0, nr, conv, buf, TILE_ROWS);
                for (int64_t q = 0; q < c->nq; q++) {
                    Item *h = heaps + (t * c->nq + q) * k;
                    int64_t *sz = sizes + t * c->nq + q;
                    const float *s = buf + q * TILE_ROWS;
                    for (int64_t r = 0; r < nr; r++)
                        if (*sz < k || s[r] >= h[0].s) heap_push(h, sz, k, (Item){s[r], r0 + r});
                }
            }
            free(conv);
            free(buf);
        }
    }
    if (!oom) {
        Item *all = malloc(sizeof(Item) * (size_t)(nt * k));
        oom = !all;
        for (int64_t q = 0; !oom && q < c->nq; q++) {
            int64_t m = 0;
            for (int t = 0; t < nt; t++) {
                int64_t sz = sizes[t * c->nq + q];
                memcpy(all + m, heaps + (t * c->nq + q) * k, sizeof(Item) * (size_t)sz);
                m += sz;
            }
            qsort(all, (size_t)m, sizeof(Item), better_first);
            for (int64_t j = 0; j < k; j++) {
                out_i[q * k + j] = all[j].i;
                out_s[q * k + j] = all[j].s;
            }
        }
        free(all);
    }
    free(heaps);
    free(sizes);
    return oom ? -1 : bad;
}

static PyObject *py_topk(PyObject *self, PyObject *args)
{
    PyObject *qo, *mo, *so;
    int cosine;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "OOOpn", &qo, &mo, &so, &cosine, &k)) return NULL;
    ScoreCtx c;
    PyArrayObject *qa, *ma, *sa, *oi = NULL, *os = NULL;
    PyObject *res = NULL;
    if (parse_score_args(qo, mo, so, cosine, &c, &qa, &ma, &sa) < 0) goto done;
    if (k <= 0 || c.n == 0) {
        PyErr_SetString(PyExc_ValueError, "k must be positive and the matrix non-empty");
        goto done;
    }
    if (k > c.n) k = c.n;
    npy_intp dims[2] = {c.nq, k};
    oi = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64);
    os = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    float *qn = prepare_queries(PyArray_DATA(qa), c.nq, c.d, cosine);
    if (!oi || !os || !qn) {
        free(qn);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    int rc = 0;
    /* queries in blocks so the per-thread heaps stay under ~256 MB whatever k is */
    int64_t block = (int64_t)(256e6 / ((double)sizeof(Item) * k * omp_get_max_threads()));
    block = block < 1 ? 1 : block;
    Py_BEGIN_ALLOW_THREADS for (int64_t q0 = 0; rc == 0 && q0 < c.nq; q0 += block)
    {
        ScoreCtx part = c;
        part.q = qn + q0 * c.d;
        part.nq = c.nq - q0 < block ? c.nq - q0 : block;
        rc = topk_run(&part, k, (int64_t *)PyArray_DATA(oi) + q0 * k, (float *)PyArray_DATA(os) + q0 * k);
    }
    Py_END_ALLOW_THREADS free(qn);
    if (rc < 0) PyErr_NoMemory();
    else if (rc > 0) PyErr_SetString(PyExc_ValueError, "non-finite score: NaN/inf in the input (or overflow)");
    else res = PyTuple_Pack(2, oi, os);
done:
    Py_XDECREF(qa);
    Py_XDECREF(ma);
    Py_XDECREF(sa);
    Py_XDECREF(oi);
    Py_XDECREF(os);
    return res;
}

static PyObject *py_quantize_int8(PyObject *self, PyObject *args)
{
    PyObject *mo;
    if (!PyArg_ParseTuple(args, "O", &mo)) return NULL;
    PyArrayObject *m = as_array(mo, NPY_FLOAT32, 2, 2, "matrix");
    if (!m) return NULL;
    npy_intp n = PyArray_DIM(m, 0), d = PyArray_DIM(m, 1);
    PyArrayObject *q = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(m), NPY_INT8);
    PyArrayObject *s = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (!q || !s) {
        Py_DECREF(m);
        Py_XDECREF(q);
        Py_XDECREF(s);
        return NULL;
    }
    const float *x = PyArray_DATA(m);
    int8_t *qd = PyArray_DATA(q);
    float *sd = PyArray_DATA(s);
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(nthreads_for((double)n * d)) schedule(static)
    for (npy_intp r = 0; r < n; r++) {
        const float *xr = x + r * d;
        float mx = 0.0f;
        for (npy_intp j = 0; j < d; j++) mx = fmaxf(mx, fabsf(xr[j]));
        float sc = mx / 127.0f, div = sc > 0.0f ? sc : 1.0f;
        sd[r] = sc;
        for (npy_intp j = 0; j < d; j++) {
            float v = rintf(xr[j] / div);
            qd[r * d + j] = (int8_t)(v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v));
        }
    }
    Py_END_ALLOW_THREADS Py_DECREF(m);
    PyObject *res = PyTuple_Pack(2, q, s);
    Py_DECREF(q);
    Py_DECREF(s);
    return res;
}

/* ------------------------------------------------------------------ streaming moments */

static void chan_merge(int64_t *na, double *ma, double *qa, int64_t nb, const double *mb,
                       const double *qb, int64_t d)
{
    if (nb == 0) return;
    if (*na == 0) {
        *na = nb;
        memcpy(ma, mb, sizeof(double) * d);
        memcpy(qa, qb, sizeof(double) * d);
        return;
    }
    double n = (double)(*na + nb), fb = nb / n, w = (double)*na * nb / n;
    for (int64_t j = 0; j < d; j++) {
        double delta = mb[j] - ma[j];
        ma[j] += delta * fb;
        qa[j] += qb[j] + delta * delta * w;
    }
    *na += nb;
}

/* (count, mean (d,), m2 (d,)) of x (n, d) float32|float64, chunked two-pass + Chan merge. */
static int moments_run(const void *x, int f64, int64_t n, int64_t d, double *mean, double *m2)
{
    int nt = nthreads_for((double)n * d);
    int64_t chunk = (d == 1 ? 32768 : 16384 / d) + 1;
    double *parts = calloc((size_t)(nt * 2 * d), sizeof(double));
    int64_t *counts = calloc((size_t)nt, sizeof(int64_t));
    int oom = !parts || !counts;
    if (!oom) {
#pragma omp parallel num_threads(nt) reduction(| : oom)
        {
            int t = omp_get_thread_num();
            int64_t per = (n + nt - 1) / nt, lo = t * per, hi = lo + per < n ? lo + per : n;
            double *cm = malloc(sizeof(double) * 2 * d), *cq = cm ? cm + d : NULL;
            if (!cm) oom = 1;
            for (int64_t r0 = lo; cm && r0 < hi; r0 += chunk) {
                int64_t rows = hi - r0 < chunk ? hi - r0 : chunk;
                if (f64) DISPATCH(moments_chunk_f64)((const double *)x + r0 * d, rows, d, cm, cq);
                else DISPATCH(moments_chunk_f32)((const float *)x + r0 * d, rows, d, cm, cq);
                chan_merge(&counts[t], parts + t * 2 * d, parts + t * 2 * d + d, rows, cm, cq, d);
            }
            free(cm);
        }
    }
    if (!oom) {
        int64_t total = 0;
        memset(mean, 0, sizeof(double) * d);
        memset(m2, 0, sizeof(double) * d);
        for (int t = 0; t < nt; t++)
            chan_merge(&total, mean, m2, counts[t], parts + t * 2 * d, parts + t * 2 * d + d, d);
    }
    free(parts);
    free(counts);
    return oom ? -1 : 0;
}

static PyObject *py_moments_batch(PyObject *self, PyObject *args)
{
    PyObject *xo;
    if (!PyArg_ParseTuple(args, "O", &xo)) return NULL;
    PyArrayObject *x = (PyArrayObject *)PyArray_FROM_OF(xo, NPY_ARRAY_IN_ARRAY);
    if (!x) return NULL;
    if (PyArray_NDIM(x) != 2 || (PyArray_TYPE(x) != NPY_FLOAT32 && PyArray_TYPE(x) != NPY_FLOAT64)) {
        Py_DECREF(x);
        PyErr_SetString(PyExc_ValueError, "moments_batch: x must be (N, D) float32 or float64");
        return NULL;
    }
    npy_intp n = PyArray_DIM(x, 0), d = PyArray_DIM(x, 1);
    PyArrayObject *mean = (PyArrayObject *)PyArray_SimpleNew(1, &d, NPY_FLOAT64);
    PyArrayObject *m2 = (PyArrayObject *)PyArray_SimpleNew(1, &d, NPY_FLOAT64);
    PyObject *res = NULL;
    if (mean && m2) {
        int rc;
        int f64 = PyArray_TYPE(x) == NPY_FLOAT64;
        Py_BEGIN_ALLOW_THREADS rc = moments_run(PyArray_DATA(x), f64, n, d, PyArray_DATA(mean), PyArray_DATA(m2));
        Py_END_ALLOW_THREADS if (rc < 0) PyErr_NoMemory();
        else res = Py_BuildValue("nOO", n, mean, m2);
    }
    Py_DECREF(x);
    Py_XDECREF(mean);
    Py_XDECREF(m2);
    return res;
}

/* ------------------------------------------------------------------ k-means */

typedef struct {
    const float *x;
    int64_t n, d, k;
    const float *c;      /* (k, d) float32 centroids */
    const double *cnorm; /* (k,) */
} AssignCtx;

/* labels/mindist for rows [r0, r0+nr); dots: scratch (k, TILE_ROWS). */
static void assign_block(const AssignCtx *a, int64_t r0, int64_t nr, float *dots, int64_t *labels,
                         double *mindist)
{
    const float *rows = a->x + r0 * a->d;
    (use_avx2 ? tile_dots_avx2 : tile_dots_scalar)(rows, nr, a->c, a->k, a->d, dots, TILE_ROWS);
    for (int64_t r = 0; r < nr; r++) {
        int64_t best = 0;
        double bd = INFINITY;
        for (int64_t j = 0; j < a->k; j++) {
            double v = a->cnorm[j] - 2.0 * dots[j * TILE_ROWS + r];
            if (v < bd) {
                bd = v;
                best = j;
            }
        }
        double dist = DISPATCH(sumsq)(rows + r * a->d, a->d) + bd;
        labels[r0 + r] = best;
        mindist[r0 + r] = dist > 0.0 ? dist : 0.0;
    }
}

/* Rows are cut into a fixed number of groups, each with its own partial sums, taken by threads on
 * demand and reduced in group order: the result does not depend on thread count or timing. */
static int lloyd_run(const AssignCtx *a, int64_t *labels, double *mindist, double *sums, int64_t *counts)
{
    int nt = nthreads_for((double)a->n * a->d * a->k);
    int64_t kd = a->k * a->d, tiles = (a->n + TILE_ROWS - 1) / TILE_ROWS;
    int64_t groups = (int64_t)(64e6 / (8.0 * (double)(kd + a->k)));
    groups = groups > 16 ? 16 : (groups < 1 ? 1 : groups);
    groups = groups > tiles ? tiles : groups;
    double *gsums = calloc((size_t)(groups * kd), sizeof(double));
    int64_t *gcounts = calloc((size_t)(groups * a->k), sizeof(int64_t));
    int oom = !gsums || !gcounts;
    if (!oom) {
#pragma omp parallel num_threads(nt) reduction(| : oom)
        {
            float *dots = malloc(sizeof(float) * TILE_ROWS * a->k);
            if (!dots) oom = 1;
#pragma omp for schedule(dynamic, 1)
            for (int64_t g = 0; g < groups; g++) {
                if (!dots) continue;
                for (int64_t t = g * tiles / groups; t < (g + 1) * tiles / groups; t++) {
                    int64_t r0 = t * TILE_ROWS, nr = a->n - r0 < TILE_ROWS ? a->n - r0 : TILE_ROWS;
                    assign_block(a, r0, nr, dots, labels, mindist);
                    DISPATCH(add_rows_by_label)(a->x + r0 * a->d, nr, a->d, labels + r0, gsums + g * kd,
                                                gcounts + g * a->k);
                }
            }
            free(dots);
        }
    }
    if (!oom) {
        memset(sums, 0, sizeof(double) * kd);
        memset(counts, 0, sizeof(int64_t) * a->k);
        for (int64_t g = 0; g < groups; g++) {
            for (int64_t j = 0; j < kd; j++) sums[j] += gsums[g * kd + j];
            for (int64_t j = 0; j < a->k; j++) counts[j] += gcounts[g * a->k + j];
        }
    }
    free(gsums);
    free(gcounts);
    return oom ? -1 : 0;
}

/* float32 copy of centroids c (k, d) float64 and their squared norms (of the float32 copy). */
static int centroids_f32(PyArrayObject *ca, float **cf, double **cn)
{
    int64_t k = PyArray_DIM(ca, 0), d = PyArray_DIM(ca, 1);
    const double *c = PyArray_DATA(ca);
    *cf = malloc(sizeof(float) * (size_t)(k * d + 8));
    *cn = malloc(sizeof(double) * (size_t)k);
    if (!*cf || !*cn) return -1;
    for (int64_t j = 0; j < k; j++) {
        double s = 0.0;
        for (int64_t i = 0; i < d; i++) {
            float v = (float)c[j * d + i];
            (*cf)[j * d + i] = v;
            s += (double)v * v;
        }
        (*cn)[j] = s;
    }
    return 0;
}

static PyObject *py_lloyd_step(PyObject *self, PyObject *args)
{
    PyObject *xo, *co;
    if (!PyArg_ParseTuple(args, "OO", &xo, &co)) return NULL;
    PyArrayObject *x = as_array(xo, NPY_FLOAT32, 2, 2, "x"), *ca = NULL;
    PyArrayObject *lab = NULL, *md = NULL, *sums = NULL, *cnt = NULL;
    PyObject *res = NULL;
    float *cf = NULL;
    double *cn = NULL;
    if (!x || !(ca = as_array(co, NPY_FLOAT64, 2, 2, "centroids"))) goto done;
    if (PyArray_DIM(ca, 1) != PyArray_DIM(x, 1)) {
        PyErr_SetString(PyExc_ValueError, "x and centroids differ in dimension");
        goto done;
    }
    npy_intp n = PyArray_DIM(x, 0), k = PyArray_DIM(ca, 0);
    if (k < 1) {
        PyErr_SetString(PyExc_ValueError, "lloyd_step: at least one centroid");
        goto done;
    }
    lab = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_INT64);
    md = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT64);
    sums = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(ca), NPY_FLOAT64);
    cnt = (PyArrayObject *)PyArray_SimpleNew(1, &k, NPY_INT64);
    if (!lab || !md || !sums || !cnt) goto done;
    if (centroids_f32(ca, &cf, &cn) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    AssignCtx a = {PyArray_DATA(x), n, PyArray_DIM(x, 1), k, cf, cn};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = lloyd_run(&a, PyArray_DATA(lab), PyArray_DATA(md), PyArray_DATA(sums), PyArray_DATA(cnt));
    Py_END_ALLOW_THREADS if (rc < 0) PyErr_NoMemory();
    else res = PyTuple_Pack(4, lab, md, sums, cnt);
done:
    free(cf);
    free(cn);
    Py_XDECREF(x);
    Py_XDECREF(ca);
    Py_XDECREF(lab);
    Py_XDECREF(md);
    Py_XDECREF(sums);
    Py_XDECREF(cnt);
    return res;
}

/* (N, M) float64 squared distances between rows of x and of c, clamped at 0. */
static PyObject *py_sqdist(PyObject *self, PyObject *args)
{
    PyObject *xo, *co;
    if (!PyArg_ParseTuple(args, "OO", &xo, &co)) return NULL;
    PyArrayObject *x = as_array(xo, NPY_FLOAT32, 2, 2, "x"), *ca = NULL, *out = NULL;
    float *cf = NULL;
    double *cn = NULL;
    if (!x || !(ca = as_array(co, NPY_FLOAT64, 2, 2, "c"))) goto done;
    if (PyArray_DIM(ca, 1) != PyArray_DIM(x, 1)) {
        PyErr_SetString(PyExc_ValueError, "x and c differ in dimension");
        goto done;
    }
    int64_t n = PyArray_DIM(x, 0), d = PyArray_DIM(x, 1), m = PyArray_DIM(ca, 0);
    npy_intp dims[2] = {n, m};
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT64))) goto done;
    if (centroids_f32(ca, &cf, &cn) < 0) {
        PyErr_NoMemory();
        Py_CLEAR(out);
        goto done;
    }
    const float *xd = PyArray_DATA(x);
    double *od = PyArray_DATA(out);
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(nthreads_for((double)n * d * m)) reduction(| : oom)
    {
        float *dots = malloc(sizeof(float) * TILE_ROWS * m);
        if (!dots) oom = 1;
#pragma omp for schedule(dynamic, 8)
        for (int64_t r0 = 0; r0 < n; r0 += TILE_ROWS) {
            if (!dots) continue;
            int64_t nr = n - r0 < TILE_ROWS ? n - r0 : TILE_ROWS;
            (use_avx2 ? tile_dots_avx2 : tile_dots_scalar)(xd + r0 * d, nr, cf, m, d, dots, TILE_ROWS);
            for (int64_t r = 0; r < nr; r++) {
                double xn = DISPATCH(sumsq)(xd + (r0 + r) * d, d);
                for (int64_t j = 0; j < m; j++) {
                    double v = xn + cn[j] - 2.0 * dots[j * TILE_ROWS + r];
                    od[(r0 + r) * m + j] = v > 0.0 ? v : 0.0;
                }
            }
        }
        free(dots);
    }
    Py_END_ALLOW_THREADS if (oom)
    {
        PyErr_NoMemory();
        Py_CLEAR(out);
    }
done:
    free(cf);
    free(cn);
    Py_XDECREF(x);
    Py_XDECREF(ca);
    return (PyObject *)out;
}

/* ------------------------------------------------------------------ attention */

static int attention_run(ScoreCtx *c, const float *v, int64_t dv, float *mass, float *out)
{
    int rc = score_all(c, mass);
    if (rc != 0) return rc;
    int64_t n = c->n, nq = c->nq;
    for (int64_t q = 0; q < nq; q++) { /* softmax per query: exp(s - max) / sum */
        float *w = mass + q * n;
        float mx = -INFINITY;
        for (int64_t i = 0; i < n; i++) mx = w[i] > mx ? w[i] : mx;
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) sum += (w[i] = expf(w[i] - mx));
        float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < n; i++) w[i] *= inv;
    }
    int nt = nthreads_for((double)n * dv * nq);
    double *acc = calloc((size_t)(nt * nq * dv), sizeof(double));
    if (!acc) return -1;
#pragma omp parallel num_threads(nt)
    {
        double *mine = acc + omp_get_thread_num() * nq * dv;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++)
            for (int64_t q = 0; q < nq; q++) DISPATCH(axpy_f64)(mine + q * dv, mass[q * n + i], v + i * dv, dv);
    }
    for (int64_t j = 0; j < nq * dv; j++) {
        double s = 0.0;
        for (int t = 0; t < nt; t++) s += acc[t * nq * dv + j];
        out[j] = (float)s;
        rc |= !isfinite(out[j]);
    }
    free(acc);
    return rc;
}

static PyObject *py_attention(PyObject *self, PyObject *args)
{
    PyObject *qo, *ko, *vo;
    if (!PyArg_ParseTuple(args, "OOO", &qo, &ko, &vo)) return NULL;
    ScoreCtx c;
    PyArrayObject *qa, *ka, *sa, *va = NULL, *mass = NULL, *out = NULL;
    PyObject *res = NULL;
    if (parse_score_args(qo, ko, Py_None, 0, &c, &qa, &ka, &sa) < 0) goto done;
    if (c.mtype != MT_F32 || !(va = as_array(vo, NPY_FLOAT32, 2, 2, "V"))) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "K must be float32");
        goto done;
    }
    if (PyArray_DIM(va, 0) != c.n) {
        PyErr_SetString(PyExc_ValueError, "K and V differ in number of rows");
        goto done;
    }
    int64_t dv = PyArray_DIM(va, 1);
    npy_intp md[2] = {c.nq, c.n}, od[2] = {c.nq, dv};
    mass = (PyArrayObject *)PyArray_SimpleNew(2, md, NPY_FLOAT32);
    out = (PyArrayObject *)PyArray_SimpleNew(2, od, NPY_FLOAT32);
    if (!mass || !out) goto done;
    c.q = PyArray_DATA(qa);
    c.factor = (float)(1.0 / sqrt((double)c.d));
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = attention_run(&c, PyArray_DATA(va), dv, PyArray_DATA(mass), PyArray_DATA(out));
    Py_END_ALLOW_THREADS if (rc < 0) PyErr_NoMemory();
    else if (rc > 0) PyErr_SetString(PyExc_ValueError, "non-finite value: NaN/inf in the input (or overflow)");
    else res = PyTuple_Pack(2, out, mass);
done:
    Py_XDECREF(qa);
    Py_XDECREF(ka);
    Py_XDECREF(va);
    Py_XDECREF(mass);
    Py_XDECREF(out);
    return res;
}

/* ------------------------------------------------------------------ causal */

static PyObject *py_lagged_xcorr(PyObject *self, PyObject *args)
{
    PyObject *xo, *yo;
    Py_ssize_t L;
    if (!PyArg_ParseTuple(args, "OOn", &xo, &yo, &L)) return NULL;
    PyArrayObject *x = as_array(xo, NPY_FLOAT64, 1, 1, "x"), *y = NULL, *out = NULL;
    if (!x || !(y = as_array(yo, NPY_FLOAT64, 1, 1, "y"))) goto done;
    int64_t n = PyArray_DIM(x, 0);
    if (PyArray_DIM(y, 0) != n || L < 0 || L > n - 2) {
        PyErr_SetString(PyExc_ValueError, "lagged_xcorr: x, y of equal length T and 0 <= max_lag <= T-2");
        goto done;
    }
    npy_intp m = 2 * L + 1;
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(1, &m, NPY_FLOAT64))) goto done;
    const double *xd = PyArray_DATA(x), *yd = PyArray_DATA(y);
    double *od = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(nthreads_for((double)n * m)) schedule(dynamic)
    for (npy_intp j = 0; j < m; j++) {
        int64_t lag = j - L;
        od[j] = lag >= 0 ? DISPATCH(pearson)(xd, yd + lag, n - lag) : DISPATCH(pearson)(xd - lag, yd, n + lag);
    }
    Py_END_ALLOW_THREADS done : Py_XDECREF(x);
    Py_XDECREF(y);
    return (PyObject *)out;
}

/* RSS of the OLS fit of t (m,) on an intercept plus columns 1..p-1 of X (m, ld) (column 0 is the
 * intercept). Regressors and target are centred (which absorbs the intercept) and the normal
 * equations scaled to unit diagonal before Cholesky, so a large offset or scale costs no accuracy;
 * returns -1 if the regressors are collinear, -2 if out of memory. */
static double ols_rss(const double *X, int64_t m, int64_t ld, int64_t p, const double *t)
{
    int64_t q = p - 1;
    double *A = calloc((size_t)(q * q + 4 * q + 1), sizeof(double));
    if (!A) return -2;
    double *b = A + q * q, *beta = b + q, *mu = beta + q, *sc = mu + q, tm = 0.0;
    for (int64_t r = 0; r < m; r++) {
        tm += t[r];
        for (int64_t i = 0; i < q; i++) mu[i] += X[r * ld + 1 + i];
    }
    tm /= (double)m;
    for (int64_t i = 0; i < q; i++) mu[i] /= (double)m;
    for (int64_t r = 0; r < m; r++) {
        const double *xr = X + r * ld + 1;
        double tc = t[r] - tm;
        for (int64_t i = 0; i < q; i++) {
            double xi = xr[i] - mu[i];
            b[i] += xi * tc;
            for (int64_t j = 0; j <= i; j++) A[i * q + j] += xi * (xr[j] - mu[j]);
        }
    }
    for (int64_t i = 0; i < q; i++) {
        if (!(A[i * q + i] > 0.0)) { /* a constant regressor duplicates the intercept */
            free(A);
            return -1;
        }
        sc[i] = 1.0 / sqrt(A[i * q + i]);
    }
    for (int64_t i = 0; i < q; i++) {
        b[i] *= sc[i];
        for (int64_t j = 0; j <= i; j++) A[i * q + j] *= sc[i] * sc[j];
    }
    for (int64_t j = 0; j < q; j++) { /* in-place lower Cholesky of the unit-diagonal matrix */
        double s = A[j * q + j];
        for (int64_t l = 0; l < j; l++) s -= A[j * q + l] * A[j * q + l];
        if (!(s > 1e-12)) {
            free(A);
            return -1;
        }
        A[j * q + j] = sqrt(s);
        for (int64_t i = j + 1; i < q; i++) {
            double v = A[i * q + j];
            for (int64_t l = 0; l < j; l++) v -= A[i * q + l] * A[j * q + l];
            A[i * q + j] = v / A[j * q + j];
        }
    }
    for (int64_t i = 0; i < q; i++) { /* L z = b */
        double v = b[i];
        for (int64_t l = 0; l < i; l++) v -= A[i * q + l] * beta[l];
        beta[i] = v / A[i * q + i];
    }
    for (int64_t i = q - 1; i >= 0; i--) { /* L^T y = z, then undo the scaling */
        double v = beta[i];
        for (int64_t l = i + 1; l < q; l++) v -= A[l * q + i] * beta[l];
        beta[i] = v / A[i * q + i];
    }
    for (int64_t i = 0; i < q; i++) beta[i] *= sc[i];
    double rss = 0.0;
    for (int64_t r = 0; r < m; r++) {
        double e = t[r] - tm;
        for (int64_t i = 0; i < q; i++) e -= (X[r * ld + 1 + i] - mu[i]) * beta[i];
        rss += e * e;
    }
    free(A);
    return rss;
}

static PyObject *py_granger_rss(PyObject *self, PyObject *args)
{
    PyObject *xo, *yo;
    Py_ssize_t lag;
    if (!PyArg_ParseTuple(args, "OOn", &xo, &yo, &lag)) return NULL;
    PyArrayObject *x = as_array(xo, NPY_FLOAT64, 1, 1, "x"), *y = NULL;
    PyObject *res = NULL;
    if (!x || !(y = as_array(yo, NPY_FLOAT64, 1, 1, "y"))) goto done;
    int64_t n = PyArray_DIM(x, 0), m = n - lag, p = 1 + 2 * lag;
    if (PyArray_DIM(y, 0) != n || lag < 1 || m - p < 1) {
        PyErr_SetString(PyExc_ValueError, "granger_f: x, y of equal length T, lag >= 1, T - 3*lag - 1 >= 1");
        goto done;
    }
    const double *xd = PyArray_DATA(x), *yd = PyArray_DATA(y);
    double *X = malloc(sizeof(double) * (size_t)(m * p)), r_rss = -2, u_rss = -2;
    if (X) {
        Py_BEGIN_ALLOW_THREADS for (int64_t r = 0; r < m; r++)
        {
            X[r * p] = 1.0;
            for (int64_t j = 1; j <= lag; j++) {
                X[r * p + j] = yd[lag + r - j];
                X[r * p + lag + j] = xd[lag + r - j];
            }
        }
        r_rss = ols_rss(X, m, p, 1 + lag, yd + lag);
        u_rss = r_rss < 0 ? r_rss : ols_rss(X, m, p, p, yd + lag);
        Py_END_ALLOW_THREADS free(X);
    }
    if (r_rss == -2 || u_rss == -2) PyErr_NoMemory();
    else if (r_rss < 0 || u_rss < 0)
        PyErr_SetString(PyExc_ValueError, "granger_f: regressors are collinear (constant or duplicated series)");
    else res = Py_BuildValue("ddn", r_rss, u_rss, (Py_ssize_t)m);
done:
    Py_XDECREF(x);
    Py_XDECREF(y);
    return res;
}

/* ------------------------------------------------------------------ n-gram repetition */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Number of n-grams (of T - n + 1) equal to an earlier one; open addressing on n-gram hashes. */
static int64_t repeated_ngrams(const int64_t *tok, int64_t T, int64_t n)
{
    int64_t g = T - n + 1, cap = 16, rep = 0;
    while (cap < 2 * g) cap <<= 1;
    int64_t *slot = malloc(sizeof(int64_t) * (size_t)cap);
    uint64_t *hs = malloc(sizeof(uint64_t) * (size_t)cap);
    if (!slot || !hs) {
        free(slot);
        free(hs);
        return -1;
    }
    memset(slot, 0xff, sizeof(int64_t) * (size_t)cap);
    for (int64_t i = 0; i < g; i++) {
        uint64_t h = 0x9e3779b97f4a7c15ULL;
        for (int64_t j = 0; j < n; j++) h = mix64(h ^ (uint64_t)tok[i + j]);
        for (int64_t s = (int64_t)(h & (uint64_t)(cap - 1));; s = (s + 1) & (cap - 1)) {
            if (slot[s] < 0) {
                slot[s] = i;
                hs[s] = h;
                break;
            }
            if (hs[s] == h && memcmp(tok + slot[s], tok + i, sizeof(int64_t) * (size_t)n) == 0) {
                rep++;
                break;
            }
        }
    }
    free(slot);
    free(hs);
    return rep;
}

static PyObject *py_repetition_rate(PyObject *self, PyObject *args)
{
    PyObject *to;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "On", &to, &n)) return NULL;
    PyArrayObject *t = as_array(to, NPY_INT64, 1, 1, "tokens");
    if (!t) return NULL;
    int64_t T = PyArray_DIM(t, 0), rep = 0;
    if (n < 1) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_ValueError, "n must be >= 1");
        return NULL;
    }
    if (T - n + 1 <= 0) {
        Py_DECREF(t);
        return PyFloat_FromDouble(0.0);
    }
    Py_BEGIN_ALLOW_THREADS rep = repeated_ngrams(PyArray_DATA(t), T, n);
    Py_END_ALLOW_THREADS Py_DECREF(t);
    if (rep < 0) return PyErr_NoMemory();
    return PyFloat_FromDouble((double)rep / (double)(T - n + 1));
}

/* ------------------------------------------------------------------ SHA-256 and Merkle (RFC 6962) */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

/* SHA-256 of prefix byte || a (la bytes) || b (lb bytes); prefix < 0 means no prefix byte. */
static void sha256_parts(int prefix, const uint8_t *a, size_t la, const uint8_t *b, size_t lb, uint8_t out[32])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint8_t blk[64];
    size_t fill = 0, total = 0;
#define FEED(ptr, len)                                                                             \
    for (size_t i_ = 0; i_ < (len); i_++) {                                                        \
        blk[fill++] = (ptr)[i_];                                                                   \
        if (fill == 64) {                                                                          \
            sha256_block(h, blk);                                                                  \
            fill = 0;                                                                              \
        }                                                                                          \
    }                                                                                              \
    total += (len);
    if (prefix >= 0) {
        uint8_t pb = (uint8_t)prefix;
        FEED(&pb, 1);
    }
    FEED(a, la);
    FEED(b, lb);
#undef FEED
    uint64_t bits = (uint64_t)total * 8;
    blk[fill++] = 0x80;
    if (fill > 56) {
        memset(blk + fill, 0, 64 - fill);
        sha256_block(h, blk);
        fill = 0;
    }
    memset(blk + fill, 0, 56 - fill);
    for (int i = 0; i < 8; i++) blk[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_block(h, blk);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

static PyObject *py_sha256(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    uint8_t out[32];
    Py_BEGIN_ALLOW_THREADS sha256_parts(-1, buf.buf, (size_t)buf.len, NULL, 0, out);
    Py_END_ALLOW_THREADS PyBuffer_Release(&buf);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

/* Hashes level (cnt, 32) into the next level in place of nxt; returns the new count. */
static int64_t merkle_up(const uint8_t *level, int64_t cnt, uint8_t *nxt)
{
    int64_t pairs = cnt / 2;
#pragma omp parallel for num_threads(nthreads_for((double)pairs * 400)) schedule(static)
    for (int64_t i = 0; i < pairs; i++) sha256_parts(1, level + 64 * i, 32, level + 64 * i + 32, 32, nxt + 32 * i);
    if (cnt % 2) memcpy(nxt + 32 * pairs, level + 32 * (cnt - 1), 32);
    return pairs + cnt % 2;
}

static uint8_t *merkle_leaves(const uint8_t *d, int64_t n)
{
    uint8_t *lv = malloc((size_t)(32 * n));
    if (!lv) return NULL;
#pragma omp parallel for num_threads(nthreads_for((double)n * 200)) schedule(static)
    for (int64_t i = 0; i < n; i++) sha256_parts(0, d + 32 * i, 32, NULL, 0, lv + 32 * i);
    return lv;
}

static int digest_buffer(PyObject *args, Py_buffer *buf, Py_ssize_t *index)
{
    int ok = index ? PyArg_ParseTuple(args, "y*n", buf, index) : PyArg_ParseTuple(args, "y*", buf);
    if (!ok) return -1;
    if (buf->len == 0 || buf->len % 32) {
        PyBuffer_Release(buf);
        PyErr_SetString(PyExc_ValueError, "digests: a non-empty multiple of 32 bytes");
        return -1;
    }
    return 0;
}

static PyObject *py_merkle_root(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    if (digest_buffer(args, &buf, NULL) < 0) return NULL;
    int64_t n = buf.len / 32;
    uint8_t root[32];
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS uint8_t *lv = merkle_leaves(buf.buf, n), *nx = malloc((size_t)(16 * n + 32));
    if (!lv || !nx) oom = 1;
    else {
        while (n > 1) { /* ping-pong: threads must not overwrite pairs others still read */
            n = merkle_up(lv, n, nx);
            uint8_t *t = lv;
            lv = nx;
            nx = t;
        }
        memcpy(root, lv, 32);
    }
    free(lv);
    free(nx);
    Py_END_ALLOW_THREADS PyBuffer_Release(&buf);
    if (oom) return PyErr_NoMemory();
    return PyBytes_FromStringAndSize((const char *)root, 32);
}

/* -> (siblings bytes (P*32), sides bytes (P,), 1 = sibling is on the left) */
static PyObject *py_merkle_proof(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t index;
    if (digest_buffer(args, &buf, &index) < 0) return NULL;
    int64_t n = buf.len / 32, p = 0;
    if (index < 0 || index >= n) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_IndexError, "merkle_proof: index out of range");
        return NULL;
    }
    uint8_t sib[64 * 32], side[64];
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS uint8_t *lv = merkle_leaves(buf.buf, n), *nx = malloc((size_t)(16 * n + 32));
    if (!lv || !nx) oom = 1;
    for (; !oom && n > 1; index /= 2) {
        int64_t s = index ^ 1;
        if (s < n) {
            memcpy(sib + 32 * p, lv + 32 * s, 32);
            side[p++] = s < index;
        }
        n = merkle_up(lv, n, nx);
        uint8_t *t = lv;
        lv = nx;
        nx = t;
    }
    free(lv);
    free(nx);
    Py_END_ALLOW_THREADS PyBuffer_Release(&buf);
    if (oom) return PyErr_NoMemory();
    return Py_BuildValue("y#y#", (const char *)sib, (Py_ssize_t)(32 * p), (const char *)side, (Py_ssize_t)p);
}

static PyObject *py_merkle_fold(PyObject *self, PyObject *args)
{
    Py_buffer leaf, sib, side;
    if (!PyArg_ParseTuple(args, "y*y*y*", &leaf, &sib, &side)) return NULL;
    PyObject *res = NULL;
    if (leaf.len != 32 || sib.len != 32 * side.len) {
        PyErr_SetString(PyExc_ValueError, "merkle_fold: 32-byte leaf and one 32-byte sibling per side flag");
    } else {
        uint8_t h[32], t[32];
        const uint8_t *s = sib.buf, *sd = side.buf;
        sha256_parts(0, leaf.buf, 32, NULL, 0, h);
        for (Py_ssize_t i = 0; i < side.len; i++) {
            if (sd[i]) sha256_parts(1, s + 32 * i, 32, h, 32, t);
            else sha256_parts(1, h, 32, s + 32 * i, 32, t);
            memcpy(h, t, 32);
        }
        res = PyBytes_FromStringAndSize((const char *)h, 32);
    }
    PyBuffer_Release(&leaf);
    PyBuffer_Release(&sib);
    PyBuffer_Release(&side);
    return res;
}

/* ------------------------------------------------------------------ module */

static PyObject *py_simd(PyObject *self, PyObject *args) { return PyUnicode_FromString(use_avx2 ? "avx2" : "scalar"); }

static PyObject *py_set_simd(PyObject *self, PyObject *args)
{
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    use_avx2 = on && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    return PyUnicode_FromString(use_avx2 ? "avx2" : "scalar");
}

static PyMethodDef methods[] = {
    {"scores", py_scores, METH_VARARGS, "scores(queries (Q,D) f32, matrix (N,D) f32|f16|i8, scale|None, cosine) -> (Q,N) f32"},
    {"topk", py_topk, METH_VARARGS, "topk(queries, matrix, scale|None, cosine, k) -> (idx (Q,k) i64, scores (Q,k) f32)"},
    {"quantize_int8", py_quantize_int8, METH_VARARGS, "quantize_int8(matrix (N,D) f32) -> (q i8, scale f32)"},
    {"moments_batch", py_moments_batch, METH_VARARGS, "moments_batch(x (N,D) f32|f64) -> (n, mean, m2)"},
    {"lloyd_step", py_lloyd_step, METH_VARARGS, "lloyd_step(x (N,D) f32, c (K,D) f64) -> labels, mindist, sums, counts"},
    {"sqdist", py_sqdist, METH_VARARGS, "sqdist(x (N,D) f32, c (M,D) f64) -> (N,M) f64"},
    {"attention", py_attention, METH_VARARGS, "attention(q (Q,D), K (N,D), V (N,Dv)) f32 -> (out, mass)"},
    {"lagged_xcorr", py_lagged_xcorr, METH_VARARGS, "lagged_xcorr(x f64, y f64, max_lag) -> (2L+1,) f64"},
    {"granger_rss", py_granger_rss, METH_VARARGS, "granger_rss(x f64, y f64, lag) -> (rss_r, rss_u, n_obs)"},
    {"repetition_rate", py_repetition_rate, METH_VARARGS, "repetition_rate(tokens i64, n) -> float"},
    {"sha256", py_sha256, METH_VARARGS, "sha256(bytes) -> 32 bytes"},
    {"merkle_root", py_merkle_root, METH_VARARGS, "merkle_root(digests N*32 bytes) -> 32 bytes"},
    {"merkle_proof", py_merkle_proof, METH_VARARGS, "merkle_proof(digests, index) -> (siblings, sides)"},
    {"merkle_fold", py_merkle_fold, METH_VARARGS, "merkle_fold(leaf, siblings, sides) -> root"},
    {"simd", py_simd, METH_NOARGS, "instruction set in use: 'avx2' or 'scalar'"},
    {"set_simd", py_set_simd, METH_VARARGS, "set_simd(on) -> instruction set now in use (for tests)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_core",
                                       "Fast CPU kernels of native.vector (spec: native/reference.py)", -1, methods};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();
    use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    return PyModule_Create(&moduledef);
}
