/* tq_keyfile.h - key-pair mode's files: a CURVE key pair per program
 * (NAME.key, secret, mode 0600) and its public half (NAME.pub), made by
 * `taskq keygen NAME` (docs/security.md, "Identities and permissions").
 *
 * Format (both files; text, one setting a line, '#' starts a comment):
 *   public-key = <40 Z85 characters>     (both files)
 *   secret-key = <40 Z85 characters>     (NAME.key only)
 * Z85 is ZeroMQ's text form of a 32-byte key (zmq_z85_encode). A .key
 * file whose keys do not belong together is refused.
 *
 * A secret key file is checked like the authkey file: a regular file
 * (not a symbolic link), owned by us or root, not readable or writable
 * by group or others. Key bytes never appear in an error message. */
#ifndef TQ_KEYFILE_H
#define TQ_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#include "tq_authkey.h"

/* Longest key file read (comments included). */
#define TQ_KEYFILE_MAX 4096
/* Z85 text of a 32-byte key, without its NUL. */
#define TQ_Z85_KEY_LEN 40

/* How tq_file_read_checked checks a file's owner and mode. */
typedef enum {
    TQ_FILE_PUBLIC = 0, /* anyone may read it: only "a regular file" */
    TQ_FILE_CONFIG = 1, /* owned by us or root, not writable by group/others */
    TQ_FILE_SECRET = 2, /* owned by us or root, no access for group/others */
} tq_file_kind_t;

/* Read the whole file at path (at most max bytes, else an error) into a
 * new NUL-terminated buffer *out (*len bytes; caller frees, wiping it
 * first for a secret), after the checks of kind. what names the file in
 * messages ("key file", "--allow-keys file"). Returns 0, or -1 with err
 * naming the file and the fix. */
int tq_file_read_checked(const char *path, const char *what, tq_file_kind_t kind, size_t max,
                         char **out, size_t *len, tq_err_t *err);

/* Decode 40 Z85 characters (exactly) into key[32]. Returns 0 or -1. */
int tq_z85_key_decode(const char *text, size_t len, uint8_t key[32]);

/* Write a fresh key pair to base.key (mode 0600) and base.pub (mode
 * 0644), name (base's last component) in their comment; neither may
 * exist (never overwritten). pub_z85[41] receives the public key.
 * Returns 0, or -1 with err (nothing left behind). */
int tq_keyfile_generate(const char *base, char pub_z85[TQ_Z85_KEY_LEN + 1], tq_err_t *err);

/* Load a key pair (a .key file: secret checks) into pub and sec.
 * Returns 0, or -1 with err. */
int tq_keyfile_load_pair(const char *path, uint8_t pub[32], uint8_t sec[32], tq_err_t *err);

/* Load a public key from a .pub file (a file holding a secret-key line
 * is refused: a peer must not be handed the master's secret). Returns
 * 0, or -1 with err. */
int tq_keyfile_load_public(const char *path, uint8_t pub[32], tq_err_t *err);

/* The keys a connecting peer (client, worker) uses: its own pair from
 * key_path (key-pair mode) or else derived from authkey_path; the
 * master's public key from master_path or else derived from
 * authkey_path. NULL or "" means not given. Returns 0, or -1 with err
 * (a missing source is named with its flag: "--master-key FILE"). */
int tq_keys_load_peer(const char *authkey_path, const char *key_path, const char *master_path,
                      tq_curve_keys_t *keys, tq_err_t *err);

#endif
