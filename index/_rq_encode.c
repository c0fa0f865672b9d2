/* Residual-quantizer encoding by beam search on lookup tables: the C twin of index/rq_encode.py.
 *
 * Codes minimize ||y - sum_m C[m, code_m]||^2. Stage by stage, each of the (at most ``beam``) partial codes b
 * kept so far, with error e_b up to the constant ||y||^2, extends by every codeword j of stage m:
 *     e_b + (t[m, j] + sum_{l<m} X_m[l, code_b[l]][j])
 * where t[m, j] = ||C[m, j]||^2 - 2 <y, C[m, j]> (the products summed in dimension order) and
 * X_m[l, i][j] = 2 <C[l, i], C[m, j]> (the cross-product table, built once per codebook). The ``beam`` smallest
 * (ties: the lower b, then the lower j, as a stable sort) are kept; the smallest at the last stage is the code.
 * The same recurrence as faiss's ResidualQuantizer with use_beam_LUT, written for 2 cores: the cross-product
 * tables X are float16 (half the memory traffic) and each distinct prefix of the beam's partial codes reads
 * its row once (the partial codes taken in lexicographic order, kept as ranks: no code comparisons); rows are
 * encoded stage by stage in blocks of RQ_BLOCK so a stage's table block stays in cache, the terms t of
 * RQ_RT rows at once (AVX2), each partial code's last level summed within finish (never stored); only the
 * candidates under a bound on the kept errors (from run minima) are offered to the beam. (1M recipe, RQ16x8,
 * beam 8, one thread, same run: 43 us a row without the ranks, the RQ_RT rows and the fused level; 36 us.) Sums are
 * float32 in the order above on both paths and in the numpy reference (no contraction: -ffp-contract=off; the
 * float16 -> float32 conversion is exact), so the three give the same codes (tests).
 *
 * Dispatch as in _fastscan.c: impl 0 auto, 1 scalar, 2 AVX2 (+F16C): the same sums, 8 or 64 at a time.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_half.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RQ_X86 1
#endif

int vqrec_fs_resolve_impl(int impl); /* _fastscan.c, the same library: 1 scalar, 2 AVX2 */

#define RQ_BLOCK 1024 /* rows encoded stage by stage together */
#define RQ_RT 4        /* rows whose stage terms t are computed together (AVX2) */

typedef struct {
    float *v;    /* (beam,) the kept candidates' errors, ascending */
    int32_t *f;  /* (beam,) their flat index b * K + j */
    int64_t cap; /* how many are kept at this stage */
} Best;

/* offer candidate f with error x: kept if it beats the worst kept; placed after equal errors (stable) */
static inline void offer(Best *B, float x, int32_t f) {
    int64_t p = B->cap - 1;
    if (!(x < B->v[p])) return;
    while (p > 0 && B->v[p - 1] > x) {
        B->v[p] = B->v[p - 1];
        B->f[p] = B->f[p - 1];
        p--;
    }
    B->v[p] = x;
    B->f[p] = f;
}

/* The sums over table rows of a stage: the partial codes, taken in lexicographic order, share their prefixes'
 * partial sums S[p] = sum_{l<p} X_m[l, code[l]] (a stack, S[0] = 0), so each distinct prefix reads its row once
 * (on the 1M recipe, RQ16x8 beam 8: 339 rows a vector instead of 960). The sums keep the order l = 0, 1, ...
 * of the reference. */
static void level_scalar(float *restrict dst, const float *restrict src, const uint16_t *restrict row, int64_t K) {
    for (int64_t j = 0; j < K; j++) dst[j] = src[j] + half_to_float(row[j]);
}

/* cand[j] = e + (t[j] + S_m[j]), and the smallest of each run of G (the group minima the selection's bar is
 * drawn from). S_m is the stack's last level, computed here from the one below (S_m[j] = src[j] + row[j]) when
 * ``row`` is given: no partial code shares it, so it is never stored (S_m = src at the first stage). */
