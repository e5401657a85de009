/*
 * The compiled steps of the edge matting (app/pipeline/matte.py): the product of the closed-form
 * matting Laplacian with a vector, by box filters (He, Sun & Tang 2010), which a conjugate-gradient
 * solve calls ~70 times a request, and the windows' statistics it reads, made once a solve.
 *
 * laplacian_times(height, width, radius, p, colours, means, inverse, out, work)
 *   out = L p / |window| for the (2r+1)^2 windows of the colours. Every array is float32, C-order:
 *   p, out: height x width; colours, means: 3 x height x width (the colour planes and their window
 *   means); inverse: 6 x height x width (each window's (Sigma + eps/|w| I)^-1, entries 00 01 02 11
 *   12 22); work: at least work_floats(height, width, radius) float32 of scratch.
 *   In numpy (matte._Laplacian._times_numpy, the definition): mean_p = box(p); c_k = box(I_k p) -
 *   m_k mean_p; a = inverse . c; b = mean_p - a . m; out = p - box(b) - sum_k box(a_k) I_k, where
 *   box is the window mean with the borders reflected, the edge pixel repeated (...cba|abc...).
 *   The same float32 operations in the same order as numpy's (each window summed along its rows
 *   first, entry after entry, then down its column; then times 1/|w|): for windows under 7 px wide
 *   (morphology.BoxMean sums wider ones by doubling) the result is numpy's bit for bit, as long as
 *   the compiler contracts nothing into fused multiply-adds (setup.py: -ffp-contract=off). It is one
 *   pass over the rows per group of four box filters instead of numpy's ~70 passes over whole planes.
 *
 * laplacian_setup(height, width, radius, eps, colours, means, inverse, work)
 *   The windows' statistics the product uses: means (3 planes) = box(I_c); inverse (6 planes) =
 *   (Sigma + eps/|w| I)^-1 with Sigma_ij = box(I_i I_j) - m_i m_j, by cofactors over the determinant
 *   (matte._Laplacian._setup_numpy, the definition, bit for bit as above).
 *
 * The buffers are read through the buffer protocol, each of exactly the size its shape needs (work:
 * at least; else ValueError), writable where written (else TypeError); the GIL is released while
 * the loops run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The source index of padded index i (0 <= i < n + 2r) along an axis of n: numpy's
   morphology._reflected, for any n and r. */
static Py_ssize_t reflected(Py_ssize_t i, Py_ssize_t n, Py_ssize_t r)
{
    Py_ssize_t period = 2 * n, k = (i - r) % period;
    if (k < 0)
        k += period;
    return k >= n ? period - 1 - k : k;
}

/* One padded row of quantity q (w + 2r entries; border entries through ci): with `c`, c * p
   entry by entry, else p. */
static void padded_row(Py_ssize_t w, Py_ssize_t r, const Py_ssize_t *ci, const float *restrict p,
                       const float *restrict c, float *restrict l)
{
    if (c != NULL) {
        for (Py_ssize_t x = 0; x < w; x++)
            l[r + x] = c[x] * p[x];
        for (Py_ssize_t x = 0; x < r; x++) {
            l[x] = c[ci[x]] * p[ci[x]];
            l[w + r + x] = c[ci[w + r + x]] * p[ci[w + r + x]];
        }
    } else {
        memcpy(l + r, p, (size_t)w * sizeof(float));
        for (Py_ssize_t x = 0; x < r; x++) {
            l[x] = p[ci[x]];
            l[w + r + x] = p[ci[w + r + x]];
        }
    }
}

/* The sums of n consecutive entries of l (w + n - 1 of them), each summed in order: dst[x] =
   ((l[x] + l[x+1]) + l[x+2]) + ... (numpy's order: the slices added one after the other). */
static void window_sums(const float *restrict l, Py_ssize_t w, Py_ssize_t n, float *restrict dst)
{
    if (n == 3) {
        for (Py_ssize_t x = 0; x < w; x++)
            dst[x] = (l[x] + l[x + 1]) + l[x + 2];
    } else if (n == 5) {
        for (Py_ssize_t x = 0; x < w; x++)
            dst[x] = (((l[x] + l[x + 1]) + l[x + 2]) + l[x + 3]) + l[x + 4];
    } else {
        for (Py_ssize_t x = 0; x < w; x++)
            dst[x] = l[x];
        for (Py_ssize_t k = 1; k < n; k++)
            for (Py_ssize_t x = 0; x < w; x++)
                dst[x] += l[x + k];
    }
}

