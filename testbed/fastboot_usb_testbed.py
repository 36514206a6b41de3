#!/usr/bin/python3
"""Emulated USB fastboot devices for running the real libusb (and AOSP fastboot) without hardware.

umockdev's preload library redirects /sys, /dev and udev into a test bed; this script adds USB
devices with a fastboot interface (class ff, subclass 42, protocol 03) to it and serves their
usbdevfs ioctls. Each device is a bridge to a fastboot-over-TCP device (`flashctl emulate`): every
bulk OUT transfer becomes one TCP frame and every frame from the device one bulk IN transfer, so
the emulated device's fastboot logic runs unchanged behind a real libusb.

    fastboot_usb_testbed.py --device tcp=127.0.0.1:5554[,serial=S][,port=1-1][,vid=18d1][,pid=4ee0]
                            [,unplug_after=BYTES] [--device ...] [--control] -- COMMAND [ARGS...]

COMMAND runs under the emulation and the script exits with its status. unplug_after unplugs the
device once that many bulk OUT bytes have arrived. With --control, lines on stdin control the bed
while COMMAND runs: "unplug SERIAL", "plug tcp=...,serial=...".

Run it with Debian's /usr/bin/python3 (it needs python3-gi and gir1.2-umockdev-1.0).
"""

import argparse
import ctypes
import errno
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

# ioctl numbers and struct layouts from <linux/usbdevice_fs.h> on x86_64, printed by a small C
# program (printf of each USBDEVFS_* macro, sizeof and offsetof of the structs); not typed by hand.
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
USBDEVFS_DISCONNECT = 0x5516
USBDEVFS_CONNECT = 0x5517
USBDEVFS_GET_CAPABILITIES = 0x8004551A
USBDEVFS_DISCONNECT_CLAIM = 0x8108551B
USBDEVFS_GET_SPEED = 0x551F

URB_SIZE = 56
URB_TYPE, URB_ENDPOINT, URB_STATUS, URB_BUFFER, URB_BUFFER_LENGTH, URB_ACTUAL_LENGTH = 0, 1, 4, 16, 24, 28
URB_TYPE_CONTROL, URB_TYPE_BULK = 2, 3
BULK_SIZE, BULK_EP, BULK_LEN, BULK_TIMEOUT, BULK_DATA = 24, 0, 4, 8, 16
CTRL_SIZE, CTRL_DATA = 24, 16

# Every capability libusb asks about, so that one libusb transfer is one URB.
CAPABILITIES = 0x1F

EP_IN, EP_OUT, MAX_PACKET = 0x81, 0x01, 512
MAX_FRAME = 256 << 20


def descriptors(vid, pid):
    device = struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, 0, 0, 0, 64, vid, pid, 0x0100, 1, 2, 3, 1)
    interface = struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 2, 0xFF, 0x42, 0x03, 0)
    ep_in = struct.pack("<BBBBHB", 7, 5, EP_IN, 2, MAX_PACKET, 0)
    ep_out = struct.pack("<BBBBHB", 7, 5, EP_OUT, 2, MAX_PACKET, 0)
    body = interface + ep_in + ep_out
    config = struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), 1, 1, 0, 0x80, 250) + body
    return device, config


def string_descriptor(text):
    encoded = text.encode("utf-16-le")
    return bytes([2 + len(encoded), 3]) + encoded


class Urb:
    __slots__ = ("iod", "buf", "endpoint", "kind", "length", "status", "actual", "payload")

    def __init__(self, iod, buf, endpoint, kind, length):
        self.iod, self.buf, self.endpoint, self.kind, self.length = iod, buf, endpoint, kind, length
        self.status, self.actual, self.payload = 0, 0, None


