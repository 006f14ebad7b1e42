/*
 * kaf._records: the data of a run of canonical records, joined in one call.
 *
 * A raw reply is each message's data followed by "\n", and a json reply
 * of messages that are all JSON is "[" + the data joined by ",\n" + "]".
 * Built from the records in Python, a reply of N messages makes 2N + 1
 * bytes objects (bytes.split) before it joins them; here it is one pass
 * over the records that checks them and copies their data.
 *
 * Optional: kaf/_replies.py does the same in Python when this module is
 * not built (PyPy, or no C compiler), and the tests check both give the
 * same bytes.
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

static PyMethodDef methods[] = {
    {"join_data", join_data, METH_VARARGS, join_data_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kaf._records",
    "The data of a run of canonical records, joined in one call.", -1, methods,
    NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC
PyInit__records(void)
{
    return PyModule_Create(&module);
}
