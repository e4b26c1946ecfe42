/* authwire.ingest._eventwire: from an AuthEvent's wire bytes to its validated store row in one native pass.
 *
 * Why native code: from Python every field of a parsed (upb) message costs ~60 ns to read, and the data
 * path read an event's ~45 fields three times over (validation: lengths, secret shapes, enums; then the
 * row), ~13 us of the sidecar's ~45 us per record. No library fits: upb parses in C but hands every field
 * back across the C/Python boundary, and nothing else knows authwire's validation rules.
 *
 * An accelerator, never the judge. An event is accepted here only when the Python path
 * (authwire.ingest.validate + authwire.store.columns.event_row) would accept it unchanged and no problem
 * could be named; anything else goes back as its bytes to that path, which decides and names the problem:
 * an unknown field, a repeated sub-message (merge semantics), a non-ASCII string, an IP address not already
 * in canonical text, any text in which a secret shape could start (a superset of authwire.ingest.secrets'
 * triggers), a value outside its limit, a missing endpoint or start time. tests/ingest/test_eventwire.py
 * checks with hypothesis that whatever is accepted gives exactly the Python path's row.
 *
 * Limits and enum ranges come from Python (configure(), from authwire.ingest.validate's tables): one source.
 * Every read is bounds-checked against the buffer's end; a length or varint that runs past it declines.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

/* Plain-row column indexes (authwire.store.columns.COLUMNS order; checked by the tests). */
enum {
    C_TIME = 0, C_RECEIVED = 1, C_RID = 2, C_LAT = 3, C_GKIND = 4, C_GNODE = 5, C_GVER = 6, C_CIP = 7,
    C_CPORT = 8, C_SIP = 9, C_SPORT = 10, C_XFF = 11, C_GCID = 12, C_CREQ = 13, C_METHOD = 14, C_HOST = 15,
    C_PATH = 16, C_STATUS = 17, C_UA = 18, C_REQB = 19, C_RESPB = 20, C_ROUTE = 21, C_SERVICE = 22,
    C_AMETHOD = 23, C_OUTCOME = 24, C_PLUGIN = 25, C_CONSUMER = 26, C_CRED = 27, C_REASON = 28, C_MSG = 29,
    C_ISS = 30, C_SUB = 31, C_AUD = 32, C_KID = 33, C_EXP = 34, C_IAT = 35, C_JTI = 36, C_ALG = 37,
    NEV = 38,             /* event columns; then the event row holds: */
    ER_PRESENT = NEV,     /* presence bits of the event's sub-messages (columns.CONTAINERS bits 0-5) */
    ER_SOURCE = NEV + 1,  /* the event's own bytes (subscribers parse them) */
    ER_LEN = NEV + 2,
    N_JOIN = 6,           /* join columns after the event's: status .. waited_ns */
    ROW_LEN = NEV + N_JOIN + 2,
};

enum kind { K_NONE = 0, K_STR, K_U32, K_U64, K_I64, K_ENUM, K_MSG, K_TS, K_DUR };
enum msg { M_EVENT, M_GATEWAY, M_CLIENT, M_SERVER, M_HTTP, M_AUTH, M_JWT, N_MSG };

