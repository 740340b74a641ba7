"""Models of the volume sources and env sources that read other objects (ConfigMaps, Secrets,
claims, the pod's own fields), kept out of spec.py so that the Pod model stays readable.

Field names and defaults follow kubernetes/api core/v1/types.go; the meaning is checked in
minipod/spec/source_checks.py and applied in minipod/pod/volumes/.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator

from minipod.spec.kube_fields import yaml_name
from minipod.spec.quantity import Quantity


class _Model(BaseModel):
    # The same configuration as spec.py's models (strict, camelCase aliases, no extras).
    model_config = ConfigDict(
        alias_generator=yaml_name, populate_by_name=True, extra="forbid", strict=True)


def _quantity(v: Any) -> Quantity:
    return v if isinstance(v, Quantity) else Quantity(v)


QuantityValue = Annotated[Quantity, PlainValidator(_quantity), PlainSerializer(str)]


class ObjectFieldSelector(_Model):
    field_path: str
    api_version: str = "v1"


class ResourceFieldSelector(_Model):
    resource: str
    container_name: str = ""
    divisor: QuantityValue | None = None


class ConfigMapKeySelector(_Model):
    name: str = ""
    key: str
    optional: bool = False


class SecretKeySelector(_Model):
    name: str = ""
    key: str
    optional: bool = False


class EnvVarSource(_Model):
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    secret_key_ref: SecretKeySelector | None = None


class ObjectRef(_Model):  # ConfigMapEnvSource, SecretEnvSource
    name: str = ""
    optional: bool = False


class EnvFromSource(_Model):
    prefix: str = ""
    config_map_ref: ObjectRef | None = None
    secret_ref: ObjectRef | None = None


class KeyToPath(_Model):
    key: str
    path: str
    mode: int | None = None


class ConfigMapVolumeSource(_Model):
    name: str = ""
    items: list[KeyToPath] = []
    default_mode: int | None = None
    optional: bool = False


class SecretVolumeSource(_Model):
    secret_name: str = ""
    items: list[KeyToPath] = []
    default_mode: int | None = None
    optional: bool = False


HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                   "CharDevice", "BlockDevice")


class HostPathVolumeSource(_Model):
    path: str
    type: Literal["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                  "CharDevice", "BlockDevice"] = ""


class PersistentVolumeClaimVolumeSource(_Model):
    claim_name: str
    read_only: bool = False


class DownwardAPIVolumeFile(_Model):
    path: str
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    mode: int | None = None


class DownwardAPIVolumeSource(_Model):
    items: list[DownwardAPIVolumeFile] = []
    default_mode: int | None = None


class ConfigMapProjection(_Model):
    name: str = ""
    items: list[KeyToPath] = []
    optional: bool = False


class SecretProjection(_Model):
    name: str = ""
    items: list[KeyToPath] = []
    optional: bool = False


class DownwardAPIProjection(_Model):
    items: list[DownwardAPIVolumeFile] = []


class VolumeProjection(_Model):
    config_map: ConfigMapProjection | None = None
    secret: SecretProjection | None = None
    downward_api: DownwardAPIProjection | None = None


class ProjectedVolumeSource(_Model):
    sources: list[VolumeProjection] = []
    default_mode: int | None = None
