/* Binary COPY rows from the hex strings of JSON-RPC answers, driven by a field table.
 *
 * The EVM fast path (indexer/chain/evm_rows.py) decodes a batch with msgspec into structs
 * whose fields hold the node's strings. A `FieldTable` is compiled once per stored table
 * (indexer/chain/fields.py builds it from the table's declaration in indexer/tables.py and
 * the source's decoding rules); its `rows` method walks a list of such structs and writes
 * each as a PostgreSQL binary COPY row (no header, no trailer):
 *
 *   FieldTable(ops) ; table.rows(prefix, items, block_hash, block_number, number,
 *                                tx_hashes, first_position, tx_index) -> bytes
 *
 * `ops` is a sequence of (kind, attribute, pg type, size, nullable, default zero, max
 * items, column label) tuples. Check ops compare a field with the block the items belong
 * to (`block_hash` and `block_number` as the block answer spells them) or with the item's
 * position, and write nothing; output ops write one field each, in table order, after
 * `prefix` (the field count and the `chain` field, from the store). The position of an
 * item is `first_position` + its index in `items`; with `tx_index` >= 0 every item's
 * transaction index must be that one (the logs of one receipt).
 *
 * Every output value is checked against its column: hex data is "0x" + an even number of
 * hex digits (exactly 2 * size for fixed sizes), a quantity "0x" + 1..64 hex digits that
 * fits the column type (int2/int4/int8 ranges, numeric at most 256 bits), lists at most
 * `max items` long. Anything else raises ValueError naming the column and the row, and
 * the caller falls back to the checked pure-Python path, which names the problem.
 */
#include "_buf.h"

/* Op kinds (kept in step with indexer/chain/fields.py). */
enum {
    K_CHECK_BLOCK_HASH = 1, /* the attribute is the block's hash, as spelled */
    K_CHECK_BLOCK_NUMBER = 2, /* the attribute is the block's number, as spelled */
    K_CHECK_POSITION = 3,     /* the attribute is the canonical hex of the position */
    K_CHECK_FALSE = 4,        /* the attribute is False */
    K_BLOCK_NUMBER = 10,      /* output: the block number */
    K_POSITION = 11,          /* output: the position */
    K_HEX = 12,               /* output: hex data */
    K_QUANTITY = 13,          /* output: a hex quantity */
    K_HEX_LIST = 14,          /* output: a list of hex data */
    K_TX_INDEX = 15,          /* output: an index into tx_hashes (kept for K_TX_HASH) */
    K_TX_HASH = 16,           /* output: the hash of the transaction at that index */
    K_TIMESTAMP = 17,         /* output: a hex quantity of unix seconds, as a timestamptz */
    K_COUNT = 18,             /* output: the length of a list */
    K_NULL = 19,              /* output: null (a column this source does not fill) */
    K_BOOL = 20,              /* output: a JSON boolean */
    K_HEX_JSON = 21,          /* output: a list of objects of hex strings, as jsonb */
};

/* Postgres types of output fields. */
enum {
    PG_INT2 = 1, PG_INT4 = 2, PG_INT8 = 3, PG_NUMERIC = 4, PG_BYTEA = 5, PG_BYTEA_ARRAY = 6,
    PG_TIMESTAMPTZ = 7, PG_BOOL = 8, PG_JSONB = 9,
};

/* The latest instant the checked path (Python's datetime) holds: 9999-12-31T23:59:59Z. */
#define MAX_TIMESTAMP_SECS 253402300799LL
#define PG_EPOCH_SECS 946684800LL /* 2000-01-01T00:00:00Z, Postgres's timestamp zero */

typedef struct {
    int kind;
    int pg;
    Py_ssize_t size;
    int nullable;
    int default_zero;
    Py_ssize_t max_items;
    PyObject *attr;  /* interned str, or NULL */
    PyObject *label; /* str, for messages */
    AttrCache cache; /* of attr */
} Op;

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


static int bad(const Op *op, Py_ssize_t row, const char *what) {
    PyErr_Format(PyExc_ValueError, "%U of row %zd: %s", op->label, row, what);
    return -1;
}

