/* authwire.store._rows: the store thread's per-row work, from a plain row to
 *   - the tuple SQLite stores (stored_rows: strings interned, addresses packed, connection row ids), and
 *   - its proto3 JSON object (json_dict: the dict orjson then encodes for the JSONL sink).
 *
 * Why native code: done in Python (the generated authwire.store.columns._intern_row / _json_dict) these
 * cost ~1.5 and ~2.9 us a record, all of it holding the GIL on the store thread, which the event loop needs
 * too. The same tables drive both versions (configure_*, called by authwire.store.columns from COLUMNS and
 * CONTAINERS); orjson still does the JSON encoding. tests/store/test_rows.py checks with hypothesis that
 * the C and Python versions give equal results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
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

/* -- stored rows ---------------------------------------------------------------------------------------- */

enum store_kind { S_PLAIN = 0, S_ISTR, S_STR, S_IP, S_TS_REL };
static int n_store_cols, store_kind[MAX_COLS], store_configured;

/* columns._pton: 4 bytes for IPv4, 16 for IPv6 (validated, canonical text; anything else raises). */
static PyObject *packed_ip(PyObject *v) {
    const char *text = PyUnicode_AsUTF8(v);
    unsigned char out[16];
    if (text == NULL)
        return NULL;
    int v6 = strchr(text, ':') != NULL;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, text, out) != 1) {
        PyErr_Format(PyExc_OSError, "illegal IP address string passed to inet_pton");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)out, v6 ? 16 : 4);
}

PyDoc_STRVAR(stored_rows_doc,
"stored_rows(rows, strings, connection_id, first_id) -> list[tuple]\n\n"
"columns.intern_row for each plain row, with the row id (first_id, first_id + 1, ...) in front and the\n"
"connection's row id last: connection_id(connection) -> int, called once per distinct connection object.");

static PyObject *stored_rows(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *rows, *strings, *connection_id, *first, *out = NULL, *last_conn = NULL, *last_cid = NULL;
    if (!PyArg_ParseTuple(args, "O!OOO", &PyList_Type, &rows, &strings, &connection_id, &first))
        return NULL;
    long long next_id = PyLong_AsLongLong(first);
    if ((next_id == -1 && PyErr_Occurred()) || !store_configured) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "configure_store() was not called");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    if ((out = PyList_New(n)) == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != n_store_cols + 2) {
            PyErr_SetString(PyExc_TypeError, "stored_rows(): a row has the wrong shape");
            goto fail;
        }
        PyObject *stored = PyTuple_New(n_store_cols + 3), *v, *o;
        if (stored == NULL)
            goto fail;
        PyList_SET_ITEM(out, i, stored);
        if ((o = PyLong_FromLongLong(next_id++)) == NULL)
            goto fail;
        PyTuple_SET_ITEM(stored, 0, o);
        for (int c = 0; c < n_store_cols; c++) {
            v = PyTuple_GET_ITEM(row, c);
            switch (store_kind[c]) {
            case S_ISTR:
                o = PyObject_GetItem(strings, v);  /* the interner's __missing__ assigns new ids */
                break;
            case S_STR: case S_IP: {
                int truth = PyObject_IsTrue(v);
                if (truth < 0)
                    goto fail;
                o = !truth ? Py_NewRef(Py_None) : store_kind[c] == S_STR ? Py_NewRef(v) : packed_ip(v);
                break;
            }
            case S_TS_REL: {
                PyObject *t0 = PyTuple_GET_ITEM(row, 0);  /* v - (row[0] or 0) */
                int truth = t0 == Py_None ? 0 : PyObject_IsTrue(t0);
                if (truth < 0)
                    goto fail;
                o = v == Py_None ? Py_NewRef(Py_None) : truth ? PyNumber_Subtract(v, t0) : Py_NewRef(v);
                break;
            }
            default:
                o = Py_NewRef(v);
            }
            if (o == NULL)
                goto fail;
            PyTuple_SET_ITEM(stored, c + 1, o);
        }
        PyTuple_SET_ITEM(stored, n_store_cols + 1, Py_NewRef(PyTuple_GET_ITEM(row, n_store_cols)));
        PyObject *conn = PyTuple_GET_ITEM(row, n_store_cols + 1), *cid;
        if (conn == Py_None) {
            cid = Py_NewRef(Py_None);
        } else if (conn == last_conn) {
            cid = Py_NewRef(last_cid);
        } else {
            if ((cid = PyObject_CallOneArg(connection_id, conn)) == NULL)
                goto fail;
            Py_XSETREF(last_conn, Py_NewRef(conn));
            Py_XSETREF(last_cid, Py_NewRef(cid));
        }
        PyTuple_SET_ITEM(stored, n_store_cols + 2, cid);
    }
    Py_XDECREF(last_conn);
    Py_XDECREF(last_cid);
    return out;
fail:
    Py_XDECREF(last_conn);
    Py_XDECREF(last_cid);
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(configure_store_doc, "configure_store(kinds) -> None: per column, 0 as is, 1 interned, 2 text "
             "or NULL, 3 packed address, 4 ns after column 0.");

static PyObject *configure_store(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *kinds;
    if (!PyArg_ParseTuple(args, "O!", &PyTuple_Type, &kinds))
        return NULL;
    if (PyTuple_GET_SIZE(kinds) > MAX_COLS) {
        PyErr_SetString(PyExc_ValueError, "configure_store(): too many columns");
        return NULL;
    }
    n_store_cols = (int)PyTuple_GET_SIZE(kinds);
    for (int c = 0; c < n_store_cols; c++) {
        store_kind[c] = (int)PyLong_AsLong(PyTuple_GET_ITEM(kinds, c));
        if (PyErr_Occurred())
            return NULL;
    }
    store_configured = 1;
    Py_RETURN_NONE;
}

/* -- configuration of json_dict ---------------------------------------------------------------------- */

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
    {"configure_store", configure_store, METH_VARARGS, configure_store_doc},
    {"stored_rows", stored_rows, METH_VARARGS, stored_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_rows", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__rows(void) {
    k_event = PyUnicode_InternFromString("event");
    k_connection = PyUnicode_InternFromString("connection");
    k_join = PyUnicode_InternFromString("join");
    k_received = PyUnicode_InternFromString("received_time");
    if (!k_event || !k_connection || !k_join || !k_received)
        return NULL;
    return PyModule_Create(&module);
}
