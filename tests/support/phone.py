"""A SIP desk phone for tests: one pjsua2 account on the shared user-agent thread."""

from __future__ import annotations

import asyncio

import pjsua2 as pj

from pbx.ua_thread import UserAgentThread, shared_user_agent

UNREGISTER_SECONDS = 5.0


def _settle(answer: asyncio.Future[int], code: int) -> None:
    if not answer.done():
        answer.set_result(code)


class _PhoneAccount(pj.Account):  # type: ignore[misc]  # pjsua2 has no type hints
    """Hands the first final answer to each REGISTER back to the asyncio loop waiting for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.answer: asyncio.Future[int] | None = None

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # pjsua2's callback name
        if self.answer is not None:
            self.loop.call_soon_threadsafe(_settle, self.answer, int(prm.code))


class TestPhone:
    """Registers like a desk phone; a failed registration is removed so it cannot retry."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, user_agent: UserAgentThread | None = None) -> None:
        self._ua = user_agent or shared_user_agent()
        self._handle: int | None = None

    async def register(
        self,
        username: str,
        password: str,
        domain: str,
        registrar_host: str,
        registrar_port: int,
        timeout: float = 5.0,  # noqa: ASYNC109  # no answer is an outcome: the account must go
        *,
        auth_username: str | None = None,
    ) -> int:
        """The final SIP status of the REGISTER (200 when registered); TimeoutError if none.

        `auth_username` answers the challenge as another user (default: `username`).
        """
        await self._drop_account()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[int] = loop.create_future()

        def create_account() -> int:
            # Every pjsua2 object, config structs included, lives on the user-agent thread.
            config = pj.AccountConfig()
            config.idUri = f"sip:{username}@{domain}"
            config.regConfig.registrarUri = f"sip:{registrar_host}:{registrar_port}"
            # Report a failure once; the test decides what happens next.
            config.regConfig.retryIntervalSec = 0
            credentials = pj.AuthCredInfo("digest", "*", auth_username or username, 0, password)
            config.sipConfig.authCreds.append(credentials)
            config.sipConfig.transportId = self._ua.transport_id
            config.mediaConfig.transportConfig.boundAddress = self._ua.host
            config.mediaConfig.transportConfig.publicAddress = self._ua.host
            account = _PhoneAccount(loop)
            account.answer = answer
            account.create(config)
            return self._ua.keep(account)

        self._handle = await self._ua.run_async(create_account)
        try:
            async with asyncio.timeout(timeout):
                code = await answer
        except TimeoutError:
            await self._drop_account()
            raise TimeoutError(
                f"no final answer to REGISTER from {registrar_host}:{registrar_port}"
                f" within {timeout:g} s"
            ) from None
        if not 200 <= code < 300:
            await self._drop_account()
        return code

    async def unregister(self) -> None:
        """Remove the binding at the registrar (REGISTER with Expires 0), then the account."""
        handle = self._handle
        if handle is None:
            return
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def send_unregister() -> None:
            account = self._ua.kept(handle, _PhoneAccount)
            if account is None:
                raise RuntimeError("the phone's account is gone (user agent stopped?)")
            account.answer = answer
            account.setRegistration(False)

        try:
            await self._ua.run_async(send_unregister)
            async with asyncio.timeout(UNREGISTER_SECONDS):
                await answer
        finally:
            await self._drop_account()

    def close(self) -> None:
        """Drop the account (pjsua unregisters it if it is registered). Safe to repeat."""
        handle, self._handle = self._handle, None
        if handle is not None and self._ua.running:
            self._ua.run(lambda: self._shut_down(handle))

    async def _drop_account(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None and self._ua.running:
            await self._ua.run_async(lambda: self._shut_down(handle))

    def _shut_down(self, handle: int) -> None:
        account = self._ua.kept(handle, _PhoneAccount)
        if account is not None:
            account.shutdown()
        self._ua.release(handle)
