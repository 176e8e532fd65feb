"""deploy/k8s and the Dockerfile, offline: every manifest validates against the Kubernetes
schemas (kubernetes-validate's bundled ones), every container's arguments are ones the
deltaps CLI accepts, and the names the nodes find each other by (the spec's shard_hosts, the
ports they listen on) are those the StatefulSet, the headless Service and the read Service
give them."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml

from common.config import load_spec
from deploy.cli import cli

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # pod-index labels (used for shard indexes) exist since 1.28
WANTED_KINDS = {"Namespace", "ConfigMap", "Secret", "StatefulSet", "Service", "Deployment",
                "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job"}


def documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def find(kind: str, name: str) -> dict:
    matches = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def containers() -> list[tuple[dict, dict]]:
    """(workload, container) of every pod template."""
    out = []
    for d in documents():
        if d["kind"] in ("StatefulSet", "Deployment", "Job"):
            out += [(d, c) for c in d["spec"]["template"]["spec"]["containers"]]
    return out


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def port_of(address: str) -> int:
    return int(re.search(r":(\d+)$", address).group(1))


def the_spec():
    return load_spec(text=find("ConfigMap", "deltaps-spec")["data"]["cluster.toml"])


@pytest.mark.parametrize("doc", documents(),
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_validates_against_the_kubernetes_schemas(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_manifests_hold_every_piece_and_live_in_one_namespace():
    docs = documents()
    assert WANTED_KINDS <= {d["kind"] for d in docs}
    namespace = find("Namespace", "deltaps")["metadata"]["name"]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        namespace}


def test_a_schema_violation_is_caught():  # the validation above can fail
    bad = find("Service", "deltaps-replica")
    bad["spec"]["ports"][0]["port"] = "six thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_shard_hosts_name_the_statefulset_pods_behind_the_headless_service():
    spec = the_spec()
    sts = find("StatefulSet", "deltaps-shard")
    service = find("Service", sts["spec"]["serviceName"])
    namespace = sts["metadata"]["namespace"]
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["replicas"] == spec.shards
    assert [n.address for n in spec.shard_nodes()] == [
        f"tcp://{sts['metadata']['name']}-{k}.{service['metadata']['name']}.{namespace}"
        f".svc.cluster.local:{spec.base_port}" for k in range(spec.shards)]
    # what the shard binds is what the others connect to, and the Service carries both ports
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert port_of(option(args, "--listen")) == port_of(spec.shard_nodes()[0].address)
    assert port_of(option(args, "--publish")) == port_of(spec.shard_nodes()[0].pub_address)
    assert {spec.base_port, spec.base_port + 1} <= {p["port"] for p in service["spec"]["ports"]}
    # the shard's index comes from its pod's ordinal, under the name `deltaps shard` reads
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DELTAPS_SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    # the shard's state is on the claimed volume, where the spec's data_dir says
    mounts = {m["name"]: m["mountPath"]
              for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]} == {"data"}
    assert mounts["data"] == spec.data_dir


def test_the_read_service_reaches_the_replicas_and_probes_use_their_endpoints():
    deployment = find("Deployment", "deltaps-replica")
    service = find("Service", "deltaps-replica")
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = container["args"]
    assert ports["predict"] == port_of(option(args, "--listen"))
    assert ports["http"] == port_of(option(args, "--http"))
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    hpa = find("HorizontalPodAutoscaler", "deltaps-replica")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pdb = find("PodDisruptionBudget", "deltaps-replica")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_every_container_is_bounded_reads_the_spec_and_runs_a_real_command():
    spec_map = find("ConfigMap", "deltaps-spec")["metadata"]["name"]
    secret = find("Secret", "deltaps-curve-keys")["metadata"]["name"]
    for workload, c in containers():
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        assert set(c["resources"]) == {"requests", "limits"}, name
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["spec"]["configMap"]["name"] == spec_map, name
        assert volumes["keys"]["secret"]["secretName"] == secret, name
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        args = c["args"]
        assert option(args, "--spec").startswith(mounts["spec"] + "/"), name
        assert "--metrics" in args and port_of(option(args, "--metrics")) == 9100, name
        pod_security = workload["spec"]["template"]["spec"]["securityContext"]
        assert pod_security["runAsNonRoot"] and pod_security["runAsUser"] != 0, name
        command = cli.get_command(click.Context(cli), args[0])
        assert command is not None, f"{name}: no command {args[0]!r}"
        known = {o for p in command.params for o in p.opts + p.secondary_opts}
        given = {a for a in args[1:] if a.startswith("--")}
        assert given <= known, f"{name}: unknown option(s) {given - known}"


def test_the_dockerfile_installs_the_package_on_a_slim_base_and_runs_as_a_user():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["deltaps"]' in text
    for package in ("common", "ps", "worker", "serving", "deploy"):
        assert re.search(rf"^COPY {package} {package}$", text, re.M), package
