/* Ethereum's commitment primitives in C: Keccak-256, RLP, the ordered trie root, the bloom.
 *
 * The hot path of block verification (indexer/chain/evm_verify.py) recomputes header hashes,
 * transaction hashes, the transactions, receipts and withdrawals roots and the logs bloom
 * of every block it keeps; these are its building blocks. indexer/chain/mpt.py holds the
 * pure-Python reference of the same rules, and property tests hold the two to equal answers.
 *
 *   keccak256(data: bytes) -> bytes                      32 bytes
 *   rlp(item) -> bytes                                   item: bytes | int >= 0 | list/tuple
 *   ordered_trie_root(values: list[bytes]) -> bytes      keys rlp(0), rlp(1), ...
 *   bloom(entries: list[bytes]) -> bytes                 256 bytes: 3 bits per entry
 *   logs_bloom(logs) -> bytes                            the bloom of logs' addresses, topics
 *   encoded_root(items, layouts, layout_of=None, hash_key=None) -> (root, bad)
 *                                                        a block's list in one call: each item
 *                                                        encoded by its layout (the type's in
 *                                                        a dict, else layout_of(item)), each
 *                                                        hash checked against hash_key, the
 *                                                        trie root; bad = first wrong hash
 *   receipts_bloom(receipts) -> (bloom, bad)             every receipt's logsBloom checked,
 *                                                        the block's bloom (their union)
 *   Layout(ops, type_byte).encode(obj) -> bytes          a consensus object's encoding
 *
 * Hashing, the trie and the blooms run with the GIL released (over our own copies of the
 * values), so the event loop's thread goes on meanwhile; buffers use the raw allocator.
 *
 * A `Layout` is compiled once per consensus object shape (a header of one fork, a
 * transaction of one type, a receipt, a withdrawal; indexer/chain/evm_layouts.py holds them
 * as data) and encodes an object as RLP straight from the hex strings of a JSON-RPC answer:
 * a dict (the checked path) or a msgspec struct (the fast path), read by key either way.
 * `type_byte` >= 0 prefixes the envelope (EIP-2718). A field that is missing, not hex, or
 * of the wrong size raises ValueError naming it.
 */
#include "_buf.h"

/* -- Keccak-f[1600] and Keccak-256 (the original padding, 0x01, not SHA3's 0x06) */

static const uint64_t RC[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};
static inline uint64_t rol(uint64_t x, int n) { return (x << n) | (x >> (64 - n)); }

/* Keccak-f[1600] over lanes of type T, one lane per local variable, a{x}{y} = A[x + 5y],
 * every step of a round written out (generated: theta's column parities c and d, rho and
 * pi into b, chi back into a, iota): the compiler keeps the state in registers, 1.75x as
 * fast as a loop over an array. The operations are parameters: uint64_t lanes here, eight
 * messages' lanes in an AVX-512 register below (keccak_f_x8). */
#define KECCAK_F(T, X5, X2, ROL, CHI, IOTA) \
    T a00 = st[0], a10 = st[1], a20 = st[2], a30 = st[3], a40 = st[4],            \
            a01 = st[5], a11 = st[6], a21 = st[7], a31 = st[8], a41 = st[9],      \
            a02 = st[10], a12 = st[11], a22 = st[12], a32 = st[13], a42 = st[14], \
            a03 = st[15], a13 = st[16], a23 = st[17], a33 = st[18], a43 = st[19], \
            a04 = st[20], a14 = st[21], a24 = st[22], a34 = st[23], a44 = st[24]; \
    T b00, b10, b20, b30, b40, b01, b11, b21, b31, b41, b02, b12, b22,            \
            b32, b42, b03, b13, b23, b33, b43, b04, b14, b24, b34, b44;           \
    T c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;                                     \
    for (int round = 0; round < 24; round++) {                                    \
        c0 = X5(a00, a01, a02, a03, a04);                                         \
        c1 = X5(a10, a11, a12, a13, a14);                                         \
        c2 = X5(a20, a21, a22, a23, a24);                                         \
        c3 = X5(a30, a31, a32, a33, a34);                                         \
        c4 = X5(a40, a41, a42, a43, a44);                                         \
        d0 = X2(c4, ROL(c1, 1));                                                  \
        d1 = X2(c0, ROL(c2, 1));                                                  \
        d2 = X2(c1, ROL(c3, 1));                                                  \
        d3 = X2(c2, ROL(c4, 1));                                                  \
        d4 = X2(c3, ROL(c0, 1));                                                  \
        b00 = X2(a00, d0);                                                        \
        b02 = ROL(X2(a10, d1), 1);                                                \
        b04 = ROL(X2(a20, d2), 62);                                               \
        b01 = ROL(X2(a30, d3), 28);                                               \
        b03 = ROL(X2(a40, d4), 27);                                               \
        b13 = ROL(X2(a01, d0), 36);                                               \
        b10 = ROL(X2(a11, d1), 44);                                               \
        b12 = ROL(X2(a21, d2), 6);                                                \
        b14 = ROL(X2(a31, d3), 55);                                               \
        b11 = ROL(X2(a41, d4), 20);                                               \
        b21 = ROL(X2(a02, d0), 3);                                                \
        b23 = ROL(X2(a12, d1), 10);                                               \
        b20 = ROL(X2(a22, d2), 43);                                               \
        b22 = ROL(X2(a32, d3), 25);                                               \
        b24 = ROL(X2(a42, d4), 39);                                               \
        b34 = ROL(X2(a03, d0), 41);                                               \
        b31 = ROL(X2(a13, d1), 45);                                               \
        b33 = ROL(X2(a23, d2), 15);                                               \
        b30 = ROL(X2(a33, d3), 21);                                               \
        b32 = ROL(X2(a43, d4), 8);                                                \
        b42 = ROL(X2(a04, d0), 18);                                               \
        b44 = ROL(X2(a14, d1), 2);                                                \
        b41 = ROL(X2(a24, d2), 61);                                               \
        b43 = ROL(X2(a34, d3), 56);                                               \
        b40 = ROL(X2(a44, d4), 14);                                               \
        a00 = CHI(b00, b10, b20);                                                 \
        a10 = CHI(b10, b20, b30);                                                 \
        a20 = CHI(b20, b30, b40);                                                 \
        a30 = CHI(b30, b40, b00);                                                 \
        a40 = CHI(b40, b00, b10);                                                 \
        a01 = CHI(b01, b11, b21);                                                 \
        a11 = CHI(b11, b21, b31);                                                 \
        a21 = CHI(b21, b31, b41);                                                 \
        a31 = CHI(b31, b41, b01);                                                 \
        a41 = CHI(b41, b01, b11);                                                 \
        a02 = CHI(b02, b12, b22);                                                 \
        a12 = CHI(b12, b22, b32);                                                 \
        a22 = CHI(b22, b32, b42);                                                 \
        a32 = CHI(b32, b42, b02);                                                 \
        a42 = CHI(b42, b02, b12);                                                 \
        a03 = CHI(b03, b13, b23);                                                 \
        a13 = CHI(b13, b23, b33);                                                 \
        a23 = CHI(b23, b33, b43);                                                 \
        a33 = CHI(b33, b43, b03);                                                 \
        a43 = CHI(b43, b03, b13);                                                 \
        a04 = CHI(b04, b14, b24);                                                 \
        a14 = CHI(b14, b24, b34);                                                 \
        a24 = CHI(b24, b34, b44);                                                 \
        a34 = CHI(b34, b44, b04);                                                 \
        a44 = CHI(b44, b04, b14);                                                 \
        a00 = IOTA(a00, RC[round]);                                               \
    }                                                                             \
    st[0] = a00; st[1] = a10; st[2] = a20; st[3] = a30; st[4] = a40;              \
    st[5] = a01; st[6] = a11; st[7] = a21; st[8] = a31; st[9] = a41;              \
    st[10] = a02; st[11] = a12; st[12] = a22; st[13] = a32; st[14] = a42;         \
    st[15] = a03; st[16] = a13; st[17] = a23; st[18] = a33; st[19] = a43;         \
    st[20] = a04; st[21] = a14; st[22] = a24; st[23] = a34; st[24] = a44;

