/* tq_config.c - table-driven settings: defaults, environment variables,
 * command-line flags, --help and Markdown docs from one table.
 *
 * Ownership: parse and defaults never free a pointer they did not store
 * themselves in the same call, so a settings struct may start out
 * uninitialised; tq_cfg_free releases what they stored. Zero the struct
 * (or call tq_cfg_free) before parsing into it again. */
#include "tq_config.h"

#include "tq_util.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Longest flag name accepted when matching "--name=value". */
#define TQ_CFG_NAME_MAX 64
/* Longest value quoted back in an error message. */
#define TQ_CFG_QUOTE_MAX 64
/* Where the help text starts at most in --help output. */
#define TQ_CFG_USAGE_COL_MAX 34

/* Per-entry bookkeeping for one parse. */
typedef struct {
    unsigned char stored;    /* a heap value we stored is in the struct */
    unsigned char from_flag; /* a flag set it (LIST: later flags append) */
    int file_line;           /* the config file line that set it, or 0 */
} track_t;

static void *field(void *settings, const tq_cfg_entry_t *e) { return (char *)settings + e->offset; }

static int64_t *i64_field(void *settings, const tq_cfg_entry_t *e)
{
    return (int64_t *)field(settings, e);
}

static size_t table_len(const tq_cfg_entry_t *table)
{
    size_t n = 0;
    while (table[n].name)
        n++;
    return n;
}

static int bounded(const tq_cfg_entry_t *e) { return !(e->min == 0 && e->max == 0); }

/* Copy a user value for an error message, cut if long. */
static void quote(char *dst, size_t size, const char *v)
{
    if (tq_strlcpy(dst, v, size) < 0 && size > 4)
        memcpy(dst + size - 4, "...", 4);
}

/* Milliseconds as decimal seconds: 1500 -> "1.5", 60000 -> "60". */
static void fmt_seconds(char *dst, size_t size, int64_t ms)
{
    const char *sign = ms < 0 ? "-" : "";
    uint64_t a = ms < 0 ? (uint64_t)0 - (uint64_t)ms : (uint64_t)ms;
    uint64_t frac = a % 1000;
    if (frac == 0)
        snprintf(dst, size, "%s%" PRIu64, sign, a / 1000);
    else if (frac % 100 == 0)
        snprintf(dst, size, "%s%" PRIu64 ".%01" PRIu64, sign, a / 1000, frac / 100);
    else if (frac % 10 == 0)
        snprintf(dst, size, "%s%" PRIu64 ".%02" PRIu64, sign, a / 1000, frac / 10);
    else
        snprintf(dst, size, "%s%" PRIu64 ".%03" PRIu64, sign, a / 1000, frac);
}

/* Bytes with the largest exact K/M/G suffix: 65536 -> "64K". */
static void fmt_size(char *dst, size_t size, int64_t v)
{
    static const char suffix[] = "GMK";
    for (int i = 0; i < 3; i++) {
        int64_t unit = (int64_t)1 << (10 * (3 - i));
        if (v != 0 && v % unit == 0) {
            snprintf(dst, size, "%" PRId64 "%c", v / unit, suffix[i]);
            return;
        }
    }
    snprintf(dst, size, "%" PRId64, v);
}

static void fmt_value(char *dst, size_t size, const tq_cfg_entry_t *e, int64_t v)
{
    if (e->type == TQ_CFG_MS)
        fmt_seconds(dst, size, v);
    else if (e->type == TQ_CFG_SIZE)
        fmt_size(dst, size, v);
    else
        snprintf(dst, size, "%" PRId64, v);
}

/* "123", "64K", "64M", "1G" (powers of 1024; "KB"/"k" also accepted). */
static int parse_size(const char *s, int64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32)
        return -1;
    char digits[33];
    memcpy(digits, s, n + 1);
    int64_t mult = 1;
    if (n > 1 && (digits[n - 1] == 'B' || digits[n - 1] == 'b') && strchr("KkMmGg", digits[n - 2]))
        digits[--n] = '\0';
    switch (digits[n - 1]) {
    case 'K':
    case 'k': mult = (int64_t)1 << 10; break;
    case 'M':
    case 'm': mult = (int64_t)1 << 20; break;
    case 'G':
    case 'g': mult = (int64_t)1 << 30; break;
    default: break;
    }
    if (mult != 1)
        digits[--n] = '\0';
    uint64_t v;
    if (tq_parse_u64(digits, &v) < 0 || v > (uint64_t)(INT64_MAX / mult))
        return -1;
    *out = (int64_t)v * mult;
    return 0;
}

