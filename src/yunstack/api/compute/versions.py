"""Nova version documents at /compute and /compute/v2.1."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from yunstack.api.compute.microversion import MAX, MIN
from yunstack.api.deps import Svc

router = APIRouter(prefix="/compute", tags=["compute"])
MEDIA = [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]


def _v21(base: str) -> dict[str, Any]:
    return {"id": "v2.1", "status": "CURRENT", "version": f"{MAX[0]}.{MAX[1]}",
            "min_version": f"{MIN[0]}.{MIN[1]}", "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"},
                      {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}],
            "media-types": MEDIA}


def _v20(base: str) -> dict[str, Any]:
    return {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
            "updated": "2011-01-21T11:33:21Z", "links": [{"rel": "self", "href": f"{base}/compute/v2/"}]}


@router.get("")
@router.get("/", include_in_schema=False)
def versions(svc: Svc) -> dict[str, Any]:
    base = svc.config.server.base_url
    # Tempest asserts that v2.0 is listed first.
    return {"versions": [_v20(base), _v21(base)]}


@router.get("/v2.1")
@router.get("/v2.1/", include_in_schema=False)
def version(svc: Svc) -> dict[str, Any]:
    return {"version": _v21(svc.config.server.base_url)}
