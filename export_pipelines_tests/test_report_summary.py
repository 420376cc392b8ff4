"""The totals a report for people shows (PDF title block, Excel Summary sheet)."""

from export_pipelines.catalog import CATALOG
from export_pipelines.pipeline.build import _summary


def test_totals_read_as_a_person_reads_them_and_id_breakdowns_stay_out():
    credit = CATALOG["credit_usage_report"]
    totals = {
        "Entries": 1234567,
        "Credits added": 5000.0,
        "Credits spent": 1250,
        "Net change": -3750,
        "Credits spent by user": {"0176da09-9872-4626-9865-02a100074f06": 1250},
        "Credits added by user": {"(none)": 5000},
    }
    shown = dict(_summary(credit, totals))
    assert shown == {
        "Entries": "1,234,567",
        "Credits added": "5,000",
        "Credits spent": "1,250",
        "Net change": "-3,750",
    }


def test_scores_have_one_decimal_and_counts_none():
    scans = CATALOG["scan_results"]
    shown = dict(
        _summary(
            scans,
            {
                "Scans": 1200,
                "Projects scanned": 4,
                "Mean DCS score": 92.43333333333334,
                "Mean AI citation score": None,
            },
        )
    )
    assert shown == {
        "Scans": "1,200",
        "Projects scanned": "4",
        "Mean DCS score": "92.4",
        "Mean AI citation score": "—",
    }
