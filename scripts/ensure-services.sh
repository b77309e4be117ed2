#!/usr/bin/env bash
# Makes sure the servers and tools the tests need are there: uses what is reachable,
# otherwise starts a throwaway instance, and installs Debian packages only when missing.
#   PostgreSQL on 127.0.0.1:5432 (started as the postgres user: it refuses root)
#   Redis on 127.0.0.1:6379
#   Kannel (bearerbox, smsbox, and kannel-extras' drive_smpp) for the SMPP interop tests
#   pcscd with the vpcd driver (virtual card on 127.0.0.1:35963) for the PC/SC tests
#   SoftHSM2 for the PKCS#11 key-store tests
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "ensure-services: need root to run: $*" >&2; return 1; fi; }
updated=0
apt_install() {
  if [ "$updated" = 0 ]; then as_root apt-get update -qq >/dev/null; updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- PostgreSQL ---------------------------------------------------------------
if ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$ver" ]; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
  if ! port_open 5432; then
    # No cluster to start: a throwaway one under /tmp, owned by postgres.
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    dir=/tmp/stkpay-pg
    as_root install -d -o postgres -g postgres "$dir"
    as_root su postgres -s /bin/sh -c "[ -f $dir/PG_VERSION ] || $bindir/initdb -A trust -U postgres -D $dir >/dev/null"
    as_root su postgres -s /bin/sh -c "$bindir/pg_ctl -D $dir -o '-p 5432 -k /tmp -c listen_addresses=127.0.0.1' -l $dir/log -w start >/dev/null"
  fi
fi
port_open 5432 && echo "ensure-services: PostgreSQL on 127.0.0.1:5432"

# --- Redis --------------------------------------------------------------------
if ! port_open 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/stkpay-redis.log
  for _ in $(seq 50); do port_open 6379 && break; sleep 0.1; done
fi
port_open 6379 && echo "ensure-services: Redis on 127.0.0.1:6379"

# --- Kannel (interop) ---------------------------------------------------------
if ! command -v bearerbox >/dev/null && [ ! -x /usr/sbin/bearerbox ]; then
  apt_install kannel || echo "ensure-services: could not install kannel" >&2
fi
if [ ! -x /usr/lib/kannel/test/drive_smpp ]; then
  apt_install kannel-extras || echo "ensure-services: could not install kannel-extras" >&2
fi
[ -x /usr/sbin/bearerbox ] && echo "ensure-services: Kannel $(dpkg-query -W -f='${Version}' kannel 2>/dev/null)"
# --- PC/SC: pcscd + vpcd -------------------------------------------------------
if [ ! -x /usr/sbin/pcscd ] || [ ! -e /usr/lib/pcsc/drivers/serial/libifdvpcd.so ]; then
  apt_install pcscd vsmartcard-vpcd || echo "ensure-services: could not install pcscd/vpcd" >&2
fi
if [ -x /usr/sbin/pcscd ] && ! port_open 35963; then
  as_root /usr/sbin/pcscd || true
  for _ in $(seq 50); do port_open 35963 && break; sleep 0.1; done
fi
port_open 35963 && echo "ensure-services: pcscd with vpcd on 127.0.0.1:35963"

# --- SoftHSM2 (PKCS#11) ---------------------------------------------------------
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then
  apt_install softhsm2 || echo "ensure-services: could not install softhsm2" >&2
fi
[ -e /usr/lib/softhsm/libsofthsm2.so ] && echo "ensure-services: SoftHSM2 $(dpkg-query -W -f='${Version}' softhsm2 2>/dev/null)"
exit 0
