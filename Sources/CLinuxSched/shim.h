#ifndef FLASHCTL_CLINUXSCHED_SHIM_H
#define FLASHCTL_CLINUXSCHED_SHIM_H
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's struct sched_attr (linux/sched/types.h, first version: 56 bytes). glibc before
   2.41 has neither the struct nor wrappers, and Swift cannot call the variadic syscall(). */
struct flashctl_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};

/* Asks for a time slice of `nanoseconds` for the calling thread, keeping its policy and
   niceness: 0 on success, else an errno value. Only normal and batch threads are changed. */
static inline int flashctl_set_time_slice(uint64_t nanoseconds) {
    struct flashctl_sched_attr attr;
    memset(&attr, 0, sizeof attr);
    if (syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0) return errno;
    if (attr.sched_policy != 0 /* SCHED_OTHER */ && attr.sched_policy != 3 /* SCHED_BATCH */) return EPERM;
    attr.size = sizeof attr;
    attr.sched_flags = 0;
    attr.sched_runtime = nanoseconds;
    return syscall(SYS_sched_setattr, 0, &attr, 0) == 0 ? 0 : errno;
}

/* The calling thread's time slice as the kernel reports it, or -1. Linux 6.12 and later report
   the default slice (not 0) for a thread that asked for none; older kernels report 0. */
static inline int64_t flashctl_time_slice(void) {
    struct flashctl_sched_attr attr;
    memset(&attr, 0, sizeof attr);
    if (syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0) return -1;
    return (int64_t)attr.sched_runtime;
}
#endif
