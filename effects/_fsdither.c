/*
 * Floyd–Steinberg error diffusion to two levels, with a free threshold and an
 * optional serpentine scan. Error diffusion is sequential by nature (every pixel
 * depends on the errors of the pixels before it), so this is the one loop over
 * pixels that cannot be vectorised with numpy; it lives here, compiled.
 *
 * diffuse(values, width, height, threshold, serpentine) -> bytes
 *   values:     a C-contiguous buffer of width*height float32 levels (0..255)
 *   threshold:  a pixel (plus the error it received) at or above it becomes 255
 *   serpentine: odd rows are scanned right to left, with the kernel mirrored
 * Returns width*height bytes, each 0 (ink) or 255 (paper).
 *
 * Errors are carried in doubles, in a fixed order, so that the plain-Python
 * definition in tests/test_effects.py reproduces the result bit for bit.
 * The GIL is released while the loop runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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

static PyMethodDef methods[] = {
    {"diffuse", diffuse, METH_VARARGS,
     "diffuse(values, width, height, threshold, serpentine) -> bytes of 0/255"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fsdither",
    "Floyd–Steinberg error diffusion to two levels (compiled kernel).", -1, methods,
};

PyMODINIT_FUNC PyInit__fsdither(void)
{
    return PyModule_Create(&module);
}
