/*
 * The compiled kernels of the effects: the loops over pixels that numpy cannot
 * express, or can only express through full-size temporary arrays.
 *
 * diffuse(values, width, height, threshold, serpentine) -> bytes
 *   Floyd–Steinberg error diffusion to two levels, with a free threshold and an
 *   optional serpentine scan. Error diffusion is sequential by nature (every pixel
 *   depends on the errors of the pixels before it).
 *   values:     a C-contiguous buffer of width*height float32 levels (0..255)
 *   threshold:  a pixel (plus the error it received) at or above it becomes 255
 *   serpentine: odd rows are scanned right to left, with the kernel mirrored
 *   Returns width*height bytes, each 0 (ink) or 255 (paper).
 *   Errors are carried in doubles, in a fixed order, so that the plain-Python
 *   definition in tests/test_effects.py reproduces the result bit for bit.
 *
 * tone_sums(rgba, width, height, shares, tone, low_width, low_height) -> (sums, squares)
 * film_print(rgba, width, height, shares, tone, amplitude, k1, k2, low_width, low_height, seed) -> bytes
 *   The full-resolution passes of the blackwhite effect (effects/blackwhite.py
 *   holds their definition in numpy, and the tests compare the two). Per pixel:
 *   index = shares[0][R] + shares[1][G] + shares[2][B] (panchromatic grey in
 *   linear light, fixed point), t = tone[index].
 *   tone_sums box-sums t and t*t into a low_height x low_width grid (pixel x goes
 *   to cell x*low_width/width, likewise rows); two float64 buffers.
 *   film_print writes RGBA: grey = t*K1 + K2 + grain, clipped to 0..1 and rounded
 *   to a byte, alpha copied from the input. K1 and K2 are low-resolution
 *   float32 planes upsampled bilinearly (centre-aligned, edges clamped, as
 *   Pillow's BILINEAR resize). grain = GAUSS[byte] * amplitude[index], where byte
 *   is the top 8 bits of splitmix64(seed, pixel number): deterministic, and the
 *   same on every machine. amplitude may be None (no grain).
 *   One pass, no temporaries beyond two rows: at 2048x2048 numpy needed eight
 *   16 MB planes, whose page faults cost more than the arithmetic.
 *
 * luma(rgba, width, height, wr, wg, wb, out)
 *   out (float32 plane) = R*wr + G*wg + B*wb in float32, in numpy's order of
 *   operations, without numpy's three channel copies and two temporaries.
 *
 * paint(indices, width, height, colours, rgba, out)
 *   out (RGBA) = colours[index] with the alpha of rgba: a palette image and the
 *   subject's alpha in one pass (Pillow's palette conversion, then numpy's dstack
 *   of the alpha, wrote the image twice). An index past the colours raises.
 *
 * The GIL is released while the loops run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void fs_run(const float *in, unsigned char *out, Py_ssize_t w, Py_ssize_t h,
                   double threshold, int serpentine, double *cur, double *next)
{
    /* cur/next hold w + 2 entries: index x + 1 is column x, the two ends absorb
       the error that would leave the image. */
    memset(cur, 0, (size_t)(w + 2) * sizeof(double));
    for (Py_ssize_t y = 0; y < h; y++) {
        memset(next, 0, (size_t)(w + 2) * sizeof(double));
        const float *row = in + y * w;
        unsigned char *dst = out + y * w;
        int reverse = serpentine && (y & 1);
        Py_ssize_t x = reverse ? w - 1 : 0;
        Py_ssize_t step = reverse ? -1 : 1;
        for (Py_ssize_t i = 0; i < w; i++, x += step) {
            double v = (double)row[x] + cur[x + 1];
            double level = v >= threshold ? 255.0 : 0.0;
            double e = v - level;
            dst[x] = (unsigned char)level;
            cur[x + 1 + step] += e * (7.0 / 16.0);
            next[x + 1 - step] += e * (3.0 / 16.0);
            next[x + 1] += e * (5.0 / 16.0);
            next[x + 1 + step] += e * (1.0 / 16.0);
        }
        double *t = cur;
        cur = next;
        next = t;
    }
}

