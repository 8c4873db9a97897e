"""SQLAlchemy models: worklist items, one indexed row per Scheduled Procedure Step, and the event outbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.schema import SchemaItem

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

SOURCE_REST = "rest"
SOURCE_FOLDER = "folder"

# LIKE pattern "contains a backslash" as PostgreSQL SQL text (a standard string; backslash is LIKE's default
# escape): a multi-valued ScheduledStationAETitle, stored joined with backslashes. services/scp/lookup.py
# puts the very same text into its query, so that the planner can match the partial index below.
MULTI_STATION_PATTERN_PG = r"'%\\%'"
# Index.info key: the dialects an index exists on (absent: all). Migration 0003 creates these on
# PostgreSQL only; shared/migrations/env.py's include_object leaves them out of other comparisons.
DIALECTS = "dialects"


def on_postgresql_only(index: Index) -> Index:
    """An index that exists on PostgreSQL only: skipped by create_all and by schema comparisons elsewhere."""
    index.info[DIALECTS] = ("postgresql",)
    return index.ddl_if(dialect="postgresql")


# Alembic's include_object hook: (object, name, type, reflected, compare_to) -> compare it or not.
IncludeObject = Callable[[SchemaItem, str | None, str, bool, SchemaItem | None], bool]


def include_object_for(dialect: str) -> IncludeObject:
    """Alembic's `include_object` for a database of `dialect`: the models' objects that exist there.

    Alembic ignores `ddl_if`, so without this an SQLite comparison would report the PostgreSQL-only
    indexes as missing. Reflected objects are always compared (an unexpected index still shows).
    """

    def include(
        obj: SchemaItem, _name: str | None, type_: str, reflected: bool, _compare_to: SchemaItem | None
    ) -> bool:
        if type_ != "index" or reflected:
            return True
        dialects = obj.info.get(DIALECTS)
        return dialects is None or dialect in dialects

    return include


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WorklistItem(Base):
    """One worklist item: the whole dataset as DICOM JSON (PS3.18 F.2) plus item-level keys."""

    __tablename__ = "worklist_items"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), index=True)
    # Folder items: the file's path relative to Worklists.Directory, and a digest to notice changes.
    source_path: Mapped[str | None] = mapped_column(String(1024), unique=True)
    source_digest: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    steps: Mapped[list[ScheduledStep]] = relationship(
        back_populates="item",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ScheduledStep.position",
    )


class ScheduledStep(Base):
    """One Scheduled Procedure Step of an item: the unit a C-FIND answers, with the keys modalities query."""

    __tablename__ = "scheduled_steps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("worklist_items.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    station_aet: Mapped[str] = mapped_column(String(256), default="")
    station_name: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    start_date: Mapped[str] = mapped_column(String(8), default="")
    start_time: Mapped[str] = mapped_column(String(16), default="")
    # YYYYMMDDHHMMSS, sortable; "" when the SPS has no start date.
    start_datetime: Mapped[str] = mapped_column(String(14), default="", index=True)
    sps_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    status: Mapped[str] = mapped_column(String(16), default="", index=True)
    performing_physician: Mapped[str] = mapped_column(String(324), default="")
    # Copies of item-level keys so one indexed lookup narrows a C-FIND.
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    # PatientName folded (case and accents removed): narrows PN queries in either CaseSensitivePN mode.
    patient_name_key: Mapped[str] = mapped_column(String(324), default="", index=True)
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    requested_procedure_id: Mapped[str] = mapped_column(String(64), default="", index=True)

    item: Mapped[WorklistItem] = relationship(back_populates="steps")

    __table_args__ = (
        Index("ix_scheduled_steps_station_start", "station_aet", "start_datetime"),
        Index("ix_scheduled_steps_modality_start", "modality", "start_datetime"),
        # PatientName prefix (LIKE 'doe%'): under a collation other than C, PostgreSQL can only use an index
        # with the pattern operator class for it.
        on_postgresql_only(
            Index(
                "ix_scheduled_steps_patient_name_key_pattern",
                "patient_name_key",
                postgresql_ops={"patient_name_key": "text_pattern_ops"},
            )
        ),
        # The steps on several stations, a candidate for every station query (the OR's second branch, which
        # would otherwise read the whole table); keyed on the start so that "my station, today" narrows it.
        on_postgresql_only(
            Index(
                "ix_scheduled_steps_multi_station_start",
                "start_datetime",
                postgresql_where=text(f"station_aet LIKE {MULTI_STATION_PATTERN_PG}"),
            )
        ),
    )


class OutboxEvent(Base):
    """An event written in the same transaction as the change it reports, published to NATS afterwards."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    subject: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StableStudy(Base):
    """A study.stable seen by the housekeeper, remembered until `expires_at` so a late worklist still goes."""

    __tablename__ = "stable_studies"

    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36))
    source: Mapped[str] = mapped_column(String(32))
    stable_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ConnectorPosition(Base):
    """How far a change-feed connector (e.g. Orthanc's /changes) has read, kept across restarts."""

    __tablename__ = "connector_positions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FolderRejection(Base):
    """A `.wl` file the folder sync could not use, remembered so it is reported once, not at every pass."""

    __tablename__ = "folder_rejections"

    source_path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    # Digest of the rejected bytes (or of the read error): a new version of the file is reported again.
    fingerprint: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(256))
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
