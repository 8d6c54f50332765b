"""The rendered kamailio.cfg: the edge's INVITE timers outlast the longest ring allowed, and so
does its memory of a ringing call."""

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
