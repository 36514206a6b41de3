#!/usr/bin/python3
"""Emulated USB fastboot devices over the real libusb, bridged to fastboot-over-TCP devices.

    fastboot_usb_testbed.py [--device SPEC]... [--control PATH] [--no-fifo] [--debug] -- COMMAND [ARGS...]

    SPEC: tcp=HOST:PORT[,serial=EMU000N][,port=1-N][,vid=18d1][,pid=4ee0][,unplug_after=BYTES]
          [,prop.NAME=VALUE]...
    --control PATH: a FIFO taking "add SPEC", "remove SERIAL|PORT", "replug SERIAL|PORT [SPEC]"
          lines while COMMAND runs; one reply line each ("ok ..." / "error ...") in PATH.ack

A umockdev test bed gets one USB device per --device (fastboot interface: class ff, subclass 42,
protocol 03, bulk endpoints 0x81 IN and 0x01 OUT). COMMAND runs under umockdev's preload library,
so the unmodified libusb (flashctl, lsusb) and AOSP `fastboot` enumerate and open these devices
and issue usbdevfs ioctls, which this script serves:

  * every bulk OUT transfer (SUBMITURB to 0x01 or synchronous USBDEVFS_BULK) becomes one frame
    (8-byte big-endian length + payload) on a TCP connection to the device (handshake "FB01");
  * every frame the TCP device sends completes one bulk IN transfer (a frame longer than the
    IN buffer is split: the rest completes the next IN transfer); frames wait for an IN transfer.

The TCP connection is the device's state, as on real hardware: opened at the first CLAIMINTERFACE
(or transfer), it outlives client sessions (RELEASEINTERFACE, closing the device, the client's
exit), so the next client continues the same fastboot session, even one left in its download
phase. USBDEVFS_RESET drops it (a reset device starts over); the next transfer connects again,
to a fresh session. A connection the TCP device closed is replaced at the next claim.
unplug_after=BYTES (suffixes K/M/G allowed) unplugs the device once that
many bulk OUT bytes have arrived: later ioctls fail with ENODEV, pending URBs reap with -ENODEV
(libusb: LIBUSB_TRANSFER_NO_DEVICE), remove uevents go out and the device leaves the test bed.

prop.NAME=VALUE adds a udev property to the usb_device (libudev sees it on enumerated devices and
on its uevents). With --control PATH, devices come and go while COMMAND runs: "add SPEC" plugs one
in, "remove SERIAL|PORT" unplugs one (as unplug_after does), "replug SERIAL|PORT [SPEC]"
re-enumerates one at its port with a new device number. Each command's reply line is appended to
PATH.ack once its sysfs entries and uevents are complete (the file starts with "ready"). The
script sends the uevents itself, to every libudev monitor in the test bed (see UeventSender).

COMMAND inherits stdin/stdout/stderr; the script exits with COMMAND's exit status (128+N when
killed by signal N). Run it with Debian's /usr/bin/python3 (python3-gi, gir1.2-umockdev-1.0).
See testbed/README.md and docs/BUILDING.md.
"""

import collections
import copy
import ctypes
import errno
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import GLib, UMockdev  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Constants printed by a small C program compiled against <linux/usbdevice_fs.h> and <errno.h>
# on this machine (x86_64, Linux UAPI headers), pasted verbatim; not typed from memory.
USBDEVFS_CONTROL = 0xC0185500
USBDEVFS_BULK = 0xC0185502
USBDEVFS_RESETEP = 0x80045503
USBDEVFS_SETINTERFACE = 0x80085504
USBDEVFS_SETCONFIGURATION = 0x80045505
USBDEVFS_GETDRIVER = 0x41045508
USBDEVFS_SUBMITURB = 0x8038550A
USBDEVFS_DISCARDURB = 0x550B
USBDEVFS_REAPURB = 0x4008550C
USBDEVFS_REAPURBNDELAY = 0x4008550D
USBDEVFS_CLAIMINTERFACE = 0x8004550F
USBDEVFS_RELEASEINTERFACE = 0x80045510
USBDEVFS_IOCTL = 0xC0105512
USBDEVFS_RESET = 0x5514
USBDEVFS_CLEAR_HALT = 0x80045515
USBDEVFS_GET_CAPABILITIES = 0x8004551A
USBDEVFS_DISCONNECT_CLAIM = 0x8108551B

USBDEVFS_URB_TYPE_CONTROL = 2
USBDEVFS_URB_TYPE_BULK = 3

# struct usbdevfs_urb: sizeof 0x38 (56)
URB_SIZE = 56
URB_TYPE = 0            # unsigned char
URB_ENDPOINT = 1        # unsigned char
URB_STATUS = 4          # int
URB_FLAGS = 8           # unsigned int
URB_BUFFER = 16         # void *
URB_BUFFER_LENGTH = 24  # int
URB_ACTUAL_LENGTH = 28  # int
# struct usbdevfs_bulktransfer: sizeof 0x18 (24)
BULK_SIZE = 24
BULK_EP = 0             # unsigned int
BULK_LEN = 4            # unsigned int
BULK_TIMEOUT = 8        # unsigned int, ms, 0 = forever
BULK_DATA = 16          # void *
# struct usbdevfs_ctrltransfer: sizeof 0x18 (24)
CTRL_SIZE = 24          # bRequestType 0, bRequest 1, wValue 2, wIndex 4, wLength 6, timeout 8
CTRL_DATA = 16          # void *
# struct usbdevfs_getdriver: sizeof 0x104; interface at 0, driver[256] at 4

CAPABILITIES = 0x1F  # ZERO_PACKET|BULK_CONTINUATION|NO_PACKET_SIZE_LIM|BULK_SCATTER_GATHER|REAP_AFTER_DISCONNECT

ENOENT, EIO, EAGAIN, EBUSY, EINVAL, ENODEV, ENOTTY = 0x2, 0x5, 0xB, 0x10, 0x16, 0x13, 0x19
EPIPE, ENODATA, EPROTO, ETIMEDOUT = 0x20, 0x3D, 0x47, 0x6E
assert (ENOENT, EIO, EAGAIN, EBUSY, EINVAL, ENODEV, ENOTTY, EPIPE, ENODATA, EPROTO, ETIMEDOUT) == (
    errno.ENOENT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINVAL, errno.ENODEV, errno.ENOTTY,
    errno.EPIPE, errno.ENODATA, errno.EPROTO, errno.ETIMEDOUT)

EP_IN = 0x81
EP_OUT = 0x01
PR_SET_TIMERSLACK = 29
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

DEBUG = False
PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def log(msg):
    sys.stderr.write("fastboot_usb_testbed: %s\n" % msg)
    sys.stderr.flush()


def dbg(msg):
    if DEBUG:
        log(msg)


# ---------------------------------------------------------------------------------------------
# Device description

# udev properties a prop.NAME=VALUE cannot set: the test bed derives them, and libudev and libusb
# rely on them being consistent with the sysfs entries.
RESERVED_PROPERTIES = {"ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM", "DEVNAME", "DEVTYPE", "MAJOR",
                       "MINOR", "BUSNUM", "DEVNUM"}


