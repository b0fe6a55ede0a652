"""The test Kubernetes API server behaves like kube-apiserver for the real `kubernetes` client.

Each test states one behaviour the CNPG MCP server's tests rely on; messages are compared with the exact
formats kube-apiserver produces.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, dynamic

from tests.fixtures.kubeapi import KubeApi

GROUP, VERSION = "postgresql.cnpg.io", "v1"
CNPG = f"{GROUP}/{VERSION}"
JSON_PATCH = "application/json-patch+json"
Obj = dict[str, Any]


def cluster(name: str = "pg1", **spec: Any) -> Obj:
    return {
        "apiVersion": CNPG,
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {"instances": 3, "storage": {"size": "1Gi"}, **spec},
    }


def _obj(value: object) -> Obj:
    assert isinstance(value, dict)
    return value


class Crs:
    """CustomObjectsApi for one CNPG plural, returning plain dicts (the client types them as `object`)."""

    def __init__(self, api: client.ApiClient, plural: str) -> None:
        self.api = client.CustomObjectsApi(api)
        self.plural = plural

    def create(self, body: Obj, namespace: str = "default", **kw: Any) -> Obj:
        return _obj(self.api.create_namespaced_custom_object(GROUP, VERSION, namespace, self.plural, body, **kw))

    def get(self, name: str, namespace: str = "default") -> Obj:
        return _obj(self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, self.plural, name))

    def list(self, namespace: str = "default", **kw: Any) -> Obj:
        return _obj(self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, self.plural, **kw))

    def replace(self, name: str, body: Obj, namespace: str = "default") -> Obj:
        return _obj(self.api.replace_namespaced_custom_object(GROUP, VERSION, namespace, self.plural, name, body))

    def patch(self, name: str, body: Any, namespace: str = "default", **kw: Any) -> Obj:
        return _obj(self.api.patch_namespaced_custom_object(GROUP, VERSION, namespace, self.plural, name, body, **kw))

    def patch_status(self, name: str, body: Any, namespace: str = "default") -> Obj:
        return _obj(self.api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, self.plural, name, body))

    def delete(self, name: str, namespace: str = "default", **kw: Any) -> Obj:
        return _obj(self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, self.plural, name, **kw))


@pytest.fixture
def api(kube_api: KubeApi) -> Iterator[client.ApiClient]:
    with kube_api.api_client() as api_client:
        yield api_client


@pytest.fixture
def clusters(api: client.ApiClient) -> Crs:
    return Crs(api, "clusters")


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def failure(exc: pytest.ExceptionInfo[client.ApiException]) -> Obj:
    """The Status body of a failed call."""
    assert exc.value.body is not None
    return _obj(json.loads(exc.value.body))


def names(items: list[Any]) -> list[str]:
    return [item.metadata.name for item in items if item.metadata is not None]


def raw(api: client.ApiClient, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
    """A call through the client's generic path, to see headers and status codes the typed methods hide."""
    method_, url, headers, _, _ = api.param_serialize(
        method, path, header_params={"Content-Type": content_type}, auth_settings=["BearerToken"]
    )
    return api.call_api(method_, url, header_params=headers, body=body)


def send(kube_api: KubeApi, method: str, path: str, body: bytes, content_type: str = "application/json") -> Any:
    """Exact bytes on the wire (e.g. duplicate keys, which no client serialiser produces)."""
    headers = {"Authorization": f"Bearer {kube_api.token}", "Content-Type": content_type}
    return urllib3.PoolManager().request(method, kube_api.url + path, body=body, headers=headers, retries=False)


# ---------------------------------------------------------------- CRUD and error bodies


def test_cluster_create_get_list_replace_delete(kube_api: KubeApi, clusters: Crs) -> None:
    created = clusters.create(cluster())
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert created["spec"]["enableSuperuserAccess"] is False, "CRD defaults are applied"

    got = clusters.get("pg1")
    assert got == created
    listed = clusters.list()
    assert listed["kind"] == "ClusterList" and [i["metadata"]["name"] for i in listed["items"]] == ["pg1"]

    got["spec"]["instances"] = 5
    replaced = clusters.replace("pg1", got)
    assert replaced["spec"]["instances"] == 5 and replaced["metadata"]["generation"] == 2
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    deleted = clusters.delete("pg1")
    assert deleted["status"] == "Success" and deleted["details"]["uid"] == meta["uid"]
    assert kube_api.get(CNPG, "Cluster", "default", "pg1") is None


def test_not_found_is_a_kube_status(clusters: Crs) -> None:
    with pytest.raises(client.ApiException) as err:
        clusters.get("nope")
    assert err.value.status == 404
    assert failure(err) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'clusters.postgresql.cnpg.io "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "group": GROUP, "kind": "clusters"},
        "code": 404,
    }


