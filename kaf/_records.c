/*
 * kaf._records: the data of a run of canonical records, joined in one call.
 *
 * A raw reply is each message's data followed by "\n", and a json reply
 * of messages that are all JSON is "[" + the data joined by ",\n" + "]".
 * Built from the records in Python, a reply of N messages makes 2N + 1
 * bytes objects (bytes.split) before it joins them; here it is one pass
 * over the records that checks them and copies their data.
 *
 * And the records of a put's messages, written in one pass with their
 * lengths: formatted in Python, a header a message is a bytes object of
 * its own, copied again by the join.
 *
 * Optional: kaf/_replies.py and kaf/_format.py do the same in Python when
 * this module is not built (PyPy, or no C compiler), and the tests check
 * both give the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static const char HEADER[] = "\nKAF_MSG|";
#define HEADER_LEN 9
/* The shortest record, "\nKAF_MSG|1|0\n" and no data. */
#define SHORTEST_RECORD 13
/* Digits of a number in a header: 18 cannot overflow a Py_ssize_t; a
 * longer number makes the whole None (Python then finds the data). */
#define MAX_DIGITS 18

/*
 * The decimal number at p (up to end), ending at the byte `stop`: its value
 * in *value and where `stop` is; NULL when there is none such.
 */
static const char *
number(const char *p, const char *end, char stop, Py_ssize_t *value)
{
    Py_ssize_t v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (++digits > MAX_DIGITS)
            return NULL;
        v = v * 10 + (*p - '0');
        p++;
    }
    if (digits == 0 || p >= end || *p != stop)
        return NULL;
    *value = v;
    return p;
}

/*
 * Copy the data of the `count` records that fill [p, end) exactly to out,
 * `sep` between them: where the copy ends, or NULL when they are not such
 * records.  `out` has room for end - p bytes when sep_len is less than the
 * shortest header's 13 bytes, and count * sep_len more otherwise.
 */
static char *
copy_data(const char *p, const char *end, Py_ssize_t count,
          const char *sep, Py_ssize_t sep_len, char *out)
{
    Py_ssize_t i, num, size;
    for (i = 0; i < count; i++) {
        if (end - p < HEADER_LEN || memcmp(p, HEADER, HEADER_LEN) != 0)
            return NULL;
        p = number(p + HEADER_LEN, end, '|', &num);
        if (p == NULL)
            return NULL;
        p = number(p + 1, end, '\n', &size);
        if (p == NULL)
            return NULL;
        p++;
        if (size > end - p)
            return NULL;
        if (i) {
            memcpy(out, sep, sep_len);
            out += sep_len;
        }
        memcpy(out, p, size);
        out += size;
        p += size;
    }
    return p == end ? out : NULL;
}

PyDoc_STRVAR(join_data_doc,
"join_data(span, count, sep, head, tail) -> bytes or None\n\n"
"head + the data of the `count` canonical records that fill `span`, joined\n"
"by `sep`, + tail; None when `span` is not exactly such records.");

static PyObject *
join_data(PyObject *self, PyObject *args)
{
    Py_buffer span, sep, head, tail;
    Py_ssize_t count, room;
    PyObject *result = NULL;
    char *out;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*ny*y*y*", &span, &count, &sep, &head, &tail))
        return NULL;
    if (count < 0 || count > span.len / SHORTEST_RECORD) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    /* One pass: the data and separators take no more room than the records
     * (a header is longer than a short separator), and the bytes are cut
     * to what was copied. */
    room = head.len + span.len + tail.len + (sep.len < SHORTEST_RECORD ? 0 : count * sep.len);
    result = PyBytes_FromStringAndSize(NULL, room);
    if (result == NULL)
        goto done;
    out = PyBytes_AS_STRING(result);
    memcpy(out, head.buf, head.len);
    out = copy_data((const char *)span.buf, (const char *)span.buf + span.len, count,
                    (const char *)sep.buf, sep.len, out + head.len);
    if (out == NULL) {
        Py_DECREF(result);
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    memcpy(out, tail.buf, tail.len);
    out += tail.len;
    if (out - PyBytes_AS_STRING(result) != room)
        _PyBytes_Resize(&result, out - PyBytes_AS_STRING(result));
done:
    PyBuffer_Release(&span);
    PyBuffer_Release(&sep);
    PyBuffer_Release(&head);
    PyBuffer_Release(&tail);
    return result;
}

/* The decimal digits of v (>= 0) at out; how many. */
static Py_ssize_t
digits(char *out, unsigned long long v)
{
    char tmp[24];
    Py_ssize_t n = 0, i;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

PyDoc_STRVAR(records_doc,
"records(first, messages) -> (bytes, lengths)\n\n"
"The canonical records of `messages` (a list of bytes), numbered from\n"
"`first` (>= 0), one after the other, and the length of each record.");

static PyObject *
records(PyObject *self, PyObject *args)
{
    long long first;
    PyObject *messages, *out = NULL, *lengths = NULL, *result = NULL;
    Py_ssize_t n, i, room = 0;
    char *w;

    (void)self;
    if (!PyArg_ParseTuple(args, "LO!", &first, &PyList_Type, &messages))
        return NULL;
    if (first < 0) {
        PyErr_SetString(PyExc_ValueError, "records: first must be >= 0");
        return NULL;
    }
    n = PyList_GET_SIZE(messages);
    for (i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(messages, i);
        if (!PyBytes_Check(m)) {
            PyErr_SetString(PyExc_TypeError, "records: messages must be bytes");
            return NULL;
        }
        /* "\nKAF_MSG|" + two numbers of up to 20 digits + "|" + "\n" */
        room += PyBytes_GET_SIZE(m) + HEADER_LEN + 42;
    }
    out = PyBytes_FromStringAndSize(NULL, room);
    lengths = PyList_New(n);
    if (out == NULL || lengths == NULL)
        goto fail;
    w = PyBytes_AS_STRING(out);
    for (i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(messages, i), *length;
        Py_ssize_t size = PyBytes_GET_SIZE(m);
        char *begin = w;
        memcpy(w, HEADER, HEADER_LEN);
        w += HEADER_LEN;
        w += digits(w, (unsigned long long)first + (unsigned long long)i);
        *w++ = '|';
        w += digits(w, (unsigned long long)size);
        *w++ = '\n';
        memcpy(w, PyBytes_AS_STRING(m), size);
        w += size;
        length = PyLong_FromSsize_t(w - begin);
        if (length == NULL)
            goto fail;
        PyList_SET_ITEM(lengths, i, length);
    }
    if (_PyBytes_Resize(&out, w - PyBytes_AS_STRING(out)) < 0)
        goto fail;
    result = PyTuple_Pack(2, out, lengths);
fail:
    Py_XDECREF(out);
    Py_XDECREF(lengths);
    return result;
}

static PyMethodDef methods[] = {
    {"join_data", join_data, METH_VARARGS, join_data_doc},
    {"records", records, METH_VARARGS, records_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kaf._records",
    "Canonical records: their data joined, and records made, in one call.", -1, methods,
    NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC
PyInit__records(void)
{
    return PyModule_Create(&module);
}
