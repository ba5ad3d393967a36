"""Knox Guard in the admin. Devices, actions and chunks mirror Knox or record what was sent to it, so they are
read-only here (a device's state edited by hand would make the portal offer the wrong actions); licences are
kept by staff here because Knox documents no licence API (knox-api.md §6 q22)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from guard.models import GuardAction, GuardChunk, GuardDevice, GuardLicence, GuardUpload


class ReadOnlyAdmin(admin.ModelAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(GuardDevice)
class GuardDeviceAdmin(admin.ModelAdmin):
    list_display = (
        "device_uid",
        "approve_id",
        "state",
        "console_state",
        "model",
        "licence",
        "account",
        "last_action",
        "last_outcome",
        "last_code",
        "synced_at",
    )
    list_filter = ("state", "account", "last_outcome")
    # Exact matches only: icontains over a million devices is a full table scan on every search.
    search_fields = ["=device_uid", "=approve_id", "=object_id"]
    show_full_result_count = False
    list_select_related = ("account",)
    raw_id_fields = ("pending_job",)
    ordering = ("-id",)

    def get_readonly_fields(self, request: HttpRequest, obj: GuardDevice | None = None) -> list[str]:
        # Everything mirrors Knox except the licence key, which Knox's list does not give.
        return [f.name for f in GuardDevice._meta.fields if f.name != "licence"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # devices come from a sync or an upload, never typed in

    @admin.display(description="On the console")
    def console_state(self, obj: GuardDevice) -> str:
        return obj.console_state


@admin.register(GuardAction)
class GuardActionAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "action",
        "device_uid",
        "outcome",
        "code",
        "state_before",
        "state_after",
        "job",
        "actor",
        "created_at",
    )
    list_filter = ("action", "outcome")
    search_fields = ["=device_uid", "=transaction_id", "=code"]
    show_full_result_count = False
    list_select_related = ("job", "actor")
    raw_id_fields = ("job", "chunk", "device", "actor")
    ordering = ("-id",)


@admin.register(GuardChunk)
class GuardChunkAdmin(ReadOnlyAdmin):
    list_display = (
        "transaction_id",
        "job",
        "sequence",
        "action",
        "state",
        "device_count",
        "succeeded",
        "failed",
        "knox_code",
        "submitted_at",
        "completed_at",
    )
    list_filter = ("state", "action")
    search_fields = ["=transaction_id"]
    list_select_related = ("job",)
    raw_id_fields = ("job",)


@admin.register(GuardUpload)
class GuardUploadAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "account",
        "job",
        "sequence",
        "state",
        "knox_status",
        "device_count",
        "valid",
        "invalid",
        "knox_code",
        "created_at",
    )
    list_filter = ("state", "knox_status", "account")
    search_fields = ["=upload_id", "=transaction_id"]
    list_select_related = ("account", "job")
    raw_id_fields = ("job",)

    def get_readonly_fields(self, request: HttpRequest, obj: GuardUpload | None = None) -> list[str]:
        return [f.name for f in GuardUpload._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(GuardLicence)
class GuardLicenceAdmin(admin.ModelAdmin):
    list_display = ("key", "account", "state", "max_devices", "expires_on", "expired", "notes")
    list_filter = ("state", "account")
    search_fields = ["key", "notes"]
    list_select_related = ("account",)

    @admin.display(boolean=True, description="Expired")
    def expired(self, obj: GuardLicence) -> bool:
        return obj.is_expired