def test_core_not_found_has_no_group(core: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_secret("nope", "default")
    assert failure(err)["message"] == 'secrets "nope" not found'
    assert failure(err)["details"] == {"name": "nope", "kind": "secrets"}


def test_creating_twice_is_already_exists(clusters: Crs) -> None:
    clusters.create(cluster())
    with pytest.raises(client.ApiException) as err:
        clusters.create(cluster())
    assert err.value.status == 409
    assert failure(err)["reason"] == "AlreadyExists"
    assert failure(err)["message"] == 'clusters.postgresql.cnpg.io "pg1" already exists'


def test_stale_resource_version_is_a_conflict(clusters: Crs) -> None:
    first = clusters.create(cluster())
    clusters.patch("pg1", {"spec": {"instances": 2}})
    first["spec"]["instances"] = 4
    with pytest.raises(client.ApiException) as err:
        clusters.replace("pg1", first)
    assert err.value.status == 409
    assert failure(err)["message"] == (
        'Operation cannot be fulfilled on clusters.postgresql.cnpg.io "pg1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def test_patch_with_stale_resource_version_is_a_conflict(clusters: Crs) -> None:
    clusters.create(cluster())
    with pytest.raises(client.ApiException) as err:
        clusters.patch("pg1", {"metadata": {"resourceVersion": "1"}, "spec": {"instances": 2}})
    assert failure(err)["reason"] == "Conflict"


def test_replace_without_resource_version_is_invalid_for_custom_resources(clusters: Crs) -> None:
    clusters.create(cluster())
    with pytest.raises(client.ApiException) as err:
        clusters.replace("pg1", cluster(instances=2))
    assert failure(err)["message"] == (
        'Cluster.postgresql.cnpg.io "pg1" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
        "must be specified for an update"
    )


def test_create_in_missing_namespace_is_not_found(clusters: Crs) -> None:
    with pytest.raises(client.ApiException) as err:
        clusters.create(cluster(), namespace="ghost")
    assert err.value.status == 404
    assert failure(err)["message"] == 'namespaces "ghost" not found'


def test_added_namespaces_accept_objects(kube_api: KubeApi, clusters: Crs, core: client.CoreV1Api) -> None:
    kube_api.add_namespace("staging")
    clusters.create(cluster(), namespace="staging")
    assert names(core.list_namespace().items) == ["default", "prod", "staging"]
    status = core.read_namespace("prod").status
    assert status is not None and status.phase == "Active"


def test_generate_name_makes_a_unique_name(clusters: Crs) -> None:
    body = cluster()
    body["metadata"] = {"generateName": "pg-"}
    created = clusters.create(body)
    assert created["metadata"]["name"].startswith("pg-") and len(created["metadata"]["name"]) == 8


def test_writes_record_the_field_manager(clusters: Crs) -> None:
    created = clusters.create(cluster())
    assert created["metadata"]["managedFields"][0]["manager"] == "OpenAPI-Generator"
    patched = clusters.patch("pg1", {"spec": {"instances": 2}}, field_manager="cnpg-mcp")
    assert {e["manager"] for e in patched["metadata"]["managedFields"]} == {"OpenAPI-Generator", "cnpg-mcp"}


# ---------------------------------------------------------------- validation against the real CRD


def test_instances_below_minimum_is_invalid(clusters: Crs) -> None:
    with pytest.raises(client.ApiException) as err:
        clusters.create(cluster(instances=0))
    assert err.value.status == 422
    body = failure(err)
    assert body["reason"] == "Invalid"
    assert body["message"] == (
        'Cluster.postgresql.cnpg.io "pg1" is invalid: spec.instances: Invalid value: 0: '
        "spec.instances in body should be greater than or equal to 1"
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.instances",
            "message": "Invalid value: 0: spec.instances in body should be greater than or equal to 1",
        }
    ]


def test_quantity_pattern_and_enum_and_type_are_checked(clusters: Crs) -> None:
    body = cluster(resources={"limits": {"memory": "lots"}}, primaryUpdateStrategy="sometimes")
    body["spec"]["instances"] = "three"
    with pytest.raises(client.ApiException) as err:
        clusters.create(body)
    message = failure(err)["message"]
    assert message.startswith('Cluster.postgresql.cnpg.io "pg1" is invalid: [')
    assert (
        'spec.instances: Invalid value: "string": spec.instances in body must be of type integer: "string"'
    ) in message
    assert (
        'spec.primaryUpdateStrategy: Unsupported value: "sometimes": supported values: "unsupervised", "supervised"'
    ) in message
    assert (
        'spec.resources.limits.memory: Invalid value: "lots": spec.resources.limits.memory in body should match'
    ) in message
    assert message.endswith(
        '<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; '
        "correct the existing errors to complete validation]"
    )


def test_missing_required_field_is_invalid(clusters: Crs) -> None:
    body = cluster(externalClusters=[{"connectionParameters": {}}])
    with pytest.raises(client.ApiException) as err:
        clusters.create(body)
    assert failure(err)["message"].endswith("spec.externalClusters[0].name: Required value")


def test_unknown_field_with_strict_validation_is_bad_request(clusters: Crs) -> None:
    with pytest.raises(client.ApiException) as err:
        clusters.create(cluster(foo=1, storage={"size": "1Gi", "bar": 2}), field_validation="Strict")
    assert err.value.status == 400
    assert failure(err)["message"] == (
        'strict decoding error: unknown field "spec.foo", unknown field "spec.storage.bar"'
    )


def test_unknown_field_by_default_is_pruned_with_a_warning(kube_api: KubeApi, api: client.ApiClient) -> None:
    response = raw(api, "POST", "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters", cluster(foo=1))
    assert response.status == 201
    assert response.headers.get("Warning") == '299 - "unknown field \\"spec.foo\\""'
    stored = kube_api.get(CNPG, "clusters", "default", "pg1")
    assert stored is not None and "foo" not in stored["spec"]


def test_duplicate_fields_are_reported_before_unknown_ones(kube_api: KubeApi) -> None:
    body = (
        b'{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "pg1"},'
        b' "spec": {"instances": 1, "instances": 2, "foo": 1}}'
    )
    path = "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters"
    strict = send(kube_api, "POST", path + "?fieldValidation=Strict", body)
    assert strict.status == 400
    assert json.loads(strict.data)["message"] == (
        'strict decoding error: duplicate field "spec.instances", unknown field "spec.foo"'
    )
    warned = send(kube_api, "POST", path, body)
    assert warned.status == 201 and json.loads(warned.data)["spec"]["instances"] == 2, "the last value wins"
    assert warned.headers.getlist("Warning") == [
        '299 - "duplicate field \\"spec.instances\\""',
        '299 - "unknown field \\"spec.foo\\""',
    ]


def test_json_patch_operations_with_unknown_keys_are_reported(kube_api: KubeApi, clusters: Crs) -> None:
    clusters.create(cluster())
    ops = b'[{"op": "replace", "path": "/spec/instances", "value": 2, "foo": "bar"}]'
    path = "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/pg1?fieldValidation=Strict"
    response = send(kube_api, "PATCH", path, ops, JSON_PATCH)
    assert json.loads(response.data)["message"] == 'strict decoding error: json patch unknown field "[0].foo"'


def test_unknown_field_with_ignore_is_pruned_silently(kube_api: KubeApi, clusters: Crs) -> None:
    created = clusters.create(cluster(foo=1), field_validation="Ignore")
    assert "foo" not in created["spec"]


def test_cel_rule_mutually_exclusive_fields(clusters: Crs) -> None:
    body = cluster(
        imageName="ghcr.io/cloudnative-pg/postgresql:17",
        imageCatalogRef={"apiGroup": GROUP, "kind": "ImageCatalog", "name": "pg", "major": 17},
    )
    with pytest.raises(client.ApiException) as err:
        clusters.create(body)
    assert failure(err)["message"] == (
        'Cluster.postgresql.cnpg.io "pg1" is invalid: spec: Invalid value: "object": '
        "imageName and imageCatalogRef are mutually exclusive"
    )


def test_cel_evaluation_error_is_a_field_error_not_a_server_error(clusters: Crs) -> None:
    # builtinLocale without localeProvider: the rule reads a missing key, an error in CEL as in kube-apiserver.
    body = cluster(bootstrap={"initdb": {"builtinLocale": "C"}})
    with pytest.raises(client.ApiException) as err:
        clusters.create(body)
    assert err.value.status == 422
    assert failure(err)["message"] == (
        'Cluster.postgresql.cnpg.io "pg1" is invalid: spec.bootstrap.initdb: Invalid value: "object": '
        "no such key: localeProvider evaluating rule: builtinLocale is only available when localeProvider is set to "
        "`builtin`"
    )


def test_cel_transition_rule_makes_field_immutable(clusters: Crs) -> None:
    clusters.create(cluster(serviceAccountName="one"))
    with pytest.raises(client.ApiException) as err:
        clusters.patch("pg1", {"spec": {"serviceAccountName": "two"}})
    assert failure(err)["message"].endswith(
        'spec.serviceAccountName: Invalid value: "string": serviceAccountName is immutable'
    )


def test_backup_spec_is_immutable(api: client.ApiClient) -> None:
    backups = Crs(api, "backups")
    backups.create(
        {"apiVersion": CNPG, "kind": "Backup", "metadata": {"name": "b1"}, "spec": {"cluster": {"name": "a"}}}
    )
    with pytest.raises(client.ApiException) as err:
        backups.patch("b1", {"spec": {"cluster": {"name": "b"}}})
    assert 'spec: Invalid value: "object": BackupSpec is immutable once set' in failure(err)["message"]
    assert backups.patch("b1", {"metadata": {"labels": {"kept": "yes"}}})["metadata"]["labels"] == {"kept": "yes"}


def test_database_and_role_rules(api: client.ApiClient) -> None:
    databases, roles = Crs(api, "databases"), Crs(api, "databaseroles")
    database: Obj = {
        "apiVersion": CNPG,
        "kind": "Database",
        "metadata": {"name": "db"},
        "spec": {"cluster": {"name": "pg1"}, "name": "postgres", "owner": "app"},
    }
    with pytest.raises(client.ApiException) as err:
        databases.create(database)
    assert failure(err)["message"].endswith('spec.name: Invalid value: "string": the name postgres is reserved')
    database["spec"]["name"] = "app"
    assert databases.create(database)["spec"]["ensure"] == "present", "schema default"
    spec = {"cluster": {"name": "pg1"}, "name": "pg_reader"}
    role = {"apiVersion": CNPG, "kind": "DatabaseRole", "metadata": {"name": "r"}, "spec": spec}
    with pytest.raises(client.ApiException) as err:
        roles.create(role)
    assert "role names starting with pg_ are reserved by PostgreSQL" in failure(err)["message"]


def test_invalid_object_name_is_rejected(clusters: Crs) -> None:
    with pytest.raises(client.ApiException) as err:
        clusters.create(cluster(name="Bad_Name"))
    assert failure(err)["message"].startswith(
        'Cluster.postgresql.cnpg.io "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
        "a lowercase RFC 1123 subdomain must consist of"
    )


def test_update_tolerates_unchanged_invalid_fields(kube_api: KubeApi, clusters: Crs) -> None:
    """Validation ratcheting: a seeded object invalid in one field can still be patched elsewhere."""
    kube_api.seed(cluster(instances=3, logLevel="chatty"))
    patched = clusters.patch("pg1", {"spec": {"instances": 2}})
    assert patched["spec"]["instances"] == 2
    with pytest.raises(client.ApiException):
        clusters.patch("pg1", {"spec": {"logLevel": "noisy"}})


FULL_CLUSTER: Obj = {
    "apiVersion": "postgresql.cnpg.io/v1",
    "kind": "Cluster",
    "metadata": {"name": "prod-db", "labels": {"team": "data"}, "annotations": {"note": "x"}},
    "spec": {
        "instances": 3,
        "imageName": "ghcr.io/cloudnative-pg/postgresql:17.5",
        "primaryUpdateStrategy": "unsupervised",
        "primaryUpdateMethod": "switchover",
        "enableSuperuserAccess": True,
        "superuserSecret": {"name": "prod-db-superuser"},
        "postgresql": {
            "parameters": {"max_connections": "200", "shared_buffers": "256MB"},
            "pg_hba": ["host all all 10.0.0.0/8 scram-sha-256"],
            "synchronous": {"method": "any", "number": 1, "dataDurability": "required"},
        },
        "bootstrap": {
            "initdb": {
                "database": "app",
                "owner": "app",
                "secret": {"name": "app-secret"},
                "encoding": "UTF8",
                "dataChecksums": True,
            }
        },
        "storage": {"size": "10Gi", "storageClass": "standard"},
        "walStorage": {"size": "2Gi"},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2, "memory": "2Gi"}},
        "affinity": {
            "enablePodAntiAffinity": True,
            "topologyKey": "kubernetes.io/hostname",
            "podAntiAffinityType": "required",
        },
        "monitoring": {"enablePodMonitor": False},
        "managed": {
            "roles": [
                {
                    "name": "reporter",
                    "ensure": "present",
                    "login": True,
                    "passwordSecret": {"name": "reporter-pw"},
                    "connectionLimit": 5,
                }
            ]
        },
        "backup": {"retentionPolicy": "30d", "target": "prefer-standby", "volumeSnapshot": {"className": "csi"}},
        "plugins": [
            {
                "name": "barman-cloud.cloudnative-pg.io",
                "isWALArchiver": True,
                "parameters": {"barmanObjectName": "store"},
            }
        ],
        "nodeMaintenanceWindow": {"inProgress": False, "reusePVC": True},
        "logLevel": "info",
    },
}


