"""Configuration: Orthanc-style JSON with comments, MWL_* environment, clear errors naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError, environment_names, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_serve_the_embedded_quick_start() -> None:
    settings = load_settings(environ={})
    assert settings.dicom_aet == "ORTHANC"
    assert settings.dicom_port == 4242
    assert settings.http_port == 8042
    assert settings.bind_address == "127.0.0.1"
    assert settings.database_url == "sqlite:///./data/worklists.db"
    assert settings.worklists.enable is True
    assert settings.worklists.set_study_instance_uid_if_missing is True
    assert settings.worklists.delete_on_stable_study is True
    assert settings.worklists.housekeeping_interval == 60
    assert settings.worklists.delete_delay_hours == 0
    assert settings.worklists.folder_mode is False
    assert settings.always_allow_find_worklist is True


def test_orthanc_file_with_comments_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        {
          // Orthanc allows comments
          "DicomAet" : "MWL",   /* block comments too */
          "DicomPort" : 11112,
          "DicomModalities" : {
            "ct1" : [ "CT01", "10.0.0.5", 104 ],
            "us1" : { "AET" : "US01", "Host" : "us.local", "Port" : 4100 }
          },
          "DefaultEncoding" : "Utf8",
          "CaseSensitivePN" : false,
          "Worklists" : {
            "Enable": true,
            "Directory": "/srv/worklists",
            "FilterIssuerAet": true,
            "LimitAnswers": 50,
            "SetStudyInstanceUidIfMissing": false,
            "DeleteWorklistsOnStableStudy": false,
            "HousekeepingInterval": 30,
            "DeleteWorklistsDelay": 24
          }
        }
        """,
    )
    settings = load_settings(path, environ={})
    assert settings.dicom_aet == "MWL"
    assert settings.dicom_port == 11112
    assert settings.dicom_modalities["ct1"].aet == "CT01"
    assert settings.dicom_modalities["ct1"].port == 104
    assert settings.dicom_modalities["us1"].host == "us.local"
    assert settings.default_character_set == "ISO_IR 192"
    assert settings.case_sensitive_pn is False
    wl = settings.worklists
    assert wl.directory == Path("/srv/worklists")
    assert wl.folder_mode is True
    assert (wl.filter_issuer_aet, wl.limit_answers) == (True, 50)
    assert (wl.set_study_instance_uid_if_missing, wl.delete_on_stable_study) == (False, False)
    assert (wl.housekeeping_interval, wl.delete_delay_hours) == (30, 24)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '{"HttpPort": 8000, "Worklists": {"LimitAnswers": 5}}')
    env = {
        "MWL_HTTP_PORT": "9000",
        "MWL_DATABASE_URL": "postgresql://mwl@db/mwl",
        "MWL_NATS_URL": "nats://nats:4222",
        "MWL_WORKLISTS_LIMIT_ANSWERS": "7",
        "MWL_WORKLISTS_FILTER_ISSUER_AET": "true",
        "MWL_CASE_SENSITIVE_PN": "false",
        "MWL_DICOM_MODALITIES": '{"mr": ["MR01", "mr.local", 104]}',
    }
    settings = load_settings(path, environ=env)
    assert settings.http_port == 9000
    assert settings.database_url == "postgresql://mwl@db/mwl"
    assert settings.nats_url == "nats://nats:4222"
    assert settings.worklists.limit_answers == 7
    assert settings.worklists.filter_issuer_aet is True
    assert settings.case_sensitive_pn is False
    assert settings.dicom_modalities["mr"].aet == "MR01"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '{"DicomAet": "FROMENV"}')
    assert load_settings(environ={"MWL_CONFIG": str(path)}).dicom_aet == "FROMENV"


def test_every_environment_name_is_documented() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [name for name in environment_names() if name not in readme]
    assert missing == []


@pytest.mark.parametrize(
    ("text", "option"),
    [
        ('{"DicomPort": "abc"}', "DicomPort"),
        ('{"DicomPort": 70000}', "DicomPort"),
        ('{"DicomAet": "THIS_AE_TITLE_IS_TOO_LONG"}', "DicomAet"),
        ('{"DefaultEncoding": "Klingon"}', "DefaultEncoding"),
        ('{"DatabaseUrl": "mysql://x"}', "DatabaseUrl"),
        ('{"DicomModalities": {"ct": ["CT01"]}}', "DicomModalities"),
        ('{"Worklists": {"LimitAnswers": -1}}', "Worklists.LimitAnswers"),
        ('{"Worklists": {"HousekeepingInterval": 0}}', "Worklists.HousekeepingInterval"),
        ('{"Worklists": {"DeleteWorklistsDelay": -2}}', "Worklists.DeleteWorklistsDelay"),
        ('{"Worklists": {"SaveInOrthancDatabase": false}}', "SaveInOrthancDatabase"),
    ],
)
def test_invalid_options_are_named(tmp_path: Path, text: str, option: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert option in str(info.value)


def test_invalid_environment_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"Worklists\.LimitAnswers"):
        load_settings(environ={"MWL_WORKLISTS_LIMIT_ANSWERS": "many"})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.json", environ={})
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(write(tmp_path, '{"DicomAet": '), environ={})
    with pytest.raises(ConfigError, match="JSON object"):
        load_settings(write(tmp_path, "[1, 2]"), environ={})