class EmulatedDevice(UMockdev.IoctlBase):
    """One USB fastboot device: usbdevfs ioctls in, fastboot-over-TCP frames out."""

    def __init__(self, bed, spec, number):
        super().__init__()
        self.bed = bed
        self.host, port = spec["tcp"].rsplit(":", 1)
        self.port = int(port)
        self.serial = spec.get("serial", "EMU%04d" % number)
        self.port_path = spec.get("port", "1-%d" % number)
        self.vid = int(spec.get("vid", "18d1"), 16)
        self.pid = int(spec.get("pid", "4ee0"), 16)
        self.unplug_after = int(spec["unplug_after"]) if "unplug_after" in spec else None
        self.devnum = number + 1
        self.devnode = "/dev/bus/usb/001/%03d" % self.devnum
        self.syspath = None
        self.lock = threading.Lock()
        self.gone = False
        self.sock = None
        self.owner = None
        self.out_bytes = 0
        self.frames = []  # device answers waiting for an IN transfer
        self.pending_in = []  # IN URBs waiting for an answer
        self.reapable = []  # finished URBs, in completion order
        self.sync_read = None  # (client, data, length, deadline) of a synchronous bulk IN

    # --- sysfs and udev -------------------------------------------------------------------------

    def description(self):
        device, config = descriptors(self.vid, self.pid)
        raw = (device + config).hex().upper()  # umockdev only parses upper-case hex
        base = "/devices/pci0000:00/0000:00:14.0/usb1/" + self.port_path
        attributes = {
            "busnum": "1", "devnum": str(self.devnum), "idVendor": "%04x" % self.vid,
            "idProduct": "%04x" % self.pid, "bConfigurationValue": "1", "bNumConfigurations": "1",
            "bNumInterfaces": " 1", "bDeviceClass": "00", "speed": "480", "serial": self.serial,
            "product": "Emulated fastboot device", "manufacturer": "flashctl", "devpath": self.port_path[2:],
            "dev": "189:%d" % (self.devnum - 1), "bcdDevice": "0100", "version": " 2.00", "maxchild": "0",
        }
        lines = ["P: " + base, "N: bus/usb/001/%03d=%s" % (self.devnum, raw)]
        lines += ["E: " + entry for entry in (
            "DEVNAME=" + self.devnode, "DEVTYPE=usb_device", "DRIVER=usb", "SUBSYSTEM=usb",
            "PRODUCT=%x/%x/100" % (self.vid, self.pid), "TYPE=0/0/0", "BUSNUM=001",
            "DEVNUM=%03d" % self.devnum, "MAJOR=189", "MINOR=%d" % (self.devnum - 1),
            "ID_SERIAL_SHORT=" + self.serial, "ID_USB_INTERFACES=:ff4203:")]
        lines += ["A: %s=%s\\n" % item for item in attributes.items()]
        lines.append("H: descriptors=" + raw)
        interface = [
            "P: %s/%s:1.0" % (base, self.port_path), "E: DEVTYPE=usb_interface", "E: SUBSYSTEM=usb",
            "E: INTERFACE=255/66/3", "A: bInterfaceClass=ff\\n", "A: bInterfaceSubClass=42\\n",
            "A: bInterfaceProtocol=03\\n", "A: bInterfaceNumber=00\\n", "A: bNumEndpoints=02\\n",
        ]
        return "\n".join(lines) + "\n\n" + "\n".join(interface) + "\n"

    def plug(self):
        self.bed.attach_ioctl(self.devnode, self)
        if not self.bed.add_from_string(self.description()):
            raise SystemExit("umockdev refused the device description of %s" % self.serial)
        self.syspath = "/sys/devices/pci0000:00/0000:00:14.0/usb1/" + self.port_path
        return self

    def remove_from_bed(self):
        interface = "%s/%s:1.0" % (self.syspath, self.port_path)
        self.bed.uevent(interface, "remove")
        self.bed.uevent(self.syspath, "remove")
        self.bed.remove_device(interface)
        self.bed.remove_device(self.syspath)

    # --- the TCP side ---------------------------------------------------------------------------

    def connect(self):
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"FB01")
        if self._recv_exactly(sock, 4)[:2] != b"FB":
            raise OSError("not a fastboot-over-TCP device at %s:%d" % (self.host, self.port))
        sock.settimeout(None)
        self.sock = sock
        threading.Thread(target=self._reader, args=(sock,), daemon=True).start()

    def disconnect(self):
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.frames.clear()

    @staticmethod
    def _recv_exactly(sock, count):
        chunks = []
        while count:
            chunk = sock.recv(count)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def _reader(self, sock):
        try:
            while True:
                (length,) = struct.unpack(">Q", self._recv_exactly(sock, 8))
                if length > MAX_FRAME:
                    break
                frame = self._recv_exactly(sock, length) if length else b""
                with self.lock:
                    if self.sock is not sock:
                        return
                    self._deliver(frame)
        except (OSError, EOFError):
            pass

    def _deliver(self, frame):
        if self.sync_read is not None:
            client, data, length, _ = self.sync_read
            self.sync_read = None
            data.update(0, frame[:length])
            client.complete(min(len(frame), length), 0)
        elif self.pending_in:
            urb = self.pending_in.pop(0)
            urb.payload = frame[: urb.length]
            urb.actual = len(urb.payload)
            self.reapable.append(urb)
        else:
            self.frames.append(frame)

    def send_frame(self, payload):
        if self.sock is None:
            self.connect()
        self.sock.sendall(struct.pack(">Q", len(payload)) + payload)
        self.out_bytes += len(payload)
        if self.unplug_after is not None and self.out_bytes >= self.unplug_after:
            self.unplug()

    # --- unplug ---------------------------------------------------------------------------------

    def unplug(self):
        """From now on every ioctl fails with ENODEV, as the kernel does for a vanished device."""
        if self.gone:
            return
        self.gone = True
        self.disconnect()
        if self.sync_read is not None:
            self.sync_read[0].complete(-1, errno.ENODEV)
            self.sync_read = None
        self.bed_actions.put(self.remove_from_bed)

    # --- ioctls ---------------------------------------------------------------------------------

    def do_client_vanished(self, client):
        with self.lock:
            if self.owner is client:
                self.owner = None
                self.disconnect()

    def do_handle_ioctl(self, client):
        request = client.get_request()
        arg = client.get_arg()
        with self.lock:
            if self.gone:
                client.complete(-1, errno.ENODEV)
                return True
            try:
                result = self._ioctl(client, request, arg)
            except (OSError, EOFError):
                self.disconnect()
                result = (-1, errno.EPIPE)
        if result is not None:
            client.complete(*result)
        return True

    def _ioctl(self, client, request, arg):
        if request in (USBDEVFS_REAPURBNDELAY, USBDEVFS_REAPURB):
            return self._reap(arg)
        if request == USBDEVFS_SUBMITURB:
            return self._submit(arg)
        if request == USBDEVFS_DISCARDURB:
            return self._discard(arg)
        if request == USBDEVFS_BULK:
            return self._sync_bulk(client, arg)
        if request == USBDEVFS_CONTROL:
            control = arg.resolve(0, CTRL_SIZE)
            setup = bytes(control.retrieve())[:8]
            answer = self._control(setup)
            if answer is None:
                return (-1, errno.EPIPE)
            if answer:
                control.resolve(CTRL_DATA, len(answer)).update(0, answer)
            return (len(answer), 0)
        if request == USBDEVFS_GET_CAPABILITIES:
            arg.resolve(0, 4).update(0, struct.pack("<I", CAPABILITIES))
            return (0, 0)
        if request == USBDEVFS_CLAIMINTERFACE:
            if self.owner is not client:
                self.disconnect()
                self.owner = client
            return (0, 0)
        if request == USBDEVFS_RELEASEINTERFACE:
            if self.owner is client:
                self.owner = None
                self.disconnect()
            return (0, 0)
        if request == USBDEVFS_GETDRIVER:
            return (-1, errno.ENODATA)
        if request == USBDEVFS_GET_SPEED:
            return (3, 0)  # USB_SPEED_HIGH
        if request in (USBDEVFS_SETINTERFACE, USBDEVFS_SETCONFIGURATION, USBDEVFS_CLEAR_HALT,
                       USBDEVFS_RESETEP, USBDEVFS_RESET, USBDEVFS_DISCONNECT_CLAIM, USBDEVFS_IOCTL,
                       USBDEVFS_DISCONNECT, USBDEVFS_CONNECT):
            return (0, 0)
        return (-1, errno.ENOTTY)

    def _submit(self, arg):
        urb_iod = arg.resolve(0, URB_SIZE)
        header = bytes(urb_iod.retrieve())
        kind, endpoint = header[URB_TYPE], header[URB_ENDPOINT]
        (length,) = struct.unpack_from("<i", header, URB_BUFFER_LENGTH)
        if kind == URB_TYPE_CONTROL:
            buf = urb_iod.resolve(URB_BUFFER, length)
            urb = Urb(urb_iod, buf, endpoint, kind, length)
            answer = self._control(bytes(buf.retrieve())[:8])
            if answer is None:
                urb.status = -errno.EPIPE
            else:
                urb.payload = answer
                urb.actual = len(answer)
            self.reapable.append(urb)
            return (0, 0)
        if kind != URB_TYPE_BULK or endpoint not in (EP_IN, EP_OUT):
            return (-1, errno.EINVAL)
        if endpoint == EP_OUT:
            buf = urb_iod.resolve(URB_BUFFER, length) if length else None
            payload = bytes(buf.retrieve()) if buf is not None else b""
            urb = Urb(urb_iod, None, endpoint, kind, length)
            self.send_frame(payload)
            if self.gone:
                return (-1, errno.ENODEV)
            urb.actual = length
            self.reapable.append(urb)
            return (0, 0)
        # A bulk IN buffer is resolved without caring what it held; the answer is written at reap.
        urb = Urb(urb_iod, urb_iod.resolve(URB_BUFFER, length), endpoint, kind, length)
        if self.frames:
            urb.payload = self.frames.pop(0)[:length]
            urb.actual = len(urb.payload)
            self.reapable.append(urb)
        else:
            self.pending_in.append(urb)
        return (0, 0)

    def _reap(self, arg):
        if not self.reapable:
            return (-1, errno.EAGAIN)
        urb = self.reapable.pop(0)
        if urb.payload:
            offset = 8 if urb.kind == URB_TYPE_CONTROL else 0
            urb.buf.update(offset, urb.payload)
        urb.iod.update(URB_STATUS, struct.pack("<i", urb.status))
        actual = urb.actual
        urb.iod.update(URB_ACTUAL_LENGTH, struct.pack("<i", actual))
        arg.resolve(0, 8).set_ptr(0, urb.iod)
        return (0, 0)

    def _discard(self, arg):
        (address,) = struct.unpack("<Q", bytes(arg.retrieve())[:8])
        for urb in self.pending_in:
            if urb.iod.client_addr == address:
                self.pending_in.remove(urb)
                urb.status = -errno.ENOENT
                urb.actual = 0
                self.reapable.append(urb)
                return (0, 0)
        return (-1, errno.EINVAL)

    def _sync_bulk(self, client, arg):
        bulk = arg.resolve(0, BULK_SIZE)
        endpoint, length, timeout = struct.unpack_from("<III", bytes(bulk.retrieve()), 0)
        if endpoint == EP_OUT:
            data = bulk.resolve(BULK_DATA, length) if length else None
            self.send_frame(bytes(data.retrieve()) if data is not None else b"")
            return (-1, errno.ENODEV) if self.gone else (length, 0)
        if endpoint != EP_IN:
            return (-1, errno.EINVAL)
        data = bulk.resolve(BULK_DATA, length)
        if self.frames:
            frame = self.frames.pop(0)[:length]
            data.update(0, frame)
            return (len(frame), 0)
        deadline = time.monotonic() + timeout / 1000.0 if timeout else None
        self.sync_read = (client, data, length, deadline)
        self.bed_actions.put(lambda: None)  # wakes the main loop, which enforces the deadline
        return None

    def expire_sync_read(self, now):
        with self.lock:
            if self.sync_read is not None and self.sync_read[3] is not None and now >= self.sync_read[3]:
                self.sync_read[0].complete(-1, errno.ETIMEDOUT)
                self.sync_read = None

    def _control(self, setup):
        request_type, request, value, index, length = struct.unpack("<BBHHH", setup)
        if request_type != 0x80 or request != 6:
            return b"" if request_type & 0x80 == 0 else None
        kind, number = value >> 8, value & 0xFF
        device, config = descriptors(self.vid, self.pid)
        if kind == 1:
            answer = device
        elif kind == 2:
            answer = config
        elif kind == 3:
            strings = {0: bytes([4, 3, 0x09, 0x04]), 1: string_descriptor("flashctl"),
                       2: string_descriptor("Emulated fastboot device"), 3: string_descriptor(self.serial)}
            if number not in strings:
                return None
            answer = strings[number]
        else:
            return None
        return answer[:length]