/* The window means of one row from the row sums of the n rows of its windows, top to bottom,
   summed in that order, then times scale. */
static void column_means(const float *const *rows, Py_ssize_t w, Py_ssize_t n, float scale, float *restrict out)
{
    if (n == 3) {
        const float *restrict r0 = rows[0], *restrict r1 = rows[1], *restrict r2 = rows[2];
        for (Py_ssize_t x = 0; x < w; x++)
            out[x] = ((r0[x] + r1[x]) + r2[x]) * scale;
    } else if (n == 5) {
        const float *restrict r0 = rows[0], *restrict r1 = rows[1], *restrict r2 = rows[2], *restrict r3 = rows[3],
                    *restrict r4 = rows[4];
        for (Py_ssize_t x = 0; x < w; x++)
            out[x] = ((((r0[x] + r1[x]) + r2[x]) + r3[x]) + r4[x]) * scale;
    } else {
        for (Py_ssize_t x = 0; x < w; x++)
            out[x] = rows[0][x];
        for (Py_ssize_t k = 1; k < n; k++)
            for (Py_ssize_t x = 0; x < w; x++)
                out[x] += rows[k][x];
        for (Py_ssize_t x = 0; x < w; x++)
            out[x] *= scale;
    }
}

/* Up to MAX_QUANTITIES box filters at once, row by row: means_of_row(y) leaves in box (count x w)
   the window means of row y of each quantity. Quantity q is src[q], or src[q] * mult[q] entry by
   entry where mult[q] is set. The row sums of the last n padded rows (padded row yy: source row
   ri[yy]) are kept in a ring (count x n x w). */
#define MAX_QUANTITIES 6

typedef struct {
    Py_ssize_t h, w, r, n;
    const Py_ssize_t *ri, *ci;
    float *ring, *line, *box;
    float scale;
    int count;
    const float *src[MAX_QUANTITIES], *mult[MAX_QUANTITIES];
} Boxes;

static void fill(const Boxes *b, Py_ssize_t yy)
{
    Py_ssize_t o = b->ri[yy] * b->w;
    for (int q = 0; q < b->count; q++) {
        padded_row(b->w, b->r, b->ci, b->src[q] + o, b->mult[q] ? b->mult[q] + o : NULL, b->line);
        window_sums(b->line, b->w, b->n, b->ring + ((Py_ssize_t)q * b->n + yy % b->n) * b->w);
    }
}

static void start(Boxes *b)
{
    for (Py_ssize_t yy = 0; yy < b->n - 1; yy++)
        fill(b, yy);
}

static void means_of_row(const Boxes *b, Py_ssize_t y)
{
    fill(b, y + b->n - 1);
    const float *rows[129];
    for (int q = 0; q < b->count; q++) {
        for (Py_ssize_t k = 0; k < b->n; k++)
            rows[k] = b->ring + ((Py_ssize_t)q * b->n + (y + k) % b->n) * b->w;
        column_means(rows, b->w, b->n, b->scale, b->box + q * b->w);
    }
}

/* The scratch of the box filters laid out in work (after `skip` floats): ring, line, box, then the
   padded index tables. */
static Boxes boxes_in(Py_ssize_t h, Py_ssize_t w, Py_ssize_t r, float *work)
{
    Py_ssize_t n = 2 * r + 1, pw = w + 2 * r, ph = h + 2 * r;
    Boxes b = {h, w, r, n, NULL, NULL, work, NULL, NULL, (float)(1.0 / (double)(n * n)), 0, {NULL}, {NULL}};
    b.line = b.ring + MAX_QUANTITIES * n * w;  /* w + 2r */
    b.box = b.line + pw;                       /* MAX_QUANTITIES x w */
    uintptr_t tables = (uintptr_t)(b.box + MAX_QUANTITIES * w);
    Py_ssize_t *ri = (Py_ssize_t *)((tables + sizeof(Py_ssize_t) - 1) & ~(uintptr_t)(sizeof(Py_ssize_t) - 1));
    Py_ssize_t *ci = ri + ph;
    for (Py_ssize_t i = 0; i < ph; i++)
        ri[i] = reflected(i, h, r);
    for (Py_ssize_t i = 0; i < pw; i++)
        ci[i] = reflected(i, w, r);
    b.ri = ri;
    b.ci = ci;
    return b;
}

