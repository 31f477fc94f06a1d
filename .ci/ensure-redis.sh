#!/usr/bin/env bash
# Make sure a Redis answers on 127.0.0.1:6379 for the test suite.
# Under CI=true a Redis that cannot be reached is a failure; locally the Redis tests skip.
set -uo pipefail
ping() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
# The reliability tests start their own redis-server on free ports: CI installs the binary.
if ! command -v redis-server >/dev/null 2>&1 && [ "${CI:-}" = "true" ] && [ "$(id -u)" = "0" ]; then
  echo "redis: installing redis-server"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1 || true
fi
if ping; then echo "redis: 127.0.0.1:6379 answers"; exit 0; fi
if command -v redis-server >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  dir=/var/lib/redis; [ -w "$dir" ] || dir=$(mktemp -d)
  logf=/var/log/redis/ci.log; [ -w /var/log/redis ] || logf="$dir/redis.log"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir "$dir" --logfile "$logf" >/dev/null 2>&1 \
    || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir "$dir" --logfile "$logf"
  for _ in $(seq 1 50); do ping && { echo "redis: started local redis-server"; exit 0; }; sleep 0.1; done
fi
if [ "${CI:-}" = "true" ]; then
  echo "redis: ERROR: no Redis on 127.0.0.1:6379 and none could be started (CI=true requires it)" >&2
  exit 1
fi
echo "redis: WARNING: no Redis on 127.0.0.1:6379; Redis-backed tests will be skipped" >&2