typedef struct { uint8_t kind, col, sub, bit; } field_t;
#define MAX_FIELD 14
/* Field number -> what it is, per message (protos/authwire/v1/auth_event.proto). */
static const field_t SCHEMA[N_MSG][MAX_FIELD] = {
    [M_EVENT] = {
        [1] = {K_STR, C_RID}, [2] = {K_TS, C_TIME}, [3] = {K_DUR, C_LAT},
        [4] = {K_MSG, 0, M_GATEWAY, 1}, [5] = {K_MSG, 0, M_CLIENT, 2}, [6] = {K_MSG, 0, M_SERVER, 4},
        [7] = {K_STR, C_XFF}, [8] = {K_U64, C_GCID}, [9] = {K_U32, C_CREQ}, [10] = {K_MSG, 0, M_HTTP, 8},
        [11] = {K_STR, C_ROUTE}, [12] = {K_STR, C_SERVICE}, [13] = {K_MSG, 0, M_AUTH, 16},
    },
    [M_GATEWAY] = {[1] = {K_ENUM, C_GKIND}, [2] = {K_STR, C_GNODE}, [3] = {K_STR, C_GVER}},
    [M_CLIENT] = {[1] = {K_STR, C_CIP}, [2] = {K_U32, C_CPORT}},
    [M_SERVER] = {[1] = {K_STR, C_SIP}, [2] = {K_U32, C_SPORT}},
    [M_HTTP] = {
        [1] = {K_STR, C_METHOD}, [2] = {K_STR, C_HOST}, [3] = {K_STR, C_PATH}, [4] = {K_U32, C_STATUS},
        [5] = {K_STR, C_UA}, [6] = {K_U64, C_REQB}, [7] = {K_U64, C_RESPB},
    },
    [M_AUTH] = {
        [1] = {K_ENUM, C_AMETHOD}, [2] = {K_ENUM, C_OUTCOME}, [3] = {K_STR, C_PLUGIN},
        [4] = {K_STR, C_CONSUMER}, [5] = {K_STR, C_CRED}, [6] = {K_ENUM, C_REASON}, [7] = {K_STR, C_MSG},
        [8] = {K_MSG, 0, M_JWT, 32},
    },
    [M_JWT] = {
        [1] = {K_STR, C_ISS}, [2] = {K_STR, C_SUB}, [3] = {K_STR, C_AUD}, [4] = {K_STR, C_KID},
        [5] = {K_I64, C_EXP}, [6] = {K_I64, C_IAT}, [7] = {K_STR, C_JTI}, [8] = {K_STR, C_ALG},
    },
};
static const uint8_t IDENTITY_COLS[] = {C_CONSUMER, C_CRED, C_SUB, C_ISS, C_AUD};
#define IDENTITY_MIN_RUN 28  /* secrets._IDENTITY_TRIGGER */
#define PSEUDONYM_PREFIX "hmac-sha256:"

/* From configure(): validate.MAX_STRING per string column, the highest known value per enum column. */
static Py_ssize_t limit[NEV];
static int64_t enum_max[NEV];
static double max_future_s;
static uint64_t max_ts_s, max_dur_s, max_nanos;
static int configured;
static PyObject *empty_str;

typedef struct {
    const uint8_t *p[NEV];   /* string columns: start (NULL = unset) */
    Py_ssize_t n[NEV];       /* and length */
    uint64_t u[NEV];         /* integer columns */
    uint64_t ts_s, ts_n, lat_s, lat_n;
    unsigned present, seen;  /* sub-message bits; `seen` also has TS/DUR bits */
} ev_t;
#define SEEN_TS 64u
#define SEEN_DUR 128u

static int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
        uint8_t b = *p++;
        if (shift == 63 && b > 1)
            return 0;  /* more than 64 bits */
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *out = v;
            return 1;
        }
    }
    return 0;  /* truncated or longer than 10 bytes */
}

/* A length-delimited payload: its start and end, or 0 when the length runs past the buffer. */
static int read_len(const uint8_t **pp, const uint8_t *end, const uint8_t **start, const uint8_t **stop) {
    uint64_t n;
    if (!read_varint(pp, end, &n) || n > (uint64_t)(end - *pp))
        return 0;
    *start = *pp;
    *stop = *pp + n;
    *pp = *stop;
    return 1;
}

/* google.protobuf.Timestamp / Duration: seconds (int64) = 1, nanos (int32) = 2, nothing else. */
static int parse_time(const uint8_t *p, const uint8_t *end, uint64_t *seconds, uint64_t *nanos) {
    *seconds = *nanos = 0;
    while (p < end) {
        uint64_t tag, v;
        if (!read_varint(&p, end, &tag) || (tag & 7) != 0 || !read_varint(&p, end, &v))
            return 0;
        if (tag >> 3 == 1)
            *seconds = v;
        else if (tag >> 3 == 2)
            *nanos = v;
        else
            return 0;
    }
    return 1;
}

