/* tq_keyfile.c - key-pair files: read with checks, generate, load. See
 * tq_keyfile.h. */
#include "tq_keyfile.h"

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

int tq_file_read_checked(const char *path, const char *what, tq_file_kind_t kind, size_t max,
                         char **out, size_t *len, tq_err_t *err)
{
    *out = NULL;
    *len = 0;
    if (!path || !*path) {
        tq_err_set(err, 0, "no %s given", what);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ELOOP)
            tq_err_set(err, 0, "cannot read %s %s: it is a symbolic link (give the real path)",
                       what, path);
        else
            tq_err_set(err, 0, "cannot read %s %s: %s", what, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        tq_err_set(err, 0, "%s %s is not a regular file", what, path);
        close(fd);
        return -1;
    }
    if (kind != TQ_FILE_PUBLIC && st.st_uid != geteuid() && st.st_uid != 0) {
        tq_err_set(err, 0,
                   "%s %s is owned by uid %u, not by us (uid %u) or root: another user could have "
                   "written it; use a file of our own",
                   what, path, (unsigned)st.st_uid, (unsigned)geteuid());
        close(fd);
        return -1;
    }
    unsigned bad = kind == TQ_FILE_SECRET ? 077 : kind == TQ_FILE_CONFIG ? 022 : 0;
    if (st.st_mode & bad) {
        tq_err_set(err, 0, "%s %s is %s by group or others (mode %04o); fix it with: chmod %s %s",
                   what, path, kind == TQ_FILE_SECRET ? "readable or writable" : "writable",
                   (unsigned)(st.st_mode & 07777), kind == TQ_FILE_SECRET ? "600" : "go-w", path);
        close(fd);
        return -1;
    }
    char *buf = tq_malloc(max + 2);
    size_t n = 0;
    while (n < max + 1) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            tq_err_set(err, 0, "cannot read %s %s: %s", what, path, strerror(errno));
            sodium_memzero(buf, max + 2);
            free(buf);
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (n > max) {
        tq_err_set(err, 0, "%s %s is too long (over %zu bytes)", what, path, max);
        sodium_memzero(buf, max + 2);
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int tq_z85_key_decode(const char *text, size_t len, uint8_t key[32])
{
    char z[TQ_Z85_KEY_LEN + 1];
    if (len != TQ_Z85_KEY_LEN)
        return -1;
    memcpy(z, text, len);
    z[len] = '\0';
    return zmq_z85_decode(key, z) ? 0 : -1;
}

/* The keys of one key file: which lines were there. */
typedef struct {
    int has_pub, has_sec;
    uint8_t pub[32], sec[32];
} keytext_t;

/* Parse a key file's text (see the header). Returns 0, or -1 with err
 * "PATH:LINE: message". */
static int parse_keys(const char *path, char *text, size_t len, keytext_t *k, tq_err_t *err)
{
    memset(k, 0, sizeof *k);
    size_t lineno = 0;
    char *p = text, *end = text + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        lineno++;
        char *s = p;
        p = nl ? nl + 1 : end;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        char *e = le;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        if (s == e || *s == '#')
            continue;
        char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq) {
            tq_err_set(err, 0, "%s:%zu: expected 'public-key = KEY' or 'secret-key = KEY'", path,
                       lineno);
            return -1;
        }
        char *ne = eq;
        while (ne > s && (ne[-1] == ' ' || ne[-1] == '\t'))
            ne--;
        char *v = eq + 1;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        size_t nlen = (size_t)(ne - s);
        int is_pub = nlen == 10 && memcmp(s, "public-key", 10) == 0;
        int is_sec = nlen == 10 && memcmp(s, "secret-key", 10) == 0;
        if (!is_pub && !is_sec) {
            tq_err_set(err, 0, "%s:%zu: unknown setting (expected public-key or secret-key)", path,
                       lineno);
            return -1;
        }
        if ((is_pub && k->has_pub) || (is_sec && k->has_sec)) {
            tq_err_set(err, 0, "%s:%zu: %s given twice", path, lineno,
                       is_pub ? "public-key" : "secret-key");
            return -1;
        }
        if (tq_z85_key_decode(v, (size_t)(e - v), is_pub ? k->pub : k->sec) < 0) {
            tq_err_set(err, 0, "%s:%zu: %s is not %d Z85 characters", path, lineno,
                       is_pub ? "public-key" : "secret-key", TQ_Z85_KEY_LEN);
            return -1;
        }
        *(is_pub ? &k->has_pub : &k->has_sec) = 1;
    }
    if (!k->has_pub) {
        tq_err_set(err, 0, "%s: no public-key line (make key files with: taskq keygen NAME)", path);
        return -1;
    }
    return 0;
}

/* Create path (O_EXCL) with mode and write text. Returns 0 or -1 with
 * err; a file it created is removed on failure. */
