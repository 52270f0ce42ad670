/* tq_authkey_test.c - key file loading rules and the derivation test
 * vectors.
 *
 * The expected keys were computed outside C, with /usr/bin/python3
 * (hashlib + pyzmq), so that anyone can re-check them:
 *
 *   import hashlib, zmq
 *   from zmq.utils import z85
 *   def derive(authkey):
 *       k = hashlib.blake2b(authkey, digest_size=32).digest()
 *       out = {}
 *       for role in ("server", "client"):
 *           seed = hashlib.blake2b(("taskq/v1/curve/" + role).encode(),
 *                                  key=k, digest_size=32).digest()
 *           secret = hashlib.sha512(seed).digest()[:32]
 *           sz = z85.encode(secret)
 *           out[role] = (zmq.curve_public(sz).decode(), sz.decode())
 *       return out   # role -> (public z85, secret z85)
 *   print(derive(b"abc" * 6))
 *   print(derive(bytes(range(32))))
 */
#include "tq_authkey.h"

#include "tq_test.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    const uint8_t *key;
    size_t len;
    const char *server_public, *server_secret, *client_public, *client_secret;
} vector_t;

static const uint8_t key_abc[] = "abcabcabcabcabcabc";
static const uint8_t key_seq[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static const vector_t vectors[] = {
    {key_abc, 18, "Mk1So<OGxA/3M+&}K.oRNa(A?k1SAVIFqHm.+l)T",
     "K66Dj/)>}&H%15e=]7UyYA.Y=CvsOYQ7PGs^(-Cs", "Ioz#tX/wpj/lai%I2gLG<Uxz>}n!3yWtY}Lx<8zT",
     "09>c{Y8CwD.(C:bUTKSMXc.hPHdCpFzlb@065bD/"},
    {key_seq, 32, "d:4<1Mck4F@TD2Oh28VkN0uXI/uV6K>tCHP*Ys/.",
     "m!N529ZD}[+e35D^57$389w[HLi.ZK1ed]@**s.f", "p7)RrC7@=bfK>:KRfIpeRZmlB2JF&@^4p}.D=BXU",
     "Sd{VG+?K4D:w+HsYRldDQbKwf/skLC(j2hQ[%]]J"},
};

static char tmpdir[] = "/tmp/tq_authkey_test.XXXXXX";

static void path_in(char *dst, size_t size, const char *name)
{
    snprintf(dst, size, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const void *data, size_t n, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(write(fd, data, n) == (ssize_t)n);
    CHECK(fchmod(fd, mode) == 0);
    close(fd);
}

static int keys_equal(const tq_curve_keys_t *a, const tq_curve_keys_t *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static void test_vectors(void)
{
    for (size_t i = 0; i < sizeof vectors / sizeof *vectors; i++) {
        const vector_t *v = &vectors[i];
        tq_curve_keys_t k;
        CHECK_EQ_INT(tq_authkey_derive(v->key, v->len, &k), 0);
        CHECK_EQ_STR(k.server_public_z85, v->server_public);
        CHECK_EQ_STR(k.server_secret_z85, v->server_secret);
        CHECK_EQ_STR(k.client_public_z85, v->client_public);
        CHECK_EQ_STR(k.client_secret_z85, v->client_secret);
        /* binary and text forms agree */
        uint8_t bin[32];
        CHECK(zmq_z85_decode(bin, k.server_public_z85) != NULL);
        CHECK(memcmp(bin, k.server_public, 32) == 0);
        CHECK(zmq_z85_decode(bin, k.client_secret_z85) != NULL);
        CHECK(memcmp(bin, k.client_secret, 32) == 0);
        /* and the public key belongs to the secret key */
        char pub[41];
        CHECK_EQ_INT(zmq_curve_public(pub, k.server_secret_z85), 0);
        CHECK_EQ_STR(pub, v->server_public);
        tq_curve_keys_wipe(&k);
        static const tq_curve_keys_t zero;
        CHECK(keys_equal(&k, &zero));
    }
    tq_curve_keys_t k;
    CHECK_EQ_INT(tq_authkey_derive(key_abc, 0, &k), -1);
}

static void test_load_ok_and_newline(void)
{
    char p1[256], p2[256];
    tq_err_t err = {0, ""};
    path_in(p1, sizeof p1, "plain");
    path_in(p2, sizeof p2, "newline");
    write_file(p1, "abcabcabcabcabcabc", 18, 0600);
    write_file(p2, "abcabcabcabcabcabc\n", 19, 0600);
    tq_curve_keys_t a, b;
    CHECK_EQ_INT(tq_authkey_load(p1, &a, &err), 0);
    CHECK_EQ_INT(tq_authkey_load(p2, &b, &err), 0);
    CHECK(keys_equal(&a, &b));
    CHECK_EQ_STR(a.server_public_z85, vectors[0].server_public);

    /* only one newline is removed */
    write_file(p2, "abcabcabcabcabcabc\n\n", 20, 0600);
    CHECK_EQ_INT(tq_authkey_load(p2, &b, &err), 0);
    CHECK(!keys_equal(&a, &b));
    /* mode 0400 is fine too */
    write_file(p1, "abcabcabcabcabcabc", 18, 0400);
    CHECK_EQ_INT(tq_authkey_load(p1, &b, &err), 0);
    CHECK(keys_equal(&a, &b));
    unlink(p1);
    unlink(p2);
}

static void test_mode_refused(void)
{
    char p[256];
    tq_err_t err = {0, ""};
    const char *secret = "supersecretkeytext-0123456789";
    path_in(p, sizeof p, "open");
    write_file(p, secret, strlen(secret), 0644);
    tq_curve_keys_t k;
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    CHECK(strstr(err.msg, "chmod 600") != NULL);
    CHECK(strstr(err.msg, "mode 0644") != NULL);
    CHECK(strstr(err.msg, p) != NULL);
    CHECK(strstr(err.msg, "supersecret") == NULL);
    write_file(p, secret, strlen(secret), 0604);
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    CHECK(strstr(err.msg, "readable by group or others") != NULL);
    write_file(p, secret, strlen(secret), 0620);
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    unlink(p);
}

static void test_missing_and_odd_files(void)
{
    char p[256];
    tq_err_t err = {0, ""};
    tq_curve_keys_t k;
    path_in(p, sizeof p, "nonexistent");
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    char want[512];
    snprintf(want, sizeof want, "cannot read authkey file %s: No such file or directory", p);
    CHECK_EQ_STR(err.msg, want);

    /* a directory is not a key file */
    CHECK_EQ_INT(tq_authkey_load(tmpdir, &k, &err), -1);
    CHECK(strstr(err.msg, "not a regular file") != NULL);

    /* a symbolic link is refused (O_NOFOLLOW) */
    char target[256], link[256];
    path_in(target, sizeof target, "target");
    path_in(link, sizeof link, "link");
    write_file(target, "abcabcabcabcabcabc", 18, 0600);
    unlink(link);
    CHECK_EQ_INT(symlink(target, link), 0);
    CHECK_EQ_INT(tq_authkey_load(link, &k, &err), -1);
    CHECK(strstr(err.msg, link) != NULL);
    unlink(link);
    unlink(target);

    /* a FIFO must not hang */
    path_in(p, sizeof p, "fifo");
    CHECK_EQ_INT(mkfifo(p, 0600), 0);
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    unlink(p);

    CHECK_EQ_INT(tq_authkey_load("", &k, &err), -1);
}

static void test_length_limits(void)
{
    char p[256], want[512];
    tq_err_t err = {0, ""};
    tq_curve_keys_t k;
    path_in(p, sizeof p, "short");
    write_file(p, "shortkey12345\n", 14, 0600); /* 13 bytes after the newline */
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    CHECK(strstr(err.msg, "too short (13 bytes, need at least 16)") != NULL);
    CHECK(strstr(err.msg, "chmod 600") != NULL);
    CHECK(strstr(err.msg, "shortkey") == NULL);

    write_file(p, "", 0, 0600);
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    CHECK(strstr(err.msg, "too short (0 bytes") != NULL);

    /* exactly 16 bytes (plus newline) is enough */
    write_file(p, "0123456789abcdef\n", 17, 0600);
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), 0);

    static char big[TQ_AUTHKEY_MAX + 2];
    memset(big, 'k', sizeof big);
    write_file(p, big, 32, 0600); /* one repeated byte: trivial */
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    snprintf(want, sizeof want, "authkey in %s is trivial (1 distinct byte value, need at least 3)",
             p);
    CHECK(strncmp(err.msg, want, strlen(want)) == 0);
    CHECK(strstr(err.msg, "kkkk") == NULL);
    for (size_t i = 0; i < sizeof big; i += 7)
        big[i] = 'q'; /* no longer trivial */
    big[3] = 'z';
    write_file(p, big, TQ_AUTHKEY_MAX, 0600);
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), 0);
    big[TQ_AUTHKEY_MAX] = '\n';
    write_file(p, big, TQ_AUTHKEY_MAX + 1, 0600); /* 4096 + newline: too long */
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    write_file(p, big, TQ_AUTHKEY_MAX + 2, 0600);
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    snprintf(want, sizeof want, "authkey file %s is too long (over 4096 bytes)", p);
    CHECK_EQ_STR(err.msg, want);
    CHECK(strstr(err.msg, "kkkk") == NULL);
    unlink(p);

    /* a message longer than the error struct holds is cut, never overrun */
    char longpath[TQ_MAX_ERROR_TEXT + 64];
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    CHECK_EQ_INT(tq_authkey_load(longpath, &k, &err), -1);
    CHECK_EQ_INT((int)strlen(err.msg), TQ_MAX_ERROR_TEXT - 1);
}

