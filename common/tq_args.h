/* tq_args.h - the forgiving part of the command line, in front of
 * tq_cfg_parse: short forms of options (-h, -V, -q Q, -qQ) and "did you
 * mean" suggestions for an unknown command or option.
 *
 * Which words are options (docs/cli.md): from the first word on, a word
 * is an option when it starts with "--" followed by a name, or with "-"
 * followed by a letter; the first other word (a payload, "-", "-5",
 * "-.5") ends the options, and so does "--" (dropped). An option that
 * takes a value takes the next word whatever it is (-p -5). */
#ifndef TQ_ARGS_H
#define TQ_ARGS_H

#include <stddef.h>

#include "tq_config.h"

/* One short form: -letter means --name. A short form whose name is not
 * in the table parsed is not an option there ("help" always is). */
typedef struct {
    char letter;
    const char *name;
} tq_short_t;

/* argv as tq_cfg_parse should see it: the short forms written long. */
typedef struct {
    int argc;
    char **argv;  /* argv[0..argc), pointing into the original or owned */
    char **owned; /* strings made here ("--queue=foo") */
    size_t nowned;
} tq_args_t;

/* Rewrite argv[argi..] (the options of one table) into out: each short
 * form in shorts (ended by letter 0) becomes its long option ("-qfoo"
 * becomes "--queue=foo"). Words from the first non-option on are copied
 * as they are. Returns 0, or -1 with err for an unknown option:
 *   "unknown option --queu; did you mean --queue?"
 *   "unknown option -x (a payload that starts with '-' goes after --)"
 * (a long option unknown and not near any is left for tq_cfg_parse to
 * name, as before). out is valid (free it) either way. */
int tq_args_expand(const tq_cfg_entry_t *table, const tq_short_t *shorts, int argc, char **argv,
                   int argi, tq_args_t *out, char *err, size_t errlen);
void tq_args_free(tq_args_t *a);

/* The candidate closest to word[len] (edit distance with adjacent
 * transpositions at most 1 for words up to 4 bytes, else 2; or the only
 * candidate that word is a prefix of), or NULL. */
const char *tq_args_suggest(const char *word, size_t len, const char *const *cands, size_t ncands);

#endif
