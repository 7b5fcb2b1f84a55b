#!/bin/bash
# healthcheck.sh of the test node's MariaDB image: the official image's health
# checks that our examples use, with its rules. Options before the tests:
#   --defaults-file=F  --defaults-extra-file=F  --defaults-group-suffix=S  --no-defaults
#   --su-mysql (accepted; the checks run as the caller)  --datadir=D
# Tests, run in order, all must pass:
#   --connect                 a TCP connection to the server can be made
#                             (access denied still counts as connected, as upstream)
#   --innodb_initialized      InnoDB is initialised (needs a login: the healthcheck
#                             user of $DATADIR/.my-healthcheck.cnf by default)
#   --innodb_buffer_pool_loaded  the buffer pool load finished
#   --replication             (with --replication_io/--replication_sql) the slave threads run
# Exit 0 when healthy, 1 when a test fails.
set -eo pipefail

datadir=/var/lib/mysql
declare -A def=()
nodefaults=
tests=()
repl_io=
repl_sql=

for arg; do
  case "$arg" in
    --defaults-file=*) def[file]="${arg#*=}" ;;
    --defaults-extra-file=*) def[extra_file]="${arg#*=}" ;;
    --defaults-group-suffix=*) def[group_suffix]="${arg#*=}" ;;
    --no-defaults) nodefaults=1 ;;
    --datadir=*) datadir="${arg#*=}" ;;
    --su-mysql | --su=*) ;;
    --replication_io) repl_io=1 ;;
    --replication_sql) repl_sql=1 ;;
    --connect | --innodb_initialized | --innodb_buffer_pool_loaded | --replication) tests+=("${arg#--}") ;;
    *) echo "healthcheck.sh: unknown option or test: $arg" >&2; exit 1 ;;
  esac
done
if [ -z "${def[file]:-}" ] && [ -z "${def[extra_file]:-}" ] && [ -z "$nodefaults" ] && [ -r "$datadir/.my-healthcheck.cnf" ]; then
  def[extra_file]="$datadir/.my-healthcheck.cnf"
fi

client() {
  mariadb ${nodefaults:+--no-defaults} \
    ${def[file]:+--defaults-file=${def[file]}} \
    ${def[extra_file]:+--defaults-extra-file=${def[extra_file]}} \
    ${def[group_suffix]:+--defaults-group-suffix=${def[group_suffix]}} "$@"
}

sql() { client --skip-column-names --batch -e "$1"; }

connect() {
  local out
  out="$(client -h localhost --protocol tcp -e 'select 1' 2>&1)" && return 0
  # "Can't connect" is the only failure: any other answer came from the server.
  ! grep -qF "Can't connect" <<<"$out"
}

innodb_initialized() {
  [ "$(sql "select 1 from information_schema.ENGINES WHERE engine='innodb' AND support in ('YES', 'DEFAULT', 'ENABLED')")" = 1 ]
}

innodb_buffer_pool_loaded() {
  local s
  s="$(sql "select VARIABLE_VALUE from information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='Innodb_buffer_pool_load_status'")"
  [[ "$s" == "Buffer pool(s) load completed at "* ]]
}

replication() {
  local status io sql_
  status="$(client -e 'SHOW ALL SLAVES STATUS\G')" || return 1
  io="$(awk '/Slave_IO_Running:/ {print $2; exit}' <<<"$status")"
  sql_="$(awk '/Slave_SQL_Running:/ {print $2; exit}' <<<"$status")"
  [ -n "$io$sql_" ] || return 1
  if [ -n "$repl_io" ] && [ "$io" != Yes ]; then return 1; fi
  if [ -n "$repl_sql" ] && [ "$sql_" != Yes ]; then return 1; fi
  return 0
}

[ "${#tests[@]}" -gt 0 ] || { echo "healthcheck.sh: no test given (e.g. --connect --innodb_initialized)" >&2; exit 1; }
for t in "${tests[@]}"; do
  if ! "$t" 2>/dev/null; then
    echo "healthcheck $t failed" >&2
    exit 1
  fi
done
exit 0
