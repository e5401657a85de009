/*
 * The compiled kernels of the effects: the loops over pixels that numpy cannot
 * express, or can only express through full-size temporary arrays.
 *
 * Every kernel takes its sizes from its arrays, never from separate arguments:
 * each array must be C-contiguous and expose its shape and format (numpy arrays
 * do); its number of dimensions, channel count and dtype are checked, and so is
 * that the arrays agree with one another, with overflow-safe products. Anything
 * else raises (TypeError: not an array, wrong dtype, read-only output; ValueError:
 * wrong shape, not C-contiguous, empty) before a pixel is touched.
 *
 * diffuse(values, threshold, serpentine) -> bytes
 *   Floyd–Steinberg error diffusion to two levels, with a free threshold and an
 *   optional serpentine scan. Error diffusion is sequential by nature (every pixel
 *   depends on the errors of the pixels before it).
 *   values:     height x width float32 levels (0..255)
 *   threshold:  a pixel (plus the error it received) at or above it becomes 255
 *   serpentine: odd rows are scanned right to left, with the kernel mirrored
 *   Returns width*height bytes, each 0 (ink) or 255 (paper).
 *   Errors are carried in doubles, in a fixed order, so that the plain-Python
 *   definition in tests/test_effects.py reproduces the result bit for bit.
 *
 * tone_sums(rgba, shares, tone, sums, squares)
 * film_print(rgba, shares, tone, gauss, amplitude, k1, k2, seed, out)
 *   The full-resolution passes of the blackwhite effect (effects/blackwhite.py
 *   holds their definition in numpy, and the tests compare the two).
 *   rgba: height x width x 4 uint8; shares: 3 x 256 uint16; tone: 1-D float32.
 *   Per pixel: index = shares[0][R] + shares[1][G] + shares[2][B] (panchromatic
 *   grey in linear light, fixed point), t = tone[index].
 *   tone_sums box-sums t and t*t into sums and squares, two zeroed
 *   low_height x low_width float64 grids no larger than the image (pixel x goes
 *   to cell x*low_width/width, likewise rows).
 *   film_print writes out (height x width x 4 uint8): grey = t*K1 + K2 + grain,
 *   clipped to 0..1 and rounded to a byte, alpha copied from the input. K1 and K2
 *   are low_height x low_width float32 planes upsampled bilinearly
 *   (centre-aligned, edges clamped, as Pillow's BILINEAR resize). grain =
 *   gauss[byte] * amplitude[index] (gauss: 256 float32; amplitude: float32 as long
 *   as tone, or None for no grain), where byte is the top 8 bits of
 *   splitmix64(seed, pixel number): deterministic, and the same on every machine.
 *   One pass, no temporaries beyond two rows: at 2048x2048 numpy needed eight
 *   16 MB planes, whose page faults cost more than the arithmetic.
 *
 * luma(rgba, wr, wg, wb, out)
 *   out (height x width float32) = R*wr + G*wg + B*wb in float32, in numpy's
 *   order of operations, without numpy's three channel copies and two temporaries.
 *
 * paint(indices, colours, rgba, out)
 *   out (height x width x 4 uint8) = colours[index] with the alpha of rgba
 *   (height x width x 4 uint8): a palette image (indices: height x width uint8,
 *   colours: n x 3 uint8, 1 <= n <= 256) and the subject's alpha in one pass
 *   (Pillow's palette conversion, then numpy's dstack of the alpha, wrote the
 *   image twice). An index past the colours raises.
 *
 * The GIL is released while the loops run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ arrays */

/* a * b for non-negative sizes; 0 when the product would overflow Py_ssize_t. */
static int mul_size(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *product)
{
    if (a < 0 || b < 0 || (a != 0 && b > PY_SSIZE_T_MAX / a))
        return 0;
    *product = a * b;
    return 1;
}

/* malloc(n * size), or NULL if that product overflows. */
static void *alloc_n(Py_ssize_t n, size_t size)
{
    if (n < 0 || (size_t)n > (size_t)PY_SSIZE_T_MAX / size)
        return NULL;
    size_t bytes = (size_t)n * size;
    return malloc(bytes ? bytes : 1);
}

/* Whether a buffer's format string is the one-character struct code `code` in
   native byte order (a leading '@' or '=', or the machine's own '<' / '>'). */
