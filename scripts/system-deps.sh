#!/usr/bin/env bash
# Installs the Debian packages ptif's tests and optional formats use:
#   ghostscript      EPS sources (run with -dSAFER)
#   libtiff-tools    tiffinfo, a second reader of the pyramids in the tests
#   iipimage-server  a real IIIF image server, checked against our pyramids
#   lighttpd         the FastCGI front end iipsrv runs behind
#   rsync            copies files in with their old times, as archives do, for the watch tests
#   gdal-bin         GDAL's COG writer, the comparison in make bench-quality
# Safe to run again: it installs only what is missing. Needs root (CI runs as root).
set -euo pipefail
want=(ghostscript libtiff-tools iipimage-server lighttpd rsync gdal-bin)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${missing[*]}; run 'sudo $0' (or install them with apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# lighttpd and iipimage-server may start system services on install; ptif's tests start their own.
(service lighttpd stop || true) >/dev/null 2>&1
