#!/bin/sh
# with-nearby: runs the nearby sidecar next to the app in one Fly Machine.
#
#   ENTRYPOINT ["/usr/local/bin/with-nearby"]
#   CMD ["/app/server", "--port", "8080"]
#
# 1. starts `nearby run` (configured by NEARBY_* env vars and Fly secrets;
#    its region comes from FLY_REGION, which Fly sets on every Machine),
# 2. waits until nearby's admin server answers, then starts the app ("$@"),
# 3. when either process exits, stops the other and exits with the app's
#    status (or nearby's, if nearby went first), so that Fly's restart policy
#    restarts the whole Machine: the app never runs without its sidecar,
# 4. on SIGTERM/SIGINT (fly deploy, fly machine stop) stops the app first,
#    then nearby, so the app can still reach Redis while it shuts down.
#
# POSIX sh: works with dash, bash and busybox.
set -u

NEARBY_BIN=${NEARBY_BIN:-/usr/local/bin/nearby}
# nearby may bind its admin server to 0.0.0.0 (for Fly's checks and metrics
# scraper); this script asks it on loopback, same port.
admin_port=${NEARBY_ADMIN:-127.0.0.1:9121}
admin_port=${admin_port##*:}
status_addr="127.0.0.1:${admin_port}"
start_timeout=${NEARBY_START_TIMEOUT_S:-30}

log() { echo "with-nearby: $*" >&2; }

if [ "$#" -eq 0 ]; then
  log "usage: with-nearby APP [ARGS...]"
  exit 64
fi

"$NEARBY_BIN" run &
nearby_pid=$!
app_pid=

stop_all() {
  if [ -n "$app_pid" ]; then
    kill -TERM "$app_pid" 2>/dev/null
    wait "$app_pid" 2>/dev/null
  fi
  kill -TERM "$nearby_pid" 2>/dev/null
  wait "$nearby_pid" 2>/dev/null
}
trap 'log "signal received, stopping"; stop_all; exit 143' TERM INT

waited=0
until "$NEARBY_BIN" status --admin "$status_addr" --json >/dev/null 2>&1; do
  if ! kill -0 "$nearby_pid" 2>/dev/null; then
    wait "$nearby_pid"
    code=$?
    log "nearby exited with status $code before it was up"
    exit $(( code == 0 ? 1 : code ))
  fi
  if [ "$waited" -ge "$start_timeout" ]; then
    log "nearby did not answer on $status_addr within ${start_timeout}s"
    stop_all
    exit 1
  fi
  sleep 1 &
  wait $!
  waited=$((waited + 1))
done
log "nearby is up (admin $status_addr); starting: $*"

"$@" &
app_pid=$!

# `sleep & wait` rather than a plain sleep so that a signal runs the trap at
# once; waiting also reaps whichever child has exited, so kill -0 fails for it.
while kill -0 "$app_pid" 2>/dev/null && kill -0 "$nearby_pid" 2>/dev/null; do
  sleep 1 &
  wait $!
done

if kill -0 "$app_pid" 2>/dev/null; then
  wait "$nearby_pid"
  code=$?
  log "nearby exited with status $code; stopping the app"
  kill -TERM "$app_pid" 2>/dev/null
  wait "$app_pid" 2>/dev/null
  exit $(( code == 0 ? 1 : code ))
fi

wait "$app_pid"
code=$?
log "the app exited with status $code; stopping nearby"
kill -TERM "$nearby_pid" 2>/dev/null
wait "$nearby_pid" 2>/dev/null
exit "$code"
