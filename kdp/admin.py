"""KDP records in the Django admin. Device and outcome tables reach a million rows: exact-match search on
indexed columns and no full result count on every changelist."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from kdp.models import Customer, Device, ProfileAlias, ReconcileItem, Transaction, TransactionDevice


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by jobs from Knox's answers: viewable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ProfileAliasInline(admin.TabularInline):
    model = ProfileAlias
    extra = 0
    readonly_fields = ("name", "profile_id", "synced_at")
    can_delete = False


@admin.register(Customer)
class CustomerAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "customer_id",
        "account",
        "status",
        "device_count",
        "last_upload_at",
        "present_in_knox",
        "synced_at",
    )
    list_filter = ("account", "status", "present_in_knox")
    search_fields = ("name", "=customer_id")
    inlines = [ProfileAliasInline]


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdmin):
    list_display = (
        "identifier",
        "kind",
        "account",
        "customer",
        "profile_alias",
        "state",
        "model",
        "registered_at",
        "last_code",
    )
    list_filter = ("state", "kind", "account")
    search_fields = ("=identifier", "=imei", "=serial_number", "=meid")
    list_select_related = ("account", "customer")
    show_full_result_count = False


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdmin):
    list_display = (
        "transaction_id",
        "operation",
        "account",
        "customer",
        "device_count",
        "state",
        "succeeded",
        "failed",
        "completed_at",
    )
    list_filter = ("operation", "state", "generation", "account")
    search_fields = ("=transaction_id",)
    list_select_related = ("account", "customer")
    show_full_result_count = False


@admin.register(TransactionDevice)
class TransactionDeviceAdmin(ReadOnlyAdmin):
    list_display = ("identifier", "job", "transaction", "outcome", "code", "message")
    list_filter = ("outcome",)
    search_fields = ("=identifier", "=code")
    list_select_related = ("job", "transaction")
    show_full_result_count = False


@admin.register(ReconcileItem)
class ReconcileItemAdmin(ReadOnlyAdmin):
    list_display = ("identifier", "drift", "job", "knox_customer_id", "local_customer_id", "model")
    list_filter = ("drift",)
    search_fields = ("=identifier",)
    show_full_result_count = False