static void set(Boxes *b, int count, const float *const src[], const float *const mult[])
{
    b->count = count;
    for (int q = 0; q < count; q++) {
        b->src[q] = src[q];
        b->mult[q] = mult ? mult[q] : NULL;
    }
}

/* The windows' statistics of the colours (3 planes): their means (3 planes) and (Sigma + eps/n I)^-1
   (6 planes: 00 01 02 11 12 22) by cofactors over the determinant, numpy's _Laplacian.__init__ in its
   order: s_ij = box(I_i I_j) - m_i m_j (+ eps/n on the diagonal); det along the first row. */
static void setup(Py_ssize_t h, Py_ssize_t w, Py_ssize_t r, double eps, const float *colours, float *means,
                  float *inverse, float *work)
{
    Py_ssize_t plane = h * w, n = 2 * r + 1;
    float diagonal = (float)(eps / (double)(n * n));
    Boxes b = boxes_in(h, w, r, work);
    const float *I[3] = {colours, colours + plane, colours + 2 * plane};
    set(&b, 3, I, NULL);
    start(&b);
    for (Py_ssize_t y = 0; y < h; y++) {
        means_of_row(&b, y);
        for (int c = 0; c < 3; c++)
            memcpy(means + c * plane + y * w, b.box + c * w, (size_t)w * sizeof(float));
    }
    const float *left[6] = {I[0], I[0], I[0], I[1], I[1], I[2]}, *right[6] = {I[0], I[1], I[2], I[1], I[2], I[2]};
    set(&b, 6, left, right);
    start(&b);
    for (Py_ssize_t y = 0; y < h; y++) {
        means_of_row(&b, y);
        Py_ssize_t o = y * w;
        const float *restrict m0 = means + o, *restrict m1 = means + plane + o, *restrict m2 = means + 2 * plane + o;
        const float *restrict box = b.box;
        float *restrict v[6];
        for (int k = 0; k < 6; k++)
            v[k] = inverse + k * plane + o;
        for (Py_ssize_t x = 0; x < w; x++) {
            float s00 = box[x] - m0[x] * m0[x], s01 = box[w + x] - m0[x] * m1[x], s02 = box[2 * w + x] - m0[x] * m2[x];
            float s11 = box[3 * w + x] - m1[x] * m1[x], s12 = box[4 * w + x] - m1[x] * m2[x];
            float s22 = box[5 * w + x] - m2[x] * m2[x];
            s00 += diagonal;
            s11 += diagonal;
            s22 += diagonal;
            /* (a, b, c, d): entry = a b - c d, as numpy's cofactors */
            float e00 = s11 * s22 - s12 * s12, e01 = s02 * s12 - s01 * s22, e02 = s01 * s12 - s02 * s11;
            float e11 = s00 * s22 - s02 * s02, e12 = s01 * s02 - s00 * s12, e22 = s00 * s11 - s01 * s01;
            float det = 0.0f;
            det += e00 * s00;
            det += e01 * s01;
            det += e02 * s02;
            v[0][x] = e00 / det;
            v[1][x] = e01 / det;
            v[2][x] = e02 / det;
            v[3][x] = e11 / det;
            v[4][x] = e12 / det;
            v[5][x] = e22 / det;
        }
    }
}

/* Row y's coefficients from its window means (box: mean p, then mean I_k p, 4 x w): a = inverse . c
   and b = mean p - a . m, c_k = mean(I_k p) - m_k mean p, into b, a0, a1, a2. */
