#!/usr/bin/env bash
# readonly.sh DIR CMD...: runs CMD with DIR (and what is under it) read-only,
# and exits with CMD's status. As root, permissions do not stop writes, so
# DIR is bind-mounted read-only in a private mount namespace instead.
set -u
dir=$1
shift
if [ "$(id -u)" -ne 0 ]; then
  chmod -R a-w "$dir"
  "$@"
  rc=$?
  chmod -R u+w "$dir"
  exit $rc
fi
exec unshare -m sh -c 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && shift && exec "$@"' "$dir" "$dir" "$@"
