#!/bin/bash
# Entrypoint of the test node's MariaDB image: the behaviour of the official
# mariadb image's docker-entrypoint.sh that our examples and tests rely on,
# written for Debian's packages. Its rules, kept on purpose (tests must meet
# the official image's traps, not a kinder stand-in):
#  - arguments starting with "-" are options of mariadbd;
#  - started as root it prepares the data and socket directories and re-runs
#    itself as mysql (uid 999); started as 999 it runs as is;
#  - an empty data directory is initialised once: root password
#    (MARIADB_ROOT_PASSWORD / _FILE, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD,
#    MARIADB_RANDOM_ROOT_PASSWORD, MARIADB_ROOT_HOST), the healthcheck users and
#    $DATADIR/.my-healthcheck.cnf, MARIADB_DATABASE, MARIADB_USER/PASSWORD, time
#    zones (unless MARIADB_INITDB_SKIP_TZINFO), then /docker-entrypoint-initdb.d
#    (*.sh sourced or run, *.sql, *.sql.gz, *.sql.xz, *.sql.zst) against a
#    temporary server without networking; MYSQL_* names are accepted too;
#  - a data directory that already holds a database is never initialised; a
#    missing .my-healthcheck.cnf or an older mysql_upgrade_info is repaired only
#    with MARIADB_AUTO_UPGRADE set (as upstream: without it, healthcheck.sh
#    --innodb_initialized fails on, e.g., a data directory restored by mariabackup).
# Not implemented: MARIADB_REPLICATION_*/MARIADB_MASTER_HOST, Galera, the
# system-table backup before an upgrade.
set -eo pipefail
shopt -s nullglob

