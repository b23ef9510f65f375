/* Binary COPY rows from the hex strings of JSON-RPC answers.
 *
 * The EVM fast path (indexer/chain/evm_rows.py) decodes a batch with msgspec into typed
 * structs, checks the identity fields in Python, and hands each block's columns (lists of
 * the node's hex strings) to these two functions, which check every value and write the
 * rows in PostgreSQL's binary COPY format (no header, no trailer):
 *
 *   tx_rows(prefix, hashes, senders, receivers, values, nonces, gases, gas_prices,
 *           inputs, types) -> bytes
 *   log_rows(prefix, tx_indexes, tx_hashes, addresses, topics, datas) -> bytes
 *
 * `prefix` is the row's field count plus the fields that are the same for the whole block
 * (chain, block number). The position in the list is the tx_index / log_index.
 *
 * Every value is checked: hex data must be "0x" + an even number of hex digits (exactly
 * 2 * size for hashes and addresses), a quantity "0x" + 1..64 hex digits, nullable columns
 * take None. Anything else raises ValueError naming the column and row, and the caller
 * falls back to the checked pure-Python path, which names the problem to the operator.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline void put_u16(Buf *b, uint16_t v) {
    b->data[b->len++] = (char)(v >> 8);
    b->data[b->len++] = (char)(v & 0xff);
}

static inline void put_u32(Buf *b, uint32_t v) {
    b->data[b->len++] = (char)(v >> 24);
    b->data[b->len++] = (char)((v >> 16) & 0xff);
    b->data[b->len++] = (char)((v >> 8) & 0xff);
    b->data[b->len++] = (char)(v & 0xff);
}

static const signed char HEX[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
    ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
    ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};  /* digit value + 1; 0 = not a hex digit */

static int bad(const char *column, Py_ssize_t row, const char *what) {
    PyErr_Format(PyExc_ValueError, "%s of row %zd: %s", column, row, what);
    return -1;
}

