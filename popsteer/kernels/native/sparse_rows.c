/* Row gathers and scatters of a (n, d) fp32 table by a (B, M) index: the TopK SAE's sparse gradients.
 *
 * With I (B, M) latent indices, the gradient terms of a TopK SAE touch only M of the n table rows
 * per input row:
 *   gather_dot:    out[b, m]  = <y[b], W[I[b, m]]>                      (B, M)
 *   scatter_outer: out[j]    += sum over (b, m) with I[b, m] = j of w[b, m] * y[b]   (n, d)
 * Both cost B * M * d multiply-adds instead of the B * n * d of the dense products
 * (y @ W.T, G.T @ y) that autograd runs through a dense code.
 *
 * scatter_outer only writes rows j in [j0, j1): callers split the rows among threads, each
 * scanning the whole index, so every output row is summed in (b, m) order whatever the split
 * (the same bits with any number of threads).
 *
 * Plain C, no Python or torch headers: built with row_topk.c by popsteer/kernels/native, called
 * through ctypes (which releases the GIL).
 */
#include <stdint.h>

void popsteer_gather_dot_f32(const float *y, const float *w_table, const int64_t *idx, int64_t b0, int64_t b1,
                             int64_t m, int64_t d, float *out) {
    for (int64_t b = b0; b < b1; b++) {
        const float *yb = y + b * d;
        for (int64_t q = 0; q < m; q++) {
            const float *row = w_table + idx[b * m + q] * d;
            float lane[8] = {0};          /* 8 partial sums: the compiler keeps them in one vector */
            int64_t c = 0;
            for (; c + 8 <= d; c += 8)
                for (int l = 0; l < 8; l++) lane[l] += yb[c + l] * row[c + l];
            float acc = 0.0f;
            for (int l = 0; l < 8; l++) acc += lane[l];
            for (; c < d; c++) acc += yb[c] * row[c];
            out[b * m + q] = acc;
        }
    }
}

void popsteer_scatter_outer_f32(const float *y, const float *w, const int64_t *idx, int64_t rows, int64_t m,
                                int64_t d, int64_t j0, int64_t j1, float *out) {
    for (int64_t b = 0; b < rows; b++) {
        const float *yb = y + b * d;
        for (int64_t q = 0; q < m; q++) {
            int64_t j = idx[b * m + q];
            if (j < j0 || j >= j1) continue;
            float s = w[b * m + q];
            float *dst = out + j * d;
            for (int64_t c = 0; c < d; c++) dst[c] += s * yb[c];
        }
    }
}