#define S_X5(a, b, c, d, e) ((a) ^ (b) ^ (c) ^ (d) ^ (e))
#define S_X2(a, b) ((a) ^ (b))
#define S_CHI(a, b, c) ((a) ^ (~(b) & (c)))
#define S_IOTA(a, rc) ((a) ^ (rc))

static void keccak_f(uint64_t st[25]) { KECCAK_F(uint64_t, S_X5, S_X2, rol, S_CHI, S_IOTA) }


#define RATE 136 /* bytes: 1600 - 2 * 256 bits */

/* 8 bytes as a little-endian lane. */
static inline uint64_t load_lane(const unsigned char *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t lane;
    memcpy(&lane, p, 8);
    return lane;
#else
    uint64_t lane = 0;
    for (int k = 7; k >= 0; k--)
        lane = (lane << 8) | p[k];
    return lane;
#endif
}

static void keccak256(const unsigned char *data, Py_ssize_t len, unsigned char out[32]) {
    uint64_t a[25];
    memset(a, 0, sizeof a);
    while (len >= RATE) {
        for (int i = 0; i < RATE / 8; i++)
            a[i] ^= load_lane(data + 8 * i);
        keccak_f(a);
        data += RATE;
        len -= RATE;
    }
    unsigned char block[RATE];
    memset(block, 0, RATE);
    memcpy(block, data, (size_t)len);
    block[len] ^= 0x01;
    block[RATE - 1] ^= 0x80;
    for (int i = 0; i < RATE / 8; i++)
        a[i] ^= load_lane(block + 8 * i);
    keccak_f(a);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 8; k++)
            out[8 * i + k] = (unsigned char)(a[i] >> (8 * k));
}

/* -- Many digests at once (hashing a block's trie nodes, transactions and bloom entries)
 *
 * keccak256_many hashes n messages. Where the CPU has AVX-512 (checked at import), eight
 * messages go through Keccak-f together, one per 64-bit slot of each lane's register (the
 * same steps as keccak_f, written with vector operations: ternary logic for the five-way
 * xor and chi, a rotate instruction for rho); messages are taken in order of their number
 * of blocks so that the eight of a group are of one size. Elsewhere, one at a time. The
 * property tests hold both to keccak256. No Python API: run with the GIL released. */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X8 1
#define X8 __attribute__((target("avx512f")))
#define X2(a, b) _mm512_xor_si512((a), (b))
#define X5(a, b, c, d, e) \
    _mm512_ternarylogic_epi64(_mm512_ternarylogic_epi64((a), (b), (c), 0x96), (d), (e), 0x96)
#define ROL(x, n) _mm512_rol_epi64((x), (n))
#define CHI(a, b, c) _mm512_ternarylogic_epi64((a), (b), (c), 0xD2) /* a ^ (~b & c) */

#define V_IOTA(a, rc) X2((a), _mm512_set1_epi64((long long)(rc)))

X8 static void keccak_f_x8(__m512i st[25]) { KECCAK_F(__m512i, X5, X2, ROL, CHI, V_IOTA) }

/* Up to eight messages (n <= 8) of `blocks` blocks each or fewer: a message with fewer
 * blocks takes its digest after its last block (the zero blocks after it change nothing
 * of that digest). */
X8 static void keccak256_x8(const unsigned char *const *data, const Py_ssize_t *len,
                            unsigned char *const *out, int n) {
    static const unsigned char zeros[RATE];
    __m512i st[25];
    for (int i = 0; i < 25; i++)
        st[i] = _mm512_setzero_si512();
    unsigned char pad[8][RATE];
    Py_ssize_t last[8]; /* the index of each message's last (padded) block */
    Py_ssize_t blocks = 0;
    for (int j = 0; j < 8; j++) {
        Py_ssize_t size = j < n ? len[j] : 0;
        last[j] = size / RATE;
        if (last[j] + 1 > blocks)
            blocks = last[j] + 1;
        memset(pad[j], 0, RATE);
        if (j < n)
            memcpy(pad[j], data[j] + RATE * last[j], (size_t)(size % RATE));
        pad[j][size % RATE] ^= 0x01;
        pad[j][RATE - 1] ^= 0x80;
    }
    uint64_t words[RATE / 8][8] __attribute__((aligned(64)));
    uint64_t head[4][8] __attribute__((aligned(64)));
    for (Py_ssize_t k = 0; k < blocks; k++) {
        for (int j = 0; j < 8; j++) {
            const unsigned char *p = k < last[j] ? data[j] + RATE * k : k == last[j] ? pad[j] : zeros;
            for (int i = 0; i < RATE / 8; i++)
                words[i][j] = load_lane(p + 8 * i);
        }
        for (int i = 0; i < RATE / 8; i++)
            st[i] = _mm512_xor_si512(st[i], _mm512_load_si512((const void *)words[i]));
        keccak_f_x8(st);
        int done = 0;
        for (int j = 0; j < n; j++)
            done |= last[j] == k;
        if (!done)
            continue;
        for (int i = 0; i < 4; i++)
            _mm512_store_si512((void *)head[i], st[i]);
        for (int j = 0; j < n; j++)
            if (last[j] == k)
                for (int i = 0; i < 4; i++)
                    for (int b = 0; b < 8; b++)
                        out[j][8 * i + b] = (unsigned char)(head[i][j] >> (8 * b));
    }
}
#else
#define HAVE_X8 0
#endif

static int simd_lanes = 1; /* 8 where the CPU has AVX-512 (set at import) */

#if HAVE_X8
typedef struct {
    Py_ssize_t blocks;
    Py_ssize_t index;
} HashOrder;

static int order_cmp(const void *a, const void *b) {
    const HashOrder *x = a, *y = b;
    if (x->blocks != y->blocks)
        return x->blocks < y->blocks ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}
#endif

/* out[32 * i] = keccak256(data[i][:len[i]]) for i < n, `lanes` (8 or 1) at a time. */
static void keccak256_lanes(const unsigned char *const *data, const Py_ssize_t *len,
                            unsigned char *out, Py_ssize_t n, int lanes) {
#if HAVE_X8
    HashOrder *order = lanes == 8 && n > 1 ? PyMem_RawMalloc((size_t)n * sizeof(HashOrder)) : NULL;
    if (order != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            order[i].blocks = len[i] / RATE;
            order[i].index = i;
        }
        qsort(order, (size_t)n, sizeof(HashOrder), order_cmp);
        for (Py_ssize_t g = 0; g < n; g += 8) {
            int m = n - g < 8 ? (int)(n - g) : 8;
            const unsigned char *d[8];
            Py_ssize_t l[8];
            unsigned char *o[8];
            for (int j = 0; j < m; j++) {
                Py_ssize_t i = order[g + j].index;
                d[j] = data[i];
                l[j] = len[i];
                o[j] = out + 32 * i;
            }
            if (m == 1)
                keccak256(d[0], l[0], o[0]);
            else
                keccak256_x8(d, l, o, m);
        }
        PyMem_RawFree(order);
        return;
    }
#else
    (void)lanes;
#endif
    for (Py_ssize_t i = 0; i < n; i++)
        keccak256(data[i], len[i], out + 32 * i);
}

static void keccak256_many(const unsigned char *const *data, const Py_ssize_t *len,
                           unsigned char *out, Py_ssize_t n) {
    keccak256_lanes(data, len, out, n, simd_lanes);
}

/* -- RLP */

