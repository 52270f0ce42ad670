/* tq_config_fuzz.c - libFuzzer target for the settings parser: a config
 * file (read by libinih, each line handled by tq_config.c), environment
 * variables and flags (tq_args_expand's short forms and suggestions,
 * then tq_cfg_parse), against a table with every value type. Files and
 * flags come from operators, but a config file may be generated or
 * edited by tools: on any bytes the parse must succeed or fail with a
 * message, never crash, leak or overrun.
 *
 * Input layout (docs/fuzzing.md): the config file's bytes, then
 * optionally a 0 byte and the flags, one per line ('\n'); a flag line
 * "ENV=VALUE" sets TQ_FUZZ_ENV (the environment entry) instead. */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tq_args.h"
#include "tq_config.h"

typedef struct {
    int64_t n, ms, size;
    char *str, *mode, *config, *env;
    int flag;
    tq_strlist_t list;
} fz_settings_t;

#define O(f) offsetof(fz_settings_t, f)
static const tq_cfg_entry_t table[] = {
    {"count", TQ_CFG_INT, "5", 1, 1000, NULL, NULL, O(n), "N", "an integer"},
    {"timeout", TQ_CFG_MS, "1.5", 0, 3600000, NULL, NULL, O(ms), "SECONDS", "a duration"},
    {"max-size", TQ_CFG_SIZE, "64M", 1, (int64_t)1 << 40, NULL, NULL, O(size), "SIZE", "a size"},
    {"name", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, O(str), "NAME", "a string"},
    {"mode", TQ_CFG_ENUM, "interval", 0, 0, "always|interval|off", NULL, O(mode), "MODE",
     "a choice"},
    {"repair", TQ_CFG_FLAG, NULL, 0, 0, NULL, NULL, O(flag), NULL, "a flag"},
    {"fn", TQ_CFG_LIST, NULL, 0, 0, NULL, NULL, O(list), "FN", "repeatable"},
    {"env-value", TQ_CFG_STRING, NULL, 0, 0, NULL, "TQ_FUZZ_ENV", O(env), "V", "from the env"},
    {"config", TQ_CFG_STRING, NULL, 0, 0, NULL, NULL, O(config), "FILE", "the config file"},
    {NULL, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL},
};
static const tq_short_t shorts[] = {{'c', "count"}, {'n', "name"}, {'f', "fn"}, {0, NULL}};

/* At most this many flags from one input. */
#define FZ_MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[256];
    if (!path[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/tq-config-fuzz-%ld.conf", tmp && *tmp ? tmp : "/tmp",
                 (long)getpid());
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t flen = nul ? (size_t)(nul - data) : size;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    if (flen && write(fd, data, flen) != (ssize_t)flen)
        abort();
    close(fd);

    /* The flags: a copy of the rest, split at newlines. */
    size_t rlen = nul ? size - flen - 1 : 0;
    char *rest = malloc(rlen + 1);
    if (!rest)
        abort();
    if (rlen)
        memcpy(rest, nul + 1, rlen);
    rest[rlen] = 0;
    char *argv[FZ_MAX_ARGS + 4];
    int argc = 0;
    argv[argc++] = "prog";
    argv[argc++] = "--config";
    argv[argc++] = path;
    unsetenv("TQ_FUZZ_ENV");
    for (char *line = rest, *next; line && argc < FZ_MAX_ARGS + 3; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        if (!strncmp(line, "ENV=", 4))
            setenv("TQ_FUZZ_ENV", line + 4, 1);
        else
            argv[argc++] = line;
    }
    argv[argc] = NULL;

    fz_settings_t s;
    memset(&s, 0, sizeof s);
    char err[TQ_CFG_ERR_MAX];
    int argi = 1, help = 0;
    tq_args_t args;
    err[0] = 0;
    if (tq_args_expand(table, shorts, argc, argv, 1, &args, err, sizeof err) < 0) {
        if (!err[0])
            abort(); /* a refusal must say why */
    } else {
        (void)tq_cfg_has_flag(table, args.argc, args.argv, 1, "repair");
        err[0] = 0;
        if (tq_cfg_parse(table, &s, args.argc, args.argv, &argi, &help, err, sizeof err) < 0) {
            if (!err[0])
                abort();
        } else if (s.n < 1 || s.n > 1000 || s.ms < 0 || s.ms > 3600000 || s.size < 1 || !s.mode ||
                   (strcmp(s.mode, "always") && strcmp(s.mode, "interval") &&
                    strcmp(s.mode, "off")) ||
                   (s.flag != 0 && s.flag != 1) || argi > args.argc) {
            abort(); /* accepted a value outside its table entry */
        }
    }
    tq_args_free(&args);
    tq_cfg_free(table, &s);
    free(rest);
    return 0;
}
