#!/usr/bin/env bash
# unpack.sh: fetches a Debian package and unpacks it privately, without installing it.
#
# Usage: tests/harness/unpack.sh PACKAGE DIR
#
# Packages that conflict with the installed MTA (sendmail-bin, exim4-daemon-light, opensmtpd
# all provide mail-transport-agent, like postfix) are used from DIR instead of being installed:
# `apt-get download` + `dpkg -x DIR`. Idempotent: when DIR/.unpacked names the same package
# version, nothing is done. Runs `apt-get update` only if the download fails without it.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 PACKAGE DIR" >&2
    exit 2
fi
package=$1
dir=$2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

version=$(apt-cache policy "$package" 2>/dev/null | awk '/Candidate:/ {print $2}')
if [[ -n "$version" && "$version" != "(none)" && -f "$dir/.unpacked" && "$(cat "$dir/.unpacked")" == "$package=$version" ]]; then
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt-get download writes into the current folder; the _apt user cannot write to a private
# temporary folder, so the download runs as root (apt says so in a warning).
if ! (cd "$work" && apt-get download -q "$package" >/dev/null 2>&1); then
    apt-get update -q >/dev/null
    (cd "$work" && apt-get download -q "$package" >/dev/null 2>&1) || {
        echo "unpack.sh: cannot download $package" >&2
        exit 1
    }
fi
deb=$(ls "$work"/*.deb)
dpkg -x "$deb" "$dir"
version=$(dpkg-deb -f "$deb" Version)
echo "$package=$version" >"$dir/.unpacked"