/* The digits after "0x" of an ASCII str, or NULL with ValueError set. */
static const char *hex_digits(PyObject *o, Py_ssize_t *n, const Op *op, Py_ssize_t row) {
    if (!PyUnicode_Check(o) || !PyUnicode_IS_COMPACT_ASCII(o)) {
        bad(op, row, "not an ASCII string");
        return NULL;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    const char *s = (const char *)PyUnicode_DATA(o);
    if (len < 2 || s[0] != '0' || s[1] != 'x') {
        bad(op, row, "no 0x prefix");
        return NULL;
    }
    *n = len - 2;
    return s + 2;
}

/* A bytea field: int32 length, then the bytes. size < 0: any whole number of bytes. */
static int put_hex(Buf *b, PyObject *o, Py_ssize_t size, const Op *op, Py_ssize_t row) {
    Py_ssize_t n;
    const char *s = hex_digits(o, &n, op, row);
    if (s == NULL)
        return -1;
    if (n & 1)
        return bad(op, row, "odd number of hex digits");
    if (size >= 0 && n != 2 * size)
        return bad(op, row, "wrong length");
    if (n / 2 > INT32_MAX)
        return bad(op, row, "too long");
    if (buf_reserve(b, 4 + n / 2) < 0)
        return -1;
    put_u32(b, (uint32_t)(n / 2));
    unsigned char *out = (unsigned char *)b->data + b->len;
    if (!hex_to_bytes((const unsigned char *)s, n / 2, out))
        return bad(op, row, "not hex");
    b->len += n / 2;
    return 0;
}

/* A quantity ("0x" + 1..64 hex digits) as 8 little-endian 32-bit limbs. */
static int parse_quantity(PyObject *o, uint32_t limbs[8], const Op *op, Py_ssize_t row) {
    Py_ssize_t n;
    const char *s = hex_digits(o, &n, op, row);
    if (s == NULL)
        return -1;
    if (n < 1 || n > 64)
        return bad(op, row, "not a quantity of 1 to 64 hex digits");
    memset(limbs, 0, 8 * sizeof(uint32_t));
    for (Py_ssize_t i = 0; i < n; i++) {
        int d = HEX[(unsigned char)s[n - 1 - i]];
        if (!d)
            return bad(op, row, "not hex");
        limbs[i / 8] |= (uint32_t)(d - 1) << (4 * (i % 8));
    }
    return 0;
}

/* numeric in binary: int16 ndigits, weight, sign, dscale, then base-10000 digits. */
static int put_signed_numeric(Buf *b, uint32_t limbs[8], int negative);

static int put_numeric(Buf *b, uint32_t limbs[8]) { return put_signed_numeric(b, limbs, 0); }

/* The magnitude in `limbs` (consumed), negative when `negative` (numeric's sign 0x4000). */
static int put_signed_numeric(Buf *b, uint32_t limbs[8], int negative) {
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
    put_u16(b, negative && ndigits ? 0x4000 : 0); /* sign */
    put_u16(b, 0); /* dscale */
    for (int i = ndigits - 1; i >= 0; i--)
        put_u16(b, digits[i]);
    return 0;
}

/* An integer column: the quantity must fit its signed range. */
static int put_int(Buf *b, uint32_t limbs[8], int pg, const Op *op, Py_ssize_t row) {
    for (int k = 2; k < 8; k++)
        if (limbs[k])
            return bad(op, row, "out of range");
    uint64_t v = ((uint64_t)limbs[1] << 32) | limbs[0];
    int width = pg == PG_INT2 ? 2 : pg == PG_INT4 ? 4 : 8;
    uint64_t max = width == 8 ? INT64_MAX : ((uint64_t)1 << (8 * width - 1)) - 1;
    if (v > max)
        return bad(op, row, "out of range");
    if (buf_reserve(b, 4 + width) < 0)
        return -1;
    put_u32(b, (uint32_t)width);
    for (int shift = 8 * (width - 1); shift >= 0; shift -= 8)
        b->data[b->len++] = (char)((v >> shift) & 0xff);
    return 0;
}

static int put_quantity(Buf *b, PyObject *o, const Op *op, Py_ssize_t row) {
    uint32_t limbs[8];
    if (parse_quantity(o, limbs, op, row) < 0)
        return -1;
    return op->pg == PG_NUMERIC ? put_numeric(b, limbs) : put_int(b, limbs, op->pg, op, row);
}

/* timestamptz in binary: int64 microseconds since 2000-01-01 UTC. */
static int put_timestamp(Buf *b, PyObject *o, const Op *op, Py_ssize_t row) {
    uint32_t limbs[8];
    if (parse_quantity(o, limbs, op, row) < 0)
        return -1;
    for (int k = 2; k < 8; k++)
        if (limbs[k])
            return bad(op, row, "out of range");
    uint64_t secs = ((uint64_t)limbs[1] << 32) | limbs[0];
    if (secs > (uint64_t)MAX_TIMESTAMP_SECS)
        return bad(op, row, "out of range");
    int64_t micros = ((int64_t)secs - PG_EPOCH_SECS) * 1000000;
    if (buf_reserve(b, 12) < 0)
        return -1;
    put_u32(b, 8);
    for (int shift = 56; shift >= 0; shift -= 8)
        b->data[b->len++] = (char)(((uint64_t)micros >> shift) & 0xff);
    return 0;
}

static int put_null(Buf *b) {
    if (buf_reserve(b, 4) < 0)
        return -1;
    put_u32(b, 0xffffffffu);
    return 0;
}

static int put_int_value(Buf *b, int pg, int64_t v) {
    int width = pg == PG_INT2 ? 2 : pg == PG_INT4 ? 4 : 8;
    if (buf_reserve(b, 4 + width) < 0)
        return -1;
    put_u32(b, (uint32_t)width);
    for (int shift = 8 * (width - 1); shift >= 0; shift -= 8)
        b->data[b->len++] = (char)(((uint64_t)v >> shift) & 0xff);
    return 0;
}

/* bytea[]: int32 ndim, has-null flag, element oid (bytea = 17), then per dimension size
 * and lower bound; an empty array has ndim 0 and no dimensions. */
static int put_hex_list(Buf *b, PyObject *list, const Op *op, Py_ssize_t row) {
    if (!PyList_Check(list) || PyList_GET_SIZE(list) > op->max_items)
        return bad(op, row, "not a list of at most the allowed items");
    Py_ssize_t count = PyList_GET_SIZE(list);
    if (op->size < 0)
        return bad(op, row, "list items need a fixed size");
    if (buf_reserve(b, 24) < 0)
        return -1;
    put_u32(b, (uint32_t)(count ? 20 + (4 + op->size) * count : 12));
    put_u32(b, count ? 1 : 0);
    put_u32(b, 0);
    put_u32(b, 17);
    if (count) {
        put_u32(b, (uint32_t)count);
        put_u32(b, 1);
    }
    for (Py_ssize_t k = 0; k < count; k++)
        if (put_hex(b, PyList_GET_ITEM(list, k), op->size, op, row) < 0)
            return -1;
    return 0;
}

/* One hex string of a JSON object: "0x" + hex digits, written lowercase and quoted. */
static int put_json_hex(Buf *b, PyObject *o, const Op *op, Py_ssize_t row) {
    Py_ssize_t n;
    const char *s = hex_digits(o, &n, op, row);
    if (s == NULL)
        return -1;
    if (buf_reserve(b, n + 4) < 0)
        return -1;
    b->data[b->len++] = '"';
    b->data[b->len++] = '0';
    b->data[b->len++] = 'x';
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (!HEX[(unsigned char)c])
            return bad(op, row, "not hex");
        b->data[b->len++] = (char)(c >= 'A' && c <= 'F' ? c + 32 : c);
    }
    b->data[b->len++] = '"';
    return 0;
}

static int put_byte(Buf *b, char c) {
    if (buf_reserve(b, 1) < 0)
        return -1;
    b->data[b->len++] = c;
    return 0;
}

/* jsonb in binary: version 1, then the JSON text. The value is a list of objects whose keys
 * are ASCII letters and whose values are hex strings or lists of them (access lists,
 * authorization lists); written compact, keys in the order given, hex lowercase. */
static int put_hex_json(Buf *b, PyObject *list, const Op *op, Py_ssize_t row) {
    if (!PyList_Check(list))
        return bad(op, row, "not a list");
    if (buf_reserve(b, 5) < 0)
        return -1;
    Py_ssize_t len_at = b->len;
    b->len += 4; /* the field length, filled in at the end */
    b->data[b->len++] = 1;
    if (put_byte(b, '[') < 0)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *obj = PyList_GET_ITEM(list, i);
        if (!PyDict_Check(obj))
            return bad(op, row, "an item is not an object");
        if ((i && put_byte(b, ',') < 0) || put_byte(b, '{') < 0)
            return -1;
        Py_ssize_t pos = 0, k = 0;
        PyObject *key, *value;
        while (PyDict_Next(obj, &pos, &key, &value)) {
            if (!PyUnicode_Check(key) || !PyUnicode_IS_COMPACT_ASCII(key))
                return bad(op, row, "a key is not ASCII");
            Py_ssize_t klen = PyUnicode_GET_LENGTH(key);
            const char *ks = (const char *)PyUnicode_DATA(key);
            if (klen < 1 || klen > 64)
                return bad(op, row, "a key is not 1 to 64 letters");
            for (Py_ssize_t j = 0; j < klen; j++)
                if (!((ks[j] >= 'a' && ks[j] <= 'z') || (ks[j] >= 'A' && ks[j] <= 'Z')))
                    return bad(op, row, "a key is not letters");
            if ((k++ && put_byte(b, ',') < 0) || buf_reserve(b, klen + 3) < 0)
                return -1;
            b->data[b->len++] = '"';
            memcpy(b->data + b->len, ks, (size_t)klen);
            b->len += klen;
            b->data[b->len++] = '"';
            b->data[b->len++] = ':';
            if (PyList_Check(value)) {
                if (put_byte(b, '[') < 0)
                    return -1;
                for (Py_ssize_t j = 0; j < PyList_GET_SIZE(value); j++)
                    if ((j && put_byte(b, ',') < 0)
                        || put_json_hex(b, PyList_GET_ITEM(value, j), op, row) < 0)
                        return -1;
                if (put_byte(b, ']') < 0)
                    return -1;
            } else if (put_json_hex(b, value, op, row) < 0) {
                return -1;
            }
        }
        if (put_byte(b, '}') < 0)
            return -1;
    }
    if (put_byte(b, ']') < 0)
        return -1;
    Py_ssize_t field = b->len - len_at - 4;
    if (field > INT32_MAX)
        return bad(op, row, "too long");
    Py_ssize_t end = b->len;
    b->len = len_at;
    put_u32(b, (uint32_t)field);
    b->len = end;
    return 0;
}

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

