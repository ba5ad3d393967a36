from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db import models, router
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.debug import sensitive_post_parameters

from portal import useraudit
from portal.forms import KnoxAccountForm
from portal.models import AuditEvent, Job, KnoxAccount, RateLimitSlot, Upload, UploadRow
from portal.roles import Authority, permission_labels
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
        "what",
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

    @admin.display(description="What", ordering="kind")
    def what(self, obj: Job) -> str:
        return obj.kind_label

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

    list_display = ("created_at", "actor_name", "what", "target_type", "target_repr", "ip")
    list_filter = ("action", "target_type")
    search_fields = ("actor_name", "action", "target_repr", "target_id")
    date_hierarchy = "created_at"
    # The changelist must not count millions of rows on every view.
    show_full_result_count = False
    # The summary as labelled plain values (portal.words), not the stored JSON.
    exclude = ("summary",)

    def get_readonly_fields(self, request: HttpRequest, obj: AuditEvent | None = None) -> list[str]:
        return [f.name for f in AuditEvent._meta.fields if f.name != "summary"] + ["what", "details"]

    @admin.display(description="What", ordering="action")
    def what(self, obj: AuditEvent) -> str:
        return obj.action_label

    @admin.display(description="Details")
    def details(self, obj: AuditEvent) -> str:
        return (
            format_html_join(
                mark_safe("<br>"),
                "{}: {}",
                obj.details(),
            )
            or "—"
        )

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


# --- staff users and groups: nobody below superuser hands out more than it holds (portal.roles.Authority) -------

GRANT_HELP = (
    "You can give or take away only what you hold yourself: your own permissions, and groups whose every "
    "permission you have. Ask a superuser for the rest."
)


def _authority(request: HttpRequest) -> Authority:
    """The signed-in user's authority, read from the database once per request (not from the session's
    permission cache, which may be a minute old)."""
    authority = getattr(request, "_portal_authority", None)
    if authority is None:
        authority = Authority.of(request.user)
        request._portal_authority = authority  # type: ignore[attr-defined]
    return authority


def _refuse_beyond_authority(form: forms.ModelForm, authority: Authority, name: str) -> None:
    """Add an error to the many-to-many field `name` ("groups", "user_permissions" or "permissions") when the
    form gives or takes away a group or permission beyond `authority`."""
    if authority.is_superuser or name not in form.fields or name not in form.cleaned_data:
        return
    chosen = set(form.cleaned_data[name])
    instance = form.instance
    current = set(getattr(instance, name).all()) if instance.pk is not None else set()
    changed = chosen ^ current
    if name == "groups":
        through = Group.permissions.through.objects.filter(group__in=changed)
        carried: dict[int, set[int]] = {}
        for group_id, permission_id in through.values_list("group_id", "permission_id"):
            carried.setdefault(group_id, set()).add(permission_id)
        for group in sorted(changed, key=lambda g: g.name):
            lacking = authority.lacking(carried.get(group.pk, set()))
            if lacking:
                form.add_error(
                    name,
                    f"Only a superuser can give or take away the group “{group.name}”: it carries "
                    f"{', '.join(permission_labels(lacking))}, which you do not hold yourself.",
                )
    else:
        lacking = authority.lacking(p.pk for p in changed)
        if lacking:
            form.add_error(
                name,
                f"Only a superuser can give or take away {', '.join(permission_labels(lacking))}: "
                "you do not hold it yourself.",
            )


def _within_authority(form_class: type[forms.ModelForm], authority: Authority, names: tuple[str, ...]) -> Any:
    class Form(form_class):  # type: ignore[valid-type, misc]
        def clean(self) -> Any:
            cleaned = super().clean()
            for name in names:
                _refuse_beyond_authority(self, authority, name)
            return cleaned

    Form.__name__ = form_class.__name__
    return Form


class OneEventPerSave(admin.ModelAdmin):
    """A save of a change form fires a signal for the fields, then one per many-to-many field: audited as one
    event per object (portal/useraudit.py), written in the save's transaction. Pages that only show need neither."""

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
            return super().changeform_view(request, *args, **kwargs)
        with useraudit.batch(using=router.db_for_write(self.model)):
            return super().changeform_view(request, *args, **kwargs)


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class PortalUserAdmin(OneEventPerSave, UserAdmin):
    """Django's user admin, with the rules of portal.roles.Authority for anyone below superuser:

    - superuser and staff status are read-only (not in the form: a POST that includes them changes nothing);
    - groups and user permissions: only what the editor holds itself may be given or taken away;
    - a user who holds anything the editor lacks (a superuser above all) is read-only: change form, password
      form, delete page and bulk delete answer 403.
    Every change is audited by portal/useraudit.py, one event per save.
    """

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not request.user.is_superuser:
            fields += ["is_staff", "is_superuser"]
        return fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or _authority(request).may_manage_user(obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or _authority(request).may_manage_user(obj))

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        if obj is None or request.user.is_superuser:  # the add form has no groups or permissions
            return form
        return _within_authority(form, _authority(request), ("groups", "user_permissions"))

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name in ("groups", "user_permissions") and not request.user.is_superuser:
            kwargs["help_text"] = GRANT_HELP
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        # The bulk action already refuses (has_delete_permission per object); this holds if that ever changes.
        authority = _authority(request)
        if not all(authority.may_manage_user(user) for user in queryset):
            raise PermissionDenied
        super().delete_queryset(request, queryset)


@admin.register(Group)
class PortalGroupAdmin(OneEventPerSave, GroupAdmin):
    """Django's group admin; below superuser, a group's permissions change only within what the editor holds,
    and a group that carries more than the editor holds is read-only for it."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or _authority(request).may_manage_group(obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or _authority(request).may_manage_group(obj))

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        if request.user.is_superuser:
            return form
        return _within_authority(form, _authority(request), ("permissions",))

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "permissions" and not request.user.is_superuser:
            kwargs["help_text"] = GRANT_HELP
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Group]) -> None:
        authority = _authority(request)
        if not all(authority.may_manage_group(group) for group in queryset):
            raise PermissionDenied
        super().delete_queryset(request, queryset)
