/* SPDX-License-Identifier: MIT */
/*
 * Test runner: one Check TCase per entry of the tests/list-*.h files, each in
 * its own process with a timeout and the leak-check fixture. mproc_tests run
 * every test mproc_tests NAME       run one test (what each ctest test does)
 *   mproc_tests --list     print the test names
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define TEST_ENTRY(name, secs) const TTest *test_get_##name(void);
#include "test-list.h"
#undef TEST_ENTRY

static const struct {
    const char *name;
    const TTest *(*get)(void);
    int secs;
} tests[] = {
#define TEST_ENTRY(name, secs) {#name, test_get_##name, secs},
#include "test-list.h"
#undef TEST_ENTRY
};

int main(int argc, char **argv) {
    size_t ntests = sizeof tests / sizeof tests[0];
    const char *only = argc > 1 ? argv[1] : NULL;
    if (only && strcmp(only, "--list") == 0) {
        for (size_t i = 0; i < ntests; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    /* Keep stdout unbuffered-ish so output of forked test bodies is not
     * duplicated or lost. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    Suite *s = suite_create("mproc");
    int found = 0;
    for (size_t i = 0; i < ntests; i++) {
        if (only && strcmp(only, tests[i].name) != 0)
            continue;
        found = 1;
        TCase *tc = tcase_create(tests[i].name);
        tcase_add_checked_fixture(tc, test_leak_setup, test_leak_teardown);
        tcase_set_timeout(tc, (double)test_ms(tests[i].secs));
        tcase_add_test(tc, tests[i].get());
        suite_add_tcase(s, tc);
    }
    if (!found) {
        fprintf(stderr, "no test named %s (try --list)\n", only);
        return 2;
    }
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
