/* Binary COPY rows from the hex strings of JSON-RPC answers.
 *
 * The EVM fast path (indexer/chain/evm_rows.py) decodes a batch with msgspec into typed
 * structs and hands each block's transactions and logs (lists of those structs, whose
 * fields hold the node's strings) to these two functions, which check them and write the
 * rows in PostgreSQL's binary COPY format (no header, no trailer):
 *
 *   tx_rows(prefix, txs, block_hash, block_number) -> bytes
 *   log_rows(prefix, logs, block_hash, tx_hashes) -> bytes
 *
 * `prefix` is the row's field count plus the fields that are the same for the whole block
 * (chain, block number). The position in the list is the tx_index / log_index.
 *
 * Checked: every transaction and log names the block (`block_hash`, `block_number`, as the
 * block answer spells them); transactionIndex / logIndex is the canonical hex of the
 * position; a log's transactionIndex is a canonical index into `tx_hashes` and its
 * transactionHash is that transaction's; `removed` is false; at most 4 topics. Every
 * stored value: hex data is "0x" + an even number of hex digits (exactly 2 * size for
 * hashes and addresses), a quantity "0x" + 1..64 hex digits, nullable columns take None.
 * Anything else raises ValueError naming the field and row, and the caller falls back to
 * the checked pure-Python path, which names the problem to the operator.
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

/* Attribute names of the msgspec structs (interned at import). */
enum {
    A_BLOCK_HASH, A_BLOCK_NUMBER, A_TRANSACTION_INDEX, A_HASH, A_FROM, A_TO, A_VALUE, A_NONCE,
    A_GAS, A_GAS_PRICE, A_INPUT, A_TYPE, A_LOG_INDEX, A_TRANSACTION_HASH, A_ADDRESS, A_TOPICS,
    A_DATA, A_REMOVED, A_COUNT
};
static const char *ATTR_NAMES[A_COUNT] = {
    "block_hash", "block_number", "transaction_index", "hash", "from_", "to", "value", "nonce",
    "gas", "gas_price", "input", "type", "log_index", "transaction_hash", "address", "topics",
    "data", "removed",
};
static PyObject *ATTRS[A_COUNT];

/* Both ASCII strs, equal. */
static int str_eq(PyObject *a, PyObject *b) {
    if (a == b)
        return 1;
    if (!PyUnicode_Check(a) || !PyUnicode_Check(b) || !PyUnicode_IS_COMPACT_ASCII(a)
        || !PyUnicode_IS_COMPACT_ASCII(b))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    return n == PyUnicode_GET_LENGTH(b)
           && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n) == 0;
}

/* The str is the canonical hex quantity of `value` ("0x0", "0x1f"). */
static int is_hex_of(PyObject *o, Py_ssize_t value) {
    if (!PyUnicode_Check(o) || !PyUnicode_IS_COMPACT_ASCII(o))
        return 0;
    char want[32];
    int n = snprintf(want, sizeof want, "0x%zx", (size_t)value);
    return n == PyUnicode_GET_LENGTH(o) && memcmp(PyUnicode_DATA(o), want, (size_t)n) == 0;
}

/* A canonical hex quantity below 2^31 (an index), or -1. */
static Py_ssize_t index_of(PyObject *o) {
    Py_ssize_t n;
    if (!PyUnicode_Check(o) || !PyUnicode_IS_COMPACT_ASCII(o))
        return -1;
    n = PyUnicode_GET_LENGTH(o);
    const char *s = (const char *)PyUnicode_DATA(o);
    if (n < 3 || n > 10 || s[0] != '0' || s[1] != 'x' || (s[2] == '0' && n > 3))
        return -1;
    Py_ssize_t value = 0;
    for (Py_ssize_t i = 2; i < n; i++) {
        int d = HEX[(unsigned char)s[i]];
        if (!d || (s[i] >= 'A' && s[i] <= 'F'))
            return -1;
        value = value * 16 + (d - 1);
    }
    return value <= INT32_MAX ? value : -1;
}

/* Fetch the attributes `which` of `obj` into `out` (new references). */
static int get_attrs(PyObject *obj, const int *which, int count, PyObject **out) {
    for (int k = 0; k < count; k++) {
        out[k] = PyObject_GetAttr(obj, ATTRS[which[k]]);
        if (out[k] == NULL) {
            for (int j = 0; j < k; j++)
                Py_DECREF(out[j]);
            return -1;
        }
    }
    return 0;
}

static void drop_attrs(PyObject **values, int count) {
    for (int k = 0; k < count; k++)
        Py_DECREF(values[k]);
}

static const int TX_ATTRS[] = {A_BLOCK_HASH, A_BLOCK_NUMBER, A_TRANSACTION_INDEX, A_HASH,
                               A_FROM, A_TO, A_VALUE, A_NONCE, A_GAS, A_GAS_PRICE, A_INPUT,
                               A_TYPE};
#define TX_NATTRS ((int)(sizeof TX_ATTRS / sizeof TX_ATTRS[0]))

