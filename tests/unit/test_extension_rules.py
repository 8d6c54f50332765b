import pytest

from extensions.credentials import PASSWORD_LENGTH, digest_ha1, generate_sip_password
from extensions.numbering import is_valid_extension


@pytest.mark.parametrize("number", ["0", "1", "12", "123", "1001", "0001", "9999"])
def test_one_to_four_decimal_digits_are_extensions(number: str) -> None:
    assert is_valid_extension(number)


# An Arabic-Indic and a full-width digit: Unicode says digit, no keypad dials them.
UNICODE_DIGITS = ["\u0661", "\uff11"]


@pytest.mark.parametrize(
    "number",
    ["", "12345", "10a", " 101", "101 ", "+101", "1-0", "*1", "#", "1.0", "1\n", *UNICODE_DIGITS],
)
def test_anything_else_is_not_an_extension(number: str) -> None:
    assert not is_valid_extension(number)


def test_ha1_matches_rfc2617_definition() -> None:
    # md5("1001:127.0.0.1:secret"), computed independently with `printf ... | md5sum`.
    assert digest_ha1("1001", "127.0.0.1", "secret") == "2c8f61e3df784c486fcb20d39acc33bb"


def test_generated_passwords_are_long_alphanumeric_and_distinct() -> None:
    passwords = {generate_sip_password() for _ in range(200)}
    assert len(passwords) == 200
    assert all(len(p) == PASSWORD_LENGTH and p.isalnum() and p.isascii() for p in passwords)
