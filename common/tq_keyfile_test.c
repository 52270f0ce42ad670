/* tq_keyfile_test.c - key files: generate (modes, no overwrite), load
 * (a pair that belongs together, checks of mode and content), the
 * public half, and a peer's keys from its sources. */
#include "tq_keyfile.h"

#include "tq_test.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static char dir[] = "/tmp/tq-keyfile-test-XXXXXX";

static void write_file(const char *path, const char *text, mode_t mode)
{
    unlink(path);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static int err_has(int rc, const tq_err_t *e, const char *want)
{
    const char *err = e->msg;
    if (rc == 0 || !strstr(err, want)) {
        fprintf(stderr, "rc %d, error '%s' lacks '%s'\n", rc, err, want);
        return 0;
    }
    return 1;
}

static void test_generate_and_load(void)
{
    char base[256], kpath[300], ppath[300], pub[41];
    tq_err_t e;
    snprintf(base, sizeof base, "%s/alice", dir);
    snprintf(kpath, sizeof kpath, "%s.key", base);
    snprintf(ppath, sizeof ppath, "%s.pub", base);
    CHECK_EQ_INT(tq_keyfile_generate(base, pub, &e), 0);
    CHECK_EQ_INT(strlen(pub), 40);
    struct stat st;
    CHECK(stat(kpath, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(stat(ppath, &st) == 0 && (st.st_mode & 0777) == 0644);
    CHECK(err_has(tq_keyfile_generate(base, pub, &e), &e, "already exists"));
    uint8_t p1[32], s1[32], p2[32], zp[32];
    CHECK_EQ_INT(tq_keyfile_load_pair(kpath, p1, s1, &e), 0);
    CHECK_EQ_INT(tq_keyfile_load_public(ppath, p2, &e), 0);
    CHECK(memcmp(p1, p2, 32) == 0);
    CHECK_EQ_INT(tq_z85_key_decode(pub, 40, zp), 0);
    CHECK(memcmp(p1, zp, 32) == 0);
    /* the .key is not a public file, the .pub not a pair */
    CHECK(err_has(tq_keyfile_load_public(kpath, p2, &e), &e, "holds a secret key"));
    CHECK(err_has(tq_keyfile_load_pair(ppath, p1, s1, &e), &e,
                  "readable or writable by group or others"));
    chmod(ppath, 0600);
    CHECK(err_has(tq_keyfile_load_pair(ppath, p1, s1, &e), &e, "no secret-key line"));
    chmod(ppath, 0644);
    /* mode */
    chmod(kpath, 0640);
    CHECK(err_has(tq_keyfile_load_pair(kpath, p1, s1, &e), &e,
                  "readable or writable by group or others"));
    chmod(kpath, 0600);
    /* a peer's keys: the pair from the .key, the master's from a .pub */
    tq_curve_keys_t k;
    memset(&k, 0, sizeof k);
    CHECK_EQ_INT(tq_keys_load_peer(NULL, kpath, ppath, &k, &e), 0);
    CHECK(memcmp(k.client_public, p1, 32) == 0 && memcmp(k.server_public, p1, 32) == 0);
    CHECK_EQ_STR(k.client_public_z85, pub);
    CHECK(err_has(tq_keys_load_peer(NULL, kpath, NULL, &k, &e), &e,
                  "needs the master's public key too (--master-key FILE)"));
    CHECK(err_has(tq_keys_load_peer(NULL, NULL, ppath, &k, &e), &e,
                  "--master-key needs this program's key pair too (--key FILE)"));
    CHECK(err_has(tq_keys_load_peer(NULL, NULL, NULL, &k, &e), &e, "no authkey file given"));
    unlink(kpath);
    unlink(ppath);
}

static void test_bad_files(void)
{
    char path[300];
    tq_err_t e;
    uint8_t p[32], s[32];
    snprintf(path, sizeof path, "%s/bad.key", dir);
    write_file(path, "public-key = short\n", 0600);
    CHECK(err_has(tq_keyfile_load_pair(path, p, s, &e), &e,
                  ":1: public-key is not 40 Z85 characters"));
    write_file(path, "# c\ncolour = red\n", 0600);
    CHECK(err_has(tq_keyfile_load_pair(path, p, s, &e), &e, ":2: unknown setting"));
    write_file(path, "just words\n", 0600);
    CHECK(err_has(tq_keyfile_load_pair(path, p, s, &e), &e, ":1: expected"));
    write_file(path, "# nothing\n", 0600);
    CHECK(err_has(tq_keyfile_load_pair(path, p, s, &e), &e, "no public-key line"));
    /* two keys that do not belong together */
    char a_pub[41], a_sec[41], b_pub[41], b_sec[41], text[256];
    zmq_curve_keypair(a_pub, a_sec);
    zmq_curve_keypair(b_pub, b_sec);
    snprintf(text, sizeof text, "public-key = %s\nsecret-key = %s\n", a_pub, b_sec);
    write_file(path, text, 0600);
    CHECK(err_has(tq_keyfile_load_pair(path, p, s, &e), &e, "does not belong"));
    snprintf(text, sizeof text, "public-key = %s\npublic-key = %s\n", a_pub, a_pub);
    write_file(path, text, 0600);
    CHECK(err_has(tq_keyfile_load_pair(path, p, s, &e), &e, "given twice"));
    /* too long */
    char *big = malloc(TQ_KEYFILE_MAX + 10);
    memset(big, '#', TQ_KEYFILE_MAX + 9);
    big[TQ_KEYFILE_MAX + 9] = '\0';
    write_file(path, big, 0600);
    free(big);
    CHECK(err_has(tq_keyfile_load_pair(path, p, s, &e), &e, "too long"));
    /* a symbolic link */
    char link[300];
    snprintf(link, sizeof link, "%s/link.key", dir);
    CHECK_EQ_INT(symlink(path, link), 0);
    CHECK(err_has(tq_keyfile_load_pair(link, p, s, &e), &e, "symbolic link"));
    unlink(link);
    unlink(path);
}

int main(void)
{
    if (!mkdtemp(dir) || sodium_init() < 0)
        return 1;
    RUN(test_generate_and_load);
    RUN(test_bad_files);
    rmdir(dir);
    TEST_MAIN_END();
}
