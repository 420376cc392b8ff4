"""credit_usage_report: the organization's credit ledger for the window."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import integer, string, timestamp

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
        string("organization_id", "Organization whose ledger this is"),
        string("transaction_id", "Ledger entry id"),
        timestamp("created_at", "When the entry was booked (UTC)"),
        string("transaction_type", "credit (amount > 0) or debit (amount < 0)"),
        integer("amount", "Signed amount: positive credits, negative debits"),
        integer("credit_amount", "Credits added by this entry (0 for debits)"),
        integer("debit_amount", "Credits spent by this entry (0 for credits)"),
        integer("balance_after", "Running balance after this entry"),
        string("description", "What the entry was for"),
        string("reference_id", "What caused it (e.g. an audit id); empty if nothing"),
        string("user_id", "User who caused it; empty for system entries"),
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
    chart=("created_at", "balance_after", "line"),
)
