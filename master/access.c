/* access.c - the --allow-keys file and the permission tests. See
 * access.h. */
#include "access.h"

#include <fnmatch.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq_keyfile.h"
#include "tq_util.h"

struct tq_allow {
    tq_ident_t *ids;
    size_t n, cap;
};

/* The interned names: an open-addressing set of strings, grown by
 * doubling, at most TQ_IDENT_INTERN_MAX (loop thread only). */
static char **interned;
static size_t ninterned, capinterned;

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

const char *tq_ident_intern(const char *name)
{
    if (capinterned) {
        for (size_t i = name_hash(name) & (capinterned - 1);; i = (i + 1) & (capinterned - 1)) {
            if (!interned[i])
                break;
            if (strcmp(interned[i], name) == 0)
                return interned[i];
        }
    }
    if (ninterned >= TQ_IDENT_INTERN_MAX)
        return NULL;
    if (2 * (ninterned + 1) > capinterned) { /* grow: at most half full */
        size_t cap = capinterned ? capinterned * 2 : 64;
        char **t = tq_calloc(cap, sizeof *t);
        for (size_t k = 0; k < capinterned; k++) {
            if (!interned[k])
                continue;
            size_t i = name_hash(interned[k]) & (cap - 1);
            while (t[i])
                i = (i + 1) & (cap - 1);
            t[i] = interned[k];
        }
        free(interned);
        interned = t;
        capinterned = cap;
    }
    size_t i = name_hash(name) & (capinterned - 1);
    while (interned[i])
        i = (i + 1) & (capinterned - 1);
    interned[i] = tq_strdup(name);
    ninterned++;
    return interned[i];
}

void tq_ident_intern_free(void)
{
    for (size_t i = 0; i < capinterned; i++)
        free(interned[i]);
    free(interned);
    interned = NULL;
    ninterned = capinterned = 0;
}

const char *tq_ident_role_name(tq_ident_role_t role)
{
    return role == TQ_IDENT_WORKER ? "worker" : role == TQ_IDENT_CLIENT ? "client" : "admin";
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

void tq_allow_free(tq_allow_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tq_allow_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++) {
        free_list(self->ids[i].queues, self->ids[i].nqueues);
        free_list(self->ids[i].fns, self->ids[i].nfns);
    }
    sodium_memzero(self->ids, self->cap * sizeof *self->ids);
    free(self->ids);
    free(self);
    *self_p = NULL;
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '@' || c == '-';
}

int tq_ident_name_valid(const char *name, size_t len)
{
    int ok = len >= 1 && len <= TQ_IDENT_NAME_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = name_char(name[i]);
    return ok;
}

/* A pattern: 1..TQ_ALLOW_PATTERN_MAX of name characters (tq_name_valid's)
 * and fnmatch's * ? [ ] !. */
static int pattern_ok(const char *s, size_t n)
{
    if (n < 1 || n > TQ_ALLOW_PATTERN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("_.:-*?[]!", c)))
            return 0;
    }
    return 1;
}

/* Split "a,b,c" (len bytes at s) into *out. Returns 0, or -1 with a
 * message in why. */
static int parse_list(const char *s, size_t len, char ***out, size_t *n, tq_err_t *why)
{
    *out = NULL;
    *n = 0;
    size_t i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != ',')
            j++;
        if (!pattern_ok(s + i, j - i)) {
            tq_err_set(why, 0,
                       "'%.*s' is not a pattern (1..%d of letters, digits, _ . : - and * ? [ ] !)",
                       (int)(j - i > 80 ? 80 : j - i), s + i, TQ_ALLOW_PATTERN_MAX);
            goto fail;
        }
        if (*n == TQ_ALLOW_MAX_PATTERNS) {
            tq_err_set(why, 0, "more than %d patterns in one list", TQ_ALLOW_MAX_PATTERNS);
            goto fail;
        }
        *out = tq_realloc(*out, (*n + 1) * sizeof **out);
        char *pat = tq_malloc(j - i + 1);
        memcpy(pat, s + i, j - i);
        pat[j - i] = '\0';
        (*out)[*n] = pat;
        (*n)++;
        i = j + 1;
    }
    return 0;
fail:
    free_list(*out, *n);
    *out = NULL;
    *n = 0;
    return -1;
}