class DeviceSpec:
    """SPEC = KEY=VALUE[,KEY=VALUE]...: tcp=HOST:PORT (required), serial, port, vid, pid,
    unplug_after, prop.NAME=VALUE (repeatable)."""

    def __init__(self, text, index, label="--device"):
        self.text, self.label = text, label
        self.host, self.port = None, None
        self.serial = "EMU%04d" % (index + 1)
        self.portpath = "1-%d" % (index + 1)
        self.vid, self.pid = 0x18D1, 0x4EE0
        self.unplug_after = None
        self.props = collections.OrderedDict()  # extra udev properties (prop.NAME=VALUE)
        self.update(text, allow_port=True)
        if self.port is None:
            raise self.error(text, "tcp=HOST:PORT is required")

    def error(self, text, msg):
        """--device SPEC errors name the SPEC; a control command's reply already quotes it."""
        return ValueError("%s %s: %s" % (self.label, text, msg) if self.label == "--device" else msg)

    def update(self, text, allow_port):
        for item in filter(None, text.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise self.error(text, "expected KEY=VALUE, got %r" % item)
            if key == "tcp":
                if value.startswith("tcp:"):
                    value = value[4:]
                host, _, port = value.rpartition(":")
                if not port.isdigit():
                    raise self.error(text, "tcp must be HOST:PORT")
                self.host, self.port = host or "127.0.0.1", int(port)
            elif key == "serial":
                if not value or any(c.isspace() for c in value):
                    raise self.error(text, "serial must be non-empty, without spaces")
                self.serial = value
            elif key == "port":
                if not allow_port:
                    raise self.error(text, "a replugged device keeps its port")
                bus, dash, rest = value.partition("-")
                if (not dash or not bus.isdigit() or not 1 <= int(bus) <= 127
                        or not all(p.isdigit() for p in rest.split("."))):
                    raise self.error(text, "port must look like 1-2 or 1-2.3")
                self.portpath = value
            elif key in ("vid", "pid"):
                try:
                    number = int(value, 16)
                except ValueError:
                    number = -1
                if not 0 <= number <= 0xFFFF:
                    raise self.error(text, "%s must be a hex number up to ffff" % key)
                setattr(self, key, number)
            elif key == "unplug_after":
                if not value:  # replug overrides: "unplug_after=" clears it
                    self.unplug_after = None
                    continue
                mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(value[-1:].upper(), 1)
                digits = value[:-1] if mult > 1 else value
                if not digits.isdigit():
                    raise self.error(text, "unplug_after must be a number of bytes")
                self.unplug_after = int(digits) * mult
            elif key.startswith("prop."):
                name = key[5:]
                if not PROPERTY_NAME.match(name):
                    raise self.error(text, "bad property name %r (letters, digits, _)" % name)
                if name in RESERVED_PROPERTIES:
                    raise self.error(text, "property %s is set by the test bed" % name)
                if not value or "\0" in value:
                    raise self.error(text, "property %s needs a value" % name)
                self.props[name] = value
            else:
                raise self.error(text, "unknown key %r" % key)
        self.busnum = int(self.portpath.split("-")[0])

    def replugged(self, overrides):
        """A copy for the same device re-enumerating, with overrides (a SPEC without port)."""
        spec = copy.copy(self)
        spec.props = collections.OrderedDict(self.props)
        spec.label = "replug"
        spec.update(overrides, allow_port=False)
        return spec


def string_descriptor(text):
    raw = text.encode("utf-16-le")
    return bytes([2 + len(raw), 3]) + raw


class Descriptors:
    def __init__(self, spec):
        self.device = struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64,
                                  spec.vid, spec.pid, 0x0100, 1, 2, 3, 1)
        interface = bytes([9, 4, 0, 0, 2, 0xFF, 0x42, 0x03, 0])
        ep_in = struct.pack("<BBBBHB", 7, 5, EP_IN, 2, 512, 0)
        ep_out = struct.pack("<BBBBHB", 7, 5, EP_OUT, 2, 512, 0)
        total = 9 + len(interface) + len(ep_in) + len(ep_out)
        self.config = struct.pack("<BBHBBBBB", 9, 2, total, 1, 1, 0, 0x80, 250) + interface + ep_in + ep_out
        self.qualifier = struct.pack("<BBHBBBBBB", 10, 6, 0x0200, 0, 0, 0, 64, 1, 0)
        self.raw = self.device + self.config  # sysfs "descriptors" and the node's contents
        self.strings = {
            0: bytes([4, 3, 0x09, 0x04]),
            1: string_descriptor("flashctl testbed"),
            2: string_descriptor("Emulated fastboot device"),
            3: string_descriptor(spec.serial),
        }

    def control_in(self, rtype, req, value, index, length):
        """Answer a control IN request: bytes, or None to stall."""
        if req == 6 and rtype == 0x80:  # GET_DESCRIPTOR
            dtype, dindex = value >> 8, value & 0xFF
            if dtype == 1:
                data = self.device
            elif dtype == 2 and dindex == 0:
                data = self.config
            elif dtype == 3 and dindex in self.strings:
                data = self.strings[dindex]
            elif dtype == 6:
                data = self.qualifier
            else:
                return None
            return data[:length]
        if req == 0 and rtype in (0x80, 0x81, 0x82):  # GET_STATUS
            return b"\x01\x00"[:length] if rtype == 0x80 else b"\x00\x00"[:length]
        if req == 8 and rtype == 0x80:  # GET_CONFIGURATION
            return b"\x01"[:length]
        if req == 10 and rtype == 0x81:  # GET_INTERFACE
            return b"\x00"[:length]
        return None


def attr_lines(attrs):
    # umockdev's parser unescapes "\n": every sysfs attribute value ends with a newline.
    return "".join("A: %s=%s\\n\n" % (k, v) for k, v in attrs)


def usb_minor(busnum, devnum):
    return (busnum - 1) * 128 + devnum - 1


def usb_properties(spec, devnum):
    """A usb_device's udev properties: the kernel's, those udev's usb_id builtin adds (ID_*), then
    the SPEC's prop.NAME=VALUE (which may replace an ID_* value). They all go into the sysfs
    "uevent" file, from which libudev reads a device's properties and the uevents take theirs."""
    vendor, model = "flashctl_testbed", "Emulated_fastboot_device"
    props = collections.OrderedDict([
        ("DEVNAME", "/dev/bus/usb/%03d/%03d" % (spec.busnum, devnum)), ("DEVTYPE", "usb_device"),
        ("SUBSYSTEM", "usb"), ("BUSNUM", "%03d" % spec.busnum), ("DEVNUM", "%03d" % devnum),
        ("MAJOR", "189"), ("MINOR", "%d" % usb_minor(spec.busnum, devnum)),
        ("PRODUCT", "%x/%x/100" % (spec.vid, spec.pid)), ("TYPE", "0/0/0"), ("ID_BUS", "usb"),
        ("ID_VENDOR", vendor), ("ID_VENDOR_ID", "%04x" % spec.vid), ("ID_MODEL", model),
        ("ID_MODEL_ID", "%04x" % spec.pid), ("ID_REVISION", "0100"),
        ("ID_SERIAL", "%s_%s_%s" % (vendor, model, spec.serial)), ("ID_SERIAL_SHORT", spec.serial),
        ("ID_USB_INTERFACES", ":ff4203:")])
    props.update(spec.props)
    return list(props.items())


# ---------------------------------------------------------------------------------------------
# Runtime state

class Urb:
    __slots__ = ("addr", "is_in", "is_control", "buflen", "status", "actual", "data", "offset")

    def __init__(self, addr, is_in, is_control, buflen):
        self.addr, self.is_in, self.is_control, self.buflen = addr, is_in, is_control, buflen
        self.status, self.actual, self.data, self.offset = 0, 0, None, 0


class ClientState:
    def __init__(self, client):
        self.client = client
        self.pending_in = collections.deque()   # IN URBs waiting for a frame
        self.pending_out = []                   # OUT URBs a slow device has not taken yet
        self.completed = collections.deque()    # reapable URBs, in completion order
        self.blocking_reap = None               # IoctlData of a waiting USBDEVFS_REAPURB
        self.sync_in = None                     # (IoctlData bulk struct, length, timeout source)
        self.sync_out = None                    # (token, timeout source) of a waiting USBDEVFS_BULK OUT
        self.read_pos = 0                       # read() position on the node (FIFO mode)
        self.gone = False


# Commands after which a device re-enumerates when it ends its session (fastboot to fastboot).
REENUMERATING_COMMANDS = (b"reboot-bootloader", b"reboot-fastboot")