static void coefficients(Py_ssize_t w, const float *restrict box, const float *restrict m0, const float *restrict m1,
                         const float *restrict m2, const float *restrict i00, const float *restrict i01,
                         const float *restrict i02, const float *restrict i11, const float *restrict i12,
                         const float *restrict i22, float *restrict b, float *restrict a0, float *restrict a1,
                         float *restrict a2)
{
    for (Py_ssize_t x = 0; x < w; x++) {
        float mp = box[x];
        float c0 = box[w + x] - m0[x] * mp;
        float c1 = box[2 * w + x] - m1[x] * mp;
        float c2 = box[3 * w + x] - m2[x] * mp;
        float t0 = i00[x] * c0, t1 = i01[x] * c0, t2 = i02[x] * c0;
        t0 += i01[x] * c1;
        t0 += i02[x] * c2;
        t1 += i11[x] * c1;
        t1 += i12[x] * c2;
        t2 += i12[x] * c1;
        t2 += i22[x] * c2;
        a0[x] = t0;
        a1[x] = t1;
        a2[x] = t2;
        mp -= t0 * m0[x];
        mp -= t1 * m1[x];
        mp -= t2 * m2[x];
        b[x] = mp;
    }
}

/* Row y of the product from the window means of b, a0, a1, a2 (box, 4 x w). */
static void product_row(Py_ssize_t w, const float *restrict box, const float *restrict p, const float *restrict c0,
                        const float *restrict c1, const float *restrict c2, float *restrict dst)
{
    for (Py_ssize_t x = 0; x < w; x++) {
        float v = p[x] - box[x];
        v -= box[w + x] * c0[x];
        v -= box[2 * w + x] * c1[x];
        v -= box[3 * w + x] * c2[x];
        dst[x] = v;
    }
}

static void times(Py_ssize_t h, Py_ssize_t w, Py_ssize_t r, const float *p, const float *colours,
                  const float *means, const float *inverse, float *out, float *work)
{
    Py_ssize_t plane = h * w;
    float *coef = work;                    /* 4 planes: b, a0, a1, a2 */
    Boxes boxes = boxes_in(h, w, r, coef + 4 * plane);
    const float *m0 = means, *m1 = means + plane, *m2 = means + 2 * plane;
    const float *i00 = inverse, *i01 = inverse + plane, *i02 = inverse + 2 * plane, *i11 = inverse + 3 * plane,
                *i12 = inverse + 4 * plane, *i22 = inverse + 5 * plane;
    const float *c0 = colours, *c1 = colours + plane, *c2 = colours + 2 * plane;
    const float *ps[4] = {p, p, p, p}, *by[4] = {NULL, c0, c1, c2};
    set(&boxes, 4, ps, by);
    start(&boxes);
    for (Py_ssize_t y = 0; y < h; y++) {
        means_of_row(&boxes, y);
        Py_ssize_t o = y * w;
        coefficients(w, boxes.box, m0 + o, m1 + o, m2 + o, i00 + o, i01 + o, i02 + o, i11 + o, i12 + o, i22 + o,
                     coef + o, coef + plane + o, coef + 2 * plane + o, coef + 3 * plane + o);
    }
    const float *second[4] = {coef, coef + plane, coef + 2 * plane, coef + 3 * plane};
    set(&boxes, 4, second, NULL);
    start(&boxes);
    for (Py_ssize_t y = 0; y < h; y++) {
        means_of_row(&boxes, y);
        Py_ssize_t o = y * w;
        product_row(w, boxes.box, p + o, c0 + o, c1 + o, c2 + o, out + o);
    }
}

/* float32 entries of scratch `times` needs (0 if the sizes overflow). */
static Py_ssize_t work_floats(Py_ssize_t h, Py_ssize_t w, Py_ssize_t r)
{
    if (h <= 0 || w <= 0 || r < 0 || h > (1 << 20) || w > (1 << 20) || r > 64 || h * w > ((Py_ssize_t)1 << 34))
        return 0;
    Py_ssize_t ph = h + 2 * r, pw = w + 2 * r;
    Py_ssize_t floats = 4 * h * w + MAX_QUANTITIES * (2 * r + 1) * w + pw + MAX_QUANTITIES * w;
    /* the padded index tables, in Py_ssize_t, plus one for alignment */
    floats += (Py_ssize_t)((ph + pw + 1) * sizeof(Py_ssize_t) / sizeof(float)) + 1;
    return floats;
}

static int check(Py_buffer *view, const char *name, Py_ssize_t floats, int at_least)
{
    Py_ssize_t bytes = floats * (Py_ssize_t)sizeof(float);
    if (at_least ? view->len >= bytes : view->len == bytes)
        return 1;
    PyErr_Format(PyExc_ValueError, "%s holds %zd bytes; %s %zd (float32) are needed", name, view->len,
                 at_least ? "at least" : "exactly", bytes);
    return 0;
}

