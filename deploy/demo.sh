#!/usr/bin/env bash
# The main job: a local cluster (2 shards, 1 serving replica) trains on a stream and answers
# predictions. Usage: demo.sh [DATA] [EVENTS]; DATA may be a MovieLens-100k directory or an
# event file; without it, a seeded synthetic stream of EVENTS events.
set -euo pipefail
data="${1:-}"
events="${2:-200000}"
dir=".deltaps"
trap 'deltaps down --cluster "$dir/cluster.json" >/dev/null 2>&1 || true' EXIT

spec=()
if [[ -n "$data" && -f "$data/u.data" ]]; then
    python -c 'from worker.sources import MOVIELENS_SPEC_TOML; print(MOVIELENS_SPEC_TOML)' > "$dir.movielens.toml"
    spec=(--spec "$dir.movielens.toml")
fi

echo "== deltaps up"
deltaps up "${spec[@]}" --dir "$dir"
echo
echo "== deltaps train"
if [[ -n "$data" ]]; then
    deltaps train "$data" --cluster "$dir/cluster.json" --batch-size 32
    sample='{"user": 196, "item": 242, "age": 49, "gender": "M", "occupation": "writer", "genres": ["Comedy"]}'
else
    deltaps train "synthetic:$events:7" --cluster "$dir/cluster.json" --batch-size 1024
    sample='{"c1": 3, "c2": 17, "i1": 4.0, "i2": 120.0}'
fi
echo
echo "== deltaps status"
deltaps status --cluster "$dir/cluster.json"
echo
echo "== deltaps predict $sample {}"
deltaps predict --cluster "$dir/cluster.json" "$sample" '{}'
echo
echo "== deltaps down"
deltaps down --cluster "$dir/cluster.json"
trap - EXIT