/* Trivial keys (fewer than 3 distinct bytes) and key files owned by
 * another user are refused; a peer's load keeps no server secret. */
static void test_trust(void)
{
    char p[256];
    tq_err_t err = {0, ""};
    tq_curve_keys_t k, full;
    path_in(p, sizeof p, "trivial");
    static const uint8_t zeros[32];
    write_file(p, (const char *)zeros, sizeof zeros, 0600);
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    CHECK(strstr(err.msg, "is trivial (1 distinct byte value") != NULL);
    write_file(p, "abababababababababab\n", 21, 0600);
    CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
    CHECK(strstr(err.msg, "is trivial (2 distinct byte values, need at least 3)") != NULL);
    CHECK(strstr(err.msg, "abab") == NULL);
    write_file(p, "abcabcabcabcabcabc", 18, 0600); /* 3: accepted */
    CHECK_EQ_INT(tq_authkey_load(p, &full, &err), 0);

    /* the peer's load: same public keys and client pair, no server secret */
    tq_curve_keys_t *pk = tq_curve_keys_new();
    CHECK(pk != NULL);
    if (pk) {
        CHECK_EQ_INT(tq_authkey_load_peer(p, pk, &err), 0);
        CHECK(memcmp(pk->server_public, full.server_public, 32) == 0);
        CHECK(memcmp(pk->client_secret, full.client_secret, 32) == 0);
        CHECK_EQ_STR(pk->client_secret_z85, full.client_secret_z85);
        static const uint8_t zero32[32];
        CHECK(memcmp(pk->server_secret, zero32, 32) == 0);
        CHECK_EQ_STR(pk->server_secret_z85, "");
        tq_curve_keys_free(&pk);
        CHECK(pk == NULL);
    }
    tq_curve_keys_free(&pk); /* NULL: nothing */

    /* owned by another user (only root can make one) */
    if (geteuid() == 0) {
        CHECK_EQ_INT(chown(p, 65534, 65534), 0);
        CHECK_EQ_INT(tq_authkey_load(p, &k, &err), -1);
        CHECK(strstr(err.msg, "is owned by uid 65534, not by us (uid 0) or root") != NULL);
    }
    unlink(p);
}

