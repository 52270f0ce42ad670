/* tq_authkey.c - load the shared authkey file, derive the CURVE key
 * pairs from it, and create fresh key files. */
#include "tq_authkey.h"

#include "tq_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* Bytes of randomness in a generated key file. */
#define TQ_AUTHKEY_GEN_BYTES 32

static int sodium_ready(void)
{
    /* sodium_init is idempotent and thread-safe; 1 means "already done". */
    return sodium_init() < 0 ? -1 : 0;
}

/* Derive one key pair from k (32 bytes) and a context string. */
static int derive_pair(const uint8_t k[32], const char *context, uint8_t pk[32], uint8_t sk[32])
{
    uint8_t seed[crypto_box_SEEDBYTES];
    int rc = crypto_generichash(seed, sizeof seed, (const unsigned char *)context,
                                strlen(context), k, 32);
    if (rc == 0)
        rc = crypto_box_seed_keypair(pk, sk, seed);
    sodium_memzero(seed, sizeof seed);
    return rc == 0 ? 0 : -1;
}

int tq_authkey_derive(const uint8_t *key, size_t len, tq_curve_keys_t *keys)
{
    if (!key || len < 1 || !keys || sodium_ready() < 0)
        return -1;
    uint8_t k[32];
    int rc = -1;
    if (crypto_generichash(k, sizeof k, key, len, NULL, 0) != 0)
        goto out;
    if (derive_pair(k, TQ_KDF_CONTEXT_SERVER, keys->server_public, keys->server_secret) < 0)
        goto out;
    if (derive_pair(k, TQ_KDF_CONTEXT_CLIENT, keys->client_public, keys->client_secret) < 0)
        goto out;
    if (!zmq_z85_encode(keys->server_public_z85, keys->server_public, 32) ||
        !zmq_z85_encode(keys->server_secret_z85, keys->server_secret, 32) ||
        !zmq_z85_encode(keys->client_public_z85, keys->client_public, 32) ||
        !zmq_z85_encode(keys->client_secret_z85, keys->client_secret, 32))
        goto out;
    rc = 0;
out:
    sodium_memzero(k, sizeof k);
    if (rc < 0)
        tq_curve_keys_wipe(keys);
    return rc;
}

int tq_authkey_load(const char *path, tq_curve_keys_t *keys, char *err, size_t errlen)
{
    if (!path || !*path) {
        snprintf(err, errlen, "no authkey file given (use --authkey-file FILE or TASKQ_AUTHKEY_FILE)");
        return -1;
    }
    if (sodium_ready() < 0) {
        snprintf(err, errlen, "cannot initialise libsodium");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ELOOP)
            snprintf(err, errlen, "cannot read authkey file %s: it is a symbolic link "
                     "(give the real path)", path);
        else
            snprintf(err, errlen, "cannot read authkey file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot read authkey file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "authkey file %s is not a regular file", path);
        close(fd);
        return -1;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, errlen,
                 "authkey file %s is readable by group or others (mode %04o); fix it with: "
                 "chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return -1;
    }

    /* Static size: never more than TQ_AUTHKEY_MAX + 1 bytes are read. */
    uint8_t buf[TQ_AUTHKEY_MAX + 1];
    size_t len = 0;
    int rc = -1;
    while (len < sizeof buf) {
        ssize_t r = read(fd, buf + len, sizeof buf - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            snprintf(err, errlen, "cannot read authkey file %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (len > TQ_AUTHKEY_MAX) {
        snprintf(err, errlen, "authkey file %s is too long (over %d bytes)", path,
                 TQ_AUTHKEY_MAX);
        goto out;
    }
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len < TQ_AUTHKEY_MIN) {
        snprintf(err, errlen,
                 "authkey in %s is too short (%zu bytes, need at least %d); create one with: "
                 "taskq-master --data-dir DIR (writes DIR/authkey) or: head -c 32 /dev/urandom "
                 "| od -An -tx1 | tr -d ' \\n' > %s && chmod 600 %s",
                 path, len, TQ_AUTHKEY_MIN, path, path);
        goto out;
    }
    if (tq_authkey_derive(buf, len, keys) < 0) {
        snprintf(err, errlen, "cannot derive keys from authkey file %s", path);
        goto out;
    }
    rc = 0;
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}

int tq_authkey_generate(const char *path, char *err, size_t errlen)
{
    if (!path || !*path) {
        snprintf(err, errlen, "no path given for the new authkey file");
        return -1;
    }
    if (sodium_ready() < 0) {
        snprintf(err, errlen, "cannot initialise libsodium");
        return -1;
    }
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create authkey file %s: %s", path, strerror(errno));
        return -1;
    }
    uint8_t raw[TQ_AUTHKEY_GEN_BYTES];
    char text[TQ_AUTHKEY_GEN_BYTES * 2 + 2];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(text, sizeof text, raw, sizeof raw); /* lowercase hex */
    size_t len = TQ_AUTHKEY_GEN_BYTES * 2;
    text[len++] = '\n';
    int rc = -1;
    /* The umask may have cleared bits but can never add any: make sure. */
    if (fchmod(fd, 0600) < 0) {
        snprintf(err, errlen, "cannot set mode 600 on authkey file %s: %s", path,
                 strerror(errno));
        goto out;
    }
    if (tq_write_all(fd, text, len) < 0) {
        snprintf(err, errlen, "cannot write authkey file %s: %s", path, strerror(errno));
        goto out;
    }
    if (fsync(fd) < 0) {
        snprintf(err, errlen, "cannot sync authkey file %s: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(text, sizeof text);
    if (close(fd) < 0 && rc == 0) {
        snprintf(err, errlen, "cannot write authkey file %s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc < 0)
        unlink(path); /* we created it with O_EXCL, so it is ours */
    return rc;
}

void tq_curve_keys_wipe(tq_curve_keys_t *keys)
{
    if (keys)
        sodium_memzero(keys, sizeof *keys);
}

const char *tq_authkey_path(const char *flag_value)
{
    if (flag_value && *flag_value)
        return flag_value;
    const char *env = getenv("TASKQ_AUTHKEY_FILE");
    if (env && *env)
        return env;
    return NULL;
}
