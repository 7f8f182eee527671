/* SPDX-License-Identifier: MIT */
/*
 * Locks, semaphores, conditions, events and barriers across processes:
 * contention counts, holders and waiters that die, timeouts and misuse.
 * Children are plain forks (test_spawn) that see the handles in globals set
 * before the fork, and report through exit codes and pipes. A child that
 * must be "inside" something says so on a pipe first; nothing waits by
 * sleeping.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

enum { NPROC = 8, NITER = 100000 };

static mproc_lock *g_lock;
static mproc_sem *g_sem;
static mproc_value *g_val;
static mproc_cond *g_cond;
static mproc_event *g_ev;
static mproc_barrier *g_bar;
static mproc_shm *g_shm;
static int g_pipe[2] = {-1, -1};

static long *counter(void) {
    return mproc_shm_ptr(g_shm);
}

static void open_pipe(void) {
    ck_assert_int_eq(pipe2(g_pipe, O_CLOEXEC), 0);
}

static void close_pipe(void) {
    close(g_pipe[0]);
    close(g_pipe[1]);
    g_pipe[0] = g_pipe[1] = -1;
}

static void say(char c) {
    ssize_t n = write(g_pipe[1], &c, 1);
    (void)n;
}

/* ---- contention: 8 processes x 100 000 increments ---------------------- */

static int inc_lock(void *arg) {
    (void)arg;
    volatile long *c = counter();
    for (int i = 0; i < NITER; i++) {
        if (mproc_lock_acquire(g_lock, MPROC_FOREVER) != 0)
            return 1;
        (*c)++;
        if (mproc_lock_release(g_lock) != 0)
            return 2;
    }
    return 0;
}

static int inc_rlock_nested(void *arg) {
    (void)arg;
    volatile long *c = counter();
    for (int i = 0; i < NITER; i++) {
        if (mproc_lock_acquire(g_lock, MPROC_FOREVER) != 0 ||
            mproc_lock_acquire(g_lock, MPROC_FOREVER) != 0)
            return 1;
        (*c)++;
        if (mproc_lock_release(g_lock) != 0 || mproc_lock_release(g_lock))
            return 2;
    }
    return 0;
}

static int inc_sem(void *arg) {
    (void)arg;
    volatile long *c = counter();
    for (int i = 0; i < NITER; i++) {
        if (mproc_sem_acquire(g_sem, MPROC_FOREVER) != 0)
            return 1;
        (*c)++;
        if (mproc_sem_release(g_sem) != 0)
            return 2;
    }
    return 0;
}

static int inc_value(void *arg) {
    (void)arg;
    mproc_lock *l = mproc_value_lock(g_val);
    for (int i = 0; i < NITER; i++) {
        if (mproc_lock_acquire(l, MPROC_FOREVER) != 0)
            return 1;
        (*(volatile long *)mproc_value_ptr(g_val))++;
        if (mproc_lock_release(l) != 0)
            return 2;
    }
    return 0;
}

static void run_contention(int (*body)(void *)) {
    pid_t kids[NPROC];
    for (int i = 0; i < NPROC; i++)
        kids[i] = test_spawn(body, NULL);
    for (int i = 0; i < NPROC; i++)
        ck_assert_int_eq(test_reap(kids[i]), 0);
}

TEST(sync_contention_lock) {
    ASSERT_OK(mproc_shm_create(&g_shm, sizeof(long)));
    ASSERT_OK(mproc_lock_create(&g_lock));
    run_contention(inc_lock);
    ck_assert_int_eq(*counter(), (long)NPROC * NITER);
    mproc_lock_free(g_lock);
    mproc_shm_free(g_shm);
}

TEST(sync_contention_rlock) {
    ASSERT_OK(mproc_shm_create(&g_shm, sizeof(long)));
    ASSERT_OK(mproc_rlock_create(&g_lock));
    run_contention(inc_rlock_nested);
    ck_assert_int_eq(*counter(), (long)NPROC * NITER);
    mproc_lock_free(g_lock);
    mproc_shm_free(g_shm);
}

TEST(sync_contention_semaphore) {
    ASSERT_OK(mproc_shm_create(&g_shm, sizeof(long)));
    ASSERT_OK(mproc_sem_create(&g_sem, 1));
    run_contention(inc_sem);
    ck_assert_int_eq(*counter(), (long)NPROC * NITER);
    ck_assert_int_eq(mproc_sem_value(g_sem), 1);
    mproc_sem_free(g_sem);
    mproc_shm_free(g_shm);
}

