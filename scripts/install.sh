#!/usr/bin/env bash
# Install or upgrade edged as a systemd service on a Jetson (JetPack) or a Debian/Ubuntu PC.
#
#   sudo scripts/install.sh [--no-start] [--no-models] [--dry-run]
#
# Safe to run again: the user, venv and directories are reused, the package is upgraded, the unit is
# replaced, and an existing /etc/edged/edged.yaml or credential is never overwritten.
# Offline installs: pip honours PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels from the environment.
set -euo pipefail

PREFIX=/opt/edged
VENV="$PREFIX/venv"
ETC=/etc/edged
STATE=/var/lib/edged
CACHE=/var/cache/edged
UNIT_DEST=/etc/systemd/system/edged.service
SERVICE_USER=edged
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

START=1
MODELS=1
DRY_RUN=0

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

Options:
  --no-start    install and enable the unit, but do not start or restart the service
  --no-models   skip `edged install-models` (models already in /var/lib/edged/models)
  --dry-run     print what would be done, change nothing (no root needed)
  -h, --help    this help
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-start) START=0 ;;
        --no-models) MODELS=0 ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

info() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Every change goes through run, so --dry-run shows the exact commands instead.
run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '    +'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
    die "run as root (sudo $0), or with --dry-run to see what it would do"
fi
[[ -f "$SRC/pyproject.toml" ]] || die "no pyproject.toml in $SRC; run the script from an edged checkout"

# --- Platform -----------------------------------------------------------------------------------
if [[ -f /etc/nv_tegra_release ]]; then
    JETSON=1
    # JetPack ships TensorRT, jetson-utils and a GStreamer/CUDA OpenCV as system packages; the venv must
    # see them, and a pip OpenCV wheel would shadow the system one, hence no `cv` extra here.
    EXTRAS="jetson"
    info "Jetson detected: $(head -n1 /etc/nv_tegra_release)"
else
    JETSON=0
    EXTRAS="cv"
    info "no /etc/nv_tegra_release: installing for a plain PC (OpenCV from pip)"
fi

command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "edged needs Python >= 3.10; this is $(python3 --version 2>&1)"
python3 -c 'import ensurepip, venv' 2>/dev/null \
    || die "python3 cannot create virtual environments (apt-get install python3-venv)"

HAVE_SYSTEMD=0
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    HAVE_SYSTEMD=1
else
    warn "systemd is not running here (container?): the unit is installed but not enabled or started"
fi

# --- Service user -------------------------------------------------------------------------------
if getent passwd "$SERVICE_USER" >/dev/null; then
    info "user $SERVICE_USER exists"
else
    info "creating system user $SERVICE_USER"
    run useradd --system --user-group --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin --comment "edged inference daemon" "$SERVICE_USER"
fi
for group in video render; do
    if getent group "$group" >/dev/null; then
        run usermod -a -G "$group" "$SERVICE_USER"
    else
        info "no group '$group' on this system; skipping it"
    fi
done

# --- Directories --------------------------------------------------------------------------------
# systemd creates State/CacheDirectory at start, but install-models writes before the first start.
run install -d -m 0755 "$PREFIX"
run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE" "$STATE/models" "$CACHE"
run install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC"
# Credentials are read by systemd (LoadCredential=) as root and handed to the service; edged never
# reads this directory itself.
run install -d -m 0700 -o root -g root "$ETC/credentials"

# --- Virtual environment ------------------------------------------------------------------------
want_site=false
[[ $JETSON -eq 1 ]] && want_site=true
make_venv=1
if [[ -x "$VENV/bin/python" && -f "$VENV/pyvenv.cfg" ]]; then
    make_venv=0
    have_site=$(sed -n 's/^include-system-site-packages *= *//p' "$VENV/pyvenv.cfg")
    if [[ "$have_site" != "$want_site" ]]; then
        warn "$VENV has include-system-site-packages=$have_site, want $want_site: recreating it"
        run rm -rf "$VENV"
        make_venv=1
    fi
