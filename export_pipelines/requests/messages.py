"""What a person is told when an export fails: one sentence, never exception text.

Errors raised on purpose (a refused request, `dagster.Failure` with a sentence, a tenant
violation) already speak to people and pass through. Anything else is an internal error:
the person gets a sentence naming what went wrong in their terms, and the technical detail
stays in the run's log for the data team (the message names the run).
"""

from __future__ import annotations

# Errors whose message is a sentence written for people.
_SPOKEN = {"Failure", "RequestRejected", "TenantViolation", "BundlePartMissing"}

# Exception class names → what they mean to the person who asked.
_MEANINGS = {
    "SMTPRecipientsRefused": "the email server refused every recipient of the report",
    "SMTPSenderRefused": "the email server refused the sender address",
    "SMTPAuthenticationError": "the email server refused our login",
    "SMTPServerDisconnected": "the email server closed the connection",
    "SMTPConnectError": "the email server could not be reached",
    "SMTPDataError": "the email server refused the message",
    "NotADirectoryError": "the export could not be written to the store",
    "PermissionError": "the export could not be written to the store",
    "FileExistsError": "the export could not be written to the store",
    "OSError": "the export could not be written to the store",
    "ClientError": "the object store refused the export",
    "OperationalError": "the source database could not be read",
    "ProgrammingError": "the source database could not be read",
    "InternalError": "the source database could not be read",
    "TimeoutError": "a service did not answer in time",
    "ConnectionRefusedError": "a service the export needs could not be reached",
}


def people_message(class_name: str | None, message: str | None, run_id: str | None) -> str:
    """The sentence for `error_message` or an owner's email."""
    text = (message or "").strip()
    # Dagster's error text starts with the exception's qualified class name.
    head, found, rest = text.partition(f"{class_name}: ")
    if found and " " not in head:
        text = rest.strip()
    if class_name in _SPOKEN and text:
        return text
    meaning = _MEANINGS.get(class_name or "", "the export failed because of an internal error")
    where = f" (run {run_id})" if run_id else ""
    return f"{meaning[0].upper()}{meaning[1:]}; the data team can see the details in the run's log{where}."