TEST(sync_contention_value) {
    long zero = 0, got = -1;
    ASSERT_OK(mproc_value_create(&g_val, MPROC_T_LONG, 0, &zero, 0));
    run_contention(inc_value);
    ASSERT_OK(mproc_value_get(g_val, &got, sizeof got));
    ck_assert_int_eq(got, (long)NPROC * NITER);
    mproc_value_free(g_val);
}

/* ---- a holder that dies (fault matrix 13) ------------------------------- */

enum { DIE_KILL, DIE_EXIT };

static int hold_and_die(void *arg) {
    int how = *(int *)arg;
    if (mproc_lock_acquire(g_lock, MPROC_FOREVER) != 0)
        return 1;
    /* An RLock is taken twice (the next owner still starts at one level);
     * a Lock answers EDEADLK here, and stays held once. */
    (void)mproc_lock_acquire(g_lock, 0);
    say('h');
    if (how == DIE_KILL)
        raise(SIGKILL);
    _exit(0); /* exits holding it */
}

static int try_lock_once(void *arg) {
    (void)arg;
    int r = mproc_lock_acquire(g_lock, 0);
    if (r != 0)
        return 10 + (r == MPROC_EOWNERDEAD);
    return mproc_lock_release(g_lock) == 0 ? 0 : 3;
}

static void owner_dies(int recursive, int how) {
    ASSERT_OK(recursive ? mproc_rlock_create(&g_lock)
                        : mproc_lock_create(&g_lock));
    open_pipe();
    pid_t k = test_spawn(hold_and_die, &how);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'h');
    ck_assert_int_eq(test_reap(k), how == DIE_KILL ? -SIGKILL : 0);

    ASSERT_ERR(mproc_lock_acquire(g_lock, test_ms(5000)), MPROC_EOWNERDEAD);
    ck_assert_int_eq(mproc_lock_held(g_lock), 1);
    ASSERT_OK(mproc_lock_release(g_lock)); /* one level, whatever it had */
    ck_assert_int_eq(mproc_lock_held(g_lock), 0);
    /* Fully usable again, here and in another process. */
    ASSERT_OK(mproc_lock_acquire(g_lock, 0));
    ASSERT_OK(mproc_lock_release(g_lock));
    ck_assert_int_eq(test_reap(test_spawn(try_lock_once, NULL)), 0);
    close_pipe();
    mproc_lock_free(g_lock);
}

TEST(sync_lock_holder_killed) {
    owner_dies(0, DIE_KILL);
}

TEST(sync_lock_holder_exits) {
    owner_dies(0, DIE_EXIT);
}

TEST(sync_rlock_holder_killed) {
    owner_dies(1, DIE_KILL);
}

TEST(sync_rlock_holder_exits) {
    owner_dies(1, DIE_EXIT);
}

typedef struct pair {
    long a, b;
} pair;

static int value_half_update(void *arg) {
    (void)arg;
    if (mproc_lock_acquire(mproc_value_lock(g_val), MPROC_FOREVER) != 0)
        return 1;
    ((pair *)mproc_value_ptr(g_val))->a = 1; /* b is never written */
    say('h');
    raise(SIGKILL);
    return 2;
}

TEST(sync_value_holder_killed) {
    pair init = {0, 0}, got;
    ASSERT_OK(
        mproc_value_create(&g_val, MPROC_T_BYTES, sizeof(pair), &init, 0));
    open_pipe();
    pid_t k = test_spawn(value_half_update, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'h');
    ck_assert_int_eq(test_reap(k), -SIGKILL);
    /* The copy is made, and the caller learns it may be half-written. */
    ASSERT_ERR(mproc_value_get(g_val, &got, sizeof got), MPROC_EOWNERDEAD);
    ck_assert(got.a == 1 && got.b == 0);
    ASSERT_OK(mproc_value_set(g_val, &init, sizeof init));
    ASSERT_OK(mproc_value_get(g_val, &got, sizeof got));
    close_pipe();
    mproc_value_free(g_val);
}

/* 12: the program is SIGKILLed while one of its pool workers holds a Lock.
 * The workers die with it; a separate process holding the same lock (here
 * the test itself) then acquires it with MPROC_EOWNERDEAD. */

static int hold_in_worker(mproc_task *t, const void *arg, size_t len) {
    mproc_ref r;
    mproc_lock *l;
    if (len != sizeof r)
        return mproc_task_fail(t, "bad argument");
    memcpy(&r, arg, sizeof r);
    int err = mproc_lock_attach(&l, &r);
    if (err)
        return mproc_task_fail(t, "attach: %s", mproc_strerror(err));
    if (mproc_lock_acquire(l, MPROC_FOREVER) != 0)
        return mproc_task_fail(t, "acquire");
    pid_t me = getpid();
    ssize_t n = write(g_pipe[1], &me, sizeof me);
    (void)n;
    pause(); /* until the program dies */
    return mproc_task_fail(t, "woken");
}

