/* The heap census's compiled pass (optional: otel_memory.census falls back to pure Python).
 *
 * tally(objects, chunk_size, between_chunks, plan, fallback) -> (totals, tuples, tuple_items)
 * instances(objects, types, limit) -> list (the reachability check's sample; see below)
 * referrers(get_referrers, targets, limit) -> (list, calls) (its backward steps; see below)
 *
 * 1. Calls objects() (gc.get_objects) and, before any Python code can run, counts the exact
 *    tuples of the returned list and removes them from it in place: a tuple another thread is
 *    still building (tuple(genexpr)) must not be referenced when that thread resizes it, or
 *    CPython raises SystemError in that thread (gh-59313).
 * 2. Calls between_chunks() (time.sleep(0): threads that waited go first), then tallies the
 *    rest from the end of the list in chunks of chunk_size objects, dropping each chunk from
 *    the list and calling between_chunks() after it.
 *
 * Sizes follow plan(cls, sample) -> (sizeof, extra), called once per type: each object costs
 * extra bytes, plus sizeof(obj) when sizeof is not None; when sizeof raises an Exception the
 * object costs fallback(obj) instead. totals is {type: (count, size)}.
 *
 * Only the documented C API of CPython 3.10-3.13 is used (no _Py names; the list macros only in
 * the tuple pass, where no Python code runs). No object is referenced after the call returns but
 * through totals' keys. between_chunks, plan, sizeof and fallback may run any Python code
 * (release the GIL, even change the list), so the tally re-checks the list at every access.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    PyObject *type;      /* strong reference; NULL: a free slot */
    PyObject *sizeof_fn; /* strong reference, or NULL: every object costs `extra` */
    Py_ssize_t extra;
    Py_ssize_t count;
    Py_ssize_t size;
} Entry;

/* Types by address, open addressing: a few thousand types, looked up once per run of objects
 * of one type (the last type is remembered). */
typedef struct {
    Entry *slots;
    size_t mask; /* capacity - 1, capacity a power of two */
    size_t used;
} Table;

static size_t
slot_of(const Table *table, PyObject *type)
{
    size_t i = (size_t)(((uintptr_t)type >> 4) * (uintptr_t)0x9E3779B97F4A7C15ull) & table->mask;
    while (table->slots[i].type != NULL && table->slots[i].type != type) {
        i = (i + 1) & table->mask;
    }
    return i;
}

static int
table_init(Table *table, size_t capacity)
{
    table->slots = PyMem_Calloc(capacity, sizeof(Entry));
    if (table->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    table->mask = capacity - 1;
    table->used = 0;
    return 0;
}

static void
table_free(Table *table)
{
    if (table->slots == NULL) {
        return;
    }
    for (size_t i = 0; i <= table->mask; i++) {
        Py_XDECREF(table->slots[i].type);
        Py_XDECREF(table->slots[i].sizeof_fn);
    }
    PyMem_Free(table->slots);
    table->slots = NULL;
}

static int
table_grow(Table *table)
{
    Table bigger;
    if (table_init(&bigger, (table->mask + 1) * 2) < 0) {
        return -1;
    }
    for (size_t i = 0; i <= table->mask; i++) {
        if (table->slots[i].type != NULL) {
            bigger.slots[slot_of(&bigger, table->slots[i].type)] = table->slots[i];
        }
    }
    bigger.used = table->used;
    PyMem_Free(table->slots);
    *table = bigger;
    return 0;
}

/* The entry of obj's type, planned (plan(type, obj)) and added on first sight; NULL on error. */
static Entry *
entry_for(Table *table, PyObject *type, PyObject *obj, PyObject *plan)
{
    size_t i = slot_of(table, type);
    if (table->slots[i].type == type) {
        return &table->slots[i];
    }
    Py_INCREF(type); /* the table's reference, taken now: plan() may reassign obj.__class__ */
    PyObject *planned = PyObject_CallFunctionObjArgs(plan, type, obj, NULL);
    if (planned == NULL) {
        Py_DECREF(type);
        return NULL;
    }
    PyObject *sizeof_fn = NULL;
    Py_ssize_t extra = -1;
    if (PyTuple_Check(planned) && PyTuple_Size(planned) == 2) {
        sizeof_fn = PyTuple_GetItem(planned, 0);
        extra = PyLong_AsSsize_t(PyTuple_GetItem(planned, 1));
    }
    if (extra < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "plan() must return (sizeof or None, extra >= 0)");
        }
        Py_DECREF(planned);
        Py_DECREF(type);
        return NULL;
    }
    if (sizeof_fn == Py_None) {
        sizeof_fn = NULL;
    }
    Py_XINCREF(sizeof_fn);
    Py_DECREF(planned);
    /* plan() ran Python code, but nothing else reaches the table: i is still free. */
    if ((table->used + 1) * 2 > table->mask + 1) {
        if (table_grow(table) < 0) {
            Py_XDECREF(sizeof_fn);
            Py_DECREF(type);
            return NULL;
        }
        i = slot_of(table, type);
    }
    Entry *entry = &table->slots[i];
    entry->type = type;
    entry->sizeof_fn = sizeof_fn;
    entry->extra = extra;
    table->used++;
    return entry;
}