#define RQ_G 32
#define RQ_FINISH                                                                                              \
    for (int64_t j = 0; j < K; j++) cand[j] = e + (t[j] + (row ? src[j] + half_to_float(row[j]) : src[j]));  \
    for (int64_t g = 0; g < K / G; g++) {                                                                      \
        float lo = cand[g * G];                                                                                \
        for (int64_t j = g * G + 1; j < (g + 1) * G; j++) lo = cand[j] < lo ? cand[j] : lo;                    \
        gm[g] = lo;                                                                                            \
    }

static void finish_scalar(float *restrict cand, float *restrict gm, float e, const float *restrict t,
                          const float *restrict src, const uint16_t *restrict row, int64_t K, int64_t G) {
    RQ_FINISH
}

/* offers the candidates of the runs whose minimum is at most ``bar``, those at most bar: a bound on the kept
 * errors (see vqrec_rq_encode), so the others would be refused anyway */
static void select_scalar(const float *cand, const float *gm, int64_t K, int64_t G, float bar, Best *B,
                          int32_t f0) {
    for (int64_t g = 0; g < K / G; g++)
        if (gm[g] <= bar)
            for (int64_t j = g * G; j < (g + 1) * G; j++)
                if (cand[j] <= bar) offer(B, cand[j], (int32_t)(f0 + j));
}

#ifdef RQ_X86
__attribute__((target("avx2,f16c"))) static void level_avx2(float *restrict dst, const float *restrict src,
                                                            const uint16_t *restrict row, int64_t K) {
    int64_t j = 0;
    for (; j + 8 <= K; j += 8) {
        __m256 r = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + j)));
        _mm256_storeu_ps(dst + j, _mm256_add_ps(_mm256_loadu_ps(src + j), r));
    }
    for (; j < K; j++) dst[j] = src[j] + half_to_float(row[j]);
}

__attribute__((target("avx2"))) static inline float hmin8(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,f16c"))) static void finish_avx2(float *restrict cand, float *restrict gm, float e,
                                                             const float *restrict t, const float *restrict src,
                                                             const uint16_t *restrict row, int64_t K, int64_t G) {
    if (G != RQ_G) {
        RQ_FINISH
        return;
    }
    const __m256 ve = _mm256_set1_ps(e);
    for (int64_t j = 0; j < K; j += RQ_G) {
        __m256 lo = _mm256_set1_ps(INFINITY);
        for (int64_t q = j; q < j + RQ_G; q += 8) {
            __m256 sm = _mm256_loadu_ps(src + q);
            if (row) sm = _mm256_add_ps(sm, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + q))));
            __m256 c = _mm256_add_ps(ve, _mm256_add_ps(_mm256_loadu_ps(t + q), sm));
            _mm256_storeu_ps(cand + q, c);
            lo = _mm256_min_ps(lo, c);
        }
        gm[j / RQ_G] = hmin8(lo);
    }
}

__attribute__((target("avx2"))) static void select_avx2(const float *cand, const float *gm, int64_t K, int64_t G,
                                                        float bar, Best *B, int32_t f0) {
    if (G != RQ_G) {
        select_scalar(cand, gm, K, G, bar, B, f0);
        return;
    }
    const __m256 vb = _mm256_set1_ps(bar);
    for (int64_t g = 0; g < K / RQ_G; g++) {
        if (!(gm[g] <= bar)) continue;
        for (int64_t j = g * RQ_G; j < (g + 1) * RQ_G; j += 8) {
            unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(cand + j), vb, _CMP_LE_OQ));
            while (mask) {
                int b = __builtin_ctz(mask);
                offer(B, cand[j + b], (int32_t)(f0 + j + b));
                mask &= mask - 1;
            }
        }
    }
}
#endif

/* A bound on the kept errors: the cap-th smallest of the ng run minima. cap distinct candidates are at most the
 * bar, so every kept one is too (ties included) and the others need not be offered (on the 1M recipe a few
 * dozen of a stage's 2,048 are). +inf with fewer runs than cap. */
