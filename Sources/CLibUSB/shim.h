#ifndef FLASHCTL_CLIBUSB_SHIM_H
#define FLASHCTL_CLIBUSB_SHIM_H
#include <libusb.h>
#endif
