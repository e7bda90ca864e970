import pytest
from pydantic import ValidationError

from data_contracts import PipelineError, QuarantineReport, SplitFractions


def test_a_contract_writes_itself_atomically_and_reads_back(tmp_path):
    report = QuarantineReport(records=())
    path = report.write(tmp_path / "sub" / "quarantine.json")
    assert QuarantineReport.read(path) == report
    assert [p.name for p in path.parent.iterdir()] == ["quarantine.json"]  # no temp file left
    path.write_text(path.read_text()[:20])
    with pytest.raises(PipelineError, match=r"quarantine\.json is not a valid QuarantineReport"):
        QuarantineReport.read(path)


def test_every_schema_is_frozen_and_refuses_unknown_fields():
    with pytest.raises(ValidationError, match="extra"):
        SplitFractions(train=0.7, val=0.15, test=0.15, holdout=0.0)
    fractions = SplitFractions()
    with pytest.raises(ValidationError, match="frozen"):
        fractions.train = 0.5