mysql_log() { printf '%s [%s] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$1" "${*:2}"; }
mysql_note() { mysql_log Note "$@"; }
mysql_warn() { mysql_log Warn "$@" >&2; }
mysql_error() { mysql_log ERROR "$@" >&2; exit 1; }

# file_env VAR [DEFAULT]: VAR or the content of the file named by VAR_FILE.
file_env() {
  local var="$1" fileVar="${1}_FILE" def="${2:-}"
  if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
    mysql_error "Both $var and $fileVar are set (but are exclusive)"
  fi
  local val="$def"
  if [ "${!var:-}" ]; then
    val="${!var}"
  elif [ "${!fileVar:-}" ]; then
    val="$(<"${!fileVar}")"
  fi
  export "$var"="$val"
  unset "$fileVar"
}

# mysql_get_config NAME ARGS...: a server option's value as mariadbd sees it.
mysql_get_config() {
  local conf="$1"
  shift
  "$@" --verbose --help 2>/dev/null | awk -v conf="$conf" '$1 == conf && /^[^ \t]/ { sub(/^[^ \t]+[ \t]+/, ""); print; exit }'
}

docker_setup_env() {
  declare -g DATADIR SOCKET PORT DATABASE_ALREADY_EXISTS
  DATADIR="$(mysql_get_config datadir "$@")"
  DATADIR="${DATADIR%/}"
  SOCKET="$(mysql_get_config socket "$@")"
  PORT="$(mysql_get_config port "$@")"
  # MYSQL_* are the older names of the MARIADB_* variables.
  local v
  for v in ROOT_PASSWORD ROOT_HOST DATABASE USER PASSWORD; do
    file_env "MYSQL_$v"
    file_env "MARIADB_$v" "$(eval echo "\${MYSQL_$v:-}")"
  done
  file_env MARIADB_ALLOW_EMPTY_ROOT_PASSWORD "${MYSQL_ALLOW_EMPTY_PASSWORD:-}"
  file_env MARIADB_RANDOM_ROOT_PASSWORD "${MYSQL_RANDOM_ROOT_PASSWORD:-}"
  file_env MARIADB_INITDB_SKIP_TZINFO "${MYSQL_INITDB_SKIP_TZINFO:-}"
  : "${MARIADB_ROOT_HOST:=%}"
  DATABASE_ALREADY_EXISTS=
  if [ -d "$DATADIR/mysql" ]; then
    DATABASE_ALREADY_EXISTS=true
  fi
}

docker_create_db_directories() {
  mkdir -p "$DATADIR"
  if [ "$(id -u)" = 0 ]; then
    # Only what is not mysql's already: a large data directory is left alone.
    find "$DATADIR" \! -user mysql -exec chown mysql: '{}' +
    local socketdir
    socketdir="$(dirname "$SOCKET")"
    mkdir -p "$socketdir"
    find "$socketdir" -maxdepth 0 \! -user mysql -exec chown mysql: '{}' \;
  fi
}

docker_verify_minimum_env() {
  if [ -z "$MARIADB_ROOT_PASSWORD" ] && [ -z "$MARIADB_ALLOW_EMPTY_ROOT_PASSWORD" ] && [ -z "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
    mysql_error $'Database is uninitialized and password option is not specified\n\tYou need to specify one of MARIADB_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD_HASH, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD'
  fi
  if [ -n "$MARIADB_USER" ] && [ "$MARIADB_USER" = root ]; then
    mysql_error "MARIADB_USER=root: use MARIADB_ROOT_PASSWORD for the root user"
  fi
}

docker_init_database_dir() {
  mysql_note "Initializing database files"
  mariadb-install-db --datadir="$DATADIR" --rpm --auth-root-authentication-method=normal \
    --skip-test-db --old-mode='UTF8_IS_UTF8MB3' --default-time-zone=SYSTEM --enforce-storage-engine= \
    --skip-log-bin --expire-logs-days=0 \
    --loose-innodb_buffer_pool_load_at_startup=0 --loose-innodb_buffer_pool_dump_at_shutdown=0 \
    "${@:2}"
  mysql_note "Database files initialized"
}

# docker_process_sql [OPTIONS...]: runs SQL from stdin against the temporary
# server as root (the function init scripts call, as upstream).
docker_process_sql() {
  if [ '--dont-use-mysql-root-password' = "$1" ]; then
    shift
    MYSQL_PWD='' mariadb --protocol=socket -uroot -hlocalhost --socket="$SOCKET" "$@"
  else
    MYSQL_PWD="${MARIADB_ROOT_PASSWORD:-}" mariadb --protocol=socket -uroot -hlocalhost --socket="$SOCKET" "$@"
  fi
}

# docker_sql_escape_string_literal STRING: escaped for a '...' SQL literal.
docker_sql_escape_string_literal() {
  local escaped=${1//\\/\\\\}
  escaped="${escaped//$'\n'/\\n}"
  echo "${escaped//\'/\\\'}"
}

docker_temp_server_start() {
  "$@" --skip-networking --default-time-zone=SYSTEM --socket="$SOCKET" --wsrep_on=OFF \
    --expire-logs-days=0 --skip-slave-start \
    --loose-innodb_buffer_pool_load_at_startup=0 --loose-innodb_buffer_pool_dump_at_shutdown=0 &
  declare -g MARIADB_PID=$!
  mysql_note "Waiting for server startup"
  local i
  for i in {30..0}; do
    if docker_process_sql --dont-use-mysql-root-password --database=mysql <<<'SELECT 1' &>/dev/null ||
      docker_process_sql --database=mysql <<<'SELECT 1' &>/dev/null; then
      break
    fi
    kill -0 "$MARIADB_PID" 2>/dev/null || mysql_error "Unable to start server."
    sleep 1
  done
  [ "$i" != 0 ] || mysql_error "Unable to start server."
}

docker_temp_server_stop() {
  kill "$MARIADB_PID"
  wait "$MARIADB_PID" || true
}

create_healthcheck_users() {
  local pw host grant="${MARIADB_HEALTHCHECK_GRANTS:-USAGE}"
  pw="$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 || true)"
  local sql="SET @@SESSION.SQL_LOG_BIN=0;"
  for host in 127.0.0.1 ::1 localhost; do
    sql+="CREATE USER IF NOT EXISTS healthcheck@'$host' IDENTIFIED BY '$pw'; GRANT $grant ON *.* TO healthcheck@'$host';"
  done
  "$@" <<<"$sql"
  local maskPreserve
  maskPreserve="$(umask)"
  umask 0077
  printf '[mariadb-client]\nport=%s\nsocket=%s\nuser=healthcheck\npassword=%s\n' "$PORT" "$SOCKET" "$pw" \
    >"$DATADIR/.my-healthcheck.cnf"
  umask "$maskPreserve"
}

docker_setup_db() {
  if [ -z "$MARIADB_INITDB_SKIP_TZINFO" ] && [ -d /usr/share/zoneinfo ]; then
    { echo 'SET @@SESSION.SQL_LOG_BIN=0;'; mariadb-tzinfo-to-sql --skip-write-binlog /usr/share/zoneinfo 2>/dev/null; } |
      docker_process_sql --dont-use-mysql-root-password --database=mysql
  fi
  if [ -n "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
    MARIADB_ROOT_PASSWORD="$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 || true)"
    export MARIADB_ROOT_PASSWORD
    mysql_note "GENERATED ROOT PASSWORD: $MARIADB_ROOT_PASSWORD"
  fi
  local rootPw rootHost=''
  rootPw="$(docker_sql_escape_string_literal "$MARIADB_ROOT_PASSWORD")"
  if [ "$MARIADB_ROOT_HOST" != localhost ]; then
    rootHost="CREATE USER IF NOT EXISTS root@'${MARIADB_ROOT_HOST}' IDENTIFIED BY '$rootPw';
      GRANT ALL ON *.* TO root@'${MARIADB_ROOT_HOST}' WITH GRANT OPTION;
      GRANT PROXY ON ''@'%' TO root@'${MARIADB_ROOT_HOST}' WITH GRANT OPTION;"
  fi
  local db='' user=''
  if [ -n "$MARIADB_DATABASE" ]; then
    db="CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;"
  fi
  if [ -n "$MARIADB_USER" ] && [ -n "$MARIADB_PASSWORD" ]; then
    local userPw
    userPw="$(docker_sql_escape_string_literal "$MARIADB_PASSWORD")"
    user="CREATE USER '$MARIADB_USER'@'%' IDENTIFIED BY '$userPw';"
    if [ -n "$MARIADB_DATABASE" ]; then
      user+="GRANT ALL ON \`${MARIADB_DATABASE//_/\\_}\`.* TO '$MARIADB_USER'@'%';"
    fi
  fi
  mysql_note "Securing system users (equivalent to running mysql_secure_installation)"
  docker_process_sql --dont-use-mysql-root-password --database=mysql --binary-mode <<-EOSQL
	SET @@SESSION.SQL_LOG_BIN=0;
	SET @@SESSION.SQL_MODE=REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');
	DROP USER IF EXISTS root@'127.0.0.1', root@'::1';
	EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname,'\'');
	SET PASSWORD FOR root@'localhost'=PASSWORD('${rootPw}');
	${rootHost}
	${db}
	${user}
	EOSQL
  create_healthcheck_users docker_process_sql --database=mysql
}

docker_process_init_files() {
  echo
  local f
  for f; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          mysql_note "$0: running $f"
          "$f"
        else
          mysql_note "$0: sourcing $f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql) mysql_note "$0: running $f"; docker_process_sql <"$f"; echo ;;
      *.sql.gz) mysql_note "$0: running $f"; gunzip -c "$f" | docker_process_sql; echo ;;
      *.sql.xz) mysql_note "$0: running $f"; xzcat "$f" | docker_process_sql; echo ;;
      *.sql.zst) mysql_note "$0: running $f"; zstd -dc "$f" | docker_process_sql; echo ;;
      *) mysql_warn "$0: ignoring $f" ;;
    esac
    echo
  done
}

