/* Tests of test_basic.c: TEST_ENTRY(name, timeout_seconds). */
TEST_ENTRY(error_strings, 10)
TEST_ENTRY(version_agrees, 10)
