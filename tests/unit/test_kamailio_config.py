"""The rendered kamailio.cfg: the edge's INVITE timers outlast the longest ring allowed, and so
does its memory of a ringing call; a worker's INVITE for the trunk's host and port goes to the
provider."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import MAX_RING_TIMEOUT_S, Settings, load_settings
from pbx.kamailio import RING_TIMER_MARGIN_S, render_kamailio_config

EMPTY_CONFIG = Path(__file__).parents[1] / "support" / "empty-config.toml"
# tm's default fr_inv_timer, which cut every ring at two minutes.
TM_DEFAULT_FR_INV_MS = 120_000


def settings_for(tmp_path: Path) -> Settings:
    return load_settings(EMPTY_CONFIG, {"PBX_DATA__DIR": str(tmp_path)})


def render(settings: Settings, tmp_path: Path) -> str:
    return render_kamailio_config(settings, tmp_path / "run", tmp_path / "dispatcher.list")


def tm_param(config: str, name: str) -> int:
    found = re.search(rf'^modparam\("tm", "{name}", (\d+)\)$', config, re.MULTILINE)
    assert found, f"no tm {name} in the config"
    return int(found[1])


def test_a_queue_ring_of_the_longest_allowed_is_not_cut_by_the_edge(tmp_path: Path) -> None:
    config = render(settings_for(tmp_path), tmp_path)
    expected_ms = (MAX_RING_TIMEOUT_S + RING_TIMER_MARGIN_S) * 1000
    assert expected_ms > TM_DEFAULT_FR_INV_MS
    # fr_inv_timer ends a branch that rang this long; max_inv_lifetime the whole transaction.
    assert tm_param(config, "fr_inv_timer") == expected_ms
    assert tm_param(config, "max_inv_lifetime") == expected_ms
    # Calls into the workers set their own timers: the same for the ring, 2 s to hear from one.
    per_call = re.findall(r"t_set_fr\((\d+), (\d+)\)", config)
    assert per_call and all(int(ring) == expected_ms for ring, _ in per_call), per_call


def test_the_invite_timer_follows_calls_ring_timeout_when_it_is_the_longer(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    # Both bounds are MAX_RING_TIMEOUT_S today; should they part, the longer ring counts.
    longer = settings.calls.model_copy(update={"ring_timeout": MAX_RING_TIMEOUT_S + 300.5})
    config = render(settings.model_copy(update={"calls": longer}), tmp_path)
    expected_ms = int((MAX_RING_TIMEOUT_S + 300.5 + RING_TIMER_MARGIN_S) * 1000)
    assert tm_param(config, "fr_inv_timer") == expected_ms
    assert tm_param(config, "max_inv_lifetime") == expected_ms


def dialog_param(config: str, name: str) -> int:
    found = re.search(rf'^modparam\("dialog", "{name}", (\d+)\)$', config, re.MULTILINE)
    assert found, f"no dialog {name} in the config"
    return int(found[1])


def test_the_edge_keeps_a_ringing_calls_dialog_as_long_as_tm_lets_it_ring(
    tmp_path: Path,
) -> None:
    """A dialog the edge forgot could not be ended for a dead worker: the dialog module
    drops early dialogs after early_timeout (300 s by default), shorter than a queue's ring."""
    config = render(settings_for(tmp_path), tmp_path)
    assert dialog_param(config, "early_timeout") * 1000 >= tm_param(config, "fr_inv_timer")
    assert dialog_param(config, "default_timeout") >= 12 * 3600


def for_provider_route(config: str) -> str:
    found = re.search(r"^route\[FOR_PROVIDER\] \{\n(.*?)^\}$", config, re.MULTILINE | re.DOTALL)
    assert found, "no route[FOR_PROVIDER] in the config"
    return found[1]


def test_a_workers_call_to_the_trunks_host_and_port_goes_to_the_provider(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        EMPTY_CONFIG,
        {"PBX_DATA__DIR": str(tmp_path), "PBX_TRUNK__URI": "sip:192.0.2.10:5080;transport=udp"},
    )
    check = for_provider_route(render(settings, tmp_path))
    assert '$(rd{s.tolower}) == "192.0.2.10" && $rp == 5080' in check


def test_a_trunk_uri_without_a_port_means_5060_and_host_names_match_in_any_case(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        EMPTY_CONFIG,
        {"PBX_DATA__DIR": str(tmp_path), "PBX_TRUNK__URI": "sip:Trunk.Provider.example"},
    )
    assert (settings.trunk.provider_host, settings.trunk.provider_port) == (
        "Trunk.Provider.example", 5060
    )  # fmt: skip
    check = for_provider_route(render(settings, tmp_path))
    assert '$(rd{s.tolower}) == "trunk.provider.example" && $rp == 5060' in check


def test_without_a_trunk_no_workers_call_goes_to_the_provider(tmp_path: Path) -> None:
    config = render(settings_for(tmp_path), tmp_path)
    assert for_provider_route(config).split() == ["return", "-1;"]
