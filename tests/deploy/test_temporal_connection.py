"""Connecting to any Temporal: TLS, API keys and profiles reach the connect config through the
SDK's environment configuration, while TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE keep working."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from runtime.settings import Settings
from runtime.temporal import TemporalConnectionError, connect_config, connect_temporal


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_cloud_api_key_turns_on_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "TEMPORAL_ADDRESS": "qai.a1b2c.tmprl.cloud:7233",
        "TEMPORAL_NAMESPACE": "qai.a1b2c",
        "TEMPORAL_API_KEY": "key-123",
    }
    config = connect_config(settings_from(env, monkeypatch), env)
    assert config["target_host"] == "qai.a1b2c.tmprl.cloud:7233"
    assert config["namespace"] == "qai.a1b2c"
    assert config["api_key"] == "key-123"
    assert config["tls"] is True


def test_a_profile_file_gives_address_and_mtls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("CERT")
    key.write_text("KEY")
    profile = tmp_path / "temporal.toml"
    profile.write_text(
        '[profile.prod]\naddress = "temporal.internal:7233"\nnamespace = "qai-prod"\n'
        f'[profile.prod.tls]\nclient_cert_path = "{cert}"\nclient_key_path = "{key}"\n'
        'server_name = "temporal.internal"\n'
    )
    env = {"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "prod"}
    config = connect_config(settings_from(env, monkeypatch), env)
    # Unset TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE: the profile wins over qai's defaults.
    assert (config["target_host"], config["namespace"]) == ("temporal.internal:7233", "qai-prod")
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key) == (b"CERT", b"KEY")
    assert tls.domain == "temporal.internal"

    # Set, they win over the profile.
    env["TEMPORAL_ADDRESS"] = "other:7233"
    config = connect_config(settings_from(env, monkeypatch), env)
    assert (config["target_host"], config["namespace"]) == ("other:7233", "qai-prod")


def test_without_configuration_the_settings_defaults_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = connect_config(settings_from({}, monkeypatch), {})
    assert config == {"target_host": "localhost:7233", "namespace": "default"}


def test_a_broken_profile_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "temporal.toml"
    profile.write_text("[profile.default\naddress = ")
    env = {"TEMPORAL_CONFIG_FILE": str(profile)}
    with pytest.raises(TemporalConnectionError, match="invalid Temporal client configuration"):
        connect_config(settings_from(env, monkeypatch), env)


async def test_tls_settings_reach_the_connection(
    workflow_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test server speaks plain gRPC: with TEMPORAL_TLS the settings' client cannot connect,
    while a bare address (the dev stack's own server) ignores the environment's TLS."""
    address = workflow_env.client.service_client.config.target_host
    settings = settings_from({"TEMPORAL_ADDRESS": address, "TEMPORAL_TLS": "true"}, monkeypatch)
    assert connect_config(settings)["tls"]
    with pytest.raises(TemporalConnectionError, match=f"cannot connect to Temporal at {address}"):
        await connect_temporal(settings, connect_timeout=timedelta(seconds=3))
    client = await connect_temporal(address)
    assert await client.service_client.check_health()
