#!/usr/bin/python3
"""Emulated USB fastboot devices over the real libusb, bridged to fastboot-over-TCP devices.

    fastboot_usb_testbed.py [--device SPEC]... [--no-fifo] [--debug] -- COMMAND [ARGS...]

    SPEC: tcp=HOST:PORT[,serial=EMU000N][,port=1-N][,vid=18d1][,pid=4ee0][,unplug_after=BYTES]

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

COMMAND inherits stdin/stdout/stderr; the script exits with COMMAND's exit status (128+N when
killed by signal N). Run it with Debian's /usr/bin/python3 (python3-gi, gir1.2-umockdev-1.0).
See testbed/README.md and /work/shared/TESTING.md.
"""

import collections
import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
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


def log(msg):
    sys.stderr.write("fastboot_usb_testbed: %s\n" % msg)
    sys.stderr.flush()


def dbg(msg):
    if DEBUG:
        log(msg)


# ---------------------------------------------------------------------------------------------
# Device description

class DeviceSpec:
    def __init__(self, text, index):
        self.host, self.port = None, None
        self.serial = "EMU%04d" % (index + 1)
        self.portpath = "1-%d" % (index + 1)
        self.vid, self.pid = 0x18D1, 0x4EE0
        self.unplug_after = None
        for item in filter(None, text.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError("--device %s: expected KEY=VALUE, got %r" % (text, item))
            if key == "tcp":
                if value.startswith("tcp:"):
                    value = value[4:]
                host, _, port = value.rpartition(":")
                self.host, self.port = host or "127.0.0.1", int(port)
            elif key == "serial":
                self.serial = value
            elif key == "port":
                bus, dash, rest = value.partition("-")
                if not dash or not bus.isdigit() or not all(p.isdigit() for p in rest.split(".")):
                    raise ValueError("--device %s: port must look like 1-2 or 1-2.3" % text)
                self.portpath = value
            elif key == "vid":
                self.vid = int(value, 16)
            elif key == "pid":
                self.pid = int(value, 16)
            elif key == "unplug_after":
                mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(value[-1:].upper(), 1)
                self.unplug_after = int(value[:-1] if mult > 1 else value) * mult
            else:
                raise ValueError("--device %s: unknown key %r" % (text, key))
        if self.port is None:
            raise ValueError("--device %s: tcp=HOST:PORT is required" % text)
        self.busnum = int(self.portpath.split("-")[0])


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
        self.completed = collections.deque()    # reapable URBs, in completion order
        self.blocking_reap = None               # IoctlData of a waiting USBDEVFS_REAPURB
        self.sync_in = None                     # (IoctlData bulk struct, length, timeout source)
        self.read_pos = 0                       # read() position on the node (FIFO mode)
        self.gone = False


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
    def __init__(self, testbed, spec, devnum, use_fifo):
        self.tb = testbed
        self.spec = spec
        self.devnum = devnum
        self.desc = Descriptors(spec)
        self.devnode = "/dev/bus/usb/%03d/%03d" % (spec.busnum, devnum)
        host = "/devices/pci0000:00/0000:00:14.0/usb%d" % spec.busnum
        self.syspath = "/sys%s/%s" % (host, spec.portpath)
        self.iface_syspath = "%s/%s:1.0" % (self.syspath, spec.portpath)
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

        # The handler must be attached before the device is added.
        self.handler = Handler(self)
        testbed.attach_ioctl(self.devnode, self.handler)
        hexdesc = self.desc.raw.hex().upper()
        minor = (spec.busnum - 1) * 128 + devnum - 1
        record = "P: %s/%s\n" % (host, spec.portpath)
        record += "N: %s=%s\n" % (self.devnode[5:], hexdesc)
        record += "E: DEVNAME=%s\nE: DEVTYPE=usb_device\nE: SUBSYSTEM=usb\n" % self.devnode
        record += "E: BUSNUM=%03d\nE: DEVNUM=%03d\nE: MAJOR=189\nE: MINOR=%d\n" % (spec.busnum, devnum, minor)
        record += "E: PRODUCT=%x/%x/100\nE: TYPE=0/0/0\nE: ID_SERIAL_SHORT=%s\n" % (spec.vid, spec.pid, spec.serial)
        record += attr_lines([
            ("busnum", "%d" % spec.busnum), ("devnum", "%d" % devnum),
            ("devpath", spec.portpath.partition("-")[2]),
            ("idVendor", "%04x" % spec.vid), ("idProduct", "%04x" % spec.pid),
            ("bcdDevice", "0100"), ("bDeviceClass", "00"), ("bDeviceSubClass", "00"),
            ("bDeviceProtocol", "00"), ("bMaxPacketSize0", "64"), ("bNumConfigurations", "1"),
            ("bConfigurationValue", "1"), ("bNumInterfaces", " 1"), ("bmAttributes", "80"),
            ("bMaxPower", "500mA"), ("version", " 2.00"), ("maxchild", "0"),
            ("speed", "480"), ("serial", spec.serial), ("product", "Emulated fastboot device"),
            ("manufacturer", "flashctl testbed"), ("dev", "189:%d" % minor)])
        record += "H: descriptors=%s\n\n" % hexdesc
        record += "P: %s/%s/%s:1.0\n" % (host, spec.portpath, spec.portpath)
        record += "E: DEVTYPE=usb_interface\nE: SUBSYSTEM=usb\nE: INTERFACE=255/66/3\n"
        record += "E: PRODUCT=%x/%x/100\nE: TYPE=0/0/0\n" % (spec.vid, spec.pid)
        record += attr_lines([
            ("bInterfaceNumber", "00"), ("bAlternateSetting", " 0"), ("bNumEndpoints", "02"),
            ("bInterfaceClass", "ff"), ("bInterfaceSubClass", "42"), ("bInterfaceProtocol", "03")])
        record += "\n"
        testbed.add_from_string(record)
        if use_fifo:
            self._make_fifo()

    # -- FIFO readiness: the node is a FIFO of one page; one byte in it = not writable =
    # -- libusb's poll(POLLOUT) sleeps. Empty = writable = something to reap.
    def _make_fifo(self):
        path = self.tb.get_root_dir() + self.devnode
        os.unlink(path)
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
        if st.gone:
            return
        if self.unplugged and error is not None:
            urb.status = -ENODEV
        elif error is not None:
            log("%s: TCP send failed: %s" % (self.spec.serial, error))
            urb.status = -EPROTO
        else:
            urb.actual = length
        self.out_urb_done(st, urb)

    def sync_out_sent(self, st, length, error):
        if st.gone:
            return
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

    def unplug(self):
        if self.unplugged:
            return
        self.unplugged = True  # before any uevent
        log("%s: unplugged after %d bulk OUT bytes" % (self.spec.serial, self.out_bytes))
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
        self.tb.uevent(self.iface_syspath, "remove")
        self.tb.uevent(self.syspath, "remove")
        # The interface first: removing only the parent leaves a dangling
        # /sys/bus/usb/devices/1-N:1.0 link behind (umockdev 0.17).
        self.tb.remove_device(self.iface_syspath)
        self.tb.remove_device(self.syspath)


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
            for urb in st.pending_in:
                if urb.addr == addr:
                    st.pending_in.remove(urb)
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
                                return (0, 0)  # completes when the slow device has taken it
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
            try:
                if not dev.link.send(data, lambda error: dev.sync_out_sent(st, length, error)):
                    return None  # completes when the slow device has taken it
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
    specs, use_fifo = [], True
    i = 0
    while i < len(opts):
        o = opts[i]
        if o == "--device" and i + 1 < len(opts):
            specs.append(opts[i + 1])
            i += 2
            continue
        if o.startswith("--device="):
            specs.append(o[len("--device="):])
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

    # ~17 us instead of 70-80 us per usleep(0) in the preload; inherited by COMMAND.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass

    testbed = UMockdev.Testbed.new()
    root = testbed.get_root_dir()
    try:
        return run(testbed, root, parsed, use_fifo, command)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(testbed, root, parsed, use_fifo, command):
    devices, devnums = [], {}
    for spec in parsed:
        devnums[spec.busnum] = devnums.get(spec.busnum, 1) + 1
        devices.append(Device(testbed, spec, devnums[spec.busnum], use_fifo))
        dbg("device %s at %s (%s) -> tcp %s:%d" % (spec.serial, devices[-1].devnode, spec.portpath,
                                                   spec.host, spec.port))

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

    for dev in devices:
        dev.drop_link()
    return status


PRELOAD = "libumockdev-preload.so.0"
SAVED_ENV = "FASTBOOT_USB_TESTBED_SAVED_ENV"
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824",
              "MALLOC_TOP_PAD_": "67108864"}

if __name__ == "__main__":
    # This process runs under the preload too (as umockdev-wrapper would do): the Testbed's
    # uevent sender looks devices up with libudev, which must see the test bed's /sys, or
    # remove/add uevents fail with "uevent_sender_send: No such device".
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
