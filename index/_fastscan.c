/* 4-bit fast-scan: the partitioned scan of 4-bit codes, with an 8-bit lookup table in SIMD registers.
 *
 * Layout ("packed"). Items of one list are stored in blocks of 32. A block holds, for each pair of
 * sub-quantizers (m, m+1) with m even, 32 bytes: bytes 0..15 the codes of sub-quantizer m, bytes 16..31
 * those of m+1; byte j holds item j in its low nibble and item j+16 in its high nibble. A block is
 * 16*M bytes (M/2 bytes per item, M even); the last block of a list is padded with code 0.
 *
 * Query. The float lookup table lut (M, 16) is quantized to bytes: per sub-quantizer its minimum is
 * subtracted, one step delta = (largest per-table range) / 255 for all, rounded to nearest, so
 *     sum_m lut[m, c_m] ~= delta * acc + bias,   acc = sum_m q[m, c_m]  (a 16-bit integer, M <= 256).
 * Tables of a pair sit in one 256-bit register, one per 128-bit lane; vpshufb looks up 32 nibbles per
 * instruction; 16-bit accumulators gather even items (masked) and odd items (shifted).
 *
 * Scores. The approximate score of item i is alpha * ((delta * acc_i + bias) * scale_i) + add_i
 * (scale/add per row, may be NULL: n entries, read in place; the same per-item terms as the 8-bit kernel;
 * a list's partial last block reads them through a 32-entry copy, so the arrays need no padding and may be the
 * artifact's files memory-mapped), evaluated in this
 * order in float32 without fused multiply-add, so the scalar path, the SIMD paths and the numpy
 * reference give identical bits. The best `kcand` by that score are then re-scored exactly with the
 * float table (alpha * sum_m lut[m, c_m] * scale_i + add_i, as the 8-bit kernel scores) and the best k
 * of those are returned: best first, ties by lower row, -inf/NaN never returned.
 *
 * Lists. Rows are stored contiguously per list: list l holds rows list_rows[l] .. list_rows[l+1]-1 and
 * blocks list_blocks[l] .. list_blocks[l+1]-1. A query scans the lists whose coarse key is among the
 * nprobe best (key_l = <y, c_l> * w_l + b_l; w/b may be NULL), or the given list order.
 *
 * Dispatch. Compiled for every x86-64 with the SIMD path in target("avx2") functions, chosen at run time
 * when the CPU has AVX2 (impl 0); impl 1 forces the scalar path, impl 2 AVX2 (tests compare them).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_half.h"
#include "_topk.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VQREC_X86 1
#endif

#define IMPL_AUTO 0
#define IMPL_SCALAR 1
#define IMPL_AVX2 2

int vqrec_fs_has_avx2(void) {
    static int known = -1; /* asked once: the answer does not change while the process runs */
    if (known < 0) {
#ifdef VQREC_X86
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
        known = 0;
#endif
    }
    return known;
}

/* the path an impl argument runs: auto -> AVX2 where the CPU has it; AVX2 -> scalar where it has not */
int vqrec_fs_resolve_impl(int impl) {
    if (impl == IMPL_AUTO) return vqrec_fs_has_avx2() ? IMPL_AVX2 : IMPL_SCALAR;
    if (impl == IMPL_AVX2 && !vqrec_fs_has_avx2()) return IMPL_SCALAR;
    return impl;
}

/* ---- lookup-table quantization --------------------------------------------------------------- */

/* lut (M, 16) float -> q (M/2 pairs x 32 bytes), delta and bias (sum of the per-table minima). */
static void quantize_lut_scalar(const float *lut, int64_t M, uint8_t *q, float *delta_out, float *bias_out) {
    float range = 0.f, bias = 0.f;
    float mins[256];
    for (int64_t m = 0; m < M; m++) {
        float mn = lut[m * 16], mx = lut[m * 16];
        for (int j = 1; j < 16; j++) {
            float v = lut[m * 16 + j];
            if (v < mn) mn = v;
            if (v > mx) mx = v;
        }
        mins[m] = mn;
        bias += mn;
        if (mx - mn > range) range = mx - mn;
    }
    float delta = range > 0.f ? range / 255.f : 1.f;
    for (int64_t m = 0; m < M; m++) {
        uint8_t *dst = q + (m / 2) * 32 + (m % 2) * 16;
        for (int j = 0; j < 16; j++) {
            float v = (lut[m * 16 + j] - mins[m]) / delta + 0.5f;
            int iv = (int)v; /* v >= 0.5: truncation is floor */
            dst[j] = (uint8_t)(iv > 255 ? 255 : iv);
        }
    }
    *delta_out = delta;
    *bias_out = bias;
}

#ifdef VQREC_X86
/* the same steps sixteen entries at a time (a table of finite values: min / max do not depend on the order) */
__attribute__((target("avx2"))) static void quantize_lut_avx2(const float *lut, int64_t M, uint8_t *q,
                                                              float *delta_out, float *bias_out) {
    float range = 0.f, bias = 0.f;
    float mins[256];
    for (int64_t m = 0; m < M; m++) {
        const __m256 a = _mm256_loadu_ps(lut + m * 16), b = _mm256_loadu_ps(lut + m * 16 + 8);
        __m128 mn = _mm_min_ps(_mm256_castps256_ps128(_mm256_min_ps(a, b)), _mm256_extractf128_ps(_mm256_min_ps(a, b), 1));
        __m128 mx = _mm_max_ps(_mm256_castps256_ps128(_mm256_max_ps(a, b)), _mm256_extractf128_ps(_mm256_max_ps(a, b), 1));
        mn = _mm_min_ps(mn, _mm_movehl_ps(mn, mn));
        mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
        const float lo = _mm_cvtss_f32(_mm_min_ss(mn, _mm_shuffle_ps(mn, mn, 1)));
        const float hi = _mm_cvtss_f32(_mm_max_ss(mx, _mm_shuffle_ps(mx, mx, 1)));
        mins[m] = lo;
        bias += lo;
        if (hi - lo > range) range = hi - lo;
    }
    const float delta = range > 0.f ? range / 255.f : 1.f;
    const __m256 vd = _mm256_set1_ps(delta), half = _mm256_set1_ps(0.5f);
    const __m256i top = _mm256_set1_epi32(255);
    for (int64_t m = 0; m < M; m++) {
        const __m256 lo = _mm256_set1_ps(mins[m]);
        __m256 v0 = _mm256_add_ps(_mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(lut + m * 16), lo), vd), half);
        __m256 v1 = _mm256_add_ps(_mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(lut + m * 16 + 8), lo), vd), half);
        /* v >= 0.5: truncation is floor; then at most 255, as u16 in item order, as bytes */
        __m256i i0 = _mm256_min_epi32(_mm256_cvttps_epi32(v0), top), i1 = _mm256_min_epi32(_mm256_cvttps_epi32(v1), top);
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(i0, i1), 0xD8);
        __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        _mm_storeu_si128((__m128i *)(q + (m / 2) * 32 + (m % 2) * 16), bytes);
    }
    *delta_out = delta;
    *bias_out = bias;
}
#endif

/* the quantized table (impl as the searches: 0 auto, 1 scalar, 2 AVX2; the same bytes) */
void vqrec_fs_quantize_lut(const float *lut, int64_t M, uint8_t *q, float *delta_out, float *bias_out, int impl) {
#ifdef VQREC_X86
    if (vqrec_fs_resolve_impl(impl) == IMPL_AVX2) {
        quantize_lut_avx2(lut, M, q, delta_out, bias_out);
        return;
    }
#endif
    quantize_lut_scalar(lut, M, q, delta_out, bias_out);
}

/* ---- packing ---------------------------------------------------------------------------------- */

