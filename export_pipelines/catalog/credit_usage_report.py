"""credit_usage_report: the organization's credit ledger for the window."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import Role, Unit, integer, string, timestamp
from export_pipelines.render import Chart

SPEC = ExportSpec(
    key="credit_usage_report",
    title="Credit usage report",
    description="Credit ledger entries in the window: credits, debits and the running balance.",
    window=WindowKind.EVENT,
    query="""
        SELECT c.organization_id AS organization_id,
               c.id AS transaction_id,
               c.created_at AS created_at,
               CASE WHEN c.amount > 0 THEN 'credit' ELSE 'debit' END AS transaction_type,
               c.amount AS amount,
               CASE WHEN c.amount > 0 THEN c.amount ELSE 0 END AS credit_amount,
               CASE WHEN c.amount < 0 THEN -c.amount ELSE 0 END AS debit_amount,
               c.balance_after AS balance_after,
               c.description AS description,
               c.reference_id AS reference_id,
               c.user_id AS user_id
        FROM credit_ledger c
        WHERE c.organization_id = :org_id
          AND c.created_at >= :window_start AND c.created_at < :window_end
        ORDER BY c.created_at, c.id
    """,
    columns=(
        string(
            "organization_id",
            "Organization whose ledger this is",
            label="Organization",
            role=Role.IDENTIFIER,
        ),
        string("transaction_id", "Ledger entry id", label="Transaction ID", role=Role.IDENTIFIER),
        timestamp("created_at", "When the entry was booked (UTC)", label="Booked", role=Role.TIME),
        string(
            "transaction_type",
            "credit (amount > 0) or debit (amount < 0)",
            label="Type",
            role=Role.DIMENSION,
        ),
        integer(
            "amount",
            "Signed amount: positive credits, negative debits",
            label="Amount",
            role=Role.MEASURE,
            unit=Unit.CREDITS,
        ),
        integer(
            "credit_amount",
            "Credits added by this entry (0 for debits)",
            label="Credits added",
            role=Role.MEASURE,
            unit=Unit.CREDITS,
        ),
        integer(
            "debit_amount",
            "Credits spent by this entry (0 for credits)",
            label="Credits spent",
            role=Role.MEASURE,
            unit=Unit.CREDITS,
        ),
        integer(
            "balance_after",
            "Running balance after this entry",
            label="Balance after",
            role=Role.MEASURE,
            unit=Unit.CREDITS,
        ),
        string("description", "What the entry was for", label="Description", role=Role.DIMENSION),
        string(
            "reference_id",
            "What caused it (e.g. an audit id); empty if nothing",
            label="Reference",
            role=Role.IDENTIFIER,
        ),
        string(
            "user_id",
            "User who caused it; empty for system entries",
            label="User ID",
            role=Role.IDENTIFIER,
        ),
    ),
    time_column="created_at",
    totals=(
        Aggregate("Entries", "transaction_id", "count"),
        Aggregate("Credits added", "credit_amount", "sum"),
        Aggregate("Credits spent", "debit_amount", "sum"),
        Aggregate("Net change", "amount", "sum"),
        Aggregate("Credits spent by user", "debit_amount", "sum_by", by="user_id"),
        Aggregate("Credits added by user", "credit_amount", "sum_by", by="user_id"),
    ),
    charts=(
        Chart("Credits spent", "line", by="created_at", value="debit_amount", function="sum"),
        Chart("Entries", "bar", by="transaction_type"),
    ),
)
