"""A caller's walk through menus, step by step, and which menus can reach nothing."""

from __future__ import annotations

import pytest

from destinations.destination import (
    Destination,
    ExtensionDestination,
    HangupDestination,
    MenuDestination,
    NumberDestination,
    VoicemailDestination,
)
from ivr.menu import (
    BackOption,
    Leave,
    MenuOption,
    MenuPlan,
    Notice,
    PlayMenu,
    RepeatOption,
    Walk,
    enter_menu,
    menus_reaching_nothing,
    press,
    start_walk,
    time_out,
)

SALES = ExtensionDestination(extension="1001")
HANGUP = HangupDestination()


def plan(
    menu_id: int,
    options: dict[str, MenuOption],
    *,
    retries: int = 2,
    final: Destination = HANGUP,
) -> MenuPlan:
    return MenuPlan(id=menu_id, options=options, retries=retries, final_destination=final)


MENUS = {
    1: plan(1, {"1": SALES, "2": MenuDestination(id=2), "9": RepeatOption(), "0": BackOption(),
                "5": VoicemailDestination(box=4)}),
    2: plan(2, {"1": NumberDestination(number="+4930123"), "0": BackOption(),
                "3": MenuDestination(id=3), "2": MenuDestination(id=2)}, retries=0),
    3: plan(3, {"*": BackOption(), "#": HangupDestination()}, final=MenuDestination(id=1)),
}  # fmt: skip


def walk_keys(keys: str) -> tuple[Walk, list[PlayMenu | Leave]]:
    walk, step = start_walk(1)
    steps: list[PlayMenu | Leave] = [step]
    for key in keys:
        walk, step = time_out(walk, MENUS) if key == "T" else press(walk, MENUS, key)
        steps.append(step)
    return walk, steps


@pytest.mark.parametrize(
    ("keys", "last"),
    [
        ("", PlayMenu(1)),
        ("1", Leave(SALES)),
        ("5", Leave(VoicemailDestination(box=4))),
        ("9", PlayMenu(1)),  # repeat
        ("0", PlayMenu(1)),  # back at the top menu repeats it
        ("2", PlayMenu(2)),  # another menu
        ("21", Leave(NumberDestination(number="+4930123"))),
        ("20", PlayMenu(1)),  # back
        ("201", Leave(SALES)),
        ("23*", PlayMenu(2)),  # back twice: 3 -> 2
        ("23*0", PlayMenu(1)),  # -> 1
        ("23#", Leave(HANGUP)),
        ("22", PlayMenu(2)),  # an option to the menu itself repeats it
        ("7", PlayMenu(1, Notice.INVALID)),
        ("T", PlayMenu(1, Notice.TIMEOUT)),
        ("7T", PlayMenu(1, Notice.TIMEOUT)),
        ("7T7", Leave(HANGUP, Notice.INVALID)),  # retries 2: the third failure leaves
        ("7TT", Leave(HANGUP, Notice.TIMEOUT)),
        ("7T1", Leave(SALES)),  # a valid key after failures still works
        ("27", Leave(HANGUP, Notice.INVALID)),  # menu 2 has no retries
        ("2T", Leave(HANGUP, Notice.TIMEOUT)),
        ("23TTT", Leave(MenuDestination(id=1), Notice.TIMEOUT)),  # final destination: a menu
    ],
)
def test_each_key_leads_where_the_menu_says(keys: str, last: PlayMenu | Leave) -> None:
    _, steps = walk_keys(keys)
    assert steps[-1] == last


def test_a_valid_choice_resets_the_failures() -> None:
    walk, _ = walk_keys("7T9")
    assert walk.failures == 0
    _, step = press(walk, MENUS, "7")
    assert step == PlayMenu(1, Notice.INVALID)


def test_entering_another_menu_starts_its_own_count() -> None:
    walk, _ = walk_keys("7T2")
    assert (walk.menu_id, walk.failures, walk.trail) == (2, 0, (1,))


def test_a_final_menu_continues_the_walk_with_the_way_back() -> None:
    walk, _ = walk_keys("23TTT")
    walk, step = enter_menu(walk, 1)
    assert step == PlayMenu(1)
    assert walk.trail == (1, 2, 3)
    walk, step = press(walk, MENUS, "0")
    assert step == PlayMenu(3)


def test_a_deleted_menu_hangs_up_instead_of_failing() -> None:
    _, step = press(Walk(menu_id=42), MENUS, "1")
    assert step == Leave(HANGUP)
    assert time_out(Walk(menu_id=42), MENUS)[1] == Leave(HANGUP)


def test_an_option_to_a_missing_menu_counts_as_invalid() -> None:
    menus = {1: plan(1, {"1": MenuDestination(id=99)})}
    assert press(Walk(menu_id=1), menus, "1")[1] == PlayMenu(1, Notice.INVALID)


def test_cycles_keep_a_bounded_trail() -> None:
    menus = {1: plan(1, {"1": MenuDestination(id=2)}), 2: plan(2, {"1": MenuDestination(id=1)})}
    walk, _ = start_walk(1)
    for _ in range(100):
        walk, _ = press(walk, menus, "1")
    assert len(walk.trail) == 20


@pytest.mark.parametrize(
    ("menus", "stuck"),
    [
        (MENUS, set()),
        ({1: plan(1, {})}, set()),  # an announcement: its final destination is hang-up
        ({1: plan(1, {"1": RepeatOption()}, final=MenuDestination(id=1))}, {1}),
        (
            {
                1: plan(1, {"1": MenuDestination(id=2)}, final=MenuDestination(id=2)),
                2: plan(2, {"0": BackOption()}, final=MenuDestination(id=1)),
            },
            {1, 2},
        ),
        (
            {
                1: plan(1, {"1": MenuDestination(id=2)}, final=MenuDestination(id=2)),
                2: plan(2, {"0": BackOption(), "1": SALES}, final=MenuDestination(id=1)),
            },
            set(),
        ),
        (
            {
                1: plan(1, {"1": MenuDestination(id=2)}, final=MenuDestination(id=1)),
                2: plan(2, {"1": MenuDestination(id=3)}, final=MenuDestination(id=3)),
                3: plan(3, {"1": MenuDestination(id=2)}, final=MenuDestination(id=2)),
                4: plan(4, {"1": MenuDestination(id=3)}),
            },
            {1, 2, 3},
        ),
    ],
)
def test_menus_that_can_reach_nothing_are_found(
    menus: dict[int, MenuPlan], stuck: set[int]
) -> None:
    assert menus_reaching_nothing(menus) == stuck