/* -- FieldTable */

typedef struct {
    PyObject_HEAD
    Py_ssize_t nops;
    Op *ops;
    AttrCache parent_cache; /* nested_rows: the parents' attribute holding the items */
} FieldTable;

typedef struct {
    PyObject *block_hash;
    PyObject *block_number;
    int64_t number;
    PyObject *tx_hashes; /* list, or NULL */
    Py_ssize_t tx_index; /* the transaction every item must name (>= 0), or -1 */
} Context;

static void table_dealloc(FieldTable *self) {
    for (Py_ssize_t k = 0; k < self->nops; k++) {
        Py_XDECREF(self->ops[k].attr);
        Py_XDECREF(self->ops[k].label);
        attr_cache_clear(&self->ops[k].cache);
    }
    PyMem_Free(self->ops);
    attr_cache_clear(&self->parent_cache);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *table_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *spec;
    static char *kwlist[] = {"ops", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &spec))
        return NULL;
    PyObject *seq = PySequence_Fast(spec, "ops must be a sequence");
    if (seq == NULL)
        return NULL;
    FieldTable *self = (FieldTable *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    self->ops = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Op));
    if (self->ops == NULL) {
        Py_DECREF(seq);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        Op *op = &self->ops[k];
        PyObject *attr = NULL, *label = NULL;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, k), "iOinppnU", &op->kind, &attr,
                              &op->pg, &op->size, &op->nullable, &op->default_zero,
                              &op->max_items, &label)) {
            Py_DECREF(seq);
            Py_DECREF(self);
            return NULL;
        }
        self->nops = k + 1;
        Py_INCREF(label);
        op->label = label;
        if (attr != Py_None) {
            if (!PyUnicode_Check(attr)) {
                PyErr_SetString(PyExc_TypeError, "an op's attribute must be a str or None");
                Py_DECREF(seq);
                Py_DECREF(self);
                return NULL;
            }
            Py_INCREF(attr);
            PyUnicode_InternInPlace(&attr);
            op->attr = attr;
        }
    }
    Py_DECREF(seq);
    return (PyObject *)self;
}

/* One item as one row; `tx_index` is the register K_TX_INDEX sets for K_TX_HASH. */
static int encode_item(Buf *b, FieldTable *t, PyObject *item, Py_ssize_t position,
                       const Context *ctx) {
    Py_ssize_t tx_index = position;
    for (Py_ssize_t k = 0; k < t->nops; k++) {
        Op *op = &t->ops[k];
        PyObject *v = NULL;
        if (op->attr != NULL && (v = cached_getattr(item, op->attr, &op->cache)) == NULL)
            return -1;
        int failed = 0;
        switch (op->kind) {
        case K_CHECK_BLOCK_HASH:
            failed = !str_eq(v, ctx->block_hash) ? bad(op, position, "names another block") : 0;
            break;
        case K_CHECK_BLOCK_NUMBER:
            failed = !str_eq(v, ctx->block_number) ? bad(op, position, "names another block")
                                                   : 0;
            break;
        case K_CHECK_POSITION:
            failed = !is_hex_of(v, position) ? bad(op, position, "not the position in the block")
                                             : 0;
            break;
        case K_CHECK_FALSE:
            failed = v != Py_False ? bad(op, position, "not false") : 0;
            break;
        case K_BLOCK_NUMBER:
            failed = put_int_value(b, op->pg, ctx->number);
            break;
        case K_POSITION:
            failed = put_int_value(b, op->pg, position);
            break;
        case K_HEX:
            failed = v == Py_None ? (op->nullable ? put_null(b) : bad(op, position, "missing"))
                                  : put_hex(b, v, op->size, op, position);
            break;
        case K_QUANTITY:
            if (v == Py_None) {
                if (op->default_zero)
                    failed = put_int_value(b, op->pg, 0);
                else
                    failed = op->nullable ? put_null(b) : bad(op, position, "missing");
            } else {
                failed = put_quantity(b, v, op, position);
            }
            break;
        case K_HEX_LIST:
            failed = v == Py_None ? (op->nullable ? put_null(b) : bad(op, position, "missing"))
                                  : put_hex_list(b, v, op, position);
            break;
        case K_TIMESTAMP:
            failed = v == Py_None ? (op->nullable ? put_null(b) : bad(op, position, "missing"))
                                  : put_timestamp(b, v, op, position);
            break;
        case K_COUNT:
            failed = !PyList_Check(v) ? bad(op, position, "not a list")
                                      : put_int_value(b, op->pg, PyList_GET_SIZE(v));
            break;
        case K_NULL:
            failed = put_null(b);
            break;
        case K_BOOL:
            if (v == Py_None)
                failed = op->nullable ? put_null(b) : bad(op, position, "missing");
            else if (v != Py_True && v != Py_False)
                failed = bad(op, position, "not a boolean");
            else if (buf_reserve(b, 5) < 0)
                failed = -1;
            else {
                put_u32(b, 1);
                b->data[b->len++] = v == Py_True ? 1 : 0;
            }
            break;
        case K_HEX_JSON:
            failed = v == Py_None ? (op->nullable ? put_null(b) : bad(op, position, "missing"))
                                  : put_hex_json(b, v, op, position);
            break;
        case K_TX_INDEX:
            tx_index = index_of(v);
            if (ctx->tx_hashes == NULL || tx_index < 0
                || tx_index >= PyList_GET_SIZE(ctx->tx_hashes))
                failed = bad(op, position, "not a transaction of the block");
            else if (ctx->tx_index >= 0 && tx_index != ctx->tx_index)
                failed = bad(op, position, "not the transaction of its receipt");
            else
                failed = put_int_value(b, op->pg, tx_index);
            break;
        case K_TX_HASH:
            if (ctx->tx_hashes == NULL || tx_index < 0
                || tx_index >= PyList_GET_SIZE(ctx->tx_hashes)
                || !str_eq(v, PyList_GET_ITEM(ctx->tx_hashes, tx_index)))
                failed = bad(op, position, "not the hash of that transaction");
            else
                failed = put_hex(b, v, 32, op, position);
            break;
        default:
            PyErr_Format(PyExc_ValueError, "unknown op kind %d", op->kind);
            failed = -1;
        }
        Py_XDECREF(v);
        if (failed)
            return -1;
    }
    return 0;
}

/* The context's transaction hashes: a list, or None (-1 with TypeError otherwise). */
static int set_tx_hashes(Context *ctx, PyObject *tx_hashes) {
    if (tx_hashes != Py_None && !PyList_Check(tx_hashes)) {
        PyErr_SetString(PyExc_TypeError, "tx_hashes must be a list or None");
        return -1;
    }
    ctx->tx_hashes = tx_hashes == Py_None ? NULL : tx_hashes;
    return 0;
}