static int format_is(const char *format, char code)
{
    if (format == NULL)
        return code == 'B';
    const uint16_t one = 1;
    int little = *(const unsigned char *)&one == 1;
    if (*format == '@' || *format == '=' || (little && *format == '<') || (!little && (*format == '>' || *format == '!')))
        format++;
    return format[0] == code && format[1] == '\0';
}

/* Gets `obj`'s buffer into `view`: C-contiguous, `ndim` dimensions, elements of
   struct code `code` and `itemsize` bytes, none of its dimensions empty, its
   length the product of its shape (checked without overflow), writable if asked.
   Returns 0, or -1 with an exception set and `view` released. */
static int get_array(PyObject *obj, Py_buffer *view, const char *name, const char *dtype, char code,
                     Py_ssize_t itemsize, int ndim, int writable)
{
    view->obj = NULL;
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous %s array, not %.200s", name, dtype,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO | (writable ? PyBUF_WRITABLE : 0)) < 0) {
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *cause = PyErr_GetRaisedException();
#else
        PyObject *type, *cause, *tb;
        PyErr_Fetch(&type, &cause, &tb);
        PyErr_NormalizeException(&type, &cause, &tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
#endif
        PyErr_Format(PyExc_TypeError, "%s must be a %sC-contiguous %s array: %S", name,
                     writable ? "writable, " : "", dtype, cause ? cause : Py_None);
        Py_XDECREF(cause);
        view->obj = NULL;
        return -1;
    }
    Py_ssize_t n = view->itemsize;
    if (!format_is(view->format, code) || view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s must be %s (buffer format '%c', %zd bytes), got format '%s' (%zd bytes)",
                     name, dtype, code, itemsize, view->format ? view->format : "B", view->itemsize);
        goto fail;
    }
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous (numpy.ascontiguousarray)", name);
        goto fail;
    }
    if (view->ndim != ndim || view->shape == NULL) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, got %d", name, ndim, view->ndim);
        goto fail;
    }
    for (int i = 0; i < ndim; i++) {
        if (view->shape[i] <= 0) {
            PyErr_Format(PyExc_ValueError, "%s must not be empty (dimension %d is %zd)", name, i, view->shape[i]);
            goto fail;
        }
        if (!mul_size(n, view->shape[i], &n)) {
            PyErr_Format(PyExc_ValueError, "%s is too large (its size overflows)", name);
            goto fail;
        }
    }
    if (n != view->len) {
        PyErr_Format(PyExc_ValueError, "%s claims %zd bytes for its shape but its buffer holds %zd", name, n, view->len);
        goto fail;
    }
    return 0;
fail:
    PyBuffer_Release(view);
    view->obj = NULL;
    return -1;
}

#define GET_U8(obj, view, name, ndim, wr) get_array(obj, view, name, "uint8", 'B', 1, ndim, wr)
#define GET_U16(obj, view, name, ndim) get_array(obj, view, name, "uint16", 'H', 2, ndim, 0)
#define GET_F32(obj, view, name, ndim, wr) get_array(obj, view, name, "float32", 'f', 4, ndim, wr)
#define GET_F64(obj, view, name, ndim, wr) get_array(obj, view, name, "float64", 'd', 8, ndim, wr)

/* An image buffer: height x width x 4 uint8. */
static int get_rgba(PyObject *obj, Py_buffer *view, const char *name, int writable)
{
    if (GET_U8(obj, view, name, 3, writable) < 0)
        return -1;
    if (view->shape[2] != 4) {
        PyErr_Format(PyExc_ValueError, "%s must be height x width x 4 (RGBA), got %zd channels", name, view->shape[2]);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

/* Whether two buffers' first two dimensions (height, width) agree; sets ValueError if not. */
static int same_plane(const Py_buffer *a, const char *a_name, const Py_buffer *b, const char *b_name)
{
    if (a->shape[0] == b->shape[0] && a->shape[1] == b->shape[1])
        return 1;
    PyErr_Format(PyExc_ValueError, "%s is %zdx%zd (height x width) but %s is %zdx%zd", b_name, b->shape[0],
                 b->shape[1], a_name, a->shape[0], a->shape[1]);
    return 0;
}

/* ------------------------------------------------------------------ diffuse */
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
    PyObject *values;
    double threshold;
    int serpentine;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "Odp:diffuse", &values, &threshold, &serpentine))
        return NULL;
    if (GET_F32(values, &view, "values", 2, 0) < 0)
        return NULL;
    Py_ssize_t h = view.shape[0], w = view.shape[1]; /* w*h*4 is the buffer's checked length */
    PyObject *result = PyBytes_FromStringAndSize(NULL, w * h);
    double *rows = alloc_n(w + 2, 2 * sizeof(double));
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

