#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: its own data folder under a temp folder, listening on 127.0.0.1 only
# (no Unix socket outside that folder), on a free port, trust authentication. fsync is off (the tests kill
# PostgreSQL's processes, never the machine's power, and a killed server loses nothing the OS has), but commits stay
# synchronous: with synchronous_commit=off a killed server loses its last commits, which the restart tests catch.
# initdb refuses root, so as root it runs as the `postgres` user that Debian's package creates.
#
#   tools/postgres/test-cluster.sh start DIR   initializes and starts a cluster in DIR (created, must be empty or
#                                              absent) and prints three lines: the address to give --database and
#                                              FLUX_TEST_POSTGRES (postgres://postgres@127.0.0.1:PORT/postgres),
#                                              the command that controls it (FLUX_TEST_POSTGRES_CTL: append
#                                              "stop -m immediate" or "start"), and the bin folder.
#                                              Exits 3 when no PostgreSQL server binaries are installed.
#   tools/postgres/test-cluster.sh stop DIR    stops it (immediately) and removes DIR.
set -euo pipefail

bin_dir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  if command -v pg_config > /dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return 0; fi
  return 1
}

# Runs a command as the cluster's owner: the postgres user when we are root, ourselves otherwise.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then echo "$port"; return 0; fi
  done
  return 1
}

command=${1:-}
dir=${2:-}
if [ -z "$command" ] || [ -z "$dir" ]; then
  echo "usage: tools/postgres/test-cluster.sh start|stop DIR" >&2
  exit 2
fi

case "$command" in
  start)
    bin=$(bin_dir) || { echo "test-cluster: no PostgreSQL server binaries (initdb, pg_ctl) are installed (Debian: apt-get install postgresql)" >&2; exit 3; }
    if [ "$(id -u)" -eq 0 ] && ! id postgres > /dev/null 2>&1; then
      echo "test-cluster: running as root, and there is no 'postgres' user to run PostgreSQL as (initdb refuses root)" >&2
      exit 3
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    port=$(free_port) || { echo "test-cluster: no free port found" >&2; exit 1; }
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-sync > "$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    options="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off -c max_connections=200"
    ctl="$( [ "$(id -u)" -eq 0 ] && echo "runuser -u postgres -- " )$bin/pg_ctl -D $dir/data -l $dir/server.log -w -o '$options'"
    bash -c "$ctl start" > /dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    echo "$ctl"
    echo "$bin"
    ;;
  stop)
    bin=$(bin_dir) || exit 0
    if [ -d "$dir/data" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" stop -m immediate > /dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: tools/postgres/test-cluster.sh start|stop DIR" >&2
    exit 2
    ;;
esac
