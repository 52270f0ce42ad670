/* tq_config.h - one declarative table of settings per program drives
 * flag parsing, environment variables, --help and docs/, so they cannot
 * disagree.
 *
 *   typedef struct { int64_t concurrency; char *name; ... } my_settings_t;
 *   static const tq_cfg_entry_t table[] = {
 *       { "concurrency", TQ_CFG_INT, "0", 0, 4096, NULL, NULL,
 *         offsetof(my_settings_t, concurrency), "N", "tasks run at once (0: cores)" },
 *       ...
 *       { NULL }
 *   };
 *
 * Values are stored into a settings struct at `offset`:
 *   TQ_CFG_INT      int64_t, decimal, within [min, max]
 *   TQ_CFG_MS       int64_t milliseconds, given as decimal seconds ("1.5"),
 *                   bounds in ms
 *   TQ_CFG_SIZE     int64_t bytes, with optional K/M/G suffix (powers of
 *                   1024), within [min, max]
 *   TQ_CFG_STRING   char * (heap copy; NULL when unset and no default)
 *   TQ_CFG_ENUM     char * one of `choices` ("always|interval|off")
 *   TQ_CFG_FLAG     int 0/1, takes no value
 *   TQ_CFG_LIST     tq_strlist_t, repeatable, in order given
 * Flags are "--name VALUE" or "--name=VALUE".
 *
 * Config file: a table with a STRING entry named "config" reads the
 * file it names (from --config, else its environment variable, else its
 * default) after the defaults and before the environment and the flags,
 * so file < environment < flags. The file is INI (read with inih):
 * "name = value" lines whose names are the flags without "--" (repair =
 * yes for a FLAG; a LIST name may repeat, each line adds one item),
 * comments start with '#' or ';', no sections. A default path that does
 * not exist is skipped; one given by flag or environment must exist. A
 * leading "~/" is $HOME. Every bad line is reported, as "FILE:LINE:
 * message", one per line of err. */
#ifndef TQ_CONFIG_H
#define TQ_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Room for every error of a config file (callers' err buffers). */
#define TQ_CFG_ERR_MAX 4096
/* Longest line of a config file: the line buffer of Debian's libinih
 * (INI_MAX_LINE). Longer lines are an error, never cut. */
#define TQ_CFG_LINE_MAX 200
/* Bad lines reported from one config file at most (the rest counted). */
#define TQ_CFG_FILE_ERRORS_MAX 20

typedef enum {
    TQ_CFG_INT,
    TQ_CFG_MS,
    TQ_CFG_SIZE,
    TQ_CFG_STRING,
    TQ_CFG_ENUM,
    TQ_CFG_FLAG,
    TQ_CFG_LIST,
} tq_cfg_type_t;

typedef struct {
    char **items;
    size_t n;
} tq_strlist_t;

typedef struct {
    const char *name; /* flag without "--"; NULL ends the table */
    tq_cfg_type_t type;
    const char *def;     /* default as text, or NULL */
    int64_t min, max;    /* bounds for INT / MS / SIZE */
    const char *choices; /* ENUM: "a|b|c" */
    const char *env;     /* environment variable consulted when the flag
                             is absent, or NULL */
    size_t offset;       /* where the value lives in the settings struct */
    const char *metavar; /* "N", "FILE", ... for --help */
    const char *help;
} tq_cfg_entry_t;

/* Apply defaults, then environment variables, then flags from
 * argv[*argi...]. Parsing stops at the first argument that is not a flag
 * ("-" and anything not starting with "--" count as arguments), or after
 * "--"; *argi is left at it. "--help" sets *help_out (if non-NULL) and
 * stops. Returns 0, or -1 with err naming the flag (or the environment
 * variable) and what was wrong:
 *   "--concurrency: '0x' is not a number"
 *   "--concurrency: 99999 is out of range (1..4096)"
 *   "unknown option --frobnicate" */
int tq_cfg_parse(const tq_cfg_entry_t *table, void *settings, int argc, char **argv, int *argi,
                 int *help_out, char *err, size_t errlen);

/* 1 if the flags in argv[argi...] (before the first argument) include
 * --NAME; stops like tq_cfg_parse. For --check-config, which must be
 * known before the parse fails. */
int tq_cfg_has_flag(const tq_cfg_entry_t *table, int argc, char **argv, int argi, const char *name);

/* Print each setting as a man page list (scdoc markup), for the pages
 * generated at build time. */
void tq_cfg_scdoc(const tq_cfg_entry_t *table, FILE *out);

/* Apply only the defaults (settings that no flag set). Returns 0 or -1. */
int tq_cfg_defaults(const tq_cfg_entry_t *table, void *settings, char *err, size_t errlen);

/* Print "  --name METAVAR   help (default: X; env: Y)" lines for --help. */
void tq_cfg_usage(const tq_cfg_entry_t *table, FILE *out);

/* Free heap values (STRING, ENUM, LIST) held in settings. */
void tq_cfg_free(const tq_cfg_entry_t *table, void *settings);

/* Print the table as a Markdown table (for docs/). */
void tq_cfg_markdown(const tq_cfg_entry_t *table, FILE *out);


/* ---- SIGHUP: apply a re-read configuration ------------------------------ */

/* A setting that can change while the program runs. apply puts the
 * value(s) of next (the settings just read) in force and returns 0, or
 * -1 with why (the setting then stays as it was). One apply function
 * may serve a group of settings (listed once per name): it applies the
 * whole group from next, so calling it again is harmless. cur holds
 * the settings in force before the reload. */
typedef struct {
    const char *name; /* a table entry's name; NULL ends the list */
    int (*apply)(void *arg, const void *cur, const void *next, char *why, size_t whylen);
} tq_cfg_live_t;

/* How tq_cfg_reload tells what it did: one line, warn = 1 for what was
 * not applied. */
typedef void (*tq_cfg_note_fn)(void *arg, int warn, const char *line);

/* Compare next (just parsed with tq_cfg_parse) with cur (in force),
 * entry by entry. A changed entry listed in live is applied ("setting
 * NAME changed from A to B") and its value moves into cur; one not
 * listed, or whose apply fails, is refused ("setting NAME changed from A
 * to B in the configuration but cannot change while running: restart
 * to apply it; NAME stays A", or the apply's reason) and cur keeps it.
 * Every line goes to note. Returns how many settings changed. next is
 * left for tq_cfg_free. */
int tq_cfg_reload(const tq_cfg_entry_t *table, void *cur, void *next, const tq_cfg_live_t *live,
                  void *arg, tq_cfg_note_fn note);

/* The value of entry e in settings as text ("1.5" seconds, "64M",
 * "a,b" for a list, "(unset)"), cut to size. */
void tq_cfg_value_text(const tq_cfg_entry_t *e, const void *settings, char *dst, size_t size);

#endif
