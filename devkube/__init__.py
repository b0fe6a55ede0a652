"""The sandbox Kubernetes API server: a dev component for `scripts/run` without a cluster, and the tests' API server.

It serves the real `kubernetes` Python client (and kubectl-style clients) on 127.0.0.1, keeping every object in
memory only: nothing survives a restart and nothing is deployed anywhere. `python -m devkube` (__main__.py) runs
it as the sandbox, with the simulated CloudNativePG operator of operator.py making objects behave as in a
cluster; the tests use the server alone (fixture `kube_api`) or with the operator (fixture `sandbox`).

Served: core v1 namespaces, pods (+status, +log), secrets, configmaps, events, persistentvolumeclaims, services,
serviceaccounts; events.k8s.io/v1 events (read-only view of the core events); every CRD in the CloudNativePG
1.30 bundle (clusters, backups, scheduledbackups, poolers, databases, databaseroles, publications, subscriptions,
imagecatalogs, clusterimagecatalogs, failoverquorums) with their status and scale subresources.
Verbs: get, list (labelSelector, fieldSelector, limit/continue), create (generateName), update, patch (merge,
JSON, strategic for built-in kinds only, apply as a merge approximation), delete (finalizers, propagation,
preconditions; namespace deletion), all with dryRun=All and fieldValidation (unknown and duplicate fields).
Also: bearer-token authentication (401), RBAC denials (403 in kube-apiserver's wording), fault injection.
Not served: watch, deletecollection, per-manager managedFields and server-side apply conflicts, admission
webhooks, pod graceful termination (pods go at once). Module docstrings say what each part models.
"""

from .operator import Operator
from .server import DEFAULT_TOKEN, DEFAULT_USER, KubeApiServer, SeenRequest

__all__ = ["DEFAULT_TOKEN", "DEFAULT_USER", "KubeApiServer", "Operator", "SeenRequest"]