/* codes (n, M) one code (< 16) per byte -> ceil(n/32) blocks of 16*M bytes. */
void vqrec_fs_pack(const uint8_t *codes, int64_t n, int64_t M, uint8_t *out) {
    int64_t nblocks = (n + 31) / 32, bsize = 16 * M;
    memset(out, 0, (size_t)(nblocks * bsize));
    for (int64_t i = 0; i < n; i++) {
        uint8_t *blk = out + (i / 32) * bsize;
        int64_t j = i % 32, byte = j % 16, shift = j < 16 ? 0 : 4;
        for (int64_t m = 0; m < M; m++)
            blk[(m / 2) * 32 + (m % 2) * 16 + byte] |= (uint8_t)((codes[i * M + m] & 15) << shift);
    }
}

/* the codes of item j (0..31) of a block, one per byte */
static inline void unpack_one(const uint8_t *blk, int64_t M, int64_t j, uint8_t *c) {
    int64_t byte = j % 16, shift = j < 16 ? 0 : 4;
    for (int64_t m = 0; m < M; m++) c[m] = (blk[(m / 2) * 32 + (m % 2) * 16 + byte] >> shift) & 15;
}

/* n rows given as (block index, position) -> codes (n, M) */
void vqrec_fs_unpack(const uint8_t *packed, int64_t M, const int64_t *blocks, const int64_t *pos, int64_t n,
                     uint8_t *out) {
    for (int64_t i = 0; i < n; i++) unpack_one(packed + blocks[i] * 16 * M, M, pos[i], out + i * M);
}

/* ---- block sums ------------------------------------------------------------------------------- */

static void sums_scalar(const uint8_t *q, int64_t M, const uint8_t *blk, uint16_t *acc) {
    for (int j = 0; j < 32; j++) acc[j] = 0;
    for (int64_t p = 0; p < M / 2; p++) {
        const uint8_t *c = blk + p * 32, *t = q + p * 32;
        for (int j = 0; j < 16; j++) {
            acc[j] += t[c[j] & 15] + t[16 + (c[16 + j] & 15)];
            acc[16 + j] += t[c[j] >> 4] + t[16 + (c[16 + j] >> 4)];
        }
    }
}

#ifdef VQREC_X86
/* the 32 sums of one block, in item order, as 4 x 8 int32 */
__attribute__((target("avx2"))) static inline void sums_avx2(const uint8_t *q, int64_t M, const uint8_t *blk,
                                                              __m256i out[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i a0 = _mm256_setzero_si256(), o0 = a0, a1 = a0, o1 = a0;
    for (int64_t p = 0; p < M / 2; p++) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(blk + p * 32));
        __m256i t = _mm256_loadu_si256((const __m256i *)(q + p * 32));
        __m256i r0 = _mm256_shuffle_epi8(t, _mm256_and_si256(c, m4));                         /* items 0..15 */
        __m256i r1 = _mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16(c, 4), m4));  /* 16..31 */
        /* a: whole 16-bit words (even item + 256 * odd item, mod 2^16), o: odd items */
        a0 = _mm256_add_epi16(a0, r0);
        o0 = _mm256_add_epi16(o0, _mm256_srli_epi16(r0, 8));
        a1 = _mm256_add_epi16(a1, r1);
        o1 = _mm256_add_epi16(o1, _mm256_srli_epi16(r1, 8));
    }
    __m256i e0 = _mm256_sub_epi16(a0, _mm256_slli_epi16(o0, 8)); /* even items */
    __m256i e1 = _mm256_sub_epi16(a1, _mm256_slli_epi16(o1, 8));
    /* the two lanes hold sub-quantizers m and m+1 of the same items: add them */
    __m128i E0 = _mm_add_epi16(_mm256_castsi256_si128(e0), _mm256_extracti128_si256(e0, 1));
    __m128i O0 = _mm_add_epi16(_mm256_castsi256_si128(o0), _mm256_extracti128_si256(o0, 1));
    __m128i E1 = _mm_add_epi16(_mm256_castsi256_si128(e1), _mm256_extracti128_si256(e1, 1));
    __m128i O1 = _mm_add_epi16(_mm256_castsi256_si128(o1), _mm256_extracti128_si256(o1, 1));
    out[0] = _mm256_cvtepu16_epi32(_mm_unpacklo_epi16(E0, O0)); /* items 0..7 */
    out[1] = _mm256_cvtepu16_epi32(_mm_unpackhi_epi16(E0, O0)); /* 8..15 */
    out[2] = _mm256_cvtepu16_epi32(_mm_unpacklo_epi16(E1, O1)); /* 16..23 */
    out[3] = _mm256_cvtepu16_epi32(_mm_unpackhi_epi16(E1, O1)); /* 24..31 */
}
#endif

#ifdef VQREC_X86
__attribute__((target("avx2"))) static void sums_avx2_u16(const uint8_t *q, int64_t M, const uint8_t *blk,
                                                          uint16_t *out) {
    __m256i s[4];
    int32_t tmp[32];
    sums_avx2(q, M, blk, s);
    for (int g = 0; g < 4; g++) _mm256_storeu_si256((__m256i *)(tmp + 8 * g), s[g]);
    for (int j = 0; j < 32; j++) out[j] = (uint16_t)tmp[j];
}
#endif

/* 32 sums per block for nblocks blocks (tests: every path against the numpy reference) */
void vqrec_fs_sums(const uint8_t *q, int64_t M, const uint8_t *packed, int64_t nblocks, uint16_t *out, int impl) {
    impl = vqrec_fs_resolve_impl(impl);
    for (int64_t b = 0; b < nblocks; b++) {
#ifdef VQREC_X86
        if (impl == IMPL_AVX2) {
            sums_avx2_u16(q, M, packed + b * 16 * M, out + b * 32);
            continue;
        }
#endif
        sums_scalar(q, M, packed + b * 16 * M, out + b * 32);
    }
}

/* ---- candidate reservoir ------------------------------------------------------------------------
 * The kcand best by (score desc, row asc), kept in a buffer of RES_CAP(kcand): items better than the bar are
 * appended; a full buffer is cut back to its kcand best (quickselect) and the bar becomes the worst kept.
 * O(1) per item amortized, where a heap pays a sift per entering item. Same set as a heap. */

static inline void swap_c(float *v, int64_t *r, int64_t a, int64_t b) {
    float tv = v[a];
    int64_t tr = r[a];
    v[a] = v[b];
    r[a] = r[b];
    v[b] = tv;
    r[b] = tr;
}

/* a is better than b (the opposite of "worse"), without branches */
static inline int better(float sa, int64_t ia, float sb, int64_t ib) {
    return (sa > sb) | ((sa == sb) & (ia < ib));
}

/* reorder so that [0, k) are the k best (any order). Lomuto partition without branches: each element is
 * swapped with the first not-better one, and the boundary moves by the comparison's result. */
static void select_best(float *v, int64_t *r, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        /* median of three as the pivot, moved to hi */
        if (worse(v[mid], r[mid], v[lo], r[lo])) swap_c(v, r, mid, lo);
        if (worse(v[hi], r[hi], v[lo], r[lo])) swap_c(v, r, hi, lo);
        if (worse(v[hi], r[hi], v[mid], r[mid])) swap_c(v, r, hi, mid);
        swap_c(v, r, mid, hi);
        float pv = v[hi];
        int64_t pr = r[hi], store = lo;
        for (int64_t i = lo; i < hi; i++) {
            int c = better(v[i], r[i], pv, pr);
            swap_c(v, r, i, store);
            store += c;
        }
        swap_c(v, r, store, hi);
        if (store == k - 1 || store == k) return;
        if (store < k) lo = store + 1;
        else hi = store - 1;
    }
}

/* buffer size for kcand: cuts are rarer with more room */
#define RES_CAP(kc) (4 * (kc) < 64 ? 64 : 4 * (kc))

typedef struct {
    float *v;
    int64_t *r, n, cap, keep;
    float bar; /* nothing worse than (bar, bar_row) enters once full */
    int64_t bar_row;
    int full;
} Reservoir;

