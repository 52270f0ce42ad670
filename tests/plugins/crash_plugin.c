/* crash_plugin.c - functions that misbehave, for the execution modes
 * (test_modes):
 *   crashy  payload "crash": a segmentation fault; "abort": abort();
 *           "exit": _exit(7); "hog": allocates and touches 512 MiB
 *           (fails "hog: out of memory" when malloc says no); "spin":
 *           loops for ever; anything else: "PAYLOAD pid P init I slot S",
 *           P the process running it, I the process where this slot's
 *           slot_init ran.
 * Registered in thread mode; the tests pick the mode with --fn-mode. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <taskq.h>

#define HOG_BYTES ((size_t)512 * 1024 * 1024)

static int is(const void *p, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(p, word, len) == 0;
}

static int slot_init(void *arg, int slot, void **slot_ctx)
{
    (void)arg;
    (void)slot;
    long *pid = malloc(sizeof *pid);
    if (!pid)
        return -1;
    *pid = (long)getpid();
    *slot_ctx = pid;
    return 0;
}

static void slot_fini(void *arg, int slot, void *slot_ctx)
{
    (void)arg;
    (void)slot;
    free(slot_ctx);
}

static int crashy(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)arg;
    if (is(p, len, "crash")) {
        /* A real fault on a page that exists but may not be touched
         * (not a NULL store, which UBSan would report first). SIGSEGV's
         * default action, so a sanitizer build dies as a plain build
         * does. */
        signal(SIGSEGV, SIG_DFL);
        volatile char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page != MAP_FAILED)
            page[0] = 1;
        raise(SIGSEGV);
    }
    if (is(p, len, "abort"))
        abort();
    if (is(p, len, "exit"))
        _exit(7);
    if (is(p, len, "spin"))
        for (;;)
            pause();
    if (is(p, len, "hog")) {
        volatile char *m = malloc(HOG_BYTES);
        if (!m)
            return taskq_result_error(out, "hog: out of memory");
        for (size_t i = 0; i < HOG_BYTES; i += 4096)
            m[i] = 1;
        free((void *)m);
        return taskq_result_printf(out, "hog: allocated %zu bytes", HOG_BYTES);
    }
    const long *init = taskq_result_slot_ctx(out);
    return taskq_result_printf(out, "%.*s pid %ld init %ld slot %d", (int)(len > 64 ? 64 : len),
                               (const char *)p, (long)getpid(), init ? *init : 0L,
                               taskq_result_slot(out));
}

TASKQ_PLUGIN_DECLARE()
{
    (void)abi;
    taskq_fn_def_t d = TASKQ_FN_DEF_INIT;
    d.name = "crashy";
    d.fn = crashy;
    d.slot_init = slot_init;
    d.slot_fini = slot_fini;
    return taskq_worker_add_def(w, &d, err);
}