const tq_ident_t *tq_allow_find(const tq_allow_t *self, const char *name)
{
    for (size_t i = 0; self && i < self->n; i++)
        if (strcmp(self->ids[i].name, name) == 0)
            return &self->ids[i];
    return NULL;
}

/* Parse one line's fields (tok[0..nt)) into id. Returns 0, or -1 with why. */
typedef struct {
    const char *s;
    size_t n;
} tok_t;

static int parse_line(tq_allow_t *self, const tok_t *tok, size_t nt, tq_ident_t *id, tq_err_t *why)
{
    memset(id, 0, sizeof *id);
    if (nt < 3) {
        tq_err_set(why, 0, "expected PUBLIC-KEY NAME ROLE [queues=...] [functions=...]");
        return -1;
    }
    if (tq_z85_key_decode(tok[0].s, tok[0].n, id->key) < 0) {
        tq_err_set(why, 0,
                   "the public key is not %d Z85 characters (the public-key of a "
                   ".pub file made by taskq keygen)",
                   TQ_Z85_KEY_LEN);
        return -1;
    }
    if (!tq_ident_name_valid(tok[1].s, tok[1].n)) {
        tq_err_set(why, 0, "'%.*s' is not a name (1..%d of letters, digits, _ . @ -)",
                   (int)(tok[1].n > 80 ? 80 : tok[1].n), tok[1].s, TQ_IDENT_NAME_MAX);
        return -1;
    }
    memcpy(id->name, tok[1].s, tok[1].n);
    id->name[tok[1].n] = '\0';
    static const char *const roles[] = {"worker", "client", "admin"};
    for (int r = 0; r < 3 && !id->role; r++)
        if (tok[2].n == strlen(roles[r]) && memcmp(tok[2].s, roles[r], tok[2].n) == 0)
            id->role = (tq_ident_role_t)(r + 1);
    if (!id->role) {
        tq_err_set(why, 0, "role '%.*s' is not worker, client or admin",
                   (int)(tok[2].n > 40 ? 40 : tok[2].n), tok[2].s);
        return -1;
    }
    int hq = 0, hf = 0;
    for (size_t i = 3; i < nt; i++) {
        const char *eq = memchr(tok[i].s, '=', tok[i].n);
        size_t k = eq ? (size_t)(eq - tok[i].s) : tok[i].n;
        int isq = k == 6 && memcmp(tok[i].s, "queues", 6) == 0;
        int isf = k == 9 && memcmp(tok[i].s, "functions", 9) == 0;
        if (!eq || (!isq && !isf)) {
            tq_err_set(why, 0, "'%.*s': expected queues=PATTERNS or functions=PATTERNS",
                       (int)(tok[i].n > 80 ? 80 : tok[i].n), tok[i].s);
            return -1;
        }
        if ((isq && hq) || (isf && hf)) {
            tq_err_set(why, 0, "%s= given twice", isq ? "queues" : "functions");
            return -1;
        }
        if (id->role == TQ_IDENT_ADMIN || (isq && id->role == TQ_IDENT_WORKER)) {
            tq_err_set(why, 0, "%s= does not apply to %s %s", isq ? "queues" : "functions",
                       id->role == TQ_IDENT_ADMIN ? "an" : "a", tq_ident_role_name(id->role));
            return -1;
        }
        char ***l = isq ? &id->queues : &id->fns;
        size_t *n = isq ? &id->nqueues : &id->nfns;
        if (parse_list(eq + 1, tok[i].n - k - 1, l, n, why) < 0)
            return -1;
        *(isq ? &hq : &hf) = 1;
    }
    if (id->role == TQ_IDENT_CLIENT && !hq) {
        tq_err_set(why, 0, "a client needs queues=PATTERNS (the queues it may use; * for all)");
        return -1;
    }
    if (id->role == TQ_IDENT_WORKER && !hf) {
        tq_err_set(why, 0,
                   "a worker needs functions=PATTERNS (the functions it may serve; * for all)");
        return -1;
    }
    if (tq_allow_find(self, id->name)) {
        tq_err_set(why, 0, "name '%s' is given twice", id->name);
        return -1;
    }
    for (size_t i = 0; i < self->n; i++)
        if (sodium_memcmp(self->ids[i].key, id->key, 32) == 0) {
            tq_err_set(why, 0, "this public key is given twice (also for '%s')", self->ids[i].name);
            return -1;
        }
    id->owner = tq_ident_intern(id->name);
    if (!id->owner) {
        tq_err_set(why, 0, "more than %d identity names since the master started: restart it",
                   TQ_IDENT_INTERN_MAX);
        return -1;
    }
    return 0;
}