/* The bytes obj costs under its entry's plan; -1 with an exception set on failure. */
static Py_ssize_t
size_of(const Entry *entry, PyObject *obj, PyObject *fallback)
{
    if (entry->sizeof_fn == NULL) {
        return entry->extra;
    }
    Py_ssize_t size = -1;
    PyObject *result = PyObject_CallOneArg(entry->sizeof_fn, obj);
    if (result != NULL) {
        size = PyLong_AsSsize_t(result);
        Py_DECREF(result);
        if (size >= 0 && size <= PY_SSIZE_T_MAX - entry->extra) {
            return size + entry->extra;
        }
    }
    if (result != NULL && size >= 0) {
        PyErr_SetString(PyExc_OverflowError, "object size out of range");
    }
    else if (result != NULL && !PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "__sizeof__() should return >= 0");
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyErr_Clear();
    result = PyObject_CallOneArg(fallback, obj);
    if (result == NULL) {
        return -1;
    }
    size = PyLong_AsSsize_t(result);
    Py_DECREF(result);
    if (size < 0 && !PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "fallback() must return an int >= 0");
    }
    return size;
}

/* Count the exact tuples of objs and remove them, without running any Python code until the
 * last of them is off the list. The list is permuted in place (the tuples swapped to the end)
 * and stays a valid list throughout; PyList_SetSlice then drops the tuples (none dies there
 * unless the caller's own list held its last reference: never with gc.get_objects()). One read
 * per object, most of them cache misses: this pass costs about half of gc.get_objects(), and
 * walking backwards (the objects gc.get_objects() touched last first) saves a sixth of that. */
static int
drop_tuples(PyObject *objs, Py_ssize_t *tuples, Py_ssize_t *items)
{
    Py_ssize_t n = PyList_GET_SIZE(objs);
    Py_ssize_t tail = n; /* objs[tail:] are the tuples found so far */
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        PyObject *obj = PyList_GET_ITEM(objs, i);
        if (!PyTuple_CheckExact(obj)) {
            continue;
        }
        *tuples += 1;
        *items += PyTuple_GET_SIZE(obj);
        tail--;
        if (tail != i) { /* slot `tail` holds a non-tuple: swap */
            PyList_SET_ITEM(objs, i, PyList_GET_ITEM(objs, tail));
            PyList_SET_ITEM(objs, tail, obj);
        }
    }
    return PyList_SetSlice(objs, tail, n, NULL);
}

/* Add objs[start:] to the table and drop it from the list. entry_for is the only place the table
 * grows (moving its entries), and what it returns replaces the remembered entry at once. */
