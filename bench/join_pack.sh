#!/usr/bin/env bash
# Join a crop pack that travelled in parts (`bench/device_weights.py split-pack`) and check it.
#
#   bash bench/join_pack.sh RUN [STASH]
#
# RUN holds train_config.json and crops.npz.sha256; STASH (default /tmp/agecheck-stash) the
# parts crops.npz.partNN that earlier calls left there. Writes RUN/crops.npz, or exits 1 with
# one line saying what is missing or wrong. Nothing to do when RUN/crops.npz already exists.
set -uo pipefail
run=$1; stash=${2:-/tmp/agecheck-stash}
[ -f "$run/crops.npz" ] && exit 0
if [ ! -f "$run/crops.npz.sha256" ]; then
  echo "error: no $run/crops.npz and no $run/crops.npz.sha256; expected a pack or a split pack's checksum" >&2; exit 1
fi
shopt -s nullglob
parts=("$stash"/crops.npz.part*)
if [ ${#parts[@]} -eq 0 ]; then
  echo "error: no crops.npz.part* in $stash; expected the parts that earlier calls copied there" >&2; exit 1
fi
cat "${parts[@]}" > "$run/crops.npz.joining"
if ! (cd "$run" && sed 's/crops\.npz$/crops.npz.joining/' crops.npz.sha256 | sha256sum --check --status); then
  rm -f "$run/crops.npz.joining"
  echo "error: ${#parts[@]} parts in $stash do not make the pack of $run/crops.npz.sha256; expected every part, once" >&2
  exit 1
fi
mv "$run/crops.npz.joining" "$run/crops.npz"
echo "joined ${#parts[@]} parts into $run/crops.npz"
