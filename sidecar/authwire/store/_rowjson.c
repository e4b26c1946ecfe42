/* authwire.store._rowjson: a plain row's proto3 JSON object (the dict orjson then encodes for the JSONL sink).
 *
 * Why native code: building the nested dicts in Python (the generated authwire.store.columns._json_dict)
 * cost ~2.9 us a record, all of it holding the GIL on the store thread, against ~0.5 us for orjson's
 * encoding. This builds the same dicts, same keys in the same order, from the same tables (configure(),
 * called by authwire.store.columns from COLUMNS and CONTAINERS); orjson still does the encoding.
 * tests/store/test_rowjson.py checks with hypothesis that both builders give equal objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>

enum kind { J_PLAIN = 0, J_TS, J_DUR, J_STR_INT, J_ENUM };

#define MAX_COLS 64
#define MAX_BOXES 16
static int n_cols, n_boxes, root_box, join_box;
static int col_kind[MAX_COLS], col_box[MAX_COLS], present_index;
static PyObject *col_key[MAX_COLS], *col_enum[MAX_COLS];
/* Containers in nesting order (deepest first): presence bit, parent box, key. Box 0 = the top level. */
static int box_bit[MAX_BOXES], box_parent[MAX_BOXES];
static PyObject *box_key[MAX_BOXES];
static PyObject *ts_fallback, *dur_fallback;  /* Python formatters for values outside the common range */
static PyObject *k_event, *k_connection, *k_join, *k_received;
static int configured;

static void fraction(char *out, size_t size, long long nanos) {
    if (nanos == 0)
        out[0] = 0;
    else if (nanos % 1000000 == 0)
        snprintf(out, size, ".%03lld", nanos / 1000000);
    else if (nanos % 1000 == 0)
        snprintf(out, size, ".%06lld", nanos / 1000);
    else
        snprintf(out, size, ".%09lld", nanos);
}

/* columns.ts_json: RFC 3339 with 0, 3, 6 or 9 fractional digits, for 1970..9999. */
static PyObject *ts_text(PyObject *v) {
    int overflow;
    long long ns = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (ns == -1 && PyErr_Occurred()) || ns < 0)
        return PyObject_CallOneArg(ts_fallback, v);
    time_t seconds = (time_t)(ns / 1000000000LL);
    struct tm tm;
    char frac[16], out[64];
    if (gmtime_r(&seconds, &tm) == NULL)
        return PyObject_CallOneArg(ts_fallback, v);
    fraction(frac, sizeof frac, ns % 1000000000LL);
    snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return PyUnicode_FromString(out);
}

/* columns.dur_json: "<seconds>[.fraction]s" (negative durations: the Python formatter). */
static PyObject *dur_text(PyObject *v) {
    int overflow;
    long long ns = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (ns == -1 && PyErr_Occurred()) || ns < 0)
        return PyObject_CallOneArg(dur_fallback, v);
    char frac[16], out[48];
    fraction(frac, sizeof frac, ns % 1000000000LL);
    snprintf(out, sizeof out, "%lld%ss", ns / 1000000000LL, frac);
    return PyUnicode_FromString(out);
}

static int set_new(PyObject *d, PyObject *key, PyObject *value) {
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItem(d, key, value);
    Py_DECREF(value);
    return rc;
}

PyDoc_STRVAR(json_dict_doc, "json_dict(row, connection_json) -> dict: columns.json_dict, built in C.");