static float runs_bar(const float *gm, int64_t ng, int64_t cap, float *tmp) {
    if (ng < cap) return INFINITY;
    int64_t k = 0; /* tmp: the cap smallest so far, ascending */
    for (int64_t g = 0; g < ng; g++) {
        float x = gm[g];
        if (k == cap && !(x < tmp[cap - 1])) continue;
        int64_t p = k < cap ? k++ : cap - 1;
        while (p > 0 && tmp[p - 1] > x) {
            tmp[p] = tmp[p - 1];
            p--;
        }
        tmp[p] = x;
    }
    return tmp[cap - 1] == tmp[cap - 1] ? tmp[cap - 1] : INFINITY;
}

/* t[j] = cn[j] - 2 <y, C[m, j]> from CT = C[m] transposed (d, K): the products summed in dimension order */
static void stage_scalar(const float *restrict y, int64_t d, const float *restrict CT, const float *restrict cn,
                         int64_t K, float *restrict t) {
    for (int64_t j = 0; j < K; j++) t[j] = 0.f;
    for (int64_t k = 0; k < d; k++) {
        const float yk = y[k], *c = CT + k * K;
        for (int64_t j = 0; j < K; j++) t[j] = t[j] + yk * c[j];
    }
    for (int64_t j = 0; j < K; j++) t[j] = cn[j] - 2.f * t[j];
}

#ifdef RQ_X86
/* t[j0 .. j0 + 8 Q) in Q registers over the d dimensions (Q independent chains) */
__attribute__((target("avx2"), always_inline)) static inline void stage_run(const float *restrict y, int64_t d,
                                                                           const float *restrict CT,
                                                                           const float *restrict cn, int64_t K,
                                                                           float *restrict t, int64_t j0, const int Q) {
    __m256 a[8];
    for (int q = 0; q < Q; q++) a[q] = _mm256_setzero_ps();
    for (int64_t k = 0; k < d; k++) {
        const __m256 yk = _mm256_set1_ps(y[k]);
        const float *c = CT + k * K + j0;
        for (int q = 0; q < Q; q++) a[q] = _mm256_add_ps(a[q], _mm256_mul_ps(yk, _mm256_loadu_ps(c + 8 * q)));
    }
    const __m256 two = _mm256_set1_ps(2.f);
    for (int q = 0; q < Q; q++)
        _mm256_storeu_ps(t + j0 + 8 * q, _mm256_sub_ps(_mm256_loadu_ps(cn + j0 + 8 * q), _mm256_mul_ps(two, a[q])));
}

__attribute__((target("avx2"))) static void stage_avx2(const float *restrict y, int64_t d, const float *restrict CT,
                                                       const float *restrict cn, int64_t K, float *restrict t) {
    if (K % 32) {
        stage_scalar(y, d, CT, cn, K, t);
        return;
    }
    int64_t j = 0;
    for (; j + 64 <= K; j += 64) stage_run(y, d, CT, cn, K, t, j, 8);
    for (; j < K; j += 32) stage_run(y, d, CT, cn, K, t, j, 4);
}

/* t of RQ_RT rows at once (t + r * K for row r): each 64-byte line of CT, read for 16 outputs, serves the RQ_RT
 * rows (a stage's CT, 64 KB at d 64 and K 256, is twice a 32 KB L1: row by row it streams from L2). The same
 * sums, in the same order, as stage_avx2. */
