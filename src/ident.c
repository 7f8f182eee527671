/* SPDX-License-Identifier: MIT */
/*
 * Process identity: the name of the current process and of its parent, as
 * Python's current_process() and parent_process() give them. The main
 * program is "MainProcess"; process.c and worker.c rename their children
 * right after fork.
 */
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define NAME_CAP 64

static char current_name[NAME_CAP] = "MainProcess";
static char parent_name[NAME_CAP];
static pid_t parent_pid_v;
static bool is_child;
static atomic_uint process_counter;

const char *mproc_current_name(void) {
    return current_name;
}

pid_t mproc_current_pid(void) {
    return getpid();
}

pid_t mproc_parent_pid(void) {
    return is_child ? parent_pid_v : getppid();
}

const char *mproc_parent_name(void) {
    return is_child ? parent_name : NULL;
}

void mproc__ident_set_child(const char *name, pid_t ppid, const char *pname) {
    /* Runs in a child just after fork: plain copies, no allocation. */
    size_t n = strnlen(name, NAME_CAP - 1);
    memcpy(current_name, name, n);
    current_name[n] = '\0';
    n = pname ? strnlen(pname, NAME_CAP - 1) : 0;
    if (pname)
        memcpy(parent_name, pname, n);
    parent_name[n] = '\0';
    parent_pid_v = ppid;
    is_child = true;
}

unsigned mproc__next_process_number(void) {
    return atomic_fetch_add(&process_counter, 1) + 1;
}