tq_allow_t *tq_allow_parse(const char *path, const char *text, size_t len, tq_err_t *err)
{
    tq_allow_t *self = tq_calloc(1, sizeof *self);
    size_t lineno = 0;
    const char *p = text, *end = text + len;
    tq_err_t why;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        tok_t tok[3 + 3];
        size_t nt = 0;
        const char *s = p;
        p = nl ? nl + 1 : end;
        int comment = 0;
        while (s < le) {
            while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
                s++;
            if (s == le)
                break;
            const char *t = s;
            while (s < le && *s != ' ' && *s != '\t' && *s != '\r')
                s++;
            /* '#' starts a comment: a whole line, or the rest of a line
             * after its fields. (No key begins with '#': Z85's largest
             * digit cannot lead a 32-bit group.) */
            if (*t == '#') {
                comment = nt == 0;
                break;
            }
            if (nt == sizeof tok / sizeof tok[0]) {
                tq_err_set(err, 0, "%s:%zu: too many fields", path, lineno);
                goto fail;
            }
            tok[nt++] = (tok_t){t, (size_t)(s - t)};
        }
        if (comment || nt == 0)
            continue;
        for (const char *c = tok[0].s; c < le; c++)
            if ((unsigned char)*c < 0x20 && *c != '\t' && *c != '\r') {
                tq_err_set(err, 0, "%s:%zu: a control character", path, lineno);
                goto fail;
            }
        if (self->n == TQ_ALLOW_MAX_KEYS) {
            tq_err_set(err, 0, "%s:%zu: more than %d keys", path, lineno, TQ_ALLOW_MAX_KEYS);
            goto fail;
        }
        tq_ident_t id;
        if (parse_line(self, tok, nt, &id, &why) < 0) {
            free_list(id.queues, id.nqueues);
            free_list(id.fns, id.nfns);
            tq_err_set(err, 0, "%s:%zu: %s", path, lineno, why.msg);
            goto fail;
        }
        if (self->n == self->cap) {
            self->cap = self->cap ? self->cap * 2 : 16;
            self->ids = tq_realloc(self->ids, self->cap * sizeof *self->ids);
        }
        self->ids[self->n++] = id;
    }
    if (self->n == 0) {
        tq_err_set(err, 0, "%s: no keys (one line per key: PUBLIC-KEY NAME ROLE ...)", path);
        goto fail;
    }
    return self;
fail:
    tq_allow_free(&self);
    return NULL;
}

tq_allow_t *tq_allow_load(const char *path, tq_err_t *err)
{
    char *text;
    size_t len;
    if (tq_file_read_checked(path, "--allow-keys file", TQ_FILE_CONFIG, TQ_ALLOW_FILE_MAX, &text,
                             &len, err) < 0)
        return NULL;
    tq_allow_t *a = tq_allow_parse(path, text, len, err);
    free(text);
    return a;
}

size_t tq_allow_count(const tq_allow_t *self) { return self ? self->n : 0; }
const tq_ident_t *tq_allow_at(const tq_allow_t *self, size_t i) { return &self->ids[i]; }

static int match_any(char *const *pats, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (fnmatch(pats[i], s, 0) == 0)
            return 1;
    return 0;
}

int tq_ident_may_queue(const tq_ident_t *id, const char *queue)
{
    if (id->role == TQ_IDENT_ADMIN)
        return 1;
    return id->role == TQ_IDENT_CLIENT && match_any(id->queues, id->nqueues, queue);
}

int tq_ident_may_fn(const tq_ident_t *id, const char *fn)
{
    if (id->role == TQ_IDENT_ADMIN || (id->role == TQ_IDENT_CLIENT && id->nfns == 0))
        return 1;
    return match_any(id->fns, id->nfns, fn);
}

void tq_ident_list_text(char *const *pats, size_t n, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < len; i++) {
        int w = snprintf(buf + off, len - off, "%s%s", i ? "," : "", pats[i]);
        if (w < 0 || (size_t)w >= len - off) {
            if (len > 4)
                memcpy(buf + len - 4, "...", 4);
            return;
        }
        off += (size_t)w;
    }
}
