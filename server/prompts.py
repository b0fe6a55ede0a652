"""MCP prompts that walk an assistant through common DBA investigations with this server's tools."""

from server.registry import CnpgServer


def register(server: CnpgServer) -> None:
    @server.prompt(
        name="diagnose_cluster",
        title="Diagnose a degraded cluster",
        description="Step-by-step investigation of a CloudNativePG cluster that is not healthy.",
    )
    def diagnose_cluster(name: str, namespace: str = "") -> str:
        where = f" in namespace '{namespace}'" if namespace else ""
        return (
            f"Diagnose the CloudNativePG cluster '{name}'{where}. Work read-only until you have a diagnosis.\n"
            f"1. Read the resource cnpg://clusters/{namespace or '<namespace>'}/{name} or call get_cluster_status: "
            "note the phase and phase reason, ready vs desired instances, current vs target primary, and every "
            "condition that is not True (ContinuousArchiving, Ready).\n"
            "2. Call list_instances: find instances that are not ready, restart often, or sit on the same node.\n"
            "3. Call get_cluster_events: read Warning events first (scheduling, PVC, image pull, probe failures).\n"
            "4. For each unhealthy instance call get_instance_logs (tail 200) and look for FATAL/PANIC lines, "
            "'could not', WAL archiving errors and replication lag.\n"
            "5. If archiving fails, check the backup configuration and list_backups for recent failures.\n"
            "6. Summarise: symptom, most likely cause, evidence, and the least risky fix. Propose any change "
            "(restart, switchover, scale, resize) and wait for the user's approval before calling a write tool."
        )

    @server.prompt(
        name="plan_switchover",
        title="Plan a safe switchover",
        description="Checks to run before promoting a replica of a CloudNativePG cluster.",
    )
    def plan_switchover(name: str, namespace: str = "") -> str:
        where = f" in namespace '{namespace}'" if namespace else ""
        return (
            f"Plan a switchover for the CloudNativePG cluster '{name}'{where}.\n"
            "1. get_cluster_status: the cluster must be healthy and current primary equal to target primary.\n"
            "2. list_instances: choose a ready replica on a different node from the current primary, with few "
            "restarts.\n"
            "3. get_cluster_events: make sure there are no recent warnings for the candidate.\n"
            "4. Explain the impact (connections to the primary drop briefly) and ask for approval.\n"
            "5. Only then call switchover_cluster with the chosen target_instance and watch get_cluster_status."
        )
