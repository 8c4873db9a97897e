"""JSON log lines: one object per line, the extra fields, and no patient data unless asked for."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from shared.jsonlog import JsonFormatter, configure
from shared.logs import configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def emit(
    logger_name: str, message: str, *args: Any, patient_data: bool = False, **extra: Any
) -> dict[str, Any]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(patient_data=patient_data))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args, extra=extra)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry: dict[str, Any] = json.loads(lines[0])
    return entry


def test_a_cfind_line_carries_the_fields_a_dashboard_needs() -> None:
    entry = emit(
        "services.scp.handlers",
        "C-FIND from %r: %d answer(s)",
        "CT01",
        4,
        calling_ae="CT01",
        duration_ms=3.2,
        answers=4,
        status="0x0000",
    )
    assert entry["message"] == "C-FIND from 'CT01': 4 answer(s)"
    assert entry["level"] == "WARNING" and entry["logger"] == "services.scp.handlers"
    assert entry["time"].endswith("+00:00")  # UTC, ISO 8601
    assert entry["calling_ae"] == "CT01" and entry["duration_ms"] == 3.2 and entry["answers"] == 4


def test_patient_data_is_left_out_by_default() -> None:
    entry = emit(
        "x",
        "query",
        phi={"PatientName": "Doe^Jane", "PatientID": "P1"},
        PatientBirthDate="19700101",
        query={"Modality": "CT", "PatientName": "Doe*", "steps": [{"PatientID": "P1", "Modality": "CT"}]},
    )
    text = json.dumps(entry)
    assert "Doe" not in text and "P1" not in text and "19700101" not in text
    assert entry["query"] == {"Modality": "CT", "steps": [{"Modality": "CT"}]}


def test_patient_data_is_logged_when_the_debug_option_says_so() -> None:
    entry = emit("x", "query", patient_data=True, phi={"PatientName": "Doe^Jane"})
    assert entry["phi"] == {"PatientName": "Doe^Jane"}


class Thing:
    def __str__(self) -> str:
        return "thing"


def test_values_json_cannot_encode_are_written_as_text() -> None:
    assert emit("x", "odd", thing=Thing())["thing"] == "thing"


def test_exceptions_stay_inside_the_one_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("exc")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_configure_switches_format_without_stacking_handlers(restore_root: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure("INFO", "text", stream=first)
    configure("DEBUG", "json", stream=second)
    logging.getLogger("t").debug("hello", extra={"answers": 2})
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["answers"] == 2
    assert logging.getLogger("pynetdicom").level == logging.WARNING


def test_an_unknown_format_names_the_option(restore_root: None) -> None:
    with pytest.raises(ValueError, match="LogFormat"):
        configure("INFO", "yaml")


def test_a_service_logs_text_until_its_settings_ask_for_json_without_patient_data(
    restore_root: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MWL_LOG_FORMAT", raising=False)
    monkeypatch.delenv("MWL_LOG_LEVEL", raising=False)
    logger = logging.getLogger("services.example")
    configure_logging()  # first thing in main(), before the settings are read
    logger.info("starting")
    configure_logging(log_format="json", patient_data=False)  # with LogFormat and LogPatientData
    logger.info("C-FIND done", extra={"calling_ae": "CT01", "phi": {"PatientName": "Doe^Jane"}})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].endswith("INFO services.example: starting")
    entry = json.loads(lines[1])
    assert entry["calling_ae"] == "CT01" and "Doe" not in lines[1]
    # Libraries that quote identifiers and element values stay quiet whatever the level.
    assert logging.getLogger("pynetdicom").level == logging.WARNING
    assert logging.getLogger("pydicom").level == logging.ERROR


def test_a_bad_log_format_in_the_environment_still_lets_the_error_be_logged(
    restore_root: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MWL_LOG_FORMAT", "yaml")
    configure_logging()  # the settings then refuse LogFormat, and that message must get out
    logging.getLogger("services.example").error("invalid configuration option LogFormat")
    assert "ERROR services.example: invalid configuration option LogFormat" in capsys.readouterr().err