/* Each of `items` as a row (the prefix, then its fields), numbered from `first`. */
static int encode_items(Buf *b, FieldTable *t, PyObject *items, Py_ssize_t first,
                        const char *prefix, Py_ssize_t prefix_len, const Context *ctx) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        if (buf_reserve(b, prefix_len) < 0)
            return -1;
        memcpy(b->data + b->len, prefix, (size_t)prefix_len);
        b->len += prefix_len;
        if (encode_item(b, t, PyList_GET_ITEM(items, i), first + i, ctx) < 0)
            return -1;
    }
    return 0;
}

static PyObject *table_rows(FieldTable *self, PyObject *args) {
    const char *prefix;
    Py_ssize_t prefix_len, first = 0;
    PyObject *items, *tx_hashes;
    long long number;
    Context ctx;
    ctx.tx_index = -1;
    if (!PyArg_ParseTuple(args, "y#O!UULO|nn", &prefix, &prefix_len, &PyList_Type, &items,
                          &ctx.block_hash, &ctx.block_number, &number, &tx_hashes, &first,
                          &ctx.tx_index))
        return NULL;
    if (set_tx_hashes(&ctx, tx_hashes) < 0)
        return NULL;
    ctx.number = number;
    Buf b = {NULL, 0, 0};
    int failed = encode_items(&b, self, items, first, prefix, prefix_len, &ctx) < 0;
    PyObject *out = failed ? NULL : PyBytes_FromStringAndSize(b.data ? b.data : "", b.len);
    buf_free(&b);
    return out;
}

/* The items held by each parent's `attr` (a block's receipts' logs), as rows numbered on
 * through the block, each naming its parent's index as its transaction: (rows, how many,
 * how many of the first `counted` parents'). A parent whose attribute is None or empty has
 * none. */
static PyObject *table_nested_rows(FieldTable *self, PyObject *args) {
    const char *prefix;
    Py_ssize_t prefix_len, counted;
    PyObject *parents, *attr, *tx_hashes;
    long long number;
    Context ctx;
    if (!PyArg_ParseTuple(args, "y#O!UUULOn", &prefix, &prefix_len, &PyList_Type, &parents,
                          &attr, &ctx.block_hash, &ctx.block_number, &number, &tx_hashes,
                          &counted))
        return NULL;
    if (set_tx_hashes(&ctx, tx_hashes) < 0)
        return NULL;
    ctx.number = number;
    Buf b = {NULL, 0, 0};
    Py_ssize_t position = 0, in_counted = 0;
    int failed = 0;
    for (Py_ssize_t p = 0; p < PyList_GET_SIZE(parents) && !failed; p++) {
        PyObject *items = cached_getattr(PyList_GET_ITEM(parents, p), attr, &self->parent_cache);
        if (items == NULL) {
            failed = 1;
            break;
        }
        if (items != Py_None && !PyList_Check(items)) {
            Py_DECREF(items);
            PyErr_SetString(PyExc_TypeError, "nested_rows: the items must be a list or None");
            failed = 1;
            break;
        }
        Py_ssize_t n = items == Py_None ? 0 : PyList_GET_SIZE(items);
        ctx.tx_index = p;
        failed = n && encode_items(&b, self, items, position, prefix, prefix_len, &ctx) < 0;
        Py_DECREF(items);
        position += n;
        in_counted += p < counted ? n : 0;
    }
    PyObject *out = failed ? NULL
                           : Py_BuildValue("(y#nn)", b.data ? b.data : "", b.len, position,
                                           in_counted);
    buf_free(&b);
    return out;
}

static PyMethodDef table_methods[] = {
    {"rows", (PyCFunction)table_rows, METH_VARARGS,
     "rows(prefix, items, block_hash, block_number, number, tx_hashes, first_position=0,"
     " tx_index=-1)"
     " -> bytes: the items as binary COPY rows."},
    {"nested_rows", (PyCFunction)table_nested_rows, METH_VARARGS,
     "nested_rows(prefix, parents, attr, block_hash, block_number, number, tx_hashes, counted)"
     " -> (bytes, count, count of the first `counted` parents): the items of each parent's"
     " attr as binary COPY rows, each naming its parent's index as tx_index."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FieldTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "indexer._rows.FieldTable",
    .tp_basicsize = sizeof(FieldTable),
    .tp_dealloc = (destructor)table_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A compiled field table: items -> binary COPY rows.",
    .tp_methods = table_methods,
    .tp_new = table_new,
};

/* -- plain_json: what the fast path may skip unread ---------------------------------------
 *
 * msgspec skips the fields a struct does not name without looking at every byte: it does
 * not check UTF-8 inside their strings, nor whether their numbers fit a double, which the
 * checked path's parser (orjson) refuses. A body goes to the fast path only if it is valid
 * UTF-8 throughout and its numbers are short and plain (at most 20 characters, no exponent:
 * always finite); anything else is left to the checked path. Strings are skipped 8 bytes at
 * a time while they hold no quote, backslash or non-ASCII byte. */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define HAS_ZERO(v) (((v) - ONES) & ~(v) & HIGHS)

/* The length of the UTF-8 sequence at p (RFC 3629: no overlong forms, no surrogates, at
 * most U+10FFFF), or 0 if it is not one. */
static Py_ssize_t utf8_sequence(const unsigned char *p, Py_ssize_t left) {
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    Py_ssize_t len;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (left < len || p[1] < lo || p[1] > hi)
        return 0;
    for (Py_ssize_t k = 2; k < len; k++)
        if (p[k] < 0x80 || p[k] > 0xBF)
            return 0;
    return len;
}

static int is_plain_json(const unsigned char *p, Py_ssize_t n) {
    const uint64_t quotes = ONES * '"', backslashes = ONES * '\\';
    Py_ssize_t i = 0;
    int in_string = 0;
    int avx2 = have_avx2();
    while (i < n) {
        if (in_string) {
            if (avx2)
                i = string_run_avx2(p, n, i, 1);
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if ((w & HIGHS) || HAS_ZERO(w ^ quotes) || HAS_ZERO(w ^ backslashes))
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            unsigned char c = p[i];
            if (c == '"') {
                in_string = 0;
                i++;
            } else if (c == '\\') {
                i += 2; /* an escape: msgspec checks what follows */
            } else if (c < 0x80) {
                i++;
            } else {
                Py_ssize_t len = utf8_sequence(p + i, n - i);
                if (len == 0)
                    return 0;
                i += len;
            }
            continue;
        }
        unsigned char c = p[i];
        if (c == '"') {
            in_string = 1;
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            Py_ssize_t end = i;
            while (end < n && ((p[end] >= '0' && p[end] <= '9') || p[end] == '-' ||
                               p[end] == '+' || p[end] == '.' || p[end] == 'e' || p[end] == 'E')) {
                if (p[end] == 'e' || p[end] == 'E')
                    return 0;
                end++;
            }
            if (end - i > 20)
                return 0;
            i = end;
        } else if (c >= 0x80) {
            return 0;
        } else {
            i++;
        }
    }
    return 1;
}

static PyObject *plain_json(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int plain;
    Py_BEGIN_ALLOW_THREADS
    plain = is_plain_json((const unsigned char *)view.buf, view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyBool_FromLong(plain);
}

/* -- copy_into: an answer's chunk into its buffer, off the GIL ------------------------------
 *
 * An answer is read into one buffer made to its announced size (indexer/chain/rpc.py). Its
 * pages are new, so copying a chunk in is mostly page faults (~40 ms for a 66 MB batch
 * here): done with the GIL released, the decode thread runs meanwhile. The buffer export
 * keeps the bytearray from being resized while it is released. */

/* A bytearray of `size` bytes, not zeroed (bytearray(size) writes every byte with the GIL
 * held, i.e. takes all its page faults there): each byte is written by copy_into before
 * anything reads it. */
static PyObject *new_buffer(PyObject *module, PyObject *arg) {
    (void)module;
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "new_buffer: negative size");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, size);
}

