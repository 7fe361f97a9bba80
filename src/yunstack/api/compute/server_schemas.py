"""Nova server request bodies (strict: unknown fields are 400, as nova's additionalProperties false)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from yunstack.api.schemas import INT32_MAX, Int32, NonNegativeInt32, Strict, bounded_int


class NetworkRequest(Strict):
    uuid: str | None = None
    port: str | None = None
    fixed_ip: str | None = None
    tag: str | None = None


class SecurityGroupRef(Strict):
    name: str


class BlockDevice(Strict):
    uuid: str | None = None
    boot_index: Int32 | str | None = None
    source_type: str | None = None
    destination_type: str | None = None
    delete_on_termination: bool | str | None = None
    volume_size: NonNegativeInt32 | None = None
    device_name: str | None = None
    disk_bus: str | None = None
    device_type: str | None = None
    guest_format: str | None = None
    tag: str | None = None
    volume_type: str | None = None
    no_device: bool | None = None


class ServerCreate(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=255)
    imageRef: str | None = None
    flavorRef: str | int
    key_name: str | None = None
    user_data: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    config_drive: bool | str | None = None
    min_count: int | str = 1
    max_count: int | str | None = None
    networks: Literal["auto", "none"] | list[NetworkRequest] | None = None
    security_groups: list[SecurityGroupRef] = Field(default_factory=list)
    availability_zone: str | None = None
    block_device_mapping_v2: list[BlockDevice] = Field(default_factory=list)
    disk_config: str | None = Field(default=None, alias="OS-DCF:diskConfig")
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    adminPass: str | None = None
    description: str | None = Field(default=None, max_length=255)
    tags: list[str] = Field(default_factory=list, max_length=50)
    return_reservation_id: bool | str = False
    personality: list[dict[str, Any]] | None = None

    @field_validator("min_count", "max_count")
    @classmethod
    def _count(cls, value: int | str | None) -> int | str | None:
        if value is None:
            return None
        try:
            return bounded_int(value, low=1, high=INT32_MAX)
        except ValueError as exc:
            raise ValueError(f"must be an integer from 1 to {INT32_MAX}") from exc


class ServerCreateBody(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    server: ServerCreate
    scheduler_hints: dict[str, Any] | None = Field(default=None, alias="os:scheduler_hints")
    os_scheduler_hints: dict[str, Any] | None = Field(default=None, alias="OS-SCH-HNT:scheduler_hints")


class ServerUpdate(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    disk_config: str | None = Field(default=None, alias="OS-DCF:diskConfig")


class ServerUpdateBody(Strict):
    server: ServerUpdate


class MetadataBody(Strict):
    metadata: dict[str, str]


class MetaItemBody(Strict):
    meta: dict[str, str]
