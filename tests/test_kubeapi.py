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
from typing import Any

import pytest
import urllib3
from kubernetes import client

from tests.fixtures.kubeapi import KubeApi

GROUP, VERSION = "postgresql.cnpg.io", "v1"


def cluster(name: str = "pg1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {"instances": 3, "storage": {"size": "1Gi"}, **spec},
    }


@pytest.fixture
def api(kube_api: KubeApi) -> Iterator[client.ApiClient]:
    with kube_api.api_client() as api_client:
        yield api_client


@pytest.fixture
def crs(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def status_of(exc: client.ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def create(crs: client.CustomObjectsApi, body: dict[str, Any], namespace: str = "default", **kw: Any) -> Any:
    return crs.create_namespaced_custom_object(GROUP, VERSION, namespace, "clusters", body, **kw)


# ---------------------------------------------------------------- CRUD and errors


def test_cluster_create_get_list_replace_delete(kube_api: KubeApi, crs: client.CustomObjectsApi) -> None:
    created = create(crs, cluster())
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert created["spec"]["enableSuperuserAccess"] is False, "CRD defaults are applied"

    got = crs.get_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1")
    assert got == created
    listed = crs.list_namespaced_custom_object(GROUP, VERSION, "default", "clusters")
    assert listed["kind"] == "ClusterList" and [i["metadata"]["name"] for i in listed["items"]] == ["pg1"]

    got["spec"]["instances"] = 5
    replaced = crs.replace_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1", got)
    assert replaced["spec"]["instances"] == 5 and replaced["metadata"]["generation"] == 2
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    deleted = crs.delete_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1")
    assert deleted["status"] == "Success" and deleted["details"]["uid"] == meta["uid"]
    assert kube_api.get(f"{GROUP}/{VERSION}", "Cluster", "default", "pg1") is None


def test_not_found_is_a_kube_status(crs: client.CustomObjectsApi) -> None:
    with pytest.raises(client.ApiException) as err:
        crs.get_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "nope")
    assert err.value.status == 404
    assert status_of(err.value) == {
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
    assert status_of(err.value)["message"] == 'secrets "nope" not found'
    assert status_of(err.value)["details"] == {"name": "nope", "kind": "secrets"}


def test_creating_twice_is_already_exists(crs: client.CustomObjectsApi) -> None:
    create(crs, cluster())
    with pytest.raises(client.ApiException) as err:
        create(crs, cluster())
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'clusters.postgresql.cnpg.io "pg1" already exists'


def test_stale_resource_version_is_a_conflict(crs: client.CustomObjectsApi) -> None:
    first = create(crs, cluster())
    crs.patch_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1", {"spec": {"instances": 2}})
    first["spec"]["instances"] = 4
    with pytest.raises(client.ApiException) as err:
        crs.replace_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1", first)
    assert err.value.status == 409
    assert status_of(err.value)["message"] == (
        'Operation cannot be fulfilled on clusters.postgresql.cnpg.io "pg1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def test_create_in_missing_namespace_is_not_found(crs: client.CustomObjectsApi) -> None:
    with pytest.raises(client.ApiException) as err:
        create(crs, cluster(), namespace="ghost")
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "ghost" not found'


def test_generate_name_makes_a_unique_name(crs: client.CustomObjectsApi) -> None:
    body = cluster()
    body["metadata"] = {"generateName": "pg-"}
    created = create(crs, body)
    assert created["metadata"]["name"].startswith("pg-") and len(created["metadata"]["name"]) == 8


# ---------------------------------------------------------------- validation against the real CRD


def test_instances_below_minimum_is_invalid(crs: client.CustomObjectsApi) -> None:
    with pytest.raises(client.ApiException) as err:
        create(crs, cluster(instances=0))
    assert err.value.status == 422
    body = status_of(err.value)
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


def test_quantity_pattern_and_enum_and_type_are_checked(crs: client.CustomObjectsApi) -> None:
    body = cluster(resources={"limits": {"memory": "lots"}}, primaryUpdateStrategy="sometimes")
    body["spec"]["instances"] = "three"
    with pytest.raises(client.ApiException) as err:
        create(crs, body)
    message = status_of(err.value)["message"]
    assert (
        'spec.instances: Invalid value: "string": spec.instances in body must be of type integer: "string"'
    ) in message
    assert (
        'spec.primaryUpdateStrategy: Unsupported value: "sometimes": supported values: "unsupervised", "supervised"'
    ) in message
    assert (
        'spec.resources.limits.memory: Invalid value: "lots": spec.resources.limits.memory in body should match'
    ) in message
    assert message.startswith('Cluster.postgresql.cnpg.io "pg1" is invalid: [')


def test_missing_required_field_is_invalid(crs: client.CustomObjectsApi) -> None:
    body = cluster(bootstrap={"recovery": {"source": "x"}}, externalClusters=[{"connectionParameters": {}}])
    with pytest.raises(client.ApiException) as err:
        create(crs, body)
    assert "spec.externalClusters[0].name: Required value" in status_of(err.value)["message"]


def test_unknown_field_with_strict_validation_is_bad_request(crs: client.CustomObjectsApi) -> None:
    with pytest.raises(client.ApiException) as err:
        create(crs, cluster(foo=1), field_validation="Strict")
    assert err.value.status == 400
    assert status_of(err.value)["message"] == 'strict decoding error: unknown field "spec.foo"'


def test_unknown_field_by_default_is_pruned_with_a_warning(kube_api: KubeApi, api: client.ApiClient) -> None:
    response = api.call_api(  # raw call to see the Warning header the typed client swallows
        *api.param_serialize(
            "POST",
            "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters",
            body=cluster(foo=1),
            header_params={"Content-Type": "application/json"},
            auth_settings=["BearerToken"],
        )
    )
    assert response.status == 201
    assert response.getheader("Warning") == '299 - "unknown field \\"spec.foo\\""'
    stored = kube_api.get(f"{GROUP}/{VERSION}", "clusters", "default", "pg1")
    assert stored is not None and "foo" not in stored["spec"]


def test_cel_rule_mutually_exclusive_fields(crs: client.CustomObjectsApi) -> None:
    body = cluster(
        imageName="ghcr.io/cloudnative-pg/postgresql:17",
        imageCatalogRef={"apiGroup": GROUP, "kind": "ImageCatalog", "name": "pg", "major": 17},
    )
    with pytest.raises(client.ApiException) as err:
        create(crs, body)
    assert status_of(err.value)["message"] == (
        'Cluster.postgresql.cnpg.io "pg1" is invalid: spec: Invalid value: "object": '
        "imageName and imageCatalogRef are mutually exclusive"
    )


def test_cel_transition_rule_makes_field_immutable(crs: client.CustomObjectsApi) -> None:
    create(crs, cluster(serviceAccountName="one"))
    with pytest.raises(client.ApiException) as err:
        crs.patch_namespaced_custom_object(
            GROUP, VERSION, "default", "clusters", "pg1", {"spec": {"serviceAccountName": "two"}}
        )
    assert status_of(err.value)["message"].endswith(
        'spec.serviceAccountName: Invalid value: "string": serviceAccountName is immutable'
    )


def test_invalid_object_name_is_rejected(crs: client.CustomObjectsApi) -> None:
    with pytest.raises(client.ApiException) as err:
        create(crs, cluster(name="Bad_Name"))
    assert status_of(err.value)["message"].startswith(
        'Cluster.postgresql.cnpg.io "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
        "a lowercase RFC 1123 subdomain must consist of"
    )


FULL_CLUSTER: dict[str, Any] = {
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


def test_a_realistic_full_cluster_is_accepted(crs: client.CustomObjectsApi) -> None:
    created = create(crs, json.loads(json.dumps(FULL_CLUSTER)), field_validation="Strict")
    assert created["spec"]["postgresql"]["parameters"]["shared_buffers"] == "256MB"
    assert created["spec"]["bootstrap"]["initdb"]["owner"] == "app"


# ---------------------------------------------------------------- dry run, patches, status subresource


def test_dry_run_validates_and_stores_nothing(kube_api: KubeApi, crs: client.CustomObjectsApi) -> None:
    preview = create(crs, cluster(), dry_run="All")
    assert preview["metadata"]["name"] == "pg1" and "resourceVersion" not in preview["metadata"]
    assert kube_api.get(f"{GROUP}/{VERSION}", "Cluster", "default", "pg1") is None
    assert kube_api.writes() == 0
    assert kube_api.requests[-1].query == {"dryRun": "All"}
    with pytest.raises(client.ApiException) as err:
        create(crs, cluster(instances=0), dry_run="All")
    assert err.value.status == 422


def test_dry_run_patch_and_delete_change_nothing(kube_api: KubeApi, crs: client.CustomObjectsApi) -> None:
    create(crs, cluster())
    before = kube_api.writes()
    patched = crs.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "clusters", "pg1", {"spec": {"instances": 5}}, dry_run="All"
    )
    assert patched["spec"]["instances"] == 5
    crs.delete_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1", dry_run="All")
    stored = kube_api.get(f"{GROUP}/{VERSION}", "Cluster", "default", "pg1")
    assert stored is not None and stored["spec"]["instances"] == 3
    assert kube_api.writes() == before


def test_merge_patch_and_json_patch(crs: client.CustomObjectsApi) -> None:
    create(crs, cluster(description="old"))
    merged = crs.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "clusters", "pg1", {"spec": {"instances": 2, "description": None}}
    )
    assert merged["spec"]["instances"] == 2 and "description" not in merged["spec"]
    patched = crs.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "clusters",
        "pg1",
        [
            {"op": "test", "path": "/spec/instances", "value": 2},
            {"op": "replace", "path": "/spec/instances", "value": 4},
        ],
        _content_type="application/json-patch+json",
    )
    assert patched["spec"]["instances"] == 4 and patched["metadata"]["generation"] == 3


def test_patch_validates_the_result(crs: client.CustomObjectsApi) -> None:
    create(crs, cluster())
    with pytest.raises(client.ApiException) as err:
        crs.patch_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1", {"spec": {"instances": 0}})
    assert err.value.status == 422


def test_strategic_merge_patch_on_custom_resource_is_unsupported(crs: client.CustomObjectsApi) -> None:
    create(crs, cluster())
    with pytest.raises(client.ApiException) as err:
        crs.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            "clusters",
            "pg1",
            {"spec": {"instances": 2}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert err.value.status == 415
    assert status_of(err.value)["reason"] == "UnsupportedMediaType"


def test_status_subresource_is_separate_from_spec(kube_api: KubeApi, crs: client.CustomObjectsApi) -> None:
    body = cluster()
    body["status"] = {"phase": "ignored on create"}
    created = create(crs, body)
    assert "status" not in created
    updated = crs.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        "clusters",
        "pg1",
        {"status": {"phase": "Cluster in healthy state"}, "spec": {"instances": 9}},
    )
    assert updated["status"]["phase"] == "Cluster in healthy state"
    assert updated["spec"]["instances"] == 3 and updated["metadata"]["generation"] == 1
    main = crs.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "clusters", "pg1", {"status": {"phase": "hacked"}, "spec": {"instances": 2}}
    )
    assert main["status"]["phase"] == "Cluster in healthy state" and main["spec"]["instances"] == 2