def test_a_realistic_full_cluster_is_accepted(clusters: Crs) -> None:
    created = clusters.create(json.loads(json.dumps(FULL_CLUSTER)), field_validation="Strict")
    assert created["spec"]["postgresql"]["parameters"]["shared_buffers"] == "256MB"
    assert created["spec"]["bootstrap"]["initdb"]["owner"] == "app"


# ---------------------------------------------------------------- dry run, patches, status subresource


def test_dry_run_validates_and_stores_nothing(kube_api: KubeApi, clusters: Crs) -> None:
    preview = clusters.create(cluster(), dry_run="All")
    assert preview["metadata"]["name"] == "pg1" and "resourceVersion" not in preview["metadata"]
    assert kube_api.get(CNPG, "Cluster", "default", "pg1") is None
    assert kube_api.writes() == 0
    assert kube_api.requests[-1].query == {"dryRun": "All"}
    with pytest.raises(client.ApiException) as err:
        clusters.create(cluster(instances=0), dry_run="All")
    assert err.value.status == 422


def test_dry_run_patch_and_delete_change_nothing(kube_api: KubeApi, clusters: Crs) -> None:
    clusters.create(cluster())
    before = kube_api.writes()
    assert clusters.patch("pg1", {"spec": {"instances": 5}}, dry_run="All")["spec"]["instances"] == 5
    clusters.delete("pg1", dry_run="All")
    clusters.delete("pg1", body=client.V1DeleteOptions(dry_run=["All"]))
    stored = kube_api.get(CNPG, "Cluster", "default", "pg1")
    assert stored is not None and stored["spec"]["instances"] == 3
    assert kube_api.writes() == before