static void res_cut(Reservoir *R) {
    if (R->n <= R->keep) return;
    select_best(R->v, R->r, R->n, R->keep);
    R->n = R->keep;
    int64_t w = 0;
    for (int64_t i = 1; i < R->n; i++)
        if (worse(R->v[i], R->r[i], R->v[w], R->r[w])) w = i;
    R->bar = R->v[w];
    R->bar_row = R->r[w];
    R->full = 1;
}

static inline void res_push(Reservoir *R, float v, int64_t row) {
    if (!(v > -INFINITY)) return; /* -inf or NaN: never returned */
    if (R->full && !worse(R->bar, R->bar_row, v, row)) return;
    R->v[R->n] = v;
    R->r[R->n] = row;
    if (++R->n == R->cap) res_cut(R);
}

/* ---- one query -------------------------------------------------------------------------------- */

typedef struct {
    const float *lut; /* (M, 16) float */
    const uint8_t *q; /* quantized, pair layout */
    int64_t M;
    float delta, qbias, alpha;
    const float *scale, *add;
    Reservoir R; /* the candidates */
} Query;

static inline float approx(const Query *Q, uint32_t acc, int64_t row) {
    float v = Q->delta * (float)acc;
    v = v + Q->qbias;
    if (Q->scale) v = v * Q->scale[row];
    v = Q->alpha * v;
    if (Q->add) v = v + Q->add[row];
    return v;
}

static void scan_list_scalar(Query *Q, const uint8_t *blocks, int64_t row0, int64_t n) {
    uint16_t acc[32];
    for (int64_t b = 0; b * 32 < n; b++) {
        sums_scalar(Q->q, Q->M, blocks + b * 16 * Q->M, acc);
        int64_t cnt = n - b * 32 < 32 ? n - b * 32 : 32;
        for (int64_t j = 0; j < cnt; j++) {
            int64_t row = row0 + b * 32 + j;
            res_push(&Q->R, approx(Q, acc[j], row), row);
        }
    }
}

#ifdef VQREC_X86
__attribute__((target("avx2"))) static void scan_list_avx2(Query *Q, const uint8_t *blocks, int64_t row0,
                                                           int64_t n) {
    const __m256 vdelta = _mm256_set1_ps(Q->delta), vqb = _mm256_set1_ps(Q->qbias);
    const __m256 valpha = _mm256_set1_ps(Q->alpha);
    const int64_t bsize = 16 * Q->M;
    for (int64_t b = 0; b * 32 < n; b++) {
        __m256i s[4];
        /* codes are read once per query: fetched ahead without displacing what the caller keeps in cache */
        for (int64_t o = 0; o < bsize; o += 64) __builtin_prefetch(blocks + (b + 4) * bsize + o, 0, 0);
        sums_avx2(Q->q, Q->M, blocks + b * bsize, s);
        int64_t base = row0 + b * 32, cnt = n - b * 32 < 32 ? n - b * 32 : 32;
        const float *sc = Q->scale ? Q->scale + base : NULL, *ad = Q->add ? Q->add + base : NULL;
        float sbuf[32], abuf[32];
        if (cnt < 32) { /* a list's partial last block: its rows' terms through a copy (never read past row n) */
            if (sc) {
                memcpy(sbuf, sc, (size_t)cnt * sizeof(float));
                memset(sbuf + cnt, 0, (size_t)(32 - cnt) * sizeof(float));
                sc = sbuf;
            }
            if (ad) {
                memcpy(abuf, ad, (size_t)cnt * sizeof(float));
                memset(abuf + cnt, 0, (size_t)(32 - cnt) * sizeof(float));
                ad = abuf;
            }
        }
        /* below the reservoir's bar nothing enters (ties are settled by res_push) */
        float bar = Q->R.full ? Q->R.bar : -INFINITY;
        __m256 vbar = _mm256_set1_ps(bar);
        float vals[32];
        unsigned mask = 0;
        for (int g = 0; g < 4; g++) {
            __m256 v = _mm256_mul_ps(vdelta, _mm256_cvtepi32_ps(s[g]));
            v = _mm256_add_ps(v, vqb);
            if (sc) v = _mm256_mul_ps(v, _mm256_loadu_ps(sc + 8 * g));
            v = _mm256_mul_ps(valpha, v);
            if (ad) v = _mm256_add_ps(v, _mm256_loadu_ps(ad + 8 * g));
            _mm256_storeu_ps(vals + 8 * g, v);
            mask |= (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, vbar, _CMP_GE_OQ)) << (8 * g);
        }
        if (cnt < 32) mask &= (1u << cnt) - 1u;
        while (mask) {
            int j = __builtin_ctz(mask);
            mask &= mask - 1;
            res_push(&Q->R, vals[j], base + j);
        }
    }
}
#endif

static inline float exact_one(const float *lut, const uint8_t *c, int64_t M) {
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) {
        s0 += lut[(m + 0) * 16 + c[m + 0]];
        s1 += lut[(m + 1) * 16 + c[m + 1]];
        s2 += lut[(m + 2) * 16 + c[m + 2]];
        s3 += lut[(m + 3) * 16 + c[m + 3]];
    }
    for (; m < M; m++) s0 += lut[m * 16 + c[m]];
    return (s0 + s1) + (s2 + s3);
}

/* the list holding a row: the last l with list_rows[l] <= row (lists may be empty) */
static inline int64_t list_of(const int64_t *list_rows, int64_t nlist, int64_t row) {
    int64_t lo = 0, hi = nlist; /* list_rows[lo] <= row < list_rows[hi] */
    while (hi - lo > 1) {
        int64_t mid = (lo + hi) / 2;
        if (list_rows[mid] <= row) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* ---- probing: the nprobe best lists by coarse key ----------------------------------------------------------
 * key_l = <y, c_l> * w_l + b_l (w/b may be NULL), best first, ties by lower list. The exact key sums over j in
 * order with fused multiply-adds (fmaf is correctly rounded, so both paths give the same bits) over the centroids
 * held in float16 (keys only order lists). Streaming every centroid per query would cost more than the scan at
 * low nprobe, so a query first ranks the lists by an int8 key and computes the exact key of a shortlist only:
 *     q_j = rint(y_j * 63 / max|y|)  (|q_j| <= 63),   c8_l = the int8 row of list l, scale s_l, row sum sum8_l
 *     approx_l = (float)(<q + 64, c8_l> - 64 * sum8_l) * s_l * (max|y| / 63), then * w_l + b_l
 * (q + 64 in 1..127 is the unsigned operand of vpmaddubsw: pair sums stay below 2^15). The SHORTLIST(nprobe) best
 * by approx are re-keyed exactly; the nprobe best of those are probed. When the shortlist would hold every list
 * (or more than SHORT_MAX), or y is zero or not finite, every list is keyed exactly. A NaN or -inf key is probed
 * last (clamped to the lowest finite float: heap_push drops -inf). The numpy reference (probe_ref) takes the same
 * steps; on the 1M recipe the shortlist held the exact top nprobe for every one of 1,000 queries up to nprobe 50. */
#define C8_BLOCK 32
#define SHORT_MAX 512
#define SHORTLIST(np) ((np) + 8 + (np) / 2)

typedef struct {
    const uint16_t *c16;  /* (nlist, d) float16, row-major: the exact keys */
    const int8_t *c8;     /* ceil(nlist / C8_BLOCK) blocks of (d4, C8_BLOCK, 4): the int8 rows, padded with 0 */
    const float *c8s;     /* (nlist,) scale of each int8 row (c_l ~ c8_l * s_l) */
    const int32_t *c8sum; /* (nlist,) sum of each int8 row */
} Coarse;

/* the exact keys <y, c_l> of the lists ls[0..n) (all lists when ls is NULL) into keys[0..n) */
static void exact_keys_scalar(const float *y, int64_t d, const uint16_t *c16, const int64_t *ls, int64_t n,
                              float *keys) {
    for (int64_t i = 0; i < n; i++) {
        const uint16_t *c = c16 + (ls ? ls[i] : i) * d;
        float s = 0.f;
        for (int64_t j = 0; j < d; j++) s = fmaf(y[j], half_to_float(c[j]), s);
        keys[i] = s;
    }
}

#ifdef VQREC_X86
/* eight lists at a time, one lane each (the same sums in the same order as the scalar path) */
__attribute__((target("avx2,fma,f16c"))) static void exact_keys_avx2(const float *y, int64_t d, const uint16_t *c16,
                                                                      const int64_t *ls, int64_t n, float *keys) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const uint16_t *r[8];
        for (int t = 0; t < 8; t++) r[t] = c16 + (ls ? ls[i + t] : i + t) * d;
        __m256 a = _mm256_setzero_ps();
        for (int64_t j = 0; j < d; j++) {
            __m128i h = _mm_setr_epi16((short)r[0][j], (short)r[1][j], (short)r[2][j], (short)r[3][j],
                                       (short)r[4][j], (short)r[5][j], (short)r[6][j], (short)r[7][j]);
            a = _mm256_fmadd_ps(_mm256_set1_ps(y[j]), _mm256_cvtph_ps(h), a);
        }
        _mm256_storeu_ps(keys + i, a);
    }
    for (; i < n; i++) {
        const uint16_t *c = c16 + (ls ? ls[i] : i) * d;
        float s = 0.f;
        for (int64_t j = 0; j < d; j++) s = fmaf(y[j], _cvtsh_ss(c[j]), s);
        keys[i] = s;
    }
}
#endif

