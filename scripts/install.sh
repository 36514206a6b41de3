#!/usr/bin/env bash
# Builds flashctl (release, Swift's standard library linked in) and installs it with everything it
# uses: the binary, the dashboard, the man page, bash/zsh/fish completions, the udev rule, the
# systemd unit (its ExecStart the installed binary) and the auto-flash examples.
#
#   sudo scripts/install.sh                      # into /usr/local
#   PREFIX=/opt/flashctl scripts/install.sh      # elsewhere
#   DESTDIR=/tmp/stage PREFIX=/usr scripts/install.sh   # into a staging root (scripts/package-deb.sh)
#
# FLASHCTL_BINARY=path installs that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
binary=${FLASHCTL_BINARY:-}
if [ -z "$binary" ]; then
  binary=$(scripts/build-release.sh)
fi
manual=$(scripts/build-manual.sh)

root=$dest$prefix
install -d "$root/bin" "$root/share/flashctl/dashboard" "$root/share/flashctl/examples" "$root/share/man/man1" \
  "$root/share/bash-completion/completions" "$root/share/zsh/vendor-completions" "$root/share/fish/vendor_completions.d" \
  "$root/lib/udev/rules.d" "$root/lib/systemd/system"
# Stripped: the symbols and debug information are most of the release binary's size.
install -m 755 -s "$binary" "$root/bin/flashctl"
cp -R Sources/FlashServer/Dashboard/. "$root/share/flashctl/dashboard/"
chmod -R u=rwX,go=rX "$root/share/flashctl/dashboard"
gzip -9n < "$manual" > "$root/share/man/man1/flashctl.1.gz"
chmod 644 "$root/share/man/man1/flashctl.1.gz"
"$binary" --generate-completion-script bash > "$root/share/bash-completion/completions/flashctl"
"$binary" --generate-completion-script zsh > "$root/share/zsh/vendor-completions/_flashctl"
"$binary" --generate-completion-script fish > "$root/share/fish/vendor_completions.d/flashctl.fish"
install -m 644 udev/70-flashctl-fastboot.rules "$root/lib/udev/rules.d/"
sed "s|^ExecStart=/usr/local/bin/flashctl |ExecStart=$prefix/bin/flashctl |" udev/flashctl-autoflash.service > "$root/lib/systemd/system/flashctl-autoflash.service"
chmod 644 "$root/lib/systemd/system/flashctl-autoflash.service"
install -m 644 udev/72-flashctl-autoflash.rules udev/profiles.example.yaml "$root/share/flashctl/examples/"
echo "installed flashctl $("$binary" --version) into $root" >&2