static int write_new(const char *path, mode_t mode, const char *text, tq_err_t *err)
{
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        tq_err_set(err, 0, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = fchmod(fd, mode) == 0 && tq_write_all(fd, text, strlen(text)) == 0 && fsync(fd) == 0
                 ? 0
                 : -1;
    if (rc < 0)
        tq_err_set(err, 0, "cannot write %s: %s", path, strerror(errno));
    if (close(fd) < 0 && rc == 0) {
        tq_err_set(err, 0, "cannot write %s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc < 0)
        unlink(path);
    return rc;
}

int tq_keyfile_generate(const char *base, char pub_z85[TQ_Z85_KEY_LEN + 1], tq_err_t *err)
{
    char kpath[4096], ppath[4096];
    if (!base || !*base || snprintf(kpath, sizeof kpath, "%s.key", base) >= (int)sizeof kpath ||
        snprintf(ppath, sizeof ppath, "%s.pub", base) >= (int)sizeof ppath) {
        tq_err_set(err, 0, "keygen: NAME must be 1..4000 bytes");
        return -1;
    }
    struct stat st;
    if (lstat(kpath, &st) == 0 || lstat(ppath, &st) == 0) {
        tq_err_set(err, 0, "keygen: %s already exists: not overwritten (move it away first)",
                   lstat(kpath, &st) == 0 ? kpath : ppath);
        return -1;
    }
    const char *name = strrchr(base, '/');
    name = name ? name + 1 : base;
    char sec_z85[TQ_Z85_KEY_LEN + 1];
    if (zmq_curve_keypair(pub_z85, sec_z85) < 0) {
        tq_err_set(err, 0, "keygen: cannot make a key pair: %s", zmq_strerror(errno));
        return -1;
    }
    char text[512];
    snprintf(text, sizeof text,
             "# taskq key pair \"%.64s\" (taskq keygen). Secret: keep this file mode 0600,\n"
             "# on this machine only. Its public half is %.64s.pub.\n"
             "public-key = %s\nsecret-key = %s\n",
             name, name, pub_z85, sec_z85);
    int rc = write_new(kpath, 0600, text, err);
    sodium_memzero(sec_z85, sizeof sec_z85);
    sodium_memzero(text, sizeof text);
    if (rc < 0)
        return -1;
    snprintf(text, sizeof text,
             "# taskq public key \"%.64s\" (taskq keygen): for the master's --allow-keys file\n"
             "# (or, for the master's own key, the peers' --master-key).\n"
             "public-key = %s\n",
             name, pub_z85);
    if (write_new(ppath, 0644, text, err) < 0) {
        unlink(kpath);
        return -1;
    }
    return 0;
}

int tq_keyfile_load_pair(const char *path, uint8_t pub[32], uint8_t sec[32], tq_err_t *err)
{
    char *text;
    size_t len;
    if (tq_file_read_checked(path, "key file", TQ_FILE_SECRET, TQ_KEYFILE_MAX, &text, &len, err) <
        0)
        return -1;
    keytext_t k;
    int rc = parse_keys(path, text, len, &k, err);
    sodium_memzero(text, len);
    free(text);
    if (rc == 0 && !k.has_sec) {
        tq_err_set(err, 0, "%s: no secret-key line (a .pub file? give the .key file)", path);
        rc = -1;
    }
    uint8_t check[32];
    if (rc == 0 &&
        (crypto_scalarmult_base(check, k.sec) != 0 || sodium_memcmp(check, k.pub, 32) != 0)) {
        tq_err_set(err, 0, "%s: the public-key does not belong to the secret-key", path);
        rc = -1;
    }
    if (rc == 0) {
        memcpy(pub, k.pub, 32);
        memcpy(sec, k.sec, 32);
    }
    sodium_memzero(&k, sizeof k);
    sodium_memzero(check, sizeof check);
    return rc;
}

int tq_keyfile_load_public(const char *path, uint8_t pub[32], tq_err_t *err)
{
    char *text;
    size_t len;
    if (tq_file_read_checked(path, "public key file", TQ_FILE_PUBLIC, TQ_KEYFILE_MAX, &text, &len,
                             err) < 0)
        return -1;
    keytext_t k;
    int rc = parse_keys(path, text, len, &k, err);
    sodium_memzero(text, len);
    free(text);
    if (rc == 0 && k.has_sec) {
        tq_err_set(err, 0,
                   "%s holds a secret key: give the public half (the .pub file), and keep the "
                   ".key file on its own machine",
                   path);
        rc = -1;
    }
    if (rc == 0)
        memcpy(pub, k.pub, 32);
    sodium_memzero(&k, sizeof k);
    return rc;
}

int tq_keys_load_peer(const char *authkey_path, const char *key_path, const char *master_path,
                      tq_curve_keys_t *keys, tq_err_t *err)
{
    int has_auth = authkey_path && *authkey_path, has_key = key_path && *key_path,
        has_master = master_path && *master_path;
    if (sodium_init() < 0) {
        tq_err_set(err, 0, "cannot initialise libsodium");
        return -1;
    }
    if (!has_auth && (!has_key || !has_master)) {
        tq_err_set(err, 0, "%s",
                   has_key ? "key-pair mode needs the master's public key too (--master-key FILE)"
                   : has_master ? "--master-key needs this program's key pair too (--key FILE)"
                                : "no authkey file given");
        return -1;
    }
    if (has_auth && tq_authkey_load_peer(authkey_path, keys, err) < 0)
        return -1;
    if (has_key &&
        tq_keyfile_load_pair(key_path, keys->client_public, keys->client_secret, err) < 0)
        goto fail;
    if (has_master && tq_keyfile_load_public(master_path, keys->server_public, err) < 0)
        goto fail;
    if (!zmq_z85_encode(keys->server_public_z85, keys->server_public, 32) ||
        !zmq_z85_encode(keys->client_public_z85, keys->client_public, 32) ||
        !zmq_z85_encode(keys->client_secret_z85, keys->client_secret, 32)) {
        tq_err_set(err, 0, "cannot encode the keys");
        goto fail;
    }
    return 0;
fail:
    tq_curve_keys_wipe(keys);
    return -1;
}