/* The scratch `function` needs for these sizes, or 0 with ValueError set when they are out of range. */
static Py_ssize_t work_for(const char *function, Py_ssize_t h, Py_ssize_t w, Py_ssize_t r)
{
    Py_ssize_t need = work_floats(h, w, r);
    if (need == 0)
        PyErr_Format(PyExc_ValueError, "%s: sizes out of range (%zd x %zd, radius %zd)", function, h, w, r);
    return need;
}

/* Whether the buffers both functions take have their sizes (else ValueError): the colour planes,
   their means, the inverse covariances, the scratch. */
static int statistics_fit(Py_buffer *colours, Py_buffer *means, Py_buffer *inverse, Py_buffer *work,
                          Py_ssize_t plane, Py_ssize_t need)
{
    return check(colours, "colours", 3 * plane, 0) && check(means, "means", 3 * plane, 0) &&
           check(inverse, "inverse", 6 * plane, 0) && check(work, "work", need, 1);
}

static PyObject *laplacian_times(PyObject *self, PyObject *args)
{
    Py_ssize_t h, w, r;
    Py_buffer p = {NULL}, colours = {NULL}, means = {NULL}, inverse = {NULL}, out = {NULL}, work = {NULL};
    if (!PyArg_ParseTuple(args, "nnny*y*y*y*w*w*:laplacian_times", &h, &w, &r, &p, &colours, &means, &inverse,
                          &out, &work))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t need = work_for("laplacian_times", h, w, r), plane = h * w;
    if (need == 0 || !check(&p, "p", plane, 0) || !statistics_fit(&colours, &means, &inverse, &work, plane, need) ||
        !check(&out, "out", plane, 0))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    times(h, w, r, (const float *)p.buf, (const float *)colours.buf, (const float *)means.buf,
          (const float *)inverse.buf, (float *)out.buf, (float *)work.buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&p);
    PyBuffer_Release(&colours);
    PyBuffer_Release(&means);
    PyBuffer_Release(&inverse);
    PyBuffer_Release(&out);
    PyBuffer_Release(&work);
    return result;
}

static PyObject *laplacian_setup(PyObject *self, PyObject *args)
{
    Py_ssize_t h, w, r;
    double eps;
    Py_buffer colours = {NULL}, means = {NULL}, inverse = {NULL}, work = {NULL};
    if (!PyArg_ParseTuple(args, "nnndy*w*w*w*:laplacian_setup", &h, &w, &r, &eps, &colours, &means, &inverse, &work))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t need = work_for("laplacian_setup", h, w, r);
    if (need == 0 || !statistics_fit(&colours, &means, &inverse, &work, h * w, need))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    setup(h, w, r, eps, (const float *)colours.buf, (float *)means.buf, (float *)inverse.buf, (float *)work.buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&colours);
    PyBuffer_Release(&means);
    PyBuffer_Release(&inverse);
    PyBuffer_Release(&work);
    return result;
}

static PyObject *py_work_floats(PyObject *self, PyObject *args)
{
    Py_ssize_t h, w, r;
    if (!PyArg_ParseTuple(args, "nnn:work_floats", &h, &w, &r))
        return NULL;
    Py_ssize_t need = work_for("work_floats", h, w, r);
    return need == 0 ? NULL : PyLong_FromSsize_t(need);
}

static PyMethodDef methods[] = {
    {"laplacian_times", laplacian_times, METH_VARARGS,
     "laplacian_times(height, width, radius, p, colours, means, inverse, out, work): out = L p / |window| "
     "(float32 buffers; work: work_floats(height, width, radius) float32 of scratch)"},
    {"laplacian_setup", laplacian_setup, METH_VARARGS,
     "laplacian_setup(height, width, radius, eps, colours, means, inverse, work): the windows' colour means "
     "and inverse covariances (Sigma + eps/|window| I)^-1 into means (3 planes) and inverse (6 planes)"},
    {"work_floats", py_work_floats, METH_VARARGS,
     "work_floats(height, width, radius) -> the float32 entries of scratch laplacian_times needs"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_matte", "The compiled product of the edge matting's Laplacian (app/pipeline/matte.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__matte(void)
{
    return PyModule_Create(&module);
}