/* q + 64 per dimension into u (d4 * 4 bytes, padded with 64: a zero), and max|y| / 63 into sy; 0 when y is zero or
 * not finite (then no shortlist: every list keyed exactly) */
static int quantize_query(const float *y, int64_t d, uint8_t *u, float *sy) {
    float m = 0.f;
    for (int64_t j = 0; j < d; j++) {
        float a = fabsf(y[j]);
        if (!(a <= 3.402823466e38f)) return 0; /* NaN or inf */
        if (a > m) m = a;
    }
    if (!(m > 0.f)) return 0;
    const float inv = 63.f / m;
    for (int64_t j = 0; j < d; j++) u[j] = (uint8_t)((int)rintf(y[j] * inv) + 64);
    for (int64_t j = d; j % 4; j++) u[j] = 64;
    *sy = m / 63.f;
    return 1;
}

/* <u, c8_l> of every list (u: 1..127, d4 groups of 4) into dots[0..nlist) */
static void dots8_scalar(const uint8_t *u, int64_t d4, const int8_t *c8, int64_t nlist, int32_t *dots) {
    for (int64_t l = 0; l < nlist; l++) {
        const int8_t *c = c8 + (l / C8_BLOCK) * d4 * 4 * C8_BLOCK + (l % C8_BLOCK) * 4;
        int32_t s = 0;
        for (int64_t t = 0; t < d4; t++)
            for (int e = 0; e < 4; e++) s += (int32_t)u[4 * t + e] * c[t * 4 * C8_BLOCK + e];
        dots[l] = s;
    }
}

#ifdef VQREC_X86
__attribute__((target("avx2"))) static inline unsigned select_mask8(const float *k, float bar) {
    return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(k), _mm256_set1_ps(bar), _CMP_GE_OQ));
}
#endif

/* key * w + b, NaN / -inf clamped to the lowest finite float */
static inline float key_term(float v, const float *w, const float *b, int64_t l) {
    if (w) v = v * w[l];
    if (b) v = v + b[l];
    return (v != v || v == -INFINITY) ? -3.402823466e38f : v;
}

/* list l's int8 key from its dot with the query's offset bytes (module comment above), as key_term makes it */
static inline float approx_key(const Coarse *ct, int32_t dot, int64_t l, float sy, const float *w, const float *b) {
    float v = (float)(dot - 64 * ct->c8sum[l]) * ct->c8s[l];
    return key_term(v * sy, w, b, l);
}


#ifdef VQREC_X86
/* the ns best lists by the int8 key into sl (unordered), in two passes. Pass 1 makes every key (the same arithmetic
 * as the scalar path, eight lists per register) and each group of eight's maximum. A bar: split the groups into ns
 * runs; the least of the runs' maxima is at most the ns-th best key (ns keys, one per run, reach it). Pass 2 keeps
 * the keys at or above the bar (typically a few ns) in a reservoir, cut to the ns best. A heap fed in list order
 * cost more than the dots (a push for each key that beat the running bar). Needs ns < nlist / 8. */
__attribute__((target("avx2"))) static void shortlist_avx2(const uint8_t *u, int64_t d4, const Coarse *ct,
                                                           int64_t nlist, float sy, const float *w, const float *b,
                                                           int64_t ns, float *keys, float *rv, int64_t *rr,
                                                           int64_t *sl) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256 vsy = _mm256_set1_ps(sy), low = _mm256_set1_ps(-3.402823466e38f), ninf = _mm256_set1_ps(-INFINITY);
    const int64_t ng = (nlist + 7) / 8;
    float gmax[(SHORT_MAX + 8) * 8 + 8]; /* one per group of eight lists; ng <= nlist / 8 + 1 */
    float *gm = ng <= (int64_t)(sizeof gmax / sizeof gmax[0]) ? gmax : rv; /* rv has nlist > ng floats */
    for (int64_t l = 0; l < nlist; l += C8_BLOCK) {
        const int8_t *blk = ct->c8 + (l / C8_BLOCK) * d4 * 4 * C8_BLOCK;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0; /* in registers: no array */
        for (int64_t t = 0; t < d4; t++) {
            int32_t gq;
            memcpy(&gq, u + 4 * t, 4);
            const __m256i q = _mm256_set1_epi32(gq);
            const __m256i *p = (const __m256i *)(blk + t * 4 * C8_BLOCK);
            /* u * c pair sums (< 2^15: no saturation), then each group of four */
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256(p)), ones));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256(p + 1)), ones));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256(p + 2)), ones));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256(p + 3)), ones));
        }
        int32_t dots[C8_BLOCK];
        _mm256_storeu_si256((__m256i *)dots, a0);
        _mm256_storeu_si256((__m256i *)(dots + 8), a1);
        _mm256_storeu_si256((__m256i *)(dots + 16), a2);
        _mm256_storeu_si256((__m256i *)(dots + 24), a3);
        for (int g = 0; g < 4; g++) {
            const int64_t l0 = l + 8 * g;
            if (l0 >= nlist) break;
            if (l0 + 8 <= nlist) {
                const __m256i sum = _mm256_loadu_si256((const __m256i *)(ct->c8sum + l0));
                const __m256i dv = _mm256_loadu_si256((const __m256i *)(dots + 8 * g));
                __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(dv, _mm256_slli_epi32(sum, 6)));
                v = _mm256_mul_ps(_mm256_mul_ps(v, _mm256_loadu_ps(ct->c8s + l0)), vsy);
                if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + l0));
                if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + l0));
                const __m256 bad = _mm256_or_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(v, ninf, _CMP_EQ_OQ));
                v = _mm256_blendv_ps(v, low, bad);
                _mm256_storeu_ps(keys + l0, v);
                __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
                m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
                gm[l0 / 8] = _mm_cvtss_f32(m4);
            } else { /* the last lists: one at a time (w / b end at nlist) */
                float mx = -3.402823466e38f;
                for (int j = 0; l0 + j < nlist; j++) {
                    keys[l0 + j] = approx_key(ct, dots[8 * g + j], l0 + j, sy, w, b);
                    if (keys[l0 + j] > mx) mx = keys[l0 + j];
                }
                gm[l0 / 8] = mx;
            }
        }
    }
    float bar = INFINITY;
    for (int64_t r = 0; r < ns; r++) { /* run r: groups [r * ng / ns, (r + 1) * ng / ns), never empty (ng > ns) */
        float mx = -INFINITY;
        for (int64_t g = r * ng / ns; g < (r + 1) * ng / ns; g++) mx = gm[g] > mx ? gm[g] : mx;
        bar = mx < bar ? mx : bar;
    }
    const int64_t cap = RES_CAP(ns) < nlist ? RES_CAP(ns) : nlist;
    Reservoir R = {rv, rr, 0, cap, ns, 0.f, 0, 0};
    int64_t l = 0;
    for (; l + 8 <= nlist; l += 8) {
        unsigned m = select_mask8(keys + l, R.full && R.bar > bar ? R.bar : bar);
        while (m) {
            int j = __builtin_ctz(m);
            m &= m - 1;
            res_push(&R, keys[l + j], l + j);
        }
    }
    for (; l < nlist; l++)
        if (keys[l] >= bar) res_push(&R, keys[l], l);
    res_cut(&R);
    memcpy(sl, rr, sizeof(int64_t) * (size_t)ns);
}
#endif