/* Gets and checks the buffers shared by both passes. Returns 0, or -1 with an
   exception set; release_source() releases what was got either way. */
static int get_source(PyObject *rgba, PyObject *shares, PyObject *tone, grey_source *src)
{
    src->rgba.obj = src->shares.obj = src->tone.obj = NULL;
    if (get_rgba(rgba, &src->rgba, "rgba", 0) < 0 || GET_U16(shares, &src->shares, "shares", 2) < 0 ||
        GET_F32(tone, &src->tone, "tone", 1, 0) < 0)
        return -1;
    if (src->shares.shape[0] != 3 || src->shares.shape[1] != 256) {
        PyErr_Format(PyExc_ValueError, "shares must be 3 x 256 uint16, got %zd x %zd", src->shares.shape[0],
                     src->shares.shape[1]);
        return -1;
    }
    src->h = src->rgba.shape[0];
    src->w = src->rgba.shape[1];
    src->tone_len = src->tone.shape[0];
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
    PyObject *rgba_obj, *shares_obj, *tone_obj, *sums_obj, *squares_obj;
    if (!PyArg_ParseTuple(args, "OOOOO:tone_sums", &rgba_obj, &shares_obj, &tone_obj, &sums_obj, &squares_obj))
        return NULL;
    grey_source src;
    Py_buffer sums = {NULL}, squares = {NULL};
    PyObject *result = NULL;
    Py_ssize_t *cell = NULL;
    double *row = NULL;
    if (get_source(rgba_obj, shares_obj, tone_obj, &src) < 0 || GET_F64(sums_obj, &sums, "sums", 2, 1) < 0 ||
        GET_F64(squares_obj, &squares, "squares", 2, 1) < 0 || !same_plane(&sums, "sums", &squares, "squares"))
        goto done;
    Py_ssize_t lh = sums.shape[0], lw = sums.shape[1], unused;
    if (lw > src.w || lh > src.h) {
        PyErr_Format(PyExc_ValueError, "sums and squares (%zdx%zd) must be no larger than the image (%zdx%zd)", lh, lw,
                     src.h, src.w);
        goto done;
    }
    if (!mul_size(src.w, lw, &unused) || !mul_size(src.h, lh, &unused)) { /* x*lw and y*lh below */
        PyErr_SetString(PyExc_ValueError, "image and grid too large");
        goto done;
    }
    cell = alloc_n(src.w, sizeof(Py_ssize_t));
    row = alloc_n(lw, 2 * sizeof(double));
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
    PyObject *rgba_obj, *shares_obj, *tone_obj, *gauss_obj, *amp_obj, *k1_obj, *k2_obj, *out_obj;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OOOOOOOKO:film_print", &rgba_obj, &shares_obj, &tone_obj, &gauss_obj, &amp_obj,
                          &k1_obj, &k2_obj, &seed, &out_obj))
        return NULL;
    grey_source src;
    Py_buffer gauss = {NULL}, k1b = {NULL}, k2b = {NULL}, outb = {NULL}, ampb = {NULL};
    PyObject *result = NULL;
    int have_amp = amp_obj != Py_None;
    Py_ssize_t *x0 = NULL, *x1 = NULL, *ylo = NULL, *yhi = NULL;
    float *fx = NULL, *fyv = NULL, *rows = NULL;
    if (get_source(rgba_obj, shares_obj, tone_obj, &src) < 0 || GET_F32(gauss_obj, &gauss, "gauss", 1, 0) < 0 ||
        (have_amp && GET_F32(amp_obj, &ampb, "amplitude", 1, 0) < 0) || GET_F32(k1_obj, &k1b, "k1", 2, 0) < 0 ||
        GET_F32(k2_obj, &k2b, "k2", 2, 0) < 0 || get_rgba(out_obj, &outb, "out", 1) < 0)
        goto done;
    if (gauss.shape[0] != 256) {
        PyErr_Format(PyExc_ValueError, "gauss must be 256 float32, got %zd", gauss.shape[0]);
        goto done;
    }
    if (have_amp && ampb.shape[0] != src.tone_len) {
        PyErr_Format(PyExc_ValueError, "amplitude must be as long as tone (%zd), got %zd", src.tone_len, ampb.shape[0]);
        goto done;
    }
    if (!same_plane(&k1b, "k1", &k2b, "k2") || !same_plane(&src.rgba, "rgba", &outb, "out"))
        goto done;
    Py_ssize_t lh = k1b.shape[0], lw = k1b.shape[1];
    x0 = alloc_n(src.w, sizeof(Py_ssize_t));
    x1 = alloc_n(src.w, sizeof(Py_ssize_t));
    fx = alloc_n(src.w, sizeof(float));
    ylo = alloc_n(src.h, sizeof(Py_ssize_t));
    yhi = alloc_n(src.h, sizeof(Py_ssize_t));
    fyv = alloc_n(src.h, sizeof(float));
    rows = alloc_n(lw, 2 * sizeof(float));
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
    PyBuffer_Release(&ampb);
    PyBuffer_Release(&k1b);
    PyBuffer_Release(&k2b);
    PyBuffer_Release(&outb);
    return result;
}