__attribute__((target("avx2"))) static void stage_rows_avx2(const float *restrict y, int64_t nr, int64_t d,
                                                            const float *restrict CT, const float *restrict cn,
                                                            int64_t K, float *restrict t) {
    if (K % 32 || nr != RQ_RT) {
        for (int64_t r = 0; r < nr; r++) stage_avx2(y + r * d, d, CT, cn, K, t + r * K);
        return;
    }
    const __m256 two = _mm256_set1_ps(2.f);
    for (int64_t j = 0; j < K; j += 16) {
        __m256 a[RQ_RT][2];
        for (int r = 0; r < RQ_RT; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
        for (int64_t k = 0; k < d; k++) {
            const __m256 c0 = _mm256_loadu_ps(CT + k * K + j), c1 = _mm256_loadu_ps(CT + k * K + j + 8);
            for (int r = 0; r < RQ_RT; r++) {
                const __m256 yk = _mm256_set1_ps(y[r * d + k]);
                a[r][0] = _mm256_add_ps(a[r][0], _mm256_mul_ps(yk, c0));
                a[r][1] = _mm256_add_ps(a[r][1], _mm256_mul_ps(yk, c1));
            }
        }
        const __m256 n0 = _mm256_loadu_ps(cn + j), n1 = _mm256_loadu_ps(cn + j + 8);
        for (int r = 0; r < RQ_RT; r++) {
            _mm256_storeu_ps(t + r * K + j, _mm256_sub_ps(n0, _mm256_mul_ps(two, a[r][0])));
            _mm256_storeu_ps(t + r * K + j + 8, _mm256_sub_ps(n1, _mm256_mul_ps(two, a[r][1])));
        }
    }
}
#endif

/* codes (n, M) of the rows y (n, d). CT (M, d, K): each stage's codewords transposed; cn (M, K) their squared
 * norms; tab: the cross-product tables of stages 1..M-1, stage m's (m * K, K) block at K * K * m * (m - 1) / 2.
 * Returns 0, or -1 when its buffers cannot be allocated (nothing written). */
int64_t vqrec_rq_encode(const float *y, int64_t n, int64_t d, int64_t M, int64_t K, const float *CT, const float *cn,
                        const uint16_t *tab, int64_t beam, uint8_t *codes, int32_t impl) {
    if (beam < 1) beam = 1;
    const int simd = vqrec_fs_resolve_impl(impl) == 2;
    (void)simd; /* (read only on x86) */
    const int64_t V = RQ_BLOCK, W = beam * M;
    float *e = malloc(sizeof(float) * V * beam * 2), *bv = malloc(sizeof(float) * beam);
    const int64_t G = K < RQ_G ? K : RQ_G; /* K is a power of two */
    float *S = malloc(sizeof(float) * (M + 1) * K), *cand = malloc(sizeof(float) * beam * K);
    float *gm = malloc(sizeof(float) * beam * (K / G)), *tmp = malloc(sizeof(float) * beam);
    float *tv = malloc(sizeof(float) * RQ_RT * K); /* t of the rows v .. v + RQ_RT - 1 */
    int32_t *bf = malloc(sizeof(int32_t) * beam), *ord = malloc(sizeof(int32_t) * beam);
    /* each kept partial code's rank in the lexicographic order of its row's (two stages: now, next) */
    int32_t *rk = malloc(sizeof(int32_t) * V * beam * 2), *key = malloc(sizeof(int32_t) * beam);
    uint8_t *cur = malloc((size_t)(V * W)), *nxt = malloc((size_t)(V * W));
    if (!e || !bv || !S || !cand || !gm || !tmp || !tv || !bf || !ord || !rk || !key || !cur || !nxt) {
        free(e), free(bv), free(S), free(cand), free(gm), free(tmp), free(tv), free(bf), free(ord), free(rk), free(key),
            free(cur), free(nxt);
        return -1;
    }
    float *const e0 = e, *enew = e + V * beam;
    int32_t *const rk0 = rk, *rknew = rk + V * beam;
    for (int64_t j = 0; j < K; j++) S[j] = 0.f;
    for (int64_t i0 = 0; i0 < n; i0 += V) {
        /* stage by stage over a block of rows: stage m's table block stays in cache for all of them */
        const int64_t nv = n - i0 < V ? n - i0 : V;
        int64_t nb = 1; /* every row keeps the same number of candidates at a stage */
        for (int64_t v = 0; v < nv; v++) e[v * beam] = 0.f, rk[v * beam] = 0;
        for (int64_t m = 0; m < M; m++) {
            const uint16_t *X = tab + K * K * (m * (m - 1) / 2);
            const int64_t cap = nb * K < beam ? nb * K : beam;
            for (int64_t v = 0; v < nv; v++) {
                const float *CTm = CT + m * d * K, *cnm = cn + m * K;
                if (v % RQ_RT == 0) {
                    const int64_t nr = nv - v < RQ_RT ? nv - v : RQ_RT;
#ifdef RQ_X86
                    if (simd)
                        stage_rows_avx2(y + (i0 + v) * d, nr, d, CTm, cnm, K, tv);
                    else
#endif
                        for (int64_t r = 0; r < nr; r++) stage_scalar(y + (i0 + v + r) * d, d, CTm, cnm, K, tv + r * K);
                }
                const float *tvv = tv + (v % RQ_RT) * K;
                const uint8_t *cv = cur + v * W;
                const int32_t *rv = rk + v * beam;
                for (int64_t b = 0; b < nb; b++) ord[rv[b]] = (int32_t)b; /* the partial codes in lexicographic order */
                const uint8_t *prev = NULL;
                for (int64_t o = 0; o < nb; o++) {
                    const int64_t b = ord[o];
                    const uint8_t *cb = cv + b * M;
                    int64_t p = 0; /* the prefix shared with the previous one: its sums are on the stack */
                    if (prev)
                        while (p < m && cb[p] == prev[p]) p++;
                    for (; p < m - 1; p++) {
                        const uint16_t *row = X + (p * K + cb[p]) * K;
#ifdef RQ_X86
                        if (simd)
                            level_avx2(S + (p + 1) * K, S + p * K, row, K);
                        else
#endif
                            level_scalar(S + (p + 1) * K, S + p * K, row, K);
                    }
                    /* the last level, S_m, within finish */
                    const float *src = m ? S + (m - 1) * K : S;
                    const uint16_t *last = m ? X + ((m - 1) * K + cb[m - 1]) * K : NULL;
#ifdef RQ_X86
                    if (simd)
                        finish_avx2(cand + b * K, gm + b * (K / G), e[v * beam + b], tvv, src, last, K, G);
                    else
#endif
                        finish_scalar(cand + b * K, gm + b * (K / G), e[v * beam + b], tvv, src, last, K, G);
                    prev = cb;
                }
                const float bar = runs_bar(gm, nb * (K / G), cap, tmp);
                Best B = {bv, bf, cap};
                for (int64_t s = 0; s < cap; s++) { /* placeholders: the first candidates at +inf */
                    bv[s] = INFINITY;
                    bf[s] = (int32_t)s;
                }
                for (int64_t b = 0; b < nb; b++) {
#ifdef RQ_X86
                    if (simd)
                        select_avx2(cand + b * K, gm + b * (K / G), K, G, bar, &B, (int32_t)(b * K));
                    else
#endif
                        select_scalar(cand + b * K, gm + b * (K / G), K, G, bar, &B, (int32_t)(b * K));
                }
                uint8_t *nv_ = nxt + v * W;
                for (int64_t s = 0; s < cap; s++) {
                    int64_t b = bf[s] / K, j = bf[s] % K;
                    memcpy(nv_ + s * M, cv + b * M, (size_t)m);
                    nv_[s * M + m] = (uint8_t)j;
                    enew[v * beam + s] = bv[s];
                    key[s] = rv[b] * (int32_t)K + (int32_t)j; /* extended codes order as (parent's rank, j) */
                }
                for (int64_t s = 0; s < cap; s++) { /* the keys are distinct: a rank is how many are smaller */
                    int32_t r = 0;
                    for (int64_t q = 0; q < cap; q++) r += key[q] < key[s];
                    rknew[v * beam + s] = r;
                }
            }
            uint8_t *sw = cur;
            cur = nxt, nxt = sw;
            float *ew = e;
            e = enew, enew = ew;
            int32_t *rw = rk;
            rk = rknew, rknew = rw;
            nb = cap;
        }
        for (int64_t v = 0; v < nv; v++) memcpy(codes + (i0 + v) * M, cur + v * W, (size_t)M);
    }
    free(e0), free(bv), free(S), free(cand), free(gm), free(tmp), free(tv), free(bf), free(ord), free(rk0), free(key), free(cur),
        free(nxt);
    return 0;
}