static int tx_row(Buf *b, const char *prefix, Py_ssize_t prefix_len, Py_ssize_t i, PyObject **v,
                  PyObject *block_hash, PyObject *block_number) {
    /* v: TX_ATTRS order */
    if (!str_eq(v[0], block_hash))
        return bad("blockHash", i, "names another block");
    if (!str_eq(v[1], block_number))
        return bad("blockNumber", i, "names another block");
    if (!is_hex_of(v[2], i))
        return bad("transactionIndex", i, "not the position in the block");
    uint32_t type_value = 0;
    if (v[11] != Py_None) {
        uint32_t limbs[8];
        if (parse_quantity(v[11], limbs, "type", i) < 0)
            return -1;
        for (int k = 1; k < 8; k++)
            if (limbs[k])
                limbs[0] = 0x10000;
        if (limbs[0] > 0x7fff)
            return bad("type", i, "out of range");
        type_value = limbs[0];
    }
    if (put_prefix(b, prefix, prefix_len) < 0 || put_int4(b, (uint32_t)i) < 0
        || put_hex(b, v[3], 32, "hash", i) < 0 || put_hex(b, v[4], 20, "from", i) < 0
        || (v[5] == Py_None ? put_null(b) : put_hex(b, v[5], 20, "to", i)) < 0
        || put_numeric(b, v[6], "value", i) < 0 || put_numeric(b, v[7], "nonce", i) < 0
        || put_numeric(b, v[8], "gas", i) < 0
        || (v[9] == Py_None ? put_null(b) : put_numeric(b, v[9], "gasPrice", i)) < 0
        || put_hex(b, v[10], -1, "input", i) < 0 || buf_reserve(b, 6) < 0)
        return -1;
    put_u32(b, 2);
    put_u16(b, (uint16_t)type_value);
    return 0;
}

static PyObject *tx_rows(PyObject *self, PyObject *args) {
    (void)self;
    const char *prefix;
    Py_ssize_t prefix_len;
    PyObject *txs, *block_hash, *block_number;
    if (!PyArg_ParseTuple(args, "y#O!UU", &prefix, &prefix_len, &PyList_Type, &txs, &block_hash,
                          &block_number))
        return NULL;
    Buf b = {NULL, 0, 0};
    int failed = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(txs) && !failed; i++) {
        PyObject *v[TX_NATTRS];
        if (get_attrs(PyList_GET_ITEM(txs, i), TX_ATTRS, TX_NATTRS, v) < 0) {
            failed = 1;
            break;
        }
        failed = tx_row(&b, prefix, prefix_len, i, v, block_hash, block_number) < 0;
        drop_attrs(v, TX_NATTRS);
    }
    return finish(&b, failed);
}

static const int LOG_ATTRS[] = {A_BLOCK_HASH, A_LOG_INDEX, A_TRANSACTION_INDEX,
                                A_TRANSACTION_HASH, A_ADDRESS, A_TOPICS, A_DATA, A_REMOVED};
#define LOG_NATTRS ((int)(sizeof LOG_ATTRS / sizeof LOG_ATTRS[0]))

static int log_row(Buf *b, const char *prefix, Py_ssize_t prefix_len, Py_ssize_t i, PyObject **v,
                   PyObject *block_hash, PyObject *tx_hashes) {
    /* v: LOG_ATTRS order */
    if (!str_eq(v[0], block_hash))
        return bad("blockHash", i, "names another block");
    if (!is_hex_of(v[1], i))
        return bad("logIndex", i, "not the position in the block");
    Py_ssize_t tx_index = index_of(v[2]);
    if (tx_index < 0 || tx_index >= PyList_GET_SIZE(tx_hashes))
        return bad("transactionIndex", i, "not a transaction of the block");
    if (!str_eq(v[3], PyList_GET_ITEM(tx_hashes, tx_index)))
        return bad("transactionHash", i, "not the hash of that transaction");
    if (v[7] != Py_False)
        return bad("removed", i, "not false");
    PyObject *topics = v[5];
    if (!PyList_Check(topics) || PyList_GET_SIZE(topics) > 4)
        return bad("topics", i, "not a list of at most 4 topics");
    Py_ssize_t ntopics = PyList_GET_SIZE(topics);
    if (put_prefix(b, prefix, prefix_len) < 0 || put_int4(b, (uint32_t)i) < 0
        || put_int4(b, (uint32_t)tx_index) < 0
        || put_hex(b, v[3], 32, "transactionHash", i) < 0
        || put_hex(b, v[4], 20, "address", i) < 0 || buf_reserve(b, 24) < 0)
        return -1;
    /* bytea[]: int32 ndim, has-null flag, element oid (bytea = 17), then per dimension
     * size and lower bound; an empty array has ndim 0 and no dimensions. */
    put_u32(b, (uint32_t)(ntopics ? 20 + 36 * ntopics : 12));
    put_u32(b, ntopics ? 1 : 0);
    put_u32(b, 0);
    put_u32(b, 17);
    if (ntopics) {
        put_u32(b, (uint32_t)ntopics);
        put_u32(b, 1);
    }
    for (Py_ssize_t k = 0; k < ntopics; k++)
        if (put_hex(b, PyList_GET_ITEM(topics, k), 32, "topics", i) < 0)
            return -1;
    return put_hex(b, v[6], -1, "data", i);
}

static PyObject *log_rows(PyObject *self, PyObject *args) {
    (void)self;
    const char *prefix;
    Py_ssize_t prefix_len;
    PyObject *logs, *block_hash, *tx_hashes;
    if (!PyArg_ParseTuple(args, "y#O!UO!", &prefix, &prefix_len, &PyList_Type, &logs,
                          &block_hash, &PyList_Type, &tx_hashes))
        return NULL;
    Buf b = {NULL, 0, 0};
    int failed = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(logs) && !failed; i++) {
        PyObject *v[LOG_NATTRS];
        if (get_attrs(PyList_GET_ITEM(logs, i), LOG_ATTRS, LOG_NATTRS, v) < 0) {
            failed = 1;
            break;
        }
        failed = log_row(&b, prefix, prefix_len, i, v, block_hash, tx_hashes) < 0;
        drop_attrs(v, LOG_NATTRS);
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

PyMODINIT_FUNC PyInit__rows(void) {
    for (int k = 0; k < A_COUNT; k++) {
        if (ATTRS[k] == NULL && (ATTRS[k] = PyUnicode_InternFromString(ATTR_NAMES[k])) == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
