"""What people are told when an export fails: a sentence, never exception text."""

import sys

import dagster as dg
from dagster._utils.error import serializable_error_info_from_exc_info

from export_pipelines.requests.messages import people_message


def _error_info(error: Exception):
    try:
        raise error
    except Exception:  # noqa: BLE001
        return serializable_error_info_from_exc_info(sys.exc_info())


def test_a_deliberate_failure_passes_its_sentence_without_the_class_name():
    info = _error_info(dg.Failure("report s-1 was not delivered: the owner left"))
    said = people_message(info.cls_name, info.message, "run-1")
    assert said == "report s-1 was not delivered: the owner left"


def test_internal_errors_never_show_their_text():
    info = _error_info(AttributeError("'list' object has no attribute 'strip'"))
    said = people_message(info.cls_name, info.message, "abc123")
    assert "attribute" not in said and "AttributeError" not in said and "list" not in said
    assert said.endswith("(run abc123).") and said[0].isupper()


def test_known_errors_say_what_they_mean_without_paths():
    info = _error_info(NotADirectoryError(20, "Not a directory", "/srv/secret/path"))
    said = people_message(info.cls_name, info.message, None)
    assert said.startswith("The export could not be written to the store")
    assert "/srv" not in said and "Errno" not in said
