#!/usr/bin/env bash
# Run HERE (a Debian 12 machine with the registries), before tools/device/check.sh runs on a GPU machine
# that has CUDA, CMake, ninja and PyTorch but no Debian packages and no network. Gathers what the native
# build needs from Debian into .device-deps/ (ignored by git; carried to the GPU machine by the device
# tool's `carry`): the -dev packages of nlohmann-json, libpng, libjpeg-turbo, libwebp and zlib with their
# runtime libraries, unpacked under .device-deps/root, and GoogleTest's sources. A few MB in all.
set -euo pipefail
cd "$(dirname "$0")/../.."
deps=.device-deps
rm -rf "$deps"
mkdir -p "$deps/debs" "$deps/root"
packages=(nlohmann-json3-dev libpng-dev libpng16-16 libjpeg62-turbo-dev libjpeg62-turbo libwebp-dev libwebp7
          libwebpmux3 libwebpdemux2 zlib1g-dev zlib1g)
(cd "$deps/debs" && apt-get download "${packages[@]}" >/dev/null)
for deb in "$deps"/debs/*.deb; do dpkg -x "$deb" "$deps/root"; done
# The -dev packages' .so links point at absolute /lib paths in some packages; make them relative.
find "$deps/root" -type l | while read -r link; do
  target=$(readlink "$link")
  case "$target" in /*) ln -sf "$(realpath -m --relative-to="$(dirname "$link")" "$deps/root$target")" "$link" ;; esac
done
cp -r /usr/src/googletest "$deps/googletest"
rm -rf "$deps/debs"
du -sh "$deps"
