#ifndef FLASHCTL_CLZMA_SHIM_H
#define FLASHCTL_CLZMA_SHIM_H
#include <lzma.h>
#endif
