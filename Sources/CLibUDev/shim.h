#ifndef FLASHCTL_CLIBUDEV_SHIM_H
#define FLASHCTL_CLIBUDEV_SHIM_H
#include <libudev.h>
#endif