static int enum_ok(const char *choices, const char *v)
{
    size_t vn = strlen(v);
    const char *p = choices;
    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vn && strncmp(p, v, n) == 0)
            return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off", ""};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (strcmp(v, yes[i]) == 0)
            return *out = 1, 0;
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (strcmp(v, no[i]) == 0)
            return *out = 0, 0;
    return -1;
}

static void list_clear(tq_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static void list_append(tq_strlist_t *l, const char *v)
{
    l->items = tq_realloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n++] = tq_strdup(v);
}

/* Drop the value of entry e that this parse stored, leaving it empty. */
static void release(void *settings, const tq_cfg_entry_t *e, track_t *t)
{
    if (e->type == TQ_CFG_LIST) {
        tq_strlist_t *l = field(settings, e);
        if (t->stored)
            list_clear(l);
        l->items = NULL;
        l->n = 0;
    } else if (e->type == TQ_CFG_STRING || e->type == TQ_CFG_ENUM) {
        char **sp = field(settings, e);
        if (t->stored)
            free(*sp);
        *sp = NULL;
    }
    t->stored = 0;
}

/* Store text value v for entry e. src names where it came from
 * ("--name", "ENV_VAR", "default for --name") for errors. */
static int apply(void *settings, const tq_cfg_entry_t *e, track_t *t, const char *v,
                 const char *src, char *err, size_t errlen)
{
    char q[TQ_CFG_QUOTE_MAX];
    quote(q, sizeof q, v);
    int64_t n = 0;
    switch (e->type) {
    case TQ_CFG_INT:
    case TQ_CFG_MS:
    case TQ_CFG_SIZE: {
        int rc;
        const char *what;
        if (e->type == TQ_CFG_INT) {
            rc = tq_parse_i64(v, &n);
            what = "is not a number";
        } else if (e->type == TQ_CFG_MS) {
            rc = tq_parse_seconds_ms(v, &n);
            what = "is not a number of seconds (e.g. 1.5)";
        } else {
            rc = parse_size(v, &n);
            what = "is not a size (e.g. 123, 64K, 64M, 1G)";
        }
        if (rc < 0) {
            snprintf(err, errlen, "%s: '%s' %s", src, q, what);
            return -1;
        }
        if (bounded(e) && (n < e->min || n > e->max)) {
            char lo[32], hi[32];
            fmt_value(lo, sizeof lo, e, e->min);
            fmt_value(hi, sizeof hi, e, e->max);
            snprintf(err, errlen, "%s: %s is out of range (%s..%s)", src, q, lo, hi);
            return -1;
        }
        *i64_field(settings, e) = n;
        return 0;
    }
    case TQ_CFG_ENUM:
        if (!enum_ok(e->choices, v)) {
            snprintf(err, errlen, "%s: '%s' is not one of %s", src, q,
                     e->choices ? e->choices : "(none)");
            return -1;
        }
        /* fall through */
    case TQ_CFG_STRING:
        release(settings, e, t);
        *(char **)field(settings, e) = tq_strdup(v);
        t->stored = 1;
        return 0;
    case TQ_CFG_FLAG: {
        int b;
        if (parse_bool(v, &b) < 0) {
            snprintf(err, errlen, "%s: '%s' is not a yes/no value (1|0|true|false|yes|no|on|off)",
                     src, q);
            return -1;
        }
        *(int *)field(settings, e) = b;
        return 0;
    }
    case TQ_CFG_LIST:
        if (!t->stored) {
            tq_strlist_t *l = field(settings, e);
            l->items = NULL;
            l->n = 0;
        }
        list_append(field(settings, e), v);
        t->stored = 1;
        return 0;
    }
    snprintf(err, errlen, "%s: unknown setting type (a bug in taskq)", src);
    return -1;
}

