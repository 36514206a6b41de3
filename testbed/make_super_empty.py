#!/usr/bin/env python3
"""Writes a super_empty.img as AOSP's lpmake writes one: the logical partition metadata of a
device's super partition (geometry, then header and tables, liblp format 10.0) with no data.

Factory images carry one; 'fastboot update' sends it with update-super so that fastbootd knows
the logical partitions. The tests make theirs with this (Debian has no lpmake).

  make_super_empty.py OUT SUPER_SIZE GROUP:MAX_SIZE PARTITION:GROUP [PARTITION:GROUP...]
  make_super_empty.py super_empty.img 268435456 main_a:134217728 main_b:134217728 \
      system_a:main_a vendor_a:main_a system_b:main_b vendor_b:main_b
"""
import hashlib
import struct
import sys

GEOMETRY_MAGIC = 0x616C4467
HEADER_MAGIC = 0x414C5030
GEOMETRY_SIZE = 4096
METADATA_MAX_SIZE = 65536
SLOTS = 2
BLOCK_SIZE = 4096
SECTOR = 512
ATTR_READONLY = 1


def name36(text):
    raw = text.encode()
    if len(raw) > 36:
        raise SystemExit("name too long: " + text)
    return raw + bytes(36 - len(raw))


def geometry():
    body = struct.pack("<II32sIII", GEOMETRY_MAGIC, 52, bytes(32), METADATA_MAX_SIZE, SLOTS, BLOCK_SIZE)
    checksum = hashlib.sha256(body).digest()
    body = struct.pack("<II32sIII", GEOMETRY_MAGIC, 52, checksum, METADATA_MAX_SIZE, SLOTS, BLOCK_SIZE)
    return body + bytes(GEOMETRY_SIZE - len(body))


def metadata(super_size, groups, partitions):
    group_names = ["default"] + [name for name, _ in groups]
    group_table = struct.pack("<36sIQ", name36("default"), 0, 0)
    for name, size in groups:
        group_table += struct.pack("<36sIQ", name36(name), 0, size)
    partition_table = b""
    for name, group in partitions:
        partition_table += struct.pack("<36sIIII", name36(name), ATTR_READONLY, 0, 0, group_names.index(group))
    # The data starts after the reserved bytes, both geometries and every metadata slot and its backup.
    first_sector = (4096 + 2 * GEOMETRY_SIZE + 2 * SLOTS * METADATA_MAX_SIZE) // SECTOR
    block_table = struct.pack("<QIIQ36sI", first_sector, 1024 * 1024, 0, super_size, name36("super"), 0)
    tables = partition_table + group_table + block_table
    descriptors = struct.pack(
        "<12I",
        0, len(partitions), 52,
        len(partition_table), 0, 24,
        len(partition_table), len(groups) + 1, 48,
        len(partition_table) + len(group_table), 1, 64)
    tables_checksum = hashlib.sha256(tables).digest()

    def header(checksum):
        return struct.pack("<IHHI32sI32s", HEADER_MAGIC, 10, 0, 128, checksum, len(tables), tables_checksum) + descriptors

    return header(hashlib.sha256(header(bytes(32))).digest()) + tables


def main(argv):
    if len(argv) < 5:
        raise SystemExit(__doc__)
    out, super_size = argv[1], int(argv[2])
    groups, partitions = [], []
    for spec in argv[3:]:
        name, value = spec.split(":", 1)
        if value.isdigit():
            groups.append((name, int(value)))
        else:
            partitions.append((name, value))
    with open(out, "wb") as image:
        image.write(geometry() + metadata(super_size, groups, partitions))


if __name__ == "__main__":
    main(sys.argv)
