#!/usr/bin/env bash
# `make wheel-check`: build the wheel, install it into a fresh virtual environment outside the checkout
# and run the CLI stages from an empty folder, so that a file the wheel lacks fails here.
# The fresh environment sees the project environment's dependencies (one .pth line, written after the
# install) but not its editable dskd: a path line of a .pth file is not scanned for further .pth files.
# Usage: scripts/wheel_check.sh PYTHON (the project environment's python; nothing is downloaded).
set -euo pipefail
py="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
root="$(pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo ">>> building the wheel from a copy of the checkout's files"
mkdir "$work/src"
git -C "$root" ls-files -z --cached --others --exclude-standard | (cd "$root" && xargs -0 cp --parents -t "$work/src")
"$py" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$work/dist" "$work/src"

echo ">>> installing $(basename "$work"/dist/dskd-*.whl) into a fresh venv"
"$py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$work"/dist/dskd-*.whl
"$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$work/purelib"
"$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$(cat "$work/purelib")/project-deps.pth"

echo ">>> running the installed dskd from an empty folder"
mkdir "$work/empty"
cd "$work/empty"
dskd="$work/venv/bin/dskd"
"$work/venv/bin/python" -c '
import sys, dskd
assert dskd.__file__.startswith(sys.prefix), f"dskd imported from {dskd.__file__}, not from the wheel"
print("dskd", dskd.__version__, "from", dskd.__file__)'
"$dskd" --help >/dev/null
config="$("$work/venv/bin/python" -c 'from dskd.resources import resource; print(resource("presets", "tiny", "kd.yaml"))')"
"$dskd" slurm submit "$config" --nodes 1 --gpus-per-node 0 --dry-run | grep -q '^#SBATCH --nodes=1$'
"$dskd" reproduce --preset smoke --rehearse
test -s artifacts/rehearse/smoke/results/table.md
echo ">>> wheel check passed"