/* `buffer` made `size` bytes long without writing any (PyByteArray_Resize: within what it
 * has allocated, and at least half of it, nothing moves), for a kept read buffer reused for
 * the next answer, every byte of which copy_into writes before anything reads it. */
static PyObject *resize_buffer(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *buffer;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "O!n:resize_buffer", &PyByteArray_Type, &buffer, &size))
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "resize_buffer: negative size");
        return NULL;
    }
    if (PyByteArray_Resize(buffer, size) < 0) /* BufferError while a view of it exists */
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *copy_into(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer dst, src;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "w*ny*:copy_into", &dst, &offset, &src))
        return NULL;
    PyObject *out = NULL;
    if (offset < 0 || offset > dst.len || src.len > dst.len - offset) {
        PyErr_SetString(PyExc_ValueError, "copy_into: the chunk does not fit the buffer");
    } else {
        Py_BEGIN_ALLOW_THREADS
        memcpy((char *)dst.buf + offset, src.buf, (size_t)src.len);
        Py_END_ALLOW_THREADS
        out = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    return out;
}

/* -- batch_results: where each result of a JSON-RPC batch answer is ---------------------
 *
 * The fast path decodes each result of a batch on its own. msgspec finds them by decoding
 * the whole answer as a list of items with raw results, a pass over every byte (66 MB for
 * 100 full mainnet blocks) with the GIL held. This finds them with the GIL released, for
 * the shape nodes send: a top-level array of objects, each with "id" (a non-negative
 * integer), "result" (any value) and optionally "jsonrpc": "2.0", in any order, once each,
 * with JSON whitespace between tokens. Anything else (an "error" member, another key, an
 * escape in a key, a duplicate) gives None and the caller decodes the answer as before. It
 * only locates values: each result's bytes are then decoded by msgspec, which checks their
 * syntax, so the whole answer is accepted only if it is a JSON array of such objects.
 * In the same pass it checks what plain_json checks (valid UTF-8 in strings, no non-ASCII
 * byte outside them, numbers of at most 20 characters without an exponent): False when the
 * answer has that shape but is not plain, so the caller need not read it a second time. */

typedef struct {
    long long id;
    Py_ssize_t start, end;
} Span;

static Py_ssize_t skip_ws(const unsigned char *p, Py_ssize_t n, Py_ssize_t i) {
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* The end of the string starting at p[i] == '"' (just past its closing quote), or -1.
 * Clears *plain at a byte that is not valid UTF-8 (escapes are msgspec's to check). */
static Py_ssize_t skip_string(const unsigned char *p, Py_ssize_t n, Py_ssize_t i, int *plain) {
    const uint64_t quotes = ONES * '"', backslashes = ONES * '\\';
    i++;
    int avx2 = have_avx2();
    for (;;) {
        if (avx2)
            i = string_run_avx2(p, n, i, 1);
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if ((w & HIGHS) || HAS_ZERO(w ^ quotes) || HAS_ZERO(w ^ backslashes))
                break;
            i += 8;
        }
        if (i >= n)
            return -1;
        unsigned char c = p[i];
        if (c == '"')
            return i + 1;
        if (c == '\\') {
            i += 2;
        } else if (c < 0x80) {
            i++;
        } else {
            Py_ssize_t len = utf8_sequence(p + i, n - i);
            if (len == 0) {
                *plain = 0;
                len = 1;
            }
            i += len;
        }
    }
}

/* The end of the value starting at p[i] (nesting counted outside strings), or -1. Clears
 * *plain as plain_json would refuse (see skip_string; outside strings: a non-ASCII byte,
 * a number of more than 20 characters or with an exponent). */
static Py_ssize_t skip_value(const unsigned char *p, Py_ssize_t n, Py_ssize_t i, int *plain) {
    Py_ssize_t depth = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"') {
            if ((i = skip_string(p, n, i, plain)) < 0)
                return -1;
        } else if (c == '{' || c == '[') {
            depth++;
            i++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return i; /* the enclosing object's */
            depth--;
            i++;
        } else if (c == ',' && depth == 0) {
            return i;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            Py_ssize_t end = i;
            while (end < n && ((p[end] >= '0' && p[end] <= '9') || p[end] == '-' ||
                               p[end] == '+' || p[end] == '.' || p[end] == 'e' || p[end] == 'E')) {
                if (p[end] == 'e' || p[end] == 'E')
                    *plain = 0;
                end++;
            }
            if (end - i > 20)
                *plain = 0;
            i = end;
        } else {
            if (c >= 0x80)
                *plain = 0;
            i++;
        }
        if (depth == 0 && (c == '}' || c == ']' || c == '"'))
            return i; /* a whole object, array or string */
    }
    return depth == 0 ? i : -1;
}

/* -1 when not the shape above; else the number of spans written. */
static Py_ssize_t split_batch(const unsigned char *p, Py_ssize_t n, Span **spans, int *plain) {
    Py_ssize_t cap = 0, count = 0, i = skip_ws(p, n, 0);
    if (i >= n || p[i] != '[')
        return -1;
    i = skip_ws(p, n, i + 1);
    if (i < n && p[i] == ']')
        return skip_ws(p, n, i + 1) == n ? 0 : -1;
    for (;;) {
        if (i >= n || p[i] != '{')
            return -1;
        int seen_id = 0, seen_result = 0, seen_version = 0;
        Span span = {0, 0, 0};
        i++;
        for (;;) {
            i = skip_ws(p, n, i);
            if (i >= n || p[i] != '"')
                return -1;
            Py_ssize_t key = i + 1, key_end = skip_string(p, n, i, plain);
            if (key_end < 0)
                return -1;
            Py_ssize_t key_len = key_end - 1 - key;
            i = skip_ws(p, n, key_end);
            if (i >= n || p[i] != ':')
                return -1;
            i = skip_ws(p, n, i + 1);
            if (key_len == 2 && memcmp(p + key, "id", 2) == 0 && !seen_id) {
                seen_id = 1;
                Py_ssize_t digits = 0;
                long long id = 0;
                while (i < n && p[i] >= '0' && p[i] <= '9' && digits < 18) {
                    id = id * 10 + (p[i] - '0');
                    i++;
                    digits++;
                }
                if (digits == 0 || (digits > 1 && p[i - digits] == '0')
                    || (i < n && p[i] >= '0' && p[i] <= '9'))
                    return -1;
                span.id = id;
            } else if (key_len == 6 && memcmp(p + key, "result", 6) == 0 && !seen_result) {
                seen_result = 1;
                span.start = i;
                if ((i = skip_value(p, n, i, plain)) < 0 || i == span.start)
                    return -1;
                span.end = i;
                while (span.end > span.start && (p[span.end - 1] == ' ' || p[span.end - 1] == '\t'
                                                 || p[span.end - 1] == '\n'
                                                 || p[span.end - 1] == '\r'))
                    span.end--;
            } else if (key_len == 7 && memcmp(p + key, "jsonrpc", 7) == 0 && !seen_version) {
                seen_version = 1;
                if (n - i < 5 || memcmp(p + i, "\"2.0\"", 5) != 0)
                    return -1;
                i += 5;
            } else {
                return -1; /* "error", another key, an escaped key, a duplicate */
            }
            i = skip_ws(p, n, i);
            if (i < n && p[i] == ',') {
                i++;
                continue;
            }
            if (i < n && p[i] == '}')
                break;
            return -1;
        }
        if (!seen_id || !seen_result)
            return -1;
        if (count == cap) {
            cap = cap ? 2 * cap : 256;
            Span *grown = PyMem_RawRealloc(*spans, (size_t)cap * sizeof(Span));
            if (grown == NULL)
                return -2;
            *spans = grown;
        }
        (*spans)[count++] = span;
        i = skip_ws(p, n, i + 1);
        if (i < n && p[i] == ',') {
            i = skip_ws(p, n, i + 1);
            continue;
        }
        if (i < n && p[i] == ']')
            return skip_ws(p, n, i + 1) == n ? count : -1;
        return -1;
    }
}