/* Set every entry to its default (or zero / NULL / empty). */
static int apply_defaults(const tq_cfg_entry_t *table, void *settings, track_t *tr, char *err,
                          size_t errlen)
{
    for (size_t i = 0; table[i].name; i++) {
        const tq_cfg_entry_t *e = &table[i];
        switch (e->type) {
        case TQ_CFG_INT:
        case TQ_CFG_MS:
        case TQ_CFG_SIZE: *i64_field(settings, e) = 0; break;
        case TQ_CFG_FLAG: *(int *)field(settings, e) = 0; break;
        default: release(settings, e, &tr[i]); break;
        }
        if (e->def) {
            char src[TQ_CFG_NAME_MAX + 32];
            snprintf(src, sizeof src, "default for --%s", e->name);
            if (apply(settings, e, &tr[i], e->def, src, err, errlen) < 0)
                return -1;
        }
    }
    return 0;
}

static void release_all(const tq_cfg_entry_t *table, void *settings, track_t *tr)
{
    for (size_t i = 0; table[i].name; i++)
        release(settings, &table[i], &tr[i]);
}

int tq_cfg_defaults(const tq_cfg_entry_t *table, void *settings, char *err, size_t errlen)
{
    track_t *tr = tq_calloc(table_len(table) + 1, sizeof *tr);
    int rc = apply_defaults(table, settings, tr, err, errlen);
    if (rc < 0)
        release_all(table, settings, tr);
    free(tr);
    return rc;
}

static const tq_cfg_entry_t *lookup(const tq_cfg_entry_t *table, const char *name, size_t n,
                                    size_t *idx)
{
    for (size_t i = 0; table[i].name; i++) {
        if (strlen(table[i].name) == n && strncmp(table[i].name, name, n) == 0) {
            *idx = i;
            return &table[i];
        }
    }
    return NULL;
}

/* Find --NAME among the flags of argv[argi...] without applying
 * anything (stops where tq_cfg_parse stops). Returns its value (for a
 * FLAG: "1"), or NULL when absent. */
static const char *scan_flag(const tq_cfg_entry_t *table, int argc, char **argv, int argi,
                             const char *want)
{
    const char *found = NULL;
    for (int i = argi; i < argc;) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            break;
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name), idx;
        const tq_cfg_entry_t *e = lookup(table, name, nlen, &idx);
        if (!e)
            break;
        const char *v = "1";
        if (e->type != TQ_CFG_FLAG) {
            if (eq) {
                v = eq + 1;
            } else {
                if (i + 1 >= argc)
                    break;
                v = argv[++i];
            }
        }
        if (strcmp(e->name, want) == 0)
            found = v;
        i++;
    }
    return found;
}

int tq_cfg_has_flag(const tq_cfg_entry_t *table, int argc, char **argv, int argi, const char *name)
{
    return scan_flag(table, argc, argv, argi, name) != NULL;
}

/* One config file being read. */
typedef struct {
    const tq_cfg_entry_t *table;
    void *settings;
    track_t *tr;
    const char *path;
    FILE *f;
    char *line; /* getline's buffer */
    size_t cap;
    int lineno;        /* the line inih is handling */
    int last_bad_line; /* the last line that has an error reported */
    int nerrors;
    char *err; /* every error, one per line */
    size_t errlen, used;
} file_ctx_t;

static void file_error(file_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Add "FILE:LINE: message" to the error list. */
static void file_error(file_ctx_t *c, const char *fmt, ...)
{
    c->nerrors++;
    c->last_bad_line = c->lineno;
    if (c->nerrors > TQ_CFG_FILE_ERRORS_MAX || c->used + 1 >= c->errlen)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int n = snprintf(c->err + c->used, c->errlen - c->used, "%s%s:%d: %s", c->used ? "\n" : "",
                     c->path, c->lineno, msg);
    if (n > 0)
        c->used = (size_t)n < c->errlen - c->used ? c->used + (size_t)n : c->errlen - 1;
}

static int blank_or_comment(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return *p == '\0' || *p == '#' || *p == ';';
}

/* inih's reader: one whole line per call. A line longer than inih's
 * buffer, or one that is neither blank, a comment, a section nor
 * "name = value" (nor an indented continuation), is reported here and
 * handed on as an empty line, so every bad line gets its own message
 * and inih never sees a cut line. */
static char *file_reader(char *str, int num, void *stream)
{
    file_ctx_t *c = stream;
    ssize_t n = getline(&c->line, &c->cap, c->f);
    if (n < 0)
        return NULL;
    c->lineno++;
    if (n > 0 && c->line[n - 1] == '\n')
        c->line[--n] = '\0';
    if (n > 0 && c->line[n - 1] == '\r')
        c->line[--n] = '\0';
    if (n >= num - 1 || (size_t)n >= TQ_CFG_LINE_MAX) {
        file_error(c, "line longer than %d characters", num - 2);
        str[0] = '\0';
        return str;
    }
    if (memchr(c->line, '\0', (size_t)n)) {
        file_error(c, "line holds a NUL byte");
        str[0] = '\0';
        return str;
    }
    const char *p = c->line;
    int indented = *p == ' ' || *p == '\t';
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '[') {
        file_error(c, "sections are not used (%.64s): one file per program", p);
        str[0] = '\0';
        return str;
    }
    if (!blank_or_comment(p) && !indented && !strchr(p, '=') && !strchr(p, ':')) {
        file_error(c, "expected NAME = VALUE");
        str[0] = '\0';
        return str;
    }
    memcpy(str, c->line, (size_t)n + 1);
    return str;
}

