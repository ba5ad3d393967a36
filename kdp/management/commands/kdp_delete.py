"""`manage.py kdp_delete FILE --account NAME --customer ID`: delete a spreadsheet's devices from a customer in Knox.

    kdp_delete FILE --account NAME [--customer CUSTOMER_ID | --recorded-customers] [--allow-bad-check-digit]
               [--sheet NAME] [--column HEADER] [--dry-run] [--wait] [--json]

The same command as kdp_upload with the operation set to delete, so staging, checks, exit codes and the JSON
summary are identical (see kdp/management/commands/kdp_upload.py). Knox deletes a device only from the customer it
is registered to (any other answers 40000044), so --customer is refused when the portal's records have devices of
the file under another customer; --recorded-customers deletes each from its recorded customer, one job each.
"""

from __future__ import annotations

from kdp.management.commands import kdp_upload
from portal.models import Upload


class Command(kdp_upload.Command):
    help = "Delete the devices of a spreadsheet from one customer in Knox Deployment Program."
    operation = Upload.Operation.DELETE
