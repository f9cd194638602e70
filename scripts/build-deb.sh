#!/usr/bin/env bash
# Builds dist/oca_<version>_<arch>.deb with dpkg-deb from a staged tree (no Debian tooling beyond dpkg).
# Usage: scripts/build-deb.sh [OUTDIR]   (default: build); prints the .deb's path.
# $PYTHON: the Python whose pip builds the project's wheel and fetches its dependencies' wheels (default python3);
# the dependency versions are those installed in that Python (pip freeze, as constraints) when it has them.
# The wheels are for the target's Python (Debian bookworm: CPython 3.11) and architecture, whatever the host's.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build}
python=${PYTHON:-python3}
pyver=311
arch=$(dpkg --print-architecture)
case "$arch" in
  amd64) machine=x86_64 ;;
  arm64) machine=aarch64 ;;
  *) echo "build-deb: no wheels for architecture $arch" >&2; exit 1 ;;
esac
version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
stage=$out/deb/oca_${version}_$arch
deb=$out/oca_${version}_$arch.deb
rm -rf "$stage" "$out/deb/wheel"
mkdir -p "$stage/DEBIAN" "$stage/usr/share/oca/wheels" "$out/deb/wheel"

# the application: our wheel, then every dependency as a binary wheel for cp311 on manylinux (glibc 2.36 here).
# setuptools' own build/lib is cleared first: a module deleted from the source would stay there and be packaged
rm -rf build/lib build/bdist.*
"$python" -m pip wheel --quiet --no-deps --disable-pip-version-check -w "$out/deb/wheel" . >&2
wheel=$(ls "$out/deb/wheel"/oca-"$version"-*.whl)
cp "$wheel" "$stage/usr/share/oca/wheels/"
"$python" -m pip freeze --exclude-editable 2>/dev/null | grep -v '^oca[= ]' > "$out/deb/constraints.txt" || true
platforms=(--platform "manylinux2014_$machine")
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$machine"); done
"$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --implementation cp \
  --python-version "$pyver" --abi "cp$pyver" --abi abi3 --abi none "${platforms[@]}" \
  -c "$out/deb/constraints.txt" -d "$stage/usr/share/oca/wheels" "$wheel" >&2
rm -f "$stage/usr/share/oca/wheels/$(basename "$wheel")"  # pip download copies it under its own name: once only
cp "$wheel" "$stage/usr/share/oca/wheels/"

# files
install -D -m 0755 packaging/deb/oca "$stage/usr/bin/oca"
install -D -m 0644 configs/oca.yaml "$stage/etc/oca/oca.yaml"
install -D -m 0644 configs/control.yaml "$stage/etc/oca/control.yaml"
install -D -m 0644 packaging/deb/logrotate "$stage/etc/logrotate.d/oca"
for unit in systemd/*.service systemd/*.timer; do
  install -D -m 0644 "$unit" "$stage/lib/systemd/system/$(basename "$unit")"
done
install -D -m 0644 packaging/deb/copyright "$stage/usr/share/doc/oca/copyright"
install -D -m 0644 README.md "$stage/usr/share/doc/oca/README.md"
gzip -9n "$stage/usr/share/doc/oca/README.md"
when=$(git log -1 --format=%cD 2>/dev/null || date -R)  # the last commit's date: the same tree, the same file
printf 'oca (%s) unstable; urgency=medium\n\n  * Release %s: see /usr/share/doc/oca/README.md.gz.\n\n -- %s  %s\n' \
  "$version" "$version" "OCA developers <oca@example.net>" "$when" | gzip -9n > "$stage/usr/share/doc/oca/changelog.gz"

# control files
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" packaging/deb/control.in > "$stage/DEBIAN/control"
for script in postinst prerm postrm; do
  sed -e "s/@VERSION@/$version/" "packaging/deb/$script" > "$stage/DEBIAN/$script"
  chmod 0755 "$stage/DEBIAN/$script"
done
(cd "$stage" && find etc -type f | sed 's|^|/|' | sort) > "$stage/DEBIAN/conffiles"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