def test_merge_patch_and_json_patch(clusters: Crs) -> None:
    clusters.create(cluster(description="old"))
    merged = clusters.patch("pg1", {"spec": {"instances": 2, "description": None}})
    assert merged["spec"]["instances"] == 2 and "description" not in merged["spec"]
    ops = [
        {"op": "test", "path": "/spec/instances", "value": 2},
        {"op": "replace", "path": "/spec/instances", "value": 4},
        {"op": "add", "path": "/metadata/labels", "value": {"tier": "gold"}},
    ]
    patched = clusters.patch("pg1", ops, _content_type=JSON_PATCH)
    assert patched["spec"]["instances"] == 4 and patched["metadata"]["generation"] == 3
    assert patched["metadata"]["labels"] == {"tier": "gold"}


def test_failed_json_patch_test_changes_nothing(kube_api: KubeApi, clusters: Crs) -> None:
    clusters.create(cluster())
    ops = [
        {"op": "test", "path": "/spec/instances", "value": 9},
        {"op": "replace", "path": "/spec/instances", "value": 1},
    ]
    with pytest.raises(client.ApiException) as err:
        clusters.patch("pg1", ops, _content_type=JSON_PATCH)
    assert err.value.status == 422
    assert kube_api.get(CNPG, "Cluster", "default", "pg1")["spec"]["instances"] == 3  # type: ignore[index]


def test_patch_validates_the_result(clusters: Crs) -> None:
    clusters.create(cluster())
    with pytest.raises(client.ApiException) as err:
        clusters.patch("pg1", {"spec": {"instances": 0}})
    assert err.value.status == 422