static int
tally_chunk(Table *table, PyObject *objs, Py_ssize_t start, PyObject *plan, PyObject *fallback,
            PyObject **last_type, Entry **last_entry)
{
    for (Py_ssize_t i = start; i < PyList_Size(objs); i++) {
        PyObject *obj = PyList_GetItem(objs, i);
        if (obj == NULL) {
            return -1;
        }
        Py_INCREF(obj); /* plan() and sizeof() may run code that changes the list */
        PyObject *type = (PyObject *)Py_TYPE(obj);
        Entry *entry = *last_entry;
        if (type != *last_type) {
            entry = entry_for(table, type, obj, plan);
            if (entry == NULL) {
                Py_DECREF(obj);
                return -1;
            }
            *last_type = type;
            *last_entry = entry;
        }
        Py_ssize_t size = size_of(entry, obj, fallback);
        Py_DECREF(obj);
        if (size < 0) {
            return -1;
        }
        if (entry->size > PY_SSIZE_T_MAX - size) {
            PyErr_SetString(PyExc_OverflowError, "census size out of range");
            return -1;
        }
        entry->count++;
        entry->size += size;
    }
    return PyList_SetSlice(objs, start, PY_SSIZE_T_MAX, NULL);
}

static PyObject *
totals_of(const Table *table)
{
    PyObject *totals = PyDict_New();
    if (totals == NULL) {
        return NULL;
    }
    for (size_t i = 0; i <= table->mask; i++) {
        const Entry *entry = &table->slots[i];
        if (entry->type == NULL) {
            continue;
        }
        PyObject *row = Py_BuildValue("(nn)", entry->count, entry->size);
        if (row == NULL || PyDict_SetItem(totals, entry->type, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(totals);
            return NULL;
        }
        Py_DECREF(row);
    }
    return totals;
}

static PyObject *
tally(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects, *between_chunks, *plan, *fallback;
    Py_ssize_t chunk_size;
    if (!PyArg_ParseTuple(args, "OnOOO:tally", &objects, &chunk_size, &between_chunks, &plan,
                          &fallback)) {
        return NULL;
    }
    if (chunk_size < 1) {
        chunk_size = 1;
    }
    PyObject *objs = PyObject_CallObject(objects, NULL);
    if (objs == NULL) {
        return NULL;
    }
    if (!PyList_Check(objs)) {
        PyErr_SetString(PyExc_TypeError, "objects() must return a list");
        Py_DECREF(objs);
        return NULL;
    }
    Py_ssize_t tuples = 0, items = 0;
    Table table = {NULL, 0, 0};
    PyObject *totals = NULL;
    PyObject *last_type = NULL;
    Entry *last_entry = NULL;
    if (drop_tuples(objs, &tuples, &items) < 0 || table_init(&table, 1024) < 0) {
        goto done;
    }
    PyObject *paused = PyObject_CallObject(between_chunks, NULL);
    if (paused == NULL) {
        goto done;
    }
    Py_DECREF(paused);
    Py_ssize_t n;
    while ((n = PyList_Size(objs)) > 0) {
        Py_ssize_t start = n > chunk_size ? n - chunk_size : 0;
        if (tally_chunk(&table, objs, start, plan, fallback, &last_type, &last_entry) < 0) {
            goto done;
        }
        paused = PyObject_CallObject(between_chunks, NULL);
        if (paused == NULL) {
            goto done;
        }
        Py_DECREF(paused);
    }
    if (!PyErr_Occurred()) {
        PyObject *counted = totals_of(&table);
        if (counted != NULL) {
            totals = Py_BuildValue("(Nnn)", counted, tuples, items);
        }
    }
done:
    table_free(&table);
    Py_DECREF(objs);
    return totals;
}

/* instances(objects, types, limit) -> list
 *
 * Up to limit objects of objects() (gc.get_objects) whose exact type is one of the tuple types,
 * walking the list from its end: the newest objects of a collector generation come first. The
 * result list is made before objects() is called, and nothing between that call and the release
 * of its list allocates a GC object or runs Python code, so no half-built tuple of another
 * thread is referenced when that thread may run (gh-59313; types must not include tuple).
 */
static PyObject *
instances(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *objects, *types;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OO!n:instances", &objects, &PyTuple_Type, &types, &limit)) {
        return NULL;
    }
    Py_ssize_t ntypes = PyTuple_GET_SIZE(types);
    for (Py_ssize_t j = 0; j < ntypes; j++) {
        if (PyTuple_GET_ITEM(types, j) == (PyObject *)&PyTuple_Type) {
            PyErr_SetString(PyExc_ValueError, "instances() cannot collect tuples");
            return NULL;
        }
    }
    PyObject *found = PyList_New(0);
    if (found == NULL) {
        return NULL;
    }
    PyObject *objs = PyObject_CallObject(objects, NULL);
    if (objs == NULL) {
        Py_DECREF(found);
        return NULL;
    }
    if (!PyList_Check(objs)) {
        PyErr_SetString(PyExc_TypeError, "objects() must return a list");
        Py_DECREF(objs);
        Py_DECREF(found);
        return NULL;
    }
    for (Py_ssize_t i = PyList_GET_SIZE(objs) - 1; i >= 0 && PyList_GET_SIZE(found) < limit; i--) {
        PyObject *item = PyList_GET_ITEM(objs, i);
        PyObject *type = (PyObject *)Py_TYPE(item);
        for (Py_ssize_t j = 0; j < ntypes; j++) {
            if (PyTuple_GET_ITEM(types, j) == type) {
                /* list growth reallocates the item array only: no GC allocation, no Python */
                if (PyList_Append(found, item) < 0) {
                    Py_DECREF(objs);
                    Py_DECREF(found);
                    return NULL;
                }
                break;
            }
        }
    }
    Py_DECREF(objs);
    return found;
}

