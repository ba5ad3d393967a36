"""The sandbox's state: one in-memory document under one lock, persisted to DIR/state.json.

Layout of `Sandbox.state` (also what GET /_sandbox/state shows):

    auth      clients, oauthClients, gen1Keys, efotaClients, accessTokens, oauthTokens, efotaTokens, jtis
    kdp       resellers, customers, devices (keyed by IMEI/serial), transactions ("<resellerId>/<transactionId>"),
              pending (transaction keys waiting for the process delay, oldest first)
    guard     tenant, licenses, devices (keyed by deviceUid), uploads, transactions
    efota     licenses, groups (keyed by upper-case groupId), devices (by serial), firmware, forceUpdates
    counters  requests, rate_limited, by_path, duplicate_device_submissions, faults

Records are **never mutated in place**: a change replaces the record (`d[k] = {**d[k], "state": ...}`). That lets
the persister copy two levels of dicts under the lock (cheap even with 100,000 devices) and serialise the copy
outside it, while request threads keep working.
"""

from __future__ import annotations

import copy
import heapq
import json
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from sandbox import world
from sandbox.constants import (
    DEFAULT_PROCESS_DELAY_SECONDS,
    DEFAULT_TOKEN_TTL_SECONDS,
    EFOTA_TOKEN_LIFETIME_SECONDS,
    FAULT_NAMES,
    KDP_MAX_DEVICES_PER_REQUEST,
    KDP_MAX_REQUESTS_PER_SECOND,
    KG_MAX_REQUESTS_PER_SECOND,
)

log = logging.getLogger("sandbox")

# How long the persister waits between writes, at least. It backs off further when a write is slow (a very large
# state), so that serialising never takes more than about a third of the process's time.
MIN_SAVE_INTERVAL_SECONDS = 1.0
# Dicts larger than this are serialised in slices, so that json's C encoder releases the GIL between slices and
# request threads are not frozen while 100,000 devices are written.
_CHUNK = 1000