static int parse_msg(ev_t *ev, int msg, const uint8_t *p, const uint8_t *end, int depth) {
    while (p < end) {
        uint64_t tag, v;
        const uint8_t *s, *e;
        if (!read_varint(&p, end, &tag))
            return 0;
        uint64_t number = tag >> 3;
        unsigned wire = tag & 7;
        if (number == 0 || number >= MAX_FIELD)
            return 0;
        const field_t *f = &SCHEMA[msg][number];
        switch (f->kind) {
        case K_STR:
            if (wire != 2 || !read_len(&p, end, &s, &e))
                return 0;
            ev->p[f->col] = s;  /* repeated: the last one wins, as in protobuf */
            ev->n[f->col] = e - s;
            break;
        case K_U32: case K_U64: case K_I64: case K_ENUM:
            if (wire != 0 || !read_varint(&p, end, &v))
                return 0;
            if (f->kind == K_U32 && v > 0xFFFFFFFFu)
                return 0;
            if (f->kind == K_ENUM && v > (uint64_t)enum_max[f->col])
                return 0;  /* unknown value, or a negative int32 */
            if (f->kind == K_I64 && v > max_ts_s)
                return 0;  /* jwt exp/iat: negative or past year 9999 */
            ev->u[f->col] = v;
            break;
        case K_MSG:
            if (wire != 2 || !read_len(&p, end, &s, &e) || (ev->seen & f->bit) || depth > 2)
                return 0;  /* a repeated sub-message merges: left to protobuf */
            ev->seen |= f->bit;
            ev->present |= f->bit;
            if (!parse_msg(ev, f->sub, s, e, depth + 1))
                return 0;
            break;
        case K_TS: case K_DUR: {
            unsigned bit = f->kind == K_TS ? SEEN_TS : SEEN_DUR;
            if (wire != 2 || !read_len(&p, end, &s, &e) || (ev->seen & bit))
                return 0;
            ev->seen |= bit;
            if (!(f->kind == K_TS ? parse_time(s, e, &ev->ts_s, &ev->ts_n) : parse_time(s, e, &ev->lat_s, &ev->lat_n)))
                return 0;
            break;
        }
        default:
            return 0;  /* unknown field */
        }
    }
    return p == end;
}

static int is_alnum(uint8_t c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }
static int is_alpha(uint8_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
/* Every ASCII character Python's \s matches (and the other controls): a superset, which only declines more. */
static int is_space(uint8_t c) { return c <= 0x20; }

static int word_at(const uint8_t *s, Py_ssize_t n, Py_ssize_t i, const char *word, Py_ssize_t len) {
    if (i + len > n)
        return 0;
    for (Py_ssize_t k = 0; k < len; k++)
        if ((s[i + k] | 0x20) != word[k])
            return 0;
    return 1;
}

static int exact_at(const uint8_t *s, Py_ssize_t n, Py_ssize_t i, const char *lit, Py_ssize_t len) {
    return i + len <= n && memcmp(s + i, lit, len) == 0;
}

/* secrets._SCHEME: an Authorization scheme word (not inside a word) followed by white space. */
static int scheme_at(const uint8_t *s, Py_ssize_t n, Py_ssize_t i, const char *word, Py_ssize_t len) {
    return word_at(s, n, i, word, len) && (i == 0 || !is_alnum(s[i - 1])) && i + len < n && is_space(s[i + len]);
}

/* secrets._NAMED: a secret's name, at most 12 more letters, at most 4 spaces, then '=' (and anything), or
 * ':' and a value that is not only lower-case letters ("password: missing" is a message, "password:
 * Hunter2" is not). The runs are bounded as the pattern's are, so a field costs O(length), whatever it holds. */
static int named_at(const uint8_t *s, Py_ssize_t n, Py_ssize_t i, const char *word, Py_ssize_t len) {
    if (!word_at(s, n, i, word, len))
        return 0;
    Py_ssize_t j = i + len, stop;
    for (stop = j + 13; j < n && j < stop && (is_alpha(s[j]) || s[j] == '_' || s[j] == '-'); j++)
        ;
    if (j == stop)
        return 0;  /* more than 12: the pattern cannot match here */
    for (stop = j + 5; j < n && j < stop && is_space(s[j]); j++)
        ;
    if (j == stop || j >= n || (s[j] != '=' && s[j] != ':'))
        return 0;
    if (s[j] == '=')
        return 1;
    for (j++, stop = j + 5; j < n && j < stop && is_space(s[j]); j++)
        ;
    if (j == stop)
        return 0;
    for (stop = j + 257; j < n && j < stop && s[j] >= 'a' && s[j] <= 'z'; j++)
        ;
    return j < n && j < stop && !is_space(s[j]);
}

/* Could authwire.ingest.secrets find a shape here? A superset of its triggers (each shape starts at one). */
static int maybe_secret(const uint8_t *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        switch (c | 0x20) {
        case 'a':
            if (exact_at(s, n, i, "AKIA", 4) || exact_at(s, n, i, "ASIA", 4) || exact_at(s, n, i, "AIDA", 4)
                    || exact_at(s, n, i, "AROA", 4))
                return 1;
            break;
        case 'b':
            if (scheme_at(s, n, i, "basic", 5) || scheme_at(s, n, i, "bearer", 6))
                return 1;
            break;
        case 'd':
            if (scheme_at(s, n, i, "digest", 6))
                return 1;
            break;
        case 'n':
            if (scheme_at(s, n, i, "negotiate", 9))
                return 1;
            break;
        case 'e':
            if (exact_at(s, n, i, "eyJ", 3))
                return 1;
            break;
        case 'p':
            if (named_at(s, n, i, "pass", 4) || named_at(s, n, i, "pwd", 3) || exact_at(s, n, i, "PRIVATE KEY", 11))
                return 1;
            break;
        case 's':
            if (named_at(s, n, i, "secret", 6) || named_at(s, n, i, "session", 7) || named_at(s, n, i, "signature", 9))
                return 1;
            break;
        case 't':
            if (named_at(s, n, i, "token", 5))
                return 1;
            break;
        case 'k':
            if (named_at(s, n, i, "key", 3))
                return 1;
            break;
        }
    }
    return 0;
}

