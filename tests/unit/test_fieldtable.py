"""docs/fields.md is the field catalogue rendered: it must say what the loader does."""

import pathlib

import yaml

from minipod.spec import fieldtable
from minipod.spec.spec import loads

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "fields.md"


def test_the_document_is_the_catalogue_rendered():
    assert DOC.read_text() == fieldtable.render(), \
        "docs/fields.md is stale: python -m minipod.spec.fieldtable > docs/fields.md"


def _pod(spec_extra: dict) -> str:
    spec = {"containers": [{"name": "c", "image": "busybox"}], **spec_extra}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                           "spec": spec})


def test_what_the_table_says_is_what_the_loader_does():
    assert fieldtable.status("spec.hostNetwork") == "supported"
    assert not loads(_pod({"hostNetwork": True})).warnings
    assert fieldtable.status("spec.runtimeClassName").startswith("not implemented")
    assert any("spec.runtimeClassName" in w for w in loads(_pod({"runtimeClassName": "x"})).warnings)
    assert fieldtable.status("spec.nodeSelector").startswith("checked, then ignored")
    assert fieldtable.status("spec.hostUsers").startswith("refused when")


def test_every_row_is_a_path_of_the_catalogue():
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
    assert len(rows) > 300
    assert "| `spec.containers[].securityContext.seccompProfile.type` | supported |" in rows