/* The digits after "0x" of an ASCII str, or NULL with ValueError set. */
static const char *hex_digits(PyObject *o, Py_ssize_t *n, const char *column, Py_ssize_t row) {
    if (!PyUnicode_Check(o) || !PyUnicode_IS_COMPACT_ASCII(o)) {
        bad(column, row, "not an ASCII string");
        return NULL;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    const char *s = (const char *)PyUnicode_DATA(o);
    if (len < 2 || s[0] != '0' || s[1] != 'x') {
        bad(column, row, "no 0x prefix");
        return NULL;
    }
    *n = len - 2;
    return s + 2;
}

/* A bytea field: int32 length, then the bytes. size < 0: any whole number of bytes. */
static int put_hex(Buf *b, PyObject *o, Py_ssize_t size, const char *column, Py_ssize_t row) {
    Py_ssize_t n;
    const char *s = hex_digits(o, &n, column, row);
    if (s == NULL)
        return -1;
    if (n & 1)
        return bad(column, row, "odd number of hex digits");
    if (size >= 0 && n != 2 * size)
        return bad(column, row, "wrong length");
    if (n / 2 > INT32_MAX)
        return bad(column, row, "too long");
    if (buf_reserve(b, 4 + n / 2) < 0)
        return -1;
    put_u32(b, (uint32_t)(n / 2));
    unsigned char *out = (unsigned char *)b->data + b->len;
    for (Py_ssize_t i = 0; i < n; i += 2) {
        int hi = HEX[(unsigned char)s[i]], lo = HEX[(unsigned char)s[i + 1]];
        if (!hi || !lo)
            return bad(column, row, "not hex");
        out[i / 2] = (unsigned char)(((hi - 1) << 4) | (lo - 1));
    }
    b->len += n / 2;
    return 0;
}

/* A quantity ("0x" + 1..64 hex digits) as 8 little-endian 32-bit limbs. */
static int parse_quantity(PyObject *o, uint32_t limbs[8], const char *column, Py_ssize_t row) {
    Py_ssize_t n;
    const char *s = hex_digits(o, &n, column, row);
    if (s == NULL)
        return -1;
    if (n < 1 || n > 64)
        return bad(column, row, "not a quantity of 1 to 64 hex digits");
    memset(limbs, 0, 8 * sizeof(uint32_t));
    for (Py_ssize_t i = 0; i < n; i++) {
        int d = HEX[(unsigned char)s[n - 1 - i]];
        if (!d)
            return bad(column, row, "not hex");
        limbs[i / 8] |= (uint32_t)(d - 1) << (4 * (i % 8));
    }
    return 0;
}

/* numeric in binary: int16 ndigits, weight, sign, dscale, then base-10000 digits. */
static int put_numeric(Buf *b, PyObject *o, const char *column, Py_ssize_t row) {
    uint32_t limbs[8];
    if (parse_quantity(o, limbs, column, row) < 0)
        return -1;
    uint16_t digits[20]; /* 2^256 < 10000^20; least significant first */
    int ndigits = 0;
    int top = 7;
    while (top >= 0 && limbs[top] == 0)
        top--;
    while (top >= 0) {
        uint64_t rem = 0;
        for (int i = top; i >= 0; i--) {
            uint64_t cur = (rem << 32) | limbs[i];
            limbs[i] = (uint32_t)(cur / 10000);
            rem = cur % 10000;
        }
        digits[ndigits++] = (uint16_t)rem;
        while (top >= 0 && limbs[top] == 0)
            top--;
    }
    if (buf_reserve(b, 12 + 2 * ndigits) < 0)
        return -1;
    put_u32(b, (uint32_t)(8 + 2 * ndigits));
    put_u16(b, (uint16_t)ndigits);
    put_u16(b, (uint16_t)(ndigits ? ndigits - 1 : 0));
    put_u16(b, 0); /* sign: positive */
    put_u16(b, 0); /* dscale */
    for (int i = ndigits - 1; i >= 0; i--)
        put_u16(b, digits[i]);
    return 0;
}

static int put_null(Buf *b) {
    if (buf_reserve(b, 4) < 0)
        return -1;
    put_u32(b, 0xffffffffu);
    return 0;
}

static int put_int4(Buf *b, uint32_t v) {
    if (buf_reserve(b, 8) < 0)
        return -1;
    put_u32(b, 4);
    put_u32(b, v);
    return 0;
}

static int put_prefix(Buf *b, const char *prefix, Py_ssize_t len) {
    if (buf_reserve(b, len) < 0)
        return -1;
    memcpy(b->data + b->len, prefix, (size_t)len);
    b->len += len;
    return 0;
}

static PyObject *finish(Buf *b, int failed) {
    PyObject *out = failed ? NULL : PyBytes_FromStringAndSize(b->data ? b->data : "", b->len);
    PyMem_Free(b->data);
    return out;
}

static int check_lists(PyObject **lists, const char **names, int count, Py_ssize_t *rows) {
    *rows = -1;
    for (int i = 0; i < count; i++) {
        if (!PyList_Check(lists[i])) {
            PyErr_Format(PyExc_TypeError, "%s: expected a list", names[i]);
            return -1;
        }
        Py_ssize_t n = PyList_GET_SIZE(lists[i]);
        if (*rows >= 0 && n != *rows) {
            PyErr_Format(PyExc_ValueError, "%s: %zd rows, expected %zd", names[i], n, *rows);
            return -1;
        }
        *rows = n;
    }
    if (*rows > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many rows");
        return -1;
    }
    return 0;
}

static PyObject *tx_rows(PyObject *self, PyObject *args) {
    (void)self;
    const char *prefix;
    Py_ssize_t prefix_len;
    PyObject *cols[9];
    static const char *names[9] = {"hash", "from", "to", "value", "nonce",
                                   "gas", "gasPrice", "input", "type"};
    if (!PyArg_ParseTuple(args, "y#O!O!O!O!O!O!O!O!O!", &prefix, &prefix_len,
                          &PyList_Type, &cols[0], &PyList_Type, &cols[1], &PyList_Type, &cols[2],
                          &PyList_Type, &cols[3], &PyList_Type, &cols[4], &PyList_Type, &cols[5],
                          &PyList_Type, &cols[6], &PyList_Type, &cols[7], &PyList_Type, &cols[8]))
        return NULL;
    Py_ssize_t rows;
    if (check_lists(cols, names, 9, &rows) < 0)
        return NULL;
    Buf b = {NULL, 0, 0};
    int failed = 0;
    for (Py_ssize_t i = 0; i < rows && !failed; i++) {
        PyObject *to = PyList_GET_ITEM(cols[2], i);
        PyObject *gas_price = PyList_GET_ITEM(cols[6], i);
        PyObject *type = PyList_GET_ITEM(cols[8], i);
        uint32_t type_value = 0;
        if (type != Py_None) {
            uint32_t limbs[8];
            if (parse_quantity(type, limbs, "type", i) < 0) {
                failed = 1;
                break;
            }
            for (int k = 1; k < 8; k++)
                if (limbs[k])
                    limbs[0] = 0x10000;
            if (limbs[0] > 0x7fff) {
                failed = bad("type", i, "out of range");
                break;
            }
            type_value = limbs[0];
        }
        failed = put_prefix(&b, prefix, prefix_len) < 0
                 || put_int4(&b, (uint32_t)i) < 0
                 || put_hex(&b, PyList_GET_ITEM(cols[0], i), 32, "hash", i) < 0
                 || put_hex(&b, PyList_GET_ITEM(cols[1], i), 20, "from", i) < 0
                 || (to == Py_None ? put_null(&b) : put_hex(&b, to, 20, "to", i)) < 0
                 || put_numeric(&b, PyList_GET_ITEM(cols[3], i), "value", i) < 0
                 || put_numeric(&b, PyList_GET_ITEM(cols[4], i), "nonce", i) < 0
                 || put_numeric(&b, PyList_GET_ITEM(cols[5], i), "gas", i) < 0
                 || (gas_price == Py_None ? put_null(&b)
                                          : put_numeric(&b, gas_price, "gasPrice", i)) < 0
                 || put_hex(&b, PyList_GET_ITEM(cols[7], i), -1, "input", i) < 0
                 || buf_reserve(&b, 6) < 0;
        if (!failed) {
            put_u32(&b, 2);
            put_u16(&b, (uint16_t)type_value);
        }
    }
    return finish(&b, failed);
}

static PyObject *log_rows(PyObject *self, PyObject *args) {
    (void)self;
    const char *prefix;
    Py_ssize_t prefix_len;
    PyObject *cols[5];
    static const char *names[5] = {"transactionIndex", "transactionHash", "address",
                                   "topics", "data"};
    if (!PyArg_ParseTuple(args, "y#O!O!O!O!O!", &prefix, &prefix_len, &PyList_Type, &cols[0],
                          &PyList_Type, &cols[1], &PyList_Type, &cols[2], &PyList_Type,
                          &cols[3], &PyList_Type, &cols[4]))
        return NULL;
    Py_ssize_t rows;
    if (check_lists(cols, names, 5, &rows) < 0)
        return NULL;
    Buf b = {NULL, 0, 0};
    int failed = 0;
    for (Py_ssize_t i = 0; i < rows && !failed; i++) {
        PyObject *tx_index = PyList_GET_ITEM(cols[0], i);
        long tx_value = PyLong_Check(tx_index) ? PyLong_AsLong(tx_index) : -1;
        if (tx_value < 0 || tx_value > INT32_MAX) {
            PyErr_Clear();
            failed = bad("transactionIndex", i, "not a row index");
            break;
        }
        PyObject *topics = PyList_GET_ITEM(cols[3], i);
        if (!PyList_Check(topics) || PyList_GET_SIZE(topics) > 4) {
            failed = bad("topics", i, "not a list of at most 4 topics");
            break;
        }
        Py_ssize_t ntopics = PyList_GET_SIZE(topics);
        failed = put_prefix(&b, prefix, prefix_len) < 0
                 || put_int4(&b, (uint32_t)i) < 0
                 || put_int4(&b, (uint32_t)tx_value) < 0
                 || put_hex(&b, PyList_GET_ITEM(cols[1], i), 32, "transactionHash", i) < 0
                 || put_hex(&b, PyList_GET_ITEM(cols[2], i), 20, "address", i) < 0
                 || buf_reserve(&b, 24) < 0;
        if (failed)
            break;
        /* bytea[]: int32 ndim, has-null flag, element oid (bytea = 17), then per dimension
         * size and lower bound; an empty array has ndim 0 and no dimensions. */
        put_u32(&b, (uint32_t)(ntopics ? 20 + 36 * ntopics : 12));
        put_u32(&b, ntopics ? 1 : 0);
        put_u32(&b, 0);
        put_u32(&b, 17);
        if (ntopics) {
            put_u32(&b, (uint32_t)ntopics);
            put_u32(&b, 1);
        }
        for (Py_ssize_t k = 0; k < ntopics && !failed; k++)
            failed = put_hex(&b, PyList_GET_ITEM(topics, k), 32, "topics", i) < 0;
        if (!failed)
            failed = put_hex(&b, PyList_GET_ITEM(cols[4], i), -1, "data", i) < 0;
    }
    return finish(&b, failed);
}

static PyMethodDef methods[] = {
    {"tx_rows", tx_rows, METH_VARARGS, "Transactions of one block as binary COPY rows."},
    {"log_rows", log_rows, METH_VARARGS, "Logs of one block as binary COPY rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "indexer._rows",
    .m_doc = "Binary COPY rows from JSON-RPC hex strings.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__rows(void) { return PyModule_Create(&module); }
