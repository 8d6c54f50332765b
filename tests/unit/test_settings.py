from pathlib import Path

import pytest

from core.settings import SettingsError, SipSettings, TrunkSettings, load_settings

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


def test_shipped_config_listens_on_loopback_with_documented_ports() -> None:
    settings = load_settings(REPO_CONFIG, environ={})
    assert settings.sip.host == "127.0.0.1" and settings.sip.port == 5060
    assert settings.api.host == "127.0.0.1" and settings.api.port == 8080
    assert settings.data_dir == REPO_CONFIG.parent / "data"
    assert (
        settings.database_url
        == f"sqlite+aiosqlite:///{REPO_CONFIG.parent / 'data' / 'pbx.sqlite3'}"
    )


def test_trunk_limit_by_default_carries_the_stretch_call_rate() -> None:
    settings = load_settings(REPO_CONFIG, environ={})
    # 100 calls/s, even were ACK and BYE counted (only new requests are), plus retransmissions.
    assert settings.trunk.max_requests_per_s > 100 * 3
    assert settings.trunk.max_requests_per_s == TrunkSettings().max_requests_per_s


def test_brute_force_limits_by_default_spare_an_office_with_a_stale_phone() -> None:
    sip = load_settings(REPO_CONFIG, environ={}).sip
    assert sip == SipSettings()
    # Phones that keep failing at one address, each refused alone, before the address is.
    stale_phones = sip.max_auth_failures_per_address // sip.max_auth_failures
    assert min(stale_phones, sip.max_auth_accounts_per_address) >= 5
    assert sip.auth_ban_seconds == 300


def test_environment_overrides_single_keys() -> None:
    settings = load_settings(
        REPO_CONFIG, environ={"PBX_API__PORT": "9090", "PBX_SIP__DOMAIN": "pbx.example.com"}
    )
    assert settings.api.port == 9090
    assert settings.sip.domain == "pbx.example.com"
    assert settings.sip.port == 5060


def test_pbx_config_selects_another_file(tmp_path: Path) -> None:
    config = tmp_path / "other.toml"
    config.write_text('[api]\nport = 8181\n[data]\ndir = "state"\n')
    settings = load_settings(environ={"PBX_CONFIG": str(config)})
    assert settings.api.port == 8181
    assert settings.data_dir == tmp_path / "state"


def test_admin_token_comes_from_the_environment_only() -> None:
    token = "x" * 32
    assert load_settings(REPO_CONFIG, environ={"PBX_ADMIN_TOKEN": token}).admin_token == token
    assert load_settings(REPO_CONFIG, environ={}).admin_token is None


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"PBX_API__PORT": "eighty"}, "api.port"),
        ({"PBX_API__PORT": "70000"}, "api.port"),
        ({"PBX_API__NOPE": "1"}, "api.nope"),
        ({"PBX_NOSECTION": "1"}, "PBX_<SECTION>__<KEY>"),
        ({"PBX_ADMIN_TOKEN": "short"}, "admin_token"),
        ({"PBX_REDIS__URL": "redis://x:1/0"}, "redis.managed"),
        ({"PBX_LOG__LEVEL": "loud"}, "log.level"),
        ({"PBX_TRUNK__URI": "provider.example.com"}, "trunk.uri"),
        ({"PBX_TRUNK__REGISTER": "true", "PBX_TRUNK__URI": "sip:192.0.2.1"}, "trunk: .*register"),
        ({"PBX_TRUNK__REGISTER_EXPIRES": "30"}, "trunk.register_expires"),
        ({"PBX_TRUNK__MAX_REQUESTS_PER_S": "0"}, "trunk.max_requests_per_s"),
        ({"PBX_SIP__MAX_AUTH_FAILURES_PER_ADDRESS": "10"}, "sip: .*one phone with an old"),
        ({"PBX_SIP__MAX_AUTH_ACCOUNTS_PER_ADDRESS": "1"}, "sip.max_auth_accounts_per_address"),
        ({"PBX_CLUSTER__NODE": "a"}, "cluster: .*secret"),
        ({"PBX_CLUSTER__NODE": "a", "PBX_CLUSTER__SECRET": "s" * 16}, "redis.managed = false"),
        ({"PBX_CLUSTER__NODE": "a b"}, "cluster.node"),
        ({"PBX_CLUSTER__NODE_INDEX": "8"}, "cluster.node_index"),
        ({"PBX_CLUSTER__API_URL": "ftp://x"}, "cluster.api_url"),
        ({"PBX_CLUSTER__EDGES": '["edge.example:5060"]'}, "cluster.edges"),
        ({"PBX_CLUSTER__EDGES": '["10.0.0.3:5060"]'}, "must list this node's edge"),
        ({"PBX_CLUSTER__MEDIA_HOSTS": '["10.0.0.4:7070", "10.0.0.4:7071"]'}, "share an address"),
    ],
)
def test_bad_settings_name_the_key(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment.replace("<", ".").replace(">", ".")):
        load_settings(REPO_CONFIG, environ=environ)


def test_workers_take_calls_from_this_nodes_edge_first_then_the_clusters() -> None:
    settings = load_settings(REPO_CONFIG, environ={
        "PBX_SIP__HOST": "10.0.0.2", "PBX_CLUSTER__EDGES": '["10.0.0.2:5060", "10.0.0.3:5060"]',
    })  # fmt: skip
    assert settings.edges == ["10.0.0.2:5060", "10.0.0.3:5060"]


def test_missing_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(environ={"PBX_CONFIG": str(tmp_path / "missing.toml")})
    broken = tmp_path / "broken.toml"
    broken.write_text("[api\nport = 1")
    with pytest.raises(SettingsError, match=r"broken\.toml"):
        load_settings(broken, environ={})
