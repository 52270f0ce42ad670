/* tq_authkey.h - the shared secret and the CURVE keys derived from it.
 *
 * The key is a file's bytes with one trailing newline removed. A file
 * readable by group or others is refused (as ssh does). The key never
 * appears in argv, a log line or an error message; buffers holding it
 * are wiped with sodium_memzero before they are freed.
 *
 * Derivation (shared-key mode, v1), reproducible with Python's hashlib
 * and pyzmq (see proto/PROTOCOL.md):
 *   k            = BLAKE2b-256(authkey)                       (unkeyed)
 *   server_seed  = BLAKE2b-256(key=k, data="taskq/v1/curve/server")
 *   client_seed  = BLAKE2b-256(key=k, data="taskq/v1/curve/client")
 *   (pk, sk)     = crypto_box_seed_keypair(seed)   for each role */
#ifndef TQ_AUTHKEY_H
#define TQ_AUTHKEY_H

#include <stddef.h>
#include <stdint.h>

#include "tq_err.h"

#define TQ_KDF_CONTEXT_SERVER "taskq/v1/curve/server"
#define TQ_KDF_CONTEXT_CLIENT "taskq/v1/curve/client"

/* Shortest key accepted; shorter keys are refused. */
#define TQ_AUTHKEY_MIN 16
/* Fewest distinct byte values a key must hold: fewer is a trivial key
 * (all zeros, one repeated character, "abababab..."), refused. A random
 * key of 16 hex digits has fewer by chance about once in 10^13. */
#define TQ_AUTHKEY_MIN_DISTINCT 3
/* Longest key file read. */
#define TQ_AUTHKEY_MAX 4096

typedef struct {
    uint8_t server_public[32];
    uint8_t server_secret[32];
    uint8_t client_public[32];
    uint8_t client_secret[32];
    /* Z85 text forms (40 chars + NUL), as ZeroMQ's options take them. */
    char server_public_z85[41];
    char server_secret_z85[41];
    char client_public_z85[41];
    char client_secret_z85[41];
} tq_curve_keys_t;

/* Read the authkey file at path and derive the keys into *keys.
 * Returns 0, or -1 with a message in err (code 0) that names the file and
 * the fix (missing file, mode allows group/others, owned by another user
 * than us or root, empty or too short, trivial, too long). The message
 * never contains key bytes. */
int tq_authkey_load(const char *path, tq_curve_keys_t *keys, tq_err_t *err);

/* tq_authkey_load for a connecting peer (worker, client): the same
 * checks, but only what a CURVE client needs is kept: the client key pair
 * and the server's public key. The server's secret key is derived on the
 * way to its public key and wiped at once (server_secret and its Z85 form
 * stay zero), and the stack the derivation used is scrubbed. */
int tq_authkey_load_peer(const char *path, tq_curve_keys_t *keys, tq_err_t *err);

/* Memory for keys that a core dump leaves out (MADV_DONTDUMP), that a
 * fork()ed child sees zeroed (MADV_WIPEONFORK, where the kernel has it)
 * and that is locked in RAM where RLIMIT_MEMLOCK allows. Zeroed. Caller
 * owns it: tq_curve_keys_free. NULL when it cannot be mapped. */
tq_curve_keys_t *tq_curve_keys_new(void);
/* Wipe and unmap *keys_p (NULL or *NULL: nothing); nulls it. */
void tq_curve_keys_free(tq_curve_keys_t **keys_p);

/* What every taskq program does at start, before it reads a key: make
 * the process non-dumpable (prctl PR_SET_DUMPABLE 0), so that a crash
 * leaves no core file with a secret in it and other processes of the
 * same user cannot read its memory (ptrace, /proc/PID/mem). */
void tq_process_protect(void);

/* Derive keys from raw key bytes (len >= 1). Returns 0 or -1 (libsodium
 * failure). */
int tq_authkey_derive(const uint8_t *key, size_t len, tq_curve_keys_t *keys);

/* Create a fresh random key file at path with mode 0600 (O_EXCL: never
 * overwrites). 32 random bytes, written as 64 hex characters and a
 * newline so that it can be copied as text. Returns 0 or -1 with err. */
int tq_authkey_generate(const char *path, tq_err_t *err);

/* Wipe keys (sodium_memzero). */
void tq_curve_keys_wipe(tq_curve_keys_t *keys);

/* Resolve which key file to use: flag value if set, else the
 * TASKQ_AUTHKEY_FILE environment variable, else NULL. */
const char *tq_authkey_path(const char *flag_value);

#endif
