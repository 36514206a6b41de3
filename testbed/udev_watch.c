/*
 * udev_watch: what a udev-triggered server sees of USB devices, as JSON lines on stdout.
 *
 *   udev_watch [--list] [PROPERTY...]        (default PROPERTY: FLASHCTL_PROFILE)
 *
 * Build: gcc -Wall -O2 -o udev_watch udev_watch.c $(pkg-config --cflags --libs libudev)
 *
 * It opens a libudev monitor on the "udev" netlink group filtered on subsystem "usb", devtype
 * "usb_device" (as a udev-triggered auto-flash server would) and enables it, then enumerates
 * the usb_device devices already there, printing one line each:
 *
 *   {"event":"present","action":null,"sysname":"1-1",...}
 *
 * then {"event":"ready"}, then one line per monitor event until killed (SIGTERM/SIGINT end it
 * cleanly, with {"event":"end"}). With --list there is no monitor: it exits after "ready".
 *
 *   {"event":"monitor","action":"add","sysname":"1-3","syspath":"/sys/devices/...",
 *    "subsystem":"usb","devtype":"usb_device","busnum":"001","devnum":"004",
 *    "devnode":"/dev/bus/usb/001/004","serial":"EMU0003","id_serial":"...",
 *    "serial_attr":"EMU0003","seqnum":"12","initialized":true,
 *    "props":{"FLASHCTL_PROFILE":"pixel-factory"}}
 *
 * serial is the ID_SERIAL_SHORT property; serial_attr is the sysfs attribute "serial" read at
 * the time the line is printed (null once the device is gone, which a "remove" may or may not
 * have reached by then). initialized is udev_device_get_is_initialized(). A property or
 * attribute the device does not have is null. Every line is flushed at once.
 * Under fastboot_usb_testbed.py it runs against the test bed's emulated devices and uevents.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libudev.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void json_string(const char *s)
{
    if (s == NULL) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", stdout);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

static void field(const char *name, const char *value, int first)
{
    if (!first)
        putchar(',');
    json_string(name);
    putchar(':');
    json_string(value);
}

static void print_device(const char *event, struct udev_device *dev, int nprops, char **props)
{
    fputs("{", stdout);
    field("event", event, 1);
    field("action", udev_device_get_action(dev), 0);
    field("sysname", udev_device_get_sysname(dev), 0);
    field("syspath", udev_device_get_syspath(dev), 0);
    field("subsystem", udev_device_get_subsystem(dev), 0);
    field("devtype", udev_device_get_devtype(dev), 0);
    field("busnum", udev_device_get_property_value(dev, "BUSNUM"), 0);
    field("devnum", udev_device_get_property_value(dev, "DEVNUM"), 0);
    field("devnode", udev_device_get_devnode(dev), 0);
    field("serial", udev_device_get_property_value(dev, "ID_SERIAL_SHORT"), 0);
    field("id_serial", udev_device_get_property_value(dev, "ID_SERIAL"), 0);
    field("serial_attr", udev_device_get_sysattr_value(dev, "serial"), 0);
    field("seqnum", udev_device_get_property_value(dev, "SEQNUM"), 0);
    printf(",\"initialized\":%s", udev_device_get_is_initialized(dev) > 0 ? "true" : "false");
    fputs(",\"props\":{", stdout);
    for (int i = 0; i < nprops; i++)
        field(props[i], udev_device_get_property_value(dev, props[i]), i == 0);
    fputs("}}\n", stdout);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static char *default_props[] = { "FLASHCTL_PROFILE" };
    int list_only = argc > 1 && strcmp(argv[1], "--list") == 0;
    int first = list_only ? 2 : 1;
    char **props = argc > first ? argv + first : default_props;
    int nprops = argc > first ? argc - first : 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct udev *udev = udev_new();
    if (udev == NULL) {
        fprintf(stderr, "udev_watch: udev_new failed\n");
        return 1;
    }
    /* The monitor first, so that nothing added while enumerating is missed. */
    struct udev_monitor *mon = NULL;
    if (!list_only) {
        mon = udev_monitor_new_from_netlink(udev, "udev");
        if (mon == NULL) {
            fprintf(stderr, "udev_watch: udev_monitor_new_from_netlink failed\n");
            return 1;
        }
        if (udev_monitor_filter_add_match_subsystem_devtype(mon, "usb", "usb_device") < 0 ||
            udev_monitor_enable_receiving(mon) < 0) {
            fprintf(stderr, "udev_watch: cannot set up the monitor\n");
            return 1;
        }
    }

    struct udev_enumerate *en = udev_enumerate_new(udev);
    udev_enumerate_add_match_subsystem(en, "usb");
    udev_enumerate_add_match_property(en, "DEVTYPE", "usb_device");
    udev_enumerate_scan_devices(en);
    struct udev_list_entry *entry;
    udev_list_entry_foreach(entry, udev_enumerate_get_list_entry(en)) {
        struct udev_device *dev = udev_device_new_from_syspath(udev, udev_list_entry_get_name(entry));
        if (dev == NULL)
            continue;
        print_device("present", dev, nprops, props);
        udev_device_unref(dev);
    }
    udev_enumerate_unref(en);
    fputs("{\"event\":\"ready\"}\n", stdout);
    fflush(stdout);
    if (list_only) {
        udev_unref(udev);
        return 0;
    }

    struct pollfd pfd = { .fd = udev_monitor_get_fd(mon), .events = POLLIN };
    while (!stop) {
        int r = poll(&pfd, 1, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            perror("udev_watch: poll");
            return 1;
        }
        struct udev_device *dev;
        while ((dev = udev_monitor_receive_device(mon)) != NULL) {
            print_device("monitor", dev, nprops, props);
            udev_device_unref(dev);
        }
    }
    fputs("{\"event\":\"end\"}\n", stdout);
    fflush(stdout);
    udev_monitor_unref(mon);
    udev_unref(udev);
    return 0;
}