static PyObject *json_dict(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *row, *cj, *boxes[MAX_BOXES] = {0}, *res = NULL;
    if (!PyArg_ParseTuple(args, "O!O", &PyTuple_Type, &row, &cj))
        return NULL;
    if (!configured || PyTuple_GET_SIZE(row) <= present_index) {
        PyErr_SetString(PyExc_ValueError, configured ? "json_dict(): the row is too short" : "not configured");
        return NULL;
    }
    long present = PyLong_AsLong(PyTuple_GET_ITEM(row, present_index));
    if (present == -1 && PyErr_Occurred())
        return NULL;
    for (int b = 0; b < n_boxes; b++)
        if ((boxes[b] = PyDict_New()) == NULL)
            goto done;
    for (int c = 0; c < n_cols; c++) {
        PyObject *v = PyTuple_GET_ITEM(row, c), *d = boxes[col_box[c]], *out;
        if (col_kind[c] == J_TS || col_kind[c] == J_DUR) {
            if (v == Py_None)
                continue;
            out = col_kind[c] == J_TS ? ts_text(v) : dur_text(v);
        } else {
            int truth = PyObject_IsTrue(v);
            if (truth < 0)
                goto done;
            if (!truth)
                continue;  /* proto3 JSON leaves defaults out */
            if (col_kind[c] == J_STR_INT) {
                out = PyObject_Str(v);
            } else if (col_kind[c] == J_ENUM) {
                out = PyDict_GetItemWithError(col_enum[c], v);
                if (out == NULL && PyErr_Occurred())
                    goto done;
                out = Py_NewRef(out != NULL ? out : v);
            } else {
                out = Py_NewRef(v);
            }
        }
        if (set_new(d, col_key[c], out) < 0)
            goto done;
    }
    for (int b = 0; b < n_boxes; b++) {
        if (box_parent[b] < 0 || !(present & (1L << box_bit[b])))
            continue;
        if (PyDict_SetItem(boxes[box_parent[b]], box_key[b], boxes[b]) < 0)
            goto done;
    }
    /* {'event': ..., 'connection': ..., 'join': ..., 'received_time': ...} as columns._json_dict orders them */
    if ((res = PyDict_New()) == NULL || PyDict_SetItem(res, k_event, boxes[root_box]) < 0
            || (cj != Py_None && PyDict_SetItem(res, k_connection, cj) < 0)
            || ((present & (1L << box_bit[join_box])) && PyDict_SetItem(res, k_join, boxes[join_box]) < 0)) {
        Py_CLEAR(res);
        goto done;
    }
    PyObject *received = PyDict_GetItemWithError(boxes[0], k_received);
    if ((received == NULL && PyErr_Occurred()) || (received != NULL && PyDict_SetItem(res, k_received, received) < 0))
        Py_CLEAR(res);
done:
    for (int b = 0; b < n_boxes; b++)
        Py_XDECREF(boxes[b]);
    return res;
}

PyDoc_STRVAR(configure_doc,
"configure(columns, boxes, present_index, root_box, join_box, ts_json, dur_json) -> None\n\n"
"columns: (kind, box, key, enum names or None) per row column; boxes: (presence bit, parent box, key) per\n"
"container, box 0 being the top level (parent -1), in the order children are put into their parents.");

static PyObject *configure(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *cols, *boxes, *ts, *dur;
    int present, root, join;
    if (!PyArg_ParseTuple(args, "O!O!iiiOO", &PyTuple_Type, &cols, &PyTuple_Type, &boxes, &present, &root, &join,
                          &ts, &dur))
        return NULL;
    if (PyTuple_GET_SIZE(cols) > MAX_COLS || PyTuple_GET_SIZE(boxes) > MAX_BOXES) {
        PyErr_SetString(PyExc_ValueError, "configure(): too many columns or containers");
        return NULL;
    }
    n_cols = (int)PyTuple_GET_SIZE(cols);
    for (int c = 0; c < n_cols; c++) {
        PyObject *key, *names;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(cols, c), "iiUO", &col_kind[c], &col_box[c], &key, &names))
            return NULL;
        Py_XSETREF(col_key[c], Py_NewRef(key));
        Py_XSETREF(col_enum[c], names == Py_None ? NULL : Py_NewRef(names));
        if (col_kind[c] == J_ENUM && !PyDict_Check(names)) {
            PyErr_SetString(PyExc_TypeError, "configure(): an enum column needs a dict of names");
            return NULL;
        }
    }
    n_boxes = (int)PyTuple_GET_SIZE(boxes);
    for (int b = 0; b < n_boxes; b++) {
        PyObject *key;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(boxes, b), "iiU", &box_bit[b], &box_parent[b], &key))
            return NULL;
        Py_XSETREF(box_key[b], Py_NewRef(key));
    }
    present_index = present;
    root_box = root;
    join_box = join;
    Py_XSETREF(ts_fallback, Py_NewRef(ts));
    Py_XSETREF(dur_fallback, Py_NewRef(dur));
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, configure_doc},
    {"json_dict", json_dict, METH_VARARGS, json_dict_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_rowjson", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__rowjson(void) {
    k_event = PyUnicode_InternFromString("event");
    k_connection = PyUnicode_InternFromString("connection");
    k_join = PyUnicode_InternFromString("join");
    k_received = PyUnicode_InternFromString("received_time");
    if (!k_event || !k_connection || !k_join || !k_received)
        return NULL;
    return PyModule_Create(&module);
}
