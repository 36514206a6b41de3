#!/usr/bin/env python3
"""Fails when a tracked file refers to a path outside the repository (a document in a folder
beside it, say): someone who clones the project has only what is in it.

A reference is a run of "../" followed by a folder and a path inside it, or by the name of a
Markdown document; it must lead to something in the repository from the folder of the file it is
in. A single name after the dots is left alone: tests use such names as hostile input.
"""
import os
import re
import subprocess
import sys

REFERENCE = re.compile(r"(?<![\w./-])((?:\.\./)+[\w.-]+(?:/[\w.-]+)+|(?:\.\./)+[\w.-]+\.md\b)")


def main():
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True).stdout.strip()
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.decode().split("\0")
    found = []
    for name in filter(None, files):
        try:
            with open(os.path.join(root, name), encoding="utf-8") as handle:
                lines = handle.readlines()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue  # binary files and submodules hold no references a person follows
        for number, line in enumerate(lines, 1):
            for reference in REFERENCE.findall(line):
                target = os.path.normpath(os.path.join(os.path.dirname(name), reference))
                if target.startswith("..") or not os.path.exists(os.path.join(root, target)):
                    found.append("%s:%d: %s" % (name, number, reference))
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print("check_paths: the references above point outside the repository; the project's documents belong in docs/", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
