/* ADC top-k scan: the one kernel vqrec writes itself.
 *
 * faiss's scanners compute their lookup table from a query vector internally and only rank by the
 * raw additive distance. vqrec needs two things they do not offer: a lookup table handed in from
 * outside (assembled from precomputed codeword-pair tables for queries by id) and a per-item affine
 * post-step (cosine = ip / |x_hat|, l2 = 2 ip - |x_hat|^2) applied before ranking. bench/ compares
 * this kernel with faiss IndexPQ / IndexResidualQuantizer on the same codes.
 *
 *   lut    (M, ksub) float32   inner-product lookup table of one query
 *   codes  (nb, M)   uint8     code table, row-major
 *   score_i = alpha * sum_m lut[m, codes[i, m]] * scale[i] + bias[i]   (scale/bias may be NULL)
 *   items whose score is -inf or NaN are never returned (bias = -inf masks an item out).
 *   out: D (k,) scores descending, I (k,) rows; ties broken by lower row first; padded with -inf/-1.
 */
#include <math.h>
#include <stdint.h>

#include "_topk.h"

static inline float scan_one(const float *lut, const uint8_t *c, int64_t M, int64_t ksub) {
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) {
        s0 += lut[(m + 0) * ksub + c[m + 0]];
        s1 += lut[(m + 1) * ksub + c[m + 1]];
        s2 += lut[(m + 2) * ksub + c[m + 2]];
        s3 += lut[(m + 3) * ksub + c[m + 3]];
    }
    for (; m < M; m++) s0 += lut[m * ksub + c[m]];
    return (s0 + s1) + (s2 + s3);
}

static void scan_range(const float *lut, int64_t M, int64_t ksub, const uint8_t *codes, int64_t i0,
                       int64_t i1, float alpha, const float *scale, const float *bias, int64_t k,
                       float *D, int64_t *I, int64_t *n) {
    for (int64_t i = i0; i < i1; i++) {
        float v = alpha * scan_one(lut, codes + i * M, M, ksub);
        if (scale) v *= scale[i];
        if (bias) v += bias[i];
        heap_push(D, I, n, k, v, i);
    }
}

/* scan rows [i0, i1) into a heap of n entries (the partitioned search of _fastscan.c scans lists with it) */
void vqrec_scan_range8(const float *lut, int64_t M, int64_t ksub, const uint8_t *codes, int64_t i0, int64_t i1,
                       float alpha, const float *scale, const float *bias, int64_t k, float *D, int64_t *I,
                       int64_t *n) {
    scan_range(lut, M, ksub, codes, i0, i1, alpha, scale, bias, k, D, I, n);
}

int64_t vqrec_adc_topk(const float *lut, int64_t M, int64_t ksub, const uint8_t *codes, int64_t nb,
                       float alpha, const float *scale, const float *bias, int64_t k, float *D,
                       int64_t *I) {
    int64_t n = 0; /* heap size */
    if (k <= 0) return 0;
    scan_range(lut, M, ksub, codes, 0, nb, alpha, scale, bias, k, D, I, &n);
    heap_finish(D, I, n, k);
    return n;
}

/* nq queries at once (luts (nq, M, ksub), alphas (nq,), D/I (nq, k), counts (nq,) scratch): the code
 * table is scanned in blocks of `block` rows that stay in cache while every query visits them, so a
 * batch reads the codes from memory once instead of nq times. Same results as nq single calls. */
void vqrec_adc_topk_many(const float *luts, int64_t nq, int64_t M, int64_t ksub, const uint8_t *codes,
                         int64_t nb, const float *alphas, const float *scale, const float *bias,
                         int64_t k, float *D, int64_t *I, int64_t *counts, int64_t block) {
    if (k <= 0 || nq <= 0) return;
    if (block < 1) block = nb;
    for (int64_t q = 0; q < nq; q++) counts[q] = 0;
    for (int64_t i0 = 0; i0 < nb; i0 += block) {
        int64_t i1 = i0 + block < nb ? i0 + block : nb;
        for (int64_t q = 0; q < nq; q++)
            scan_range(luts + q * M * ksub, M, ksub, codes, i0, i1, alphas[q], scale, bias, k,
                       D + q * k, I + q * k, counts + q);
    }
    for (int64_t q = 0; q < nq; q++) heap_finish(D + q * k, I + q * k, counts[q], k);
}

/* full score vector (no ranking): used by tests and by callers that need every score */
void vqrec_adc_scores(const float *lut, int64_t M, int64_t ksub, const uint8_t *codes, int64_t nb,
                      float *out) {
    for (int64_t i = 0; i < nb; i++) out[i] = scan_one(lut, codes + i * M, M, ksub);
}
