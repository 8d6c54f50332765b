"""The prompt library: spoken and uploaded prompts, validation, use as a greeting, deletion."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_TOKEN
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