/* The length prefix of a string (offset 0x80) or list (0xc0) of `len` bytes. */
static int put_prefix(Buf *b, Py_ssize_t len, unsigned char offset) {
    unsigned char head[9];
    if (len < 56) {
        head[0] = (unsigned char)(offset + len);
        return buf_append(b, head, 1);
    }
    int n = 0;
    for (Py_ssize_t v = len; v; v >>= 8)
        n++;
    head[0] = (unsigned char)(offset + 55 + n);
    for (int i = 0; i < n; i++)
        head[1 + i] = (unsigned char)(len >> (8 * (n - 1 - i)));
    return buf_append(b, head, 1 + n);
}

static int put_string(Buf *b, const unsigned char *s, Py_ssize_t len) {
    if (len == 1 && s[0] < 0x80)
        return buf_append(b, s, 1);
    if (put_prefix(b, len, 0x80) < 0)
        return -1;
    return buf_append(b, s, len);
}

/* Insert a list prefix for the `len` bytes written since `start` (moves them). */
static int close_list(Buf *b, Py_ssize_t start) {
    Py_ssize_t len = b->len - start;
    unsigned char head[9];
    int n = 1;
    if (len < 56) {
        head[0] = (unsigned char)(0xc0 + len);
    } else {
        for (Py_ssize_t v = len; v; v >>= 8)
            n++;
        head[0] = (unsigned char)(0xc0 + 55 + (n - 1));
        for (int i = 1; i < n; i++)
            head[i] = (unsigned char)(len >> (8 * (n - 1 - i)));
    }
    if (buf_reserve(b, n) < 0)
        return -1;
    memmove(b->data + start + n, b->data + start, (size_t)len);
    memcpy(b->data + start, head, (size_t)n);
    b->len += n;
    return 0;
}

static int put_item(Buf *b, PyObject *item, int depth) {
    if (depth > 64) {
        PyErr_SetString(PyExc_ValueError, "rlp: nested too deep");
        return -1;
    }
    if (PyBytes_Check(item))
        return put_string(b, (const unsigned char *)PyBytes_AS_STRING(item),
                          PyBytes_GET_SIZE(item));
    if (PyBool_Check(item)) {
        PyErr_SetString(PyExc_ValueError, "rlp: a bool is not an RLP item");
        return -1;
    }
    if (PyLong_Check(item)) {
        if (_PyLong_Sign(item) < 0) {
            PyErr_SetString(PyExc_ValueError, "rlp: negative integer");
            return -1;
        }
        size_t bits = _PyLong_NumBits(item);
        Py_ssize_t n = (Py_ssize_t)((bits + 7) / 8);
        unsigned char small[32];
        unsigned char *raw = n <= 32 ? small : PyMem_Malloc((size_t)n);
        if (raw == NULL) {
            PyErr_NoMemory();
            return -1;
        }
#if PY_VERSION_HEX >= 0x030D0000
        int failed = n && _PyLong_AsByteArray((PyLongObject *)item, raw, (size_t)n, 0, 0, 1) < 0;
#else
        int failed = n && _PyLong_AsByteArray((PyLongObject *)item, raw, (size_t)n, 0, 0) < 0;
#endif
        if (!failed)
            failed = put_string(b, raw, n) < 0;
        if (raw != small)
            PyMem_Free(raw);
        return failed ? -1 : 0;
    }
    if (PyList_Check(item) || PyTuple_Check(item)) {
        Py_ssize_t start = b->len;
        PyObject *seq = PySequence_Fast(item, "rlp: not a sequence");
        if (seq == NULL)
            return -1;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++)
            if (put_item(b, PySequence_Fast_GET_ITEM(seq, i), depth + 1) < 0) {
                Py_DECREF(seq);
                return -1;
            }
        Py_DECREF(seq);
        return close_list(b, start);
    }
    PyErr_Format(PyExc_ValueError, "rlp: cannot encode %s", Py_TYPE(item)->tp_name);
    return -1;
}

/* -- The ordered trie: keys rlp(0), rlp(1), ... (the transactions, receipts, withdrawals) */

typedef struct {
    unsigned char nibbles[2 * 9]; /* of rlp(index): at most 9 bytes */
    int len;
    const unsigned char *value;
    Py_ssize_t value_len;
} Entry;

/* The RLP of an index (the trie key), as nibbles. */
static void key_of(Py_ssize_t index, Entry *e) {
    unsigned char raw[9];
    int n = 0;
    if (index == 0) {
        raw[n++] = 0x80;
    } else if (index < 0x80) {
        raw[n++] = (unsigned char)index;
    } else {
        int size = 0;
        for (Py_ssize_t v = index; v; v >>= 8)
            size++;
        raw[n++] = (unsigned char)(0x80 + size);
        for (int i = size - 1; i >= 0; i--)
            raw[n++] = (unsigned char)(index >> (8 * i));
    }
    e->len = 2 * n;
    for (int i = 0; i < n; i++) {
        e->nibbles[2 * i] = raw[i] >> 4;
        e->nibbles[2 * i + 1] = raw[i] & 0x0f;
    }
}

static int entry_cmp(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    int n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->nibbles, y->nibbles, (size_t)n);
    return c ? c : x->len - y->len;
}

/* Hex-prefix encoding of a nibble path (leaf or extension). */
static int put_path(Buf *b, const unsigned char *nibbles, int len, int leaf) {
    unsigned char raw[1 + 9];
    int n = 0;
    int flag = leaf ? 2 : 0;
    if (len % 2) {
        raw[n++] = (unsigned char)(((flag + 1) << 4) | nibbles[0]);
        nibbles++;
        len--;
    } else {
        raw[n++] = (unsigned char)(flag << 4);
    }
    for (int i = 0; i < len; i += 2)
        raw[n++] = (unsigned char)((nibbles[i] << 4) | nibbles[i + 1]);
    return put_string(b, raw, n);
}

/* A child reference inside a node: the node itself if its encoding is shorter than 32 bytes,
 * else its hash as a 32-byte string. */
static int put_ref(Buf *b, const Buf *node) {
    if (node->len < 32)
        return buf_append(b, node->data, node->len);
    unsigned char hash[32];
    keccak256((const unsigned char *)node->data, node->len, hash);
    return put_string(b, hash, 32);
}

/* Encode the node of `entries` (sorted, sharing the first `depth` nibbles) into `out`. */
static int encode_node(Buf *out, Entry *entries, Py_ssize_t count, int depth) {
    if (count == 1) {
        Py_ssize_t start = out->len;
        if (put_path(out, entries[0].nibbles + depth, entries[0].len - depth, 1) < 0
            || put_string(out, entries[0].value, entries[0].value_len) < 0)
            return -1;
        return close_list(out, start);
    }
    /* Shared prefix beyond depth? Then an extension node. */
    int common = 0;
    for (;;) {
        int at = depth + common;
        if (at >= entries[0].len)
            break;
        unsigned char nib = entries[0].nibbles[at];
        int same = 1;
        for (Py_ssize_t i = 1; i < count && same; i++)
            same = at < entries[i].len && entries[i].nibbles[at] == nib;
        if (!same)
            break;
        common++;
    }
    if (common) {
        Buf child = {NULL, 0, 0};
        Py_ssize_t start = out->len;
        int failed = encode_node(&child, entries, count, depth + common) < 0
                     || put_path(out, entries[0].nibbles + depth, common, 0) < 0
                     || put_ref(out, &child) < 0 || close_list(out, start) < 0;
        buf_free(&child);
        return failed ? -1 : 0;
    }
    /* A branch: 16 children and a value (a key that ends here). */
    Py_ssize_t start = out->len;
    Py_ssize_t i = 0;
    const Entry *here = NULL;
    if (entries[0].len == depth) {
        here = &entries[0];
        i = 1;
    }
    /* The children first, then the hashes of those of 32 bytes or more, all at once. */
    Buf children[16];
    memset(children, 0, sizeof children);
    const unsigned char *data[16];
    Py_ssize_t len[16];
    unsigned char digests[16 * 32];
    int hashed = 0, failed = 0;
    for (int nib = 0; nib < 16 && !failed; nib++) {
        Py_ssize_t first = i;
        while (i < count && entries[i].nibbles[depth] == nib)
            i++;
        if (i > first) {
            failed = encode_node(&children[nib], entries + first, i - first, depth + 1) < 0;
            if (!failed && children[nib].len >= 32) {
                data[hashed] = (const unsigned char *)children[nib].data;
                len[hashed++] = children[nib].len;
            }
        }
    }
    if (!failed)
        keccak256_many(data, len, digests, hashed);
    hashed = 0;
    for (int nib = 0; nib < 16 && !failed; nib++) {
        const Buf *child = &children[nib];
        if (child->len == 0) /* no child: an empty node is never 0 bytes */
            failed = buf_append(out, "\x80", 1) < 0;
        else if (child->len < 32)
            failed = buf_append(out, child->data, child->len) < 0;
        else
            failed = put_string(out, digests + 32 * hashed++, 32) < 0;
    }
    for (int nib = 0; nib < 16; nib++)
        buf_free(&children[nib]);
    if (failed)
        return -1;
    if (here ? put_string(out, here->value, here->value_len) < 0 : buf_append(out, "\x80", 1) < 0)
        return -1;
    return close_list(out, start);
}

