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
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Longest flag name accepted when matching "--name=value". */
#define TQ_CFG_NAME_MAX 64
/* Longest value quoted back in an error message. */
#define TQ_CFG_QUOTE_MAX 64
/* Where the help text starts at most in --help output. */
#define TQ_CFG_USAGE_COL_MAX 34

/* Per-entry bookkeeping for one parse. */
typedef struct {
    unsigned char stored;   /* a heap value we stored is in the struct */
    unsigned char from_flag; /* a flag set it (LIST: later flags append) */
} track_t;

static void *field(void *settings, const tq_cfg_entry_t *e)
{
    return (char *)settings + e->offset;
}

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

static int bounded(const tq_cfg_entry_t *e)
{
    return !(e->min == 0 && e->max == 0);
}

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
    if (n > 1 && (digits[n - 1] == 'B' || digits[n - 1] == 'b') &&
        strchr("KkMmGg", digits[n - 2]))
        digits[--n] = '\0';
    switch (digits[n - 1]) {
    case 'K': case 'k': mult = (int64_t)1 << 10; break;
    case 'M': case 'm': mult = (int64_t)1 << 20; break;
    case 'G': case 'g': mult = (int64_t)1 << 30; break;
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
        case TQ_CFG_SIZE:
            *i64_field(settings, e) = 0;
            break;
        case TQ_CFG_FLAG:
            *(int *)field(settings, e) = 0;
            break;
        default:
            release(settings, e, &tr[i]);
            break;
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

int tq_cfg_parse(const tq_cfg_entry_t *table, void *settings, int argc, char **argv, int *argi,
                 int *help_out, char *err, size_t errlen)
{
    track_t *tr = tq_calloc(table_len(table) + 1, sizeof *tr);
    int rc = -1;
    if (help_out)
        *help_out = 0;
    if (apply_defaults(table, settings, tr, err, errlen) < 0)
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
        snprintf(shown, sizeof shown, "--%.*s%s", (int)(nlen > TQ_CFG_NAME_MAX ? TQ_CFG_NAME_MAX : nlen),
                 name, nlen > TQ_CFG_NAME_MAX ? "..." : "");
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