class TcpLink:
    """One fastboot-over-TCP connection; a reader thread queues the frames the device sends."""

    def __init__(self, device):
        self.device = device
        self.sock = socket.create_connection((device.spec.host, device.spec.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"FB01")
        hello = self._recv_exact(4)
        if hello != b"FB01":
            self.sock.close()
            raise OSError("bad handshake %r" % hello)
        self.sock.settimeout(None)
        self.closed = False
        # Frames that could not go out at once (the device reads slowly) are finished by a
        # writer thread, so that one slow device never blocks the shared ioctl worker thread.
        self.backlog = collections.deque()  # (remaining memoryviews, on_done)
        self.cond = threading.Condition()
        self.writer = None
        self.unacked = 0  # frames handed to the writer whose completion has not run yet
        self.thread = threading.Thread(target=self._reader, daemon=True,
                                       name="tcp-%s" % device.spec.serial)

    def start(self):
        self.thread.start()

    def _recv_exact(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            r = self.sock.recv_into(view[got:], n - got)
            if r == 0:
                raise EOFError
            got += r
        return bytes(buf)

    def _reader(self):
        try:
            while True:
                (length,) = struct.unpack(">Q", self._recv_exact(8))
                payload = self._recv_exact(length) if length else b""
                self.device.frame_arrived(self, payload)
        except (EOFError, OSError):
            pass
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.device.link_ended(self)

    def send(self, payload, on_done):
        """Send one frame. Returns True when it went out entirely at once (the usual case);
        otherwise returns False and the writer thread finishes it (after any frames already
        waiting), then on_done(error or None) runs on the ioctl worker thread. Raises OSError
        when the connection is gone."""
        if self.closed:
            raise OSError(errno.EPIPE, "connection closed")
        if len(payload) <= 64:
            self.device.last_command = bytes(payload)
        header = struct.pack(">Q", len(payload))
        with self.cond:
            if not self.unacked:  # nothing waiting: keeps frames and completions in order
                try:
                    sent = self.sock.sendmsg([header, payload], [], socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                if sent == 8 + len(payload):
                    return True
            else:
                sent = 0
            parts = [memoryview(header)[sent:], memoryview(payload)[max(sent - 8, 0):]]
            self.unacked += 1

            def done(error):  # on the worker thread, like send()
                self.unacked -= 1
                on_done(error)
            self.backlog.append(([p for p in parts if len(p)], done))
            if self.writer is None:
                self.writer = threading.Thread(target=self._write_backlog, daemon=True,
                                               name="tcp-writer-%s" % self.device.spec.serial)
                self.writer.start()
            self.cond.notify()
        return False

    def _write_backlog(self):
        while True:
            with self.cond:
                while not self.backlog and not self.closed:
                    self.cond.wait()
                if not self.backlog:
                    return
                parts, on_done = self.backlog[0]
            error = None
            try:
                for part in parts:
                    self.sock.sendall(part)
            except OSError as e:
                error = e
            with self.cond:
                self.backlog.popleft()
            self.device.call_soon(on_done, error)

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Device:
    def __init__(self, bed, spec, devnum):
        """Create the device's sysfs entries and node (no uevent: Bed.plug sends them)."""
        self.bed = bed
        self.spec = spec
        self.devnum = devnum
        self.desc = Descriptors(spec)
        self.devnode = "/dev/bus/usb/%03d/%03d" % (spec.busnum, devnum)
        host = "/devices/pci0000:00/0000:00:14.0/usb%d" % spec.busnum
        self.syspath = "/sys%s/%s" % (host, spec.portpath)
        self.iface_syspath = "%s/%s:1.0" % (self.syspath, spec.portpath)
        self.minor = usb_minor(spec.busnum, devnum)
        self.lock = threading.Lock()        # guards frames, link and scheduled (reader threads)
        self.frames = collections.deque()
        self.link = None                    # the device's TCP link: outlives client sessions
        self.owner = None                   # ClientState that holds interface 0 (claimed it)
        self.clients = {}                   # IoctlClient -> ClientState
        self.unplugged = False
        self.out_bytes = 0
        self.ctx = None                     # the test bed worker's GMainContext
        self.scheduled = False
        self.connect_failed = False
        self.fifo_fd = None
        self.ready = True
        self.last_command = b""             # the last short frame sent: a command, for reboots
        self.rebooting = False              # its session ended by a reboot: it takes no other

        # The handler must be attached before the device is added.
        self.handler = Handler(self)
        bed.testbed.attach_ioctl(self.devnode, self.handler)
        # The node is made here, before the sysfs entries (no "N:" line for umockdev to make it):
        # by the time the "add" uevent goes out, it is complete (a FIFO in FIFO mode).
        self._make_node(bed.use_fifo)
        hexdesc = self.desc.raw.hex().upper()
        record = "P: %s/%s\n" % (host, spec.portpath)
        for name, value in usb_properties(spec, devnum):
            record += "E: %s=%s\n" % (name, value)
        record += attr_lines([
            ("busnum", "%d" % spec.busnum), ("devnum", "%d" % devnum),
            ("devpath", spec.portpath.partition("-")[2]),
            ("idVendor", "%04x" % spec.vid), ("idProduct", "%04x" % spec.pid),
            ("bcdDevice", "0100"), ("bDeviceClass", "00"), ("bDeviceSubClass", "00"),
            ("bDeviceProtocol", "00"), ("bMaxPacketSize0", "64"), ("bNumConfigurations", "1"),
            ("bConfigurationValue", "1"), ("bNumInterfaces", " 1"), ("bmAttributes", "80"),
            ("bMaxPower", "500mA"), ("version", " 2.00"), ("maxchild", "0"),
            ("speed", "480"), ("serial", spec.serial), ("product", "Emulated fastboot device"),
            ("manufacturer", "flashctl testbed"), ("dev", "189:%d" % self.minor)])
        record += "H: descriptors=%s\n\n" % hexdesc
        record += "P: %s/%s/%s:1.0\n" % (host, spec.portpath, spec.portpath)
        record += "E: DEVTYPE=usb_interface\nE: SUBSYSTEM=usb\nE: INTERFACE=255/66/3\n"
        record += "E: PRODUCT=%x/%x/100\nE: TYPE=0/0/0\n" % (spec.vid, spec.pid)
        record += attr_lines([
            ("bInterfaceNumber", "00"), ("bAlternateSetting", " 0"), ("bNumEndpoints", "02"),
            ("bInterfaceClass", "ff"), ("bInterfaceSubClass", "42"), ("bInterfaceProtocol", "03")])
        record += "\n"
        bed.testbed.add_from_string(record)

    def _make_node(self, use_fifo):
        path = self.bed.root + self.devnode
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not use_fifo:  # a regular file holding the descriptors, as umockdev makes it
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            try:
                os.write(fd, self.desc.raw)
            finally:
                os.close(fd)
            return
        self._make_fifo(path)

    # -- FIFO readiness: the node is a FIFO of one page; one byte in it = not writable =
    # -- libusb's poll(POLLOUT) sleeps. Empty = writable = something to reap.
    def _make_fifo(self, path):
        os.mkfifo(path, 0o666)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.fcntl(fd, F_SETPIPE_SZ, 4096)
        self.fifo_fd = fd
        self.ready = True
        self._set_ready(False)

    def _set_ready(self, ready):
        if self.fifo_fd is None or ready == self.ready:
            return
        try:
            if ready:
                os.read(self.fifo_fd, 16)
            else:
                os.write(self.fifo_fd, b"\0")
        except BlockingIOError:
            pass
        self.ready = ready

    def update_ready(self):
        self._set_ready(any(st.completed for st in self.clients.values()))

    # -- client bookkeeping (worker thread)
    def state(self, client):
        st = self.clients.get(client)
        if st is None:
            st = ClientState(client)
            self.clients[client] = st
            if self.ctx is None:
                self.ctx = GLib.MainContext.get_thread_default() or GLib.MainContext.default()
                # umockdev 0.17 never emits notify::connected (GIOStream does not notify
                # "closed"), so look for clients that closed the device a few times a second.
                sweep = GLib.Timeout(200)
                sweep.set_callback(self._sweep)
                sweep.attach(self.ctx)
        return st

    def _sweep(self, *_):
        for client in [c for c in self.clients if not c.get_connected()]:
            self.client_gone(client)
        return True

    def client_gone(self, client):
        st = self.clients.pop(client, None)
        if st is None:
            return
        st.gone = True
        dbg("%s: client closed the device" % self.spec.serial)
        if st.sync_in is not None and st.sync_in[2] is not None:
            st.sync_in[2].destroy()
        st.sync_in = None
        if st.sync_out is not None and st.sync_out[1] is not None:
            st.sync_out[1].destroy()
        st.sync_out = None
        if self.owner is st:
            self.owner = None  # the TCP link (the device's state) stays for the next client
        self.update_ready()

    # -- interface 0 and the TCP link. The link is the device: like real hardware, it keeps its
    # -- fastboot state (a download phase, too) from one client session to the next. Only
    # -- USBDEVFS_RESET, an unplug or the end of the test bed drop it.
    def claim(self, st):
        """Make st the holder of interface 0; return None, or EBUSY if another client holds it."""
        if self.owner is not None and self.owner is not st:
            if self.owner.client.get_connected():
                return EBUSY
            self.client_gone(self.owner.client)
        self.owner = st
        return None

    def claim_interface(self, st, connect):
        """CLAIMINTERFACE (connect=True: the link is made now, as AOSP fastboot expects) or
        DISCONNECT_CLAIM (libusb with auto-detach; the first transfer connects). A link the TCP
        device has closed (it ended its session, like a device that rebooted) is replaced at such
        a claim, the start of a client session, never in the middle of one."""
        err = self.claim(st)
        if err:
            return err
        if self.link is not None and self.link.closed:
            dbg("%s: the TCP device had closed the connection: a new one for this client" % self.spec.serial)
            self.drop_link()
        return self.ensure_link(st) if connect else None

    def reset(self, st):
        """USBDEVFS_RESET: the device starts over. Its TCP link (its fastboot session) is dropped;
        the next transfer or claim connects again, to a fresh session."""
        dbg("%s: USBDEVFS_RESET: device reset, TCP connection dropped (%s)" % (
            self.spec.serial, "the next transfer reconnects" if self.link is not None else "none was open"))
        self.drop_link()
        return (0, 0)

    def ensure_link(self, st):
        """Return None when st holds the device and there is a link (connecting if needed), else
        an errno."""
        err = self.claim(st)
        if err:
            return err
        if self.link is not None:
            return None
        if self.rebooting:  # leaving the bus: what it had to say is being read, nothing more
            return ENODEV
        try:
            link = TcpLink(self)
        except (OSError, EOFError) as e:
            if not self.connect_failed or DEBUG:  # clients may retry in a loop: say it once
                log("%s: cannot connect to tcp %s:%d: %s" % (self.spec.serial, self.spec.host, self.spec.port, e))
            self.connect_failed = True
            return EIO
        self.connect_failed = False
        with self.lock:
            self.link = link
            self.frames.clear()
        link.start()
        dbg("%s: connected to %s:%d" % (self.spec.serial, self.spec.host, self.spec.port))
        return None

    def drop_link(self):
        with self.lock:
            link, self.link = self.link, None
            self.frames.clear()
        if link is not None:
            link.close()
            dbg("%s: TCP connection closed" % self.spec.serial)

    def frame_arrived(self, link, payload):  # reader thread
        with self.lock:
            if link is not self.link:
                return
            self.frames.append(payload)
            if self.scheduled or self.ctx is None:
                return
            self.scheduled = True
        src = GLib.Idle()
        src.set_callback(self._deliver_cb)
        src.attach(self.ctx)

    def call_soon(self, fn, *args):  # any thread: run fn(*args) on the ioctl worker thread
        def cb(*_):
            try:
                fn(*args)
            except Exception as e:
                log("%s: %r" % (getattr(fn, "__name__", fn), e))
            return False
        src = GLib.Idle()
        src.set_callback(cb)
        src.attach(self.ctx)

    def link_ended(self, link):  # reader thread
        if link is self.link and not self.unplugged:
            dbg("%s: TCP device closed the connection" % self.spec.serial)
            if self.last_command in REENUMERATING_COMMANDS:
                self.rebooting = True
                self.call_soon(self.bed.rebooted, self)

    def _deliver_cb(self, *_):
        with self.lock:
            self.scheduled = False
        try:
            self.deliver()
        except Exception as e:  # never let an exception kill the worker loop
            log("deliver: %r" % (e,))
        return False

    def _take_frame(self, limit):
        """Pop up to limit bytes of the first queued frame (the rest stays queued)."""
        with self.lock:
            if not self.frames:
                return None
            frame = self.frames.popleft()
            if len(frame) > limit:
                self.frames.appendleft(frame[limit:])
                frame = frame[:limit]
            return frame

    def deliver(self):
        st = self.owner
        if st is None or st.gone:
            return
        changed = False
        while True:
            if st.sync_in is not None:
                bt, length, source = st.sync_in
                frame = self._take_frame(length)
                if frame is None:
                    break
                st.sync_in = None
                if source is not None:
                    source.destroy()
                self._finish_sync_in(st, bt, frame)
            elif st.pending_in:
                urb = st.pending_in[0]
                frame = self._take_frame(urb.buflen)
                if frame is None:
                    break
                st.pending_in.popleft()
                urb.data, urb.actual, urb.status = frame, len(frame), 0
                st.completed.append(urb)
                changed = True
            else:
                break
        if changed:
            self.serve_blocking_reap(st)
            self.update_ready()

    def _finish_sync_in(self, st, bt, frame):
        try:
            if frame:
                bt.resolve(BULK_DATA, len(frame)).update(0, frame)
            st.client.complete(len(frame), 0)
        except Exception as e:
            log("bulk IN completion: %r" % (e,))
            st.client.complete(-1, EIO)

    def serve_blocking_reap(self, st):
        if st.blocking_reap is not None and st.completed:
            arg, st.blocking_reap = st.blocking_reap, None
            self.reap_into(st, arg)

    def reap_into(self, st, arg):
        urb = st.completed.popleft()
        slot = arg.resolve(0, 8)
        slot.update(0, struct.pack("<Q", urb.addr))
        u = slot.resolve(0, URB_SIZE)
        u.update(URB_STATUS, struct.pack("<i", urb.status))
        u.update(URB_ACTUAL_LENGTH, struct.pack("<i", urb.actual))
        if urb.data:
            u.resolve(URB_BUFFER, urb.offset + len(urb.data)).update(urb.offset, urb.data)
        self.update_ready()
        st.client.complete(0, 0)

    # -- bulk OUT completions (worker thread)
    def out_urb_done(self, st, urb):
        st.completed.append(urb)
        if urb.actual:
            self.count_out(urb.actual)
        self.serve_blocking_reap(st)
        self.update_ready()

    def out_urb_sent(self, st, urb, length, error):
        if st.gone or urb not in st.pending_out:
            return  # discarded (libusb's timeout or cancel): already completed
        st.pending_out.remove(urb)
        if self.unplugged and error is not None:
            urb.status = -ENODEV
        elif error is not None:
            log("%s: TCP send failed: %s" % (self.spec.serial, error))
            urb.status = -EPROTO
        else:
            urb.actual = length
        self.out_urb_done(st, urb)

    def sync_out_sent(self, st, token, length, error):
        if st.gone or st.sync_out is None or st.sync_out[0] is not token:
            return  # timed out: already completed
        if st.sync_out[1] is not None:
            st.sync_out[1].destroy()
        st.sync_out = None
        if error is not None:
            st.client.complete(-1, ENODEV if self.unplugged else EPROTO)
            return
        st.client.complete(length, 0)
        self.count_out(length)

    # -- unplug (worker thread)
    def count_out(self, n):
        self.out_bytes += n
        if self.spec.unplug_after is not None and self.out_bytes >= self.spec.unplug_after:
            self.unplug()

    def unplug(self, why=None):
        """The device goes away (unplug_after, or the control channel's remove/replug)."""
        if self.unplugged:
            return
        self.unplugged = True  # before any uevent
        log("%s: unplugged %s" % (self.spec.serial, why or "after %d bulk OUT bytes" % self.out_bytes))
        self.drop_link()
        for st in list(self.clients.values()):
            while st.pending_in:
                urb = st.pending_in.popleft()
                urb.status, urb.actual, urb.data = -ENODEV, 0, None
                st.completed.append(urb)
            if st.sync_in is not None:
                _, _, source = st.sync_in
                st.sync_in = None
                if source is not None:
                    source.destroy()
                st.client.complete(-1, ENODEV)
            if st.blocking_reap is not None:
                if st.completed:
                    self.serve_blocking_reap(st)
                else:
                    st.blocking_reap = None
                    st.client.complete(-1, ENODEV)
        # Writable from now on: libusb reaps the -ENODEV URBs, then gets ENODEV and goes quiet
        # once nothing is left (update_ready after each reap).
        self.update_ready()
        self.bed.unplugged(self)


class Handler(UMockdev.IoctlBase):
    def __init__(self, device):
        super().__init__()
        self.dev = device

    # -- read() of the node. In FIFO mode the node's bytes (the descriptors) come from here.
    def do_handle_read(self, client):
        dev = self.dev
        if dev.fifo_fd is None:
            return False
        st = dev.state(client)
        if dev.unplugged:
            client.complete(-1, ENODEV)
            return True
        arg = client.get_arg()
        count = len(arg.retrieve())
        chunk = dev.desc.raw[st.read_pos:st.read_pos + count]
        if chunk:
            arg.update(0, chunk)
        st.read_pos += len(chunk)
        client.complete(len(chunk), 0)
        return True

    def do_handle_write(self, client):
        if self.dev.fifo_fd is None:
            return False
        client.complete(-1, ENODEV if self.dev.unplugged else EINVAL)
        return True

    def do_handle_ioctl(self, client):
        dev = self.dev
        st = dev.state(client)
        req = client.get_request()
        try:
            res = self.ioctl(dev, st, client, req)
        except Exception as e:
            if isinstance(e, GLib.Error) and e.domain == "g-io-error-quark":
                # The connection to the client process broke (it was killed mid-ioctl): as the
                # kernel does when a process exits, its claims go. The device link is Python's
                # socket module, so a GIO error here is always the client's side.
                log("%s: ioctl 0x%x: the client's connection broke (%s)" % (dev.spec.serial, req, e.message))
                dev.client_gone(client)
                return True
            log("%s: ioctl 0x%x failed in the emulation: %r" % (dev.spec.serial, req, e))
            res = (-1, EIO)
        if res is not None:
            if DEBUG:
                dbg("%s: ioctl 0x%x -> %r" % (dev.spec.serial, req, res))
            client.complete(res[0], res[1])
        return True

    def ioctl(self, dev, st, client, req):
        """Return (result, errno) to complete now, or None when completion comes later."""
        arg = client.get_arg()
        if req in (USBDEVFS_REAPURBNDELAY, USBDEVFS_REAPURB):
            if st.completed:
                dev.reap_into(st, arg)  # completes
                return None
            if dev.unplugged:
                return (-1, ENODEV)
            if req == USBDEVFS_REAPURBNDELAY:
                return (-1, EAGAIN)
            st.blocking_reap = arg
            return None
        if dev.unplugged:
            return (-1, ENODEV)

        if req == USBDEVFS_SUBMITURB:
            return self.submit_urb(dev, st, arg)
        if req == USBDEVFS_BULK:
            return self.sync_bulk(dev, st, client, arg)
        if req == USBDEVFS_DISCARDURB:
            (addr,) = struct.unpack("<Q", bytes(arg.retrieve()[:8]))
            # An IN URB waiting for a frame, or an OUT URB a device that stopped reading has not
            # taken (libusb discards it when the transfer's timeout passes). Part of such a frame
            # may have reached the device already, as packets would on a real bus.
            for pending in (st.pending_in, st.pending_out):
                for urb in pending:
                    if urb.addr == addr:
                        pending.remove(urb)
                        urb.status, urb.actual, urb.data = -ENOENT, 0, None
                        st.completed.append(urb)
                        dev.serve_blocking_reap(st)
                        dev.update_ready()
                        return (0, 0)
            return (-1, EINVAL)
        if req == USBDEVFS_GET_CAPABILITIES:
            arg.resolve(0, 4).update(0, struct.pack("<I", CAPABILITIES))
            return (0, 0)
        if req == USBDEVFS_CLAIMINTERFACE:
            (ifno,) = struct.unpack("<I", bytes(arg.resolve(0, 4).retrieve()))
            if ifno != 0:
                return (-1, ENOENT)
            err = dev.claim_interface(st, connect=True)
            return (-1, err) if err else (0, 0)
        if req == USBDEVFS_RELEASEINTERFACE:
            (ifno,) = struct.unpack("<I", bytes(arg.resolve(0, 4).retrieve()))
            if ifno != 0:
                return (-1, ENOENT)
            if dev.owner is st:
                dev.owner = None  # the link stays: the device does not notice a release
            return (0, 0)
        if req == USBDEVFS_RESET:
            return dev.reset(st)
        if req == USBDEVFS_DISCONNECT_CLAIM:
            # libusb re-claims this way after a reset: hold the interface, connect lazily.
            (ifno,) = struct.unpack("<I", bytes(arg.resolve(0, 4).retrieve()))
            if ifno != 0:
                return (-1, ENOENT)
            err = dev.claim_interface(st, connect=False)
            return (-1, err) if err else (0, 0)
        if req == USBDEVFS_CONTROL:
            return self.sync_control(dev, arg)
        if req == USBDEVFS_GETDRIVER:
            return (-1, ENODATA)  # no kernel driver bound
        if req in (USBDEVFS_SETINTERFACE, USBDEVFS_CLEAR_HALT, USBDEVFS_RESETEP, USBDEVFS_IOCTL,
                   USBDEVFS_SETCONFIGURATION):
            return (0, 0)
        return (-1, ENOTTY)

    def submit_urb(self, dev, st, arg):
        u = arg.resolve(0, URB_SIZE)
        raw = bytes(u.retrieve())
        utype, ep = raw[URB_TYPE], raw[URB_ENDPOINT]
        (buflen,) = struct.unpack_from("<i", raw, URB_BUFFER_LENGTH)
        addr = u.client_addr  # the URB's address in the client
        if utype == USBDEVFS_URB_TYPE_BULK:
            if ep == EP_OUT:
                data = bytes(u.resolve(URB_BUFFER, buflen).retrieve()) if buflen > 0 else b""
                urb = Urb(addr, False, False, buflen)
                if data:  # a zero-length packet carries no fastboot message: not forwarded
                    if dev.ensure_link(st) is not None:
                        urb.status = -EPROTO
                    else:
                        try:
                            if not dev.link.send(data, lambda error: dev.out_urb_sent(st, urb, len(data), error)):
                                # Completes when the slow device has taken it, or when discarded.
                                st.pending_out.append(urb)
                                return (0, 0)
                            urb.actual = len(data)
                        except OSError as e:
                            log("%s: TCP send failed: %s" % (dev.spec.serial, e))
                            urb.status = -EPROTO
                dev.out_urb_done(st, urb)
                return (0, 0)
            if ep == EP_IN:
                if dev.ensure_link(st) is not None:
                    return (-1, EIO)
                st.pending_in.append(Urb(addr, True, False, max(buflen, 0)))
                dev.deliver()
                return (0, 0)
            return (-1, ENOENT)
        if utype == USBDEVFS_URB_TYPE_CONTROL and ep in (0x00, 0x80):
            if buflen < 8:
                return (-1, EINVAL)
            buf = bytes(u.resolve(URB_BUFFER, 8).retrieve())
            rtype, req, value, index, length = struct.unpack("<BBHHH", buf)
            urb = Urb(addr, bool(rtype & 0x80), True, buflen)
            urb.offset = 8
            if rtype & 0x80:
                data = dev.desc.control_in(rtype, req, value, index, min(length, buflen - 8))
                if data is None:
                    urb.status = -EPIPE
                else:
                    urb.data, urb.actual = data, len(data)
            else:
                urb.actual = length
            st.completed.append(urb)
            dev.serve_blocking_reap(st)
            dev.update_ready()
            return (0, 0)
        return (-1, EINVAL)

    def sync_bulk(self, dev, st, client, arg):
        bt = arg.resolve(0, BULK_SIZE)
        ep, length, timeout = struct.unpack_from("<III", bytes(bt.retrieve()), 0)
        if ep == EP_OUT:
            if length == 0:
                return (0, 0)
            err = dev.ensure_link(st)
            if err:
                return (-1, err)
            data = bytes(bt.resolve(BULK_DATA, length).retrieve())
            token = object()
            try:
                if not dev.link.send(data, lambda error: dev.sync_out_sent(st, token, length, error)):
                    # Completes when the slow device has taken it, or with ETIMEDOUT as the kernel's
                    # usbdevfs does when the transfer's timeout passes first.
                    source = None
                    if timeout:
                        source = GLib.Timeout(timeout)
                        source.set_callback(self._sync_out_timeout, st, token)
                        source.attach(dev.ctx)
                    st.sync_out = (token, source)
                    return None
            except OSError as e:
                log("%s: TCP send failed: %s" % (dev.spec.serial, e))
                return (-1, EPROTO)
            dev.count_out(length)
            return (length, 0)
        if ep == EP_IN:
            err = dev.ensure_link(st)
            if err:
                return (-1, err)
            frame = dev._take_frame(length)
            if frame is not None:
                if frame:
                    bt.resolve(BULK_DATA, len(frame)).update(0, frame)
                return (len(frame), 0)
            source = None
            if timeout:
                source = GLib.Timeout(timeout)
                source.set_callback(self._sync_timeout, st)
                source.attach(dev.ctx)
            st.sync_in = (bt, length, source)
            return None
        return (-1, ENOENT)

    def _sync_out_timeout(self, st, token, *_):
        if st.sync_out is not None and st.sync_out[0] is token and not st.gone:
            st.sync_out = None
            st.client.complete(-1, ETIMEDOUT)
        return False

    def _sync_timeout(self, st, *_):
        if st.sync_in is not None and not st.gone:
            st.sync_in = None
            st.client.complete(-1, ETIMEDOUT)
        return False

    def sync_control(self, dev, arg):
        ct = arg.resolve(0, CTRL_SIZE)
        rtype, req, value, index, length = struct.unpack_from("<BBHHH", bytes(ct.retrieve()), 0)
        if not rtype & 0x80:
            return (length, 0)
        data = dev.desc.control_in(rtype, req, value, index, length)
        if data is None:
            return (-1, EPIPE)
        if data:
            ct.resolve(CTRL_DATA, len(data)).update(0, data)
        return (len(data), 0)


# ---------------------------------------------------------------------------------------------
# Uevents. umockdev's own sender (Testbed.uevent, and add_from_string() in a process under the
# preload) has two flaws here, seen with umockdev 0.17.16: it abort()s this whole process when a
# monitor's socket queue is full (sendmsg EAGAIN: a COMMAND process that has a libudev monitor
# open but does not read it, after 11 queued events), and it finds monitors by the names
# UMOCKDEV_DIR/eventN its preload binds them to, N being the client's fd number, so a second
# process whose monitor has the same fd number takes the name over and the first monitor gets no
# event again. This sender builds the same message (libudev's header + the device's sysfs "uevent"
# file as its properties), keeps a hard link to every monitor socket it has seen (found at once
# through inotify), and queues events for a monitor whose queue is full instead of failing.

EVENT_SOCKET = re.compile(r"^event[0-9]+$")
UDEV_MONITOR_MAGIC = 0xFEEDCAFE
# libudev (systemd 252, device_monitor_receive_device) drops a message longer than its 8 KiB buffer.
UEVENT_MAX = 8192
IN_CREATE, IN_MOVED_TO = 0x100, 0x80


def murmur_hash2(data):
    """systemd's string_hash32() (MurmurHash2, seed 0): the monitors' socket filters compare it."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = len(data)
    i = 0
    while len(data) - i >= 4:
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
        i += 4
    rest = len(data) - i
    if rest == 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


def tag_bloom(tags):
    bits = 0
    for tag in tags:
        h = murmur_hash2(tag)
        for shift in (0, 6, 12, 18):
            bits |= 1 << ((h >> shift) & 63)
    return bits


class Listener:
    __slots__ = ("link", "dead", "backlog", "sock")

    def __init__(self, link):
        self.link, self.dead, self.backlog, self.sock = link, False, collections.deque(), None


class UeventSender:
    def __init__(self, root):
        self.root = root
        self.keep = os.path.join(root, "uevent-listeners")  # hard links to the monitors' sockets
        os.mkdir(self.keep)
        self.cond = threading.Condition()
        self.listeners = {}  # (st_dev, st_ino) of a monitor's socket -> Listener
        self.seqnum = 0
        self.flusher = None
        self.tmp = 0
        self._watch()

    def _watch(self):
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_CLOEXEC)
        if fd >= 0 and libc.inotify_add_watch(fd, self.root.encode(), IN_CREATE | IN_MOVED_TO) >= 0:
            threading.Thread(target=self._watch_loop, args=(fd,), daemon=True, name="uevent-monitors").start()
        else:
            log("inotify failed (%s): monitors are looked for when a uevent is sent" % os.strerror(ctypes.get_errno()))

    def _watch_loop(self, fd):
        while True:
            try:
                data = os.read(fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                return
            off, names = 0, []
            while off + 16 <= len(data):
                length = struct.unpack_from("iIII", data, off)[3]
                names.append(data[off + 16:off + 16 + length].split(b"\0", 1)[0].decode("utf-8", "replace"))
                off += 16 + length
            if any(EVENT_SOCKET.match(name) for name in names):
                with self.cond:
                    self._adopt()

    def _adopt(self):
        """Link every monitor socket not known yet (self.cond held)."""
        named = set()
        for name in os.listdir(self.root):
            if not EVENT_SOCKET.match(name):
                continue
            path = os.path.join(self.root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISSOCK(st.st_mode):
                continue
            named.add((st.st_dev, st.st_ino))
            if (st.st_dev, st.st_ino) in self.listeners:
                continue
            self.tmp += 1
            tmp = os.path.join(self.keep, "new%d" % self.tmp)
            try:
                os.link(path, tmp)
                st = os.lstat(tmp)  # what got linked: the name may have been taken over meanwhile
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in self.listeners:
                os.unlink(tmp)
                continue
            link = os.path.join(self.keep, "%d-%d" % key)
            os.rename(tmp, link)
            self.listeners[key] = Listener(link)
            dbg("uevent monitor %s found" % name)
        # A closed monitor's link is kept while its eventN name is, so that its inode number is
        # not reused by a new monitor that would then be taken for the closed one.
        for key, lst in list(self.listeners.items()):
            if lst.dead and key not in named:
                try:
                    os.unlink(lst.link)
                except OSError:
                    pass
                del self.listeners[key]

    def message(self, syspath, action):
        """The uevent for the device at syspath (its sysfs entries must still be there)."""
        with open(self.root + syspath + "/uevent", "rb") as f:
            lines = [line for line in f.read().split(b"\n") if line]
        props = dict(line.partition(b"=")[::2] for line in lines)
        subsystem, devtype = props.get(b"SUBSYSTEM", b""), props.get(b"DEVTYPE")
        tags = [t for t in props.get(b"TAGS", b"").split(b":") if t]
        with self.cond:
            self.seqnum += 1
            seqnum = self.seqnum
        body = [b"ACTION=" + action.encode(), b"DEVPATH=" + syspath[4:].encode(), b"SUBSYSTEM=" + subsystem,
                b"SEQNUM=%d" % seqnum] + lines
        payload = b"".join(p + b"\0" for p in body)
        bloom = tag_bloom(tags)
        header = (b"libudev\0" + struct.pack(">I", UDEV_MONITOR_MAGIC) + struct.pack("=III", 40, 40, len(payload))
                  + struct.pack(">IIII", murmur_hash2(subsystem), murmur_hash2(devtype) if devtype else 0,
                                bloom >> 32, bloom & 0xFFFFFFFF))
        return header + payload

    def send(self, syspath, action):
        """Send the uevent to every monitor in the test bed. When this returns, each monitor has it
        in its socket's queue, or (a monitor that is not being read, its queue full) it waits in
        this process and is sent, in order, as soon as the monitor reads."""
        msg = self.message(syspath, action)
        with self.cond:
            self._adopt()
            for lst in list(self.listeners.values()):
                if not lst.dead:
                    self._deliver(lst, msg)

    def _deliver(self, lst, msg):
        if lst.backlog:
            lst.backlog.append(msg)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(lst.link)
            sock.send(msg)
        except BlockingIOError:
            lst.backlog.append(msg)
            lst.sock = sock
            dbg("uevent monitor %s: queue full, events wait here" % lst.link)
            if self.flusher is None:
                self.flusher = threading.Thread(target=self._flush, daemon=True, name="uevent-flusher")
                self.flusher.start()
            return
        except (ConnectionRefusedError, FileNotFoundError):
            lst.dead = True  # the monitor was closed
        except OSError as e:
            log("uevent to %s failed: %s" % (lst.link, e))
        sock.close()

    def _flush(self):
        while True:
            with self.cond:
                waiting = [lst for lst in self.listeners.values() if lst.backlog]
                if not waiting:
                    self.flusher = None
                    return
            poller = select.poll()
            for lst in waiting:
                poller.register(lst.sock, select.POLLOUT)
            poller.poll(200)
            with self.cond:
                for lst in waiting:
                    while lst.backlog:
                        try:
                            lst.sock.send(lst.backlog[0])
                        except BlockingIOError:
                            break
                        except OSError:
                            lst.dead = True
                            lst.backlog.clear()
                            break
                        lst.backlog.popleft()
                    if not lst.backlog:
                        lst.sock.close()
                        lst.sock = None


# ---------------------------------------------------------------------------------------------
# Disks: a real block device on this machine (a loop device) shown to COMMAND as a disk in a USB
# card reader's slot. Only its sysfs entry is emulated (with the real device's size and number,
# so /sys/dev/block/MAJ:MIN leads to it); no node is made in the test bed, so COMMAND opens the
# real /dev node and writes the real device.

class Disk:
    READER = "/devices/pci0000:00/0000:00:14.0/usb2/2-%d/2-%d:1.0/host%d/target%d:0:0/%d:0:0:0/block/%s"

    def __init__(self, bed, text, slot):
        devnode, _, rest = text.partition(",")
        if not devnode.startswith("/dev/") or not os.path.exists(devnode):
            raise ValueError("no block device %s on this machine" % devnode)
        st = os.stat(devnode)
        if not stat.S_ISBLK(st.st_mode):
            raise ValueError("%s is not a block device" % devnode)
        self.devnode, self.name = devnode, os.path.basename(devnode)
        # Its size from the device itself: this process's /sys is the test bed's.
        fd = os.open(devnode, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sectors = str(os.lseek(fd, 0, os.SEEK_END) // 512)
        finally:
            os.close(fd)
        self.props = collections.OrderedDict([
            ("DEVNAME", devnode), ("DEVTYPE", "disk"), ("SUBSYSTEM", "block"),
            ("MAJOR", str(os.major(st.st_rdev))), ("MINOR", str(os.minor(st.st_rdev))),
            ("ID_BUS", "usb"), ("ID_MODEL", "Card_Reader"), ("ID_SERIAL_SHORT", "SD-" + self.name)])
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if key == "slot" and value.isdigit() and 1 <= int(value) <= 99:
                slot = int(value)
                continue
            if key == "serial" and value and not any(c.isspace() for c in value):
                self.props["ID_SERIAL_SHORT"] = value
                continue
            if not sep or not key.startswith("prop.") or not PROPERTY_NAME.match(key[5:]) or not value:
                raise ValueError("expected slot=N, serial=S or prop.NAME=VALUE, got %r" % item)
            if key[5:] in RESERVED_PROPERTIES:
                raise ValueError("property %s is set by the test bed" % key[5:])
            self.props[key[5:]] = value
        self.props["ID_PATH"] = "pci-0000:00:14.0-usb-0:%d:1.0-scsi-0:0:0:0" % slot
        self.syspath = "/sys" + self.READER % (slot, slot, slot, slot, slot, self.name)
        record = "P: %s\n" % self.syspath[4:]
        for name, value in self.props.items():
            record += "E: %s=%s\n" % (name, value)
        record += attr_lines([
            ("dev", "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))), ("size", sectors),
            ("removable", "1"), ("ro", "0"), ("queue/logical_block_size", "512")])
        record += "\n"
        bed.testbed.add_from_string(record)

    def describe(self):
        return "%s syspath=%s ID_PATH=%s" % (self.devnode, self.syspath, self.props["ID_PATH"])


# ---------------------------------------------------------------------------------------------
# The devices of a run: plugged in at the start (--device), added, removed and replugged while
# COMMAND runs (--control).

class Bed:
    def __init__(self, testbed, use_fifo, umockdev_sends_add):
        self.testbed = testbed
        self.root = testbed.get_root_dir()
        self.use_fifo = use_fifo
        self.umockdev_sends_add = umockdev_sends_add
        self.sender = UeventSender(self.root)
        self.devices = []      # every Device of the run (their TCP connections close at the end)
        self.present = []      # the devices plugged in now
        self.last_devnum = {}  # bus -> the last device number given out (never reused)
        self.nspecs = 0        # SPECs plugged in so far (--device, add): SPEC N defaults to EMU000N, 1-N
        self.ctx = None        # the ioctl worker thread's GMainContext: control commands run there
        self.disks = []        # Disks shown now
        self.disk_slots = 0    # slots given out (never reused, like device numbers)

    def plug(self, spec):
        """Add the device: sysfs entries and node, then the "add" uevents (device, interface)."""
        for dev in self.present:
            if dev.spec.portpath == spec.portpath:
                raise ValueError("port %s is taken by %s" % (spec.portpath, dev.spec.serial))
        devnum = self.last_devnum.get(spec.busnum, 1) + 1
        if devnum > 127:
            raise ValueError("bus %d has given out all its device numbers (2-127) in this run" % spec.busnum)
        syspath_len = len("/devices/pci0000:00/0000:00:14.0/usb%d/%s" % (spec.busnum, spec.portpath))
        size = 40 + len("ACTION=remove DEVPATH= SUBSYSTEM=usb SEQNUM=12345678901234567890 ") + syspath_len
        size += sum(len(("%s=%s" % item).encode()) + 1 for item in usb_properties(spec, devnum))
        if size > UEVENT_MAX:
            raise ValueError("the udev properties make a %d-byte uevent; libudev drops those over %d bytes"
                             % (size, UEVENT_MAX))
        self.last_devnum[spec.busnum] = devnum
        try:
            dev = Device(self, spec, devnum)
        except Exception:
            node = "%s/dev/bus/usb/%03d/%03d" % (self.root, spec.busnum, devnum)
            if os.path.lexists(node):
                os.unlink(node)
            raise
        self.devices.append(dev)
        self.present.append(dev)
        if not self.umockdev_sends_add:
            self.sender.send(dev.syspath, "add")
            self.sender.send(dev.iface_syspath, "add")
        return dev

    def rebooted(self, dev, waited=0):
        """A device told to reboot into its bootloader or fastbootd ended its session: as a real
        one, it leaves the bus once the host has read its answer (up to 2 s), and comes back on
        the same port with a new device number."""
        if dev.unplugged or dev not in self.present:
            return
        with dev.lock:
            answered = not dev.frames
        if not answered and waited < 2000:
            later = GLib.Timeout(20)
            later.set_callback(lambda *_: self.rebooted(dev, waited + 20) or False)
            later.attach(dev.ctx)
            return
        spec = dev.spec.replugged("")
        dev.unplug("(rebooting: %s)" % dev.last_command.decode(errors="replace"))
        new = self.plug(spec)
        log("%s: back after its reboot at %s as %s" % (new.spec.serial, new.spec.portpath, new.devnode))

    def unplugged(self, dev):
        """Device.unplug's last step: "remove" uevents (interface, device), then the entries go."""
        self.sender.send(dev.iface_syspath, "remove")
        self.sender.send(dev.syspath, "remove")
        # The interface first: removing only the parent leaves a dangling
        # /sys/bus/usb/devices/1-N:1.0 link behind (umockdev 0.17).
        self.testbed.remove_device(dev.iface_syspath)
        self.testbed.remove_device(dev.syspath)
        # umockdev 0.17 leaves /sys/dev/char/189:M behind (it unlinks the name read from the "dev"
        # attribute, newline included).
        link = "%s/sys/dev/char/189:%d" % (self.root, dev.minor)
        if os.path.islink(link):
            os.unlink(link)
        if dev in self.present:
            self.present.remove(dev)

    @staticmethod
    def describe(dev):
        return "port=%s busnum=%d devnum=%d devnode=%s syspath=%s" % (
            dev.spec.portpath, dev.spec.busnum, dev.devnum, dev.devnode, dev.syspath)

    def find(self, who, devices):
        found = [d for d in devices if who in (d.spec.serial, d.spec.portpath, "usb:" + d.spec.portpath)]
        if len(found) > 1 and devices is self.present:
            raise ValueError("%s matches several devices: %s" % (who, ", ".join(
                "%s at %s" % (d.spec.serial, d.spec.portpath) for d in found)))
        return found[-1] if found else None

    def command(self, line):
        """Run one control command (on the ioctl worker thread); return its reply line."""
        verb, rest = (line.split(None, 1) + [""])[:2]
        try:
            if verb == "add-disk":
                if any(d.devnode == rest.partition(",")[0] for d in self.disks):
                    raise ValueError("%s is shown already" % rest.partition(",")[0])
                self.disk_slots += 1
                disk = Disk(self, rest, self.disk_slots)
                self.disks.append(disk)
                if not self.umockdev_sends_add:
                    self.sender.send(disk.syspath, "add")
                log("%s: shown as a disk at %s" % (disk.devnode, disk.props["ID_PATH"]))
                return "ok add-disk %s" % disk.describe()
            if verb == "remove-disk":
                disk = next((d for d in self.disks if d.devnode == rest.strip()), None)
                if disk is None:
                    raise ValueError("no disk %s is shown" % rest.strip())
                self.sender.send(disk.syspath, "remove")
                self.testbed.remove_device(disk.syspath)
                # umockdev 0.17 leaves the block links behind, and asserts when they are made again.
                for link in ("/sys/block/" + disk.name, "/sys/class/block/" + disk.name,
                             "/sys/dev/block/%s:%s" % (disk.props["MAJOR"], disk.props["MINOR"])):
                    if os.path.islink(self.root + link):
                        os.unlink(self.root + link)
                self.disks.remove(disk)
                return "ok remove-disk %s" % disk.describe()
            if verb == "add":
                if not rest:
                    raise ValueError("add needs a SPEC")
                dev = self.plug(DeviceSpec(rest, self.nspecs, "add"))
                self.nspecs += 1
                log("%s: plugged in at %s as %s" % (dev.spec.serial, dev.spec.portpath, dev.devnode))
                return "ok add %s %s" % (dev.spec.serial, self.describe(dev))
            if verb in ("remove", "replug"):
                who, overrides = (rest.split(None, 1) + [""])[:2]
                if not who or (verb == "remove" and overrides):
                    raise ValueError("usage: remove SERIAL|PORT, replug SERIAL|PORT [KEY=VALUE,...]")
                dev = self.find(who, self.present)
                if verb == "remove":
                    if dev is None:
                        raise ValueError("no device %s is plugged in" % who)
                    dev.unplug("(control: remove)")
                    return "ok remove %s %s" % (dev.spec.serial, self.describe(dev))
                old = dev or self.find(who, self.devices)  # a replug also plugs an unplugged device back
                if old is None:
                    raise ValueError("no device %s in this run" % who)
                spec = old.spec.replugged(overrides)  # checked before the device goes away
                if dev is not None:
                    dev.unplug("(control: replug)")
                new = self.plug(spec)
                log("%s: plugged in again at %s as %s" % (new.spec.serial, new.spec.portpath, new.devnode))
                return "ok replug %s %s olddevnum=%d" % (new.spec.serial, self.describe(new), old.devnum)
            raise ValueError("unknown command (add SPEC | remove SERIAL|PORT | replug SERIAL|PORT [KEY=VALUE,...] | add-disk /dev/NODE[,prop.NAME=VALUE...] | remove-disk /dev/NODE)")
        except (ValueError, OSError, GLib.Error) as e:
            return "error %s: %s" % (line, e)

    def run_on_worker(self, fn, timeout=30):
        """Run fn() on the ioctl worker thread (where device state lives); return its result, or
        None after timeout seconds."""
        done, box = threading.Event(), []

        def cb(*_):
            try:
                box.append(fn())
            except Exception as e:  # never let an exception kill the worker loop
                box.append(e)
            done.set()
            return False
        src = GLib.Idle()
        src.set_priority(GLib.PRIORITY_DEFAULT)
        src.set_callback(cb)
        src.attach(self.ctx)
        return box[0] if done.wait(timeout) else None


def worker_context(testbed, root):
    """The test bed worker thread's GMainContext (umockdev does not expose it): a probe handler
    learns it when this process connects to the probe's ioctl socket."""
    probe = UMockdev.IoctlBase()
    found, ready = [], threading.Event()

    def connected(_handler, _client):
        found.append(GLib.MainContext.get_thread_default() or GLib.MainContext.default())
        ready.set()
    probe.connect("client-connected", connected)
    name = "/dev/flashctl-testbed-probe"
    testbed.attach_ioctl(name, probe)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(root + "/ioctl" + name)
        ready.wait(10)
    finally:
        sock.close()
    testbed.detach_ioctl(name)
    if not found:
        raise RuntimeError("cannot reach the test bed's worker thread")
    return found[0]


class ControlChannel:
    """--control PATH: a FIFO; each line written to it is a command, run one at a time in order;
    each command gets one reply line appended to PATH.ack once its effect is complete."""

    def __init__(self, path, bed):
        self.path, self.bed = path, bed
        self.created = False
        try:
            st = os.stat(path)
        except FileNotFoundError:
            os.mkfifo(path, 0o600)
            self.created = True
        else:
            if not stat.S_ISFIFO(st.st_mode):
                raise ValueError("--control %s: exists and is not a FIFO" % path)
        # Read-write: opening never blocks, and writers coming and going never make an EOF.
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.ack = os.open(path + ".ack", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.reply("ready")
        threading.Thread(target=self._loop, daemon=True, name="control").start()

    def reply(self, line):
        os.write(self.ack, (line + "\n").encode("utf-8", "replace"))

    def _loop(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if not line or line.startswith("#"):
                    continue
                result = self.bed.run_on_worker(lambda: self.bed.command(line))
                if result is None:
                    result = "error %s: timed out (the test bed's worker thread did not run it)" % line
                elif isinstance(result, Exception):
                    result = "error %s: %r" % (line, result)
                dbg("control: %s -> %s" % (line, result))
                self.reply(result)

    def close(self):
        if self.created:
            try:
                os.unlink(self.path)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------

def usage(msg=None):
    if msg:
        sys.stderr.write("fastboot_usb_testbed: %s\n" % msg)
    sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
    sys.exit(2)


def main(argv):
    global DEBUG
    if "--" not in argv:
        usage("missing -- COMMAND")
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    if not command:
        usage("missing COMMAND")
    specs, use_fifo, control = [], True, None
    i = 0
    while i < len(opts):
        o = opts[i]
        if o in ("--device", "--control") and i + 1 < len(opts):
            if o == "--device":
                specs.append(opts[i + 1])
            else:
                control = opts[i + 1]
            i += 2
            continue
        if o.startswith("--device="):
            specs.append(o[len("--device="):])
        elif o.startswith("--control="):
            control = o[len("--control="):]
        elif o == "--no-fifo":
            use_fifo = False
        elif o == "--debug":
            DEBUG = True
        elif o in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            usage("unknown option %s" % o)
        i += 1
    try:
        parsed = [DeviceSpec(text, n) for n, text in enumerate(specs)]
    except ValueError as e:
        usage(str(e))
    ports = [spec.portpath for spec in parsed]
    if len(set(ports)) != len(ports):
        usage("two --device SPECs have the same port")
    if control == "":
        usage("--control needs a PATH")

    # ~17 us instead of 70-80 us per usleep(0) in the preload; inherited by COMMAND.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass

    # Asked before the test bed exists (no UMOCKDEV_DIR yet: the real /sys), umockdev caches
    # "not in a mock environment", so add_from_string() sends no "add" uevent of its own: this
    # script sends all uevents (see UeventSender). Should umockdev still answer yes (a /sys that
    # is not sysfs), its own "add" uevents are kept and ours are not sent.
    umockdev_sends_add = UMockdev.in_mock_environment()
    testbed = UMockdev.Testbed.new()
    # Held until os._exit: the Testbed's finalizer would remove the root directory, which the
    # rmtree below already did, and umockdev aborts the process when it cannot (SIGTRAP).
    KEEP_ALIVE.append(testbed)
    root = testbed.get_root_dir()
    try:
        return run(testbed, root, parsed, use_fifo, control, command, umockdev_sends_add)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(testbed, root, parsed, use_fifo, control, command, umockdev_sends_add):
    bed = Bed(testbed, use_fifo, umockdev_sends_add)
    for spec in parsed:
        try:
            dev = bed.plug(spec)
        except ValueError as e:
            log("--device %s: %s" % (spec.text, e))
            return 2
        dbg("device %s at %s (%s) -> tcp %s:%d" % (spec.serial, dev.devnode, spec.portpath,
                                                   spec.host, spec.port))
    bed.nspecs = len(parsed)
    channel = None
    if control is not None:
        bed.ctx = worker_context(testbed, root)
        try:
            channel = ControlChannel(control, bed)
        except (ValueError, OSError) as e:
            log(str(e))
            return 2

    env = dict(os.environ)  # LD_PRELOAD already holds the preload library (see __main__)
    saved = env.pop(SAVED_ENV, None)
    if saved is not None:  # COMMAND gets the caller's malloc settings back
        for key, value in json.loads(saved).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
    if "libumockdev-preload" not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = PRELOAD + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    env["UMOCKDEV_DIR"] = root

    try:
        child = subprocess.Popen(command, env=env)
    except OSError as e:
        log("cannot run %s: %s" % (command[0], e))
        status = 127
    else:
        # The terminal's SIGINT/SIGQUIT reach COMMAND directly; SIGTERM/SIGHUP are passed on.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: child.send_signal(s))
        while True:
            try:
                rc = child.wait()  # waitpid() releases the GIL for the ioctl worker thread
                break
            except InterruptedError:
                continue
        status = rc if rc >= 0 else 128 - rc

    if channel is not None:
        channel.close()
    for dev in list(bed.devices):
        dev.drop_link()
    return status


PRELOAD = "libumockdev-preload.so.0"
KEEP_ALIVE = []
SAVED_ENV = "FASTBOOT_USB_TESTBED_SAVED_ENV"
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824",
              "MALLOC_TOP_PAD_": "67108864"}

if __name__ == "__main__":
    # This process runs under the preload too (as umockdev-wrapper would do). This script sends
    # the uevents itself (UeventSender); umockdev's own sender, which add_from_string() uses when
    # umockdev believes it runs in a mock environment (see main), looks devices up with libudev,
    # which must then see the test bed's /sys, or uevents fail with "No such device".
    if "libumockdev-preload" not in os.environ.get("LD_PRELOAD", ""):
        env = dict(os.environ)
        env["LD_PRELOAD"] = PRELOAD + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
        # Keep freed 1 MiB transfer buffers in the heap: with glibc's defaults every copy of a
        # large buffer (umockdev's and PyGObject's) gets fresh mmap()ed, page-faulting memory,
        # which halved the throughput of 1 MiB transfers. For this process only (see main).
        env[SAVED_ENV] = json.dumps({k: os.environ.get(k) for k in MALLOC_ENV})
        env.update(MALLOC_ENV)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)
    sys.stdout.flush()
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
