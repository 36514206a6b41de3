#ifndef FLASHCTL_CXXHASH_SHIM_H
#define FLASHCTL_CXXHASH_SHIM_H
#include <xxhash.h>
#endif
