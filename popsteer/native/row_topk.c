/* Top-k of each row of a float32 matrix: values best first, ties by LOWER column first.
 *
 * One pass per row. The k best so far sit in a sorted array; its last value is the
 * threshold. Most of the row is only compared against the threshold, 32 columns at a
 * time (AVX-512 / AVX2 where the compiler targets them), and the rare column above it
 * is insertion-sorted in. A column enters only if strictly greater than the k-th value
 * so far, so among equal values the earlier column wins. NaN never enters (it compares
 * false); the row is flagged instead, for the caller to rank it some other way.
 *
 * Plain C, no Python or torch headers: built by popsteer/native.py, called through ctypes
 * (which releases the GIL, so threads can rank disjoint row ranges at once).
 */
#include <math.h>
#include <stdint.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

static inline void insert(float *v, int64_t *ix, int64_t k, float x, int64_t col) {
    int64_t p = k - 1;                 /* the old k-th entry drops out */
    while (p > 0 && v[p - 1] < x) {    /* equal values stay ahead: lower column first */
        v[p] = v[p - 1];
        ix[p] = ix[p - 1];
        p--;
    }
    v[p] = x;
    ix[p] = col;
}

/* Bit i of the result is set when row[j + i] > t, for i in [0, 32). */
static inline uint32_t above(const float *row, int64_t j, float t) {
#if defined(__AVX512F__)
    __m512 tv = _mm512_set1_ps(t);
    uint32_t lo = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + j), tv, _CMP_GT_OQ);
    uint32_t hi = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + j + 16), tv, _CMP_GT_OQ);
    return lo | (hi << 16);
#elif defined(__AVX2__)
    __m256 tv = _mm256_set1_ps(t);
    uint32_t m = 0;
    for (int q = 0; q < 4; q++)
        m |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + j + 8 * q), tv, _CMP_GT_OQ)) << (8 * q);
    return m;
#else
    uint32_t m = 0;
    for (int q = 0; q < 32; q++)
        m |= (uint32_t)(row[j + q] > t) << q;
    return m;
#endif
}

/* Columns [0, cols) with values > lo, in column order, into the sorted v/ix (at most k kept); the
 * number kept. Once k are kept, only values above the k-th enter. */
static inline int64_t scan(const float *row, int64_t cols, int64_t k, float lo, float *v, int64_t *ix) {
    int64_t n = 0, j = 0;
    float t = lo;
    for (; j + 32 <= cols; j += 32) {
        uint32_t m = above(row, j, t);
        while (m) {
            int b = __builtin_ctz(m);
            m &= m - 1;
            float x = row[j + b];
            if (x > t) {               /* t may have risen since the mask was taken */
                insert(v, ix, n < k ? ++n : k, x, j + b);
                if (n == k) t = v[k - 1];
            }
        }
    }
    for (; j < cols; j++) {
        float x = row[j];
        if (x > t) {
            insert(v, ix, n < k ? ++n : k, x, j);
            if (n == k) t = v[k - 1];
        }
    }
    return n;
}

/* A value with at least k columns >= it (k <= 32 <= cols): the k-th largest of 32 lane maxima,
 * lane q holding columns q, q + 32, ... (distinct columns, so a lower bound on the k-th largest).
 * Sets *nan when the row holds a NaN. */
static inline float lane_bound(const float *row, int64_t cols, int64_t k, uint8_t *nan) {
    float m[32];
    uint32_t odd[32];
    for (int q = 0; q < 32; q++) { m[q] = -INFINITY; odd[q] = 0; }
    int64_t j = 0;
    for (; j + 32 <= cols; j += 32)
        for (int q = 0; q < 32; q++) {
            float x = row[j + q];
            m[q] = x > m[q] ? x : m[q];  /* vmaxps; NaN skipped */
            odd[q] |= x != x;
        }
    uint32_t any = 0;
    for (; j < cols; j++) any |= row[j] != row[j];
    for (int q = 0; q < 32; q++) any |= odd[q];
    *nan = any != 0;
    for (int a = 1; a < 32; a++) {    /* insertion sort, descending */
        float x = m[a];
        int p = a;
        while (p > 0 && m[p - 1] < x) { m[p] = m[p - 1]; p--; }
        m[p] = x;
    }
    return m[k - 1];
}

/* scores: rows x cols, row r at scores + r * ld. out_v, out_i: rows x k; out_nan: rows (1 = the row
 * holds a NaN, which this kernel never selects). Needs 1 <= k <= cols. */
void popsteer_row_topk_f32(const float *scores, int64_t rows, int64_t cols, int64_t ld, int64_t k,
                           float *out_v, int64_t *out_i, uint8_t *out_nan) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = scores + r * ld;
        float *v = out_v + r * k;
        int64_t *ix = out_i + r * k;
        /* Pass 1 (cheap, vertical max) bounds the k-th value from below, so pass 2 inserts few
         * columns. Every column >= the bound is a candidate: x > nextafter(bound, -inf). */
        float lo = -INFINITY;
        if (k <= 32 && cols >= 32) {
            lo = nextafterf(lane_bound(row, cols, k, out_nan + r), -INFINITY);
        } else {
            uint32_t any = 0;
            for (int64_t j = 0; j < cols; j++) any |= row[j] != row[j];
            out_nan[r] = any != 0;
        }
        if (scan(row, cols, k, lo, v, ix) < k) {
            /* fewer than k values above -inf (or NaN): keep the first k columns, then the rest */
            for (int64_t j = 0; j < k; j++) { v[j] = row[j]; ix[j] = j; }
            for (int64_t a = 1; a < k; a++) {  /* stable sort of the first k, descending */
                float x = v[a]; int64_t c = ix[a], p = a;
                while (p > 0 && v[p - 1] < x) { v[p] = v[p - 1]; ix[p] = ix[p - 1]; p--; }
                v[p] = x; ix[p] = c;
            }
            for (int64_t j = k; j < cols; j++)
                if (row[j] > v[k - 1]) insert(v, ix, k, row[j], j);
        }
    }
}
