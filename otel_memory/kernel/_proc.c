/* The task path's memory reading, compiled (optional: otel_memory.readings falls back to
 * os.pread when this module is not built).
 *
 * statm(fd, page_size) -> (rss, vms): one pread of an open /proc/<pid>/statm, parsed in C,
 * in bytes.
 * meminfo(fd) -> (available, total): MemAvailable and MemTotal of an open /proc/meminfo, bytes.
 *
 * unlink_at_sigterm(path) -> bool: a SIGTERM with its default action first removes `path`
 * (see below).
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
#include <signal.h>
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


/* ---- A default-action SIGTERM that removes this run's state file first ----------------------
 *
 * A process stopped by SIGTERM with no handler of its own (a pool worker ended by terminate(),
 * a script stopped by its supervisor) ends at once, with no atexit: its run-state file would
 * stay and the next start would report a clean stop as a death. A Python handler cannot do
 * this: it runs only when the main thread runs Python again, which a main thread blocked in a
 * lock never does, and the process would not end. This C handler runs on whichever thread
 * receives the signal, does only async-signal-safe work (getpid, unlink, raise), and ends the
 * process by the default action as before, exit status included.
 *
 * It is installed only while SIGTERM's action is the default (never over a host's handler or
 * SIG_IGN). A host that installs its own handler later replaces it, as it would the default.
 * Two path buffers: the one being written is never the one the handler may be reading. The pid
 * check keeps a forked child that has not begun its own run state from removing its parent's.
 */

#define TERM_PATH_MAX 4096
static char term_paths[2][TERM_PATH_MAX];
static volatile sig_atomic_t term_slot = -1; /* the buffer in use; -1: none */
static volatile sig_atomic_t term_pid = 0;   /* whose file it is */

static void
on_sigterm(int signum)
{
    int saved_errno = errno;
    int slot = term_slot;
    if (slot >= 0 && term_pid == (sig_atomic_t)getpid()) {
        unlink(term_paths[slot]);
    }
    errno = saved_errno;
    /* SA_RESETHAND made the action the default again: the signal, blocked while this handler
     * runs, is delivered as it returns and ends the process as it would have without us. */
    raise(signum);
}

/* Whether our handler is SIGTERM's action; installs it when the action is the default. */
static int
term_handler_in_place(void)
{
    struct sigaction current;
    if (sigaction(SIGTERM, NULL, &current) != 0) {
        return 0;
    }
    if (!(current.sa_flags & SA_SIGINFO) && current.sa_handler == on_sigterm) {
        return 1;
    }
    if ((current.sa_flags & SA_SIGINFO) || current.sa_handler != SIG_DFL) {
        return 0; /* the host's handler, or SIG_IGN: theirs */
    }
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = on_sigterm;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;
    return sigaction(SIGTERM, &action, NULL) == 0;
}

static PyObject *
unlink_at_sigterm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "unlink_at_sigterm(path) takes 1 argument");
        return NULL;
    }
    if (args[0] == Py_None) {
        term_slot = -1;
        Py_RETURN_FALSE;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "unlink_at_sigterm(path): path must be bytes or None");
        return NULL;
    }
    Py_ssize_t length = PyBytes_GET_SIZE(args[0]);
    const char *path = PyBytes_AS_STRING(args[0]);
    if (length <= 0 || length >= TERM_PATH_MAX || memchr(path, '\0', (size_t)length) != NULL) {
        PyErr_Format(PyExc_ValueError, "unlink_at_sigterm(path): not a usable path: %R", args[0]);
        return NULL;
    }
    int slot = term_slot == 0 ? 1 : 0;
    memcpy(term_paths[slot], path, (size_t)length);
    term_paths[slot][length] = '\0';
    term_pid = (sig_atomic_t)getpid();
    term_slot = slot;
    if (term_handler_in_place()) {
        Py_RETURN_TRUE;
    }
    term_slot = -1;
    Py_RETURN_FALSE;
}

static PyMethodDef proc_methods[] = {
    {"statm", (PyCFunction)(void (*)(void))statm, METH_FASTCALL,
     "statm(fd, page_size) -> (rss, vms)\n\n"
     "RSS and VMS in bytes from an open /proc/<pid>/statm, read without releasing the GIL."},
    {"meminfo", (PyCFunction)(void (*)(void))meminfo, METH_FASTCALL,
     "meminfo(fd) -> (available, total)\n\n"
     "MemAvailable and MemTotal in bytes from an open /proc/meminfo, read without releasing "
     "the GIL."},
    {"unlink_at_sigterm", (PyCFunction)(void (*)(void))unlink_at_sigterm, METH_FASTCALL,
     "unlink_at_sigterm(path) -> bool\n\n"
     "Have a SIGTERM with its default action remove `path` (bytes) before it ends this process;\n"
     "None forgets the path. True when the handler is SIGTERM's action (it is installed only\n"
     "over the default action)."},
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
