from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from portal.views import ACCESS, require_perm, service_index


@require_perm(ACCESS)
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return service_index(request, service="guard", title="Knox Guard")
