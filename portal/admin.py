from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from portal.forms import KnoxAccountForm
from portal.models import AuditEvent, Job, KnoxAccount, RateLimitSlot, Upload, UploadRow
from portal.throttle import ThrottledAdminAuthenticationForm

admin.site.site_header = "Knox reseller portal administration"
admin.site.site_title = "Knox portal admin"
# The admin's login page shares the portal's login throttling (portal/throttle.py).
admin.site.login_form = ThrottledAdminAuthenticationForm


@admin.register(KnoxAccount)
class KnoxAccountAdmin(admin.ModelAdmin):
    """Secrets are write-only here too: the form has password inputs that never render a value, and the list
    shows only how many secrets are set."""

    form = KnoxAccountForm

    @method_decorator(sensitive_post_parameters())
    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        # Error reports of the add/change pages must not show the secrets just typed into the form.
        return super().changeform_view(*args, **kwargs)

    list_display = (
        "name",
        "environment",
        "region",
        "kdp_generation",
        "auth_mode",
        "reseller_id",
        "secrets_set",
        "last_test_ok",
        "is_active",
    )
    list_filter = ("environment", "region", "kdp_generation", "auth_mode", "is_active", "last_test_ok")
    search_fields = ("name", "reseller_id", "vendor_id", "oauth_client_id", "efota_mdm_id")
    readonly_fields = (
        "stored_secrets",
        "key_identifier",
        "public_key_summary",
        "last_test_at",
        "last_test_ok",
        "last_test_message",
        "created_at",
        "updated_at",
    )
    actions = ["test_connection"]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "is_active",
                    "environment",
                    "region",
                    "kdp_generation",
                    "auth_mode",
                    "reseller_id",
                    "vendor_id",
                )
            },
        ),
        (
            "Base URL overrides (blank = preset for region and environment)",
            {"fields": ("kdp_url", "kdp_gen1_url", "guard_url", "efota_url", "auth_url"), "classes": ("collapse",)},
        ),
        ("Knox Cloud token", {"fields": ("keys_file", "client_identifier", "key_identifier", "public_key_summary")}),
        ("OAuth 2.0", {"fields": ("oauth_client_id", "oauth_client_secret", "oauth_scopes")}),
        ("Gen1", {"fields": ("gen1_api_key",)}),
        ("E-FOTA", {"fields": ("efota_client_id", "efota_client_secret", "efota_mdm_id")}),
        ("Stored secrets", {"fields": ("stored_secrets", "clear_secrets")}),
        ("Last connection test", {"fields": ("last_test_at", "last_test_ok", "last_test_message")}),
    )

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if isinstance(db_field, models.URLField):
            kwargs["assume_scheme"] = "https"  # Knox hosts are https
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="Secrets set")
    def secrets_set(self, obj: KnoxAccount) -> str:
        status = obj.secrets_status()
        return f"{sum(1 for _, is_set in status if is_set)} of {len(status)}"

    @admin.display(description="Stored secrets")
    def stored_secrets(self, obj: KnoxAccount) -> str:
        return ", ".join(f"{label}: {'set' if is_set else 'not set'}" for label, is_set in obj.secrets_status())

    @admin.display(description="Public key")
    def public_key_summary(self, obj: KnoxAccount) -> str:
        return f"{obj.public_key[:24]}…{obj.public_key[-12:]}" if obj.public_key else "—"

    def save_model(self, request: HttpRequest, obj: KnoxAccount, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        AuditEvent.objects.record(
            "account.update" if change else "account.create",
            request=request,
            target=obj,
            summary={"via": "admin", **form.changed_summary()},
        )

    @admin.action(description="Test connection to Knox")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[KnoxAccount]) -> None:
        """Queues one connection test per account (a worker asks Knox; the admin request never waits on it)."""
        from django.utils.html import format_html

        from portal.lookups import queue_connection_test

        for account in queryset:
            job = queue_connection_test(account, user=request.user)
            self.message_user(
                request,
                format_html(
                    '{}: connection test queued as job #{}; <a href="{}">its answer</a> appears on the account page.',
                    account,
                    job.pk,
                    job.get_absolute_url(),
                ),
                messages.INFO,
            )


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "title",
        "status",
        "account",
        "created_by",
        "total",
        "succeeded",
        "failed",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "kind", "account")
    search_fields = ("=id", "title", "task_id", "created_by__username")
    date_hierarchy = "created_at"
    list_select_related = ("account", "created_by")
    actions = ["cancel_queued"]

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> list[str]:
        return [f.name for f in Job._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    @admin.action(description="Cancel selected jobs that have not started")
    def cancel_queued(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        n = 0
        for job in queryset.filter(status=Job.Status.QUEUED):
            if job.cancel():
                AuditEvent.objects.record("job.cancel", request=request, target=job, summary={"via": "admin"})
                n += 1
        self.message_user(request, f"{n} job(s) cancelled.")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit log is append-only."""

    list_display = ("created_at", "actor_name", "action", "target_type", "target_repr", "ip")
    list_filter = ("action", "target_type")
    search_fields = ("actor_name", "action", "target_repr", "target_id")
    date_hierarchy = "created_at"
    # The changelist must not count millions of rows on every view.
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: AuditEvent | None = None) -> list[str]:
        return [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False


@admin.register(RateLimitSlot)
class RateLimitSlotAdmin(admin.ModelAdmin):
    list_display = ("key", "next_free")
    search_fields = ("key",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RateLimitSlot | None = None) -> bool:
        return False


class UploadRowInline(admin.TabularInline):
    model = UploadRow
    extra = 0
    fields = ("row_number", "raw", "value", "status", "reason")
    readonly_fields = fields
    can_delete = False
    show_change_link = False
    max_num = 0
    ordering = ("row_number",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[UploadRow]:
        # A spreadsheet can hold 200,000 rows; the admin shows the first ones, the portal's preview pages them all.
        return super().get_queryset(request).filter(row_number__lte=200)


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = (
        "filename",
        "service",
        "operation",
        "account",
        "created_by",
        "status",
        "rows_total",
        "valid",
        "invalid",
        "created_at",
    )
    list_filter = ("service", "operation", "status", "account")
    search_fields = ("filename",)
    readonly_fields = [f.name for f in Upload._meta.fields]
    inlines = [UploadRowInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Upload | None = None) -> bool:
        return False