/* inih's handler: one "name = value". Always carries on (errors are
 * collected), so every bad line is reported. */
static int file_handler(void *user, const char *section, const char *name, const char *value)
{
    file_ctx_t *c = user;
    (void)section; /* section lines are refused by the reader */
    size_t idx;
    const tq_cfg_entry_t *e = lookup(c->table, name, strlen(name), &idx);
    if (!e) {
        file_error(c, "unknown setting '%.64s'", name);
        return 1;
    }
    if (!strcmp(e->name, "config") || !strcmp(e->name, "check-config") ||
        !strcmp(e->name, "help") || !strcmp(e->name, "version")) {
        file_error(c, "'%s' cannot be set in a config file", e->name);
        return 1;
    }
    track_t *t = &c->tr[idx];
    if (e->type == TQ_CFG_LIST) {
        if (!t->file_line)
            release(c->settings, e, t); /* the file replaces the default */
    } else if (t->file_line) {
        file_error(c, "'%s' is set twice (first on line %d)", e->name, t->file_line);
        return 1;
    }
    t->file_line = c->lineno;
    char msg[384];
    if (apply(c->settings, e, t, value, e->name, msg, sizeof msg) < 0)
        file_error(c, "%s", msg);
    return 1;
}

/* Read the config file named by the table's "config" entry (flag, else
 * environment, else default) into settings. Returns 0 (also when there
 * is no such entry, or a default file does not exist), or -1 with every
 * error in err. */
static int load_file(const tq_cfg_entry_t *table, void *settings, track_t *tr, int argc,
                     char **argv, int argi, char *err, size_t errlen)
{
    size_t cidx;
    const tq_cfg_entry_t *ce = lookup(table, "config", 6, &cidx);
    if (!ce || ce->type != TQ_CFG_STRING)
        return 0;
    const char *path = scan_flag(table, argc, argv, argi, "config");
    int given = 1;
    if (!path && ce->env)
        path = getenv(ce->env);
    if (!path) {
        path = ce->def;
        given = 0;
    }
    if (!path || !*path)
        return 0;
    char full[4096];
    if (strncmp(path, "~/", 2) == 0) {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            if (!given)
                return 0;
            snprintf(err, errlen, "config file %s: HOME is not set", path);
            return -1;
        }
        if (snprintf(full, sizeof full, "%s/%s", home, path + 2) >= (int)sizeof full) {
            snprintf(err, errlen, "config file %s: path too long", path);
            return -1;
        }
        path = full;
    }
    struct stat st;
    /* A default path that cannot be seen (missing, or a directory on
     * the way we may not search, e.g. another user's HOME) is no file;
     * one that exists and cannot be read is an error. */
    if (!given && stat(path, &st) < 0)
        return 0;
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "config file %s: not a regular file", path);
        fclose(f);
        return -1;
    }
    file_ctx_t c = {.table = table,
                    .settings = settings,
                    .tr = tr,
                    .path = path,
                    .f = f,
                    .err = err,
                    .errlen = errlen};
    if (errlen)
        err[0] = '\0';
    int rc = ini_parse_stream(file_reader, &c, file_handler, &c);
    if (rc < 0) {
        c.lineno = 0;
        file_error(&c, "cannot read it (out of memory)");
    } else if (rc > 0 && rc != c.last_bad_line) {
        /* a line inih found wrong that the reader let through */
        int keep = c.lineno;
        c.lineno = rc;
        file_error(&c, "syntax error");
        c.lineno = keep;
    }
    if (ferror(f)) {
        c.lineno = 0;
        file_error(&c, "read error: %s", strerror(errno));
    }
    free(c.line);
    fclose(f);
    for (size_t i = 0; table[i].name; i++)
        tr[i].file_line = 0;
    if (c.nerrors > TQ_CFG_FILE_ERRORS_MAX && c.used + 1 < errlen)
        snprintf(err + c.used, errlen - c.used, "\n%s: %d more errors", path,
                 c.nerrors - TQ_CFG_FILE_ERRORS_MAX);
    return c.nerrors ? -1 : 0;
}