def test_no_op_patch_keeps_the_resource_version(clusters: Crs) -> None:
    created = clusters.create(cluster())
    again = clusters.patch("pg1", {"spec": {"instances": 3}})
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_strategic_merge_patch_on_custom_resource_is_unsupported(clusters: Crs) -> None:
    clusters.create(cluster())
    with pytest.raises(client.ApiException) as err:
        clusters.patch("pg1", {"spec": {"instances": 2}}, _content_type="application/strategic-merge-patch+json")
    assert err.value.status == 415
    assert failure(err)["reason"] == "UnsupportedMediaType"


def test_status_subresource_is_separate_from_spec(clusters: Crs) -> None:
    body = cluster()
    body["status"] = {"phase": "ignored on create"}
    assert "status" not in clusters.create(body)
    updated = clusters.patch_status("pg1", {"status": {"phase": "Cluster in healthy state"}, "spec": {"instances": 9}})
    assert updated["status"]["phase"] == "Cluster in healthy state"
    assert updated["spec"]["instances"] == 3 and updated["metadata"]["generation"] == 1
    main = clusters.patch("pg1", {"status": {"phase": "hacked"}, "spec": {"instances": 2}})
    assert main["status"]["phase"] == "Cluster in healthy state" and main["spec"]["instances"] == 2


def test_scale_subresource_sets_instances(api: client.ApiClient, clusters: Crs) -> None:
    clusters.create(cluster())
    objects = client.CustomObjectsApi(api)
    scale = _obj(objects.get_namespaced_custom_object_scale(GROUP, VERSION, "default", "clusters", "pg1"))
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    objects.patch_namespaced_custom_object_scale(
        GROUP, VERSION, "default", "clusters", "pg1", {"spec": {"replicas": 5}}
    )
    assert clusters.get("pg1")["spec"]["instances"] == 5


def test_server_side_apply_creates_then_updates(api: client.ApiClient, clusters: Crs) -> None:
    path = "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/pg1?fieldManager=mcp"
    apply = "application/apply-patch+yaml"
    assert raw(api, "PATCH", path, cluster(), apply).status == 201
    assert raw(api, "PATCH", path, cluster(instances=4), apply).status == 200
    assert clusters.get("pg1")["spec"]["instances"] == 4


def test_apply_without_field_manager_is_invalid(api: client.ApiClient) -> None:
    path = "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/pg1"
    response = raw(api, "PATCH", path, cluster(), "application/apply-patch+yaml")
    assert response.status == 422
    assert json.loads(response.read())["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )


def test_unknown_dry_run_value_is_invalid(clusters: Crs) -> None:
    with pytest.raises(client.ApiException) as err:
        clusters.create(cluster(), dry_run="Some")
    assert failure(err)["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: "Some": supported values: "All"'
    )


# ---------------------------------------------------------------- selectors, listing, discovery


def test_label_selectors(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    for name, labels in [
        ("a", {"role": "primary", "cnpg.io/cluster": "pg1"}),
        ("b", {"role": "replica", "cnpg.io/cluster": "pg1"}),
        ("c", {"cnpg.io/cluster": "pg2"}),
    ]:
        kube_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}})

    def select(selector: str) -> list[str]:
        return names(core.list_namespaced_pod("default", label_selector=selector).items)

    assert select("cnpg.io/cluster=pg1") == ["a", "b"]
    assert select("cnpg.io/cluster==pg1,role!=primary") == ["b"]
    assert select("role in (primary, replica)") == ["a", "b"]
    assert select("cnpg.io/cluster notin (pg1)") == ["c"]
    assert select("role") == ["a", "b"]
    assert select("!role") == ["c"]
    with pytest.raises(client.ApiException) as err:
        select("bad key!=x")
    assert err.value.status == 400


def test_field_selectors_on_pods_and_events(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    kube_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"}, "status": {"phase": "Running"}})
    kube_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2"}, "status": {"phase": "Pending"}})
    for i, obj in enumerate(["pg1", "pg2"]):
        kube_api.seed(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"e{i}"},
                "involvedObject": {"kind": "Cluster", "name": obj, "namespace": "default"},
                "reason": "Created",
                "message": "m",
                "type": "Normal",
            }
        )
    assert names(core.list_namespaced_pod("default", field_selector="status.phase=Running").items) == ["p1"]
    selector = "involvedObject.name=pg2,involvedObject.kind=Cluster"
    assert names(core.list_namespaced_event("default", field_selector=selector).items) == ["e1"]
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_pod("default", field_selector="spec.foo=x")
    assert failure(err)["message"] == "field label not supported: spec.foo"


def test_events_k8s_io_view_of_core_events(kube_api: KubeApi, api: client.ApiClient) -> None:
    kube_api.seed(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Cluster", "name": "pg1", "namespace": "default"},
            "reason": "Switchover",
            "message": "primary changed",
            "type": "Warning",
            "source": {"component": "cloudnative-pg"},
            # Events recorded through the core API often lack eventTime; the events.k8s.io view then has
            # eventTime null, which the client's EventsV1Event model rejects, exactly as against a real cluster.
            "eventTime": "2026-01-01T00:00:00.000000Z",
        }
    )
    events = client.EventsV1Api(api).list_namespaced_event("default", field_selector="regarding.name=pg1").items
    assert [(e.note, e.regarding and e.regarding.name, e.reporting_controller) for e in events] == [
        ("primary changed", "pg1", "cloudnative-pg")
    ]