/* -- Layouts: consensus objects encoded from JSON-RPC hex strings */

enum {
    L_QTY = 1,          /* a hex quantity, as an RLP integer */
    L_DATA = 2,         /* hex data (size bytes, or any when size < 0) */
    L_ADDR_OR_EMPTY = 3, /* 20 bytes, or the empty string when null (contract creation) */
    L_ACCESS_LIST = 4,  /* [[address, [storage keys]], ...] */
    L_AUTH_LIST = 5,    /* [[chainId, address, nonce, yParity, r, s], ...] */
    L_HEX_LIST = 6,     /* [32-byte strings] */
    L_QTY_OR_ZERO = 7,  /* a quantity, 0 when missing */
    L_BOOL_INT = 8,     /* a boolean as 1 or 0, 0 when missing */
    L_QTY_OR_ALT = 9,   /* a quantity, from key2 when key is missing */
    L_DATA_OR_EMPTY = 10, /* hex data, the empty string when missing */
    L_LOGS = 11,        /* [[address, [topics], data], ...] */
    L_STATUS_OR_ROOT = 12, /* status (quantity), else the pre-Byzantium root (32 bytes) */
};

typedef struct {
    int kind;
    PyObject *key;  /* str */
    PyObject *key2; /* str or NULL */
    Py_ssize_t size;
    AttrCache cache, cache2; /* of key, key2 */
} LOp;

typedef struct {
    PyObject_HEAD
    Py_ssize_t nops;
    LOp *ops;
    int type_byte;
} Layout;

static int lbad(PyObject *key, const char *what) {
    PyErr_Format(PyExc_ValueError, "%U: %s", key, what);
    return -1;
}

/* obj[key] for a dict, obj.key otherwise (through `cache`, when the call site has one:
 * always the same key); None when missing. New reference or NULL. */
static PyObject *get_cached(PyObject *obj, PyObject *key, AttrCache *cache) {
    if (PyDict_Check(obj)) {
        PyObject *v = PyDict_GetItemWithError(obj, key);
        if (v == NULL && PyErr_Occurred())
            return NULL;
        v = v ? v : Py_None;
        Py_INCREF(v);
        return v;
    }
    PyObject *v = cache ? cached_getattr(obj, key, cache) : PyObject_GetAttr(obj, key);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        Py_INCREF(Py_None);
        return Py_None;
    }
    return v;
}

static PyObject *get_field(PyObject *obj, PyObject *key) { return get_cached(obj, key, NULL); }

/* The call sites that read the same key of a block's many objects. */
static AttrCache C_LOG_ADDRESS, C_LOG_TOPICS, C_LOG_DATA, C_TYPE, C_LOGS, C_LOGS_BLOOM;


/* The digits after "0x" of an ASCII str, or NULL with ValueError naming `key`. */
static const char *digits_of(PyObject *v, PyObject *key, Py_ssize_t *n) {
    if (!PyUnicode_Check(v) || !PyUnicode_IS_COMPACT_ASCII(v)) {
        lbad(key, "not a hex string");
        return NULL;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(v);
    const char *s = (const char *)PyUnicode_DATA(v);
    if (len < 2 || s[0] != '0' || s[1] != 'x') {
        lbad(key, "no 0x prefix");
        return NULL;
    }
    for (Py_ssize_t i = 2; i < len; i++)
        if (!HEX[(unsigned char)s[i]]) {
            lbad(key, "not hex");
            return NULL;
        }
    *n = len - 2;
    return s + 2;
}

/* Hex data as an RLP string, parsed straight into the buffer in one pass (calldata is most
 * of a block's bytes); the errors are digits_of's, in its order. */
static int put_hex_data(Buf *b, PyObject *v, PyObject *key, Py_ssize_t size) {
    if (!PyUnicode_Check(v) || !PyUnicode_IS_COMPACT_ASCII(v))
        return lbad(key, "not a hex string");
    Py_ssize_t n = PyUnicode_GET_LENGTH(v) - 2;
    const unsigned char *s = (const unsigned char *)PyUnicode_DATA(v);
    if (n < 0 || s[0] != '0' || s[1] != 'x')
        return lbad(key, "no 0x prefix");
    s += 2;
    if ((n & 1) || (size >= 0 && n != 2 * size)) {
        for (Py_ssize_t i = 0; i < n; i++)
            if (!HEX[s[i]])
                return lbad(key, "not hex");
        return lbad(key, (n & 1) ? "odd number of hex digits" : "wrong length");
    }
    Py_ssize_t m = n / 2, start = b->len;
    if (m != 1 && put_prefix(b, m, 0x80) < 0) /* one byte below 0x80 is its own encoding */
        return -1;
    if (buf_reserve(b, m + 1) < 0)
        return -1;
    unsigned char *out = (unsigned char *)b->data + b->len;
    if (!hex_to_bytes(s, m, out)) {
        b->len = start;
        return lbad(key, "not hex");
    }
    if (m == 1 && out[0] >= 0x80) { /* a single byte from 0x80: as a 1-byte string */
        out[1] = out[0];
        out[0] = 0x81;
        b->len += 2;
    } else {
        b->len += m;
    }
    return 0;
}

static int put_quantity(Buf *b, PyObject *v, PyObject *key) {
    Py_ssize_t n;
    const char *s = digits_of(v, key, &n);
    if (s == NULL)
        return -1;
    if (n < 1 || n > 64)
        return lbad(key, "not a quantity of 1 to 64 hex digits");
    while (n > 1 && s[0] == '0') { /* leading zeros are not part of the integer */
        s++;
        n--;
    }
    unsigned char raw[32];
    Py_ssize_t len = 0;
    if (!(n == 1 && s[0] == '0')) {
        Py_ssize_t i = 0;
        if (n & 1)
            raw[len++] = (unsigned char)(HEX[(unsigned char)s[i++]] - 1);
        for (; i < n; i += 2)
            raw[len++] = (unsigned char)(((HEX[(unsigned char)s[i]] - 1) << 4)
                                         | (HEX[(unsigned char)s[i + 1]] - 1));
    }
    return put_string(b, raw, len);
}

static int put_small(Buf *b, int value) {
    unsigned char raw = (unsigned char)value;
    return put_string(b, &raw, value ? 1 : 0);
}

/* A list field: each item through `each`, the whole wrapped as an RLP list. */
typedef int (*ItemFn)(Buf *, PyObject *, PyObject *);

static int put_list(Buf *b, PyObject *v, PyObject *key, ItemFn each) {
    if (!PyList_Check(v))
        return lbad(key, "not a list");
    Py_ssize_t start = b->len;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++)
        if (each(b, PyList_GET_ITEM(v, i), key) < 0)
            return -1;
    return close_list(b, start);
}

static PyObject *K_ADDRESS, *K_STORAGE_KEYS, *K_CHAIN_ID, *K_NONCE, *K_Y_PARITY, *K_R, *K_S,
    *K_TOPICS, *K_DATA, *K_V, *K_TYPE, *K_LOGS, *K_LOGS_BLOOM;