/* the n best of keys[0..nl) (ids ls[i], or i) into hD / probes, best first, ties by lower id */
static void best_of(const float *keys, const int64_t *ls, int64_t nl, int64_t n, float *hD, int64_t *probes,
                    int impl) {
    int64_t cnt = 0, i = 0;
#ifdef VQREC_X86
    if (impl == IMPL_AVX2 && !ls) { /* whole groups of 8 below the bar skip the heap */
        for (; i + 8 <= nl; i += 8) {
            unsigned m = cnt < n ? 0xFFu : select_mask8(keys + i, hD[0]);
            while (m) {
                int j = __builtin_ctz(m);
                m &= m - 1;
                if (cnt == n && keys[i + j] < hD[0]) continue;
                heap_push(hD, probes, &cnt, n, keys[i + j], i + j);
            }
        }
    }
#endif
    for (; i < nl; i++) {
        if (cnt == n && keys[i] < hD[0]) continue; /* below the worst kept: cannot enter */
        heap_push(hD, probes, &cnt, n, keys[i], ls ? ls[i] : i);
    }
    heap_finish(hD, probes, cnt, n);
}

/* the nprobe best of the lists ls[0..n) (every list when ls is NULL) by exact key * w + b into hD / probes;
 * keys (n) is scratch */
static void exact_best(const float *y, int64_t d, const uint16_t *c16, const int64_t *ls, int64_t n, const float *w,
                       const float *b, int64_t nprobe, float *keys, float *hD, int64_t *probes, int impl) {
#ifdef VQREC_X86
    if (impl == IMPL_AVX2)
        exact_keys_avx2(y, d, c16, ls, n, keys);
    else
#endif
        exact_keys_scalar(y, d, c16, ls, n, keys);
    for (int64_t i = 0; i < n; i++) keys[i] = key_term(keys[i], w, b, ls ? ls[i] : i);
    best_of(keys, ls, n, nprobe, hD, probes, impl);
}

/* the nprobe best lists (module comment above) into probes; scratch keys (nlist), hD (nlist) */
static void select_lists(const float *y, int64_t d, const Coarse *ct, int64_t nlist, const float *w, const float *b,
                         int64_t nprobe, float *keys, float *hD, int64_t *probes, int impl) {
    const int64_t ns = SHORTLIST(nprobe), d4 = (d + 3) / 4;
    uint8_t u[1028];
    float sy = 0.f;
    if (ns >= nlist || ns > SHORT_MAX || d4 * 4 > (int64_t)sizeof u || !quantize_query(y, d, u, &sy)) {
        exact_best(y, d, ct->c16, NULL, nlist, w, b, nprobe, keys, hD, probes, impl);
        return;
    }
    int64_t sl[SHORT_MAX];
    float sk[SHORT_MAX];
#ifdef VQREC_X86
    if (impl == IMPL_AVX2 && ns < nlist / 8) {
        shortlist_avx2(u, d4, ct, nlist, sy, w, b, ns, keys, hD, probes, sl);
    } else
#endif
    {
        int32_t *dots = (int32_t *)keys; /* same size: each dot is read before its key is written */
        dots8_scalar(u, d4, ct->c8, nlist, dots);
        for (int64_t l = 0; l < nlist; l++) keys[l] = approx_key(ct, dots[l], l, sy, w, b);
        best_of(keys, NULL, nlist, ns, hD, probes, impl);
        memcpy(sl, probes, sizeof(int64_t) * (size_t)ns);
    }
    exact_best(y, d, ct->c16, sl, ns, w, b, nprobe, sk, hD, probes, impl);
}

/* the lists a query scans: probes_in's row, all lists, or the nprobe best by coarse key */
static const int64_t *query_lists(int64_t qi, const float *ys, int64_t d, const Coarse *ct, int64_t nlist,
                                  const float *w, const float *b, int64_t nprobe, const int64_t *probes_in,
                                  float *keys, float *hD, int64_t *probes, int impl) {
    if (probes_in) return probes_in + qi * nprobe;
    if (nprobe >= nlist) {
        for (int64_t l = 0; l < nlist; l++) probes[l] = l;
        return probes;
    }
    select_lists(ys + qi * d, d, ct, nlist, w, b, nprobe, keys, hD, probes, impl);
    return probes;
}

/* The build's assignment: the best list of each of the n rows of ys (n, d) by the probe's keys <y, c_l> * w_l + b_l
 * (the int8 shortlist, then exact float16 keys, as a query's nprobe 1). Returns 0, or -1 when out of memory. */
int64_t vqrec_coarse_assign(const Coarse *ct, int64_t nlist, int64_t d, const float *w, const float *b, const float *ys,
                            int64_t n, int64_t *out, int impl) {
    impl = vqrec_fs_resolve_impl(impl);
    float *keys = malloc(sizeof(float) * (size_t)(2 * nlist));
    int64_t *probes = malloc(sizeof(int64_t) * (size_t)nlist);
    if (!keys || !probes) {
        free(keys);
        free(probes);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        select_lists(ys + i * d, d, ct, nlist, w, b, 1, keys, keys + nlist, probes, impl);
        out[i] = probes[0];
    }
    free(keys);
    free(probes);
    return 0;
}

/* Search nq queries. Per query: luts (M, 16) float, y (d) code-space vector for the coarse keys; probes
 * chosen here when probes_in is NULL (else probes_in (nq, nprobe) lists, -1 = none). Scratch: keys (nlist),
 * cD/cI (RES_CAP(kcand)) per call. Out: D/I (nq, k), scanned (nq,) items visited. Returns nothing. */