def test_lists_of_builtin_kinds_page_with_limit_and_continue(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    for i in range(5):
        kube_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"}})
    page = core.list_namespaced_pod("default", limit=2)
    assert page.metadata is not None and page.metadata.remaining_item_count == 3
    assert names(page.items) == ["p0", "p1"]
    rest = core.list_namespaced_pod("default", limit=10, _continue=page.metadata._continue)
    assert rest.metadata is not None and rest.metadata._continue is None
    assert names(rest.items) == ["p2", "p3", "p4"]
    assert rest.items[0].kind is None, "items of typed lists carry no kind, as from the real server"


def test_dynamic_client_discovers_cnpg_resources(api: client.ApiClient) -> None:
    resource = dynamic.DynamicClient(api).resources.get(  # type: ignore[no-untyped-call]
        api_version=CNPG, kind="Cluster"
    )
    assert resource.namespaced and resource.name == "clusters"


# ---------------------------------------------------------------- RBAC and authentication


def test_forbidden_is_a_kube_status(kube_api: KubeApi, clusters: Crs) -> None:
    clusters.create(cluster())
    kube_api.user = "system:serviceaccount:ns:sa"
    kube_api.forbid("patch", GROUP, "clusters", "default")
    with pytest.raises(client.ApiException) as err:
        clusters.patch("pg1", {"spec": {"instances": 2}})
    assert err.value.status == 403
    assert failure(err) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'clusters.postgresql.cnpg.io "pg1" is forbidden: User "system:serviceaccount:ns:sa" cannot '
        'patch resource "clusters" in API group "postgresql.cnpg.io" in the namespace "default"',
        "reason": "Forbidden",
        "details": {"name": "pg1", "group": GROUP, "kind": "clusters"},
        "code": 403,
    }
    assert clusters.get("pg1"), "other verbs stay allowed"


def test_forbidden_list_at_cluster_scope(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    kube_api.forbid("list", "", "pods")
    with pytest.raises(client.ApiException) as err:
        core.list_pod_for_all_namespaces()
    assert failure(err)["message"] == (
        f'pods is forbidden: User "{kube_api.user}" cannot list resource "pods" in API group "" at the cluster scope'
    )


def test_forbidden_subresource_names_it(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    kube_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "prod"}})
    kube_api.forbid("get", "", "pods/log", "prod")
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log("p", "prod")
    assert failure(err)["message"] == (
        f'pods "p" is forbidden: User "{kube_api.user}" cannot get resource "pods/log" in API group "" '
        'in the namespace "prod"'
    )
    assert names([core.read_namespaced_pod("p", "prod")]) == ["p"]


def test_wrong_token_is_unauthorized(kube_api: KubeApi) -> None:
    response = urllib3.PoolManager().request(
        "GET", kube_api.url + "/api/v1/namespaces", headers={"Authorization": "Bearer wrong"}
    )
    assert response.status == 401
    assert json.loads(response.data)["reason"] == "Unauthorized"


def test_kubeconfig_names_context_test_in_namespace_default(kube_api: KubeApi) -> None:
    from kubernetes import config

    _, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=str(kube_api.kubeconfig_path)
    )
    assert current["name"] == "test" and current["context"]["namespace"] == "default"
    assert Path(kube_api.kubeconfig_path).read_text().count(kube_api.url) == 1


# ---------------------------------------------------------------- pods/log


def test_pod_log_tail_since_and_limit(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    kube_api.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "pg1-1"},
            "spec": {"containers": [{"name": "postgres", "image": "pg"}]},
        }
    )
    old, now = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC)
    kube_api.set_pod_log("default", "pg1-1", "one\ntwo\nthree\nfour", times=[old, old, now, now])
    assert core.read_namespaced_pod_log("pg1-1", "default") == "one\ntwo\nthree\nfour\n"
    assert core.read_namespaced_pod_log("pg1-1", "default", tail_lines=2) == "three\nfour\n"
    assert core.read_namespaced_pod_log("pg1-1", "default", since_seconds=60) == "three\nfour\n"
    assert core.read_namespaced_pod_log("pg1-1", "default", limit_bytes=5) == "one\nt"
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log("pg1-1", "default", container="sidecar")
    assert failure(err)["message"] == "container sidecar is not valid for pod pg1-1"
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log("pg1-1", "default", previous=True)
    assert failure(err)["message"] == 'previous terminated container "postgres" in pod "pg1-1" not found'


def test_pod_log_needs_a_container_when_there_are_several(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    containers = [{"name": "postgres", "image": "pg"}, {"name": "exporter", "image": "x"}]
    kube_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
    kube_api.set_pod_log("default", "p", "from exporter", container="exporter")
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log("p", "default")
    assert failure(err)["message"] == "a container name must be specified for pod p, choose one of: [postgres exporter]"
    assert core.read_namespaced_pod_log("p", "default", container="exporter") == "from exporter\n"
    assert core.read_namespaced_pod_log("p", "default", container="postgres") == ""


# ---------------------------------------------------------------- secrets and deletion


def test_basic_auth_secret_needs_credentials(core: client.CoreV1Api) -> None:
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), type="kubernetes.io/basic-auth", data={})
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_secret("default", body)
    assert failure(err)["message"] == (
        'Secret "creds" is invalid: [data[username]: Required value, data[password]: Required value]'
    )
    body.string_data = {"username": "app", "password": "s3cret"}
    created = core.create_namespaced_secret("default", body)
    assert created.data is not None and created.string_data is None
    assert base64.b64decode(created.data["password"]) == b"s3cret"


