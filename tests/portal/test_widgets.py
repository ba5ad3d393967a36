"""portal.widgets.QuickSelect renders what Django's Select renders, without a template per option."""

from __future__ import annotations

import re

from django import forms

from kdp.forms import DeviceFilterForm
from kdp.models import Customer
from portal.models import KnoxAccount
from portal.widgets import QuickSelect
from tests.base import BaseTestCase


def same_markup(html: str) -> str:
    """Django's templates put each <option> on its own indented line; the browser ignores that whitespace."""
    return re.sub(r">\s+<", "><", html.strip())


class ChoiceForm(forms.Form):
    plain = forms.ChoiceField(choices=[("", "Any"), ("a", "A & <b>"), ("b", 'Say "b"')], required=False)
    grouped = forms.ChoiceField(choices=[("Fruit", [("1", "Apple"), ("2", "Pear")]), ("3", "Other")], required=False)


class QuickChoiceForm(ChoiceForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.widget = QuickSelect(choices=field.choices)


class QuickSelectTestCase(BaseTestCase):
    def test_it_renders_as_djangos_select_does(self):
        for data in ({}, {"plain": "a", "grouped": "2"}, {"plain": '"><script>', "grouped": "3"}):
            with self.subTest(data=data):
                django_form, quick_form = ChoiceForm(data), QuickChoiceForm(data)
                for name in ("plain", "grouped"):
                    ours = str(quick_form[name])
                    assert same_markup(ours) == same_markup(str(django_form[name]))
                    assert "<script>" not in ours

    def test_the_device_filter_forms_model_choices_render_as_before(self):
        account = KnoxAccount.objects.create(name="Acme reseller", environment="sandbox", reseller_id="1")
        customer = Customer.objects.create(account=account, customer_id="C1", name="Acme & Sons")
        form = DeviceFilterForm({"customer": customer.pk, "state": "registered"})
        form.is_valid()
        for name in ("account", "customer", "state", "sort"):
            django_widget = forms.Select(choices=form.fields[name].choices)
            expected = django_widget.render(form[name].html_name, form[name].value(), {"id": form[name].auto_id})
            assert same_markup(str(form[name])) == same_markup(expected), name
        assert f'<option value="{customer.pk}" selected>Acme &amp; Sons (C1)</option>' in str(form["customer"])
