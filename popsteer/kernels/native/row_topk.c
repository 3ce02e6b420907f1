/* Top-k of each row of a float32 matrix (or of its ReLU): values best first, ties by LOWER column first.
 *
 * Per row, a cheap first pass bounds the k-th value from below (lane maxima, see lane_bound),
 * then one pass does the selection. The k best so far sit in a sorted array; its last value is the
 * threshold. Most of the row is only compared against the threshold, 32 columns at a
 * time (AVX-512 / AVX2 where the compiler targets them), and the rare column above it
 * is insertion-sorted in. A column enters only if strictly greater than the k-th value
 * so far, so among equal values the earlier column wins. NaN never enters (it compares
 * false); the row is flagged instead, for the caller to rank it some other way.
 *
 * Plain C, no Python or torch headers: built by popsteer/native/__init__.py, called through ctypes
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

/* The value ranked at column j: the entry, or with relu its ReLU (NaN, -0 and negatives are 0). */
static inline float val(const float *row, int64_t j, int relu) {
    float x = row[j];
    return relu ? (x > 0 ? x : 0.0f) : x;
}

/* Bit i of the result is set when val(row, j + i) > t, for i in [0, 32). */
static inline uint32_t above(const float *row, int64_t j, float t, int relu) {
    if (relu && t < 0) return 0xFFFFFFFFu;  /* every ReLU value is >= 0 > t; for t >= 0, relu(x) > t iff x > t */
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
static inline int64_t scan(const float *row, int64_t cols, int64_t k, float lo, int relu, float *v, int64_t *ix) {
    int64_t n = 0, j = 0;
    float t = lo;
    for (; j + 32 <= cols; j += 32) {
        uint32_t m = above(row, j, t, relu);
        while (m) {
            int b = __builtin_ctz(m);
            m &= m - 1;
            float x = val(row, j + b, relu);
            if (x > t) {               /* t may have risen since the mask was taken */
                insert(v, ix, n < k ? ++n : k, x, j + b);
                if (n == k) t = v[k - 1];
            }
        }
    }
    for (; j < cols; j++) {
        float x = val(row, j, relu);
        if (x > t) {
            insert(v, ix, n < k ? ++n : k, x, j);
            if (n == k) t = v[k - 1];
        }
    }
    return n;
}

/* A value with at least k columns >= it (k <= lanes <= cols): the k-th largest of the lane maxima,
 * lane q holding columns q, q + lanes, ... (distinct columns, so a lower bound on the k-th largest;
 * with relu, of the ReLU values). Sets *nan when the row holds a NaN (never with relu: NaN is 0). */
static inline float lane_bound(const float *row, int64_t cols, int64_t k, int relu, uint8_t *nan, const int lanes) {
    float m[64];
    uint32_t odd[64];
    for (int q = 0; q < lanes; q++) { m[q] = -INFINITY; odd[q] = 0; }
    int64_t j = 0;
    for (; j + lanes <= cols; j += lanes)
        for (int q = 0; q < lanes; q++) {
            float x = row[j + q];
            m[q] = x > m[q] ? x : m[q];  /* vmaxps; NaN skipped */
            odd[q] |= x != x;
        }
    uint32_t any = 0;
    for (; j < cols; j++) any |= row[j] != row[j];
    for (int q = 0; q < lanes; q++) {
        any |= odd[q];
        if (relu && !(m[q] > 0)) m[q] = 0.0f;  /* max of ReLU values = ReLU of the max */
    }
    *nan = !relu && any != 0;
    float top[64];  /* the k largest lane maxima so far, descending */
    int n = 0;
    for (int q = 0; q < lanes; q++) {
        float x = m[q];
        if (n == k && !(x > top[k - 1])) continue;
        int p = n < k ? n++ : k - 1;
        while (p > 0 && top[p - 1] < x) { top[p] = top[p - 1]; p--; }
        top[p] = x;
    }
    return top[k - 1];
}

/* scores: rows x cols, row r at scores + r * ld. out_v, out_i: rows x k; out_nan: rows (1 = the row
 * holds a NaN, which this kernel never selects). relu: rank ReLU(scores) instead (out_v holds
 * ReLU values; NaN counts as 0, never flagged). Needs 1 <= k <= cols. */
void popsteer_row_topk_f32(const float *scores, int64_t rows, int64_t cols, int64_t ld, int64_t k, int32_t relu,
                           float *out_v, int64_t *out_i, uint8_t *out_nan) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = scores + r * ld;
        float *v = out_v + r * k;
        int64_t *ix = out_i + r * k;
        /* Every column >= the bound is a candidate: val > nextafter(bound, -inf). */
        float lo = -INFINITY;
        if (k <= 32 && cols >= 32 && cols < 64) {
            lo = nextafterf(lane_bound(row, cols, k, relu, out_nan + r, 32), -INFINITY);
        } else if (k <= 64 && cols >= 64) {
            lo = nextafterf(lane_bound(row, cols, k, relu, out_nan + r, 64), -INFINITY);
        } else {
            uint32_t any = 0;
            for (int64_t j = 0; j < cols; j++) any |= row[j] != row[j];
            out_nan[r] = !relu && any != 0;
        }
        if (scan(row, cols, k, lo, relu, v, ix) < k) {
            /* fewer than k values above -inf (or NaN): keep the first k columns (stably sorted), then the rest */
            for (int64_t j = 0; j < k; j++) insert(v, ix, j + 1, val(row, j, relu), j);
            for (int64_t j = k; j < cols; j++) {
                float x = val(row, j, relu);
                if (x > v[k - 1]) insert(v, ix, k, x, j);
            }
        }
    }
}

