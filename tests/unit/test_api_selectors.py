"""minipod serve's label and field selectors, the Table's Accept test, and the certificates."""

from __future__ import annotations

import os
import ssl

import pytest

from minipod.api import certs, selectors, table
from minipod.api.status import ApiError

POD = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "n"},
       "status": {"phase": "Running"}}


@pytest.mark.parametrize("sel,labels,ok", [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "db"}, False),
    ("app!=web", {}, True),
    ("app", {"app": ""}, True),
    ("!app", {"app": "x"}, False),
    ("env in (a, b),tier notin (db)", {"env": "b", "tier": "web"}, True),
    ("env in (a,b)", {"env": "c"}, False),
    ("app=web,tier=db", {"app": "web"}, False),
])
def test_label_selectors(sel, labels, ok):
    assert selectors.labels(sel)(labels) is ok


@pytest.mark.parametrize("bad", ["a in (b", "!a=b", "a=b=c", "=x"])
def test_bad_label_selector_is_a_400(bad):
    with pytest.raises(ApiError) as e:
        selectors.labels(bad)
    assert e.value.code == 400


def test_field_selectors():
    f = selectors.fields("metadata.name=web,status.phase!=Failed", selectors.POD_FIELDS)
    assert f(POD)
    assert not selectors.fields("spec.nodeName=other", selectors.POD_FIELDS)(POD)
    with pytest.raises(ApiError, match="field label not supported: spec.nope"):
        selectors.fields("spec.nope=x", selectors.POD_FIELDS)


def test_table_only_when_asked_first():
    assert table.wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert not table.wants_table("application/json")
    assert not table.wants_table("")


def test_credentials_are_root_only_and_verify(tmp_path):
    root = str(tmp_path)
    certs.ensure(root)
    path = certs.write_kubeconfig(root, "127.0.0.1", 6443)
    d = certs.api_dir(root)
    assert os.stat(d).st_mode & 0o777 == 0o700
    for f in os.listdir(d):
        assert os.stat(os.path.join(d, f)).st_mode & 0o777 == 0o600, f
    assert os.path.basename(path) == "kubeconfig"
    # The serving certificate verifies for 127.0.0.1 against the CA; the client one is signed.
    ctx = ssl.create_default_context(cafile=os.path.join(d, certs.CA))
    ctx.load_cert_chain(os.path.join(d, certs.ADMIN), os.path.join(d, certs.ADMIN_KEY))
    certs.server_context(root)
    before = open(os.path.join(d, certs.CA), "rb").read()
    certs.ensure(root)  # kept: a restart does not invalidate copied kubeconfigs
    assert open(os.path.join(d, certs.CA), "rb").read() == before