/* referrers(get_referrers, targets, limit) -> (list, calls)
 *
 * get_referrers(*targets) (gc.get_referrers) without the exact tuples that nothing the collector
 * sees refers to. A tuple another thread is still building (tuple(genexpr)) is held by that
 * thread's C code only, and if it is referenced when that thread resizes it, CPython raises
 * SystemError there (gh-59313); once built it is published (something holds it) and never
 * resized again. So the tuples found are moved into a probe tuple made before the first call
 * (no GC allocation, which may run a collection and its Python callbacks before 3.12, happens
 * while an unchecked tuple is referenced, but get_referrers' own result list and, from 3.13, its
 * copy of the arguments in the second call), their holders are found with a second
 * get_referrers call, each holder's tp_traverse marks the tuples it holds, and only those are
 * kept. The probe's free slots and its last one hold a sentinel that nothing else refers to: a
 * holder that refers to it is the probe or the call's copy of it, not a holder. At most limit
 * tuples are checked, the others are dropped, as is the targets tuple (or its copy).
 * calls: get_referrers calls made (1, or 2 when tuples were found).
 */
typedef struct {
    PyObject *probe;
    PyObject *sentinel;
    Py_ssize_t count;
    char *pending; /* what the holder being traversed refers to */
    int ours;      /* it refers to the sentinel */
} Probe;

static int
mark_held(PyObject *obj, void *arg)
{
    Probe *probe = (Probe *)arg;
    if (obj == probe->sentinel) {
        probe->ours = 1;
        return 0;
    }
    for (Py_ssize_t i = 0; i < probe->count; i++) {
        if (PyTuple_GET_ITEM(probe->probe, i) == obj) {
            probe->pending[i] = 1;
        }
    }
    return 0;
}