TEST(fault_program_killed_holding_lock) {
    ASSERT_OK(mproc_lock_create(&g_lock));
    open_pipe();
    pid_t app = fork();
    ck_assert_int_ge(app, 0);
    if (app == 0) {
        mproc_pool *p;
        mproc_ref r;
        mproc_result *res;
        if (mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 1}) ||
            mproc_ref_of(g_lock, &r) ||
            mproc_pool_apply_async(p, hold_in_worker, &r, sizeof r, NULL, &res))
            _exit(1);
        (void)mproc_result_wait(res, MPROC_FOREVER);
        _exit(2); /* the task failed: the test sees EOF on the pipe */
    }
    pid_t worker = 0;
    ck_assert_int_eq(read(g_pipe[0], &worker, sizeof worker), sizeof worker);
    kill(app, SIGKILL);
    ck_assert_int_eq(test_reap(app), -SIGKILL);
    ck_assert_msg(test_wait_gone(worker, 2000), "worker outlived the program");
    ASSERT_ERR(mproc_lock_acquire(g_lock, test_ms(2000)), MPROC_EOWNERDEAD);
    ASSERT_OK(mproc_lock_release(g_lock));
    /* The fork server and the worker were re-parented to us. */
    while (waitpid(-1, NULL, 0) > 0)
        ;
    close_pipe();
    mproc_lock_free(g_lock);
}

/* ---- Semaphore: a dead holder's unit is lost (documented) --------------- */

static int sem_take_and_die(void *arg) {
    (void)arg;
    if (mproc_sem_acquire(g_sem, MPROC_FOREVER) != 0)
        return 1;
    say('h');
    raise(SIGKILL);
    return 2;
}

TEST(sync_semaphore_holder_killed) {
    ASSERT_OK(mproc_sem_create(&g_sem, 1));
    open_pipe();
    pid_t k = test_spawn(sem_take_and_die, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'h');
    ck_assert_int_eq(test_reap(k), -SIGKILL);
    /* No owner, no recovery: the unit is gone, and waits time out rather
     * than hang. A release by anyone gives it back. */
    ck_assert_int_eq(mproc_sem_value(g_sem), 0);
    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_sem_acquire(g_sem, 100), MPROC_ETIMEDOUT);
    ck_assert_uint_ge(test_now_ms() - t0, 90);
    ASSERT_OK(mproc_sem_release(g_sem));
    ASSERT_OK(mproc_sem_acquire(g_sem, 0));
    close_pipe();
    mproc_sem_free(g_sem);
}

TEST(sync_semaphore_bounded) {
    mproc_sem *s;
    ASSERT_OK(mproc_bsem_create(&s, 2));
    ASSERT_ERR(mproc_sem_release(s), MPROC_ESTATE);
    ASSERT_OK(mproc_sem_acquire(s, 0));
    ASSERT_OK(mproc_sem_acquire(s, 0));
    ASSERT_ERR(mproc_sem_acquire(s, 0), MPROC_ETIMEDOUT);
    ASSERT_OK(mproc_sem_release(s));
    ASSERT_OK(mproc_sem_release(s));
    ASSERT_ERR(mproc_sem_release(s), MPROC_ESTATE);
    ck_assert_int_eq(mproc_sem_value(s), 2);
    mproc_sem_free(s);
    /* An unbounded one may go above its start. */
    ASSERT_OK(mproc_sem_create(&s, 0));
    ASSERT_OK(mproc_sem_release(s));
    ASSERT_OK(mproc_sem_release(s));
    ck_assert_int_eq(mproc_sem_value(s), 2);
    mproc_sem_free(s);
    ASSERT_ERR(mproc_sem_create(&s, 0x80000000u), MPROC_EINVAL);
}

/* ---- Condition ----------------------------------------------------------- */

static int cond_waiter(void *arg) {
    long timeout = *(long *)arg;
    mproc_lock *l = mproc_cond_lock(g_cond);
    if (mproc_lock_acquire(l, MPROC_FOREVER) != 0)
        return 1;
    say('w');
    int r = mproc_cond_wait(g_cond, timeout);
    int held = mproc_lock_held(l);
    mproc_lock_release(l);
    return r == 0 && held ? 0 : 3;
}

/* After say('w') the waiter holds the lock until it sleeps in wait, so once
 * we get the lock it is inside the wait. */