def test_secret_data_must_be_base64(api: client.ApiClient) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}}
    response = raw(api, "POST", "/api/v1/namespaces/default/secrets", body)
    assert response.status == 400
    assert json.loads(response.read())["message"].startswith('Secret in version "v1" cannot be handled as a Secret')


def test_secret_strategic_merge_patch_merges_data(core: client.CoreV1Api) -> None:
    core.create_namespaced_secret(
        "default", client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"a": "1"})
    )
    patched = core.patch_namespaced_secret("s", "default", {"stringData": {"b": "2"}})
    assert patched.data is not None and sorted(patched.data) == ["a", "b"]


def test_deleting_an_owner_deletes_its_secret(kube_api: KubeApi, clusters: Crs, core: client.CoreV1Api) -> None:
    owner = clusters.create(cluster())
    ref = client.V1OwnerReference(api_version=CNPG, kind="Cluster", name="pg1", uid=owner["metadata"]["uid"])
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="pg1-app", owner_references=[ref]), string_data={"password": "x"}
    )
    core.create_namespaced_secret("default", secret)
    stored = core.read_namespaced_secret("pg1-app", "default")
    assert stored.metadata is not None and stored.metadata.owner_references == [ref]
    clusters.delete("pg1", body=client.V1DeleteOptions(propagation_policy="Foreground"))
    assert kube_api.get("v1", "Secret", "default", "pg1-app") is None
    assert kube_api.get(CNPG, "Cluster", "default", "pg1") is None


def test_background_deletion_is_the_default_and_cascades(kube_api: KubeApi, clusters: Crs) -> None:
    owner = clusters.create(cluster())
    ref = {"apiVersion": CNPG, "kind": "Cluster", "name": "pg1", "uid": owner["metadata"]["uid"]}
    kube_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pg1-1", "ownerReferences": [ref]}})
    clusters.delete("pg1")
    assert kube_api.get("v1", "pods", "default", "pg1-1") is None


def test_orphan_deletion_keeps_dependents(kube_api: KubeApi, clusters: Crs) -> None:
    owner = clusters.create(cluster())
    ref = {"apiVersion": CNPG, "kind": "Cluster", "name": "pg1", "uid": owner["metadata"]["uid"]}
    kube_api.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "ownerReferences": [ref]}})
    clusters.delete("pg1", propagation_policy="Orphan")
    secret = kube_api.get("v1", "Secret", "default", "s")
    assert secret is not None and "ownerReferences" not in secret["metadata"]


def test_delete_precondition_on_uid(clusters: Crs) -> None:
    clusters.create(cluster())
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other"))
    with pytest.raises(client.ApiException) as err:
        clusters.delete("pg1", body=options)
    assert err.value.status == 409
    assert "Precondition failed: UID in precondition: other" in failure(err)["message"]


def test_finalizers_delay_deletion(kube_api: KubeApi, clusters: Crs) -> None:
    body = cluster()
    body["metadata"]["finalizers"] = ["cnpg.io/protect"]
    clusters.create(body)
    pending = clusters.delete("pg1")
    assert pending["metadata"]["deletionTimestamp"]
    assert kube_api.get(CNPG, "Cluster", "default", "pg1") is not None
    clusters.patch("pg1", {"metadata": {"finalizers": None}})
    assert kube_api.get(CNPG, "Cluster", "default", "pg1") is None


def test_deleting_a_namespace_removes_its_objects(kube_api: KubeApi, clusters: Crs, core: client.CoreV1Api) -> None:
    clusters.create(cluster(), namespace="prod")
    kept = cluster("kept")
    kept["metadata"]["finalizers"] = ["cnpg.io/protect"]
    clusters.create(kept, namespace="prod")
    core.delete_namespace("prod")
    assert (kube_api.get("v1", "Namespace", None, "prod") or {})["status"]["phase"] == "Terminating"
    assert kube_api.get(CNPG, "Cluster", "prod", "pg1") is None
    with pytest.raises(client.ApiException) as err:
        clusters.create(cluster("new"), namespace="prod")
    assert failure(err)["message"] == (
        'clusters.postgresql.cnpg.io "new" is forbidden: unable to create new content in namespace prod because '
        "it is being terminated"
    )
    clusters.patch("kept", {"metadata": {"finalizers": []}}, namespace="prod")
    assert kube_api.get(CNPG, "Cluster", "prod", "kept") is None
    assert kube_api.get("v1", "Namespace", None, "prod") is None, "an emptied Terminating namespace goes away"


# ---------------------------------------------------------------- fault injection


def test_injected_failures_answer_matching_requests_then_stop(kube_api: KubeApi, clusters: Crs) -> None:
    clusters.create(cluster())
    kube_api.fail(503, method="GET", path_contains="/clusters/pg1", times=2)
    for _ in range(2):
        with pytest.raises(client.ApiException) as err:
            clusters.get("pg1")
        assert err.value.status == 503 and failure(err)["reason"] == "ServiceUnavailable"
    assert clusters.get("pg1")["metadata"]["name"] == "pg1"


