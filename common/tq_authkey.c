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
#include <sys/mman.h>
#include <sys/prctl.h>
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
    int rc = crypto_generichash(seed, sizeof seed, (const unsigned char *)context, strlen(context),
                                k, 32);
    if (rc == 0)
        rc = crypto_box_seed_keypair(pk, sk, seed);
    sodium_memzero(seed, sizeof seed);
    return rc == 0 ? 0 : -1;
}

/* Overwrite the stack below the caller's frame: the key derivation's
 * callees (libsodium's hash and scalar multiplication) leave copies of
 * secret material in stack frames they do not wipe. */
static __attribute__((noinline)) void scrub_stack(void)
{
    volatile uint8_t pad[32768];
    sodium_memzero((void *)pad, sizeof pad);
    __asm__ __volatile__("" : : "r"(pad) : "memory");
}

/* Derive keys; peer: the server's secret key is not kept. */
static int derive(const uint8_t *key, size_t len, tq_curve_keys_t *keys, int peer)
{
    if (!key || len < 1 || !keys || sodium_ready() < 0)
        return -1;
    uint8_t k[32], server_secret[32];
    int rc = -1;
    if (crypto_generichash(k, sizeof k, key, len, NULL, 0) != 0)
        goto out;
    if (derive_pair(k, TQ_KDF_CONTEXT_SERVER, keys->server_public,
                    peer ? server_secret : keys->server_secret) < 0)
        goto out;
    if (derive_pair(k, TQ_KDF_CONTEXT_CLIENT, keys->client_public, keys->client_secret) < 0)
        goto out;
    if (!zmq_z85_encode(keys->server_public_z85, keys->server_public, 32) ||
        (!peer && !zmq_z85_encode(keys->server_secret_z85, keys->server_secret, 32)) ||
        !zmq_z85_encode(keys->client_public_z85, keys->client_public, 32) ||
        !zmq_z85_encode(keys->client_secret_z85, keys->client_secret, 32))
        goto out;
    rc = 0;
out:
    sodium_memzero(k, sizeof k);
    sodium_memzero(server_secret, sizeof server_secret);
    if (peer) {
        sodium_memzero(keys->server_secret, sizeof keys->server_secret);
        sodium_memzero(keys->server_secret_z85, sizeof keys->server_secret_z85);
        scrub_stack();
    }
    if (rc < 0)
        tq_curve_keys_wipe(keys);
    return rc;
}

int tq_authkey_derive(const uint8_t *key, size_t len, tq_curve_keys_t *keys)
{
    return derive(key, len, keys, 0);
}

/* Number of distinct byte values in key[len]. */
static int distinct_bytes(const uint8_t *key, size_t len)
{
    uint8_t seen[256] = {0};
    int n = 0;
    for (size_t i = 0; i < len; i++)
        if (!seen[key[i]]++)
            n++;
    sodium_memzero(seen, sizeof seen);
    return n;
}