static pid_t start_waiter(long *timeout) {
    pid_t k = test_spawn(cond_waiter, timeout);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    mproc_lock *l = mproc_cond_lock(g_cond);
    ASSERT_OK(mproc_lock_acquire(l, test_ms(5000)));
    ASSERT_OK(mproc_lock_release(l));
    return k;
}

TEST(sync_condition_waiter_killed) {
    long forever = MPROC_FOREVER;
    ASSERT_OK(mproc_cond_create(&g_cond, NULL));
    open_pipe();
    pid_t dead = start_waiter(&forever);
    kill(dead, SIGKILL);
    ck_assert_int_eq(test_reap(dead), -SIGKILL);
    /* The condition still works for the living. */
    pid_t k = start_waiter(&forever);
    mproc_lock *l = mproc_cond_lock(g_cond);
    ASSERT_OK(mproc_lock_acquire(l, MPROC_FOREVER));
    ASSERT_OK(mproc_cond_notify(g_cond, 1));
    ASSERT_OK(mproc_lock_release(l));
    ck_assert_int_eq(test_reap(k), 0);
    close_pipe();
    mproc_cond_free(g_cond); /* and it can be freed: no hang */
}

TEST(sync_condition_notify_all) {
    long forever = MPROC_FOREVER;
    mproc_lock *own;
    ASSERT_OK(mproc_lock_create(&own));
    ASSERT_OK(mproc_cond_create(&g_cond, own));
    mproc_lock_free(own); /* the condition holds its own handle */
    open_pipe();
    pid_t k[3];
    for (int i = 0; i < 3; i++)
        k[i] = start_waiter(&forever);
    mproc_lock *l = mproc_cond_lock(g_cond);
    ASSERT_OK(mproc_lock_acquire(l, MPROC_FOREVER));
    ASSERT_OK(mproc_cond_notify_all(g_cond));
    ASSERT_OK(mproc_lock_release(l));
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(test_reap(k[i]), 0);
    close_pipe();
    mproc_cond_free(g_cond);
}

static int ready_pred(void *arg) {
    (void)arg;
    return *counter() >= 3;
}

static int cond_producer(void *arg) {
    (void)arg;
    mproc_lock *l = mproc_cond_lock(g_cond);
    for (int i = 0; i < 3; i++) {
        if (mproc_lock_acquire(l, MPROC_FOREVER) != 0)
            return 1;
        (*counter())++;
        mproc_cond_notify(g_cond, 1);
        mproc_lock_release(l);
    }
    return 0;
}

TEST(sync_condition_wait_for) {
    ASSERT_OK(mproc_shm_create(&g_shm, sizeof(long)));
    ASSERT_OK(mproc_cond_create(&g_cond, NULL));
    mproc_lock *l = mproc_cond_lock(g_cond);
    /* Timeout while the predicate stays false; the lock is held after. */
    ASSERT_OK(mproc_lock_acquire(l, 0));
    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_cond_wait_for(g_cond, ready_pred, NULL, 50),
               MPROC_ETIMEDOUT);
    ck_assert_uint_ge(test_now_ms() - t0, 45);
    ck_assert_int_eq(mproc_lock_held(l), 1);
    ASSERT_ERR(mproc_cond_wait(g_cond, 20), MPROC_ETIMEDOUT);
    ck_assert_int_eq(mproc_lock_held(l), 1);
    /* An RLock held twice is released fully inside the wait (else the
     * producer could never get it) and restored after. */
    ASSERT_OK(mproc_lock_acquire(l, 0));
    pid_t k = test_spawn(cond_producer, NULL);
    ASSERT_OK(mproc_cond_wait_for(g_cond, ready_pred, NULL, test_ms(10000)));
    ck_assert_int_eq(*counter(), 3);
    ASSERT_OK(mproc_lock_release(l));
    ASSERT_OK(mproc_lock_release(l));
    ck_assert_int_eq(mproc_lock_held(l), 0);
    ck_assert_int_eq(test_reap(k), 0);
    mproc_cond_free(g_cond);
    mproc_shm_free(g_shm);
}

/* ---- Event ----------------------------------------------------------------
 */

static int event_waiter(void *arg) {
    (void)arg;
    say('w');
    return mproc_event_wait(g_ev, MPROC_FOREVER) == 0 ? 0 : 1;
}

