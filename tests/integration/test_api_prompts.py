"""The prompt library: spoken and uploaded prompts, validation, use as a greeting, deletion."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.settings import Settings
from ivr.prompts import UnknownVoice, check_voice, text_prompt_path
from tests.conftest import ADMIN_TOKEN
from tests.integration.test_event_stream import next_event
from tests.support.api_client import ApiClient


def make_wav(folder: Path, *, rate: int = 44100, channels: int = 2, seconds: float = 1.0) -> bytes:
    path = folder / f"upload-{rate}-{channels}.wav"
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", str(channels), "-b", "16", str(path),
         "synth", str(seconds), "sine", "500"],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


async def upload(
    http: aiohttp.ClientSession, api_base: str, data: bytes, name: str = "uploaded",
    token: str = ADMIN_TOKEN,
) -> tuple[int, Any]:  # fmt: skip
    async with http.post(
        f"{api_base}/prompts/upload", params={"name": name}, data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "audio/wav"},
    ) as reply:  # fmt: skip
        return reply.status, await reply.json()


def wav_info(data: bytes, folder: Path) -> str:
    path = folder / "downloaded.wav"
    path.write_bytes(data)
    return subprocess.run(["soxi", str(path)], capture_output=True, text=True, check=True).stdout


async def test_uploaded_audio_is_converted_to_8khz_mono(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str, tmp_path: Path
) -> None:
    status, body = await upload(http, api_base, make_wav(tmp_path), name="Hold music")
    assert status == 201, body
    assert body["kind"] == "audio" and body["name"] == "Hold music"
    assert 0.9 < body["seconds"] < 1.1
    async with http.get(
        f"{api_base}/prompts/{body['id']}/audio", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as reply:
        assert reply.status == 200
        info = wav_info(await reply.read(), tmp_path)
    assert "Sample Rate    : 8000" in info and "Channels       : 1" in info
    assert body["id"] in [p["id"] for p in (await admin.get("/prompts")).body["items"]]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"this is not audio at all" * 100, "not audio"),
        (b"RIFF\x00\x00", "not audio"),
    ],
)
async def test_non_audio_uploads_are_422(
    http: aiohttp.ClientSession, api_base: str, data: bytes, fragment: str
) -> None:
    status, body = await upload(http, api_base, data)
    assert status == 422
    assert body["error"]["code"] == "invalid_audio"
    assert fragment in body["error"]["message"]


async def test_upload_needs_a_name_and_an_admin(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str, tmp_path: Path
) -> None:
    status, body = await upload(http, api_base, make_wav(tmp_path), name="")
    assert status == 422 and body["error"]["field"] == "name"
    user = await admin.new_user("No Uploads")
    token = await admin.token_for(user["id"])
    status, _ = await upload(http, api_base, make_wav(tmp_path), token=token)
    assert status == 403


async def test_text_prompt_and_greeting_by_prompt_id(admin: ApiClient) -> None:
    prompt = await admin.post("/prompts", {"name": "Night", "text": "We are closed."})
    assert prompt.status == 201 and prompt.body["kind"] == "text" and prompt.body["seconds"] > 0
    number = await admin.post(
        "/numbers",
        {"number": "+4930444555", "greeting": {"prompt_id": prompt.body["id"]},
         "default_destination": {"type": "hangup"}},
    )  # fmt: skip
    assert number.status == 201, number
    assert number.body["greeting"] == {"text": None, "prompt_id": prompt.body["id"]}
    in_use = await admin.delete(f"/prompts/{prompt.body['id']}")
    assert in_use.status == 409 and in_use.error_code == "prompt_in_use"
    assert "+4930444555" in in_use.body["error"]["message"]
    back_to_text = await admin.patch(
        f"/numbers/{number.body['id']}", {"greeting": {"text": "Hello again"}}
    )
    assert back_to_text.body["greeting"] == {"text": "Hello again", "prompt_id": None}
    assert (await admin.delete(f"/prompts/{prompt.body['id']}")).status == 204
    assert (await admin.get(f"/prompts/{prompt.body['id']}")).status == 404


async def test_unknown_prompt_as_greeting_is_422(admin: ApiClient) -> None:
    reply = await admin.post(
        "/numbers",
        {"number": "+4930444556", "greeting": {"prompt_id": 999999},
         "default_destination": {"type": "hangup"}},
    )  # fmt: skip
    assert reply.status == 422
    assert reply.error_code == "unknown_prompt"
    assert reply.body["error"]["field"] == "greeting.prompt_id"


def rms_amplitude(wav: Path) -> float:
    stat = subprocess.run(["sox", str(wav), "-n", "stat"], capture_output=True, text=True).stderr
    return float(
        next(line for line in stat.splitlines() if "RMS     amplitude" in line).split()[-1]
    )


async def download(http: aiohttp.ClientSession, api_base: str, prompt_id: int) -> bytes:
    async with http.get(
        f"{api_base}/prompts/{prompt_id}/audio", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as reply:
        assert reply.status == 200 and reply.content_type == "audio/wav"
        return await reply.read()


async def test_text_prompt_is_spoken_once_into_a_non_silent_8khz_mono_wav(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str, settings: Settings,
    tmp_path: Path,
) -> None:  # fmt: skip
    text = "Our office is closed for the holidays."
    first = await admin.post("/prompts", {"name": "Holidays", "text": text})
    assert first.status == 201, first
    wav = tmp_path / "spoken.wav"
    wav.write_bytes(await download(http, api_base, first.body["id"]))
    info = subprocess.run(["soxi", str(wav)], capture_output=True, text=True, check=True).stdout
    assert "Sample Rate    : 8000" in info and "Channels       : 1" in info
    assert "Precision      : 16-bit" in info and "Signed Integer PCM" in info
    assert rms_amplitude(wav) > 0.01
    cached = await text_prompt_path(settings.data_dir / "prompts", text, settings.prompts.voice)
    made_at = cached.stat().st_mtime_ns
    second = await admin.post("/prompts", {"name": "Holidays again", "text": text})
    assert second.status == 201
    assert await download(http, api_base, second.body["id"]) == wav.read_bytes()
    assert cached.stat().st_mtime_ns == made_at


async def test_upload_larger_than_a_json_body_is_converted(
    http: aiohttp.ClientSession, api_base: str, tmp_path: Path
) -> None:
    data = make_wav(tmp_path, seconds=15.0)
    assert len(data) > 2 * 1024 * 1024
    status, body = await upload(http, api_base, data, name="Long hold music")
    assert status == 201, body
    wav = tmp_path / "converted.wav"
    wav.write_bytes(await download(http, api_base, body["id"]))
    assert 14.9 < body["seconds"] < 15.1
    # The whole upload, not its first network chunk, was converted.
    length = subprocess.run(["soxi", "-D", str(wav)], capture_output=True, text=True, check=True)
    assert 14.9 < float(length.stdout) < 15.1
    assert rms_amplitude(wav) > 0.01


async def test_upload_over_20_mb_is_422(http: aiohttp.ClientSession, api_base: str) -> None:
    status, body = await upload(http, api_base, b"\0" * (20 * 1024 * 1024 + 1))
    assert status == 422
    assert body["error"]["code"] == "invalid_audio" and "exceeds" in body["error"]["message"]


async def test_audio_over_ten_minutes_is_422(
    http: aiohttp.ClientSession, api_base: str, tmp_path: Path
) -> None:
    path = tmp_path / "long.wav"
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "8", str(path), "synth", "601", "sine", "500"],
        check=True,
    )
    status, body = await upload(http, api_base, path.read_bytes())
    assert status == 422
    assert (
        body["error"]["code"] == "invalid_audio" and "longer than 600 s" in body["error"]["message"]
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "Hello"}, "name"),
        ({"name": "Greeting"}, "text"),
        ({"name": "Greeting", "text": "   "}, "text"),
        ({"name": "", "text": "Hello"}, "name"),
        ({"name": "Greeting", "text": "x" * 2001}, "text"),
        ({"name": "Greeting", "text": "Hello", "voice": "de"}, "voice"),
    ],
)
async def test_invalid_text_prompt_is_422_naming_the_field(
    admin: ApiClient, body: dict[str, Any], field: str
) -> None:
    reply = await admin.post("/prompts", body)
    assert reply.status == 422 and reply.error_code == "validation_error"
    assert reply.body["error"]["field"] == field


async def test_unknown_prompt_is_404(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str
) -> None:
    assert (await admin.get("/prompts/999999")).error_code == "not_found"
    assert (await admin.delete("/prompts/999999")).status == 404
    async with http.get(
        f"{api_base}/prompts/999999/audio", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as reply:
        assert reply.status == 404 and (await reply.json())["error"]["code"] == "not_found"


async def test_supervisors_read_prompts_and_operators_do_not(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str, tmp_path: Path
) -> None:
    prompt = await admin.post("/prompts", {"name": "Roles", "text": "Roles."})
    prompt_id = prompt.body["id"]
    supervisor_user = await admin.new_user("Prompt Supervisor", role="supervisor")
    supervisor_token = await admin.token_for(supervisor_user["id"])
    supervisor = admin.as_token(supervisor_token)
    assert (await supervisor.get("/prompts")).status == 200
    assert (await supervisor.get(f"/prompts/{prompt_id}")).status == 200
    async with http.get(
        f"{api_base}/prompts/{prompt_id}/audio",
        headers={"Authorization": f"Bearer {supervisor_token}"},
    ) as reply:
        assert reply.status == 200
    assert (await supervisor.post("/prompts", {"name": "No", "text": "No."})).status == 403
    assert (await supervisor.delete(f"/prompts/{prompt_id}")).status == 403
    status, _ = await upload(http, api_base, make_wav(tmp_path), token=supervisor_token)
    assert status == 403
    operator_user = await admin.new_user("Prompt Operator")
    operator_token = await admin.token_for(operator_user["id"])
    assert (await admin.as_token(operator_token).get("/prompts")).status == 403
    async with http.get(
        f"{api_base}/prompts/{prompt_id}/audio",
        headers={"Authorization": f"Bearer {operator_token}"},
    ) as reply:
        assert reply.status == 403
    async with http.get(f"{api_base}/prompts/{prompt_id}/audio") as reply:
        assert reply.status == 401


async def test_prompt_changes_are_published_live(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str, tmp_path: Path
) -> None:
    url = f"{api_base}/events?types=prompt_created,prompt_deleted"
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as ws:
        spoken = await admin.post("/prompts", {"name": "Evented", "text": "Events."})
        created = await next_event(ws, "prompt_created")
        assert created["data"]["id"] == spoken.body["id"]
        assert created["data"]["kind"] == "text" and created["data"]["name"] == "Evented"
        _, uploaded = await upload(http, api_base, make_wav(tmp_path), name="Evented upload")
        assert (await next_event(ws, "prompt_created"))["data"]["kind"] == "audio"
        assert (await admin.delete(f"/prompts/{uploaded['id']}")).status == 204
        deleted = await next_event(ws, "prompt_deleted")
        assert deleted["data"]["id"] == uploaded["id"] and deleted["id"] > created["id"]


async def test_deleting_an_uploaded_prompt_removes_its_file(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str, tmp_path: Path,
    settings: Any,
) -> None:  # fmt: skip
    before = set((settings.data_dir / "prompts").glob("upload-*.wav"))
    status, body = await upload(http, api_base, make_wav(tmp_path), name="Short lived")
    assert status == 201
    created = set((settings.data_dir / "prompts").glob("upload-*.wav")) - before
    assert len(created) == 1
    assert (await admin.delete(f"/prompts/{body['id']}")).status == 204
    assert not next(iter(created)).exists()


async def test_spoken_prompts_use_the_configured_voice(tmp_path: Path) -> None:
    english = await text_prompt_path(tmp_path, "Guten Tag", "en")
    german = await text_prompt_path(tmp_path, "Guten Tag", "de")
    assert english != german  # cached per voice
    assert english.read_bytes() != german.read_bytes()
    for voice in ("en", "de", "en-us", "German", "en+f3"):
        await check_voice(voice)
    with pytest.raises(UnknownVoice):
        await check_voice("no-such-voice")  # espeak-ng itself would silently speak English
