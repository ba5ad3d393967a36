from __future__ import annotations

from unittest import mock

from django.db.utils import OperationalError
from django.test import TestCase


class HealthzTestCase(TestCase):
    def test_it_is_public_and_healthy(self):
        r = self.client.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "database": "ok", "queue": "ok"}

    def test_a_dead_database_gives_503(self):
        with mock.patch("portal.views.connection.cursor", side_effect=OperationalError("down")):
            r = self.client.get("/healthz")
        assert r.status_code == 503 and r.json()["database"] == "error: OperationalError"

    def test_a_dead_queue_gives_503(self):
        broker = mock.Mock()
        broker.ping.side_effect = ConnectionError("redis down")
        with mock.patch("django_q.brokers.get_broker", return_value=broker):
            r = self.client.get("/healthz")
        assert r.status_code == 503 and r.json()["queue"] == "error: ConnectionError"
