#!/usr/bin/python3
"""Hot-plugging in the USB test bed, end to end: fastboot_usb_testbed.py --control, libudev
monitors and enumeration (testbed/udev_watch.c), and libusb (flashctl) on hot-added devices.

    testbed/test_hotplug.py [--flashctl PATH] [--keep]

Needs gcc and libudev-dev (udev_watch is built into a temporary directory), the test bed's
packages (see README.md) and a built flashctl (default .build/debug/flashctl; it is not built
here). Exits 0 when every check passed; on a failure it prints what it saw and exits 1.

Phase 1 (the control protocol): a test bed starts with EMU0001 (prop.FLASHCTL_PROFILE=lab-bench);
COMMAND is a small shell script that runs udev_watch in the background and, when told through a
FIFO, other commands (flashctl). The test adds EMU0003 at port 1-3 with
prop.FLASHCTL_PROFILE=pixel-factory and EMU0004 at 1-4 without a profile, lists and flashes the
hot-added EMU0003 with flashctl (the bytes must land in the TCP device's directory), replugs
EMU0003 (new device number, same port, same profile), flashes it again, removes EMU0004, and
checks that udev_watch enumerated exactly EMU0001 and then saw exactly add 1-3, add 1-4,
remove 1-3, add 1-3, remove 1-4 with the right serials, device numbers and properties; and that
`udev_watch --list` run inside the test bed (udev_enumerate) finds the hot-added devices with
their properties after the adds and after the replug and remove.

Phase 2 (monitors umockdev alone would lose or choke on): two udev_watch processes whose
monitors have the same fd number (umockdev names the socket after it, so the second takes the
name over) and the second one stopped (SIGSTOP: its socket queue fills up, which makes umockdev's
own uevent sender abort). After 8 replugs (16 events) and SIGCONT both must have every event,
in order, and the test bed must have answered every command.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTBED = os.path.join(HERE, "fastboot_usb_testbed.py")

RUNNER = r"""#!/bin/sh
# COMMAND of the test bed: udev_watch in the background, then what the test writes to run.fifo,
# one shell command a line, each one's output in runN.out/runN.err and "N STATUS" in run.done.
W=$1
"$W/udev_watch" > "$W/watch1.jsonl" 2> "$W/watch1.err" &
echo $! > "$W/watch1.pid"
if [ "$2" = two ]; then
    # Wait until the first monitor is bound, so that the second one takes its socket name over.
    while ! grep -q '"ready"' "$W/watch1.jsonl" 2>/dev/null; do sleep 0.02; done
    "$W/udev_watch" > "$W/watch2.jsonl" 2> "$W/watch2.err" &
    echo $! > "$W/watch2.pid"
fi
echo "$UMOCKDEV_DIR" > "$W/umockdev_dir"
exec 3<> "$W/run.fifo"
n=0
while IFS= read -r cmd <&3; do
    [ "$cmd" = exit ] && break
    n=$((n + 1))
    sh -c "$cmd" > "$W/run$n.out" 2> "$W/run$n.err"
    echo "$n $?" >> "$W/run.done"
done
for f in "$W"/watch*.pid; do kill -CONT "$(cat "$f")"; kill "$(cat "$f")"; done
wait
"""


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def read_lines(path):
    """The complete lines of a file (a line is complete once its newline is there)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").split("\n")[:-1]


