"""`manage.py kdp_delete FILE --account NAME --customer ID`: delete a spreadsheet's devices from a customer in Knox.

    kdp_delete FILE --account NAME --customer CUSTOMER_ID [--allow-bad-check-digit] [--sheet NAME]
               [--column HEADER] [--dry-run] [--wait] [--json]

The same command as kdp_upload with the operation set to delete, so staging, checks, exit codes and the JSON
summary are identical (see kdp/management/commands/kdp_upload.py). A delete is checked against the customer's
Knox customer ID; a device not registered to that customer fails at Knox with 40000044.
"""

from __future__ import annotations

from kdp.management.commands import kdp_upload
from portal.models import Upload


class Command(kdp_upload.Command):
    help = "Delete the devices of a spreadsheet from one customer in Knox Deployment Program."
    operation = Upload.Operation.DELETE
