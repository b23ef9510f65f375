/* What the C extensions share: a growable byte buffer and the hex digit table.
 * Included by indexer/_rows.c and indexer/_proof.c (each compiles its own static copy). */
#ifndef INDEXER_BUF_H
#define INDEXER_BUF_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

/* Make room for `extra` more bytes (-1 on failure, with MemoryError set when the thread
 * holds the GIL; a caller that released it raises MemoryError once it has it back). The raw
 * allocator needs no GIL: tries are built with it released. Free with buf_free. */
static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *data = PyMem_RawRealloc(b->data, (size_t)cap);
    if (data == NULL) {
        if (PyGILState_Check())
            PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static void buf_free(Buf *b) {
    PyMem_RawFree(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int buf_append(Buf *b, const void *src, Py_ssize_t n) {
    if (n == 0)
        return 0;
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

/* A hex digit's value + 1 (0: not a hex digit), upper and lower case. */
static const signed char HEX[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
    ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
    ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* hex_to_bytes: out[i] = the byte of hex digits s[2i], s[2i+1], for i < m; 1 when every
 * digit is one (upper or lower case, as HEX), else 0 (out then holds garbage). Where the
 * CPU has AVX2 (checked once), 32 digits at a time; the rest through HEX. No Python API. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HEX_SIMD 1

__attribute__((target("avx2"))) static Py_ssize_t hex_to_bytes_avx2(const unsigned char *s,
                                                                    Py_ssize_t m,
                                                                    unsigned char *out,
                                                                    int *valid) {
    const __m256i below_0 = _mm256_set1_epi8('0' - 1), above_9 = _mm256_set1_epi8('9' + 1);
    const __m256i below_a = _mm256_set1_epi8('a' - 1), above_f = _mm256_set1_epi8('f' + 1);
    const __m256i lower = _mm256_set1_epi8(0x20), zero = _mm256_set1_epi8('0');
    const __m256i ten = _mm256_set1_epi8('a' - 10), weights = _mm256_set1_epi16(0x0110);
    __m256i ok = _mm256_set1_epi8(-1);
    Py_ssize_t i = 0;
    for (; i + 16 <= m; i += 16) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(s + 2 * i));
        __m256i lc = _mm256_or_si256(c, lower); /* 'A'-'F' -> 'a'-'f'; bytes >= 0x80 stay < 0 */
        __m256i digit = _mm256_and_si256(_mm256_cmpgt_epi8(c, below_0), _mm256_cmpgt_epi8(above_9, c));
        __m256i letter = _mm256_and_si256(_mm256_cmpgt_epi8(lc, below_a), _mm256_cmpgt_epi8(above_f, lc));
        ok = _mm256_and_si256(ok, _mm256_or_si256(digit, letter));
        __m256i value = _mm256_blendv_epi8(_mm256_sub_epi8(lc, ten), _mm256_sub_epi8(c, zero), digit);
        __m256i pairs = _mm256_maddubs_epi16(value, weights); /* 16 * first + second */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(pairs, pairs), 0x08);
        _mm_storeu_si128((__m128i *)(out + i), _mm256_castsi256_si128(packed));
    }
    *valid = _mm256_movemask_epi8(ok) == -1;
    return i;
}

/* Whether the CPU has AVX2 (asked once: each module asks at import). */
static int have_avx2(void) {
    static int avx2 = -1;
    if (avx2 < 0) {
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return avx2;
}

/* The index of the first byte from p[i] that is a quote or a backslash (or, with `high`,
 * not ASCII), or where fewer than 32 bytes are left: JSON strings skipped 32 bytes at a
 * time (the caller goes on from there). */
__attribute__((target("avx2"))) static inline Py_ssize_t
string_run_avx2(const unsigned char *p, Py_ssize_t n, Py_ssize_t i, int high) {
    const __m256i quote = _mm256_set1_epi8('"'), backslash = _mm256_set1_epi8('\\');
    while (i + 32 <= n) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(p + i));
        uint32_t stop = (uint32_t)_mm256_movemask_epi8(
            _mm256_or_si256(_mm256_cmpeq_epi8(c, quote), _mm256_cmpeq_epi8(c, backslash)));
        if (high)
            stop |= (uint32_t)_mm256_movemask_epi8(c);
        if (stop)
            return i + __builtin_ctz(stop);
        i += 32;
    }
    return i;
}
#else
#define HEX_SIMD 0
static inline int have_avx2(void) { return 0; }
static inline Py_ssize_t string_run_avx2(const unsigned char *p, Py_ssize_t n, Py_ssize_t i, int high) {
    (void)p, (void)n, (void)high;
    return i;
}
#endif

static int hex_to_bytes(const unsigned char *s, Py_ssize_t m, unsigned char *out) {
    int valid = 1;
    Py_ssize_t i = 0;
#if HEX_SIMD
    if (m >= 16 && have_avx2())
        i = hex_to_bytes_avx2(s, m, out, &valid);
#endif
    for (; i < m; i++) {
        int hi = HEX[s[2 * i]], lo = HEX[s[2 * i + 1]];
        valid &= hi != 0 && lo != 0;
        out[i] = (unsigned char)(((hi - 1) << 4) | (lo - 1));
    }
    return valid;
}

/* One call site reading one attribute of a batch's objects, all of one type: where that
 * type keeps it at a fixed offset (a member descriptor: msgspec's Structs, __slots__) it is
 * read there, else through PyObject_GetAttr. The cache holds the type and the name it was
 * filled for (strong references: a type freed and another made at its address can never
 * match; another name fills it again). */
typedef struct {
    PyTypeObject *type;
    PyObject *name;    /* the attribute it was filled for (another one fills it again) */
    Py_ssize_t offset; /* -1: no fixed offset */
} AttrCache;

static void attr_cache_clear(AttrCache *cache) {
    Py_CLEAR(cache->type);
    Py_CLEAR(cache->name);
    cache->offset = -1;
}

/* obj.name, a new reference (NULL with AttributeError when it has none). */
static PyObject *cached_getattr(PyObject *obj, PyObject *name, AttrCache *cache) {
    PyTypeObject *type = Py_TYPE(obj);
    if (cache->type != type || cache->name != name) {
        Py_ssize_t offset = -1;
        PyObject *descr = _PyType_Lookup(type, name); /* borrowed */
        if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READ_RESTRICTED))
                offset = m->offset;
        }
        Py_INCREF(type);
        Py_XSETREF(cache->type, type);
        Py_INCREF(name);
        Py_XSETREF(cache->name, name);
        cache->offset = offset;
    }
    if (cache->offset >= 0) {
        PyObject *v = *(PyObject **)((char *)obj + cache->offset);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(obj, name); /* unset: the AttributeError it raises */
}

#endif