static int hash32_item(Buf *b, PyObject *v, PyObject *key) { return put_hex_data(b, v, key, 32); }

static int field(Buf *b, PyObject *obj, PyObject *key, int kind, Py_ssize_t size,
                 AttrCache *cache) {
    PyObject *v = get_cached(obj, key, cache);
    if (v == NULL)
        return -1;
    int failed;
    if (v == Py_None)
        failed = lbad(key, "missing");
    else if (kind == L_QTY)
        failed = put_quantity(b, v, key);
    else
        failed = put_hex_data(b, v, key, size);
    Py_DECREF(v);
    return failed;
}

static int access_item(Buf *b, PyObject *entry, PyObject *key) {
    (void)key;
    Py_ssize_t start = b->len;
    if (field(b, entry, K_ADDRESS, L_DATA, 20, NULL) < 0)
        return -1;
    PyObject *keys = get_field(entry, K_STORAGE_KEYS);
    if (keys == NULL)
        return -1;
    int failed = keys == Py_None ? lbad(K_STORAGE_KEYS, "missing")
                                 : put_list(b, keys, K_STORAGE_KEYS, hash32_item);
    Py_DECREF(keys);
    return failed ? -1 : close_list(b, start);
}

static int auth_item(Buf *b, PyObject *entry, PyObject *key) {
    (void)key;
    Py_ssize_t start = b->len;
    if (field(b, entry, K_CHAIN_ID, L_QTY, -1, NULL) < 0
        || field(b, entry, K_ADDRESS, L_DATA, 20, NULL) < 0
        || field(b, entry, K_NONCE, L_QTY, -1, NULL) < 0)
        return -1;
    PyObject *parity = get_field(entry, K_Y_PARITY); /* older answers send only v */
    if (parity == NULL)
        return -1;
    int failed = field(b, entry, parity == Py_None ? K_V : K_Y_PARITY, L_QTY, -1, NULL);
    Py_DECREF(parity);
    if (failed || field(b, entry, K_R, L_QTY, -1, NULL) < 0
        || field(b, entry, K_S, L_QTY, -1, NULL) < 0)
        return -1;
    return close_list(b, start);
}

static int log_item(Buf *b, PyObject *log, PyObject *key) {
    (void)key;
    Py_ssize_t start = b->len;
    if (field(b, log, K_ADDRESS, L_DATA, 20, &C_LOG_ADDRESS) < 0)
        return -1;
    PyObject *topics = get_cached(log, K_TOPICS, &C_LOG_TOPICS);
    if (topics == NULL)
        return -1;
    int failed = topics == Py_None ? lbad(K_TOPICS, "missing")
                                   : put_list(b, topics, K_TOPICS, hash32_item);
    Py_DECREF(topics);
    if (failed || field(b, log, K_DATA, L_DATA, -1, &C_LOG_DATA) < 0)
        return -1;
    return close_list(b, start);
}

static int put_op(Buf *b, LOp *op, PyObject *obj) {
    PyObject *v = get_cached(obj, op->key, &op->cache);
    if (v == NULL)
        return -1;
    int failed = 0;
    switch (op->kind) {
    case L_QTY:
        failed = v == Py_None ? lbad(op->key, "missing") : put_quantity(b, v, op->key);
        break;
    case L_DATA:
        failed = v == Py_None ? lbad(op->key, "missing") : put_hex_data(b, v, op->key, op->size);
        break;
    case L_ADDR_OR_EMPTY:
        failed = v == Py_None ? put_string(b, NULL, 0) : put_hex_data(b, v, op->key, 20);
        break;
    case L_DATA_OR_EMPTY:
        failed = v == Py_None ? put_string(b, NULL, 0) : put_hex_data(b, v, op->key, -1);
        break;
    case L_QTY_OR_ZERO:
        failed = v == Py_None ? put_small(b, 0) : put_quantity(b, v, op->key);
        break;
    case L_BOOL_INT:
        if (v != Py_None && v != Py_True && v != Py_False)
            failed = lbad(op->key, "not a boolean");
        else
            failed = put_small(b, v == Py_True);
        break;
    case L_QTY_OR_ALT:
        if (v == Py_None) {
            Py_DECREF(v);
            v = get_cached(obj, op->key2, &op->cache2);
            if (v == NULL)
                return -1;
            failed = v == Py_None ? lbad(op->key2, "missing") : put_quantity(b, v, op->key2);
        } else {
            failed = put_quantity(b, v, op->key);
        }
        break;
    case L_ACCESS_LIST:
        failed = v == Py_None ? lbad(op->key, "missing") : put_list(b, v, op->key, access_item);
        break;
    case L_AUTH_LIST:
        failed = v == Py_None ? lbad(op->key, "missing") : put_list(b, v, op->key, auth_item);
        break;
    case L_HEX_LIST:
        failed = v == Py_None ? lbad(op->key, "missing") : put_list(b, v, op->key, hash32_item);
        break;
    case L_LOGS:
        failed = v == Py_None ? lbad(op->key, "missing") : put_list(b, v, op->key, log_item);
        break;
    case L_STATUS_OR_ROOT:
        if (v != Py_None) {
            failed = put_quantity(b, v, op->key);
        } else {
            Py_DECREF(v);
            v = get_cached(obj, op->key2, &op->cache2);
            if (v == NULL)
                return -1;
            failed = v == Py_None ? lbad(op->key, "missing (and no pre-Byzantium root)")
                                  : put_hex_data(b, v, op->key2, 32);
        }
        break;
    default:
        PyErr_Format(PyExc_ValueError, "unknown layout op %d", op->kind);
        failed = -1;
    }
    Py_DECREF(v);
    return failed ? -1 : 0;
}

static void layout_dealloc(Layout *self) {
    for (Py_ssize_t k = 0; k < self->nops; k++) {
        Py_XDECREF(self->ops[k].key);
        Py_XDECREF(self->ops[k].key2);
        attr_cache_clear(&self->ops[k].cache);
        attr_cache_clear(&self->ops[k].cache2);
    }
    PyMem_Free(self->ops);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *layout_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *spec;
    int type_byte = -1;
    static char *kwlist[] = {"ops", "type_byte", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|i", kwlist, &spec, &type_byte))
        return NULL;
    PyObject *seq = PySequence_Fast(spec, "ops must be a sequence");
    if (seq == NULL)
        return NULL;
    Layout *self = (Layout *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    self->type_byte = type_byte;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    self->ops = PyMem_Calloc((size_t)(n ? n : 1), sizeof(LOp));
    if (self->ops == NULL) {
        Py_DECREF(seq);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        LOp *op = &self->ops[k];
        PyObject *key, *key2;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, k), "iUOn", &op->kind, &key, &key2,
                              &op->size)) {
            Py_DECREF(seq);
            Py_DECREF(self);
            return NULL;
        }
        self->nops = k + 1;
        Py_INCREF(key);
        PyUnicode_InternInPlace(&key);
        op->key = key;
        if (key2 != Py_None) {
            if (!PyUnicode_Check(key2)) {
                PyErr_SetString(PyExc_TypeError, "key2 must be a str or None");
                Py_DECREF(seq);
                Py_DECREF(self);
                return NULL;
            }
            Py_INCREF(key2);
            PyUnicode_InternInPlace(&key2);
            op->key2 = key2;
        }
    }
    Py_DECREF(seq);
    return (PyObject *)self;
}

static int layout_encode_into(Layout *self, PyObject *obj, Buf *b) {
    if (self->type_byte >= 0) {
        unsigned char t = (unsigned char)self->type_byte;
        if (buf_append(b, &t, 1) < 0)
            return -1;
    }
    Py_ssize_t start = b->len;
    for (Py_ssize_t k = 0; k < self->nops; k++)
        if (put_op(b, &self->ops[k], obj) < 0)
            return -1;
    return close_list(b, start);
}