static PyObject *batch_results(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Span *spans = NULL;
    Py_ssize_t count;
    int plain = 1;
    Py_BEGIN_ALLOW_THREADS
    count = split_batch((const unsigned char *)view.buf, view.len, &spans, &plain);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *out = NULL;
    if (count == -2) {
        PyErr_NoMemory();
    } else if (count < 0) {
        out = Py_NewRef(Py_None);
    } else if (!plain) {
        out = Py_NewRef(Py_False);
    } else if ((out = PyList_New(count)) != NULL) {
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *item = Py_BuildValue("(Lnn)", spans[k].id, spans[k].start, spans[k].end);
            if (item == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, k, item);
        }
    }
    PyMem_RawFree(spans);
    return out;
}

/* -- log_rows: the logs of binary COPY rows, back as values ------------------------------
 *
 * Event tables are decoded from a block's logs, which the fast path holds as binary COPY
 * rows of `logs` (indexer/tables.py: chain int2, block_number int8, log_index int4,
 * tx_index int4, tx_hash bytea, address bytea, topics bytea[], data bytea). This reads them
 * back, keeping only the logs whose first topic is in `topic0s` (a set of bytes; None:
 * every log): tuples (block_number, log_index, tx_index, tx_hash, address, topics, data),
 * topics a tuple of bytes. Rows that are not such rows raise ValueError. */

typedef struct {
    const unsigned char *p;
    Py_ssize_t left;
} Reader;

static int rd_bytes(Reader *r, Py_ssize_t n, const unsigned char **out) {
    if (n < 0 || r->left < n)
        return -1;
    *out = r->p;
    r->p += n;
    r->left -= n;
    return 0;
}

static int rd_i32(Reader *r, int32_t *out) {
    const unsigned char *b;
    if (rd_bytes(r, 4, &b) < 0)
        return -1;
    *out = (int32_t)(((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8)
                     | b[3]);
    return 0;
}

static int rd_int_field(Reader *r, int size, int64_t *out) {
    int32_t len;
    const unsigned char *b;
    if (rd_i32(r, &len) < 0 || len != size || rd_bytes(r, size, &b) < 0)
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < size; i++)
        v = (v << 8) | b[i];
    if (size < 8 && (v >> (8 * size - 1)) & 1) /* sign-extend */
        v |= ~(uint64_t)0 << (8 * size);
    *out = (int64_t)v;
    return 0;
}

static int rd_bytea_field(Reader *r, const unsigned char **out, Py_ssize_t *len) {
    int32_t n;
    if (rd_i32(r, &n) < 0 || n < 0 || rd_bytes(r, n, out) < 0)
        return -1;
    *len = n;
    return 0;
}

/* One row of `logs`, its fields pointing into the rows read. */
typedef struct {
    const unsigned char *fixed; /* chain .. address, as they are in the row */
    Py_ssize_t fixed_len;
    int64_t chain, number, log_index, tx_index;
    const unsigned char *tx_hash, *address, *data, *topic[4];
    Py_ssize_t tx_hash_len, address_len, data_len, topic_len[4];
    int32_t ntopics;
} LogRow;

/* The next row of `logs` (chain int2, block_number int8, log_index int4, tx_index int4,
 * tx_hash bytea, address bytea, topics bytea[], data bytea); -1 if it is not one. No
 * Python API: event_rows runs it with the GIL released. */
static int read_log_row(Reader *r, LogRow *row) {
    const unsigned char *b;
    int32_t arr_len, ndim, has_null, oid, lower;
    if (rd_bytes(r, 2, &b) < 0 || b[0] != 0 || b[1] != 8)
        return -1;
    row->fixed = r->p;
    if (rd_int_field(r, 2, &row->chain) < 0 || rd_int_field(r, 8, &row->number) < 0
        || rd_int_field(r, 4, &row->log_index) < 0 || rd_int_field(r, 4, &row->tx_index) < 0
        || rd_bytea_field(r, &row->tx_hash, &row->tx_hash_len) < 0
        || rd_bytea_field(r, &row->address, &row->address_len) < 0)
        return -1;
    row->fixed_len = r->p - row->fixed;
    /* topics: a one-dimensional bytea[] (or an empty array) */
    if (rd_i32(r, &arr_len) < 0 || arr_len < 12 || r->left < arr_len)
        return -1;
    Reader arr = {r->p, arr_len};
    r->p += arr_len;
    r->left -= arr_len;
    row->ntopics = 0;
    if (rd_i32(&arr, &ndim) < 0 || rd_i32(&arr, &has_null) < 0 || rd_i32(&arr, &oid) < 0
        || has_null != 0 || oid != 17 || (ndim != 0 && ndim != 1))
        return -1;
    if (ndim == 1 && (rd_i32(&arr, &row->ntopics) < 0 || rd_i32(&arr, &lower) < 0
                      || row->ntopics < 0 || row->ntopics > 4))
        return -1;
    for (int32_t k = 0; k < row->ntopics; k++)
        if (rd_bytea_field(&arr, &row->topic[k], &row->topic_len[k]) < 0)
            return -1;
    if (arr.left != 0 || rd_bytea_field(r, &row->data, &row->data_len) < 0)
        return -1;
    return 0;
}

