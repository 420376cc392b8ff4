"""What is to be built: one description for every way an export is asked for.

A partition asset, an on-demand request, a recurring report and both bundle kinds all
describe their deliverable as a `Deliverable` and hand it to `build.build_deliverable`
(or, in the asset graph, to its stages one by one). Where it is published and what its
files are called follows from the description alone (`naming`).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from export_pipelines.catalog.spec import ExportSpec, Kind, Window, WindowKind
from export_pipelines.pipeline import naming
from export_pipelines.pipeline.naming import ExportPartition
from export_pipelines.render import ExportFormat, RenderOptions


class Purpose(str, enum.Enum):
    """Who asked, which decides where the deliverable is published."""

    PARTITION = "partition"  # the asset graph: one organization and day
    REQUEST = "request"  # a row of export_requests
    REPORT = "report"  # one period of a report subscription


@dataclass(frozen=True)
class Deliverable:
    spec: ExportSpec
    organization_id: str
    date_from: dt.date
    date_to: dt.date
    formats: tuple[ExportFormat, ...]
    options: RenderOptions = field(default_factory=RenderOptions)
    purpose: Purpose = Purpose.PARTITION
    reference: str | None = None  # the request id or the subscription id
    project_ids: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    subject_user_id: str | None = None  # the person of a GDPR export
    requested_by: str | None = None  # the user who asked (a request's user, a report's owner)
    recipients: tuple[str, ...] = ()
    estimated_rows: int = 0
    # What a person reads instead of the id (PDF and Excel title blocks, email, attachment
    # names); "" when unknown.
    organization_name: str = ""

    def __post_init__(self) -> None:
        if self.purpose is not Purpose.PARTITION and not self.reference:
            raise ValueError(f"a {self.purpose.value} deliverable needs its id")
        if self.spec.kind is Kind.USER_BUNDLE and not self.subject_user_id:
            raise ValueError("a GDPR export names its person")

    @classmethod
    def for_partition(
        cls,
        spec: ExportSpec,
        partition: ExportPartition,
        formats: tuple[ExportFormat, ...] = (),
        options: RenderOptions | None = None,
        subject_user_id: str | None = None,
        organization_name: str = "",
    ) -> Deliverable:
        return cls(
            spec=spec,
            organization_id=partition.organization_id,
            date_from=partition.date,
            date_to=partition.date,
            formats=tuple(formats) or tuple(spec.default_formats),
            options=options or RenderOptions(),
            subject_user_id=subject_user_id,
            organization_name=organization_name,
        )

    @property
    def format(self) -> ExportFormat:
        return self.formats[0]

    @property
    def days(self) -> list[dt.date]:
        """The daily partitions the deliverable is built from."""
        if self.spec.window is WindowKind.SNAPSHOT:
            return [self.date_to]
        count = (self.date_to - self.date_from).days + 1
        return [self.date_from + dt.timedelta(days=i) for i in range(count)]

    @property
    def window(self) -> Window:
        return Window.for_days(self.date_from, self.date_to)

    @property
    def partition(self) -> ExportPartition:
        return ExportPartition(self.organization_id, self.date_to)

    @property
    def folder(self) -> str:
        if self.purpose is Purpose.REQUEST:
            return naming.request_folder(self.reference)
        if self.purpose is Purpose.REPORT:
            return naming.report_folder(self.reference, self.date_from, self.date_to)
        if self.spec.kind is Kind.USER_BUNDLE:
            return naming.subject_folder(self.organization_id, self.date_to, self.subject_user_id)
        return naming.partition_folder(self.spec.key, self.organization_id, self.date_to)

    @property
    def stem(self) -> str:
        """File names are `<stem>.<extension>`."""
        if self.spec.kind is Kind.USER_BUNDLE:
            person = naming.path_segment(self.subject_user_id)
            if self.purpose is Purpose.PARTITION:
                return f"{naming.file_stem(self.spec.key, self.organization_id, self.date_to)}_{person}"
            return f"{self.spec.key}_{person}_{self.date_to}"
        if self.purpose is Purpose.PARTITION:
            return naming.file_stem(self.spec.key, self.organization_id, self.date_to)
        return naming.file_stem(self.spec.key, self.organization_id, self.date_from, self.date_to)

    @property
    def reader_file_stem(self) -> str:
        """The name a copy travels under to a person (no extension): title, organization's
        name, period — the published file keeps `stem`."""
        name = naming.reader_file_name(
            self.spec.title,
            self.organization_name or self.organization_id,
            naming.period_label(self.date_from, self.date_to),
            "x",
        )
        return name[: -len(".x")]
