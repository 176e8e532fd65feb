"""`deltaps train` / `python -m deploy.nodes.worker`: stream a source into a running cluster."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import click

from common.config import ClusterFile, load_spec
from common.errors import DeltapsError
from common.security import install as install_curve
from deploy.progress import Curve, TrainingDisplay, check_plot_path, plot_curve
from deploy.runtime.allocator import WORKER_TRIM_THRESHOLD, keep_message_buffers_on_heap
from deploy.runtime.placement import place
from deploy.runtime.priority import lower_cpu_priority
from deploy.workers import register, unregister
from worker.ps_client import PSClient
from worker.sources import open_source
from worker.trainer import Trainer


# Events per mini-batch when --batch-size is not given. A linear model learns event by event,
# so its batch size changes only speed: a larger batch means fewer requests to every shard for
# the same events, until its arrays outgrow the caches (`make bench`'s planted section times
# it). A deep model takes one optimizer step per mini-batch, so its batch size is part of how
# it learns.
DEFAULT_BATCH = {"linear": 8192, "deep": 4096}


@click.command("train")
@click.argument("source")
@click.option("--cluster", "cluster_file", default=".deltaps/cluster.json", show_default=True,
              help="Cluster file of the running cluster.")
@click.option("--spec", "spec_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Spec TOML naming the shards' hosts ([cluster] shard_hosts), instead of a "
                   "cluster file (e.g. in Kubernetes).")
@click.option("--model", default=None, help="Model to train (default: the cluster's only model).")
@click.option("--batch-size", default=None, type=click.IntRange(1, 1 << 20),
              help="Events per mini-batch (default: 8192 for a linear model, 4096 for a deep "
                   "one).")
@click.option("--limit", default=None, type=click.IntRange(1), help="Stop after this many events.")
@click.option("--format", "fmt", default=None,
              type=click.Choice(["jsonl", "tsv", "csv", "vw", "libsvm"]),
              help="Format of stdin ('-') or of a file whose extension does not tell "
                   "(vw: Vowpal Wabbit text; libsvm: svmlight).")
@click.option("--schema", default=None,
              help="Columns of a TSV/CSV source, e.g. 'label,age:num,city:cat,id:skip'.")
@click.option("--pipeline/--no-pipeline", default=True, show_default=True,
              help="Featurize the next batch while the last push is in flight (same weights "
                   "either way for a single worker).")
@click.option("--max-delay", default=0, show_default=True, type=click.IntRange(0, 64),
              help="Bounded delay: how many of its own latest pushes a batch's pulled weights "
                   "may miss, so shards and worker never wait on each other (0: exact).")
@click.option("--nice", default=None, type=click.IntRange(0, 19),
              help="CPU niceness to train at, so serving and shards on the same machine come "
                   "first (default: [cluster] worker_nice of the spec).")
@click.option("--follow", is_flag=True,
              help="SOURCE is a JSON lines file to learn as it grows (like tail -F, surviving "
                   "rotation), exactly once: its learned offset is kept in SOURCE.deltaps.")
@click.option("--until-empty", is_flag=True,
              help="End a stream source (redis://, --follow) once it has nothing more to "
                   "deliver, instead of waiting for more.")
@click.option("--worker-id", default=None,
              help="The worker's identity towards the shards (default: the source's, e.g. a "
                   "Redis consumer's stream/group/name; random for files).")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
@click.option("--plot", "plot_path", default=None, metavar="PNG",
              help="Draw progressive log loss and AUC against events into this PNG file.")
@click.option("--metrics", "metrics", default="auto", show_default=True, metavar="HOST:PORT",
              help="Serve /metrics (events learned, progressive log loss and AUC) on HOST:PORT "
                   "while training; auto: a free port on the spec's host; off: none.")
def main(source, cluster_file, spec_file, model, batch_size, limit, fmt, schema, pipeline, max_delay, nice,
         follow, until_empty, worker_id, as_json, plot_path, metrics):
    """Train on SOURCE: a file (.tsv Criteo layout, .csv, .jsonl, .vw, .svm; .gz of any),
    '-' for stdin, a MovieLens-100k directory, or synthetic:EVENTS[:SEED] for the planted
    stream (nonlinear:EVENTS[:SEED]: the planted pairwise one, for deep models), or
    redis://HOST:PORT/STREAM?group=GROUP[&consumer=NAME] for a Redis stream, learned exactly
    once; with --follow, a JSON lines file as it grows. A stream source stops on SIGTERM after learning and acknowledging what it read."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    keep_message_buffers_on_heap(WORKER_TRIM_THRESHOLD)
    plot_file = check_plot_path(plot_path) if plot_path else None
    try:
        cluster = spec_cluster(spec_file) if spec_file else ClusterFile.load(cluster_file)
        # an ingest socket binds, as the nodes do, with the cluster's server key
        install_curve(cluster.spec.security, "worker", serves=source.startswith("zmq://"))
        lower_cpu_priority(cluster.spec.worker_nice if nice is None else nice)
        place("worker", cluster.spec.serving_cpus)
        model = model or cluster.default_model()
        batch_size = batch_size or DEFAULT_BATCH[cluster.spec.model(model).kind]
        src = open_source(source, fmt=fmt, schema=schema, until_empty=until_empty,
                          follow=follow)
        if hasattr(src, "stop"):
            signal.signal(signal.SIGTERM, lambda *_: src.stop())
        client = PSClient(cluster.shards(), max_bytes=cluster.spec.max_message_bytes,
                          worker_id=worker_id or getattr(src, "worker_id", None))
        trainer = Trainer(client, cluster.spec, model, batch_size, pipeline, max_delay)
        exporter = serve_metrics(metrics, cluster, None if spec_file else cluster_file, trainer,
                                 source)
        with exporter, TrainingDisplay(src, limit, Curve() if plot_file else None) as display:
            summary = trainer.train(src, limit, progress=display,
                                    progress_every_s=display.interval)
            m = trainer.metrics
            display.finish({"events": m.count, "events_per_s": summary.events_per_s,
                            "logloss": m.logloss, "recent_logloss": m.recent_logloss,
                            "auc": m.auc(), "recent_auc": m.recent_auc()})
        client.close()
        getattr(src, "close", lambda: None)()  # a stream source's connection or socket
    except (DeltapsError, ValueError, OSError, ImportError) as exc:
        raise click.ClickException(str(exc))
    bayes = getattr(src, "bayes_logloss", None)
    out = summary.as_dict()
    if bayes is not None:
        out["bayes_logloss"] = bayes
    if plot_file:
        plot_curve(display.curve, plot_file, f"deltaps train {source} ({model}, batch "
                   f"{batch_size})", bayes, trainer.metrics.window)
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"trained {model}: {summary.events:,d} events in {summary.seconds:.1f}s "
               f"({summary.events_per_s:,.0f} ev/s)")
    click.echo(f"progressive logloss {summary.logloss:.4f}   AUC {summary.auc:.4f}"
               + (f"   (Bayes-optimal logloss {bayes:.4f})" if bayes is not None else ""))
    if summary.malformed:
        click.echo(f"skipped {summary.malformed} malformed line(s); see warnings above", err=True)


