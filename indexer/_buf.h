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
