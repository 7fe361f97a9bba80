"""A project's use of its quotas, for compute, block storage and networking, as the overview shows it."""

from __future__ import annotations

from dataclasses import dataclass

from yunstack.client.http import YunClient

# (the API's field for the limit, for the use, what one of them is called) per row, in the page's order.
COMPUTE = (("maxTotalInstances", "totalInstancesUsed", "instances"),
           ("maxTotalCores", "totalCoresUsed", "vCPUs"),
           ("maxTotalRAMSize", "totalRAMUsed", "MiB of RAM"))
BLOCK_STORAGE = (("maxTotalVolumes", "totalVolumesUsed", "volumes"),
                 ("maxTotalVolumeGigabytes", "totalGigabytesUsed", "GiB of volumes and snapshots"),
                 ("maxTotalSnapshots", "totalSnapshotsUsed", "volume snapshots"))
NETWORK = (("floatingip", "floating IPs"), ("network", "networks"), ("port", "ports"),
           ("router", "routers"), ("security_group", "security groups"))


@dataclass(frozen=True, kw_only=True)
class Usage:
    """How much of one resource the project uses, and its limit (-1: no limit)."""

    resource: str
    used: int
    limit: int

    @property
    def unlimited(self) -> bool:
        return self.limit < 0


def compute_usage(client: YunClient) -> list[Usage]:
    """Instances, vCPUs and RAM of the token's project (``GET /limits``, absolute)."""
    absolute = client.get("compute", "/limits")["limits"]["absolute"]
    return [Usage(resource=name, used=int(absolute.get(used, 0)), limit=int(absolute.get(limit, -1)))
            for limit, used, name in COMPUTE]


def block_storage_usage(client: YunClient) -> list[Usage]:
    """Volumes, gigabytes and snapshots of the token's project (Cinder's ``GET /limits``)."""
    absolute = client.get("block-storage", "/limits")["limits"]["absolute"]
    return [Usage(resource=name, used=int(absolute.get(used, 0)), limit=int(absolute.get(limit, -1)))
            for limit, used, name in BLOCK_STORAGE]


def network_usage(client: YunClient, project_id: str) -> list[Usage]:
    """Floating IPs, networks, ports, routers and security groups (``GET /v2.0/quotas/{id}/details.json``)."""
    quota = client.get("network", f"/v2.0/quotas/{project_id}/details.json")["quota"]
    return [Usage(resource=name, used=int(quota[key]["used"]), limit=int(quota[key]["limit"]))
            for key, name in NETWORK if key in quota]
