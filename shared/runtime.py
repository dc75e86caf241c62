"""The process's collaborators, built once from the settings and shared by every function.

Functions ask for ``get_runtime()``; services take what they need from it explicitly, so tests can
build their own with another clock, store or HTTP session.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

import requests
from azure.storage.queue import QueueServiceClient

from shared.access.api_keys import ApiKeys
from shared.config.apps import Apps
from shared.config.apps import load as load_apps
from shared.config.settings import Settings, get_settings
from shared.foundation import crashpoints
from shared.foundation.clock import Clock, SystemClock
from shared.foundation.errors import StoreError
from shared.lifecycle.access_tokens import Tokens
from shared.lifecycle.app_health import AppHealth
from shared.lifecycle.connect_flow import Connect
from shared.lifecycle.credential_revocation import CredentialRevoker
from shared.lifecycle.expired_sessions import ExpiredSessions
from shared.lifecycle.expiry_warnings import ExpirySweep
from shared.lifecycle.pats.records import ManagedPats
from shared.lifecycle.pats.revocation import PatRevocation
from shared.lifecycle.pats.rotation import Rotations
from shared.lifecycle.pats.upstream import UpstreamPats
from shared.lifecycle.refresh_sweep import RefreshSweep
from shared.lifecycle.revocation_requests import Revoker
from shared.lifecycle.user_ids import UserIds
from shared.providers.drivers import Drivers
from shared.providers.http_session import provider_session
from shared.storage.clients import queue_service, table_service
from shared.storage.crypto import KeyRing, MessageSeals
from shared.storage.lease import Leases
from shared.storage.store import Store
from shared.storage.tables.connections import ConnectionStore
from shared.storage.tables.schedule import Schedule
from shared.trail.audit import AuditLog
from shared.trail.events import SEAL_PURPOSE, EventPublisher
from shared.trail.webhooks import WebhookSender


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    store: Store
    queues: QueueServiceClient
    audit: AuditLog
    events: EventPublisher
    webhooks: WebhookSender | None
    http: requests.Session
    probe: Store
    api_keys: ApiKeys
    apps: Apps
    drivers: Drivers
    connections: ConnectionStore
    connect: Connect
    tokens: Tokens
    schedule: Schedule
    revoker: Revoker
    managed_pats: ManagedPats
    pat_rotations: Rotations
    pat_revocation: PatRevocation
    pat_upstream: UpstreamPats
    user_ids: UserIds
    app_health: AppHealth

    def refresh_sweep(self) -> RefreshSweep:
        return RefreshSweep(self.schedule, self.connections, self.clock)

    def expired_sessions(self) -> ExpiredSessions:
        return ExpiredSessions(self.store, self.clock)

    def expiry_sweep(self) -> ExpirySweep:
        return ExpirySweep(
            self.store, self.api_keys, self.audit, self.events, self.clock,
            pats=self.managed_pats, rotations=self.pat_rotations, apps=self.apps,
            connections=self.connections,
        )  # fmt: skip

    def misconfigured_apps(self) -> list[dict[str, object]]:
        """The apps a provider refuses outright, for ``GET /api/health`` (empty when storage
        does not answer: health says so itself)."""
        try:
            return [mark.public() for mark in self.app_health.misconfigured()]
        except StoreError:
            return []

    def storage_reachable(self) -> bool:
        """Whether Table Storage answers now, within a short timeout and without retries."""
        try:
            self.probe.ping()
        except StoreError:
            return False
        return True

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Runtime:
        clock = clock or SystemClock()
        logging.getLogger("keysteward").setLevel(settings.log_level)
        # MSAL logs spent authorization codes and PKCE verifiers at DEBUG: never below INFO.
        logging.getLogger("msal").setLevel(
            max(logging.INFO, logging.getLevelName(settings.log_level))
        )
        ring = KeyRing(settings.encryption_keys)
        store = Store(table_service(settings.storage), ring)
        queues = queue_service(settings.storage)
        http = provider_session(settings.provider_timeout_seconds)
        audit = AuditLog(store, clock)
        seals = MessageSeals(ring, SEAL_PURPOSE)
        webhooks = None
        if settings.webhook_url and settings.webhook_secret:
            webhooks = WebhookSender(
                url=settings.webhook_url,
                secret=settings.webhook_secret,
                session=http,
                clock=clock,
                queues=queues,
                seals=seals,
                audit=audit,
                retry_base_seconds=settings.webhook_retry_seconds,
                max_attempts=settings.webhook_max_attempts,
            )
        events = EventPublisher(
            queues,
            clock,
            source=settings.public_url,
            webhook_enabled=webhooks is not None,
            seals=seals,
        )
        apps = load_apps(settings)
        crashpoints.arm(settings.test_fault)
        drivers = Drivers(http, clock)
        connections = ConnectionStore(store)
        user_ids = UserIds(store, clock)
        schedule = Schedule(store)
        app_health = AppHealth(store, audit, events, clock)
        tokens = Tokens(
            store=store,
            connections=connections,
            leases=Leases(store, clock),
            schedule=schedule,
            apps=apps,
            drivers=drivers,
            audit=audit,
            events=events,
            clock=clock,
            # The lease covers a provider call and the write after it: never shorter than that.
            lease_ttl=timedelta(
                seconds=max(settings.refresh_lease_seconds, settings.provider_timeout_seconds + 5)
            ),
            cooldown=timedelta(seconds=settings.refresh_cooldown_seconds),
            app_health=app_health,
        )
        managed_pats = ManagedPats(
            store=store,
            tokens=tokens,
            connections=connections,
            apps=apps,
            session=http,
            audit=audit,
            clock=clock,
        )
        pat_revocation = PatRevocation(
            records=managed_pats, store=store, audit=audit, events=events, clock=clock
        )
        return cls(
            settings=settings,
            clock=clock,
            store=store,
            queues=queues,
            audit=audit,
            events=events,
            webhooks=webhooks,
            http=http,
            probe=Store(
                table_service(settings.storage, retry_total=0, connection_timeout=2, read_timeout=3)
            ),
            api_keys=ApiKeys(store, audit, clock),
            apps=apps,
            drivers=drivers,
            connections=connections,
            connect=Connect(
                store=store,
                apps=apps,
                drivers=drivers,
                audit=audit,
                events=events,
                clock=clock,
                public_url=settings.public_url,
                allowed_return_urls=settings.allowed_return_urls,
                schedule=schedule,
                user_ids=user_ids,
                app_health=app_health,
            ),
            tokens=tokens,
            schedule=schedule,
            revoker=Revoker(
                credentials=CredentialRevoker(
                    pats=managed_pats,
                    pat_revocation=pat_revocation,
                    store=store,
                    connections=connections,
                    schedule=schedule,
                    apps=apps,
                    drivers=drivers,
                    audit=audit,
                    events=events,
                    clock=clock,
                    provider_timeout=settings.provider_timeout_seconds,
                ),
                queues=queues,
                store=store,
                connections=connections,
                user_ids=user_ids,
                audit=audit,
                events=events,
                clock=clock,
                public_url=settings.public_url,
            ),
            managed_pats=managed_pats,
            pat_rotations=Rotations(
                records=managed_pats,
                store=store,
                audit=audit,
                events=events,
                queues=queues,
                clock=clock,
                grace=timedelta(minutes=settings.rotation_grace_minutes),
            ),
            pat_revocation=pat_revocation,
            pat_upstream=UpstreamPats(
                records=managed_pats, store=store, audit=audit, events=events, clock=clock
            ),
            user_ids=user_ids,
            app_health=app_health,
        )


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime  # noqa: PLW0603 - one set of clients per process, reused across invocations
    with _lock:
        if _runtime is None:
            _runtime = Runtime.build(get_settings())
        return _runtime