static PyObject *log_rows(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer view;
    PyObject *topic0s;
    if (!PyArg_ParseTuple(args, "y*O:log_rows", &view, &topic0s))
        return NULL;
    if (topic0s != Py_None && !PyAnySet_Check(topic0s)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "log_rows: topic0s must be a set or None");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Reader r = {(const unsigned char *)view.buf, view.len};
    while (r.left > 0) {
        LogRow row;
        if (read_log_row(&r, &row) < 0)
            goto bad;
        int32_t count = row.ntopics;
        const unsigned char **topic = row.topic;
        const Py_ssize_t *topic_len = row.topic_len;
        if (topic0s != Py_None) {
            if (count == 0)
                continue;
            PyObject *first = PyBytes_FromStringAndSize((const char *)topic[0], topic_len[0]);
            if (first == NULL)
                goto fail;
            int found = PySet_Contains(topic0s, first);
            Py_DECREF(first);
            if (found < 0)
                goto fail;
            if (!found)
                continue;
        }
        PyObject *topics = PyTuple_New(count);
        if (topics == NULL)
            goto fail;
        for (int32_t k = 0; k < count; k++) {
            PyObject *t = PyBytes_FromStringAndSize((const char *)topic[k], topic_len[k]);
            if (t == NULL) {
                Py_DECREF(topics);
                goto fail;
            }
            PyTuple_SET_ITEM(topics, k, t);
        }
        PyObject *item = Py_BuildValue(
            "(LLLy#y#Ny#)", (long long)row.number, (long long)row.log_index,
            (long long)row.tx_index, (const char *)row.tx_hash, row.tx_hash_len,
            (const char *)row.address, row.address_len, topics, (const char *)row.data,
            row.data_len);
        if (item == NULL)
            goto fail;
        int appended = PyList_Append(out, item);
        Py_DECREF(item);
        if (appended < 0)
            goto fail;
    }
    PyBuffer_Release(&view);
    return out;
bad:
    PyErr_SetString(PyExc_ValueError, "log_rows: not binary COPY rows of the logs table");
fail:
    Py_DECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

/* -- event_rows: an event table's rows straight from the logs' COPY rows -----------------
 *
 * For events whose parameters are all static value types (address, uintN, intN, bool,
 * bytesN, function) or indexed reference types (their topic, raw): the logs this table
 * takes (topic0, or the topic count of an anonymous event; the contract, if the table names
 * addresses), each decoded by the rules of indexer/events/decoder.py (eth-abi's strict
 * decoding: 32-byte topics, data exactly the head, every word padded as its type requires)
 * and written as the table's binary COPY rows: chain, block_number, log_index, tx_index,
 * tx_hash, address copied from the log's row, then one field per parameter. A log that has
 * the topic but does not decode is skipped and its (block number, log index) returned. No
 * Python object is made per log, and the loop runs with the GIL released:
 * indexer/events/matcher.py uses it for the tables it can describe (`spec`), live and in
 * the backfill (the stored logs read as binary COPY rows), the generated Python decoder for
 * the others, and a property test holds the two equal. */

enum { EV_ADDRESS = 1, EV_UINT = 2, EV_INT = 3, EV_BOOL = 4, EV_BYTES = 5, EV_RAW = 6 };

typedef struct {
    int kind, topic;    /* topic >= 0: the value is that topic; -1: a data word */
    Py_ssize_t offset;  /* of the data word */
    int size;           /* bits of uintN/intN, bytes of bytesN (function: 24) */
} EvParam;

#define EV_MAX_PARAMS 64

/* Whether the 32-byte word is a valid `p` (its padding as eth-abi's strict decoding wants). */
static int ev_valid(const EvParam *p, const unsigned char *w) {
    int zeros;
    switch (p->kind) {
    case EV_ADDRESS:
        zeros = 12;
        break;
    case EV_UINT:
        zeros = 32 - p->size / 8;
        break;
    case EV_BOOL:
        for (int i = 0; i < 31; i++)
            if (w[i])
                return 0;
        return w[31] <= 1;
    case EV_BYTES:
        for (int i = p->size; i < 32; i++)
            if (w[i])
                return 0;
        return 1;
    case EV_INT: {
        int lead = 32 - p->size / 8;
        unsigned char fill = (w[lead] & 0x80) ? 0xff : 0x00;
        for (int i = 0; i < lead; i++)
            if (w[i] != fill)
                return 0;
        return 1;
    }
    default: /* EV_RAW */
        return 1;
    }
    for (int i = 0; i < zeros; i++)
        if (w[i])
            return 0;
    return 1;
}

static int ev_put(Buf *b, const EvParam *p, const unsigned char *w) {
    uint32_t limbs[8];
    switch (p->kind) {
    case EV_ADDRESS:
    case EV_BYTES:
    case EV_RAW: {
        int n = p->kind == EV_ADDRESS ? 20 : p->kind == EV_RAW ? 32 : p->size;
        const unsigned char *from = p->kind == EV_ADDRESS ? w + 12 : w;
        if (buf_reserve(b, 4 + n) < 0)
            return -1;
        put_u32(b, (uint32_t)n);
        memcpy(b->data + b->len, from, (size_t)n);
        b->len += n;
        return 0;
    }
    case EV_BOOL:
        if (buf_reserve(b, 5) < 0)
            return -1;
        put_u32(b, 1);
        b->data[b->len++] = (char)w[31];
        return 0;
    default: { /* EV_UINT, EV_INT: big-endian two's complement word to numeric */
        unsigned char mag[32];
        int negative = p->kind == EV_INT && (w[0] & 0x80);
        if (negative) { /* magnitude = -value: invert and add one */
            int carry = 1;
            for (int i = 31; i >= 0; i--) {
                int v = (unsigned char)~w[i] + carry;
                mag[i] = (unsigned char)v;
                carry = v >> 8;
            }
        } else {
            memcpy(mag, w, 32);
        }
        for (int k = 0; k < 8; k++) {
            const unsigned char *q = mag + 28 - 4 * k;
            limbs[k] = ((uint32_t)q[0] << 24) | ((uint32_t)q[1] << 16) | ((uint32_t)q[2] << 8)
                       | q[3];
        }
        return put_signed_numeric(b, limbs, negative);
    }
    }
}

static int ev_spec(PyObject *spec, const unsigned char **topic0, int *topic_count,
                   const unsigned char **addresses, Py_ssize_t *naddresses,
                   Py_ssize_t *data_size, EvParam *params, int *nparams) {
    PyObject *t0, *addrs, *plist;
    if (!PyArg_ParseTuple(spec, "OiOnO!:event spec", &t0, topic_count, &addrs, data_size,
                          &PyTuple_Type, &plist))
        return -1;
    *topic0 = NULL;
    if (t0 != Py_None) {
        if (!PyBytes_Check(t0) || PyBytes_GET_SIZE(t0) != 32) {
            PyErr_SetString(PyExc_ValueError, "event spec: topic0 must be 32 bytes or None");
            return -1;
        }
        *topic0 = (const unsigned char *)PyBytes_AS_STRING(t0);
    }
    *addresses = NULL;
    *naddresses = 0;
    if (addrs != Py_None) {
        if (!PyBytes_Check(addrs) || PyBytes_GET_SIZE(addrs) % 20) {
            PyErr_SetString(PyExc_ValueError, "event spec: addresses must be 20-byte runs");
            return -1;
        }
        *addresses = (const unsigned char *)PyBytes_AS_STRING(addrs);
        *naddresses = PyBytes_GET_SIZE(addrs) / 20;
    }
    *nparams = (int)PyTuple_GET_SIZE(plist);
    if (*nparams > EV_MAX_PARAMS || *topic_count < 0 || *topic_count > 4 || *data_size < 0) {
        PyErr_SetString(PyExc_ValueError, "event spec: out of range");
        return -1;
    }
    for (int i = 0; i < *nparams; i++) {
        EvParam *p = &params[i];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(plist, i), "iini:event param", &p->kind, &p->topic,
                              &p->offset, &p->size))
            return -1;
        int sized = p->kind == EV_UINT || p->kind == EV_INT;
        if (p->kind < EV_ADDRESS || p->kind > EV_RAW || p->topic >= *topic_count
            || p->topic < -1
            || (p->topic < 0 && (p->offset < 0 || p->offset % 32 || p->offset + 32 > *data_size))
            || (sized && (p->size < 8 || p->size > 256 || p->size % 8))
            || (p->kind == EV_BYTES && (p->size < 1 || p->size > 32))) {
            PyErr_SetString(PyExc_ValueError, "event spec: a parameter out of range");
            return -1;
        }
    }
    return 0;
}

