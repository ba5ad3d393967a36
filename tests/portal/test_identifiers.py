from __future__ import annotations

import dataclasses
from dataclasses import replace
from unittest import TestCase

from portal.identifiers import Kind, Verdict, check_identifier, clean, is_valid_imei, luhn_check_digit

VALID_IMEI = "359221145350335"
# The same digits as an East Asian keyboard types them (U+FF10..U+FF19).
FULL_WIDTH_IMEI = "".join(chr(0xFF10 + int(digit)) for digit in VALID_IMEI)


class LuhnTestCase(TestCase):
    def test_it_computes_the_check_digit(self) -> None:
        self.assertEqual(luhn_check_digit("35922114535033"), "5")
        self.assertEqual(luhn_check_digit("49015420323751"), "8")  # the example in 3GPP TS 23.003
        self.assertEqual(luhn_check_digit("00000000000000"), "0")

    def test_it_agrees_with_the_textbook_luhn_on_every_digit_in_every_position(self) -> None:
        def textbook(body: str) -> str:
            total = 0
            for position, char in enumerate(reversed(body), start=1):  # the check digit would be position 0
                digit = int(char) * (2 if position % 2 else 1)
                total += digit - 9 if digit > 9 else digit
            return str((10 - total % 10) % 10)

        bodies = [f"{d}" * 14 for d in range(10)] + [f"{i:014d}" for i in range(0, 10**14, 10**14 // 997)]
        bodies += [("0123456789" * 3)[start : start + 14] for start in range(10)]
        for body in bodies:
            with self.subTest(body=body):
                self.assertEqual(luhn_check_digit(body), textbook(body))

    def test_it_refuses_anything_but_14_digits(self) -> None:
        for body in ("3592211453503", "359221145350335", "3592211453503A", ""):
            with self.subTest(body=body), self.assertRaises(ValueError):
                luhn_check_digit(body)

    def test_it_validates_imeis(self) -> None:
        self.assertTrue(is_valid_imei(VALID_IMEI))
        self.assertTrue(is_valid_imei("490154203237518"))
        self.assertFalse(is_valid_imei("359221145350336"))
        self.assertFalse(is_valid_imei("35922114535033"))
        self.assertFalse(is_valid_imei("3592211453503355"))
        self.assertFalse(is_valid_imei("35922114535033X"))
        # Unicode digits are not IMEI digits without clean() first.
        self.assertFalse(is_valid_imei(FULL_WIDTH_IMEI))


class CleanTestCase(TestCase):
    def test_it_strips_separators_and_invisible_characters(self) -> None:
        cases = {
            " 359221145350335 ": VALID_IMEI,
            "35-922114-535033-5": VALID_IMEI,
            "35.922114.535033.5": VALID_IMEI,
            "35 9221 1453 5033 5": VALID_IMEI,
            "35\u00a09221145350335": VALID_IMEI,  # non-breaking space
            "35\u20099221145350335": VALID_IMEI,  # thin space
            "35\u202f9221145350335": VALID_IMEI,  # narrow no-break space
            "\u200b359221145350335\u200c\u200d": VALID_IMEI,  # zero-width space, non-joiner, joiner
            "\ufeff359221145350335": VALID_IMEI,  # byte order mark
            "35\u20139221145350335": VALID_IMEI,  # en dash
            "35\u00ad9221145350335": VALID_IMEI,  # soft hyphen
            FULL_WIDTH_IMEI: VALID_IMEI,
            "\t359221145350335\r\n": VALID_IMEI,
            "rWez6k82dt3": "rWez6k82dt3",  # case is check_identifier's business
        }
        for raw, expected in cases.items():
            with self.subTest(raw=raw):
                self.assertEqual(clean(raw), expected)


class CheckIdentifierTestCase(TestCase):
    def test_it_accepts_a_valid_imei(self) -> None:
        verdict = check_identifier(VALID_IMEI, column_kind="imei")
        self.assertEqual(verdict, Verdict(value=VALID_IMEI, kind=Kind.IMEI, ok=True))

    def test_it_accepts_an_imei_with_separators(self) -> None:
        for raw in ("35-548884-059744-5", " 355488840597445 ", "35 548884 059744 5", "\u200b355488840597445"):
            with self.subTest(raw=raw):
                verdict = check_identifier(raw, column_kind="imei")
                self.assertTrue(verdict.ok)
                self.assertEqual(verdict.value, "355488840597445")

    def test_it_names_the_expected_check_digit(self) -> None:
        verdict = check_identifier("359221145350336", column_kind="imei")
        self.assertFalse(verdict.ok)
        self.assertIsNone(verdict.kind)
        self.assertEqual(
            verdict.reason, "wrong check digit: the last digit should be 5, not 6; check the IMEI for a typo"
        )

    def test_it_accepts_a_bad_check_digit_with_a_warning_when_allowed(self) -> None:
        verdict = check_identifier("359221145350336", column_kind="imei", allow_bad_check_digit=True)
        self.assertTrue(verdict.ok)
        self.assertEqual(verdict.kind, Kind.IMEI)
        self.assertEqual(verdict.reason, "")
        self.assertIn("should be 5, not 6", verdict.warning)

    def test_it_computes_the_missing_check_digit_of_14_digits(self) -> None:
        verdict = check_identifier("35177895286676", column_kind="imei")
        self.assertFalse(verdict.ok)
        self.assertEqual(
            verdict.reason,
            "14 digits: this looks like an IMEI without its check digit (the 15th digit); with the check digit it "
            "would be 351778952866768 (compare it with the device's label before using it)",
        )
        # Offered for one click; a digit may be missing anywhere, hence the request to compare with the label.
        self.assertEqual(verdict.suggestion, "351778952866768")
        self.assertTrue(is_valid_imei(verdict.suggestion))

    def test_it_offers_the_lost_leading_zero_of_a_numeric_cell(self) -> None:
        for raw in (11544209597370.0, 11544209597370):
            with self.subTest(raw=raw):
                verdict = check_identifier(raw, column_kind="imei")
                self.assertFalse(verdict.ok)
                self.assertEqual(verdict.suggestion, "011544209597370")
                self.assertTrue(is_valid_imei(verdict.suggestion))
                self.assertIn("the leading zero was lost because the column is formatted as a number", verdict.reason)
                self.assertIn("format the column as Text in Excel", verdict.reason)

        # The same digits as text: the numeric_cell flag tells where they came from.
        self.assertEqual(check_identifier("11544209597370", numeric_cell=True).suggestion, "011544209597370")
        # Without it they are just an IMEI missing its check digit.
        self.assertIn("without its check digit", check_identifier("11544209597370").reason)

    def test_it_does_not_offer_a_zero_that_would_not_make_a_valid_imei(self) -> None:
        # "0" + these 14 digits fails the check, so the missing-check-digit explanation is the better guess.
        verdict = check_identifier(35177895286676.0, column_kind="imei")
        self.assertIn("without its check digit", verdict.reason)
        self.assertEqual(verdict.suggestion, "351778952866768")

    def test_it_explains_an_imeisv(self) -> None:
        verdict = check_identifier("3581528922663441", column_kind="imei")
        self.assertFalse(verdict.ok)
        self.assertIn("16 digits: this is an IMEISV", verdict.reason)
        self.assertIn("use the first 14 digits plus the check digit: 358152892266344", verdict.reason)
        self.assertEqual(verdict.suggestion, "358152892266344")
        self.assertTrue(is_valid_imei(verdict.suggestion))

    def test_it_converts_numeric_cells_without_decimals(self) -> None:
        for raw in (359221145350335.0, 359221145350335, "359221145350335.0", "359221145350335.00"):
            with self.subTest(raw=raw):
                verdict = check_identifier(raw, column_kind="imei")
                self.assertTrue(verdict.ok, verdict.reason)
                self.assertEqual(verdict.value, VALID_IMEI)

    def test_it_keeps_15_digit_floats_exact(self) -> None:
        # The largest 15-digit IMEI-shaped numbers survive the float round trip.
        for body in ("99999999999999", "10000000000000", "98765432109876"):
            digits = body + luhn_check_digit(body)
            with self.subTest(digits=digits):
                self.assertEqual(check_identifier(float(digits)).value, digits)

    def test_it_rejects_scientific_notation_text(self) -> None:
        for raw in ("3.58681E+14", "3,58681E+14", "3.58681e+14", "3.58681E14", " 3.58681E+14 ", "3E+14"):
            with self.subTest(raw=raw):
                verdict = check_identifier(raw, column_kind="imei")
                self.assertFalse(verdict.ok)
                self.assertIn("scientific notation", verdict.reason)
                self.assertIn("digits of the number are gone", verdict.reason)
                self.assertIn("format the column as Text in Excel", verdict.reason)
                self.assertIn("export again", verdict.reason)

    def test_it_rejects_a_numeric_cell_that_is_not_a_whole_number(self) -> None:
        for raw in (3.58681, 358681000000000.5, float("inf"), float("nan")):
            with self.subTest(raw=raw):
                verdict = check_identifier(raw, column_kind="imei")
                self.assertFalse(verdict.ok)
                self.assertIn("not a whole number", verdict.reason)
                self.assertIn("format the column as Text in Excel", verdict.reason)

    def test_it_rejects_numbers_longer_than_excel_keeps(self) -> None:
        # Excel rounds a 16-digit IMEISV typed into a number cell: 3581528922663441 -> 3581528922663440.
        for raw in (3581528922663440.0, 270113177609999999, 3.5e20):
            with self.subTest(raw=raw):
                verdict = check_identifier(raw, column_kind="imei")
                self.assertFalse(verdict.ok)
                self.assertIn("Excel keeps only 15 digits of a number", verdict.reason)

    def test_it_spots_digits_lost_to_scientific_notation_in_a_number_cell(self) -> None:
        # "3.58681E+14" typed back into Excel is the number 358681000000000.
        verdict = check_identifier(358681000000000.0, column_kind="imei")
        self.assertFalse(verdict.ok)
        self.assertIn("lost to scientific notation", verdict.reason)
        # As text it is only a wrong check digit.
        self.assertIn("wrong check digit", check_identifier("358681000000000").reason)

    def test_it_names_the_letters_in_an_imei(self) -> None:
        verdict = check_identifier("35ABC2892266344", column_kind="imei")
        self.assertFalse(verdict.ok)
        self.assertEqual(verdict.reason, "contains the letters 'A', 'B', 'C'; an IMEI has 15 digits and nothing else")
        self.assertEqual(check_identifier("35O221145350335").reason.split(";")[0], "contains the letter 'O'")

    def test_it_names_symbols_and_control_characters(self) -> None:
        verdict = check_identifier("=359221145350335", column_kind="imei")
        self.assertIn("the character '='", verdict.reason)
        verdict = check_identifier("35922114535033\x075", column_kind="imei")
        self.assertIn("U+0007", verdict.reason)
        verdict = check_identifier('=HYPERLINK("http://x")', column_kind="imei")
        self.assertFalse(verdict.ok)

    def test_it_points_out_a_serial_number_in_an_imei_column(self) -> None:
        verdict = check_identifier("R58M12ABCDE", column_kind="imei")
        self.assertFalse(verdict.ok)
        self.assertIn("looks like a serial number", verdict.reason)

    def test_it_explains_other_lengths(self) -> None:
        self.assertEqual(check_identifier("12345", column_kind="imei").reason, "5 digits: an IMEI has 15 digits")
        self.assertEqual(check_identifier("1" * 17).reason, "17 digits: an IMEI has 15 digits")
        self.assertIn("a MEID has 14 characters or 18 digits", check_identifier("12345", column_kind="meid").reason)

    def test_it_accepts_meids(self) -> None:
        cases = {
            "A0000000002329": ("imei", "A0000000002329"),  # hex MEID; an IMEI column often holds a few
            "a0000000002329": (None, "A0000000002329"),
            "A1-000000-00232-9": ("meid", "A1000000002329"),
            "270113177609999999": ("imei", "270113177609999999"),  # decimal MEID
            "35177895286676": ("meid", "35177895286676"),  # all-digit hex MEID, in a MEID column
        }
        for raw, (column_kind, value) in cases.items():
            with self.subTest(raw=raw):
                verdict = check_identifier(raw, column_kind=column_kind)
                self.assertEqual(replace(verdict, note=""), Verdict(value=value, kind=Kind.MEID, ok=True))

    def test_it_rejects_an_impossible_decimal_meid(self) -> None:
        # The manufacturer part is a 32-bit number written in 10 digits; 9999999999 doesn't fit.
        verdict = check_identifier("999999999900000001")
        self.assertFalse(verdict.ok)
        self.assertIn("not a valid decimal MEID", verdict.reason)

    def test_it_explains_a_bad_meid(self) -> None:
        verdict = check_identifier("A000000000232G", column_kind="meid")
        self.assertIn("the letter 'G'", verdict.reason)
        self.assertIn("a MEID has 14 characters", verdict.reason)
        self.assertIn("15 characters", check_identifier("A00000000023290", column_kind="meid").reason)

    def test_it_accepts_a_15_digit_imei_in_a_meid_column(self) -> None:
        self.assertEqual(check_identifier(VALID_IMEI, column_kind="meid").kind, Kind.IMEI)

    def test_it_accepts_and_upper_cases_serial_numbers(self) -> None:
        for raw in ("RWEZ6K82DT3", "rwez6k82dt3", " RWEZ6K82DT3 ", "RWEZ-6K82-DT3"):
            with self.subTest(raw=raw):
                verdict = check_identifier(raw, column_kind="serial")
                self.assertEqual(replace(verdict, note=""), Verdict(value="RWEZ6K82DT3", kind=Kind.SERIAL, ok=True))
        # In a serial column any 11 letters and digits do; elsewhere a serial starts with a letter.
        self.assertTrue(check_identifier("12345678901", column_kind="serial").ok)
        self.assertEqual(check_identifier("RWEZ6K82DT3").kind, Kind.SERIAL)
        self.assertEqual(check_identifier("RWEZ6K82DT3", column_kind="device").kind, Kind.SERIAL)
        self.assertFalse(check_identifier("12345678901").ok)

    def test_it_explains_bad_serial_numbers(self) -> None:
        self.assertEqual(
            check_identifier("RWEZ6K82DT", column_kind="serial").reason,
            "10 characters: a Samsung serial number has 11 letters and digits",
        )
        self.assertIn("the character '/'", check_identifier("RWEZ6K8/DT3", column_kind="serial").reason)

    def test_it_reports_empty_values(self) -> None:
        for raw in ("", "   ", "\u200b", "-", None, "\u00a0"):
            with self.subTest(raw=raw):
                self.assertEqual(check_identifier(raw), Verdict(value="", kind=None, ok=False, reason="empty"))

    def test_it_treats_a_boolean_cell_as_text(self) -> None:
        self.assertIn("letters", check_identifier(True).reason)

    def test_it_refuses_an_unknown_column_kind(self) -> None:
        with self.assertRaises(ValueError):
            check_identifier(VALID_IMEI, column_kind="model")

    def test_verdicts_are_small_and_immutable(self) -> None:
        verdict = check_identifier(VALID_IMEI)
        self.assertFalse(hasattr(verdict, "__dict__"))
        with self.assertRaises(dataclasses.FrozenInstanceError):
            verdict.ok = False  # type: ignore[misc]


class CleanUpNoteTestCase(TestCase):
    """Silent clean-ups are named on the row (issue 16: "dashes removed"), and a text-prefix apostrophe is read."""

    def test_it_notes_each_kind_of_separator_removed(self) -> None:
        cases = {
            "35-548884-059744-5": "dashes removed",
            " 358060368779353 ": "spaces removed",
            "35.548884.059744.5": "dots removed",
            "35 548884-059744-5": "spaces and dashes removed",
            "\u200b359221145350335": "invisible characters removed",
            "\uff13\uff15\uff19221145350335": "full-width characters read as ordinary ones",
            "359221145350335.0": "the trailing .0 of a number removed",
        }
        for raw, note in cases.items():
            with self.subTest(raw=raw):
                verdict = check_identifier(raw)
                self.assertTrue(verdict.ok)
                self.assertEqual(verdict.note, note)

    def test_a_clean_value_has_no_note(self) -> None:
        for raw in ("359221145350335", "RWEZ6K82DT3", 359221145350335):
            with self.subTest(raw=raw):
                self.assertEqual(check_identifier(raw).note, "")

    def test_it_reads_a_text_prefix_apostrophe_as_the_number_it_marks(self) -> None:
        for prefix in ("'", "\u2018", "\u2019"):
            with self.subTest(prefix=prefix):
                verdict = check_identifier(prefix + "359221145350335", column_kind="imei")
                self.assertTrue(verdict.ok)
                self.assertEqual(verdict.value, "359221145350335")
                self.assertEqual(verdict.kind, Kind.IMEI)
                self.assertIn("without the leading apostrophe", verdict.note)
        # The leading zero a text cell keeps is kept.
        self.assertEqual(check_identifier("'011544209597370").value, "011544209597370")
        # Notes add up, and a refused value keeps its note and its suggestion.
        verdict = check_identifier("'35-177895-286676")
        self.assertFalse(verdict.ok)
        self.assertEqual(verdict.suggestion, "351778952866768")
        self.assertEqual(
            verdict.note, "dashes removed; read without the leading apostrophe (the spreadsheet's mark for a text cell)"
        )

    def test_an_apostrophe_alone_or_inside_is_still_refused(self) -> None:
        self.assertFalse(check_identifier("'").ok)
        self.assertIn("contains the character", check_identifier("3592211'45350335").reason)