static PyObject *layout_encode(Layout *self, PyObject *obj) {
    Buf b = {NULL, 0, 0};
    PyObject *out = NULL;
    if (layout_encode_into(self, obj, &b) == 0)
        out = PyBytes_FromStringAndSize(b.data ? b.data : "",
                                        b.len);
    buf_free(&b);
    return out;
}

static PyObject *layout_hash(Layout *self, PyObject *obj) {
    Buf b = {NULL, 0, 0};
    PyObject *out = NULL;
    if (layout_encode_into(self, obj, &b) == 0) {
        unsigned char digest[32];
        keccak256((const unsigned char *)b.data, b.len, digest);
        out = PyBytes_FromStringAndSize((const char *)digest, 32);
    }
    buf_free(&b);
    return out;
}

static PyMethodDef layout_methods[] = {
    {"encode", (PyCFunction)layout_encode, METH_O, "encode(obj) -> the object's encoding."},
    {"hash", (PyCFunction)layout_hash, METH_O, "hash(obj) -> keccak256 of the encoding."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LayoutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "indexer._proof.Layout",
    .tp_basicsize = sizeof(Layout),
    .tp_dealloc = (destructor)layout_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A consensus object's RLP layout, compiled from ops.",
    .tp_methods = layout_methods,
    .tp_new = layout_new,
};

/* keccak256_many(items, lanes=None) -> list of digests (lanes 1: one at a time; for tests) */
static PyObject *py_keccak256_many(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *items, *lanes_arg = Py_None;
    if (!PyArg_ParseTuple(args, "O|O:keccak256_many", &items, &lanes_arg))
        return NULL;
    int lanes = simd_lanes;
    if (lanes_arg != Py_None) {
        long v = PyLong_AsLong(lanes_arg);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        lanes = v == 8 && simd_lanes == 8 ? 8 : 1;
    }
    PyObject *seq = PySequence_Tuple(items);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    const unsigned char **data = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(*data));
    Py_ssize_t *len = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(*len));
    unsigned char *out = PyMem_RawMalloc((size_t)(n ? n : 1) * 32);
    PyObject *result = NULL;
    if (data == NULL || len == NULL || out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(seq, i);
        if (!PyBytes_Check(v)) {
            PyErr_SetString(PyExc_TypeError, "keccak256_many: every item must be bytes");
            goto done;
        }
        data[i] = (const unsigned char *)PyBytes_AS_STRING(v);
        len[i] = PyBytes_GET_SIZE(v);
    }
    Py_BEGIN_ALLOW_THREADS
    keccak256_lanes(data, len, out, n, lanes);
    Py_END_ALLOW_THREADS
    if ((result = PyList_New(n)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyBytes_FromStringAndSize((const char *)out + 32 * i, 32);
        if (d == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, d);
    }
done:
    PyMem_RawFree(data);
    PyMem_RawFree(len);
    PyMem_RawFree(out);
    Py_DECREF(seq);
    return result;
}

static PyObject *py_keccak256(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    unsigned char out[32];
    keccak256(view.buf, view.len, out);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyObject *py_rlp(PyObject *self, PyObject *arg) {
    (void)self;
    Buf b = {NULL, 0, 0};
    PyObject *out = NULL;
    if (put_item(&b, arg, 0) == 0)
        out = PyBytes_FromStringAndSize(b.data ? b.data : "",
                                        b.len);
    buf_free(&b);
    return out;
}

/* digests[32 * i] = keccak256 of entry i's value, for `count` entries (many at once). -1 when
 * memory ran out (no error set). No Python API. */
static int hash_entries(const Entry *entries, Py_ssize_t count, unsigned char *digests) {
    const unsigned char **data = PyMem_RawMalloc((size_t)(count ? count : 1) * sizeof(*data));
    Py_ssize_t *len = PyMem_RawMalloc((size_t)(count ? count : 1) * sizeof(Py_ssize_t));
    int failed = data == NULL || len == NULL;
    if (!failed) {
        for (Py_ssize_t i = 0; i < count; i++) {
            data[i] = entries[i].value;
            len[i] = entries[i].value_len;
        }
        keccak256_many(data, len, digests, count);
    }
    PyMem_RawFree(data);
    PyMem_RawFree(len);
    return failed ? -1 : 0;
}

/* The root of the trie of `count` entries (keys set, values non-empty), sorting them. No
 * Python API: callers release the GIL around it. -1 when memory ran out (no error set). */
static int entries_root(Entry *entries, Py_ssize_t count, unsigned char root[32]) {
    if (count == 0) {
        static const unsigned char empty = 0x80;
        keccak256(&empty, 1, root);
        return 0;
    }
    qsort(entries, (size_t)count, sizeof(Entry), entry_cmp);
    Buf node = {NULL, 0, 0};
    int failed = encode_node(&node, entries, count, 0);
    if (!failed) /* the root is hashed whatever its size */
        keccak256((const unsigned char *)node.data, node.len, root);
    buf_free(&node);
    return failed;
}

static PyObject *py_ordered_trie_root(PyObject *self, PyObject *arg) {
    (void)self;
    /* A tuple: its items stay put (and alive) while the GIL is released. */
    PyObject *values = PySequence_Tuple(arg);
    if (values == NULL)
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(values);
    Entry *entries = PyMem_RawCalloc((size_t)(count ? count : 1), sizeof(Entry));
    if (entries == NULL) {
        Py_DECREF(values);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *v = PyTuple_GET_ITEM(values, i);
        if (!PyBytes_Check(v) || PyBytes_GET_SIZE(v) == 0) {
            PyMem_RawFree(entries);
            Py_DECREF(values);
            PyErr_SetString(PyExc_ValueError, "trie: every value must be non-empty bytes");
            return NULL;
        }
        key_of(i, &entries[i]);
        entries[i].value = (const unsigned char *)PyBytes_AS_STRING(v);
        entries[i].value_len = PyBytes_GET_SIZE(v);
    }
    unsigned char root[32];
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = entries_root(entries, count, root);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(entries);
    Py_DECREF(values);
    if (failed)
        return PyErr_NoMemory();
    return PyBytes_FromStringAndSize((const char *)root, 32);
}

/* Whether `v` is "0x" and the lowercase or uppercase hex of the `size` bytes at `want`. */
static int hex_is(PyObject *v, const unsigned char *want, Py_ssize_t size) {
    if (!PyUnicode_Check(v) || !PyUnicode_IS_COMPACT_ASCII(v)
        || PyUnicode_GET_LENGTH(v) != 2 + 2 * size)
        return 0;
    const unsigned char *s = (const unsigned char *)PyUnicode_DATA(v);
    if (s[0] != '0' || s[1] != 'x')
        return 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        int hi = HEX[s[2 + 2 * i]], lo = HEX[s[3 + 2 * i]];
        if (!hi || !lo || (unsigned char)(((hi - 1) << 4) | (lo - 1)) != want[i])
            return 0;
    }
    return 1;
}

/* The layout of `item`: `layouts` itself when it is one, else layouts[item.type] (a dict),
 * else layout_of(item), whose reference is left in *owned. Borrowed, or NULL. */
static Layout *layout_for(PyObject *item, PyObject *layouts, PyObject *layout_of,
                          PyObject **owned) {
    *owned = NULL;
    if (Py_IS_TYPE(layouts, &LayoutType))
        return (Layout *)layouts;
    PyObject *type = get_cached(item, K_TYPE, &C_TYPE);
    if (type == NULL)
        return NULL;
    PyObject *hit = PyDict_GetItemWithError(layouts, type); /* borrowed, from the dict */
    Py_DECREF(type);
    if (hit == NULL) {
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) /* unhashable: layout_of says */
                return NULL;
            PyErr_Clear();
        }
        if (layout_of == Py_None) {
            PyErr_SetString(PyExc_ValueError, "type: no layout for this type");
            return NULL;
        }
        hit = *owned = PyObject_CallOneArg(layout_of, item);
        if (hit == NULL)
            return NULL;
    }
    if (!Py_IS_TYPE(hit, &LayoutType)) {
        Py_CLEAR(*owned);
        PyErr_SetString(PyExc_TypeError, "encoded_root: a layout must be a Layout");
        return NULL;
    }
    return (Layout *)hit;
}