/* Bit i of the result: row[j + i] > t, for i in [0, 32); *odd gets bits of NaN lanes OR-ed in. */
static inline uint32_t above_or_nan(const float *row, int64_t j, float t, uint32_t *odd) {
#if defined(__AVX2__)
    __m256 tv = _mm256_set1_ps(t);
    uint32_t m = 0, u = 0;
    for (int q = 0; q < 4; q++) {
        __m256 x = _mm256_loadu_ps(row + j + 8 * q);
        m |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(x, tv, _CMP_GT_OQ)) << (8 * q);
        u |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    }
    *odd |= u;
    return m;
#else
    uint32_t m = 0;
    for (int q = 0; q < 32; q++) {
        m |= (uint32_t)(row[j + q] > t) << q;
        *odd |= row[j + q] != row[j + q];
    }
    return m;
#endif
}

/* One tile of a score matrix into running per-row top-m lists (the fused scoring's selection).
 *
 * tile: rows x cols, row r at tile + r * ld, the scores of columns [col0, col0 + cols) of the full
 * matrix; it is modified: bias added (tile[r][j] += bias[j], as torch's `scores += bias`), then the
 * padding column 0 and each row's excluded columns set to -inf, in that order, as the unfused path.
 * bias: cols values for this tile, or NULL. ex_ptr (rows + 1), ex_items: each row's excluded global
 * columns, ASCENDING within a row; ex_cur (rows): per-row cursor into ex_items, advanced past this
 * tile (tiles must come in column order); all three NULL without exclusion.
 * best_v, best_i (rows x m), count (rows): the running lists, best first, equal values by LOWER
 * column first (a column enters only if strictly greater than the m-th so far, and tiles come in
 * column order); -inf and NaN never enter. nan (rows): set to 1 where the row held a NaN.
 * Most columns cost one compare against the running m-th value. */
void popsteer_tile_topk_f32(float *tile, int64_t rows, int64_t cols, int64_t ld, int64_t col0, const float *bias,
                            const int64_t *ex_ptr, const int64_t *ex_items, int64_t *ex_cur,
                            int64_t m, float *best_v, int64_t *best_i, int64_t *count, uint8_t *nan) {
    for (int64_t r = 0; r < rows; r++) {
        float *row = tile + r * ld;
        if (bias)
            for (int64_t j = 0; j < cols; j++) row[j] += bias[j];
        if (col0 == 0 && cols > 0) row[0] = -INFINITY;
        if (ex_ptr) {
            int64_t c = ex_cur[r], end = ex_ptr[r + 1];
            for (; c < end && ex_items[c] < col0 + cols; c++)
                if (ex_items[c] >= col0) row[ex_items[c] - col0] = -INFINITY;
            ex_cur[r] = c;
        }
        float *v = best_v + r * m;
        int64_t *ix = best_i + r * m, n = count[r], j = 0;
        float t = n < m ? -INFINITY : v[m - 1];
        uint32_t odd = 0;
        for (; j + 32 <= cols; j += 32) {
            uint32_t mask = above_or_nan(row, j, t, &odd);
            while (mask) {
                int b = __builtin_ctz(mask);
                mask &= mask - 1;
                float x = row[j + b];
                if (x > t) {  /* t may have risen since the mask was taken */
                    insert(v, ix, n < m ? ++n : m, x, col0 + j + b);
                    if (n == m) t = v[m - 1];
                }
            }
        }
        for (; j < cols; j++) {
            float x = row[j];
            odd |= x != x;
            if (x > t) {
                insert(v, ix, n < m ? ++n : m, x, col0 + j);
                if (n == m) t = v[m - 1];
            }
        }
        count[r] = n;
        if (odd) nan[r] = 1;
    }
}
