"""Adaptive batching: the same MovieLens events trained as a slow live stream and as a flood.

A live source hands the trainer what has arrived; at a low event rate batches stay small (good
for quality: users rate in bursts, see DESIGN §6), at full speed they grow to the maximum. Both
ends run through the full cluster (2 shards, 1 replica) with the same maximum batch size.
"""
from __future__ import annotations

import numpy as np

from bench.report import HIGHER, LOWER, figure
from deploy.local import LocalCluster
from worker.pacing import PacedSource
from worker.ps_client import PSClient
from worker.sources import MOVIELENS_SPEC_TOML, MovieLensSource
from worker.trainer import Trainer

MAX_BATCH = 1024


def _train(ctx, name: str, events: int, rate: float | None) -> dict:
    c = LocalCluster(ctx.workdir / f"adaptive-{name}", MOVIELENS_SPEC_TOML, 2, 1)
    try:
        c.start_all()
        client = PSClient(c.cluster.shards())
        source = MovieLensSource(ctx.movielens)
        paced = PacedSource(source, rate) if rate else None
        trainer = Trainer(client, c.spec, "movielens", MAX_BATCH)
        summary = trainer.train(paced or source, limit=events)
        client.close()
    finally:
        c.stop_all()
    sizes = np.array(paced.batch_sizes if paced else [MAX_BATCH])
    return {"rate": rate, "events": summary.events, "mean_batch": float(sizes.mean()),
            "p90_batch": float(np.percentile(sizes, 90)), "logloss": summary.logloss,
            "auc": summary.auc, "events_per_s": summary.events_per_s}


def run(ctx) -> dict:
    if ctx.movielens is None:
        return {"skipped": "no MovieLens-100k data"}
    events = 6000 if ctx.quick else 20000
    slow_rate = 1000.0
    slow = _train(ctx, "slow", events, slow_rate)
    fast = _train(ctx, "flood", events, None)
    rows = [[f"live stream at {slow_rate:,.0f} events/s", slow["mean_batch"], slow["p90_batch"],
             slow["logloss"], slow["auc"], slow["events_per_s"]],
            ["flood (file read at full speed)", fast["mean_batch"], fast["p90_batch"],
             fast["logloss"], fast["auc"], fast["events_per_s"]]]
    config = {"events": events, "max_batch": MAX_BATCH, "stream": "MovieLens-100k (first events)"}
    return {"figures": [figure("adaptive_slow_logloss", slow["logloss"], "", LOWER, config),
                        figure("adaptive_slow_mean_batch", slow["mean_batch"], "events", None),
                        figure("adaptive_flood_logloss", fast["logloss"], "", LOWER, config),
                        figure("adaptive_flood_events_per_s", fast["events_per_s"], "ev/s",
                               HIGHER, config)],
            "table": {"columns": ["input", "mean batch", "p90 batch", "logloss", "AUC", "ev/s"],
                      "rows": rows},
            "details": {"slow": slow, "flood": fast},
            "notes": [f"same first {events:,d} MovieLens events, max batch {MAX_BATCH}; the "
                      "trainer never waits for a batch to fill."]}