# The server's version as recorded by mariadb-upgrade, and as installed.
mariadb_upgrade_needed() {
  if [ ! -f "$DATADIR/.my-healthcheck.cnf" ]; then
    mysql_note "MariaDB healthcheck configuration file missing, assuming desirable"
    return 0
  fi
  local installed recorded
  installed="$(mariadbd --version | sed -E 's/.*Ver ([0-9]+\.[0-9]+\.[0-9]+).*/\1/')"
  recorded="$(sed -E 's/^([0-9]+\.[0-9]+\.[0-9]+).*/\1/' "$DATADIR/mysql_upgrade_info" 2>/dev/null || true)"
  if [ -z "$recorded" ]; then
    mysql_note "MariaDB upgrade information missing, assuming required"
    return 0
  fi
  [ "$recorded" != "$installed" ]
}

docker_mariadb_upgrade() {
  mysql_note "Starting temporary server for the upgrade"
  docker_temp_server_start "$@" --skip-grant-tables
  if [ ! -f "$DATADIR/.my-healthcheck.cnf" ]; then
    mysql_note "Creating the healthcheck users"
    create_healthcheck_users docker_process_sql --dont-use-mysql-root-password --database=mysql --init-command='FLUSH PRIVILEGES'
  fi
  mysql_note "Running mariadb-upgrade"
  mariadb-upgrade --upgrade-system-tables --socket="$SOCKET" -uroot || mysql_warn "mariadb-upgrade failed"
  docker_temp_server_stop
  mysql_note "Upgrade finished"
}

_mariadb_wants_help() {
  local arg
  for arg; do
    case "$arg" in
      -'?' | --help | --print-defaults | -V | --version) return 0 ;;
    esac
  done
  return 1
}

_main() {
  if [ "${1:0:1}" = '-' ]; then
    set -- mariadbd "$@"
  fi
  if { [ "$1" = mariadbd ] || [ "$1" = mysqld ]; } && ! _mariadb_wants_help "$@"; then
    mysql_note "Entrypoint script for MariaDB Server $(mariadbd --version | sed -E 's/.*Ver ([^ ]+).*/\1/') started."
    docker_setup_env "$@"
    docker_create_db_directories
    if [ "$(id -u)" = 0 ]; then
      mysql_note "Switching to dedicated user 'mysql'"
      exec setpriv --reuid=mysql --regid=mysql --init-groups "${BASH_SOURCE[0]}" "$@"
    fi
    if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
      docker_verify_minimum_env
      # A leftover socket (say, a server that crashed) keeps the temporary server from starting.
      rm -f "$SOCKET" "$SOCKET.lock"
      docker_init_database_dir "$@"
      mysql_note "Starting temporary server"
      docker_temp_server_start "$@"
      mysql_note "Temporary server started."
      docker_setup_db
      docker_process_init_files /docker-entrypoint-initdb.d/*
      mysql_note "Stopping temporary server"
      docker_temp_server_stop
      mysql_note "Temporary server stopped"
      echo
      mysql_note "MariaDB init process done. Ready for start up."
      echo
    elif mariadb_upgrade_needed; then
      if [ -n "$MARIADB_AUTO_UPGRADE" ]; then
        docker_mariadb_upgrade "$@"
      else
        mysql_note "MariaDB upgrade (mariadb-upgrade or creating healthcheck users) required, but skipped due to \$MARIADB_AUTO_UPGRADE setting"
      fi
    fi
  fi
  exec "$@"
}

# Init scripts may source this file for its functions; only a direct run starts a server.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  _main "$@"
fi
