#!/usr/bin/env bash
# Installs the Debian packages whose commands are missing. Arguments: command:package pairs, where the command
# may be an absolute path (/usr/bin/chromium:chromium: the tests drive that very binary, not any chromium).
# Without root or apt-get it only warns: the tests that need a missing tool skip and say why.
set -u
missing=()
for pair in "$@"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or the tests that need them skip" >&2
  exit 0
fi
echo "installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
# We want the tools, not their services: nginx, prometheus, postgresql and haproxy would otherwise start daemons
# (ports 80, 9090, 5432; haproxy's stats socket; invoke-rc.d asks policy-rc.d; 101 = "action not allowed"): the
# lab and the tests run their own, unprivileged. An existing policy is left alone.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && own_policy=true
fi
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
status=$?
[ "$own_policy" = true ] && rm -f "$policy"
[ $status -eq 0 ] || { echo "warning: apt-get could not install ${missing[*]}" >&2; exit 0; }
