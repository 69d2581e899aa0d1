"""Turns a rendered set of Kubernetes manifests (stdin) into what `podman kube play` runs
(stdout), and writes the probes to check to the file named by the first argument, one a line
as shell assignments (pod= container= kind= and path= port=, tcp= or exec=(...)).

podman 4.3 plays Pods, Deployments, PersistentVolumeClaims, ConfigMaps and Secrets; it has no
Services, so each Deployment and StatefulSet becomes one Pod named after the Service that
selects it: on a podman network that name resolves to the pod, as the Service's would in a
cluster, and the manifests' own URLs (redis://guestbook-redis:6379, http://guestbook-backend:8080)
work unchanged. One replica each, except a StatefulSet of several replicas (redis.mode=sentinel:
Redis and its Sentinels), which are named by pod (POD.SERVICE, their headless Service): each
ordinal becomes a Pod named `NAME-i.SERVICE`, which podman's DNS resolves as the cluster's would,
and `metadata.name` in its environment becomes the literal `NAME-i` (podman would give the pod's
own, longer name). A StatefulSet's volumeClaimTemplates become PVCs (podman volumes), one per
pod. Everything else is left out and listed on stderr: it needs a cluster.
"""

import copy
import shlex
import sys

import yaml

PLAYED = {"ConfigMap", "Secret", "PersistentVolumeClaim"}
WORKLOADS = {"Deployment", "StatefulSet"}


def selects(service, labels):
    selector = (service.get("spec") or {}).get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main():
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    services = [d for d in docs if d["kind"] == "Service"]
    out, probes, left_out = [], [], []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in PLAYED:
            out.append(doc)
            continue
        if kind == "Pod" and "helm.sh/hook" in (doc["metadata"].get("annotations") or {}):
            left_out.append(f"{kind}/{name} (a helm test hook)")
            continue
        if kind not in WORKLOADS:
            left_out.append(f"{kind}/{name}")
            continue
        labels = doc["spec"]["template"]["metadata"].get("labels") or {}
        # The headless Service of a StatefulSet and the ClusterIP one select the same pods: any will do.
        service = next((s["metadata"]["name"] for s in services if selects(s, labels)), name)
        replicas = doc["spec"].get("replicas", 1)
        if kind == "StatefulSet" and replicas > 1:
            pods = [(f"{name}-{i}.{doc['spec']['serviceName']}", f"{name}-{i}") for i in range(replicas)]
        else:
            pods = [(service, None)]
        for pod_name, ordinal_name in pods:
            spec = play_pod(doc, pod_name, ordinal_name, out)
            probes.extend(pod_probes(pod_name, spec))
        left_out.append(f"{kind}/{name}: played as " + ", ".join(f"Pod/{p}" for p, _ in pods)
                        + ("" if len(pods) > 1 else ", 1 replica"))
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        for p in probes:
            parts = [f"pod={shlex.quote(p['pod'])}", f"container={shlex.quote(p['container'])}", f"kind={p['kind']}"]
            if "path" in p:
                parts += [f"path={shlex.quote(p['path'])}", f"port={int(p['port'])}"]
            elif "tcp" in p:
                parts.append(f"tcp={int(p['tcp'])}")
            else:
                parts.append("exec=(" + " ".join(shlex.quote(a) for a in p["exec"]) + ")")
            print(" ".join(parts), file=f)
    for line in left_out:
        print(f"  {line}", file=sys.stderr)
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)


def play_pod(doc, pod_name, ordinal_name, out):
    """Appends the Pod (and its PVCs) for one replica of a workload; returns its spec."""
    template = copy.deepcopy(doc["spec"]["template"])
    spec = template["spec"]
    for claim in doc["spec"].get("volumeClaimTemplates", []):
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": f"{claim['metadata']['name']}-{ordinal_name or pod_name}"},
               "spec": claim["spec"]}
        out.append(pvc)
        spec.setdefault("volumes", []).append(
            {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}})
    if ordinal_name:
        for container in spec["containers"]:
            for env in container.get("env", []):
                field = ((env.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                if field == "metadata.name":
                    env.pop("valueFrom")
                    env["value"] = ordinal_name
    # podman 4.3 refuses annotation values over 63 characters (Kubernetes allows 256 KiB in
    # all), e.g. the chart's checksum/config; they only roll pods, which one pod never needs.
    annotations = {k: v for k, v in (template["metadata"].get("annotations") or {}).items()
                   if len(str(v)) <= 63}
    out.append({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "labels": template["metadata"].get("labels") or {},
                             "annotations": annotations},
                "spec": spec})
    return spec


def pod_probes(service, spec):
    """The startup, liveness and readiness probes of a played pod, as kube-play-check runs them."""
    probes = []
    for container in spec["containers"]:
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        # podman 4.3 publishes every containerPort on the host (a cluster does not), which
        # would take the host's ports: the probes below use the numbers instead.
        container.pop("ports", None)
        for probe_kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(probe_kind) or {}
            if "httpGet" in probe:
                port = probe["httpGet"]["port"]
                probes.append({"pod": service, "container": container["name"], "kind": probe_kind,
                               "path": probe["httpGet"]["path"], "port": ports.get(port, port)})
            elif "exec" in probe:
                probes.append({"pod": service, "container": container["name"], "kind": probe_kind,
                               "exec": probe["exec"]["command"]})
            elif "tcpSocket" in probe:
                port = probe["tcpSocket"]["port"]
                probes.append({"pod": service, "container": container["name"], "kind": probe_kind,
                               "tcp": ports.get(port, port)})
    return probes


if __name__ == "__main__":
    main()
