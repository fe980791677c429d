#!/usr/bin/env bash
# Debian's packages the tests need: Prometheus, node_exporter, Alertmanager and Chromium.
# Installs them when missing (as root), after making sure apt starts no daemon on 0.0.0.0;
# otherwise says exactly what to run.
set -euo pipefail

missing=()
for pair in prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager \
            prometheus-node-exporter:prometheus-node-exporter chromium:chromium; do
  binary=${pair%%:*} package=${pair##*:}
  command -v "$binary" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo scripts/system-deps.sh   (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi

# Debian's postinst would start the daemons listening on 0.0.0.0: forbid service starts.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "installing ${missing[*]} from Debian's packages"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
for service in prometheus prometheus-alertmanager prometheus-node-exporter; do
  service "$service" stop >/dev/null 2>&1 || true
done