def wait_for(what, fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure("timed out waiting for " + what)
        time.sleep(0.02)


class Emulator:
    def __init__(self, flashctl, work, name):
        self.dir = os.path.join(work, name)
        self.log = os.path.join(work, name + ".log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([flashctl, "emulate", "--tcp", "0", "--dir", self.dir],
                                         stdout=out, stderr=subprocess.STDOUT)

        def port():
            for line in read_lines(self.log):
                if " on tcp:" in line:
                    return int(line.split(" on tcp:")[1].split(",")[0].split()[0].rsplit(":", 1)[1])
            check(self.proc.poll() is None, "flashctl emulate ended: %s" % read_lines(self.log))
            return None
        self.port = wait_for("flashctl emulate to listen", port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Bed:
    """A running test bed with the runner script as COMMAND."""

    def __init__(self, work, devices, mode="one"):
        self.work = work
        self.ctl = os.path.join(work, "ctl")
        self.ack = self.ctl + ".ack"
        os.mkfifo(os.path.join(work, "run.fifo"))
        runner = os.path.join(work, "runner.sh")
        with open(runner, "w") as f:
            f.write(RUNNER)
        args = [TESTBED, "--control", self.ctl]
        for spec in devices:
            args += ["--device", spec]
        args += ["--", "sh", runner, work, mode]
        self.err = os.path.join(work, "testbed.err")
        with open(self.err, "wb") as err:
            # A process group of its own: kill() ends COMMAND and udev_watch with it.
            self.proc = subprocess.Popen(args, stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("the control channel", lambda: read_lines(self.ack)[:1] == ["ready"])
        self.ctl_fd = os.open(self.ctl, os.O_WRONLY)
        self.run_fd = os.open(os.path.join(work, "run.fifo"), os.O_RDWR)  # never blocks
        self.nruns = 0
        self.nacks = 1

    def control(self, line, timeout=20):
        os.write(self.ctl_fd, (line + "\n").encode())
        self.nacks += 1
        def replies():
            acks = read_lines(self.ack)
            return acks if len(acks) >= self.nacks else None
        acks = wait_for("the reply to %r" % line, replies, timeout)
        check(len(acks) == self.nacks, "one reply per command: %s" % acks)
        return acks[-1]

    def run(self, command, timeout=60):
        """Run a shell command inside the test bed (as part of COMMAND); (status, stdout, stderr)."""
        os.write(self.run_fd, (command + "\n").encode())
        self.nruns += 1
        n = self.nruns
        done = os.path.join(self.work, "run.done")
        wait_for("%r to finish" % command, lambda: len(read_lines(done)) >= n, timeout)
        status = int(read_lines(done)[n - 1].split()[1])
        with open(os.path.join(self.work, "run%d.out" % n)) as f:
            out = f.read()
        with open(os.path.join(self.work, "run%d.err" % n)) as f:
            err = f.read()
        return status, out, err

    def finish(self, timeout=20):
        os.write(self.run_fd, b"exit\n")
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure("the test bed did not end after COMMAND was told to exit")

    def kill(self):
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def log(self):
        with open(self.err, errors="replace") as f:
            return f.read()


def events(path):
    return [json.loads(line) for line in read_lines(path)]


def monitor_events(path):
    return [e for e in events(path) if e["event"] == "monitor"]


def usb_devices(out):
    devs = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {d["serial"]: d.get("portPath") for d in devs if d.get("portPath")}


def flash(bed, emulator, serial, data, work, name):
    image = os.path.join(work, name)
    with open(image, "wb") as f:
        f.write(data)
    flashctl = bed.flashctl
    status, out, err = bed.run("%s flash --device %s %s --partition boot --json" % (flashctl, serial, image))
    check(status == 0, "flashctl flash %s: status %d\n%s%s" % (serial, status, out, err))
    check('"flash_completed"' in out, "no flash_completed:\n" + out)
    with open(os.path.join(emulator.dir, "boot.img"), "rb") as f:
        written = f.read()
    check(written == data, "%s/boot.img holds %d bytes, not the %d flashed" % (emulator.dir, len(written), len(data)))


def expect_event(e, action, sysname, serial, devnum, profile):
    what = "%s %s: %s" % (action, sysname, json.dumps(e))
    check(e["action"] == action and e["sysname"] == sysname, "expected " + what)
    check(e["subsystem"] == "usb" and e["devtype"] == "usb_device", "SUBSYSTEM/DEVTYPE in " + what)
    check(e["syspath"] == "/sys/devices/pci0000:00/0000:00:14.0/usb1/" + sysname, "syspath in " + what)
    check(e["busnum"] == "001" and e["devnum"] == "%03d" % devnum, "BUSNUM/DEVNUM %03d in %s" % (devnum, what))
    check(e["devnode"] == "/dev/bus/usb/001/%03d" % devnum, "devnode in " + what)
    check(e["serial"] == serial, "ID_SERIAL_SHORT in " + what)
    check(e["id_serial"] == "flashctl_testbed_Emulated_fastboot_device_" + serial, "ID_SERIAL in " + what)
    check(e["props"] == {"FLASHCTL_PROFILE": profile}, "FLASHCTL_PROFILE %r in %s" % (profile, what))
    check(e["initialized"] is True, "a device from a udev monitor is initialized: " + what)


def check_enumeration(bed, work, want):
    """udev_watch --list run inside the test bed: the usb_device devices udev_enumerate finds."""
    status, out, err = bed.run(os.path.join(work, "udev_watch") + " --list")
    check(status == 0, "udev_watch --list: %d %s" % (status, err))
    present = [json.loads(line) for line in out.splitlines() if '"present"' in line]
    got = sorted((e["sysname"], e["serial"], int(e["devnum"]), e["props"]["FLASHCTL_PROFILE"]) for e in present)
    check(got == sorted(want), "udev_enumerate: %s, wanted %s" % (got, sorted(want)))
    for e in present:
        check(e["serial_attr"] == e["serial"] and e["devtype"] == "usb_device"
              and e["devnode"] == "/dev/bus/usb/001/%s" % e["devnum"], "enumerated: %s" % json.dumps(e))


def ack_devnum(reply, key="devnum"):
    return int(reply.split(" %s=" % key)[1].split()[0])


def phase1(work, flashctl, watch):
    emus = {s: Emulator(flashctl, work, s) for s in ("EMU0001", "EMU0003", "EMU0004")}
    bed = None
    try:
        shutil.copy(watch, os.path.join(work, "udev_watch"))
        bed = Bed(work, ["tcp=127.0.0.1:%d,serial=EMU0001,prop.FLASHCTL_PROFILE=lab-bench" % emus["EMU0001"].port])
        bed.flashctl = flashctl
        watch1 = os.path.join(work, "watch1.jsonl")
        wait_for("udev_watch to be ready", lambda: any(e["event"] == "ready" for e in events(watch1)))
        present = [e for e in events(watch1) if e["event"] == "present"]
        check(len(present) == 1 and present[0]["sysname"] == "1-1" and present[0]["serial"] == "EMU0001"
              and present[0]["serial_attr"] == "EMU0001" and present[0]["devnum"] == "002"
              and present[0]["props"] == {"FLASHCTL_PROFILE": "lab-bench"},
              "enumeration must show EMU0001 at 1-1 with its profile: %s" % present)
        print("ok: enumerated EMU0001 (1-1, devnum 002, FLASHCTL_PROFILE=lab-bench)")

        reply = bed.control("add tcp=127.0.0.1:%d,serial=EMU0003,port=1-3,prop.FLASHCTL_PROFILE=pixel-factory"
                            % emus["EMU0003"].port)
        check(reply.startswith("ok add EMU0003 port=1-3 busnum=1 "), reply)
        dev3 = ack_devnum(reply)
        reply = bed.control("add tcp=127.0.0.1:%d,serial=EMU0004,port=1-4" % emus["EMU0004"].port)
        check(reply.startswith("ok add EMU0004 port=1-4 busnum=1 "), reply)
        dev4 = ack_devnum(reply)
        check(len({2, dev3, dev4}) == 3, "device numbers must differ: 2, %d, %d" % (dev3, dev4))
        wait_for("2 add events", lambda: len(monitor_events(watch1)) >= 2)
        print("ok: add EMU0003 (devnum %d), add EMU0004 (devnum %d) acknowledged and seen" % (dev3, dev4))

        check_enumeration(bed, work, [("1-1", "EMU0001", 2, "lab-bench"), ("1-3", "EMU0003", dev3, "pixel-factory"),
                                      ("1-4", "EMU0004", dev4, None)])
        print("ok: udev_enumerate lists the hot-added devices with their properties")

        status, out, err = bed.run(flashctl + " devices --json")
        check(status == 0, "flashctl devices: %d %s" % (status, err))
        check(usb_devices(out) == {"EMU0001": "1-1", "EMU0003": "1-3", "EMU0004": "1-4"},
              "flashctl devices must list the hot-added devices: %s" % out)
        print("ok: flashctl devices lists EMU0001, EMU0003, EMU0004")

        first = random.Random(1).randbytes(3 << 20)
        flash(bed, emus["EMU0003"], "EMU0003", first, work, "first.img")
        print("ok: flashed 3 MiB to hot-added EMU0003; %s/boot.img matches" % emus["EMU0003"].dir)

        reply = bed.control("replug EMU0003")
        check(reply.startswith("ok replug EMU0003 port=1-3 busnum=1 "), reply)
        new3 = ack_devnum(reply)
        check(ack_devnum(reply, "olddevnum") == dev3 and new3 not in (2, dev3, dev4),
              "a replugged device gets a new device number: %s" % reply)
        wait_for("the replug's events", lambda: len(monitor_events(watch1)) >= 4)
        print("ok: replug EMU0003: devnum %d -> %d" % (dev3, new3))

        second = random.Random(2).randbytes((1 << 20) + 12345)
        flash(bed, emus["EMU0003"], "EMU0003", second, work, "second.img")
        print("ok: flashed EMU0003 again after the replug")

        reply = bed.control("remove EMU0004")
        check(reply.startswith("ok remove EMU0004 port=1-4 busnum=1 devnum=%d " % dev4), reply)
        wait_for("the remove event", lambda: len(monitor_events(watch1)) >= 5)
        status, out, err = bed.run(flashctl + " devices --json")
        check(status == 0 and usb_devices(out) == {"EMU0001": "1-1", "EMU0003": "1-3"},
              "after remove: %s %s" % (out, err))
        print("ok: remove EMU0004; flashctl devices lists EMU0001, EMU0003")

        check_enumeration(bed, work, [("1-1", "EMU0001", 2, "lab-bench"), ("1-3", "EMU0003", new3, "pixel-factory")])
        print("ok: udev_enumerate after the replug and the remove: EMU0001, EMU0003 (devnum %d)" % new3)

        reply = bed.control("remove EMU0004")
        check(reply.startswith("error remove EMU0004: "), reply)
        reply = bed.control("add tcp=127.0.0.1:%d,port=1-3" % emus["EMU0004"].port)
        check(reply.startswith("error add ") and "port 1-3 is taken by EMU0003" in reply, reply)
        reply = bed.control("add tcp=127.0.0.1:1,prop.DEVNUM=7")
        check(reply.startswith("error add ") and "DEVNUM" in reply, reply)
        print("ok: errors are replied to (%s)" % reply)

        check(bed.finish() == 0, "the test bed's exit status")
        seen = monitor_events(watch1)
        check(len(seen) == 5, "exactly 5 monitor events, got %d:\n%s" % (len(seen), "\n".join(map(json.dumps, seen))))
        expect_event(seen[0], "add", "1-3", "EMU0003", dev3, "pixel-factory")
        expect_event(seen[1], "add", "1-4", "EMU0004", dev4, None)
        expect_event(seen[2], "remove", "1-3", "EMU0003", dev3, "pixel-factory")
        expect_event(seen[3], "add", "1-3", "EMU0003", new3, "pixel-factory")
        expect_event(seen[4], "remove", "1-4", "EMU0004", dev4, None)
        seqnums = [int(e["seqnum"]) for e in seen]
        check(seqnums == sorted(seqnums), "SEQNUMs increase: %s" % seqnums)
        print("ok: udev_watch saw exactly add 1-3, add 1-4, remove 1-3, add 1-3, remove 1-4 with "
              "ACTION, SUBSYSTEM, DEVTYPE, syspath, BUSNUM/DEVNUM, ID_SERIAL(_SHORT) and FLASHCTL_PROFILE")
    except Failure:
        if bed is not None:
            sys.stderr.write("--- test bed log:\n%s--- acks:\n%s\n" % (bed.log(), "\n".join(read_lines(bed.ack))))
            sys.stderr.write("--- udev_watch:\n%s\n" % "\n".join(read_lines(os.path.join(work, "watch1.jsonl"))))
        raise
    finally:
        if bed is not None:
            bed.kill()
        for emu in emus.values():
            emu.stop()


def phase2(work, flashctl, watch):
    emu = Emulator(flashctl, work, "EMU0001")
    bed = None
    try:
        shutil.copy(watch, os.path.join(work, "udev_watch"))
        bed = Bed(work, ["tcp=127.0.0.1:%d,prop.FLASHCTL_PROFILE=p2" % emu.port], mode="two")
        w1, w2 = os.path.join(work, "watch1.jsonl"), os.path.join(work, "watch2.jsonl")
        wait_for("both watchers", lambda: any(e["event"] == "ready" for e in events(w2)))
        root = wait_for("UMOCKDEV_DIR", lambda: read_lines(os.path.join(work, "umockdev_dir")))[0]
        names = sorted(n for n in os.listdir(root) if n.startswith("event"))
        check(len(names) == 1, "both monitors should have the same fd, hence one socket name: %s" % names)
        with open(os.path.join(work, "watch2.pid")) as f:
            pid2 = int(f.read())
        os.kill(pid2, signal.SIGSTOP)
        devnums = [2]
        for _ in range(8):
            reply = bed.control("replug EMU0001")
            check(reply.startswith("ok replug EMU0001 port=1-1 "), reply)
            devnums.append(ack_devnum(reply))
        wait_for("16 events in the running watcher", lambda: len(monitor_events(w1)) >= 16)
        time.sleep(0.3)
        check(len(monitor_events(w2)) == 0, "the stopped watcher printed events")
        os.kill(pid2, signal.SIGCONT)
        wait_for("16 events in the resumed watcher", lambda: len(monitor_events(w2)) >= 16)
        check(bed.finish() == 0, "the test bed's exit status")
        for path in (w1, w2):
            seen = monitor_events(path)
            got = [(e["action"], e["sysname"], int(e["devnum"]), e["props"]["FLASHCTL_PROFILE"]) for e in seen]
            want = []
            for old, new in zip(devnums, devnums[1:]):
                want += [("remove", "1-1", old, "p2"), ("add", "1-1", new, "p2")]
            check(got == want, "%s: %s\nwanted %s" % (os.path.basename(path), got, want))
        print("ok: two monitors on one socket name, one stopped while 16 events were sent: both got all 16 in order")
    except Failure:
        if bed is not None:
            sys.stderr.write("--- test bed log:\n%s--- acks:\n%s\n" % (bed.log(), "\n".join(read_lines(bed.ack))))
        raise
    finally:
        if bed is not None:
            bed.kill()
        emu.stop()


def main(argv):
    flashctl = os.path.join(ROOT, ".build", "debug", "flashctl")
    keep = False
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--flashctl" and args:
            flashctl = os.path.abspath(args.pop(0))
        elif a == "--keep":
            keep = True
        else:
            sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
            return 2
    if not os.access(flashctl, os.X_OK):
        sys.stderr.write("test_hotplug: no flashctl at %s (build it first)\n" % flashctl)
        return 2
    top = tempfile.mkdtemp(prefix="test_hotplug.")
    try:
        watch = os.path.join(top, "udev_watch")
        cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "libudev"], check=True,
                                capture_output=True, text=True).stdout.split()
        subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-o", watch,
                        os.path.join(HERE, "udev_watch.c")] + cflags, check=True)
        for n, phase in enumerate((phase1, phase2), 1):
            work = os.path.join(top, "phase%d" % n)
            os.mkdir(work)
            phase(work, flashctl, watch)
        print("PASS")
        return 0
    except Failure as e:
        print("FAIL: %s" % e)
        return 1
    finally:
        if keep:
            print("kept %s" % top)
        else:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