void vqrec_fs_search_many(int64_t nq, const float *luts, int64_t M, const uint8_t *packed,
                          const int64_t *list_rows, const int64_t *list_blocks, int64_t nlist, const float *ys,
                          int64_t d, const Coarse *ct, const float *w, const float *b, int64_t nprobe,
                          const int64_t *probes_in, const float *alphas, const float *scale, const float *add,
                          int64_t kcand, int64_t k, float *D, int64_t *I, int64_t *scanned, float *keys,
                          float *cD, int64_t *cI, int64_t *probes, float *hD, int impl) {
    impl = vqrec_fs_resolve_impl(impl);
    uint8_t q[256 * 16];
    uint8_t c[256];
    if (kcand < k) kcand = k;
    for (int64_t qi = 0; qi < nq; qi++) {
        const float *lut = luts + qi * M * 16;
        Query Q = {lut, q, M, 0.f, 0.f, alphas[qi], scale, add, {cD, cI, 0, RES_CAP(kcand), kcand, 0.f, 0, 0}};
        vqrec_fs_quantize_lut(lut, M, q, &Q.delta, &Q.qbias, impl);
        const int64_t *pr = query_lists(qi, ys, d, ct, nlist, w, b, nprobe, probes_in, keys, hD, probes, impl);
        int64_t np = nprobe < nlist ? nprobe : nlist, seen = 0;
        for (int64_t p = 0; p < np; p++) {
            int64_t l = pr[p];
            if (l < 0 || l >= nlist) continue;
            int64_t row0 = list_rows[l], n = list_rows[l + 1] - row0;
            if (n <= 0) continue;
            seen += n;
            const uint8_t *blocks = packed + list_blocks[l] * 16 * M;
            if (p + 1 < np && pr[p + 1] >= 0 && pr[p + 1] < nlist) { /* the next list's first blocks */
                const char *nx = (const char *)(packed + list_blocks[pr[p + 1]] * 16 * M);
                int64_t bytes = (list_blocks[pr[p + 1] + 1] - list_blocks[pr[p + 1]]) * 16 * M;
                for (int64_t o = 0; o < bytes && o < 2048; o += 64) __builtin_prefetch(nx + o, 0, 0);
            }
#ifdef VQREC_X86
            if (impl == IMPL_AVX2) {
                scan_list_avx2(&Q, blocks, row0, n);
                continue;
            }
#endif
            scan_list_scalar(&Q, blocks, row0, n);
        }
        scanned[qi] = seen;
        /* exact re-score of the candidates with the float table */
        float *Dq = D + qi * k;
        int64_t *Iq = I + qi * k, nk = 0;
        res_cut(&Q.R);
        for (int64_t j = 0; j < Q.R.n; j++) {
            int64_t row = cI[j], l = -1;
            if (np <= 64) { /* a candidate comes from a probed list: look there first (in cache, no search) */
                for (int64_t p = 0; p < np && l < 0; p++)
                    if (pr[p] >= 0 && pr[p] < nlist && list_rows[pr[p]] <= row && row < list_rows[pr[p] + 1]) l = pr[p];
            }
            if (l < 0) l = list_of(list_rows, nlist, row);
            int64_t jj = row - list_rows[l];
            unpack_one(packed + (list_blocks[l] + jj / 32) * 16 * M, M, jj % 32, c);
            float v = alphas[qi] * exact_one(lut, c, M);
            if (scale) v *= scale[row];
            if (add) v += add[row];
            heap_push(Dq, Iq, &nk, k, v, row);
        }
        heap_finish(Dq, Iq, nk, k);
    }
}

/* The 8-bit codes (n, M) stored per list (rows contiguous per list), scanned with the 8-bit kernel of _adc.c
 * over the probed lists; the same probing as the 4-bit search. luts (nq, M, ksub). */
void vqrec_scan_range8(const float *lut, int64_t M, int64_t ksub, const uint8_t *codes, int64_t i0, int64_t i1,
                       float alpha, const float *scale, const float *bias, int64_t k, float *D, int64_t *I,
                       int64_t *n);

void vqrec_ivf8_search_many(int64_t nq, const float *luts, int64_t M, int64_t ksub, const uint8_t *codes,
                            const int64_t *list_rows, int64_t nlist, const float *ys, int64_t d, const Coarse *ct,
                            const float *w, const float *b, int64_t nprobe, const int64_t *probes_in,
                            const float *alphas, const float *scale, const float *add, int64_t k, float *D,
                            int64_t *I, int64_t *scanned, float *keys, int64_t *probes, float *hD, int impl) {
    impl = vqrec_fs_resolve_impl(impl);
    for (int64_t qi = 0; qi < nq; qi++) {
        const int64_t *pr = query_lists(qi, ys, d, ct, nlist, w, b, nprobe, probes_in, keys, hD, probes, impl);
        int64_t np = nprobe < nlist ? nprobe : nlist, seen = 0, nk = 0;
        float *Dq = D + qi * k;
        int64_t *Iq = I + qi * k;
        for (int64_t p = 0; p < np; p++) {
            int64_t l = pr[p];
            if (l < 0 || l >= nlist) continue;
            seen += list_rows[l + 1] - list_rows[l];
            vqrec_scan_range8(luts + qi * M * ksub, M, ksub, codes, list_rows[l], list_rows[l + 1], alphas[qi], scale,
                              add, k, Dq, Iq, &nk);
        }
        heap_finish(Dq, Iq, nk, k);
        scanned[qi] = seen;
    }
}

/* ---- one entry for both code widths, index data in a struct (fewer arguments per call) -------------- */

typedef struct {
    int64_t M, ksub, nlist, d;
    const uint8_t *packed; /* 4-bit layout, or NULL */
    const uint8_t *codes;  /* (n, M) one code per byte in row order, used when packed is NULL */
    const int64_t *list_rows, *list_blocks;
    const Coarse *ct;           /* the coarse table (select_lists) */
    const float *w, *b;         /* key weights and offsets (may be NULL) */
    const float *scale, *add;   /* per-row score terms (may be NULL) */
    const float *lutmat;        /* (M, lut_dt, ksub): the lookup table of a vector is computed here */
    int64_t lut_dt, lut_ystep;  /* pq/opq: dsub, dsub (slice m of y); rq: d, 0 (all of y per stage) */
    const void *vecs;           /* (n, d) item vectors in input space for the exact re-rank, or NULL */
    int64_t vec_type;           /* 1 float32, 2 float16, 3 int8 (x = v * vec_scale, per dimension) */
    const float *vec_scale;     /* (d,) for int8 */
} vqrec_lists_t;

#define RR_IP 0
#define RR_COSINE 1
#define RR_L2 2

/* item row's vector, as float32, into out (d) */
static inline void item_vec(const vqrec_lists_t *L, int64_t row, float *out) {
    const int64_t d = L->d;
    if (L->vec_type == 1) {
        memcpy(out, (const float *)L->vecs + row * d, sizeof(float) * (size_t)d);
    } else if (L->vec_type == 2) {
        const uint16_t *h = (const uint16_t *)L->vecs + row * d;
        for (int64_t j = 0; j < d; j++) out[j] = half_to_float(h[j]);
    } else {
        const int8_t *v = (const int8_t *)L->vecs + row * d;
        for (int64_t j = 0; j < d; j++) out[j] = (float)v[j] * L->vec_scale[j];
    }
}

/* Exact re-rank of the candidates (cI, cn of them) with the stored item vectors against the input-space query
 * x (d): ip <x, v>, cosine <x, v> / |v| / |x| (an item with |v| = 0 is never returned), l2 -|x - v|^2. The k best
 * into D/I (ties by lower row, padded). Summed in double (a float product is exact in double): the order of the
 * sum does not move the float result, so the SIMD path sums four lanes. Every candidate's vector is a random row:
 * the first RR_AHEAD are asked for before the first is read, then each RR_AHEAD ahead. */
#define RR_AHEAD 16
static float rerank_score_scalar(const vqrec_lists_t *L, const float *x, double xn, int64_t row, int mode) {
    const int64_t d = L->d;
    float v[1024];
    item_vec(L, row, v);
    if (mode == RR_L2) {
        double l2 = 0.;
        for (int64_t j = 0; j < d; j++) {
            double t = (double)x[j] - v[j];
            l2 += t * t;
        }
        return (float)-l2;
    }
    double dot = 0.;
    for (int64_t j = 0; j < d; j++) dot += (double)x[j] * v[j];
    if (mode == RR_IP) return (float)dot;
    double vv = 0.;
    for (int64_t j = 0; j < d; j++) vv += (double)v[j] * v[j];
    return vv > 0. && xn > 0. ? (float)(dot / sqrt(vv) / xn) : -INFINITY;
}

