#!/usr/bin/env bash
# Makes a clean Debian root (debootstrap, minbase) as a tarball, once: later runs reuse it.
# Usage: scripts/debroot.sh TARBALL SUITE PACKAGE[,PACKAGE...]
# The mirror is the one this machine's apt uses (the first deb URI of /etc/apt/sources.list{,.d/*});
# $DEBROOT_MIRROR overrides it. Idempotent: an existing TARBALL is left as it is. Root only.
set -euo pipefail
tarball=$1 suite=$2 include=$3
[ -s "$tarball" ] && exit 0
[ "$(id -u)" = 0 ] || { echo "debroot: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debroot: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
mirror=${DEBROOT_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
    | grep -v -- '-security' | head -n 1 || true)
fi
[ -n "$mirror" ] || { echo "debroot: no Debian mirror found in /etc/apt/sources.list*; set DEBROOT_MIRROR" >&2; exit 1; }
mkdir -p "$(dirname "$tarball")"
work=$(mktemp -d "$(dirname "$tarball")/.root.XXXXXX")
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include="$include" "$suite" "$work/root" "$mirror" >"$work/log" 2>&1 \
  || { echo "debroot: debootstrap failed: $(tail -n 1 "$work/log")" >&2; exit 1; }
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*_Packages 2>/dev/null || true
tar -C "$work/root" -cf "$tarball.partial" .
mv "$tarball.partial" "$tarball"
