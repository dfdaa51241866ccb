#!/usr/bin/env bash
# Install or remove agecheck as a kiosk service. Run as root from the project folder:
#   sudo systemd/install.sh            install, enable and start
#   sudo systemd/install.sh --remove   stop, disable, remove /opt/agecheck and the unit
#                                      (keeps /etc/agecheck and /var/log/agecheck)
# DESTDIR stages the files under another root (packaging, tests); SYSTEMCTL replaces the
# systemctl command; PIP_INSTALL_ARGS adds pip options.
set -euo pipefail
cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
PREFIX=$DESTDIR/opt/agecheck
UNIT=$DESTDIR/etc/systemd/system/agecheck.service

if [[ ${1:-} == --remove ]]; then
    $SYSTEMCTL disable --now agecheck.service || true
    rm -f "$UNIT"
    rm -rf "$PREFIX"
    $SYSTEMCTL daemon-reload
    echo "agecheck removed; /etc/agecheck and /var/log/agecheck were kept"
    exit 0
fi

for needed in models/age_resnet50_int8.tflite models/age_resnet50_int8.json; do
    [[ -f $needed ]] || { echo "error: $needed is missing: the kiosk needs the age model and its card" >&2; exit 1; }
done
python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet ${PIP_INSTALL_ARGS:-} ".[metrics]"
install -d "$PREFIX/models"
install -m 0644 models/*.tflite models/*.json models/NOTICE.md "$PREFIX/models/"
install -m 0644 README.md "$PREFIX/README.md"
install -d "$DESTDIR/etc/agecheck"
# Never overwrite an operator's config.
[[ -e $DESTDIR/etc/agecheck/config.toml ]] || install -m 0644 systemd/config.toml "$DESTDIR/etc/agecheck/config.toml"
install -D -m 0644 systemd/agecheck.service "$UNIT"
$SYSTEMCTL daemon-reload
$SYSTEMCTL enable --now agecheck.service
echo "agecheck installed: journalctl -u agecheck -f for logs, /var/log/agecheck/events.jsonl for events"