static PyObject *diffuse(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t w, h;
    double threshold;
    int serpentine;
    if (!PyArg_ParseTuple(args, "y*nndp", &view, &w, &h, &threshold, &serpentine))
        return NULL;
    if (w <= 0 || h <= 0 || view.len != w * h * (Py_ssize_t)sizeof(float)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "values must hold width*height float32 levels");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, w * h);
    double *rows = malloc((size_t)(w + 2) * 2 * sizeof(double));
    if (result == NULL || rows == NULL) {
        Py_XDECREF(result);
        free(rows);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    const float *in = (const float *)view.buf;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    fs_run(in, out, w, h, threshold, serpentine, rows, rows + w + 2);
    Py_END_ALLOW_THREADS
    free(rows);
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------ blackwhite */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Bilinear sampling positions for `out` samples over `in` cells (centre-aligned,
   clamped at the edges): sample i reads lo[i] and hi[i] with weight frac[i] on hi. */
static void bilinear_axis(Py_ssize_t in, Py_ssize_t out, Py_ssize_t *lo, Py_ssize_t *hi, float *frac)
{
    double scale = (double)in / (double)out;
    for (Py_ssize_t i = 0; i < out; i++) {
        double c = ((double)i + 0.5) * scale - 0.5;
        if (c < 0.0)
            c = 0.0;
        Py_ssize_t j = (Py_ssize_t)c;
        if (j >= in - 1) {
            lo[i] = hi[i] = in - 1;
            frac[i] = 0.0f;
        } else {
            lo[i] = j;
            hi[i] = j + 1;
            frac[i] = (float)(c - (double)j);
        }
    }
}

typedef struct {
    Py_buffer rgba, shares, tone;
    Py_ssize_t w, h, tone_len;
} grey_source;

/* Checks the buffers shared by both passes. Returns 0, or -1 with an exception set. */
static int check_source(grey_source *src)
{
    if (src->w <= 0 || src->h <= 0 || src->rgba.len != src->w * src->h * 4) {
        PyErr_SetString(PyExc_ValueError, "rgba must hold width*height*4 bytes");
        return -1;
    }
    if (src->shares.len != 3 * 256 * (Py_ssize_t)sizeof(uint16_t)) {
        PyErr_SetString(PyExc_ValueError, "shares must hold 3x256 uint16");
        return -1;
    }
    src->tone_len = src->tone.len / (Py_ssize_t)sizeof(float);
    const uint16_t *sh = (const uint16_t *)src->shares.buf;
    Py_ssize_t top = 0;
    for (int c = 0; c < 3; c++) {
        uint16_t m = 0;
        for (int v = 0; v < 256; v++)
            if (sh[c * 256 + v] > m)
                m = sh[c * 256 + v];
        top += m;
    }
    if (top >= src->tone_len) {
        PyErr_SetString(PyExc_ValueError, "tone table too short for the shares' largest index");
        return -1;
    }
    return 0;
}

static void release_source(grey_source *src)
{
    PyBuffer_Release(&src->rgba);
    PyBuffer_Release(&src->shares);
    PyBuffer_Release(&src->tone);
}

static PyObject *tone_sums(PyObject *self, PyObject *args)
{
    grey_source src;
    Py_buffer sums, squares;
    Py_ssize_t lw, lh;
    if (!PyArg_ParseTuple(args, "y*nny*y*nnw*w*", &src.rgba, &src.w, &src.h, &src.shares, &src.tone,
                          &lw, &lh, &sums, &squares))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t *cell = NULL;
    double *row = NULL;
    if (check_source(&src) < 0)
        goto done;
    if (lw <= 0 || lh <= 0 || lw > src.w || lh > src.h ||
        sums.len != lw * lh * (Py_ssize_t)sizeof(double) || squares.len != sums.len) {
        PyErr_SetString(PyExc_ValueError, "sums and squares must be low_height*low_width float64, no larger than the image");
        goto done;
    }
    cell = malloc((size_t)src.w * sizeof(Py_ssize_t));
    row = malloc((size_t)lw * 2 * sizeof(double));
    if (cell == NULL || row == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *px = (const unsigned char *)src.rgba.buf;
    const uint16_t *sr = (const uint16_t *)src.shares.buf, *sg = sr + 256, *sb = sr + 512;
    const float *tone = (const float *)src.tone.buf;
    double *sum = (double *)sums.buf, *sq = (double *)squares.buf;
    for (Py_ssize_t x = 0; x < src.w; x++)
        cell[x] = x * lw / src.w;
    for (Py_ssize_t y = 0; y < src.h; y++) {
        memset(row, 0, (size_t)lw * 2 * sizeof(double));
        for (Py_ssize_t x = 0; x < src.w; x++, px += 4) {
            double t = tone[sr[px[0]] + sg[px[1]] + sb[px[2]]];
            row[2 * cell[x]] += t;
            row[2 * cell[x] + 1] += t * t;
        }
        Py_ssize_t cy = y * lh / src.h;
        for (Py_ssize_t i = 0; i < lw; i++) {
            sum[cy * lw + i] += row[2 * i];
            sq[cy * lw + i] += row[2 * i + 1];
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    free(cell);
    free(row);
    release_source(&src);
    PyBuffer_Release(&sums);
    PyBuffer_Release(&squares);
    return result;
}

static PyObject *film_print(PyObject *self, PyObject *args)
{
    grey_source src;
    Py_buffer gauss, k1b, k2b, outb, ampb = {0};
    PyObject *amp_obj;
    Py_ssize_t lw, lh;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "y*nny*y*y*Oy*y*nnKw*", &src.rgba, &src.w, &src.h, &src.shares, &src.tone,
                          &gauss, &amp_obj, &k1b, &k2b, &lw, &lh, &seed, &outb))
        return NULL;
    PyObject *result = NULL;
    int have_amp = amp_obj != Py_None;
    Py_ssize_t *x0 = NULL, *x1 = NULL, *ylo = NULL, *yhi = NULL;
    float *fx = NULL, *fyv = NULL, *rows = NULL;
    if (have_amp && PyObject_GetBuffer(amp_obj, &ampb, PyBUF_SIMPLE) < 0) {
        have_amp = 0;
        goto done;
    }
    if (check_source(&src) < 0)
        goto done;
    if (gauss.len != 256 * (Py_ssize_t)sizeof(float) || (have_amp && ampb.len != src.tone.len)) {
        PyErr_SetString(PyExc_ValueError, "gauss must be 256 float32 and amplitude as long as tone");
        goto done;
    }
    if (lw <= 0 || lh <= 0 || k1b.len != lw * lh * (Py_ssize_t)sizeof(float) || k2b.len != k1b.len) {
        PyErr_SetString(PyExc_ValueError, "k1 and k2 must be low_height*low_width float32");
        goto done;
    }
    if (outb.len != src.rgba.len) {
        PyErr_SetString(PyExc_ValueError, "out must be as large as rgba");
        goto done;
    }
    x0 = malloc((size_t)src.w * sizeof(Py_ssize_t));
    x1 = malloc((size_t)src.w * sizeof(Py_ssize_t));
    fx = malloc((size_t)src.w * sizeof(float));
    ylo = malloc((size_t)src.h * sizeof(Py_ssize_t));
    yhi = malloc((size_t)src.h * sizeof(Py_ssize_t));
    fyv = malloc((size_t)src.h * sizeof(float));
    rows = malloc((size_t)lw * 2 * sizeof(float));
    if (x0 == NULL || x1 == NULL || fx == NULL || ylo == NULL || yhi == NULL || fyv == NULL || rows == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *px = (const unsigned char *)src.rgba.buf;
    unsigned char *dst = (unsigned char *)outb.buf;
    const uint16_t *sr = (const uint16_t *)src.shares.buf, *sg = sr + 256, *sb = sr + 512;
    const float *tone = (const float *)src.tone.buf, *g = (const float *)gauss.buf;
    const float *amp = have_amp ? (const float *)ampb.buf : NULL;
    const float *k1 = (const float *)k1b.buf, *k2 = (const float *)k2b.buf;
    float *r1 = rows, *r2 = rows + lw;
    uint64_t key = splitmix64((uint64_t)seed);
    bilinear_axis(lw, src.w, x0, x1, fx);
    bilinear_axis(lh, src.h, ylo, yhi, fyv);
    for (Py_ssize_t y = 0; y < src.h; y++) {
        Py_ssize_t y0 = ylo[y], y1 = yhi[y];
        float fy = fyv[y];
        for (Py_ssize_t i = 0; i < lw; i++) {
            r1[i] = k1[y0 * lw + i] * (1.0f - fy) + k1[y1 * lw + i] * fy;
            r2[i] = k2[y0 * lw + i] * (1.0f - fy) + k2[y1 * lw + i] * fy;
        }
        uint64_t n = key + (uint64_t)(y * src.w);
        for (Py_ssize_t x = 0; x < src.w; x++, px += 4, dst += 4, n++) {
            unsigned idx = (unsigned)sr[px[0]] + sg[px[1]] + sb[px[2]];
            float a = r1[x0[x]] * (1.0f - fx[x]) + r1[x1[x]] * fx[x];
            float b = r2[x0[x]] * (1.0f - fx[x]) + r2[x1[x]] * fx[x];
            float v = tone[idx] * a + b;
            if (amp)
                v += g[splitmix64(n) >> 56] * amp[idx];
            v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
            unsigned char grey = (unsigned char)(v * 255.0f + 0.5f);
            dst[0] = dst[1] = dst[2] = grey;
            dst[3] = px[3];
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    free(x0);
    free(x1);
    free(fx);
    free(ylo);
    free(yhi);
    free(fyv);
    free(rows);
    release_source(&src);
    PyBuffer_Release(&gauss);
    if (have_amp)
        PyBuffer_Release(&ampb);
    PyBuffer_Release(&k1b);
    PyBuffer_Release(&k2b);
    PyBuffer_Release(&outb);
    return result;
}

/* ------------------------------------------------------------------ luma and paint */

static PyObject *luma(PyObject *self, PyObject *args)
{
    Py_buffer rgba, outb;
    Py_ssize_t w, h;
    float wr, wg, wb;
    if (!PyArg_ParseTuple(args, "y*nnfffw*", &rgba, &w, &h, &wr, &wg, &wb, &outb))
        return NULL;
    PyObject *result = NULL;
    if (w <= 0 || h <= 0 || rgba.len != w * h * 4 || outb.len != w * h * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "rgba must hold width*height*4 bytes and out width*height float32");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *px = (const unsigned char *)rgba.buf;
    float *dst = (float *)outb.buf;
    for (Py_ssize_t i = 0, n = w * h; i < n; i++, px += 4) {
        float v = (float)px[0] * wr;
        v += (float)px[1] * wg;
        v += (float)px[2] * wb;
        dst[i] = v;
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&rgba);
    PyBuffer_Release(&outb);
    return result;
}

static PyObject *paint(PyObject *self, PyObject *args)
{
    Py_buffer idx, colours, rgba, outb;
    Py_ssize_t w, h;
    if (!PyArg_ParseTuple(args, "y*nny*y*w*", &idx, &w, &h, &colours, &rgba, &outb))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n_colours = colours.len / 3;
    if (w <= 0 || h <= 0 || idx.len != w * h || rgba.len != w * h * 4 || outb.len != w * h * 4 ||
        colours.len % 3 != 0 || n_colours < 1 || n_colours > 256) {
        PyErr_SetString(PyExc_ValueError, "indices must be width*height bytes, colours 1..256 RGB triplets, "
                                          "rgba and out width*height*4 bytes");
        goto done;
    }
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *in = (const unsigned char *)idx.buf, *pal = (const unsigned char *)colours.buf;
    const unsigned char *a = (const unsigned char *)rgba.buf;
    unsigned char *dst = (unsigned char *)outb.buf;
    for (Py_ssize_t i = 0, n = w * h; i < n; i++, dst += 4, a += 4) {
        Py_ssize_t k = in[i];
        if (k >= n_colours) {
            bad = 1;
            k = 0;
        }
        dst[0] = pal[3 * k];
        dst[1] = pal[3 * k + 1];
        dst[2] = pal[3 * k + 2];
        dst[3] = a[3];
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "an index is past the last colour");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&idx);
    PyBuffer_Release(&colours);
    PyBuffer_Release(&rgba);
    PyBuffer_Release(&outb);
    return result;
}

static PyMethodDef methods[] = {
    {"diffuse", diffuse, METH_VARARGS,
     "diffuse(values, width, height, threshold, serpentine) -> bytes of 0/255"},
    {"tone_sums", tone_sums, METH_VARARGS,
     "tone_sums(rgba, width, height, shares, tone, low_width, low_height, sums, squares): "
     "box sums of the tone and its square into two zeroed float64 grids"},
    {"film_print", film_print, METH_VARARGS,
     "film_print(rgba, width, height, shares, tone, gauss, amplitude, k1, k2, low_width, low_height, seed, out): "
     "grey = tone*K1 + K2 + grain into out (RGBA uint8), alpha copied"},
    {"luma", luma, METH_VARARGS,
     "luma(rgba, width, height, wr, wg, wb, out): out (float32) = R*wr + G*wg + B*wb"},
    {"paint", paint, METH_VARARGS,
     "paint(indices, width, height, colours, rgba, out): out (RGBA) = colours[index], alpha from rgba"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled kernels of the effects: Floyd–Steinberg diffusion, the film print pass, luma, palette painting.", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
