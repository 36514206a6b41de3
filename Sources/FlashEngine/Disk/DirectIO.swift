/// Linux's O_DIRECT, which Glibc's Swift module does not export (it needs _GNU_SOURCE).
#if arch(arm64) || arch(arm)
let openDirect: Int32 = 0o200000
#else
let openDirect: Int32 = 0o40000
#endif
