"""Callback end to end: a SIPp caller through the real edge asks the queue to call back and
is hung up; at their turn a baresip desk phone (the agent) is rung, answers, and the service
dials the customer through the trunk: a PJSUA2 softphone on the provider's side rings and
answers, and the two hear each other over real RTP."""

from __future__ import annotations

import array
import asyncio
import wave
from collections.abc import Callable
from pathlib import Path

from core.settings import Settings
from tests.integration.test_media_workers import tone_strength
from tests.integration.test_queue_calls import caller, eventually_logged, queue_line
from tests.support.agents import Agent
from tests.support.api_client import ApiClient
from tests.support.baresip import Baresip
from tests.support.phone import TestPhone

CUSTOMER = "4930111777"
# The provider-side softphone's tone (tests.support.phone) and a second's worth of packets.
CUSTOMER_TONE_HZ = 600
PACKETS_PER_SECOND = 50


async def test_a_callback_reaches_the_customer_at_a_provider_side_softphone(
    admin: ApiClient, settings: Settings, next_extension: Callable[[], str], tmp_path: Path
) -> None:
    made = await admin.new_user("Callback Desk")
    desk_ext = next_extension()
    sip = (await admin.assign(made["id"], desk_ext))["sip"]
    desk = Baresip(tmp_path / "baresip")
    provider_side = TestPhone()  # rings until the test answers, as a person would
    await provider_side.open_unregistered(CUSTOMER)
    await desk.start(desk_ext, sip["password"], settings.sip.domain, settings.sip.host,
                     settings.sip.port)  # fmt: skip
    try:
        agent = Agent(provider_side, desk_ext, made["id"])  # the queue needs its user id
        await admin.put(f"/users/{agent.user_id}/presence", {"status": "not_ready",
                                                             "reason": "break"})  # fmt: skip
        queue_id, number = await queue_line(admin, [agent], when_no_agents="wait",
                                            callback_key="5")  # fmt: skip
        # The caller presses 5 (callback), then 1 (call back the number I call from), and
        # hears the thanks; the service hangs up.
        sipp = caller(settings, tmp_path, number, digits="51", digits_after_s=2.5,
                      hang_up="remote", caller=CUSTOMER)  # fmt: skip
        assert (await sipp).succeeded
        await eventually_logged(admin, queue_id, "callback")

        await admin.put(f"/users/{agent.user_id}/presence", {"status": "ready"})
        await desk.wait_for(r"audio tx pipeline", timeout=15)  # the desk answered
        at_customer = await provider_side.next_incoming(timeout=15)
        await at_customer.answer()
        await asyncio.wait_for(at_customer.answered, 5)
        async with asyncio.timeout(10):  # the customer hears the desk's 440 Hz tone
            while await at_customer.rx_level() <= 10:
                await asyncio.sleep(0.1)
            talk_from = await at_customer.rx_packets()
            while await at_customer.rx_packets() < talk_from + PACKETS_PER_SECOND:
                await asyncio.sleep(0.1)
        await at_customer.hangup()
        logged = await eventually_logged(admin, queue_id, "callback_attempt")
    finally:
        await desk.stop()
        provider_side.close()
    assert [kind for kind, _ in logged] == [
        "enter", "callback", "offer", "connect", "complete", "callback_attempt",
    ]  # fmt: skip
    (done,) = (await admin.get("/callbacks", params={"queue_id": str(queue_id)})).body["items"]
    assert (done["state"], done["number"], done["user_id"]) == (
        "completed", CUSTOMER, agent.user_id,
    )  # fmt: skip
    # The desk heard the customer: their tone fills the last second it heard.
    (heard_file,) = desk.heard_files()
    with wave.open(str(heard_file)) as heard:
        rate, channels = heard.getframerate(), heard.getnchannels()
        samples = array.array("h", heard.readframes(heard.getnframes()))
    last_second = samples[-rate * channels :: channels]
    assert tone_strength(last_second, CUSTOMER_TONE_HZ, rate) > 0.05
