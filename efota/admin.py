"""E-FOTA in the admin, read-only: every record mirrors what E-FOTA answered or what the portal sent it, so a
hand edit would only make the pages lie (a group marked registered that E-FOTA does not know). Changes go
through the E-FOTA pages, which queue jobs and write the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from efota.models import EfotaCall, EfotaGroup, EfotaLicence, ForceUpdate, ForceUpdateDevice


class ReadOnlyAdmin(admin.ModelAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EfotaGroup)
class EfotaGroupAdmin(ReadOnlyAdmin):
    list_display = (
        "group_id",
        "customer_id",
        "licence",
        "status",
        "last_code",
        "account",
        "registered_at",
        "updated_at",
    )
    list_filter = ("status", "account")
    search_fields = ["=group_id", "=customer_id", "=licence"]
    list_select_related = ("account",)


@admin.register(EfotaLicence)
class EfotaLicenceAdmin(ReadOnlyAdmin):
    list_display = ("key", "customer_id", "max_devices", "expiration_date", "account", "checked_at", "last_error")
    list_filter = ("account",)
    search_fields = ["=key", "=customer_id"]
    list_select_related = ("account",)


class ForceUpdateDeviceInline(admin.TabularInline):
    model = ForceUpdateDevice
    fields = ("serial", "status_in_words", "reason")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    @admin.display(description="Status")
    def status_in_words(self, device: ForceUpdateDevice) -> str:
        return device.status_label


@admin.register(ForceUpdate)
class ForceUpdateAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "force_update_id",
        "job",
        "sequence",
        "state",
        "model",
        "sales_code",
        "target_version",
        "downloaded",
        "download_failed",
        "processing",
        "knox_code",
        "created_at",
    )
    list_filter = ("state", "account", "model")
    search_fields = ["=force_update_id"]
    list_select_related = ("job",)
    raw_id_fields = ("job",)
    inlines = [ForceUpdateDeviceInline]


@admin.register(EfotaCall)
class EfotaCallAdmin(ReadOnlyAdmin):
    list_display = ("id", "what", "ok", "code", "summary", "account", "actor", "job", "created_at")
    list_filter = ("operation", "ok", "account")
    search_fields = ["=code", "summary"]
    show_full_result_count = False
    list_select_related = ("account", "actor", "job")

    @admin.display(description="Operation", ordering="operation")
    def what(self, call: EfotaCall) -> str:
        return call.operation_label
