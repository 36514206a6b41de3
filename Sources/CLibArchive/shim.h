#ifndef FLASHCTL_CLIBARCHIVE_SHIM_H
#define FLASHCTL_CLIBARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>
#endif
