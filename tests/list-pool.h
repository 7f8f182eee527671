/* Tests of test_pool.c: TEST_ENTRY(name, timeout_seconds). */
TEST_ENTRY(pool_apply, 20)
TEST_ENTRY(pool_map_ordered, 20)
TEST_ENTRY(pool_idle_uses_no_cpu, 20)