static int address_listed(const unsigned char *addresses, Py_ssize_t n, const unsigned char *a) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) { /* sorted: binary search */
        Py_ssize_t mid = (lo + hi) / 2;
        int c = memcmp(addresses + 20 * mid, a, 20);
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

typedef struct {
    int64_t *items; /* (block_number, log_index) pairs */
    Py_ssize_t n, cap;
} Skipped;

enum { EV_OK = 0, EV_BAD_ROWS = 1, EV_NO_MEMORY = 2 };

/* The loop of event_rows over our own copies: no Python API, so run without the GIL. */
static int ev_encode(Reader r, const unsigned char *topic0, int topic_count,
                     const unsigned char *addresses, Py_ssize_t naddresses,
                     Py_ssize_t data_size, const EvParam *params, int nparams, Buf *b,
                     Py_ssize_t *count, Skipped *skipped, Py_ssize_t *read) {
    while (r.left > 0) {
        LogRow row;
        if (read_log_row(&r, &row) < 0 || row.address_len != 20)
            return EV_BAD_ROWS;
        (*read)++;
        const unsigned char *const *topic = row.topic, *data = row.data;
        const Py_ssize_t *topic_len = row.topic_len, data_len = row.data_len;
        int32_t ntopics = row.ntopics;
        /* Is it this table's log? (EventTable.takes) */
        if (topic0 != NULL) {
            if (ntopics == 0 || topic_len[0] != 32 || memcmp(topic[0], topic0, 32) != 0)
                continue;
        } else if (ntopics != topic_count) {
            continue;
        }
        if (addresses != NULL && !address_listed(addresses, naddresses, row.address))
            continue;
        /* Does it decode? */
        int valid = ntopics == topic_count && data_len == data_size;
        for (int32_t k = 0; k < ntopics && valid; k++)
            valid = topic_len[k] == 32;
        for (int i = 0; i < nparams && valid; i++)
            valid = ev_valid(&params[i], params[i].topic >= 0 ? topic[params[i].topic]
                                                              : data + params[i].offset);
        if (!valid) {
            if (skipped->n == skipped->cap) {
                Py_ssize_t cap = skipped->cap ? 2 * skipped->cap : 64;
                int64_t *items = PyMem_RawRealloc(skipped->items, (size_t)cap * 2 * sizeof(int64_t));
                if (items == NULL)
                    return EV_NO_MEMORY;
                skipped->items = items;
                skipped->cap = cap;
            }
            skipped->items[2 * skipped->n] = row.number;
            skipped->items[2 * skipped->n + 1] = row.log_index;
            skipped->n++;
            continue;
        }
        if (buf_reserve(b, 2 + row.fixed_len) < 0)
            return EV_NO_MEMORY;
        put_u16(b, (uint16_t)(6 + nparams));
        memcpy(b->data + b->len, row.fixed, (size_t)row.fixed_len);
        b->len += row.fixed_len;
        for (int i = 0; i < nparams; i++)
            if (ev_put(b, &params[i], params[i].topic >= 0 ? topic[params[i].topic]
                                                           : data + params[i].offset) < 0)
                return EV_NO_MEMORY;
        (*count)++;
    }
    return EV_OK;
}

static PyObject *event_rows(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer view;
    PyObject *spec;
    if (!PyArg_ParseTuple(args, "y*O!:event_rows", &view, &PyTuple_Type, &spec))
        return NULL;
    const unsigned char *topic0, *addresses;
    int topic_count, nparams;
    Py_ssize_t naddresses, data_size, count = 0, read = 0;
    EvParam params[EV_MAX_PARAMS];
    PyObject *out = NULL;
    Buf b = {NULL, 0, 0};
    Skipped skipped = {NULL, 0, 0};
    if (ev_spec(spec, &topic0, &topic_count, &addresses, &naddresses, &data_size, params,
                &nparams) < 0)
        goto done;
    /* The spec's bytes stay alive (the tuple is ours for the call), and so do the rows'. */
    Reader r = {(const unsigned char *)view.buf, view.len};
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = ev_encode(r, topic0, topic_count, addresses, naddresses, data_size, params,
                       nparams, &b, &count, &skipped, &read);
    Py_END_ALLOW_THREADS
    if (status == EV_BAD_ROWS) {
        PyErr_SetString(PyExc_ValueError, "event_rows: not binary COPY rows of the logs table");
        goto done;
    }
    if (status == EV_NO_MEMORY) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *left_out = PyList_New(skipped.n);
    if (left_out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < skipped.n; i++) {
        PyObject *pair = Py_BuildValue("(LL)", (long long)skipped.items[2 * i],
                                       (long long)skipped.items[2 * i + 1]);
        if (pair == NULL) {
            Py_DECREF(left_out);
            goto done;
        }
        PyList_SET_ITEM(left_out, i, pair);
    }
    out = Py_BuildValue("(y#nNn)", b.data ? b.data : "", b.len, count, left_out, read);
done:
    buf_free(&b);
    PyMem_RawFree(skipped.items);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef module_methods[] = {
    {"log_rows", log_rows, METH_VARARGS,
     "log_rows(encoded, topic0s) -> [(block_number, log_index, tx_index, tx_hash, address,"
     " topics, data)]: the binary COPY rows of `logs` whose first topic is in topic0s"
     " (None: every log)."},
    {"event_rows", event_rows, METH_VARARGS,
     "event_rows(encoded_logs, spec) -> (encoded rows, count, [(block_number, log_index)] of"
     " the logs skipped, logs read): an event"
     " table's binary COPY rows from the logs' (see the source for spec)."},
    {"new_buffer", new_buffer, METH_O,
     "new_buffer(size) -> bytearray: size bytes, not zeroed (fill them with copy_into)."},
    {"resize_buffer", resize_buffer, METH_VARARGS,
     "resize_buffer(buffer, size): the bytearray made size bytes long, nothing written."},
    {"copy_into", copy_into, METH_VARARGS,
     "copy_into(buffer, offset, chunk): chunk into buffer at offset, with the GIL released."},
    {"batch_results", batch_results, METH_O,
     "batch_results(body) -> [(id, start, end)] of each result of a plain JSON-RPC batch"
     " answer, or None (see the source)."},
    {"plain_json", plain_json, METH_O,
     "plain_json(body) -> bool: valid UTF-8 throughout, numbers short and without exponents"
     " (what the fast path may skip unread; see the source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "indexer._rows",
    .m_doc = "Binary COPY rows from JSON-RPC hex strings, driven by field tables.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__rows(void) {
    (void)have_avx2(); /* asked here, before any thread without the GIL asks */
    if (PyType_Ready(&FieldTableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FieldTableType);
    if (PyModule_AddObject(m, "FieldTable", (PyObject *)&FieldTableType) < 0) {
        Py_DECREF(&FieldTableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
