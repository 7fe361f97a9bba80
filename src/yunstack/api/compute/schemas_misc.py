"""Nova v2.1 request bodies for flavors, keypairs and quota sets (unknown fields are 400)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from yunstack.api.schemas import Strict

Count = Field(ge=0, le=0x7FFFFFFF)
Limit = Field(default=None, ge=-1, le=0x7FFFFFFF)
SpecValue = str | int | float | bool


class FlavorCreate(Strict):
    name: str = Field(min_length=1, max_length=255)
    ram: int = Field(ge=1, le=0x7FFFFFFF)
    vcpus: int = Field(ge=1, le=0x7FFFFFFF)
    disk: int = Count
    id: str | int | None = None
    swap: int = Field(default=0, ge=0, le=0x7FFFFFFF)
    ephemeral: int = Field(default=0, ge=0, le=0x7FFFFFFF, alias="OS-FLV-EXT-DATA:ephemeral")
    rxtx_factor: float = Field(default=1.0, gt=0)
    is_public: bool = Field(default=True, alias="os-flavor-access:is_public")


class FlavorCreateBody(Strict):
    flavor: FlavorCreate


class ExtraSpecsBody(Strict):
    extra_specs: dict[str, SpecValue]


class TenantRef(Strict):
    tenant: str = Field(min_length=1, max_length=255)


class FlavorActionBody(Strict):
    addTenantAccess: TenantRef | None = None
    removeTenantAccess: TenantRef | None = None


class KeyPairCreate(Strict):
    name: str = Field(min_length=1, max_length=255)
    public_key: str | None = None
    type: Literal["ssh", "x509"] | None = None  # 2.2+
    user_id: str | None = None  # 2.10+, admins only


class KeyPairCreateBody(Strict):
    keypair: KeyPairCreate


class QuotaSetUpdate(Strict):
    instances: int | None = Limit
    cores: int | None = Limit
    ram: int | None = Limit
    key_pairs: int | None = Limit
    metadata_items: int | None = Limit
    injected_files: int | None = Limit
    injected_file_content_bytes: int | None = Limit
    injected_file_path_bytes: int | None = Limit
    server_groups: int | None = Limit
    server_group_members: int | None = Limit
    floating_ips: int | None = Limit  # below 2.36 only
    fixed_ips: int | None = Limit
    security_groups: int | None = Limit
    security_group_rules: int | None = Limit
    force: bool = False


class QuotaSetUpdateBody(Strict):
    quota_set: QuotaSetUpdate