int tq_cfg_parse(const tq_cfg_entry_t *table, void *settings, int argc, char **argv, int *argi,
                 int *help_out, char *err, size_t errlen)
{
    track_t *tr = tq_calloc(table_len(table) + 1, sizeof *tr);
    int rc = -1;
    if (help_out)
        *help_out = 0;
    if (apply_defaults(table, settings, tr, err, errlen) < 0)
        goto out;
    if (load_file(table, settings, tr, argc, argv, *argi, err, errlen) < 0)
        goto out;

    for (size_t i = 0; table[i].name; i++) {
        const tq_cfg_entry_t *e = &table[i];
        const char *v = e->env ? getenv(e->env) : NULL;
        if (!v)
            continue;
        if (e->type == TQ_CFG_LIST) {
            release(settings, e, &tr[i]); /* the variable replaces the default */
            if (*v == '\0')
                continue;
        }
        if (apply(settings, e, &tr[i], v, e->env, err, errlen) < 0)
            goto out;
    }

    int i = *argi;
    while (i < argc) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0)
            break; /* an argument, including "-" */
        if (arg[2] == '\0') {
            i++; /* "--" ends the flags */
            break;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        char shown[TQ_CFG_NAME_MAX + 8];
        snprintf(shown, sizeof shown, "--%.*s%s",
                 (int)(nlen > TQ_CFG_NAME_MAX ? TQ_CFG_NAME_MAX : nlen), name,
                 nlen > TQ_CFG_NAME_MAX ? "..." : "");
        if (nlen == 4 && strncmp(name, "help", 4) == 0 && !eq) {
            size_t hidx;
            if (!lookup(table, name, nlen, &hidx)) {
                if (help_out)
                    *help_out = 1;
                break;
            }
        }
        size_t idx;
        const tq_cfg_entry_t *e = lookup(table, name, nlen, &idx);
        if (!e) {
            snprintf(err, errlen, "unknown option %s", shown);
            goto out;
        }
        const char *v;
        if (e->type == TQ_CFG_FLAG) {
            if (eq) {
                snprintf(err, errlen, "%s takes no value", shown);
                goto out;
            }
            *(int *)field(settings, e) = 1;
            tr[idx].from_flag = 1;
            i++;
            continue;
        }
        if (eq) {
            v = eq + 1;
            i++;
        } else {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", shown);
                goto out;
            }
            v = argv[i + 1];
            i += 2;
        }
        /* The first flag of a list replaces its default / environment. */
        if (e->type == TQ_CFG_LIST && !tr[idx].from_flag)
            release(settings, e, &tr[idx]);
        tr[idx].from_flag = 1;
        if (apply(settings, e, &tr[idx], v, shown, err, errlen) < 0)
            goto out;
    }
    *argi = i;
    rc = 0;
out:
    if (rc < 0)
        release_all(table, settings, tr);
    free(tr);
    return rc;
}

void tq_cfg_free(const tq_cfg_entry_t *table, void *settings)
{
    for (size_t i = 0; table[i].name; i++) {
        const tq_cfg_entry_t *e = &table[i];
        if (e->type == TQ_CFG_LIST) {
            list_clear(field(settings, e));
        } else if (e->type == TQ_CFG_STRING || e->type == TQ_CFG_ENUM) {
            char **sp = field(settings, e);
            free(*sp);
            *sp = NULL;
        }
    }
}

/* "--name METAVAR" as shown in --help; returns its length. */
static int flag_text(const tq_cfg_entry_t *e, char *dst, size_t size)
{
    const char *mv = e->metavar;
    if (!mv)
        mv = e->type == TQ_CFG_ENUM && e->choices ? e->choices : "VALUE";
    int n = e->type == TQ_CFG_FLAG ? snprintf(dst, size, "--%s", e->name)
                                   : snprintf(dst, size, "--%s %s", e->name, mv);
    if (n < 0)
        return 0;
    return (size_t)n < size ? n : (int)size - 1;
}

