# shellcheck shell=bash disable=SC2034
# (SC2034: the variables set here are used by the scripts that source it.)
# Functions shared by the peer scripts in tests/peers/. Source this file after
# setting PEER_NAME. It implements the contract that tests/src/peers.rs relies
# on: state only under $RACKHAND_PEER_STATE, processes started detached and
# stopped by recorded PID, KEY=value lines on stdout and logs on stderr.

PEERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS_HOME=${RACKHAND_PEERS_HOME:-/var/lib/rackhand-peers}
VENV=$PEERS_HOME/venv
VENV_PYTHON=$VENV/bin/python
# Debian's interpreter, because the venv must see python3-libvirt and a
# python3 found first on PATH (pyenv, for example) cannot import it.
SYSTEM_PYTHON=/usr/bin/python3

log() { printf '%s: %s\n' "$PEER_NAME" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Sets STATE to this peer's folder inside $RACKHAND_PEER_STATE and creates it.
init_state() {
  [[ -n ${RACKHAND_PEER_STATE:-} ]] ||
    die "RACKHAND_PEER_STATE is not set; set it to the folder for this instance's state"
  [[ $RACKHAND_PEER_STATE == /* ]] || die "RACKHAND_PEER_STATE must be an absolute path: $RACKHAND_PEER_STATE"
  [[ $RACKHAND_PEER_STATE != *[[:space:]]* ]] ||
    die "RACKHAND_PEER_STATE must not contain whitespace: '$RACKHAND_PEER_STATE'"
  STATE=$RACKHAND_PEER_STATE/$PEER_NAME
  mkdir -p "$STATE"
}

# Serializes start, stop and status of one instance (fd 9 stays open until exit).
lock_state() {
  exec 9>"$STATE/.lock"
  flock -w 120 9 || die "another $PEER_NAME command held $STATE/.lock for 120 s"
}

# Installs the apt packages and Python packages that the named peers need.
ensure_installed() {
  "$PEERS_DIR/install" "$@" >&2 || die "tests/peers/install $* failed"
}

# Prints the PID stored in FILE, or nothing.
read_pid() {
  if [[ -f $1 ]]; then tr -dc '0-9' <"$1" || true; fi
}

# Succeeds when PID runs, is not a zombie and its command line contains MARKER.
# The PID 1 of some containers reaps orphans late, so state Z counts as dead.
pid_alive() {
  local pid=$1 marker=$2 state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z && $state != X ]] || return 1
  # grep reads all input: with -q it could exit early and fail the pipeline
  # through SIGPIPE under pipefail.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -F -- "$marker" >/dev/null
}

# Starts CMD detached in its own session with all file descriptors redirected,
# so `$(SCRIPT start)` returns, and writes its PID to PIDFILE. setsid forks
# when the caller runs with job control, so the new session writes its own
# PID before it executes CMD.
spawn() {
  local pidfile=$1 logfile=$2 i
  shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner bash.
  setsid bash -c 'echo "$$" >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$logfile" 2>&1 7>&- 8>&- 9>&- &
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.05
  done
  die "the process for $pidfile did not start within 5 s"
}

# Stops process PID if its command line contains MARKER: TERM, then KILL
# after 5 s. A PID that now belongs to another program is left alone.
stop_pid() {
  local pid=$1 marker=$2 i
  pid_alive "$pid" "$marker" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" "$marker" || return 0
    sleep 0.1
  done
  log "pid $pid ignored TERM for 5 s; sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    pid_alive "$pid" "$marker" || return 0
    sleep 0.1
  done
  die "pid $pid did not stop"
}

# Stops the process in PIDFILE (see stop_pid) and removes PIDFILE.
stop_pidfile() {
  stop_pid "$(read_pid "$1")" "$2"
  rm -f "$1"
}

# Prints a port that is free on 127.0.0.1 for TCP, or for TCP and UDP with the
# argument "tcp+udp". The kernel picks it, so another process may take it
# before the peer binds it. Callers retry with a new port when the bind fails.
free_port() {
  "$SYSTEM_PYTHON" - "${1:-tcp}" <<'PY'
import socket
import sys

for _ in range(50):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    if sys.argv[1] == "tcp+udp":
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            tcp.close()
            continue
        udp.close()
    tcp.close()
    print(port)
    sys.exit(0)
sys.exit("no free port found in 50 tries")
PY
}

# Succeeds when nothing accepts TCP connections on 127.0.0.1:PORT.
tcp_port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Succeeds when process PID listens on 127.0.0.1:PORT (tcp, or udp with a
# third argument "udp"). Readiness checks use it so that a server that was
# already listening on the port is never mistaken for the peer.
pid_listens() {
  local pid=$1 port=$2 flags=-Hltnp
  [[ ${3:-tcp} == udp ]] && flags=-Hlunp
  ss "$flags" "sport = :$port" 2>/dev/null | grep "pid=$pid," >/dev/null
}

# Validates that VALUE (named NAME in messages) is a TCP/UDP port number.
check_port() {
  if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then
    die "$1 must be a port number (1-65535), got '$2'"
  fi
}

# Prints the saved KEY=value output of the running instance, or fails when
# start has not written it yet.
print_saved_output() {
  [[ -f $STATE/output.env ]] || return 1
  cat "$STATE/output.env"
}

# Compares the settings SETTINGS (one string) with those the running instance
# was started with, and dies with a clear message when they differ.
check_same_settings() {
  local saved
  saved=$(cat "$STATE/settings" 2>/dev/null || true)
  [[ $saved == "$1" ]] ||
    die "already running with other settings ($saved); run '$0 stop' first to change them"
}

# Prints the usage text: the header comment of the calling script.
usage() {
  sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}
