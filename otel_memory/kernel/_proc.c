/* The task path's memory reading, compiled (optional: otel_memory.readings falls back to
 * os.pread when this module is not built).
 *
 * statm(fd, page_size) -> (rss, vms): one pread of an open /proc/<pid>/statm, parsed in C,
 * in bytes.
 * meminfo(fd) -> (available, total): MemAvailable and MemTotal of an open /proc/meminfo, bytes.
 *
 * Why: os.pread releases the GIL around the system call. Every task reads statm twice (and
 * meminfo every 10 ms), so in a
 * process whose other threads want the GIL (the monitor's events thread, the SDK's batch
 * processors, the host's own), each reading can hand the GIL over and wait to get it back: a
 * thread switch per task boundary. A read of a procfs file never blocks on I/O, so this one
 * keeps the GIL, as any short C function does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A file descriptor from a Python int; -1 with an exception set when it is not one. */
static int
fd_of(PyObject *value, int *fd)
{
    long number = PyLong_AsLong(value);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (number < 0 || number > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "not a file descriptor: %ld", number);
        return -1;
    }
    *fd = (int)number;
    return 0;
}

/* The file's text from offset 0, NUL-terminated, with the GIL held (a procfs read never
 * blocks); -1 with OSError set when the read fails. */
static int
read_text(int fd, char *text, size_t size)
{
    ssize_t got = pread(fd, text, size - 1, 0);
    if (got < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    text[got] = '\0';
    return 0;
}

static PyObject *
statm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "statm(fd, page_size) takes 2 arguments");
        return NULL;
    }
    if (fd_of(args[0], &fd) < 0) {
        return NULL;
    }
    long long page_size = PyLong_AsLongLong(args[1]);
    if (page_size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    char text[256];
    if (read_text(fd, text, sizeof(text)) < 0) {
        return NULL;
    }
    /* "size resident shared text lib data dt", in pages */
    char *end = NULL;
    errno = 0;
    unsigned long long size = strtoull(text, &end, 10);
    char *after_size = end;
    unsigned long long resident = strtoull(after_size, &end, 10);
    if (errno != 0 || after_size == text || end == after_size) {
        PyErr_Format(PyExc_ValueError, "unexpected statm content: %.80s", text);
        return NULL;
    }
    return Py_BuildValue(
        "(LL)", (long long)(resident * (unsigned long long)page_size),
        (long long)(size * (unsigned long long)page_size));
}

/* The value of `key` ("MemTotal:") in /proc/meminfo text, in bytes; -1 when absent. */
static long long
meminfo_field(const char *text, const char *key)
{
    size_t key_length = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, key_length) == 0) {
            char *end = NULL;
            errno = 0;
            unsigned long long kib = strtoull(line + key_length, &end, 10);
            if (errno != 0 || end == line + key_length) {
                return -1;
            }
            return (long long)(kib * 1024ULL);
        }
        line = strchr(line, '\n');
        if (line != NULL) {
            line++;
        }
    }
    return -1;
}

static PyObject *
meminfo(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "meminfo(fd) takes 1 argument");
        return NULL;
    }
    if (fd_of(args[0], &fd) < 0) {
        return NULL;
    }
    char text[16384];
    if (read_text(fd, text, sizeof(text)) < 0) {
        return NULL;
    }
    long long available = meminfo_field(text, "MemAvailable:");
    long long total = meminfo_field(text, "MemTotal:");
    if (available < 0 || total < 0) {
        PyErr_SetString(PyExc_ValueError, "no MemAvailable/MemTotal in meminfo");
        return NULL;
    }
    return Py_BuildValue("(LL)", available, total);
}

static PyMethodDef proc_methods[] = {
    {"statm", (PyCFunction)(void (*)(void))statm, METH_FASTCALL,
     "statm(fd, page_size) -> (rss, vms)\n\n"
     "RSS and VMS in bytes from an open /proc/<pid>/statm, read without releasing the GIL."},
    {"meminfo", (PyCFunction)(void (*)(void))meminfo, METH_FASTCALL,
     "meminfo(fd) -> (available, total)\n\n"
     "MemAvailable and MemTotal in bytes from an open /proc/meminfo, read without releasing "
     "the GIL."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot proc_slots[] = {
    {0, NULL},
};

static struct PyModuleDef proc_module = {
    PyModuleDef_HEAD_INIT,
    "otel_memory.kernel._proc",
    "The task path's memory reading, compiled (see otel_memory.readings).",
    0,
    proc_methods,
    proc_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__proc(void)
{
    return PyModuleDef_Init(&proc_module);
}
