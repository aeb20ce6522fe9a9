"""Environment overrides replace the local servers without starting anything."""

from __future__ import annotations

import pytest

from modelhub_devstack import DevstackError
from modelhub_devstack import pytest_plugin as plugin

pytest_plugins = ["pytester"]


def test_override_fixtures_use_the_given_servers(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugin.ENV_NATS_URL, "nats://nats.example:4222")
    monkeypatch.setenv(plugin.ENV_OCI_REGISTRY_URL, "http://registry.example:5000/")
    monkeypatch.setenv(plugin.ENV_S3_ENDPOINT, "https://s3.example:9000")
    monkeypatch.setenv(plugin.ENV_S3_ACCESS_KEY, "ak")
    monkeypatch.setenv(plugin.ENV_S3_SECRET_KEY, "sk")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        def test_overrides(nats_url, oci_registry_url, s3, modelhub_devstack_dir):
            assert nats_url == "nats://nats.example:4222"
            assert oci_registry_url == "http://registry.example:5000"
            assert (s3.endpoint, s3.access_key, s3.secret_key) == ("s3.example:9000", "ak", "sk")
            assert s3.secure
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_partial_s3_override_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugin.ENV_S3_ENDPOINT, "127.0.0.1:9000")
    monkeypatch.delenv(plugin.ENV_S3_ACCESS_KEY, raising=False)
    monkeypatch.delenv(plugin.ENV_S3_SECRET_KEY, raising=False)
    with pytest.raises(DevstackError, match="MODELHUB_TEST_S3_ACCESS_KEY, MODELHUB_TEST_S3_SECRET_KEY"):
        plugin._s3_override()


def test_an_unknown_infra_mode_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugin.ENV_INFRA, "kubernetes")
    with pytest.raises(DevstackError, match="MODELHUB_TEST_INFRA"):
        plugin._use_containers()


def test_containers_mode_without_testcontainers_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import testcontainers  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("testcontainers is installed")
    from modelhub_devstack import containers

    with pytest.raises(DevstackError, match="--group containers"), containers.nats_container():
        pass