static PyObject *py_encoded_root(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *items, *layouts, *layout_of = Py_None, *hash_key = Py_None;
    if (!PyArg_ParseTuple(args, "OO|OO:encoded_root", &items, &layouts, &layout_of, &hash_key))
        return NULL;
    if (!Py_IS_TYPE(layouts, &LayoutType) && !PyDict_Check(layouts)) {
        PyErr_SetString(PyExc_TypeError, "encoded_root: layouts must be a Layout or a dict");
        return NULL;
    }
    if (hash_key != Py_None && !PyUnicode_Check(hash_key)) {
        PyErr_SetString(PyExc_TypeError, "encoded_root: hash_key must be a str or None");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(items, "items must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    Buf all = {NULL, 0, 0};
    Py_ssize_t *ends = PyMem_RawMalloc((size_t)(count + 1) * sizeof(Py_ssize_t));
    Entry *entries = PyMem_RawCalloc((size_t)(count ? count : 1), sizeof(Entry));
    unsigned char *digests = NULL;
    PyObject *out = NULL;
    if (ends == NULL || entries == NULL)
        goto nomem;
    if (hash_key != Py_None && (digests = PyMem_RawMalloc((size_t)(32 * (count ? count : 1)))) == NULL)
        goto nomem;
    /* Every envelope, one after the other in one buffer (with the GIL: the items are read). */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *owned;
        Layout *layout = layout_for(PySequence_Fast_GET_ITEM(seq, i), layouts, layout_of, &owned);
        if (layout == NULL)
            goto done;
        int failed = layout_encode_into(layout, PySequence_Fast_GET_ITEM(seq, i), &all);
        Py_XDECREF(owned);
        if (failed)
            goto done;
        ends[i] = all.len;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t start = i ? ends[i - 1] : 0;
        key_of(i, &entries[i]);
        entries[i].value = (const unsigned char *)all.data + start;
        entries[i].value_len = ends[i] - start;
    }
    /* Hashes and the trie from our own buffer: no Python object is touched. */
    unsigned char root[32];
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = 0;
    if (digests != NULL)
        failed = hash_entries(entries, count, digests) < 0;
    if (!failed)
        failed = entries_root(entries, count, root);
    Py_END_ALLOW_THREADS
    if (failed)
        goto nomem;
    Py_ssize_t bad = -1;
    for (Py_ssize_t i = 0; digests != NULL && i < count && bad < 0; i++) {
        PyObject *sent = get_field(PySequence_Fast_GET_ITEM(seq, i), hash_key);
        if (sent == NULL)
            goto done;
        if (!hex_is(sent, digests + 32 * i, 32))
            bad = i;
        Py_DECREF(sent);
    }
    out = Py_BuildValue("(y#n)", (const char *)root, (Py_ssize_t)32, bad);
    goto done;
nomem:
    PyErr_NoMemory();
done:
    buf_free(&all);
    PyMem_RawFree(ends);
    PyMem_RawFree(entries);
    PyMem_RawFree(digests);
    Py_DECREF(seq);
    return out;
}

static PyObject *py_bloom(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "entries must be a sequence of bytes");
    if (seq == NULL)
        return NULL;
    unsigned char bloom[256];
    memset(bloom, 0, sizeof bloom);
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(v)) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "bloom: every entry must be bytes");
            return NULL;
        }
        unsigned char digest[32];
        keccak256((const unsigned char *)PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v), digest);
        for (int pair = 0; pair < 6; pair += 2) {
            int bit = ((digest[pair] << 8) | digest[pair + 1]) & 2047;
            bloom[255 - bit / 8] |= (unsigned char)(1 << (bit % 8));
        }
    }
    Py_DECREF(seq);
    return PyBytes_FromStringAndSize((const char *)bloom, 256);
}

/* -- Blooms of logs: the entries read with the GIL, hashed without it
 *
 * Each address (20 bytes) and topic (32 bytes) of the logs is checked and copied out as
 * raw bytes, tagged with the bloom it sets (one per receipt, or one for a block's logs).
 * Then, with the GIL released, each distinct entry is hashed once (a block's logs repeat
 * addresses and topics: 66-85% of the entries of real mainnet blocks are repeats; the
 * table's key is the bytes and their length, so a topic is never taken for an address)
 * and its 3 bits set in its bloom. */

typedef struct {
    unsigned char raw[32];
    Py_ssize_t len;   /* 20 or 32 */
    Py_ssize_t group; /* the bloom it sets */
} BloomEntry;

typedef struct {
    BloomEntry *items;
    Py_ssize_t n, cap;
} BloomEntries;

static int entry_add(BloomEntries *e, PyObject *v, PyObject *key, Py_ssize_t size,
                     Py_ssize_t group) {
    Py_ssize_t n;
    const char *s = digits_of(v, key, &n);
    if (s == NULL)
        return -1;
    if (n != 2 * size)
        return lbad(key, "wrong length");
    if (e->n == e->cap) {
        Py_ssize_t cap = e->cap ? 2 * e->cap : 256;
        BloomEntry *items = PyMem_RawRealloc(e->items, (size_t)cap * sizeof(BloomEntry));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        e->items = items;
        e->cap = cap;
    }
    BloomEntry *x = &e->items[e->n++];
    for (Py_ssize_t i = 0; i < n; i += 2)
        x->raw[i / 2] = (unsigned char)(((HEX[(unsigned char)s[i]] - 1) << 4)
                                        | (HEX[(unsigned char)s[i + 1]] - 1));
    x->len = size;
    x->group = group;
    return 0;
}

