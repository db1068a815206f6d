#!/usr/bin/env bash
# Writes a Debian bookworm root file system with python3 and its venv module, as a tar on stdout,
# from Debian's own packages (the host's apt sources are not needed: mmdebstrap picks the mirror).
# make image imports it as the base when no image can be pulled; the base's tag is this file's
# hash, so editing it makes a new base, and make remakes it when it is a week old (BASE_MAX_AGE_DAYS).
# The packages are the newest of bookworm, bookworm-updates and bookworm-security, the sources
# mmdebstrap gives a stable release: the hooks check that the security suite is among them and
# upgrade whatever an older candidate left (nothing, as a rule), so the base is as patched as
# Debian was on the day it was made.
set -euo pipefail
# merged-usr: what bookworm's usrmerge would do, without pulling perl into the image.
# No recommends, no docs, manuals or translations (the copyright files stay).
exec mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --aptopt='APT::Install-Recommends "false"' \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='grep -qs " bookworm-security " "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/* \
        || { echo "debian-base.sh: bookworm-security is not among the sources" >&2; exit 1; }' \
    --customize-hook='chroot "$1" apt-get --quiet --yes upgrade >&2' \
    bookworm -
