/* tq_args.c - short options and suggestions. See tq_args.h. */
#include "tq_args.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq_util.h"

/* Longest word compared for a suggestion (option and command names are
 * short; anything longer is not a typo of one). */
#define ARGS_SUGGEST_MAX 64

/* Edit distance of a[la] and b[lb] with adjacent transpositions (optimal
 * string alignment); both at most ARGS_SUGGEST_MAX. */
static size_t osa_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t d[ARGS_SUGGEST_MAX + 1][ARGS_SUGGEST_MAX + 1];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

const char *tq_args_suggest(const char *word, size_t len, const char *const *cands, size_t ncands)
{
    if (len == 0 || len > ARGS_SUGGEST_MAX)
        return NULL;
    size_t limit = len <= 4 ? 1 : 2, best_d = limit + 1, nprefix = 0;
    const char *best = NULL, *prefix = NULL;
    for (size_t i = 0; i < ncands; i++) {
        size_t cl = strlen(cands[i]);
        if (cl > ARGS_SUGGEST_MAX)
            continue;
        if (cl > len && strncmp(cands[i], word, len) == 0) {
            prefix = cands[i];
            nprefix++;
        }
        size_t d = osa_distance(word, len, cands[i], cl);
        if (d < best_d) {
            best_d = d;
            best = cands[i];
        }
    }
    if (best)
        return best;
    return nprefix == 1 ? prefix : NULL;
}

/* The entry named name[len] in table, or NULL. */
static const tq_cfg_entry_t *find(const tq_cfg_entry_t *table, const char *name, size_t len)
{
    for (size_t i = 0; table[i].name; i++)
        if (strlen(table[i].name) == len && strncmp(table[i].name, name, len) == 0)
            return &table[i];
    return NULL;
}

static char *own(tq_args_t *a, char *s)
{
    a->owned[a->nowned++] = s;
    return s;
}

int tq_args_expand(const tq_cfg_entry_t *table, const tq_short_t *shorts, int argc, char **argv,
                   int argi, tq_args_t *out, char *err, size_t errlen)
{
    out->argc = 0;
    out->nowned = 0;
    out->argv = tq_calloc((size_t)argc + 1, sizeof *out->argv);
    out->owned = tq_calloc((size_t)argc + 1, sizeof *out->owned);
    for (int k = 0; k < argi && k < argc; k++)
        out->argv[out->argc++] = argv[k];
    int i = argi;
    while (i < argc) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0)
            break;
        if (strncmp(arg, "--", 2) == 0) {
            const char *name = arg + 2, *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            const tq_cfg_entry_t *e = find(table, name, nlen);
            if (!e && !(nlen == 4 && strncmp(name, "help", 4) == 0)) {
                const char *names[256];
                size_t n = 0;
                for (size_t t = 0; table[t].name && n < 255; t++)
                    names[n++] = table[t].name;
                names[n++] = "help";
                const char *s = tq_args_suggest(name, nlen, names, n);
                if (s) {
                    snprintf(err, errlen, "unknown option --%.*s; did you mean --%s?",
                             (int)(nlen > 64 ? 64 : nlen), name, s);
                    return -1;
                }
                break; /* tq_cfg_parse names it */
            }
            out->argv[out->argc++] = argv[i++];
            if (e && e->type != TQ_CFG_FLAG && !eq && i < argc)
                out->argv[out->argc++] = argv[i++];
            continue;
        }
        if (arg[0] == '-' && isalpha((unsigned char)arg[1])) {
            const tq_short_t *sh = NULL;
            for (size_t k = 0; shorts && shorts[k].letter; k++)
                if (shorts[k].letter == arg[1] &&
                    (find(table, shorts[k].name, strlen(shorts[k].name)) ||
                     strcmp(shorts[k].name, "help") == 0))
                    sh = &shorts[k];
            if (!sh) {
                snprintf(err, errlen,
                         "unknown option -%c (a payload that starts with '-' goes after --)",
                         arg[1]);
                return -1;
            }
            const tq_cfg_entry_t *e = find(table, sh->name, strlen(sh->name));
            int takes = e && e->type != TQ_CFG_FLAG;
            size_t need = strlen(sh->name) + strlen(arg) + 4;
            char *s = own(out, tq_malloc(need));
            if (arg[2] && !takes) {
                snprintf(err, errlen, "-%c (--%s) takes no value", arg[1], sh->name);
                return -1;
            }
            if (arg[2])
                snprintf(s, need, "--%s=%s", sh->name, arg + 2);
            else
                snprintf(s, need, "--%s", sh->name);
            out->argv[out->argc++] = s;
            i++;
            if (takes && !arg[2] && i < argc)
                out->argv[out->argc++] = argv[i++];
            continue;
        }
        break; /* an argument: the options end */
    }
    while (i < argc)
        out->argv[out->argc++] = argv[i++];
    out->argv[out->argc] = NULL;
    return 0;
}

void tq_args_free(tq_args_t *a)
{
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    free(a->owned);
    free(a->argv);
    a->owned = NULL;
    a->argv = NULL;
    a->nowned = 0;
    a->argc = 0;
}