def parse_spec(text):
    spec = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        spec[key.strip()] = value.strip()
    if "tcp" not in spec:
        raise SystemExit("--device needs tcp=HOST:PORT: %r" % text)
    return spec


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="append", default=[], help="tcp=HOST:PORT[,serial=..][,port=1-N][,vid=..][,pid=..][,unplug_after=BYTES]")
    parser.add_argument("--control", action="store_true", help="read 'unplug SERIAL' / 'plug SPEC' lines on stdin")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("no COMMAND given")

    # The preload sleeps after every emulated call; with 1 us of timer slack that costs far less.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK

    bed = UMockdev.Testbed.new()
    os.makedirs(os.path.join(bed.get_root_dir(), "dev", "bus", "usb"), exist_ok=True)
    actions = queue.Queue()
    devices = []

    def plug(text):
        device = EmulatedDevice(bed, parse_spec(text), len(devices) + 1)
        device.bed_actions = actions
        devices.append(device.plug())
        return device

    for text in options.device:
        plug(text)

    environment = dict(os.environ)
    preload = "libumockdev-preload.so.0"
    environment["LD_PRELOAD"] = preload + (":" + environment["LD_PRELOAD"] if environment.get("LD_PRELOAD") else "")
    environment["UMOCKDEV_DIR"] = bed.get_root_dir()
    child = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL if options.control else None)

    if options.control:
        def control():
            for line in sys.stdin:
                words = line.split()
                if len(words) == 2 and words[0] == "unplug":
                    target = [d for d in devices if d.serial == words[1] and not d.gone]
                    for device in target:
                        with device.lock:
                            device.unplug()
                    print("ok" if target else "error: no device %s" % words[1], file=sys.stderr, flush=True)
                elif len(words) == 2 and words[0] == "plug":
                    actions.put(lambda spec=words[1]: plug(spec))
                    print("ok", file=sys.stderr, flush=True)
                elif words:
                    print("error: unknown control line %r" % line.strip(), file=sys.stderr, flush=True)
        threading.Thread(target=control, daemon=True).start()

    while child.poll() is None:
        try:
            action = actions.get(timeout=0.05)
            action()
        except queue.Empty:
            pass
        except Exception as error:  # the command under test must never lose its bed
            print("testbed: %s" % error, file=sys.stderr, flush=True)
        now = time.monotonic()
        for device in devices:
            device.expire_sync_read(now)

    for device in devices:
        with device.lock:
            device.disconnect()
    sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)


if __name__ == "__main__":
    main()