def test_injected_delay_holds_a_request_without_blocking_others(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    kube_api.delay(30, path_contains="/clusters/slow")
    http = urllib3.PoolManager(headers={"Authorization": f"Bearer {kube_api.token}"}, retries=False)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        http.request("GET", kube_api.url + "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/slow", timeout=0.5)
    assert core.read_namespace("default", _request_timeout=10), "the server still answers meanwhile"


# ---------------------------------------------------------------- the fixture itself


def test_fixture_starts_quickly() -> None:
    started = time.perf_counter()
    server = KubeApi()
    server.start()
    try:
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    assert elapsed < 1.0, "generous bound on a shared 2-core machine; typically a few milliseconds"


# ---------------------------------------------------------------- the CEL subset covers the CRDs


def _all_rules() -> list[tuple[str, str]]:
    from devkube.schema import load_crds

    found: list[tuple[str, str]] = []

    def walk(node: Any, kind: str) -> None:
        if isinstance(node, dict):
            found.extend((kind, rule["rule"]) for rule in node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value, kind)
        elif isinstance(node, list):
            for value in node:
                walk(value, kind)

    for crd in load_crds():
        walk(crd.schema, crd.kind)
    return found


def test_every_cel_rule_in_the_crds_compiles() -> None:
    from devkube import cel

    rules = _all_rules()
    assert len(rules) >= 60 and {kind for kind, _ in rules} >= {"Cluster", "Database", "DatabaseRole", "Pooler"}
    for _, rule in rules:
        cel.compile_rule(rule)


def test_cel_logic_absorbs_errors_like_cel() -> None:
    from devkube import cel

    rule = "!has(self.builtinLocale) || self.localeProvider == 'builtin'"
    assert cel.evaluate(rule, {}) is True
    assert cel.evaluate(rule, {"builtinLocale": "C", "localeProvider": "builtin"}) is True
    with pytest.raises(cel.CelError, match="no such key: localeProvider"):
        cel.evaluate(rule, {"builtinLocale": "C"})
    unique = "self.all(e, self.filter(f, f.key==e.key).size() == 1)"
    assert cel.evaluate(unique, [{"key": "a"}, {"key": "b"}]) is True
    assert cel.evaluate(unique, [{"key": "a"}, {"key": "a"}]) is False
    assert cel.evaluate("self == oldSelf", "x", "x") is True


# ---------------------------------------------------------------- malformed input


MALFORMED_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"1",
    b'"x"',
    b"{bad",
    b'{"metadata":null}',
    b'{"metadata":[]}',
    b'{"metadata":{"name":1}}',
    b'{"apiVersion":"postgresql.cnpg.io/v1","kind":"Cluster","metadata":{"name":"x"},"spec":null}',
    b'{"apiVersion":"postgresql.cnpg.io/v1","kind":"Cluster","metadata":{"name":"x"},"spec":[]}',
    b'{"apiVersion":"postgresql.cnpg.io/v1","kind":"Cluster","metadata":{"name":"x","ownerReferences":[1]}}',
    b'{"apiVersion":"postgresql.cnpg.io/v1","kind":"Cluster","metadata":{"name":"x","finalizers":"a"}}',
    b'[{"op":"add","path":"/spec/instances/x","value":1}]',
    b'[{"op":"remove","path":"/metadata"}]',
    b'[{"op":"move","from":"/nope","path":"/a"}]',
    b'[{"op":"replace","path":"","value":[]}]',
    b"[1,2]",
    b'[{"op":"add"}]',
    b'{"metadata":{"resourceVersion":null}}',
    b'{"spec":{"instances":"x"}}',
    b'{"status":[]}',
    b'{"metadata":{"name":"other"}}',
    b'{"metadata":{"finalizers":["a"],"ownerReferences":{"x":1}}}',
    b'{"spec":{"replicas":"x"}}',
    b'{"propagationPolicy":"Bad"}',
    b'{"preconditions":"x"}',
]
MALFORMED_PATHS = [
    "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters",
    "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/pg1",
    "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/pg1/status",
    "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/pg1/scale",
    "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/nope",
    "/api/v1/namespaces/default/pods/p/log",
    "/api/v1/namespaces/default/secrets",
    "/api/v1/namespaces/default/secrets/s",
    "/api/v1/namespaces",
    "/api/v1/namespaces/default",
    "/apis/events.k8s.io/v1/namespaces/default/events",
    "/apis/x/y/z/w/v/u",
]
MALFORMED_QUERIES = [
    "",
    "?dryRun=All",
    "?labelSelector=a%20in%20(",
    "?fieldSelector=a",
    "?tailLines=x",
    "?limit=x",
    "?continue=zz",
    "?sinceSeconds=0",
    "?limitBytes=-1",
    "?fieldValidation=Strict",
]
PATCH_TYPES = [
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
    "",
]


def test_malformed_requests_get_kube_errors_never_a_crash(kube_api: KubeApi) -> None:
    """Thousands of bad combinations: every answer is a well-formed 4xx Status (no 5xx, no hang)."""
    kube_api.seed({"apiVersion": CNPG, "kind": "Cluster", "metadata": {"name": "pg1"}, "spec": {"instances": 1}})
    kube_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
    http = urllib3.PoolManager()
    auth = {"Authorization": f"Bearer {kube_api.token}"}
    seen = 0
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"]:
        for path in MALFORMED_PATHS:
            for body in MALFORMED_BODIES if method != "GET" else [b""]:
                for content_type in PATCH_TYPES if method == "PATCH" else ["application/json"]:
                    for query in MALFORMED_QUERIES if body in (b"{}", b"") else [""]:
                        response = http.request(
                            method,
                            kube_api.url + path + query,
                            body=body or None,
                            headers={**auth, "Content-Type": content_type},
                            timeout=10,
                        )
                        seen += 1
                        assert response.status < 500, (method, path, query, content_type, body)
                        if response.status >= 400 and response.headers.get("Content-Type", "").startswith(
                            "application/json"
                        ):
                            assert json.loads(response.data)["kind"] == "Status"
    assert seen > 5000
    assert kube_api.internal_errors == []
