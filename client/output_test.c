/* output_test.c - the taskq command's output formats and exit statuses. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "output.h"
#include "taskq.h"
#include "tq_exit.h"
#include "tq_test.h"

/* Run fn into two memory streams; caller frees *out and *err. */
typedef struct {
    char *out, *err;
    size_t out_len, err_len;
    FILE *fo, *fe;
} cap_t;

static void cap_open(cap_t *c)
{
    memset(c, 0, sizeof *c);
    c->fo = open_memstream(&c->out, &c->out_len);
    c->fe = open_memstream(&c->err, &c->err_len);
}

static void cap_close(cap_t *c)
{
    fclose(c->fo);
    fclose(c->fe);
}

static void cap_free(cap_t *c)
{
    free(c->out);
    free(c->err);
}

static void test_text_newlines(void)
{
    cap_t c;
    cap_open(&c);
    tq_print_text(c.fo, c.fe, 1, TASKQ_DONE, "1 * 1 = 1", 9);
    tq_print_text(c.fo, c.fe, 2, TASKQ_DONE, "ends\n", 5); /* printed as is */
    tq_print_text(c.fo, c.fe, 3, TASKQ_DONE, "", 0);       /* empty -> empty line */
    tq_print_text(c.fo, c.fe, 4, TASKQ_DONE, "two\n\n", 5);
    cap_close(&c);
    CHECK_EQ_STR(c.out, "1 * 1 = 1\nends\n\ntwo\n\n");
    CHECK_EQ_STR(c.err, "");
    cap_free(&c);
}

static void test_text_failures(void)
{
    cap_t c;
    cap_open(&c);
    tq_print_text(c.fo, c.fe, 7, TASKQ_FAILED, "exit 3: bad input\n", 18);
    tq_print_text(c.fo, c.fe, 8, TASKQ_DEAD, "worker lost", 11);
    tq_print_text(c.fo, c.fe, 9, TASKQ_CANCELLED, "", 0);
    tq_print_text(c.fo, c.fe, 10, TASKQ_UNKNOWN, "", 0);
    tq_print_text(c.fo, c.fe, 11, TASKQ_FAILED, "a\x1b[2Jb", 6); /* no terminal escapes */
    cap_close(&c);
    CHECK_EQ_STR(c.out, "");
    CHECK_EQ_STR(c.err, "taskq: task 7 failed: exit 3: bad input\n"
                        "taskq: task 8 failed: worker lost\n"
                        "taskq: task 9 cancelled\n"
                        "taskq: task 10 unknown\n"
                        "taskq: task 11 failed: a?[2Jb\n");
    cap_free(&c);
}

static void test_json_lines(void)
{
    cap_t c;
    cap_open(&c);
    tq_print_json(c.fo, 1, TASKQ_DONE, 1, "2 * 2 = 4", 9);
    tq_print_json(c.fo, 2, TASKQ_FAILED, 3, "no \"such\" fn\n", 13);
    tq_print_json(c.fo, 3, TASKQ_CANCELLED, 0, "", 0);
    tq_print_json(c.fo, 4, TASKQ_UNKNOWN, 0, "", 0);
    tq_print_json(c.fo, 5, TASKQ_DEAD, 4, "lost", 4);
    tq_print_json_queued(c.fo, 18446744073709551615ull);     /* exact, not via a double */
    tq_print_json(c.fo, 6, TASKQ_DONE, 1, "caf\xc3\xa9", 5); /* valid UTF-8 stays text */
    cap_close(&c);
    CHECK_EQ_STR(c.out,
                 "{\"id\":1,\"status\":\"done\",\"result\":\"2 * 2 = 4\",\"attempts\":1}\n"
                 "{\"id\":2,\"status\":\"failed\",\"error\":\"no \\\"such\\\" "
                 "fn\\n\",\"attempts\":3}\n"
                 "{\"id\":3,\"status\":\"cancelled\",\"attempts\":0}\n"
                 "{\"id\":4,\"status\":\"unknown\",\"attempts\":0}\n"
                 "{\"id\":5,\"status\":\"dead\",\"error\":\"lost\",\"attempts\":4}\n"
                 "{\"id\":18446744073709551615,\"status\":\"queued\"}\n"
                 "{\"id\":6,\"status\":\"done\",\"result\":\"caf\xc3\xa9\",\"attempts\":1}\n");
    cap_free(&c);
}

static void test_json_base64(void)
{
    cap_t c;
    cap_open(&c);
    tq_print_json(c.fo, 1, TASKQ_DONE, 1, "\xff\xfe\x00\x01", 4); /* not UTF-8 */
    tq_print_json(c.fo, 2, TASKQ_DONE, 1, "a\0b", 3);             /* NUL: C strings lose it */
    tq_print_json(c.fo, 3, TASKQ_FAILED, 1, "\xc3", 1);           /* truncated sequence */
    cap_close(&c);
    CHECK_EQ_STR(c.out,
                 "{\"id\":1,\"status\":\"done\",\"result_base64\":\"//4AAQ==\",\"attempts\":1}\n"
                 "{\"id\":2,\"status\":\"done\",\"result_base64\":\"YQBi\",\"attempts\":1}\n"
                 "{\"id\":3,\"status\":\"failed\",\"error_base64\":\"ww==\",\"attempts\":1}\n");
    cap_free(&c);
}

static void test_error_line(void)
{
    char buf[8];
    tq_output_error_line("abc\n\n", 5, buf, sizeof buf);
    CHECK_EQ_STR(buf, "abc");
    tq_output_error_line("a\tb\rc", 5, buf, sizeof buf);
    CHECK_EQ_STR(buf, "a\tb?c");
    tq_output_error_line("0123456789", 10, buf, sizeof buf);
    CHECK_EQ_STR(buf, "0123...");
    tq_output_error_line("", 0, buf, sizeof buf);
    CHECK_EQ_STR(buf, "");
}

static void test_tally(void)
{
    tq_tally_t t = {0};
    CHECK_EQ_INT(tq_tally_exit(&t), TQ_EXIT_OK);
    t.timed_out = 1;
    CHECK_EQ_INT(tq_tally_exit(&t), TQ_EXIT_TIMEOUT);
    tq_tally_add(&t, TASKQ_CANCELLED);
    CHECK_EQ_INT(tq_tally_exit(&t), TQ_EXIT_CANCELLED);
    tq_tally_add(&t, TASKQ_UNKNOWN);
    CHECK_EQ_INT(tq_tally_exit(&t), TQ_EXIT_NOT_FOUND);
    tq_tally_add(&t, TASKQ_DEAD);
    CHECK_EQ_INT(tq_tally_exit(&t), TQ_EXIT_TASK_FAILED);
    tq_tally_t u = {0};
    tq_tally_add(&u, TASKQ_DONE);
    tq_tally_add(&u, TASKQ_FAILED);
    CHECK_EQ_INT(tq_tally_exit(&u), TQ_EXIT_TASK_FAILED);
    CHECK_EQ_INT(TASKQ_ERR_CONNECT, TQ_EXIT_CONNECT);
}

int main(void)
{
    RUN(test_text_newlines);
    RUN(test_text_failures);
    RUN(test_json_lines);
    RUN(test_json_base64);
    RUN(test_error_line);
    RUN(test_tally);
    TEST_MAIN_END();
}