/* ------------------------------------------------------------------ luma and paint */

static PyObject *luma(PyObject *self, PyObject *args)
{
    PyObject *rgba_obj, *out_obj;
    float wr, wg, wb;
    if (!PyArg_ParseTuple(args, "OfffO:luma", &rgba_obj, &wr, &wg, &wb, &out_obj))
        return NULL;
    Py_buffer rgba = {NULL}, outb = {NULL};
    PyObject *result = NULL;
    if (get_rgba(rgba_obj, &rgba, "rgba", 0) < 0 || GET_F32(out_obj, &outb, "out", 2, 1) < 0 ||
        !same_plane(&rgba, "rgba", &outb, "out"))
        goto done;
    Py_ssize_t n = rgba.shape[0] * rgba.shape[1]; /* a quarter of rgba's checked length */
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *px = (const unsigned char *)rgba.buf;
    float *dst = (float *)outb.buf;
    for (Py_ssize_t i = 0; i < n; i++, px += 4) {
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
    PyObject *idx_obj, *colours_obj, *rgba_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOO:paint", &idx_obj, &colours_obj, &rgba_obj, &out_obj))
        return NULL;
    Py_buffer idx = {NULL}, colours = {NULL}, rgba = {NULL}, outb = {NULL};
    PyObject *result = NULL;
    if (GET_U8(idx_obj, &idx, "indices", 2, 0) < 0 || GET_U8(colours_obj, &colours, "colours", 2, 0) < 0 ||
        get_rgba(rgba_obj, &rgba, "rgba", 0) < 0 || get_rgba(out_obj, &outb, "out", 1) < 0)
        goto done;
    Py_ssize_t n_colours = colours.shape[0];
    if (colours.shape[1] != 3 || n_colours > 256) {
        PyErr_Format(PyExc_ValueError, "colours must be 1..256 RGB triplets (n x 3 uint8), got %zd x %zd", n_colours,
                     colours.shape[1]);
        goto done;
    }
    if (!same_plane(&idx, "indices", &rgba, "rgba") || !same_plane(&idx, "indices", &outb, "out"))
        goto done;
    int bad = 0;
    Py_ssize_t n = idx.shape[0] * idx.shape[1]; /* indices' checked length */
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *in = (const unsigned char *)idx.buf, *pal = (const unsigned char *)colours.buf;
    const unsigned char *a = (const unsigned char *)rgba.buf;
    unsigned char *dst = (unsigned char *)outb.buf;
    for (Py_ssize_t i = 0; i < n; i++, dst += 4, a += 4) {
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
     "diffuse(values, threshold, serpentine) -> bytes of 0/255; values: HxW float32"},
    {"tone_sums", tone_sums, METH_VARARGS,
     "tone_sums(rgba, shares, tone, sums, squares): box sums of the tone and its square into two zeroed "
     "float64 grids (low_height x low_width, no larger than the HxWx4 uint8 image)"},
    {"film_print", film_print, METH_VARARGS,
     "film_print(rgba, shares, tone, gauss, amplitude, k1, k2, seed, out): "
     "grey = tone*K1 + K2 + grain into out (HxWx4 uint8), alpha copied"},
    {"luma", luma, METH_VARARGS,
     "luma(rgba, wr, wg, wb, out): out (HxW float32) = R*wr + G*wg + B*wb"},
    {"paint", paint, METH_VARARGS,
     "paint(indices, colours, rgba, out): out (HxWx4 uint8) = colours[index], alpha from rgba"},
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
