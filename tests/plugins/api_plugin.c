/* api_plugin.c - functions that exercise the worker API's edges
 * (test_plugin):
 *   spin   runs until taskq_result_cancelled(), then fails "spin: cancelled"
 *   nap    sleeps payload ms ignoring cancellation, then returns "napped"
 *   big    payload n -> n bytes of 'x' (one append per KiB)
 *   rc7    returns 7 without setting anything
 *   empty  returns 0 without setting anything
 *   whoami "task ID attempt A slot S"
 *   memscan payload: 64 hex digits of a 32-byte value XOR 0x5a (so the
 *          payload is not the value); result "copies N", how often the
 *          value occurs in this process's readable memory (test_secrets:
 *          does the process running the task hold the worker's key?) */
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <taskq.h>

static long payload_long(const void *p, size_t len)
{
    char buf[24];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return strtol(buf, NULL, 10);
}

static int spin(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)arg;
    while (!taskq_result_cancelled(out)) {
        struct pollfd pfd = {.fd = taskq_result_cancel_fd(out), .events = POLLIN};
        poll(&pfd, 1, 20);
    }
    return taskq_result_error(out, "spin: cancelled");
}

static int nap(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)arg;
    long ms = payload_long(p, len);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return taskq_result_set(out, "napped", 6);
}

static int big(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    char kib[1024];
    (void)arg;
    long n = payload_long(p, len);
    memset(kib, 'x', sizeof kib);
    while (n > 0) {
        size_t k = n > (long)sizeof kib ? sizeof kib : (size_t)n;
        if (taskq_result_append(out, kib, k) < 0)
            return -1;
        n -= (long)k;
    }
    return 0;
}

static int rc7(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)out;
    (void)arg;
    return 7;
}

static int empty(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)out;
    (void)arg;
    return 0;
}

static int whoami(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)p;
    (void)len;
    (void)arg;
    return taskq_result_printf(out, "task %llu attempt %u slot %d",
                               (unsigned long long)taskq_result_task_id(out),
                               (unsigned)taskq_result_attempt(out), taskq_result_slot(out));
}

/* The needle and the read buffer, one mapping that the scan leaves out
 * (the buffer holds copies of what it read). */
#define SCAN_CHUNK (1u << 20)
#define SCAN_NEEDLE 32
static uint8_t *scan_map;
static size_t scan_len;

/* Occurrences of needle in [lo, hi) of this process, read through mem. */
static long scan_range(int mem, uintptr_t lo, uintptr_t hi, const uint8_t *needle, uint8_t *buf)
{
    long count = 0;
    uintptr_t a = lo;
    while (a < hi) {
        size_t n = hi - a < SCAN_CHUNK ? (size_t)(hi - a) : SCAN_CHUNK;
        ssize_t r = pread(mem, buf, n, (off_t)a);
        if (r < SCAN_NEEDLE)
            break;
        const uint8_t *q = buf, *end = buf + r;
        while ((q = memmem(q, (size_t)(end - q), needle, SCAN_NEEDLE)) != NULL) {
            count++;
            q++;
        }
        if ((size_t)r < n || a + n >= hi)
            break;
        a += n - (SCAN_NEEDLE - 1); /* a match across the chunks' edge */
    }
    return count;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int memscan(const void *p, size_t len, taskq_result_t *out, void *arg)
{
    (void)arg;
    const char *h = p;
    if (len != 2 * SCAN_NEEDLE)
        return taskq_result_error(out, "memscan: 64 hex digits expected");
    scan_len = SCAN_NEEDLE + SCAN_CHUNK;
    scan_map = mmap(NULL, scan_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (scan_map == MAP_FAILED)
        return taskq_result_error(out, "memscan: mmap failed");
    uint8_t *needle = scan_map, *buf = scan_map + SCAN_NEEDLE;
    for (size_t i = 0; i < SCAN_NEEDLE; i++) {
        int hi = hexval(h[2 * i]), lo = hexval(h[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            munmap(scan_map, scan_len);
            return taskq_result_error(out, "memscan: 64 hex digits expected");
        }
        needle[i] = (uint8_t)((hi << 4 | lo) ^ 0x5a);
    }
    FILE *maps = fopen("/proc/self/maps", "r");
    int mem = open("/proc/self/mem", O_RDONLY);
    if (!maps || mem < 0) {
        if (maps)
            fclose(maps);
        if (mem >= 0)
            close(mem);
        munmap(scan_map, scan_len);
        return taskq_result_error(out, "memscan: cannot open /proc/self");
    }
    long count = 0, regions = 0;
    char line[1024];
    uintptr_t skip_lo = (uintptr_t)scan_map, skip_hi = skip_lo + scan_len;
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) != 3 || perms[0] != 'r')
            continue;
        /* Kernel pages, and huge reservations (a sanitizer's shadow)
         * that hold no heap. */
        if (strstr(line, "[vvar]") || strstr(line, "[vsyscall]") || hi - lo > (1ul << 30))
            continue;
        regions++;
        if (lo < skip_lo)
            count += scan_range(mem, lo, hi < skip_lo ? hi : skip_lo, needle, buf);
        if (hi > skip_hi)
            count += scan_range(mem, lo > skip_hi ? lo : skip_hi, hi, needle, buf);
    }
    fclose(maps);
    close(mem);
    memset(scan_map, 0, scan_len);
    munmap(scan_map, scan_len);
    return taskq_result_printf(out, "copies %ld in %ld regions", count, regions);
}

TASKQ_PLUGIN_DECLARE()
{
    (void)abi;
    static const struct {
        const char *name;
        taskq_fn fn;
    } fns[] = {{"spin", spin},   {"nap", nap},       {"big", big},        {"rc7", rc7},
               {"empty", empty}, {"whoami", whoami}, {"memscan", memscan}};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (taskq_worker_add(w, fns[i].name, fns[i].fn, NULL, err) < 0)
            return -1;
    return 0;
}