static void test_generate(void)
{
    char p[256];
    tq_err_t err = {0, ""};
    path_in(p, sizeof p, "generated");
    unlink(p);
    CHECK_EQ_INT(tq_authkey_generate(p, &err), 0);
    struct stat st;
    CHECK_EQ_INT(stat(p, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0600);
    CHECK_EQ_INT(st.st_size, 65);
    char buf[128] = "";
    FILE *f = fopen(p, "r");
    CHECK(f != NULL);
    if (f) {
        CHECK_EQ_INT(fread(buf, 1, sizeof buf - 1, f), 65);
        fclose(f);
    }
    CHECK_EQ_INT(buf[64], '\n');
    CHECK_EQ_INT(strspn(buf, "0123456789abcdef"), 64);
    tq_curve_keys_t a, b;
    CHECK_EQ_INT(tq_authkey_load(p, &a, &err), 0);
    /* never overwrites */
    CHECK_EQ_INT(tq_authkey_generate(p, &err), -1);
    CHECK(strstr(err.msg, "File exists") != NULL);
    CHECK_EQ_INT(tq_authkey_load(p, &b, &err), 0);
    CHECK(keys_equal(&a, &b));
    /* two fresh keys differ */
    char p2[256];
    path_in(p2, sizeof p2, "generated2");
    unlink(p2);
    CHECK_EQ_INT(tq_authkey_generate(p2, &err), 0);
    CHECK_EQ_INT(tq_authkey_load(p2, &b, &err), 0);
    CHECK(!keys_equal(&a, &b));
    unlink(p);
    unlink(p2);
    CHECK_EQ_INT(tq_authkey_generate("/nonexistent-dir/authkey", &err), -1);
}

static void test_path(void)
{
    unsetenv("TASKQ_AUTHKEY_FILE");
    CHECK(tq_authkey_path(NULL) == NULL);
    CHECK_EQ_STR(tq_authkey_path("/a"), "/a");
    setenv("TASKQ_AUTHKEY_FILE", "/env/key", 1);
    CHECK_EQ_STR(tq_authkey_path(NULL), "/env/key");
    CHECK_EQ_STR(tq_authkey_path("/flag"), "/flag");
    unsetenv("TASKQ_AUTHKEY_FILE");
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_vectors);
    RUN(test_load_ok_and_newline);
    RUN(test_mode_refused);
    RUN(test_missing_and_odd_files);
    RUN(test_length_limits);
    RUN(test_trust);
    RUN(test_generate);
    RUN(test_path);
    rmdir(tmpdir);
    TEST_MAIN_END();
}
