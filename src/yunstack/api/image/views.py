"""Image entities -> Glance v2 JSON, exactly as Glance shapes them (paths are relative, as Glance's are)."""

from __future__ import annotations

from typing import Any

from yunstack.image.inspect import SUPPORTED_FORMATS
from yunstack.image.models import CONTAINER_FORMATS, Image, Member
from yunstack.types import isotime

Json = dict[str, Any]

# (id, status) newest first, as Glance 2025.x lists them; the SDK picks the CURRENT one.
VERSIONS = (("v2.17", "CURRENT"), *((f"v2.{n}", "SUPPORTED") for n in range(16, -1, -1)))


def versions(base: str) -> Json:
    return {"versions": [{"id": vid, "status": status, "links": [{"rel": "self", "href": f"{base}/image/v2/"}]}
                         for vid, status in VERSIONS]}


def image(i: Image) -> Json:
    body: Json = dict(i.properties)
    body.update({
        "id": i.id, "name": i.name, "status": i.status, "visibility": i.visibility, "protected": i.protected,
        "os_hidden": i.os_hidden, "owner": i.owner, "disk_format": i.disk_format,
        "container_format": i.container_format, "size": i.size, "virtual_size": i.virtual_size,
        "checksum": i.checksum, "os_hash_algo": i.os_hash_algo, "os_hash_value": i.os_hash_value,
        "min_disk": i.min_disk, "min_ram": i.min_ram, "tags": list(i.tags),
        "created_at": isotime(i.created_at), "updated_at": isotime(i.updated_at),
        "self": f"/v2/images/{i.id}", "file": f"/v2/images/{i.id}/file", "schema": "/v2/schemas/image",
    })
    return body


def member(m: Member) -> Json:
    return {"image_id": m.image_id, "member_id": m.member_id, "status": m.status,
            "created_at": isotime(m.created_at), "updated_at": isotime(m.updated_at),
            "schema": "/v2/schemas/member"}


def _nullable(kind: str, **extra: Any) -> Json:
    return {"type": [kind, "null"], **extra}


IMAGE_PROPERTIES: Json = {
    "id": {"type": "string", "description": "An identifier for the image",
           "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
    "name": _nullable("string", maxLength=255),
    "status": {"type": "string", "readOnly": True,
               "enum": ["queued", "saving", "active", "killed", "deleted", "pending_delete", "deactivated",
                        "uploading", "importing"]},
    "visibility": {"type": "string", "enum": ["community", "public", "private", "shared"]},
    "protected": {"type": "boolean"},
    "os_hidden": {"type": "boolean"},
    "owner": _nullable("string", maxLength=255),
    "checksum": _nullable("string", maxLength=32, readOnly=True),
    "os_hash_algo": _nullable("string", maxLength=64, readOnly=True),
    "os_hash_value": _nullable("string", maxLength=128, readOnly=True),
    "min_ram": {"type": "integer", "minimum": 0},
    "min_disk": {"type": "integer", "minimum": 0},
    "size": _nullable("integer", readOnly=True),
    "virtual_size": _nullable("integer", readOnly=True),
    "container_format": {"type": ["null", "string"], "enum": [None, *CONTAINER_FORMATS]},
    "disk_format": {"type": ["null", "string"], "enum": [None, *SUPPORTED_FORMATS]},
    "created_at": {"type": "string", "readOnly": True},
    "updated_at": {"type": "string", "readOnly": True},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
    "self": {"type": "string", "readOnly": True},
    "file": {"type": "string", "readOnly": True},
    "schema": {"type": "string", "readOnly": True},
}

LINKS = [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
         {"rel": "describedby", "href": "{schema}"}]


def image_schema() -> Json:
    return {"name": "image", "properties": IMAGE_PROPERTIES, "additionalProperties": {"type": "string"},
            "links": LINKS}


def images_schema() -> Json:
    return {"name": "images",
            "properties": {"images": {"type": "array", "items": image_schema()},
                           "schema": {"type": "string"}, "first": {"type": "string"},
                           "next": {"type": "string"}},
            "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
                      {"rel": "describedby", "href": "{schema}"}]}


def member_schema() -> Json:
    return {"name": "member",
            "properties": {"image_id": {"type": "string"}, "member_id": {"type": "string"},
                           "status": {"type": "string", "enum": ["pending", "accepted", "rejected"]},
                           "created_at": {"type": "string"}, "updated_at": {"type": "string"},
                           "schema": {"type": "string", "readOnly": True}}}


def members_schema() -> Json:
    return {"name": "members", "properties": {"members": {"type": "array", "items": member_schema()},
                                              "schema": {"type": "string"}},
            "links": [{"rel": "schema", "href": "{schema}"}]}
