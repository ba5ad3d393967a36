"""Form widgets for the pages staff load most often.

`QuickSelect` is Django's Select rendered in Python. Django renders a <select> through its template engine, one
included template per <option> and one more for each option's attributes; the device list's filter form (about
60 options) spent 10 ms of a 40 ms page there, on every load and every page of the list. The markup is the same
as Django's (`tests/portal/test_widgets.py` compares them), so templates and tests see no difference.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe


class QuickSelect(forms.Select):
    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        widget = self.get_context(name, value, attrs)["widget"]
        options = []
        for group_name, group, _index in widget["optgroups"]:
            rendered = format_html_join("", "{}", ((_option(option),) for option in group))
            options.append(
                format_html('<optgroup label="{}">{}</optgroup>', group_name, rendered) if group_name else rendered
            )
        return format_html(
            '<select name="{}"{}>{}</select>',
            widget["name"],
            _attrs(widget["attrs"]),
            mark_safe("".join(options)),  # noqa: S308 - each option escaped by format_html
        )


def _option(option: dict[str, Any]) -> SafeString:
    value = "" if option["value"] is None else option["value"]
    return format_html('<option value="{}"{}>{}</option>', value, _attrs(option["attrs"]), option["label"])


def _attrs(attrs: dict[str, Any]) -> SafeString:
    """Django's widgets/attrs.html, in order: False left out, True as a bare name, anything else name="value"."""
    return mark_safe(  # noqa: S308 - every name and value escaped by format_html
        "".join(
            format_html(" {}", name) if value is True else format_html(' {}="{}"', name, value)
            for name, value in attrs.items()
            if value is not False
        )
    )
