"""The one way qai connects to Temporal: always with the pydantic data converter and the
process's one runtime; TLS, API keys and Cloud through the SDK's environment configuration."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig, ClientConnectConfig
from temporalio.service import RPCError, RPCStatusCode

from runtime.metrics import temporal_runtime
from runtime.settings import Settings

# Custom search attributes qai's workflows set: name -> type (as `temporal` CLI spells it).
SEARCH_ATTRIBUTES: Mapping[str, str] = {"QaiProjectId": "Keyword"}
PROJECT_ID_SEARCH_ATTRIBUTE = SearchAttributeKey.for_keyword("QaiProjectId")

_INDEXED_TYPES = {
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


class TemporalConnectionError(RuntimeError):
    """Temporal could not be reached; says where we looked and which setting to check."""


def connect_config(settings: Settings, env: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """Where and how to connect, from the SDK's environment configuration and qai's settings.

    The SDK reads a TOML profile (TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE) and TEMPORAL_* variables
    (TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_CLIENT_CERT_PATH, ...): TLS, API keys and
    Temporal Cloud work as in the SDK's samples. TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE, also
    read through qai's settings (and `.env`), win over a profile when set; unset, the profile's
    values win over qai's defaults. `env` replaces the process environment (tests).
    """
    try:
        config = ClientConfig.load_client_connect_config(override_env_vars=env)
    except Exception as error:  # the SDK reports a bad profile file as a plain error
        raise TemporalConnectionError(f"invalid Temporal client configuration: {error}") from None
    explicit = settings.model_fields_set
    if "temporal_address" in explicit or "target_host" not in config:
        config["target_host"] = settings.temporal_address
    if "temporal_namespace" in explicit or "namespace" not in config:
        config["namespace"] = settings.temporal_namespace
    return config


async def connect_temporal(
    settings_or_address: Settings | str,
    namespace: str | None = None,
    *,
    connect_timeout: timedelta = timedelta(seconds=10),
) -> Client:
    """A client for the configured Temporal (`connect_config`), or a plain one for an address.

    A bare address (the dev stack's own server, tests) connects without TLS or API key, whatever
    the environment says. `namespace` overrides the configured one; with a bare address it
    defaults to "default". Every client shares the process's runtime, whose metrics
    `/metrics` serves.
    """
    if isinstance(settings_or_address, Settings):
        config = connect_config(settings_or_address)
        if namespace:
            config["namespace"] = namespace
    else:
        config = ClientConnectConfig(
            target_host=settings_or_address, namespace=namespace or "default"
        )
    address, namespace = config["target_host"], config["namespace"]
    try:
        return await Client.connect(
            **config,
            data_converter=pydantic_data_converter,
            connect_timeout=connect_timeout,
            runtime=temporal_runtime(),
        )
    except RuntimeError as error:
        raise TemporalConnectionError(
            f"cannot connect to Temporal at {address} (namespace {namespace}): {error}; "
            "is the server running? Check TEMPORAL_ADDRESS, or use `python worker.py --dev`"
        ) from None


async def ensure_search_attributes(
    client: Client, attributes: Mapping[str, str] = SEARCH_ATTRIBUTES
) -> None:
    """Register qai's custom search attributes in the client's namespace when missing.

    The dev server gets them on its command line; a production server or the
    time-skipping test server needs this once. An attribute that exists with
    another type is an error worth stopping for.
    """
    namespace = client.namespace
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        existing = dict(listed.custom_attributes)
    except RPCError as error:
        # The time-skipping test server cannot list, but can add.
        if error.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = {}
    for name, kind in attributes.items():
        wanted = _INDEXED_TYPES[kind]
        if name in existing:
            if existing[name] != wanted:
                raise TemporalConnectionError(
                    f"search attribute {name} exists in namespace {namespace} with type "
                    f"{IndexedValueType.Name(existing[name])}, but qai needs {kind}"
                )
            continue
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes={name: wanted})
            )
        except RPCError as error:
            if error.status != RPCStatusCode.ALREADY_EXISTS:  # e.g. another worker won the race
                raise