/* " (default: X; env: Y)" or "" */
static void notes(const tq_cfg_entry_t *e, char *dst, size_t size)
{
    char def[128] = "";
    if (e->def && *e->def && !(e->type == TQ_CFG_FLAG && strcmp(e->def, "0") == 0))
        snprintf(def, sizeof def, "default: %s%s", e->def, e->type == TQ_CFG_MS ? "s" : "");
    const char *rep = e->type == TQ_CFG_LIST ? "repeatable" : "";
    char envs[96] = "";
    if (e->env)
        snprintf(envs, sizeof envs, "env: %s", e->env);
    const char *parts[3] = {rep, def, envs};
    size_t len = 0;
    dst[0] = '\0';
    for (int i = 0; i < 3; i++) {
        if (!*parts[i])
            continue;
        int n = snprintf(dst + len, size - len, "%s%s", len ? "; " : " (", parts[i]);
        if (n < 0 || (size_t)n >= size - len)
            return;
        len += (size_t)n;
    }
    if (len && len + 1 < size)
        memcpy(dst + len, ")", 2);
}

void tq_cfg_usage(const tq_cfg_entry_t *table, FILE *out)
{
    char flag[160], note[256];
    int width = 0;
    for (size_t i = 0; table[i].name; i++) {
        int n = flag_text(&table[i], flag, sizeof flag);
        if (n > width && n <= TQ_CFG_USAGE_COL_MAX)
            width = n;
    }
    for (size_t i = 0; table[i].name; i++) {
        const tq_cfg_entry_t *e = &table[i];
        int n = flag_text(e, flag, sizeof flag);
        notes(e, note, sizeof note);
        if (n > width)
            fprintf(out, "  %s\n  %*s  %s%s\n", flag, width, "", e->help ? e->help : "", note);
        else
            fprintf(out, "  %-*s  %s%s\n", width, flag, e->help ? e->help : "", note);
    }
}

void tq_cfg_markdown(const tq_cfg_entry_t *table, FILE *out)
{
    char flag[160];
    fprintf(out, "| Option | Environment | Default | Description |\n");
    fprintf(out, "|---|---|---|---|\n");
    for (size_t i = 0; table[i].name; i++) {
        const tq_cfg_entry_t *e = &table[i];
        flag_text(e, flag, sizeof flag);
        /* '|' inside a cell would split it. */
        fprintf(out, "| `");
        for (const char *p = flag; *p; p++)
            if (*p == '|')
                fputs("\\|", out);
            else
                fputc(*p, out);
        fprintf(out, "` | %s%s%s | %s%s%s | %s%s |\n", e->env ? "`" : "", e->env ? e->env : "",
                e->env ? "`" : "", e->def ? "`" : "", e->def ? e->def : "", e->def ? "`" : "",
                e->help ? e->help : "", e->type == TQ_CFG_LIST ? " (repeatable)" : "");
    }
}

/* Text for scdoc: '*', '_', '\\' and a leading '-' would be markup. */
static void scdoc_text(FILE *out, const char *s)
{
    for (const char *p = s; p && *p; p++) {
        if (*p == '*' || *p == '_' || *p == '\\')
            fputc('\\', out);
        fputc(*p, out);
    }
}

void tq_cfg_scdoc(const tq_cfg_entry_t *table, FILE *out)
{
    char flag[160], note[256];
    for (size_t i = 0; table[i].name; i++) {
        const tq_cfg_entry_t *e = &table[i];
        flag_text(e, flag, sizeof flag);
        notes(e, note, sizeof note);
        fputc('*', out);
        scdoc_text(out, flag);
        fputs("*\n\t", out);
        scdoc_text(out, e->help ? e->help : "");
        scdoc_text(out, note);
        fputs("\n\n", out);
    }
}

/* ---- SIGHUP: apply a re-read configuration ------------------------------ */

