"""The demo world: keys, credentials and the initial state the sandbox starts from (and resets to).

Nothing here touches the network. `generate_world()` is called once per state directory; its result is written to
`world.json` so that a reset restores exactly the same world, with the same keys and credentials.
"""

from __future__ import annotations

import base64
import random
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox import ids
from sandbox.constants import (
    KDP_CUSTOMER_STATUS_PENDING,
    KDP_CUSTOMER_STATUS_VERIFIED,
    KDP_DEVICE_TYPE_IMEI,
    KDP_DEVICE_TYPE_SERIAL,
    KDP_TARGET_SERVICE_KME,
    OAUTH_KDP_SCOPES,
)

STATE_VERSION = 1

_CUSTOMER_NAMES = ("TOP Oil", "Northwind Traders", "Contoso Logistics", "Fabrikam Health", "Pending Verification Co")
_ALIAS_NAMES = ("Default", "Kiosk", "Field Staff", "Executives")
_MODELS = ("SM-G981B/DS", "SM-A536B", "SM-S911B", "SM-T505", "SM-G991B")


def generate_keys() -> dict[str, str]:
    """An RSA-2048 pair in the Knox Cloud API portal's keys.json format (PKCS#8 / SubjectPublicKeyInfo DER)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "Private": base64.b64encode(private_der).decode(),
        "Public": base64.b64encode(public_der).decode(),
        "Identifier": str(uuid.uuid4()),
    }


def _client_identifier(reseller_id: str) -> str:
    # Real Client Identifiers are themselves JWTs signed by Samsung. The sandbox only ever looks them up, so a JWT
    # signed with a throwaway secret gives clients a realistic, opaque string.
    claims = {"iss": "knox-sandbox", "sub": reseller_id, "svc": ["KDP", "KG"], "jti": uuid.uuid4().hex}
    return jwt.encode(claims, secrets.token_bytes(32), algorithm="HS256")


def _kdp_device(
    device_id: str,
    type_: str,
    reseller_id: str,
    customer_id: str,
    now_ms: int,
    rng: random.Random,
    *,
    serial: str | None = None,
    meid: str | None = None,
    vendor_id: str | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": ids.make_kdp_device_record_id(),
        "deviceId": device_id,
        "type": type_,
        "resellerId": reseller_id,
        "customerId": customer_id,
        "vendorId": vendor_id,
        "transactionId": None,
        "uploadId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "createTime": now_ms - rng.randint(1, 400) * 86_400_000,
        "model": rng.choice(_MODELS),
        "targetService": None,
        "profileAliases": [],
        "orderNo": None,
    }
    if serial:
        rec["serialNumber"] = serial
    if meid:
        rec["meid"] = meid
    return rec


def generate_world(keys: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build (credentials without base_url/keys_file, initial state).

    Every identifier is random per state directory, so two sandboxes never share devices by accident, but the
    shape is always the same: 5 customers (the last one pending verification), 2-4 KME aliases each, a second
    reseller owning some devices, a Gen1 reseller, Knox Guard devices in each main state, E-FOTA licences.
    """
    rng = random.Random(secrets.randbits(64))
    now = time.time()
    now_ms = int(now * 1000)

    reseller_id = ids.make_digits(rng, 10, "46")
    second_reseller_id = ids.make_digits(rng, 10, "47")
    gen1_reseller_id = ids.make_digits(rng, 10, "48")
    client_identifier = _client_identifier(reseller_id)
    oauth_client_id = "sandbox-" + secrets.token_hex(8)
    oauth_secret = secrets.token_urlsafe(24)
    gen1_key = secrets.token_hex(20)
    vendor_id = ids.make_digits(rng, 10, "49")

    resellers = {
        reseller_id: {"resellerId": reseller_id, "name": "Sandbox Reseller Ltd", "generation": 2, "vendorIds": []},
        second_reseller_id: {
            "resellerId": second_reseller_id,
            "name": "Other Reseller plc",
            "generation": 2,
            "vendorIds": [],
        },
        gen1_reseller_id: {
            "resellerId": gen1_reseller_id,
            "name": "Legacy Gen1 Reseller",
            "generation": 1,
            "vendorIds": [vendor_id],
        },
    }

    customers: dict[str, dict[str, Any]] = {}
    devices: dict[str, dict[str, Any]] = {}
    cred_customers: list[dict[str, Any]] = []
    for i, name in enumerate(_CUSTOMER_NAMES):
        cid = ids.make_digits(rng, 10, "46")
        pending = i == len(_CUSTOMER_NAMES) - 1
        n_alias = 2 + (i % 3)
        aliases = {alias: str(uuid.UUID(int=rng.getrandbits(128), version=4)) for alias in _ALIAS_NAMES[:n_alias]}
        customers[cid] = {
            "customerId": cid,
            "name": name,
            "resellerId": reseller_id,
            "status": KDP_CUSTOMER_STATUS_PENDING if pending else KDP_CUSTOMER_STATUS_VERIFIED,
            "profileAliases": aliases,
        }
        demo_ids: list[str] = []
        if not pending:
            for _ in range(4):
                imei = ids.make_imei(rng)
                devices[imei] = _kdp_device(
                    imei,
                    KDP_DEVICE_TYPE_IMEI,
                    reseller_id,
                    cid,
                    now_ms,
                    rng,
                    serial=ids.make_serial(rng),
                    meid=ids.make_digits(rng, 18, "089"),
                )
                demo_ids.append(imei)
        cred_customers.append(
            {
                "customerId": cid,
                "name": name,
                "status": customers[cid]["status"],
                "profileAliases": list(aliases),
                "devices": demo_ids,
            }
        )

    # The second reseller already owns these: uploads of them by our reseller must collide.
    other_customer = ids.make_digits(rng, 10, "47")
    customers[other_customer] = {
        "customerId": other_customer,
        "name": "Someone Else's Customer",
        "resellerId": second_reseller_id,
        "status": KDP_CUSTOMER_STATUS_VERIFIED,
        "profileAliases": {"Default": str(uuid.uuid4())},
    }
    second_imeis = [ids.make_imei(rng) for _ in range(8)]
    second_serials = [ids.make_serial(rng) for _ in range(2)]
    for imei in second_imeis:
        devices[imei] = _kdp_device(imei, KDP_DEVICE_TYPE_IMEI, second_reseller_id, other_customer, now_ms, rng)
    for sn in second_serials:
        devices[sn] = _kdp_device(sn, KDP_DEVICE_TYPE_SERIAL, second_reseller_id, other_customer, now_ms, rng)

    gen1_customers = []
    for name in ("Gen1 Retail Group", "Gen1 Transport"):
        cid = ids.make_digits(rng, 10, "48")
        customers[cid] = {
            "customerId": cid,
            "name": name,
            "resellerId": gen1_reseller_id,
            "status": KDP_CUSTOMER_STATUS_VERIFIED,
            "profileAliases": {},
        }
        demo_ids = []
        for _ in range(3):
            imei = ids.make_imei(rng)
            devices[imei] = _kdp_device(imei, KDP_DEVICE_TYPE_IMEI, gen1_reseller_id, cid, now_ms, rng)
            demo_ids.append(imei)
        gen1_customers.append({"customerId": cid, "name": name, "devices": demo_ids})

    # --- Knox Guard -------------------------------------------------------------------------------------------
    guard_devices: dict[str, dict[str, Any]] = {}
    plan = (("Pending", 3), ("Enrolled", 3), ("Locked", 2), ("Blinked", 2), ("Completed", 2), ("Rejected", 1))
    n = 0
    for state, count in plan:
        for _ in range(count):
            n += 1
            uid = ids.make_imei(rng, "35")
            guard_devices[uid] = {
                "deviceUid": uid,
                "objectId": ids.make_kg_object_id(),
                "approveId": f"LOAN-{n:04d}",
                "state": state,
                "uploadId": None,
                "createTime": now_ms - rng.randint(1, 90) * 86_400_000,
                "model": rng.choice(_MODELS),
                "approveComment": None,
                "lastMessage": None,
                "reminder": None,
                "dueAt": None,
            }
    # The Pending devices arrived through the reseller portal; GET devices/uploads lists every channel (seed 003).
    portal_upload_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    pending_uids = [uid for uid, d in guard_devices.items() if d["state"] == "Pending"]
    for uid in pending_uids:
        guard_devices[uid]["uploadId"] = portal_upload_id
    guard_uploads = {
        portal_upload_id: {
            "uploadId": portal_upload_id,
            "channel": "KDP",
            "createTime": now_ms - 86_400_000,
            "dueAt": now - 86_400,
            "totalDeviceCount": len(pending_uids),
            "validDeviceCount": len(pending_uids),
            "invalidDeviceCount": 0,
            "flags": {},
            "devices": [
                {"deviceUid": uid, "approveId": guard_devices[uid]["approveId"], "result": "SUCCESS"}
                for uid in pending_uids
            ],
        }
    }
    guard_tenant = {
        "companyName": "Sandbox Finance Ltd",
        "country": "GB",
        "email": "kg-admin@sandbox.invalid",
        "name": "Sandbox KG Admin",
        "phoneNumber": "+44 20 7946 0000",
    }
    guard_licenses = [
        {"licenseKey": "KG-" + secrets.token_hex(8).upper(), "state": "Active", "maxDevices": 1000},
        {"licenseKey": "KG-" + secrets.token_hex(8).upper(), "state": "Expired", "maxDevices": 100},
    ]

    # --- E-FOTA -----------------------------------------------------------------------------------------------
    mdm_id = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(10))
    efota_customer = "-".join(secrets.token_hex(k).upper() for k in (4, 2, 2, 2, 6))
    efota_client_id = "efota-" + secrets.token_hex(8)
    efota_secret = secrets.token_urlsafe(24)
    today = datetime.now(UTC).date()
    license_key = "EFOTA1-" + "-".join(secrets.token_hex(k) for k in (3, 3, 2))
    expired_key = "EFOTA1-" + "-".join(secrets.token_hex(k) for k in (3, 3, 2))
    second_key = "EFOTA1-" + "-".join(secrets.token_hex(k) for k in (3, 3, 2))
    efota_licenses = {
        license_key: {
            "license": license_key,
            "mdmId": mdm_id,
            "customerId": efota_customer,
            "maxDeviceCount": 100,
            "expirationDate": (today + timedelta(days=30)).isoformat(),
        },
        second_key: {
            "license": second_key,
            "mdmId": mdm_id,
            "customerId": efota_customer,
            "maxDeviceCount": 100,
            "expirationDate": (today + timedelta(days=365)).isoformat(),
        },
        expired_key: {
            "license": expired_key,
            "mdmId": mdm_id,
            "customerId": efota_customer,
            "maxDeviceCount": 100,
            "expirationDate": (today - timedelta(days=10)).isoformat(),
        },
    }
    efota_devices: dict[str, dict[str, Any]] = {}
    serials = []
    for i in range(10):
        sn = ids.make_serial(rng, "R5")
        serials.append(sn)
        efota_devices[sn] = {
            "serialNumber": sn,
            "license": license_key,
            "deviceModelName": "SM-G991B",
            "salesCode": "BTU",
            "groupId": "DEMOGROUP1",
            # Two devices sit beyond what the licence pays for, to populate abnormalDeviceList.
            "blocked": i >= 8,
        }
    firmware = {
        "SM-G991B/BTU": ["G991BXXU5DVJ1", "G991BXXU6DWA1", "G991BXXU7DWC4"],
        "SM-A536B/XEU": ["A536BXXU4BWA1", "A536BXXU5CWB7"],
    }
    efota_groups = {
        "DEMOGROUP1": {
            "groupId": "DEMOGROUP1",
            "license": license_key,
            "mdmId": mdm_id,
            "customerId": efota_customer,
            "registeredAt": now_ms,
        }
    }

    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "auth": {
            "clients": {
                client_identifier: {"publicKey": keys["Public"], "resellerId": reseller_id, "services": ["KDP", "KG"]}
            },
            "oauthClients": {
                oauth_client_id: {
                    "clientSecret": oauth_secret,
                    "resellerId": reseller_id,
                    "scopes": list(OAUTH_KDP_SCOPES),
                }
            },
            "gen1Keys": {gen1_key: gen1_reseller_id},
            "efotaClients": {
                efota_client_id: {"clientSecret": efota_secret, "mdmId": mdm_id, "customerId": efota_customer}
            },
            "accessTokens": {},
            "oauthTokens": {},
            "efotaTokens": {},
            "jtis": {},
        },
        "kdp": {
            "resellers": resellers,
            "customers": customers,
            "devices": devices,
            "transactions": {},
            "pending": [],
        },
        "guard": {
            "tenant": guard_tenant,
            "licenses": guard_licenses,
            "devices": guard_devices,
            "uploads": guard_uploads,
            "transactions": {},
        },
        "efota": {
            "licenses": efota_licenses,
            "groups": efota_groups,
            "devices": efota_devices,
            "firmware": firmware,
            "forceUpdates": {},
        },
        "counters": new_counters(),
    }

    credentials: dict[str, Any] = {
        "reseller_id": reseller_id,
        "reseller_name": resellers[reseller_id]["name"],
        "client_identifier": client_identifier,
        "gen1_api_key": gen1_key,
        "gen1_reseller_id": gen1_reseller_id,
        "gen1_vendor_ids": [vendor_id],
        "gen1_customers": gen1_customers,
        "oauth": {"client_id": oauth_client_id, "client_secret": oauth_secret, "scopes": list(OAUTH_KDP_SCOPES)},
        "customers": cred_customers,
        "target_service": KDP_TARGET_SERVICE_KME,
        "second_reseller": {
            "reseller_id": second_reseller_id,
            "name": resellers[second_reseller_id]["name"],
            "customer_id": other_customer,
            "device_ids": second_imeis + second_serials,
        },
        "guard": {
            "tenant": guard_tenant,
            "licenses": guard_licenses,
            "devices": [
                {
                    "deviceUid": d["deviceUid"],
                    "approveId": d["approveId"],
                    "state": d["state"],
                    "objectId": d["objectId"],
                }
                for d in guard_devices.values()
            ],
        },
        "efota": {
            "client_id": efota_client_id,
            "client_secret": efota_secret,
            "mdm_id": mdm_id,
            "customer_id": efota_customer,
            "license": license_key,
            "second_license": second_key,
            "expired_license": expired_key,
            "group_id": "DEMOGROUP1",
            "device_serials": serials,
            "firmware": firmware,
        },
    }
    return credentials, state


def new_counters() -> dict[str, Any]:
    return {
        "requests": 0,
        "rate_limited": 0,
        "by_path": {},
        "duplicate_device_submissions": 0,
        "faults": {"error": 0, "throttle": 0, "reset": 0, "truncate": 0},
    }
