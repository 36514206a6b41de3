#ifndef FLASHCTL_CZLIB_SHIM_H
#define FLASHCTL_CZLIB_SHIM_H
#include <zlib.h>
#endif