#ifdef VQREC_X86
/* the same sums, four doubles per register (d a multiple of 8); v: the row as float, as item_vec makes it */
__attribute__((target("avx2,fma,f16c"))) static float rerank_score_avx2(const vqrec_lists_t *L, const float *x,
                                                                         double xn, int64_t row, int mode) {
    const int64_t d = L->d;
    float v[1024];
    if (L->vec_type == 3) {
        const int8_t *p = (const int8_t *)L->vecs + row * d;
        for (int64_t j = 0; j < d; j += 8) {
            int64_t b8;
            memcpy(&b8, p + j, 8);
            __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(b8)));
            _mm256_storeu_ps(v + j, _mm256_mul_ps(f, _mm256_loadu_ps(L->vec_scale + j)));
        }
    } else if (L->vec_type == 2) {
        const uint16_t *h = (const uint16_t *)L->vecs + row * d;
        for (int64_t j = 0; j < d; j += 8) _mm256_storeu_ps(v + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + j))));
    } else {
        memcpy(v, (const float *)L->vecs + row * d, sizeof(float) * (size_t)d);
    }
    __m256d a = _mm256_setzero_pd(), c = a;
    for (int64_t j = 0; j < d; j += 4) {
        const __m256d xv = _mm256_cvtps_pd(_mm_loadu_ps(x + j)), vd = _mm256_cvtps_pd(_mm_loadu_ps(v + j));
        if (mode == RR_L2) {
            const __m256d t = _mm256_sub_pd(xv, vd);
            a = _mm256_fmadd_pd(t, t, a);
        } else {
            a = _mm256_fmadd_pd(xv, vd, a);
            if (mode == RR_COSINE) c = _mm256_fmadd_pd(vd, vd, c);
        }
    }
    double s[4], cs[4];
    _mm256_storeu_pd(s, a);
    _mm256_storeu_pd(cs, c);
    const double sum = (s[0] + s[1]) + (s[2] + s[3]);
    if (mode == RR_L2) return (float)-sum;
    if (mode == RR_IP) return (float)sum;
    const double vv = (cs[0] + cs[1]) + (cs[2] + cs[3]);
    return vv > 0. && xn > 0. ? (float)(sum / sqrt(vv) / xn) : -INFINITY;
}
#endif

static void rerank_exact(const vqrec_lists_t *L, const float *x, const int64_t *cI, int64_t cn, int mode, int64_t k,
                         float *D, int64_t *I) {
    const int64_t d = L->d, vb = d * (L->vec_type == 1 ? 4 : L->vec_type == 2 ? 2 : 1);
    double xn = 0.;
    for (int64_t j = 0; j < d; j++) xn += (double)x[j] * x[j];
    xn = sqrt(xn);
    for (int64_t c = 0; c < cn && c < RR_AHEAD; c++)
        if (cI[c] >= 0)
            for (int64_t o = 0; o < vb; o += 64) __builtin_prefetch((const char *)L->vecs + cI[c] * vb + o, 0, 0);
    int simd = 0;
#ifdef VQREC_X86
    simd = d % 8 == 0 && vqrec_fs_has_avx2();
#endif
    int64_t nk = 0;
    for (int64_t c = 0; c < cn; c++) {
        int64_t row = cI[c];
        if (c + RR_AHEAD < cn && cI[c + RR_AHEAD] >= 0)
            for (int64_t o = 0; o < vb; o += 64) __builtin_prefetch((const char *)L->vecs + cI[c + RR_AHEAD] * vb + o, 0, 0);
        if (row < 0) continue;
        float sc;
#ifdef VQREC_X86
        if (simd)
            sc = rerank_score_avx2(L, x, xn, row, mode);
        else
#endif
            sc = rerank_score_scalar(L, x, xn, row, mode);
        heap_push(D, I, &nk, k, sc, row);
    }
    heap_finish(D, I, nk, k);
}

/* lut[m, j] = sum_t y[m * ystep + t] * lutmat[m, t, j], summed over t in order (mul then add, no fusing):
 * the numpy reference (fastscan.lut_ref) takes the same steps. */
static void make_lut(const vqrec_lists_t *L, const float *y, float *lut) {
    const int64_t M = L->M, ks = L->ksub, dt = L->lut_dt, step = L->lut_ystep;
    for (int64_t m = 0; m < M; m++) {
        float *o = lut + m * ks;
        for (int64_t j = 0; j < ks; j++) o[j] = 0.f;
        for (int64_t t = 0; t < dt; t++) {
            const float yv = y[m * step + t], *c = L->lutmat + (m * dt + t) * ks;
            for (int64_t j = 0; j < ks; j++) o[j] = o[j] + yv * c[j];
        }
    }
}

#ifdef VQREC_X86
/* the same sums eight entries at a time (mul then add, in the same order) */
__attribute__((target("avx2"))) static void make_lut_avx2(const vqrec_lists_t *L, const float *y, float *lut) {
    const int64_t M = L->M, ks = L->ksub, dt = L->lut_dt, step = L->lut_ystep;
    for (int64_t m = 0; m < M; m++) {
        float *o = lut + m * ks;
        for (int64_t j = 0; j < ks; j += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t t = 0; t < dt; t++)
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(y[m * step + t]),
                                                       _mm256_loadu_ps(L->lutmat + (m * dt + t) * ks + j)));
            _mm256_storeu_ps(o + j, acc);
        }
    }
}
#endif

static void make_lut_impl(const vqrec_lists_t *L, const float *y, float *lut, int impl) {
#ifdef VQREC_X86
    if (L->ksub % 8 == 0 && vqrec_fs_resolve_impl(impl) == IMPL_AVX2) {
        make_lut_avx2(L, y, lut);
        return;
    }
#endif
    make_lut(L, y, lut);
}

void vqrec_lists_lut(const vqrec_lists_t *L, const float *y, float *lut, int impl) { make_lut_impl(L, y, lut, impl); }

/* nq queries: luts (nq, M, ksub) or NULL (computed from ys here), ys (nq, d), alphas (nq,) or NULL (1).
 * Scratch is allocated here. Returns 0, or -1 when
 * out of memory (outputs then undefined). */
int64_t vqrec_lists_search(const vqrec_lists_t *L, int64_t nq, const float *luts, const float *ys,
                           const float *alphas, int64_t nprobe, const int64_t *probes_in, int64_t kcand, int64_t k,
                           float *D, int64_t *I, int64_t *scanned, int impl) {
    int64_t nl = L->nlist, np = nprobe > nl ? nprobe : nl, kc = kcand > k ? kcand : k;
    float *keys = malloc(sizeof(float) * (size_t)(nl + np + RES_CAP(kc)));
    int64_t *ibuf = malloc(sizeof(int64_t) * (size_t)(np + RES_CAP(kc)));
    if (!keys || !ibuf) {
        free(keys);
        free(ibuf);
        return -1;
    }
    float *hD = keys + nl, *cD = hD + np;
    int64_t *probes = ibuf, *cI = ibuf + np;
    float *lbuf = NULL, one = 1.f;
    if (!luts && !(lbuf = malloc(sizeof(float) * (size_t)(L->M * L->ksub)))) {
        free(keys);
        free(ibuf);
        return -1;
    }
    /* given tables and alphas: all queries in one call; else one at a time, the table computed here */
    int64_t step = (luts && alphas) ? nq : 1;
    for (int64_t q0 = 0; q0 < nq; q0 += step) {
        const float *lq = luts ? luts + q0 * L->M * L->ksub : lbuf, *aq = alphas ? alphas + q0 : &one;
        const float *yq = ys + q0 * L->d;
        const int64_t *pq = probes_in ? probes_in + q0 * nprobe : NULL;
        if (!luts) make_lut_impl(L, yq, lbuf, impl);
        if (L->packed)
            vqrec_fs_search_many(step, lq, L->M, L->packed, L->list_rows, L->list_blocks, nl, yq, L->d, L->ct, L->w,
                                 L->b, nprobe, pq, aq, L->scale, L->add, kc, k, D + q0 * k, I + q0 * k, scanned + q0,
                                 keys, cD, cI, probes, hD, impl);
        else
            vqrec_ivf8_search_many(step, lq, L->M, L->ksub, L->codes, L->list_rows, nl, yq, L->d, L->ct, L->w, L->b,
                                   nprobe, pq, aq, L->scale, L->add, k, D + q0 * k, I + q0 * k, scanned + q0, keys,
                                   probes, hD, impl);
    }
    free(lbuf);
    free(keys);
    free(ibuf);
    return 0;
}