# ---------------------------------------------------------------- selectors, RBAC, auth


def test_label_selectors(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    for name, labels in [
        ("a", {"role": "primary", "cnpg.io/cluster": "pg1"}),
        ("b", {"role": "replica", "cnpg.io/cluster": "pg1"}),
        ("c", {"cnpg.io/cluster": "pg2"}),
    ]:
        kube_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        return [p.metadata.name for p in core.list_namespaced_pod("default", label_selector=selector).items]

    assert names("cnpg.io/cluster=pg1") == ["a", "b"]
    assert names("cnpg.io/cluster==pg1,role!=primary") == ["b"]
    assert names("role in (primary, replica)") == ["a", "b"]
    assert names("cnpg.io/cluster notin (pg1)") == ["c"]
    assert names("role") == ["a", "b"]
    assert names("!role") == ["c"]


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
    running = core.list_namespaced_pod("default", field_selector="status.phase=Running").items
    assert [p.metadata.name for p in running] == ["p1"]
    events = core.list_namespaced_event(
        "default", field_selector="involvedObject.name=pg2,involvedObject.kind=Cluster"
    ).items
    assert [e.metadata.name for e in events] == ["e1"]
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_pod("default", field_selector="spec.foo=x")
    assert status_of(err.value)["message"] == "field label not supported: spec.foo"


def test_forbidden_is_a_kube_status(kube_api: KubeApi, crs: client.CustomObjectsApi) -> None:
    create(crs, cluster())
    kube_api.user = "system:serviceaccount:ns:sa"
    kube_api.forbid("patch", GROUP, "clusters", "default")
    with pytest.raises(client.ApiException) as err:
        crs.patch_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1", {"spec": {"instances": 2}})
    assert err.value.status == 403
    assert status_of(err.value) == {
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
    assert crs.get_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1")


def test_forbidden_list_at_cluster_scope(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    kube_api.forbid("list", "", "pods")
    with pytest.raises(client.ApiException) as err:
        core.list_pod_for_all_namespaces()
    assert status_of(err.value)["message"] == (
        f'pods is forbidden: User "{kube_api.user}" cannot list resource "pods" in API group "" at the cluster scope'
    )


def test_wrong_token_is_unauthorized(kube_api: KubeApi) -> None:
    http = urllib3.PoolManager()
    response = http.request("GET", kube_api.url + "/api/v1/namespaces", headers={"Authorization": "Bearer wrong"})
    assert response.status == 401
    assert json.loads(response.data)["reason"] == "Unauthorized"


# ---------------------------------------------------------------- pods/log, secrets, deletion


def test_pod_log_tail_since_and_limit(kube_api: KubeApi, core: client.CoreV1Api) -> None:
    kube_api.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "pg1-1"},
            "spec": {"containers": [{"name": "postgres", "image": "pg"}]},
        }
    )
    old = datetime.now(UTC) - timedelta(hours=1)
    kube_api.set_pod_log(
        "default", "pg1-1", "one\ntwo\nthree\nfour", times=[old, old, datetime.now(UTC), datetime.now(UTC)]
    )
    assert core.read_namespaced_pod_log("pg1-1", "default") == "one\ntwo\nthree\nfour\n"
    assert core.read_namespaced_pod_log("pg1-1", "default", tail_lines=2) == "three\nfour\n"
    assert core.read_namespaced_pod_log("pg1-1", "default", since_seconds=60) == "three\nfour\n"
    assert core.read_namespaced_pod_log("pg1-1", "default", limit_bytes=5) == "one\nt"
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log("pg1-1", "default", container="sidecar")
    assert status_of(err.value)["message"] == "container sidecar is not valid for pod pg1-1"