static int is_b64(uint8_t c) { return is_alnum(c) || c == '+' || c == '/' || c == '=' || c == '_' || c == '-'; }
static int is_lower_hex(uint8_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

/* secrets._IDENTITY: a run of 32+ hex digits, or a run of 28+ base64 characters holding a lower-case
 * letter, a capital and a digit (a UUID, lower-case hex with dashes, is neither). Superset: any such run
 * anywhere (the pattern also wants alphanumeric boundaries and the three within 257 of the run's start).
 * The plugins' keyed pseudonym is exempt. */
static int maybe_identity_secret(const uint8_t *s, Py_ssize_t n) {
    Py_ssize_t plen = sizeof(PSEUDONYM_PREFIX) - 1, run = 0, hex = 0;
    int lower = 0, upper = 0, digit = 0;
    if (n == plen + 64 && memcmp(s, PSEUDONYM_PREFIX, plen) == 0) {
        Py_ssize_t k = plen;
        while (k < n && is_lower_hex(s[k]))
            k++;
        if (k == n)
            return 0;
    }
    for (Py_ssize_t i = 0; i <= n; i++) {
        uint8_t c = i < n ? s[i] : 0;
        if (i < n && is_b64(c)) {
            run++;
            lower |= c >= 'a' && c <= 'z';
            upper |= c >= 'A' && c <= 'Z';
            digit |= c >= '0' && c <= '9';
        } else {
            if (run >= IDENTITY_MIN_RUN && lower && upper && digit)
                return 1;
            run = lower = upper = digit = 0;
        }
        hex = i < n && ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')) ? hex + 1 : 0;
        if (hex >= 32)
            return 1;
    }
    return 0;
}

/* authwire.addresses.normalize_ip would return it unchanged: canonical IPv4, or canonical IPv6 text
 * without an embedded IPv4 part (glibc and Python's ipaddress agree on those: RFC 5952), never mapped. */
static int canonical_ip(const uint8_t *s, Py_ssize_t n) {
    char text[INET6_ADDRSTRLEN + 1], back[INET6_ADDRSTRLEN + 1];
    unsigned char packed[16];
    if (n == 0 || n > INET6_ADDRSTRLEN || memchr(s, 0, n) != NULL)
        return 0;
    memcpy(text, s, n);
    text[n] = 0;
    if (inet_pton(AF_INET, text, packed) == 1)
        return inet_ntop(AF_INET, packed, back, sizeof back) != NULL && strcmp(back, text) == 0;
    if (memchr(s, '.', n) != NULL || memchr(s, '%', n) != NULL || inet_pton(AF_INET6, text, packed) != 1)
        return 0;
    return inet_ntop(AF_INET6, packed, back, sizeof back) != NULL && strcmp(back, text) == 0;
}

/* validate(): would it name a problem, or change the event? */
static int acceptable(const ev_t *ev, double now) {
    static const uint8_t string_cols[] = {C_RID, C_GNODE, C_GVER, C_CIP, C_SIP, C_XFF, C_METHOD, C_HOST,
        C_PATH, C_UA, C_ROUTE, C_SERVICE, C_PLUGIN, C_CONSUMER, C_CRED, C_MSG, C_ISS, C_SUB, C_AUD, C_KID,
        C_JTI, C_ALG};
    for (size_t k = 0; k < sizeof string_cols; k++) {
        int c = string_cols[k];
        const uint8_t *s = ev->p[c];
        Py_ssize_t n = ev->n[c];
        if (n > limit[c])
            return 0;
        for (Py_ssize_t i = 0; i < n; i++)
            if (s[i] & 0x80)
                return 0;  /* non-ASCII: Python checks UTF-8 and case folds it */
        if (n && maybe_secret(s, n))
            return 0;
    }
    for (size_t k = 0; k < sizeof IDENTITY_COLS; k++)
        if (ev->n[IDENTITY_COLS[k]] && maybe_identity_secret(ev->p[IDENTITY_COLS[k]], ev->n[IDENTITY_COLS[k]]))
            return 0;
    int blank = 1;  /* request_id.strip() must leave something */
    for (Py_ssize_t i = 0; i < ev->n[C_RID]; i++)
        if (!is_space(ev->p[C_RID][i]))
            blank = 0;
    if (blank)
        return 0;
    if ((ev->present & 6) != 6 || !canonical_ip(ev->p[C_CIP], ev->n[C_CIP]) || !canonical_ip(ev->p[C_SIP], ev->n[C_SIP]))
        return 0;
    if (ev->u[C_CPORT] < 1 || ev->u[C_CPORT] > 65535 || ev->u[C_SPORT] < 1 || ev->u[C_SPORT] > 65535)
        return 0;
    if (!(ev->seen & SEEN_TS) || ev->ts_n > max_nanos || ev->ts_s == 0 || ev->ts_s > max_ts_s)
        return 0;
    if ((double)ev->ts_s + (double)ev->ts_n / 1e9 > now + max_future_s)
        return 0;  /* the same float arithmetic as validate._check_time */
    if (ev->lat_n > max_nanos || ev->lat_s > max_dur_s)
        return 0;  /* also negative values (huge as unsigned) */
    if (ev->n[C_JTI]) {
        if (ev->n[C_JTI] != 64)
            return 0;
        for (Py_ssize_t i = 0; i < 64; i++)
            if (!is_lower_hex(ev->p[C_JTI][i]))
                return 0;
    }
    return 1;
}

static PyObject *ascii_str(const uint8_t *s, Py_ssize_t n) {
    if (n == 0)
        return Py_NewRef(empty_str);
    PyObject *o = PyUnicode_New(n, 127);
    if (o != NULL)
        memcpy(PyUnicode_DATA(o), s, n);
    return o;
}

static const uint8_t KINDS[NEV] = {
    [C_RID] = K_STR, [C_GKIND] = K_ENUM, [C_GNODE] = K_STR, [C_GVER] = K_STR, [C_CIP] = K_STR, [C_CPORT] = K_U32,
    [C_SIP] = K_STR, [C_SPORT] = K_U32, [C_XFF] = K_STR, [C_GCID] = K_U64, [C_CREQ] = K_U32, [C_METHOD] = K_STR,
    [C_HOST] = K_STR, [C_PATH] = K_STR, [C_STATUS] = K_U32, [C_UA] = K_STR, [C_REQB] = K_U64, [C_RESPB] = K_U64,
    [C_ROUTE] = K_STR, [C_SERVICE] = K_STR, [C_AMETHOD] = K_ENUM, [C_OUTCOME] = K_ENUM, [C_PLUGIN] = K_STR,
    [C_CONSUMER] = K_STR, [C_CRED] = K_STR, [C_REASON] = K_ENUM, [C_MSG] = K_STR, [C_ISS] = K_STR,
    [C_SUB] = K_STR, [C_AUD] = K_STR, [C_KID] = K_STR, [C_EXP] = K_I64, [C_IAT] = K_I64, [C_JTI] = K_STR,
    [C_ALG] = K_STR,
};

/* The event row (columns.event_row's tuple) of an accepted event; NULL with an exception only on MemoryError. */
static PyObject *build_row(const ev_t *ev, const uint8_t *start, Py_ssize_t size) {
    PyObject *row = PyTuple_New(ER_LEN);
    if (row == NULL)
        return NULL;
    for (int c = 0; c < NEV; c++) {
        PyObject *o;
        if (c == C_TIME)
            o = PyLong_FromLongLong((long long)ev->ts_s * 1000000000LL + (long long)ev->ts_n);
        else if (c == C_RECEIVED)
            o = Py_NewRef(Py_None);
        else if (c == C_LAT)
            o = (ev->seen & SEEN_DUR) ? PyLong_FromLongLong((long long)ev->lat_s * 1000000000LL + (long long)ev->lat_n)
                                      : Py_NewRef(Py_None);
        else if (KINDS[c] == K_STR)
            o = ascii_str(ev->p[c], ev->n[c]);
        else
            o = PyLong_FromUnsignedLongLong(ev->u[c]);
        if (o == NULL) {
            Py_DECREF(row);
            return NULL;
        }
        PyTuple_SET_ITEM(row, c, o);
    }
    PyObject *present = PyLong_FromUnsignedLong(ev->present);
    PyObject *source = PyBytes_FromStringAndSize((const char *)start, size);
    if (present == NULL || source == NULL) {
        Py_XDECREF(present);
        Py_XDECREF(source);
        Py_DECREF(row);
        return NULL;
    }
    PyTuple_SET_ITEM(row, ER_PRESENT, present);
    PyTuple_SET_ITEM(row, ER_SOURCE, source);
    return row;
}

/* One event: its row, or its bytes for the Python path. */
static PyObject *event_item(const uint8_t *s, const uint8_t *e, double now) {
    ev_t ev;
    memset(&ev, 0, sizeof ev);
    if (parse_msg(&ev, M_EVENT, s, e, 0) && acceptable(&ev, now))
        return build_row(&ev, s, e - s);
    return PyBytes_FromStringAndSize((const char *)s, e - s);
}

static int get_now(PyObject *arg, double *now) {
    *now = PyFloat_AsDouble(arg);
    if (*now == -1.0 && PyErr_Occurred())
        return 0;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_eventwire.configure() was not called");
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(report_doc,
"report(body: bytes, now: float) -> (items, drops) | None\n\n"
"A ReportRequest body: items has one entry per event, in order: its event row when accepted, else its\n"
"bytes (for the Python path). drops is the ReporterDrops field's bytes or None. None when the body is not\n"
"a plain ReportRequest (unknown or malformed top-level fields): then the Python decoder handles it whole.");

static PyObject *report(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer body;
    PyObject *now_obj;
    double now;
    if (!PyArg_ParseTuple(args, "y*O", &body, &now_obj))
        return NULL;
    if (!get_now(now_obj, &now)) {
        PyBuffer_Release(&body);
        return NULL;
    }
    const uint8_t *p = body.buf, *end = p + body.len, *drops_start = NULL, *drops_end = NULL;
    PyObject *items = PyList_New(0), *result = NULL;
    if (items == NULL)
        goto done;
    while (p < end) {
        uint64_t tag;
        const uint8_t *s, *e;
        if (!read_varint(&p, end, &tag) || (tag & 7) != 2 || !read_len(&p, end, &s, &e))
            goto decline;
        if (tag >> 3 == 1) {
            PyObject *item = event_item(s, e, now);
            if (item == NULL || PyList_Append(items, item) < 0) {
                Py_XDECREF(item);
                goto done;
            }
            Py_DECREF(item);
        } else if (tag >> 3 == 2 && drops_start == NULL) {
            drops_start = s;
            drops_end = e;
        } else {
            goto decline;
        }
    }
    if (drops_start != NULL) {
        PyObject *drops = PyBytes_FromStringAndSize((const char *)drops_start, drops_end - drops_start);
        if (drops != NULL)
            result = PyTuple_Pack(2, items, drops);
        Py_XDECREF(drops);
    } else {
        result = PyTuple_Pack(2, items, Py_None);
    }
    goto done;
decline:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(items);
    PyBuffer_Release(&body);
    return result;
}

PyDoc_STRVAR(event_doc,
"event(data: bytes, now: float) -> tuple | bytes\n\n"
"One serialized AuthEvent: its event row when accepted, else the bytes themselves.");

static PyObject *event(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer data;
    PyObject *now_obj, *result = NULL;
    double now;
    if (!PyArg_ParseTuple(args, "y*O", &data, &now_obj))
        return NULL;
    if (get_now(now_obj, &now))
        result = event_item(data.buf, (const uint8_t *)data.buf + data.len, now);
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(rows_doc,
"rows(event_rows, received_ns, joined) -> list[tuple]\n\n"
"Plain store rows: each event row's columns, received_ns, the join's six columns (joined[i] =\n"
"(connection, join columns)), the presence bits with the join's, and the connection.");

static PyObject *rows(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *events, *received, *joined;
    if (!PyArg_ParseTuple(args, "O!OO!", &PyList_Type, &events, &received, &PyList_Type, &joined))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(events);
    if (PyList_GET_SIZE(joined) != n) {
        PyErr_SetString(PyExc_ValueError, "rows(): events and joined differ in length");
        return NULL;
    }
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ev = PyList_GET_ITEM(events, i), *j = PyList_GET_ITEM(joined, i), *jcols, *present;
        if (!PyTuple_Check(ev) || PyTuple_GET_SIZE(ev) != ER_LEN || !PyTuple_Check(j) || PyTuple_GET_SIZE(j) != 2
                || !PyTuple_Check(jcols = PyTuple_GET_ITEM(j, 1)) || PyTuple_GET_SIZE(jcols) != N_JOIN) {
            PyErr_SetString(PyExc_TypeError, "rows(): an event row or join result has the wrong shape");
            Py_DECREF(out);
            return NULL;
        }
        long bits = PyLong_AsLong(PyTuple_GET_ITEM(ev, ER_PRESENT));
        if ((bits == -1 && PyErr_Occurred()) || (present = PyLong_FromLong(bits | 64)) == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyObject *row = PyTuple_New(ROW_LEN);
        if (row == NULL) {
            Py_DECREF(present);
            Py_DECREF(out);
            return NULL;
        }
        for (int c = 0; c < NEV; c++)
            PyTuple_SET_ITEM(row, c, Py_NewRef(c == C_RECEIVED ? received : PyTuple_GET_ITEM(ev, c)));
        for (int k = 0; k < N_JOIN; k++)
            PyTuple_SET_ITEM(row, NEV + k, Py_NewRef(PyTuple_GET_ITEM(jcols, k)));
        PyTuple_SET_ITEM(row, NEV + N_JOIN, present);
        PyTuple_SET_ITEM(row, NEV + N_JOIN + 1, Py_NewRef(PyTuple_GET_ITEM(j, 0)));
        PyList_SET_ITEM(out, i, row);
    }
    return out;
}

PyDoc_STRVAR(configure_doc,
"configure(limits, enum_max, max_future_s, max_timestamp_s, max_duration_s, max_nanos) -> None\n\n"
"limits: the longest accepted string per event column (38 ints; 0 where not a string); enum_max: the\n"
"highest known value per event column (-1 where not an enum). From authwire.ingest.validate.");

static PyObject *configure(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *limits, *enums;
    double future;
    unsigned long long ts, dur, nanos;
    if (!PyArg_ParseTuple(args, "O!O!dKKK", &PyTuple_Type, &limits, &PyTuple_Type, &enums, &future, &ts, &dur, &nanos))
        return NULL;
    if (PyTuple_GET_SIZE(limits) != NEV || PyTuple_GET_SIZE(enums) != NEV) {
        PyErr_Format(PyExc_ValueError, "configure(): limits and enum_max need %d entries", NEV);
        return NULL;
    }
    for (int c = 0; c < NEV; c++) {
        limit[c] = PyLong_AsSsize_t(PyTuple_GET_ITEM(limits, c));
        enum_max[c] = PyLong_AsLongLong(PyTuple_GET_ITEM(enums, c));
        if (PyErr_Occurred())
            return NULL;
    }
    /* Nanosecond columns must fit a signed 64-bit integer: longer durations take the Python path. */
    const unsigned long long ns_safe = 9000000000ULL;
    max_future_s = future;
    max_ts_s = ts;
    max_dur_s = dur < ns_safe ? dur : ns_safe;
    max_nanos = nanos;
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, configure_doc},
    {"report", report, METH_VARARGS, report_doc},
    {"event", event, METH_VARARGS, event_doc},
    {"rows", rows, METH_VARARGS, rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_eventwire", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__eventwire(void) {
    empty_str = PyUnicode_New(0, 0);
    if (empty_str == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "EVENT_COLUMNS", NEV) < 0
                      || PyModule_AddIntConstant(m, "ROW_LENGTH", ROW_LEN) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
