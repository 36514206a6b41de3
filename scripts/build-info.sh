#!/bin/sh
# Writes Swift constants with flashctl's version (the VERSION file) and the commit it is built
# from: git's (with -dirty for uncommitted changes), or "unknown" in a tree without git. (SwiftPM
# runs this with an environment of its own, so a variable cannot pass a commit in.) Run by the BuildInfo plugin before every build; the file is
# rewritten only when it changes, so a build with nothing new compiles nothing.
set -eu
root=$1
out=$2
version=$(tr -d ' \n' < "$root/VERSION")
commit=$(git -C "$root" describe --always --dirty --abbrev=12 --exclude='*' 2>/dev/null || echo unknown)
mkdir -p "$(dirname "$out")"
text="enum BuildInfo {
    static let version = \"$version\"
    static let commit = \"$commit\"
}"
if [ ! -f "$out" ] || [ "$(cat "$out")" != "$text" ]; then
  printf '%s\n' "$text" > "$out"
fi
