"""Identifier rules and generators (no Django, no I/O)."""

from __future__ import annotations

import random
import re
import secrets
import string
import uuid

from sandbox.constants import EFOTA_SERIAL_LENGTH, KDP_SERIAL_PATTERN, KG_OBJECT_ID_LENGTH, KG_SERIAL_PATTERN

_IMEI_RE = re.compile(r"\d{15}")
_KDP_SERIAL_RE = re.compile(KDP_SERIAL_PATTERN)
_KG_SERIAL_RE = re.compile(KG_SERIAL_PATTERN)
_EFOTA_SERIAL_RE = re.compile(rf"[0-9A-Za-z]{{{EFOTA_SERIAL_LENGTH}}}")
_ALNUM_UPPER = string.ascii_uppercase + string.digits


def luhn_check_digit(body: str) -> str:
    """Check digit that makes `body + digit` pass the Luhn test (IMEIs use it over 14 digits)."""
    total = 0
    # Doubling starts from the rightmost digit of the body, because the check digit will sit to its right.
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def is_valid_imei(value: str) -> bool:
    return bool(_IMEI_RE.fullmatch(value)) and luhn_check_digit(value[:14]) == value[14]


def is_valid_kdp_serial(value: str) -> bool:
    return bool(_KDP_SERIAL_RE.fullmatch(value))


def is_valid_kg_device_uid(value: str) -> bool:
    """Knox Guard's deviceUid is an IMEI or a serial number."""
    return is_valid_imei(value) or bool(_KG_SERIAL_RE.fullmatch(value))


def is_valid_efota_serial(value: str) -> bool:
    return bool(_EFOTA_SERIAL_RE.fullmatch(value))


def make_imei(rng: random.Random, tac: str = "35") -> str:
    body = tac + "".join(rng.choice(string.digits) for _ in range(14 - len(tac)))
    return body + luhn_check_digit(body)


def make_serial(rng: random.Random, prefix: str = "R") -> str:
    return prefix + "".join(rng.choice(_ALNUM_UPPER) for _ in range(11 - len(prefix)))


def make_digits(rng: random.Random, n: int, prefix: str = "") -> str:
    return prefix + "".join(rng.choice(string.digits) for _ in range(n - len(prefix)))


def make_kg_object_id() -> str:
    # Knox Guard's example objectId is 23 upper-case alphanumerics ("SDAKJ23DKCMSDAKENXSSAEQ").
    return "".join(secrets.choice(_ALNUM_UPPER) for _ in range(KG_OBJECT_ID_LENGTH))


def make_kdp_device_record_id() -> str:
    # List-devices ids look like MongoDB ObjectIds (24 hex characters) in seed 001.
    return secrets.token_hex(12)


def make_efota_token() -> str:
    # "a hyphen-separated 32-character hexadecimal string, for example aaaa1111-bb22-cc33-dd44-eeeeee555555".
    return str(uuid.uuid4())


def make_opaque_token() -> str:
    return secrets.token_urlsafe(32)


def new_uuid() -> str:
    return str(uuid.uuid4())