def parse_faults(spec: str | dict[str, Any] | None) -> dict[str, float]:
    """Parse `error=0.1,throttle=0.05,latency=0.2` (or the same as a dict) into validated knob values."""
    knobs = dict.fromkeys(FAULT_NAMES, 0.0)
    if not spec:
        return knobs
    items: list[tuple[str, Any]]
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"fault {part!r} is not name=value")
            items.append((name.strip(), value.strip()))
    for name, value in items:
        if name not in knobs:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
        if isinstance(value, bool):
            raise ValueError(f"fault {name} must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"fault {name} must be a number, not {value!r}") from None
        if number < 0 or (name != "latency" and number > 1):
            raise ValueError(f"fault {name} must be {'>= 0' if name == 'latency' else 'between 0 and 1'}")
        knobs[name] = number
    return knobs


@dataclass
class Config:
    rate_limit: int = KG_MAX_REQUESTS_PER_SECOND
    kdp_rate_limit: int = KDP_MAX_REQUESTS_PER_SECOND
    token_ttl: float = DEFAULT_TOKEN_TTL_SECONDS
    process_delay: float = DEFAULT_PROCESS_DELAY_SECONDS
    faults: dict[str, float] = field(default_factory=lambda: parse_faults(""))
    max_devices_per_request: int = KDP_MAX_DEVICES_PER_REQUEST
    # Seconds between state writes, at least (--save-interval). The benchmarks raise it: real Knox does not share
    # the portal's cores, and rewriting 20,000 devices every second costs the sandbox about 2 ms per request.
    save_interval: float = MIN_SAVE_INTERVAL_SECONDS

    @property
    def efota_token_ttl(self) -> float:
        # E-FOTA tokens last an hour. --token-ttl only shortens them when it is set below its default, so tests can
        # make every kind of token expire quickly with one knob.
        if self.token_ttl >= DEFAULT_TOKEN_TTL_SECONDS:
            return EFOTA_TOKEN_LIFETIME_SECONDS
        return self.token_ttl


class RateLimiter:
    """Sliding one-second window per key. Refused calls are not counted, so a client that backs off gets in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], deque[float]] = {}

    def check(self, key: tuple[str, str], limit: int) -> float | None:
        """Record a call; return None if allowed, else the seconds until the window has room again."""
        if limit <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = deque()
            cutoff = now - 1.0
            while window and window[0] <= cutoff:
                window.popleft()
            if len(window) >= limit:
                return max(window[0] + 1.0 - now, 0.001)
            window.append(now)
            return None


class Sandbox:
    """Owns the state, its lock, its persistence and the time-driven progress of async work."""

    def __init__(self, state_dir: Path, config: Config, base_url: str) -> None:
        self.state_dir = state_dir
        self.config = config
        self.base_url = base_url
        self.lock = threading.RLock()
        self.counter_lock = threading.Lock()
        self.rate_limiter = RateLimiter()
        self.rng = random.Random()
        # Verified x-knox-apitoken JWTs, by their raw string: (accessToken, exp). RSA verification costs far more
        # than the rest of a request, and clients reuse one signed token for up to 30 minutes.
        self.jwt_cache: dict[str, tuple[str, float]] = {}
        self.public_keys: dict[str, RSAPublicKey] = {}
        self.kdp_by_reseller: dict[str, dict[str, None]] = {}
        self.guard_by_object: dict[str, str] = {}
        self.guard_by_approve: dict[str, str] = {}
        self.guard_timers: list[tuple[float, str]] = []
        self._dirty = False
        self._stop = threading.Event()
        self._persister: threading.Thread | None = None
        self._save_lock = threading.Lock()

        state_dir.mkdir(parents=True, exist_ok=True)
        self.keys_path = (state_dir / "keys.json").resolve()
        self.credentials_path = (state_dir / "credentials.json").resolve()
        self.world_path = state_dir / "world.json"
        self.state_path = state_dir / "state.json"
        self._load_or_create()

    # --- loading -------------------------------------------------------------------------------------------------

    def _load_or_create(self) -> None:
        if self.keys_path.exists():
            keys = json.loads(self.keys_path.read_text())
        else:
            keys = world.generate_keys()
            _atomic_write_text(self.keys_path, json.dumps(keys, indent=2))
        if self.world_path.exists():
            pristine = json.loads(self.world_path.read_text())
        else:
            credentials, initial = world.generate_world(keys)
            pristine = {"credentials": credentials, "state": initial}
            _atomic_write_text(self.world_path, json.dumps(pristine))
            self.state_path.unlink(missing_ok=True)
        self.world = pristine
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            if state.get("version") != world.STATE_VERSION:
                raise RuntimeError(
                    f"{self.state_path} has state version {state.get('version')}; delete it to start over"
                )
        else:
            state = copy.deepcopy(pristine["state"])
        self._install(state)
        self.credentials = {
            "base_url": self.base_url,
            **pristine["credentials"],
            "keys_file": str(self.keys_path),
            "state_dir": str(self.state_dir.resolve()),
        }
        _atomic_write_text(self.credentials_path, json.dumps(self.credentials, indent=2))
        self._dirty = True

    def _install(self, state: dict[str, Any]) -> None:
        """Adopt a state document and rebuild the indexes derived from it."""
        self.state = state
        self.kdp_by_reseller = {}
        for device_id, rec in state["kdp"]["devices"].items():
            self.kdp_by_reseller.setdefault(rec["resellerId"], {})[device_id] = None
        self.guard_by_object = {}
        self.guard_by_approve = {}
        self.guard_timers = []
        for uid, dev in state["guard"]["devices"].items():
            self.guard_by_object[dev["objectId"]] = uid
            if dev.get("approveId"):
                self.guard_by_approve[dev["approveId"]] = uid
            if dev.get("dueAt") is not None:
                self.guard_timers.append((dev["dueAt"], uid))
        heapq.heapify(self.guard_timers)

    # --- bookkeeping ---------------------------------------------------------------------------------------------

    def mark_dirty(self) -> None:
        self._dirty = True

    def count_request(self, path: str) -> None:
        with self.counter_lock:
            counters = self.state["counters"]
            counters["requests"] += 1
            by_path = counters["by_path"]
            by_path[path] = by_path.get(path, 0) + 1
        # Deliberately not marking the state dirty: counting alone should not make a 100,000-device state be
        # rewritten every second. Counters are saved with the next real change, and on shutdown.

    def count(self, name: str, sub: str | None = None, n: int = 1) -> None:
        with self.counter_lock:
            counters = self.state["counters"]
            if sub is None:
                counters[name] += n
            else:
                counters[name][sub] = counters[name].get(sub, 0) + n
        self._dirty = True

    def tick(self, now: float | None = None) -> None:
        """Let time pass: settle async work whose process delay has elapsed. Call with the lock held."""
        # Imported here because the service modules import this one for typing.
        from sandbox import guard, kdp

        now = time.time() if now is None else now
        kdp.process_due(self, now)
        guard.settle_due(self, now)

    def reset(self) -> None:
        """Back to the demo world. Issued tokens survive, so that a client need not sign in again."""
        with self.lock:
            fresh = copy.deepcopy(self.world["state"])
            for name in ("accessTokens", "oauthTokens", "efotaTokens", "jtis"):
                fresh["auth"][name] = self.state["auth"][name]
            with self.counter_lock:
                self._install(fresh)
            self.mark_dirty()

    def expire_tokens(self) -> int:
        """Make every issued token (access, OAuth, E-FOTA) expire now; return how many there were."""
        now = time.time()
        n = 0
        with self.lock:
            auth = self.state["auth"]
            for name in ("accessTokens", "oauthTokens", "efotaTokens"):
                tokens = auth[name]
                for token, rec in list(tokens.items()):
                    tokens[token] = {**rec, "expiresAt": min(rec["expiresAt"], now - 0.001)}
                    n += 1
            self.mark_dirty()
        return n

    # --- persistence ---------------------------------------------------------------------------------------------

    def start_persister(self) -> None:
        if self._persister is not None:
            return
        self._stop.clear()
        self._persister = threading.Thread(target=self._persist_loop, name="sandbox-persister", daemon=True)
        self._persister.start()

    def close(self) -> None:
        """Stop the persister and write the state one last time."""
        self._stop.set()
        if self._persister is not None:
            self._persister.join(timeout=30)
            self._persister = None
        self.save()

    def _persist_loop(self) -> None:
        interval = self.config.save_interval
        while not self._stop.wait(interval):
            if not self._dirty:
                continue
            started = time.monotonic()
            try:
                self.save()
            except Exception:
                # Keep serving even if the disk is full; the next round retries.
                log.exception("sandbox: could not save state")
            interval = max(self.config.save_interval, 3 * (time.monotonic() - started))

    def save(self) -> None:
        with self._save_lock:
            with self.lock:
                self.tick()
                self._dirty = False
                with self.counter_lock:
                    snapshot = _two_level_copy(self.state)
            tmp = self.state_path.with_suffix(".json.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                _write_json(f, snapshot, depth=0)
            os.replace(tmp, self.state_path)

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the state for GET /_sandbox/state (records are shared, and never mutated)."""
        with self.lock:
            self.tick()
            with self.counter_lock:
                return _two_level_copy(self.state)


def _two_level_copy(state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, value in state.items():
        if isinstance(value, dict):
            out[section] = {
                k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in value.items()
            }
        else:
            out[section] = value
    return out


def _write_json(f: Any, obj: Any, depth: int) -> None:
    if isinstance(obj, dict) and (depth < 2 or len(obj) > _CHUNK):
        f.write("{")
        first = True
        if depth < 2:
            for k, v in obj.items():
                if not first:
                    f.write(",")
                first = False
                f.write(json.dumps(k))
                f.write(":")
                _write_json(f, v, depth + 1)
        else:
            items = list(obj.items())
            for i in range(0, len(items), _CHUNK):
                chunk = json.dumps(dict(items[i : i + _CHUNK]), separators=(",", ":"))[1:-1]
                if not first:
                    f.write(",")
                first = False
                f.write(chunk)
        f.write("}")
    else:
        f.write(json.dumps(obj, separators=(",", ":")))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
