/* Top-k heap shared by the scan kernels (_adc.c, _fastscan.c): a min-heap on "worse" keeps the k best
 * (score desc, row asc); heap_finish sorts it best first and pads with -inf / -1. */
#ifndef VQREC_TOPK_H
#define VQREC_TOPK_H
#include <math.h>
#include <stdint.h>

/* a is worse than b: lower score, or equal score and later row */
static inline int worse(float sa, int64_t ia, float sb, int64_t ib) {
    return sa < sb || (sa == sb && ia > ib);
}

/* min-heap by "worse": the root is the worst of the kept candidates */
static inline void sift_down(float *hs, int64_t *hi, int64_t n, int64_t pos) {
    float s = hs[pos];
    int64_t id = hi[pos];
    for (;;) {
        int64_t c = 2 * pos + 1;
        if (c >= n) break;
        if (c + 1 < n && worse(hs[c + 1], hi[c + 1], hs[c], hi[c])) c++;
        if (!worse(hs[c], hi[c], s, id)) break;
        hs[pos] = hs[c];
        hi[pos] = hi[c];
        pos = c;
    }
    hs[pos] = s;
    hi[pos] = id;
}

static inline void sift_up(float *hs, int64_t *hi, int64_t pos) {
    float s = hs[pos];
    int64_t id = hi[pos];
    while (pos > 0) {
        int64_t p = (pos - 1) / 2;
        if (!worse(s, id, hs[p], hi[p])) break;
        hs[pos] = hs[p];
        hi[pos] = hi[p];
        pos = p;
    }
    hs[pos] = s;
    hi[pos] = id;
}

static inline void heap_push(float *D, int64_t *I, int64_t *n, int64_t k, float v, int64_t i) {
    if (!(v > -INFINITY)) return; /* -inf or NaN: masked out */
    if (*n < k) {
        D[*n] = v;
        I[*n] = i;
        sift_up(D, I, *n);
        (*n)++;
    } else if (worse(D[0], I[0], v, i)) {
        D[0] = v;
        I[0] = i;
        sift_down(D, I, *n, 0);
    }
}

/* heap sort: repeatedly move the worst to the end -> best first; pad to k */
static inline void heap_finish(float *D, int64_t *I, int64_t n, int64_t k) {
    for (int64_t end = n - 1; end > 0; end--) {
        float ts = D[0];
        int64_t ti = I[0];
        D[0] = D[end];
        I[0] = I[end];
        D[end] = ts;
        I[end] = ti;
        sift_down(D, I, end, 0);
    }
    for (int64_t j = n; j < k; j++) {
        D[j] = -INFINITY;
        I[j] = -1;
    }
}

#endif