TEST(sync_event) {
    ASSERT_OK(mproc_event_create(&g_ev));
    ck_assert_int_eq(mproc_event_is_set(g_ev), 0);
    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_event_wait(g_ev, 50), MPROC_ETIMEDOUT);
    ck_assert_uint_ge(test_now_ms() - t0, 45);
    ASSERT_ERR(mproc_event_wait(g_ev, 0), MPROC_ETIMEDOUT);
    open_pipe();
    pid_t k[2];
    for (int i = 0; i < 2; i++) {
        k[i] = test_spawn(event_waiter, NULL);
        ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    }
    ASSERT_OK(mproc_event_set(g_ev));
    ASSERT_OK(mproc_event_set(g_ev)); /* idempotent */
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(test_reap(k[i]), 0);
    ck_assert_int_eq(mproc_event_is_set(g_ev), 1);
    ASSERT_OK(mproc_event_wait(g_ev, 0));
    ASSERT_OK(mproc_event_clear(g_ev));
    ck_assert_int_eq(mproc_event_is_set(g_ev), 0);
    /* A waiter killed while waiting does not disturb the next ones. */
    pid_t dead = test_spawn(event_waiter, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    kill(dead, SIGKILL);
    ck_assert_int_eq(test_reap(dead), -SIGKILL);
    pid_t live = test_spawn(event_waiter, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    ASSERT_OK(mproc_event_set(g_ev));
    ck_assert_int_eq(test_reap(live), 0);
    close_pipe();
    mproc_event_free(g_ev);
}

/* ---- Barrier --------------------------------------------------------------
 */

static int action_count(void) {
    (*counter())++;
    return 0;
}

static int action_fail(void) {
    return 1;
}

static int barrier_rounds(void *arg) {
    int rounds = *(int *)arg;
    int seen = 0;
    for (int i = 0; i < rounds; i++) {
        int idx = mproc_barrier_wait(g_bar, test_ms(10000));
        if (idx < 0 || idx >= 4)
            return 1;
        seen |= 1 << idx;
    }
    return 16 | seen; /* which indices this party got, for the parent */
}

TEST(sync_barrier_rounds) {
    ASSERT_OK(mproc_shm_create(&g_shm, sizeof(long)));
    ASSERT_OK(mproc_barrier_create(&g_bar, 4, action_count));
    ck_assert_int_eq(mproc_barrier_parties(g_bar), 4);
    int rounds = 1;
    pid_t k[3];
    for (int i = 0; i < 3; i++)
        k[i] = test_spawn(barrier_rounds, &rounds);
    int idx = mproc_barrier_wait(g_bar, test_ms(10000));
    ck_assert_int_ge(idx, 0);
    int seen = 1 << idx;
    for (int i = 0; i < 3; i++) {
        int s = test_reap(k[i]);
        ck_assert_int_eq(s & ~0xf, 16);
        ck_assert_int_eq(seen & s & 0xf, 0); /* every index once */
        seen |= s & 0xf;
    }
    ck_assert_int_eq(seen, 0xf);
    ck_assert_int_eq(*counter(), 1); /* the action ran once */
    /* Many rounds in a row. */
    rounds = 200;
    for (int i = 0; i < 3; i++)
        k[i] = test_spawn(barrier_rounds, &rounds);
    for (int i = 0; i < rounds; i++)
        ck_assert_int_ge(mproc_barrier_wait(g_bar, test_ms(10000)), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(test_reap(k[i]) & ~0xf, 16);
    ck_assert_int_eq(*counter(), 201);
    ck_assert_int_eq(mproc_barrier_n_waiting(g_bar), 0);
    ck_assert_int_eq(mproc_barrier_broken(g_bar), 0);
    mproc_barrier_free(g_bar);
    mproc_shm_free(g_shm);
}

static int barrier_expect_broken(void *arg) {
    (void)arg;
    say('w');
    int r = mproc_barrier_wait(g_bar, test_ms(20000));
    return r == MPROC_EBROKEN ? 0 : 1;
}

static int barrier_expect_trip(void *arg) {
    (void)arg;
    say('w');
    return mproc_barrier_wait(g_bar, test_ms(20000)) >= 0 ? 0 : 1;
}

static int never_arrive(void *arg) {
    (void)arg;
    say('w');
    pause(); /* until killed */
    return 1;
}

/* A party dies before it arrives: our wait times out, which breaks the
 * barrier for the other waiter at once, long before its own timeout. */
TEST(sync_barrier_party_killed) {
    ASSERT_OK(mproc_barrier_create(&g_bar, 3, NULL));
    open_pipe();
    pid_t other = test_spawn(barrier_expect_broken, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    pid_t doomed = test_spawn(never_arrive, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    kill(doomed, SIGKILL);
    ck_assert_int_eq(test_reap(doomed), -SIGKILL);
    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_barrier_wait(g_bar, 300), MPROC_ETIMEDOUT);
    ck_assert_int_eq(test_reap(other), 0); /* it got EBROKEN */
    ck_assert_uint_lt(test_now_ms() - t0, (uint64_t)test_ms(5000));
    ck_assert_int_eq(mproc_barrier_broken(g_bar), 1);
    ASSERT_ERR(mproc_barrier_wait(g_bar, 0), MPROC_EBROKEN);
    ASSERT_OK(mproc_barrier_reset(g_bar));
    ck_assert_int_eq(mproc_barrier_broken(g_bar), 0);
    /* A party killed inside its wait had arrived (documented): the
     * barrier trips for the others as usual. */
    pid_t in_wait = test_spawn(barrier_expect_trip, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    while (mproc_barrier_n_waiting(g_bar) != 1)
        sched_yield(); /* a state to reach, not a time to pass */
    kill(in_wait, SIGKILL);
    ck_assert_int_eq(test_reap(in_wait), -SIGKILL);
    other = test_spawn(barrier_expect_trip, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    ck_assert_int_ge(mproc_barrier_wait(g_bar, test_ms(10000)), 0);
    ck_assert_int_eq(test_reap(other), 0);
    close_pipe();
    mproc_barrier_free(g_bar);
}

static int barrier_wait_then_report(void *arg) {
    (void)arg;
    say('w');
    int r = mproc_barrier_wait(g_bar, test_ms(20000));
    return r == MPROC_EBROKEN ? 0 : 1;
}

TEST(sync_barrier_abort_reset_action) {
    ASSERT_OK(mproc_barrier_create(&g_bar, 2, NULL));
    open_pipe();
    /* abort wakes a waiter with EBROKEN and stays broken until reset. */
    pid_t k = test_spawn(barrier_wait_then_report, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    ASSERT_OK(mproc_barrier_abort(g_bar));
    ck_assert_int_eq(test_reap(k), 0);
    ck_assert_int_eq(mproc_barrier_broken(g_bar), 1);
    ASSERT_ERR(mproc_barrier_wait(g_bar, 0), MPROC_EBROKEN);
    ASSERT_OK(mproc_barrier_reset(g_bar));
    /* reset while a party waits: it gets EBROKEN, the barrier works. */
    k = test_spawn(barrier_wait_then_report, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    while (mproc_barrier_n_waiting(g_bar) != 1)
        sched_yield(); /* a state to reach, not a time to pass */
    ASSERT_OK(mproc_barrier_reset(g_bar));
    ck_assert_int_eq(test_reap(k), 0);
    ck_assert_int_eq(mproc_barrier_broken(g_bar), 0);
    ck_assert_int_eq(mproc_barrier_n_waiting(g_bar), 0);
    mproc_barrier_free(g_bar);
    /* A failing action breaks it for everyone. */
    ASSERT_OK(mproc_barrier_create(&g_bar, 2, action_fail));
    k = test_spawn(barrier_wait_then_report, NULL);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'w');
    ASSERT_ERR(mproc_barrier_wait(g_bar, test_ms(10000)), MPROC_EBROKEN);
    ck_assert_int_eq(test_reap(k), 0);
    /* A party of one trips at once. */
    mproc_barrier_free(g_bar);
    ASSERT_OK(mproc_barrier_create(&g_bar, 1, NULL));
    ck_assert_int_eq(mproc_barrier_wait(g_bar, 0), 0);
    close_pipe();
    mproc_barrier_free(g_bar);
}

/* ---- timeouts -------------------------------------------------------------
 */

static int g_hold[2];

static int hold_until_told(void *arg) {
    (void)arg;
    close(g_hold[1]);
    if (mproc_lock_acquire(g_lock, MPROC_FOREVER) != 0)
        return 1;
    say('h');
    char c;
    ssize_t n = read(g_hold[0], &c, 1); /* EOF when the parent is done */
    (void)n;
    return mproc_lock_release(g_lock) == 0 ? 0 : 2;
}

TEST(sync_lock_timeout) {
    ASSERT_OK(mproc_lock_create(&g_lock));
    open_pipe();
    ck_assert_int_eq(pipe2(g_hold, O_CLOEXEC), 0);
    /* The child reports on g_pipe and waits for EOF on g_hold. */
    pid_t k = test_spawn(hold_until_told, NULL);
    close(g_hold[0]);
    ck_assert_int_eq(test_read_byte(g_pipe[0]), 'h');
    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_lock_acquire(g_lock, 100), MPROC_ETIMEDOUT);
    uint64_t took = test_now_ms() - t0;
    ck_assert_uint_ge(took, 95);
    ck_assert_uint_lt(took, (uint64_t)test_ms(2000));
    ASSERT_ERR(mproc_lock_acquire(g_lock, 0), MPROC_ETIMEDOUT);
    ck_assert_int_eq(mproc_lock_held(g_lock), 0);
    close(g_hold[1]);
    ck_assert_int_eq(test_reap(k), 0);
    ASSERT_OK(mproc_lock_acquire(g_lock, 0));
    ASSERT_OK(mproc_lock_release(g_lock));
    close_pipe();
    mproc_lock_free(g_lock);
}

/* ---- misuse ----------------------------------------------------------------
 */

static void *release_from_thread(void *arg) {
    return (void *)(intptr_t)mproc_lock_release(arg);
}

static int release_not_mine(void *arg) {
    (void)arg;
    return mproc_lock_release(g_lock) == MPROC_EPERM ? 0 : 1;
}

TEST(sync_misuse) {
    mproc_lock *l, *r;
    ASSERT_OK(mproc_lock_create(&l));
    ASSERT_OK(mproc_rlock_create(&r));
    /* Release of an unheld lock. */
    ASSERT_ERR(mproc_lock_release(l), MPROC_EPERM);
    ASSERT_ERR(mproc_lock_release(r), MPROC_EPERM);
    /* A Lock taken twice by its holder would deadlock; an RLock counts. */
    ASSERT_OK(mproc_lock_acquire(l, MPROC_FOREVER));
    ASSERT_ERR(mproc_lock_acquire(l, MPROC_FOREVER), MPROC_EDEADLK);
    ASSERT_OK(mproc_lock_release(l));
    ASSERT_OK(mproc_lock_acquire(r, 0));
    ASSERT_OK(mproc_lock_acquire(r, 0));
    ASSERT_OK(mproc_lock_release(r));
    ck_assert_int_eq(mproc_lock_held(r), 1);
    /* Release by a non-owner: another thread, another process. */
    pthread_t th;
    void *res;
    ck_assert_int_eq(pthread_create(&th, NULL, release_from_thread, r), 0);
    ck_assert_int_eq(pthread_join(th, &res), 0);
    ck_assert_int_eq((int)(intptr_t)res, MPROC_EPERM);
    g_lock = r;
    ck_assert_int_eq(test_reap(test_spawn(release_not_mine, NULL)), 0);
    ASSERT_OK(mproc_lock_release(r));
    ASSERT_ERR(mproc_lock_release(r), MPROC_EPERM);
    /* Condition calls without the lock. */
    mproc_cond *c;
    ASSERT_OK(mproc_cond_create(&c, r));
    ASSERT_ERR(mproc_cond_wait(c, 0), MPROC_EPERM);
    ASSERT_ERR(mproc_cond_notify(c, 1), MPROC_EPERM);
    ASSERT_ERR(mproc_cond_notify_all(c), MPROC_EPERM);
    ASSERT_ERR(mproc_cond_wait_for(c, ready_pred, NULL, 0), MPROC_EPERM);
    ASSERT_ERR(mproc_cond_wait_for(c, NULL, NULL, 0), MPROC_EINVAL);
    /* A value's lock is not a standalone lock. */
    mproc_value *v;
    mproc_cond *c2 = (mproc_cond *)1;
    ASSERT_OK(mproc_value_create(&v, MPROC_T_INT, 0, NULL, 0));
    ASSERT_ERR(mproc_cond_create(&c2, mproc_value_lock(v)), MPROC_EINVAL);
    ck_assert_ptr_null(c2);
    mproc_ref ref;
    ASSERT_ERR(mproc_ref_of(mproc_value_lock(v), &ref), MPROC_EINVAL);
    mproc_value_free(v);
    /* Barrier of 0 parties. */
    mproc_barrier *b = (mproc_barrier *)1;
    ASSERT_ERR(mproc_barrier_create(&b, 0, NULL), MPROC_EINVAL);
    ck_assert_ptr_null(b);
    /* NULL everywhere. */
    ASSERT_ERR(mproc_lock_create(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_lock_acquire(NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_lock_release(NULL), MPROC_EINVAL);
    ck_assert_int_eq(mproc_lock_held(NULL), 0);
    ASSERT_ERR(mproc_sem_create(NULL, 1), MPROC_EINVAL);
    ASSERT_ERR(mproc_sem_acquire(NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_sem_release(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_sem_value(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_cond_create(NULL, NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_cond_wait(NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_cond_notify(NULL, 1), MPROC_EINVAL);
    ASSERT_ERR(mproc_cond_notify(c, -1), MPROC_EINVAL);
    ck_assert_ptr_null(mproc_cond_lock(NULL));
    ASSERT_ERR(mproc_event_create(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_event_set(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_event_clear(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_event_is_set(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_event_wait(NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_barrier_create(NULL, 2, NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_barrier_wait(NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_barrier_reset(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_barrier_abort(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_barrier_broken(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_barrier_n_waiting(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_barrier_parties(NULL), MPROC_EINVAL);
    /* A handle of the wrong type. */
    ASSERT_ERR(mproc_sem_acquire((mproc_sem *)l, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_event_set((mproc_event *)l), MPROC_EINVAL);
    mproc_lock_free(NULL);
    mproc_sem_free(NULL);
    mproc_cond_free(NULL);
    mproc_event_free(NULL);
    mproc_barrier_free(NULL);
    mproc_cond_free(c);
    mproc_lock_free(l);
    mproc_lock_free(r);
}

/* ---- every primitive through a reference, inside pool tasks ---------------
 */

typedef struct refs {
    mproc_ref lock, sem, cond, ev, bar;
} refs;

static int use_refs(mproc_task *t, const void *arg, size_t len) {
    refs rs;
    if (len != sizeof rs)
        return mproc_task_fail(t, "bad argument");
    memcpy(&rs, arg, sizeof rs);
    mproc_lock *l;
    mproc_sem *s;
    mproc_cond *c;
    mproc_event *e;
    mproc_barrier *b;
    int err;
    if ((err = mproc_lock_attach(&l, &rs.lock)) ||
        (err = mproc_sem_attach(&s, &rs.sem)) ||
        (err = mproc_cond_attach(&c, &rs.cond)) ||
        (err = mproc_event_attach(&e, &rs.ev)) ||
        (err = mproc_barrier_attach(&b, &rs.bar)))
        return mproc_task_fail(t, "attach: %s", mproc_strerror(err));
    /* Meet the parent at the barrier, then signal through each object. */
    int idx = mproc_barrier_wait(b, 10000);
    int ok = idx >= 0 && mproc_lock_acquire(l, 10000) == 0;
    ok = ok && mproc_lock_release(l) == 0;
    ok = ok && mproc_sem_release(s) == 0;
    mproc_lock *cl = mproc_cond_lock(c);
    ok = ok && mproc_lock_acquire(cl, 10000) == 0;
    ok = ok && mproc_cond_notify_all(c) == 0;
    ok = ok && mproc_lock_release(cl) == 0;
    ok = ok && mproc_event_set(e) == 0;
    mproc_lock_free(l);
    mproc_sem_free(s);
    mproc_cond_free(c);
    mproc_event_free(e);
    mproc_barrier_free(b);
    return ok ? 0 : mproc_task_fail(t, "an operation failed");
}

TEST(sync_refs_in_pool_tasks) {
    mproc_lock *l;
    mproc_sem *s;
    mproc_cond *c;
    mproc_event *e;
    mproc_barrier *b;
    ASSERT_OK(mproc_lock_create(&l));
    ASSERT_OK(mproc_sem_create(&s, 0));
    ASSERT_OK(mproc_cond_create(&c, NULL));
    ASSERT_OK(mproc_event_create(&e));
    ASSERT_OK(mproc_barrier_create(&b, 3, NULL));
    refs rs;
    ASSERT_OK(mproc_ref_of(l, &rs.lock));
    ASSERT_OK(mproc_ref_of(s, &rs.sem));
    ASSERT_OK(mproc_ref_of(c, &rs.cond));
    ASSERT_OK(mproc_ref_of(e, &rs.ev));
    ASSERT_OK(mproc_ref_of(b, &rs.bar));
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 2}));
    mproc_buf items[2] = {{&rs, sizeof rs}, {&rs, sizeof rs}};
    mproc_result *res;
    ASSERT_OK(mproc_pool_map_async(p, use_refs, items, 2,
                                   &(mproc_call_opts){.chunksize = 1}, &res));
    ck_assert_int_ge(mproc_barrier_wait(b, test_ms(10000)), 0);
    ASSERT_OK(mproc_sem_acquire(s, test_ms(10000)));
    ASSERT_OK(mproc_sem_acquire(s, test_ms(10000)));
    ASSERT_OK(mproc_event_wait(e, test_ms(10000)));
    ASSERT_OK(mproc_result_get(res, test_ms(10000)));
    mproc_result_free(res);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
    mproc_lock_free(l);
    mproc_sem_free(s);
    mproc_cond_free(c);
    mproc_event_free(e);
    mproc_barrier_free(b);
}