def spec_cluster(spec_file: str) -> ClusterFile:
    spec = load_spec(spec_file)
    if not spec.shard_hosts:
        raise click.UsageError(f"--spec {spec_file}: without a cluster file the spec must name "
                               "the shards' hosts ([cluster] shard_hosts)")
    return ClusterFile(spec, spec.shard_nodes())


class serve_metrics:
    """The worker's /metrics endpoint while it trains, noted for `deltaps status`: bound before
    training starts (an address that is taken is an error at once, the default `auto` takes a
    free port of the cluster's host), its HTTP server and Prometheus families made when the
    first scrape comes (`common.plain_httpd`), so a run nobody scrapes pays for neither."""

    def __init__(self, listen: str, cluster: ClusterFile, cluster_file: str | None,
                 trainer: Trainer, source: str):
        self.server = self.note = None
        if listen == "off":
            return
        from common.plain_httpd import PlainMetricsServer, parse_listen
        if listen == "auto":
            address = (cluster.spec.host, 0)
        else:
            try:
                address = parse_listen(listen)
            except ValueError as exc:
                raise click.UsageError(f"--metrics: {exc}")

        def families():
            from common.telemetry import NodeMetrics
            from worker.exporter import watch_trainer
            metrics = NodeMetrics("worker", os.getpid())
            watch_trainer(metrics, trainer)
            return metrics

        try:
            self.server = PlainMetricsServer(*address, families).start()
        except DeltapsError as exc:
            if listen != "auto":
                raise
            # the cluster's host may be another machine's: training goes on without it
            click.echo(f"warning: the worker's /metrics endpoint did not start: {exc}",
                       err=True)
            return
        if cluster_file is not None:  # no cluster file, no `deltaps status` to show it
            self.note = register(cluster_file, trainer.model.name, source, self.server.url)

    def __enter__(self):
        return self

    def __exit__(self, *_exc) -> None:
        if self.note is not None:
            unregister(self.note)
        if self.server is not None:
            self.server.stop()


if __name__ == "__main__":
    sys.exit(main(auto_envvar_prefix="DELTAPS_TRAIN"))