def test_basic_auth_secret_needs_credentials(core: client.CoreV1Api) -> None:
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), type="kubernetes.io/basic-auth", data={})
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_secret("default", body)
    assert status_of(err.value)["message"] == (
        'Secret "creds" is invalid: [data[username]: Required value, data[password]: Required value]'
    )
    body.string_data = {"username": "app", "password": "s3cret"}
    created = core.create_namespaced_secret("default", body)
    assert base64.b64decode(created.data["password"]) == b"s3cret" and created.string_data is None


def test_deleting_an_owner_deletes_its_secret(
    kube_api: KubeApi, crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    owner = create(crs, cluster())
    ref = client.V1OwnerReference(
        api_version=f"{GROUP}/{VERSION}", kind="Cluster", name="pg1", uid=owner["metadata"]["uid"], controller=True
    )
    core.create_namespaced_secret(
        "default",
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="pg1-app", owner_references=[ref]), string_data={"password": "x"}
        ),
    )
    assert core.read_namespaced_secret("pg1-app", "default").metadata.owner_references[0].uid == ref.uid
    crs.delete_namespaced_custom_object(
        GROUP, VERSION, "default", "clusters", "pg1", body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    assert kube_api.get("v1", "Secret", "default", "pg1-app") is None
    assert kube_api.get(f"{GROUP}/{VERSION}", "Cluster", "default", "pg1") is None


def test_orphan_deletion_keeps_dependents(kube_api: KubeApi, crs: client.CustomObjectsApi) -> None:
    owner = create(crs, cluster())
    kube_api.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "s",
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "Cluster",
                        "name": "pg1",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
        }
    )
    crs.delete_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1", propagation_policy="Orphan")
    secret = kube_api.get("v1", "Secret", "default", "s")
    assert secret is not None and "ownerReferences" not in secret["metadata"]


def test_finalizers_delay_deletion(kube_api: KubeApi, crs: client.CustomObjectsApi) -> None:
    body = cluster()
    body["metadata"]["finalizers"] = ["cnpg.io/protect"]
    create(crs, body)
    pending = crs.delete_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1")
    assert pending["metadata"]["deletionTimestamp"]
    crs.patch_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg1", {"metadata": {"finalizers": None}})
    assert kube_api.get(f"{GROUP}/{VERSION}", "Cluster", "default", "pg1") is None


def test_fixture_starts_quickly(tmp_path: Any) -> None:
    started = time.perf_counter()
    server = KubeApi()
    server.start()
    try:
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    assert elapsed < 1.0, "generous bound on a shared 2-core machine; typically a few milliseconds"