static PyObject *
referrers(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *get_referrers, *targets;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OO!n:referrers", &get_referrers, &PyTuple_Type, &targets,
                          &limit)) {
        return NULL;
    }
    if (limit < 1) {
        limit = 1;
    }
    PyObject *sentinel = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (sentinel == NULL) {
        return NULL;
    }
    PyObject *probe = PyTuple_New(limit + 1);
    char *marks = PyMem_Calloc((size_t)limit, 2); /* held, then pending */
    if (probe == NULL || marks == NULL) {
        Py_XDECREF(probe);
        Py_DECREF(sentinel);
        PyMem_Free(marks);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i <= limit; i++) {
        PyTuple_SET_ITEM(probe, i, Py_NewRef(sentinel));
    }
    PyObject *result = NULL;
    PyObject *found = PyObject_Call(get_referrers, targets, NULL);
    if (found == NULL) {
        goto done;
    }
    if (!PyList_Check(found)) {
        PyErr_SetString(PyExc_TypeError, "get_referrers() must return a list");
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(found), kept = 0, probed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(found, i);
        if (!PyTuple_CheckExact(item)) {
            PyList_SET_ITEM(found, kept++, item);
        }
        else if (item != targets && probed < limit) {
            Py_DECREF(sentinel); /* the slot's reference to it */
            PyTuple_SET_ITEM(probe, probed++, item); /* the list's reference moves */
        }
        else {
            Py_DECREF(item); /* still held by its owner: nothing is freed here */
        }
    }
    Py_SET_SIZE(found, kept);
    Py_ssize_t calls = 1;
    if (probed > 0) {
        PyObject *holders = PyObject_Call(get_referrers, probe, NULL);
        calls = 2;
        if (holders == NULL) {
            goto done;
        }
        char *held = marks, *pending = marks + limit;
        Probe visit = {probe, sentinel, probed, pending, 0};
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(holders); i++) {
            PyObject *holder = PyList_GET_ITEM(holders, i);
            traverseproc traverse = Py_TYPE(holder)->tp_traverse;
            if (!PyObject_IS_GC(holder) || traverse == NULL) {
                continue;
            }
            memset(pending, 0, (size_t)probed);
            visit.ours = 0;
            traverse(holder, mark_held, &visit);
            for (Py_ssize_t j = 0; j < probed && !visit.ours; j++) {
                held[j] |= pending[j];
            }
        }
        Py_DECREF(holders);
        for (Py_ssize_t i = 0; i < probed; i++) {
            PyObject *tuple = PyTuple_GET_ITEM(probe, i);
            PyTuple_SET_ITEM(probe, i, Py_NewRef(sentinel));
            int failed = held[i] && PyList_Append(found, tuple) < 0;
            Py_DECREF(tuple);
            if (failed) {
                goto done;
            }
        }
    }
    result = Py_BuildValue("(On)", found, calls);
done:
    Py_XDECREF(found);
    Py_DECREF(probe);
    Py_DECREF(sentinel);
    PyMem_Free(marks);
    return result;
}

static PyMethodDef census_methods[] = {
    {"tally", tally, METH_VARARGS,
     "tally(objects, chunk_size, between_chunks, plan, fallback) -> (totals, tuples, items)\n\n"
     "Count and size objects() by type; see otel_memory/activity/_census.c."},
    {"referrers", referrers, METH_VARARGS,
     "referrers(get_referrers, targets, limit) -> (list, calls)\n\n"
     "get_referrers(*targets) without the exact tuples nothing visible holds."},
    {"instances", instances, METH_VARARGS,
     "instances(objects, types, limit) -> list\n\n"
     "Up to limit objects of objects() of exact type in types, from the end of the list."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot census_slots[] = {
    {0, NULL},
};

static struct PyModuleDef census_module = {
    PyModuleDef_HEAD_INIT,
    "otel_memory.activity._census",
    "The heap census's compiled pass (see otel_memory.census).",
    0,
    census_methods,
    census_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__census(void)
{
    return PyModuleDef_Init(&census_module);
}