/* The entries of `logs` (their addresses and topics), for bloom `group`. */
static int collect_logs(BloomEntries *e, PyObject *logs, Py_ssize_t group) {
    PyObject *seq = PySequence_Fast(logs, "logs must be a sequence");
    if (seq == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *log = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *address = get_cached(log, K_ADDRESS, &C_LOG_ADDRESS);
        if (address == NULL)
            goto fail;
        int failed = address == Py_None ? lbad(K_ADDRESS, "missing")
                                        : entry_add(e, address, K_ADDRESS, 20, group);
        Py_DECREF(address);
        if (failed)
            goto fail;
        PyObject *topics = get_cached(log, K_TOPICS, &C_LOG_TOPICS);
        if (topics == NULL)
            goto fail;
        if (!PyList_Check(topics)) {
            Py_DECREF(topics);
            lbad(K_TOPICS, "not a list");
            goto fail;
        }
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(topics) && !failed; k++)
            failed = entry_add(e, PyList_GET_ITEM(topics, k), K_TOPICS, 32, group);
        Py_DECREF(topics);
        if (failed)
            goto fail;
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

static void bloom_set(unsigned char bloom[256], uint64_t bits) {
    for (int k = 0; k < 3; k++) {
        int bit = (int)((bits >> (11 * k)) & 2047);
        bloom[255 - bit / 8] |= (unsigned char)(1 << (bit % 8));
    }
}

/* Set every entry's bits in its group's bloom (`blooms`: 256 zeroed bytes per group). No
 * Python API: run with the GIL released. -1 when memory ran out (no error set). Each
 * distinct entry is found once (a table keyed by its bytes), then all of them hashed in
 * one keccak256_many. */
static int set_bloom_bits(const BloomEntries *e, unsigned char *blooms) {
    Py_ssize_t cap = 16;
    while (cap < 2 * e->n)
        cap <<= 1;
    Py_ssize_t n = e->n ? e->n : 1;
    Py_ssize_t *slots = PyMem_RawCalloc((size_t)cap, sizeof(Py_ssize_t)); /* entry + 1 */
    Py_ssize_t *first = PyMem_RawMalloc((size_t)n * sizeof(Py_ssize_t)); /* its first equal */
    Py_ssize_t *unique = PyMem_RawMalloc((size_t)n * sizeof(Py_ssize_t)); /* entry -> digest */
    const unsigned char **data = PyMem_RawMalloc((size_t)n * sizeof(*data));
    Py_ssize_t *len = PyMem_RawMalloc((size_t)n * sizeof(Py_ssize_t));
    unsigned char *digests = PyMem_RawMalloc((size_t)n * 32);
    int failed = slots == NULL || first == NULL || unique == NULL || data == NULL || len == NULL
                 || digests == NULL;
    Py_ssize_t distinct = 0;
    for (Py_ssize_t i = 0; !failed && i < e->n; i++) {
        const BloomEntry *x = &e->items[i];
        /* Every byte counts: a topic that holds an address is 12 zero bytes first. */
        uint64_t w[4] = {0, 0, 0, 0};
        memcpy(w, x->raw, (size_t)x->len);
        uint64_t h = (w[0] * 0x9E3779B97F4A7C15ULL) ^ (w[1] * 0xC2B2AE3D27D4EB4FULL)
                     ^ (w[2] * 0x165667B19E3779F9ULL) ^ (w[3] * 0xD6E8FEB86659FD93ULL)
                     ^ (uint64_t)x->len;
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 32;
        Py_ssize_t j = (Py_ssize_t)h & (cap - 1);
        for (;;) {
            Py_ssize_t seen = slots[j];
            if (seen == 0) {
                slots[j] = i + 1;
                first[i] = i;
                unique[i] = distinct;
                data[distinct] = x->raw;
                len[distinct++] = x->len;
                break;
            }
            const BloomEntry *y = &e->items[seen - 1];
            if (y->len == x->len && memcmp(y->raw, x->raw, (size_t)x->len) == 0) {
                first[i] = seen - 1;
                break;
            }
            j = (j + 1) & (cap - 1);
        }
    }
    if (!failed) {
        keccak256_many(data, len, digests, distinct);
        for (Py_ssize_t i = 0; i < e->n; i++) {
            const unsigned char *digest = digests + 32 * unique[first[i]];
            uint64_t bits = 0;
            for (int pair = 0; pair < 6; pair += 2)
                bits |= (uint64_t)(((digest[pair] << 8) | digest[pair + 1]) & 2047)
                        << (11 * (pair / 2));
            bloom_set(blooms + 256 * e->items[i].group, bits);
        }
    }
    PyMem_RawFree(slots);
    PyMem_RawFree(first);
    PyMem_RawFree(unique);
    PyMem_RawFree(data);
    PyMem_RawFree(len);
    PyMem_RawFree(digests);
    return failed ? -1 : 0;
}

/* The blooms of `groups` groups of collected entries (256 bytes each), or NULL with an
 * error; hashed with the GIL released. Free with PyMem_RawFree. */
static unsigned char *blooms_of(const BloomEntries *e, Py_ssize_t groups) {
    unsigned char *blooms = PyMem_RawCalloc((size_t)(groups ? groups : 1), 256);
    if (blooms == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = set_bloom_bits(e, blooms);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyMem_RawFree(blooms);
        PyErr_NoMemory();
        return NULL;
    }
    return blooms;
}

static PyObject *py_logs_bloom(PyObject *self, PyObject *logs) {
    (void)self;
    BloomEntries e = {NULL, 0, 0};
    PyObject *out = NULL;
    if (collect_logs(&e, logs, 0) == 0) {
        unsigned char *bloom = blooms_of(&e, 1);
        if (bloom != NULL)
            out = PyBytes_FromStringAndSize((const char *)bloom, 256);
        PyMem_RawFree(bloom);
    }
    PyMem_RawFree(e.items);
    return out;
}

/* Each receipt's bloom from its logs against its logsBloom, and the block's (their union):
 * (block bloom, index of the first receipt whose logsBloom is not its logs', or -1). */
static PyObject *py_receipts_bloom(PyObject *self, PyObject *receipts) {
    (void)self;
    PyObject *seq = PySequence_Fast(receipts, "receipts must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    BloomEntries e = {NULL, 0, 0};
    unsigned char *blooms = NULL;
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *logs = get_cached(PySequence_Fast_GET_ITEM(seq, i), K_LOGS, &C_LOGS);
        if (logs == NULL)
            goto done;
        int failed = logs != Py_None && collect_logs(&e, logs, i) < 0;
        Py_DECREF(logs);
        if (failed)
            goto done;
    }
    if ((blooms = blooms_of(&e, count)) == NULL)
        goto done;
    unsigned char block[256];
    memset(block, 0, sizeof block);
    Py_ssize_t bad = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *bloom = blooms + 256 * i;
        if (bad < 0) {
            PyObject *sent =
                get_cached(PySequence_Fast_GET_ITEM(seq, i), K_LOGS_BLOOM, &C_LOGS_BLOOM);
            if (sent == NULL)
                goto done;
            if (!hex_is(sent, bloom, 256))
                bad = i;
            Py_DECREF(sent);
        }
        for (int k = 0; k < 256; k++)
            block[k] |= bloom[k];
    }
    out = Py_BuildValue("(y#n)", (const char *)block, (Py_ssize_t)256, bad);
done:
    PyMem_RawFree(e.items);
    PyMem_RawFree(blooms);
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"logs_bloom", py_logs_bloom, METH_O,
     "logs_bloom(logs) -> the 256-byte bloom of the logs' addresses and topics."},
    {"keccak256", py_keccak256, METH_O, "keccak256(data) -> the 32-byte Keccak-256 digest."},
    {"keccak256_many", py_keccak256_many, METH_VARARGS,
     "keccak256_many(items, lanes=None) -> [digest, ...] (lanes 8: eight at a time where the "
     "CPU can, 1: one at a time; None: the fastest)."},
    {"rlp", py_rlp, METH_O, "rlp(item) -> the RLP encoding of bytes, ints >= 0 and lists."},
    {"ordered_trie_root", py_ordered_trie_root, METH_O,
     "ordered_trie_root(values) -> the root of the trie keyed by rlp(0), rlp(1), ..."},
    {"bloom", py_bloom, METH_O, "bloom(entries) -> the 256-byte bloom of the entries."},
    {"encoded_root", py_encoded_root, METH_VARARGS,
     "encoded_root(items, layouts, layout_of=None, hash_key=None) -> (trie root of the"
     " items' encodings, index of the first item whose hash_key is not the keccak of its"
     " encoding, or -1)."},
    {"receipts_bloom", py_receipts_bloom, METH_O,
     "receipts_bloom(receipts) -> (the union of the receipts' logs blooms,"
     " index of the first receipt whose logsBloom is not its logs' bloom, or -1)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "indexer._proof",
    .m_doc = "Keccak-256, RLP, the ordered trie root and the logs bloom, in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__proof(void) {
    const char *names[] = {"address", "storageKeys", "chainId", "nonce", "yParity", "r",
                           "s", "topics", "data", "v", "type", "logs", "logsBloom"};
    PyObject **slots[] = {&K_ADDRESS, &K_STORAGE_KEYS, &K_CHAIN_ID, &K_NONCE, &K_Y_PARITY,
                          &K_R, &K_S, &K_TOPICS, &K_DATA, &K_V, &K_TYPE, &K_LOGS,
                          &K_LOGS_BLOOM};
    for (int i = 0; i < 13; i++)
        if (*slots[i] == NULL && (*slots[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return NULL;
    if (PyType_Ready(&LayoutType) < 0)
        return NULL;
    (void)have_avx2(); /* asked here, before any thread without the GIL asks */
#if HAVE_X8
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        simd_lanes = 8;
#endif
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "SIMD_LANES", simd_lanes) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LayoutType);
    if (PyModule_AddObject(m, "Layout", (PyObject *)&LayoutType) < 0) {
        Py_DECREF(&LayoutType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
