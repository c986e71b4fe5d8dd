#!/bin/sh
# The greet plugin: one process per call ("mode": "oneshot"). The command's
# arguments are environment variables, so nothing here parses JSON: what the
# script prints is the reply, and a non-zero exit is an error.
set -eu

case "$ASTRBOT_CALL_NAME" in
greet)
  printf 'Hello, %s! It is %s here.\n' "${ASTRBOT_ARG_NAME:-stranger}" "$(date -u +%H:%M) UTC"
  ;;
uptime)
  uptime
  ;;
*)
  echo "greet: no command $ASTRBOT_CALL_NAME" >&2
  exit 2
  ;;
esac