fi
if [[ $make_venv -eq 1 ]]; then
    info "creating $VENV"
    if [[ $JETSON -eq 1 ]]; then
        run python3 -m venv --system-site-packages "$VENV"
    else
        run python3 -m venv "$VENV"
    fi
else
    info "reusing $VENV"
fi

info "installing edged[$EXTRAS] from $SRC"
run "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade \
    --upgrade-strategy only-if-needed "${SRC}[${EXTRAS}]"
if [[ $MODELS -eq 1 ]]; then
    # The PP-OCR ONNX files ship inside the rapidocr wheel; --no-deps because its own dependencies would
    # pull a second (pip) OpenCV over JetPack's.
    run "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps "rapidocr==3.10.0"
fi
if [[ $JETSON -eq 1 ]]; then
    # The PyPI onnxruntime wheel for aarch64 is CPU-only; TensorRT (from JetPack) is the GPU path here.
    if ! run "$VENV/bin/python" -c 'import tensorrt' 2>/dev/null; then
        warn "TensorRT is not importable from the venv; install JetPack's python3-libnvinfer"
    fi
fi
[[ -f "$SRC/README.md" ]] && run install -m 0644 "$SRC/README.md" "$PREFIX/README.md"

# --- Models -------------------------------------------------------------------------------------
if [[ $MODELS -eq 1 ]]; then
    info "installing models into $STATE/models"
    run "$VENV/bin/edged" install-models --dest "$STATE/models" \
        || die "edged install-models failed (rerun with --no-models to skip)"
    run chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE/models"
fi

# --- Configuration ------------------------------------------------------------------------------
CONFIG_SRC="$SRC/configs/examples/device.yaml"
if [[ -f "$CONFIG_SRC" ]]; then
    run install -m 0640 -o root -g "$SERVICE_USER" "$CONFIG_SRC" "$ETC/edged.yaml.example"
    if [[ -e "$ETC/edged.yaml" ]]; then
        info "keeping existing $ETC/edged.yaml (compare with $ETC/edged.yaml.example after upgrades)"
    else
        info "installing $ETC/edged.yaml (edit cameras, models and mqtt there)"
        run install -m 0640 -o root -g "$SERVICE_USER" "$CONFIG_SRC" "$ETC/edged.yaml"
    fi
else
    warn "$CONFIG_SRC not found; create $ETC/edged.yaml yourself"
fi
if [[ ! -e "$ETC/credentials/mqtt_password" ]]; then
    # LoadCredential= fails the unit when the file is missing; an empty one lets it start before a
    # password is set (reference it as ${cred:mqtt_password} in edged.yaml).
    info "creating empty $ETC/credentials/mqtt_password (write the broker password there)"
    run install -m 0600 -o root -g root /dev/null "$ETC/credentials/mqtt_password"
fi

# --- systemd unit -------------------------------------------------------------------------------
info "installing $UNIT_DEST"
run install -m 0644 "$SRC/systemd/edged.service" "$UNIT_DEST"
if [[ $HAVE_SYSTEMD -eq 1 ]]; then
    run systemctl daemon-reload
    if [[ $START -eq 1 ]]; then
        if [[ -e "$ETC/edged.yaml" ]] && ! run "$VENV/bin/edged" check-config "$ETC/edged.yaml"; then
            run systemctl enable edged.service
            die "$ETC/edged.yaml has errors (above); fix it, then: systemctl restart edged"
        fi
        was_active=0
        systemctl is-active --quiet edged.service && was_active=1
        run systemctl enable --now edged.service
        # enable --now leaves a running old version alone; an upgrade must restart it.
        [[ $was_active -eq 1 ]] && run systemctl restart edged.service
        info "edged is running: systemctl status edged; journalctl -u edged -f"
    else
        run systemctl enable edged.service
        info "enabled, not started (--no-start): systemctl start edged"
    fi
fi
info "done"