/* The search, then (rerank > 0) an exact re-rank of the best max(rerank, k) with the stored item vectors against
 * xr (nq, d) input-space queries, mode RR_*. Returns 0, or -1 when out of memory / no item vectors. */
int64_t vqrec_lists_search_rr(const vqrec_lists_t *L, int64_t nq, const float *luts, const float *ys,
                              const float *alphas, int64_t nprobe, const int64_t *probes_in, int64_t kcand, int64_t k,
                              float *D, int64_t *I, int64_t *scanned, int impl, const float *xr, int64_t rerank,
                              int64_t mode) {
    if (rerank <= 0) return vqrec_lists_search(L, nq, luts, ys, alphas, nprobe, probes_in, kcand, k, D, I, scanned, impl);
    if (!L->vecs || !xr || L->d > 1024) return -1;
    int64_t kr = rerank > k ? rerank : k, kc = kcand > kr ? kcand : kr;
    float *cD = malloc(sizeof(float) * (size_t)kr);
    int64_t *cI = malloc(sizeof(int64_t) * (size_t)kr);
    int64_t rc = (cD && cI) ? 0 : -1;
    for (int64_t q = 0; q < nq && rc == 0; q++) {
        rc = vqrec_lists_search(L, 1, luts ? luts + q * L->M * L->ksub : NULL, ys + q * L->d, alphas ? alphas + q : NULL,
                                nprobe, probes_in ? probes_in + q * nprobe : NULL, kc, kr, cD, cI, scanned + q, impl);
        if (rc == 0) rerank_exact(L, xr + q * L->d, cI, kr, (int)mode, k, D + q * k, I + q * k);
    }
    free(cD);
    free(cI);
    return rc;
}

static inline int64_t id_off(const void *off, int off32, int64_t i);
int64_t vqrec_ids_join(const uint8_t *blob, const void *off, int off32, int64_t strip, const int64_t *rows, int64_t n,
                       uint8_t *out, int64_t room);

/* One query through a workspace: ws[0..3] = nprobe, kcand, k, impl; ws[4..9] = addresses of the lut, y, alpha,
 * D, I and scanned arrays (fixed when the workspace is made; lut and alpha 0 for a vector query); ws[10..12] = the
 * re-rank query's address (input space), rerank, mode. ws[13..17]: the answer's ids written out, when ws[13] (an
 * id blob, see the id map below) is set: offsets, off32 | strip << 1, the output buffer and its room in bytes.
 * Out: ws[18] = results (I's rows >= 0, a prefix), ws[19] = bytes written (the ids joined by newlines), or -1 when
 * they do not fit. Two arguments: the cheapest call from Python. Returns 0; -1 when out of memory; -2 when y holds
 * NaN or inf or its squared norm overflows float32 (checked here: the latency path's query check). */
int64_t vqrec_lists_search_ws(const vqrec_lists_t *L, int64_t *ws) {
    const float *y = (const float *)ws[5];
    double yy = 0.;
    for (int64_t j = 0; j < L->d; j++) yy += (double)y[j] * y[j];
    if (!(yy <= 3.4028234663852886e38)) return -2; /* NaN, inf, or |y|^2 beyond float32: nothing searched */
    int64_t rc = vqrec_lists_search_rr(L, 1, (const float *)ws[4], (const float *)ws[5], (const float *)ws[6], ws[0],
                                       NULL, ws[1], ws[2], (float *)ws[7], (int64_t *)ws[8], (int64_t *)ws[9],
                                       (int)ws[3], (const float *)ws[10], ws[11], ws[12]);
    if (rc) return rc;
    const int64_t *I = (const int64_t *)ws[8];
    int64_t n = 0;
    while (n < ws[2] && I[n] >= 0) n++;
    ws[18] = n;
    ws[19] = ws[13] ? vqrec_ids_join((const uint8_t *)ws[13], (const void *)ws[14], (int)(ws[15] & 1), ws[15] >> 1,
                                     I, n, (uint8_t *)ws[16], ws[17])
                    : 0;
    return 0;
}

/* ---- compact id map: ids as one UTF-8 blob + offsets, found through an open-addressing table of rows ---- */

static inline uint64_t fnv1a(const uint8_t *p, int64_t n) {
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    h ^= h >> 33; /* a finalizer (murmur3's): every bit of the key moves the high bits the slot is taken from */
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

/* the first slot of a hash in a table of cap slots (any cap: the high bits of h * cap, no power of two needed) */
static inline uint64_t first_slot(uint64_t h, int64_t cap) {
    return (uint64_t)(((unsigned __int128)h * (uint64_t)cap) >> 64);
}

static inline int64_t id_off(const void *off, int off32, int64_t i) {
    return off32 ? (int64_t)((const uint32_t *)off)[i] : ((const int64_t *)off)[i];
}

/* the row holding key (klen bytes), or -1 */
int64_t vqrec_ids_find(const uint8_t *blob, const void *off, int off32, const int32_t *table, int64_t cap,
                       const uint8_t *key, int64_t klen) {
    uint64_t slot = first_slot(fnv1a(key, klen), cap);
    for (int64_t probe = 0; probe < cap; probe++, slot = slot + 1 == (uint64_t)cap ? 0 : slot + 1) {
        int32_t r = table[slot];
        if (r < 0) return -1;
        int64_t a = id_off(off, off32, r), b = id_off(off, off32, r + 1);
        if (b - a == klen && memcmp(blob + a, key, (size_t)klen) == 0) return r;
    }
    return -1;
}

/* fill table (cap > n slots, preset to -1; linear probing) with rows 0..n-1; returns -1, or the first row whose
 * id repeats an earlier one */
int64_t vqrec_ids_build(const uint8_t *blob, const void *off, int off32, int64_t n, int32_t *table, int64_t cap) {
    for (int64_t i = 0; i < n; i++) {
        int64_t a = id_off(off, off32, i), len = id_off(off, off32, i + 1) - a;
        uint64_t slot = first_slot(fnv1a(blob + a, len), cap);
        for (;;) {
            int32_t r = table[slot];
            if (r < 0) {
                table[slot] = (int32_t)i;
                break;
            }
            int64_t ra = id_off(off, off32, r), rb = id_off(off, off32, r + 1);
            if (rb - ra == len && memcmp(blob + ra, blob + a, (size_t)len) == 0) return i;
            slot = slot + 1 == (uint64_t)cap ? 0 : slot + 1;
        }
    }
    return -1;
}

/* ---- memory read bandwidth (the benchmark's yardstick for the exhaustive scan) ---------------------- */

/* Sum of n 64-bit words, read once from start to end: bytes / time is this core's read bandwidth. */
uint64_t vqrec_read_words(const uint64_t *p, int64_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

/* the ids of n rows joined by newlines into out (room bytes; a span ends with its newline when strip = 1, left
 * out); returns the bytes written, or -1 when they do not fit */
int64_t vqrec_ids_join(const uint8_t *blob, const void *off, int off32, int64_t strip, const int64_t *rows, int64_t n,
                       uint8_t *out, int64_t room) {
    int64_t w = 0;
    for (int64_t j = 0; j < n; j++) {
        int64_t a = id_off(off, off32, rows[j]), len = id_off(off, off32, rows[j] + 1) - strip - a;
        if (w + len + (j > 0) > room) return -1;
        if (j) out[w++] = '\n';
        memcpy(out + w, blob + a, (size_t)len);
        w += len;
    }
    return w;
}
