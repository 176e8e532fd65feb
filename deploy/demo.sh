#!/usr/bin/env bash
# The main job: a local cluster (2 shards, 1 serving replica) trains on a stream and answers
# predictions, then stops. Usage: demo.sh [DATA] [EVENTS]. DATA may be a MovieLens-100k
# directory or an event file (.tsv Criteo layout, .csv, .jsonl); without it, EVENTS events of
# the seeded synthetic stream.
set -euo pipefail
data="${1:-}"
events="${2:-200000}"
dir=".deltaps"
cluster="$dir/cluster.json"
mkdir -p "$dir"
trap 'deltaps down --cluster "$cluster" >/dev/null 2>&1 || true' EXIT

if [[ -z "$data" ]]; then
    python -c 'from worker.sources import synthetic_spec_toml; print(synthetic_spec_toml())' > "$dir/spec.toml"
    source="synthetic:$events:7"
    samples=('{"c1": 3, "c2": 17, "c3": 1, "i1": 4.0, "i2": 120.0}' '{"c1": 900, "i5": 3000.0}')
elif [[ -f "$data/u.data" ]]; then
    python -c 'from worker.sources import MOVIELENS_SPEC_TOML; print(MOVIELENS_SPEC_TOML)' > "$dir/spec.toml"
    source="$data"
    samples=('{"user": 196, "item": 242, "age": 49, "gender": "M", "occupation": "writer", "genres": ["Comedy"]}'
             '{"user": 13, "item": 50, "age": 47, "gender": "M", "genres": ["Action", "Sci-Fi"]}')
else
    : > "$dir/spec.toml"  # the default model reads every field an event has
    source="$data"
    samples=('{}')
fi

echo "== deltaps up --spec $dir/spec.toml"
deltaps up --spec "$dir/spec.toml" --dir "$dir"
echo
echo "== deltaps train $source"
deltaps train "$source" --cluster "$cluster"
echo
echo "== deltaps status"
deltaps status --cluster "$cluster"
echo
echo "== deltaps predict ${samples[*]}"
deltaps predict --cluster "$cluster" "${samples[@]}"
echo
http=$(python -c 'import json,sys; print([n for n in json.load(open(sys.argv[1]))["nodes"] if n["role"] == "replica"][0]["http_address"])' "$cluster")
model=$(python -c 'import json,sys; print(sorted(json.load(open(sys.argv[1]))["spec"]["models"])[0])' "$cluster")
echo "== POST $http/v1/models/$model:predict (the same instances over HTTP)"
python - "$http/v1/models/$model:predict" "${samples[@]}" <<'PY'
import json, sys, urllib.request
body = json.dumps({"instances": [json.loads(s) for s in sys.argv[2:]]}).encode()
req = urllib.request.Request(sys.argv[1], body, {"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=10).read().decode())
PY
echo
echo "== deltaps down"
deltaps down --cluster "$cluster"
trap - EXIT