static int load(const char *path, tq_curve_keys_t *keys, int peer, tq_err_t *err)
{
    if (!path || !*path)
        return tq_err_set(err, 0,
                          "no authkey file given (use --authkey-file FILE or TASKQ_AUTHKEY_FILE)");
    if (sodium_ready() < 0) {
        tq_err_set(err, 0, "cannot initialise libsodium");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ELOOP)
            tq_err_set(err, 0,
                       "cannot read authkey file %s: it is a symbolic link "
                       "(give the real path)",
                       path);
        else
            tq_err_set(err, 0, "cannot read authkey file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        tq_err_set(err, 0, "cannot read authkey file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        tq_err_set(err, 0, "authkey file %s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        tq_err_set(err, 0,
                   "authkey file %s is owned by uid %u, not by us (uid %u) or root: another user "
                   "could have chosen the key; use a key file of our own",
                   path, (unsigned)st.st_uid, (unsigned)geteuid());
        close(fd);
        return -1;
    }
    if ((st.st_mode & 077) != 0) {
        tq_err_set(err, 0,
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
            tq_err_set(err, 0, "cannot read authkey file %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (len > TQ_AUTHKEY_MAX) {
        tq_err_set(err, 0, "authkey file %s is too long (over %d bytes)", path, TQ_AUTHKEY_MAX);
        goto out;
    }
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len < TQ_AUTHKEY_MIN) {
        tq_err_set(err, 0,
                   "authkey in %s is too short (%zu bytes, need at least %d); create one with: "
                   "taskq-master --data-dir DIR (writes DIR/authkey) or: head -c 32 /dev/urandom "
                   "| od -An -tx1 | tr -d ' \\n' > %s && chmod 600 %s",
                   path, len, TQ_AUTHKEY_MIN, path, path);
        goto out;
    }
    int distinct = distinct_bytes(buf, len);
    if (distinct < TQ_AUTHKEY_MIN_DISTINCT) {
        tq_err_set(err, 0,
                   "authkey in %s is trivial (%d distinct byte value%s, need at least %d): use a "
                   "random key, e.g. head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > %s",
                   path, distinct, distinct == 1 ? "" : "s", TQ_AUTHKEY_MIN_DISTINCT, path);
        goto out;
    }
    if (derive(buf, len, keys, peer) < 0) {
        tq_err_set(err, 0, "cannot derive keys from authkey file %s", path);
        goto out;
    }
    rc = 0;
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}

int tq_authkey_load(const char *path, tq_curve_keys_t *keys, tq_err_t *err)
{
    return load(path, keys, 0, err);
}

int tq_authkey_load_peer(const char *path, tq_curve_keys_t *keys, tq_err_t *err)
{
    return load(path, keys, 1, err);
}

int tq_authkey_generate(const char *path, tq_err_t *err)
{
    if (!path || !*path) {
        tq_err_set(err, 0, "no path given for the new authkey file");
        return -1;
    }
    if (sodium_ready() < 0) {
        tq_err_set(err, 0, "cannot initialise libsodium");
        return -1;
    }
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        tq_err_set(err, 0, "cannot create authkey file %s: %s", path, strerror(errno));
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
        tq_err_set(err, 0, "cannot set mode 600 on authkey file %s: %s", path, strerror(errno));
        goto out;
    }
    if (tq_write_all(fd, text, len) < 0) {
        tq_err_set(err, 0, "cannot write authkey file %s: %s", path, strerror(errno));
        goto out;
    }
    if (fsync(fd) < 0) {
        tq_err_set(err, 0, "cannot sync authkey file %s: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(text, sizeof text);
    if (close(fd) < 0 && rc == 0) {
        tq_err_set(err, 0, "cannot write authkey file %s: %s", path, strerror(errno));
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

/* Bytes mapped for one tq_curve_keys_t: whole pages. */
static size_t keys_map_len(void)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t p = page > 0 ? (size_t)page : 4096;
    return (sizeof(tq_curve_keys_t) + p - 1) / p * p;
}

tq_curve_keys_t *tq_curve_keys_new(void)
{
    size_t len = keys_map_len();
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
        /* Best effort each: a kernel without them still gets working keys,
     * and PR_SET_DUMPABLE 0 (tq_process_protect) keeps cores away. */
#ifdef MADV_DONTDUMP
    (void)madvise(p, len, MADV_DONTDUMP);
#endif
#ifdef MADV_WIPEONFORK
    (void)madvise(p, len, MADV_WIPEONFORK);
#endif
    (void)mlock(p, len);
    return p; /* anonymous pages are zero */
}

void tq_curve_keys_free(tq_curve_keys_t **keys_p)
{
    if (!keys_p || !*keys_p)
        return;
    size_t len = keys_map_len();
    sodium_memzero(*keys_p, len);
    (void)munlock(*keys_p, len);
    munmap(*keys_p, len);
    *keys_p = NULL;
}

void tq_process_protect(void) { (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }

const char *tq_authkey_path(const char *flag_value)
{
    if (flag_value && *flag_value)
        return flag_value;
    const char *env = getenv("TASKQ_AUTHKEY_FILE");
    if (env && *env)
        return env;
    return NULL;
}
