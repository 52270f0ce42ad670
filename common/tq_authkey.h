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

#define TQ_KDF_CONTEXT_SERVER "taskq/v1/curve/server"
#define TQ_KDF_CONTEXT_CLIENT "taskq/v1/curve/client"

/* Shortest key accepted; shorter keys are refused. */
#define TQ_AUTHKEY_MIN 16
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
 * Returns 0, or -1 with a message in err[errlen] that names the file and
 * the fix (missing file, mode allows group/others, empty or too short,
 * too long). The message never contains key bytes. */
int tq_authkey_load(const char *path, tq_curve_keys_t *keys, char *err, size_t errlen);

/* Derive keys from raw key bytes (len >= 1). Returns 0 or -1 (libsodium
 * failure). */
int tq_authkey_derive(const uint8_t *key, size_t len, tq_curve_keys_t *keys);

/* Create a fresh random key file at path with mode 0600 (O_EXCL: never
 * overwrites). 32 random bytes, written as 64 hex characters and a
 * newline so that it can be copied as text. Returns 0 or -1 with err. */
int tq_authkey_generate(const char *path, char *err, size_t errlen);

/* Wipe keys (sodium_memzero). */
void tq_curve_keys_wipe(tq_curve_keys_t *keys);

/* Resolve which key file to use: flag value if set, else the
 * TASKQ_AUTHKEY_FILE environment variable, else NULL. */
const char *tq_authkey_path(const char *flag_value);

#endif
