/* Score-aware (anisotropic) product-quantization encoding: the C twin of index/score_aware.py.
 *
 * Per vector y (code space, d = M * dsub): start from the given codes, or with init from the nearest codewords
 * (||y_m - C_m[j]||^2 from the table below, where faiss may round a near-tie the other way), then rounds of
 * coordinate descent over the M sub-spaces, each choosing the codeword j of sub-space m that minimizes
 *     ||y_m - C_m[j]||^2 + w * (other + (y_m - C_m[j]) . y_m)^2,   w = (eta - 1) / ||y||^2,
 * where other is the parallel residual r . y of the other sub-spaces. The loss never rises; a round that
 * changes no code stops early. Ties keep the lowest j (numpy argmin). Sums are in float32 in sub-space
 * order like the reference; the reference's BLAS einsum may round differently in the last bit, so the two
 * agree on all but rare near-ties (tests: the loss oracle on both, and agreement >= 99.9 %).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int64_t vqrec_sa_encode(const float *y, int64_t n, int64_t M, int64_t ksub, int64_t dsub, const float *C,
                        float eta, int64_t rounds, int64_t init, uint8_t *codes) {
    const int64_t d = M * dsub, T = M * ksub;
    float *par = malloc(sizeof(float) * T), *sq = malloc(sizeof(float) * T), *e = malloc(sizeof(float) * M);
    float *cn = malloc(sizeof(float) * T);
    int64_t changed_total = 0;
    if (!par || !sq || !e || !cn) {
        free(par), free(sq), free(e), free(cn);
        return -1;
    }
    for (int64_t t = 0; t < T; t++) {
        const float *c = C + t * dsub;
        float s = 0.f;
        for (int64_t k = 0; k < dsub; k++) s += c[k] * c[k];
        cn[t] = s;
    }
    for (int64_t i = 0; i < n; i++) {
        const float *yi = y + i * d;
        uint8_t *ci = codes + i * M;
        float nn = 0.f;
        for (int64_t m = 0; m < M; m++) {
            const float *ym = yi + m * dsub;
            float yy = 0.f;
            for (int64_t k = 0; k < dsub; k++) yy += ym[k] * ym[k];
            nn += yy;
            for (int64_t j = 0; j < ksub; j++) {
                const float *c = C + (m * ksub + j) * dsub;
                float dot = 0.f;
                for (int64_t k = 0; k < dsub; k++) dot += ym[k] * c[k];
                par[m * ksub + j] = yy - dot;
                sq[m * ksub + j] = yy - 2.f * dot + cn[m * ksub + j];
            }
        }
        if (init) /* start from the nearest codewords (lowest index on a tie), from the same table */
            for (int64_t m = 0; m < M; m++) {
                const float *sm = sq + m * ksub;
                int64_t best = 0;
                for (int64_t j = 1; j < ksub; j++)
                    if (sm[j] < sm[best]) best = j;
                ci[m] = (uint8_t)best;
            }
        const float w = (eta - 1.f) / (nn > 1e-30f ? nn : 1e-30f);
        float total = 0.f;
        for (int64_t m = 0; m < M; m++) {
            e[m] = par[m * ksub + ci[m]];
            total += e[m];
        }
        for (int64_t r = 0; r < rounds; r++) {
            int64_t changed = 0;
            for (int64_t m = 0; m < M; m++) {
                const float other = total - e[m];
                const float *pm = par + m * ksub, *sm = sq + m * ksub;
                int64_t best = 0;
                float bl = 0.f;
                for (int64_t j = 0; j < ksub; j++) {
                    const float a = other + pm[j];
                    const float l = sm[j] + w * (a * a);
                    if (j == 0 || l < bl) bl = l, best = j;
                }
                changed += best != ci[m];
                ci[m] = (uint8_t)best;
                e[m] = pm[best];
                total = other + e[m];
            }
            changed_total += changed;
            if (!changed) break;
        }
    }
    free(par), free(sq), free(e), free(cn);
    return changed_total;
}