void tq_cfg_value_text(const tq_cfg_entry_t *e, const void *settings, char *dst, size_t size)
{
    void *f = field((void *)settings, e);
    if (size == 0)
        return;
    switch (e->type) {
    case TQ_CFG_INT:
    case TQ_CFG_MS:
    case TQ_CFG_SIZE: fmt_value(dst, size, e, *(const int64_t *)f); return;
    case TQ_CFG_FLAG: snprintf(dst, size, "%s", *(const int *)f ? "yes" : "no"); return;
    case TQ_CFG_STRING:
    case TQ_CFG_ENUM: {
        const char *v = *(char *const *)f;
        if (v)
            quote(dst, size, v);
        else
            snprintf(dst, size, "(unset)");
        return;
    }
    case TQ_CFG_LIST: {
        const tq_strlist_t *l = f;
        size_t off = 0;
        dst[0] = '\0';
        if (l->n == 0)
            snprintf(dst, size, "(none)");
        for (size_t i = 0; i < l->n && off < size; i++) {
            int n = snprintf(dst + off, size - off, "%s%s", i ? "," : "", l->items[i]);
            if (n < 0)
                break;
            off += (size_t)n;
        }
        if (off >= size && size > 4)
            memcpy(dst + size - 4, "...", 4);
        return;
    }
    }
    dst[0] = '\0';
}

/* 1 if entry e holds the same value in a and b. */
static int same_value(const tq_cfg_entry_t *e, const void *a, const void *b)
{
    const void *fa = field((void *)a, e), *fb = field((void *)b, e);
    switch (e->type) {
    case TQ_CFG_INT:
    case TQ_CFG_MS:
    case TQ_CFG_SIZE: return *(const int64_t *)fa == *(const int64_t *)fb;
    case TQ_CFG_FLAG: return *(const int *)fa == *(const int *)fb;
    case TQ_CFG_STRING:
    case TQ_CFG_ENUM: {
        const char *x = *(char *const *)fa, *y = *(char *const *)fb;
        return x == y || (x && y && strcmp(x, y) == 0);
    }
    case TQ_CFG_LIST: {
        const tq_strlist_t *x = fa, *y = fb;
        if (x->n != y->n)
            return 0;
        for (size_t i = 0; i < x->n; i++)
            if (strcmp(x->items[i], y->items[i]) != 0)
                return 0;
        return 1;
    }
    }
    return 1;
}

/* Move entry e's value from src into dst (swapping heap values, so
 * each struct still owns what it holds). */
static void move_value(const tq_cfg_entry_t *e, void *dst, void *src)
{
    void *fd = field(dst, e), *fs = field(src, e);
    switch (e->type) {
    case TQ_CFG_INT:
    case TQ_CFG_MS:
    case TQ_CFG_SIZE: *(int64_t *)fd = *(int64_t *)fs; return;
    case TQ_CFG_FLAG: *(int *)fd = *(int *)fs; return;
    case TQ_CFG_STRING:
    case TQ_CFG_ENUM: {
        char *t = *(char **)fd;
        *(char **)fd = *(char **)fs;
        *(char **)fs = t;
        return;
    }
    case TQ_CFG_LIST: {
        tq_strlist_t t = *(tq_strlist_t *)fd;
        *(tq_strlist_t *)fd = *(tq_strlist_t *)fs;
        *(tq_strlist_t *)fs = t;
        return;
    }
    }
}

int tq_cfg_reload(const tq_cfg_entry_t *table, void *cur, void *next, const tq_cfg_live_t *live,
                  void *arg, tq_cfg_note_fn note)
{
    int changed = 0;
    for (size_t i = 0; table[i].name; i++) {
        const tq_cfg_entry_t *e = &table[i];
        if (same_value(e, cur, next))
            continue;
        char a[160], b[160], why[256], line[800];
        tq_cfg_value_text(e, cur, a, sizeof a);
        tq_cfg_value_text(e, next, b, sizeof b);
        const tq_cfg_live_t *l = live;
        while (l && l->name && strcmp(l->name, e->name) != 0)
            l++;
        why[0] = '\0';
        if (!l || !l->name) {
            snprintf(line, sizeof line,
                     "setting %s changed from %s to %s in the configuration but cannot change "
                     "while running: restart to apply it; %s stays %s",
                     e->name, a, b, e->name, a);
            note(arg, 1, line);
        } else if (l->apply(arg, cur, next, why, sizeof why) < 0) {
            snprintf(line, sizeof line, "setting %s: cannot change from %s to %s: %s; %s stays %s",
                     e->name, a, b, why[0] ? why : "refused", e->name, a);
            note(arg, 1, line);
        } else {
            snprintf(line, sizeof line, "setting %s changed from %s to %s", e->name, a, b);
            note(arg, 0, line);
            move_value(e, cur, next);
            changed++;
        }
    }
    return changed;
}
