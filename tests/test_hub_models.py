"""Models by name on the Hugging Face Hub: fetched through huggingface_hub into its cache, then checked exactly like
a local model directory. No test reaches the internet: the cache is built by hand in the Hub's layout, and the Hub's
answers come from a server on localhost."""

import http.server
import shutil
import socket
import threading

import huggingface_hub.constants
import pytest

from bids_jdam.cli.calibrate import main as calibrate_main
from bids_jdam.errors import InputError
from bids_jdam.methods.hub import HubReference, fetch_hub_model
from bids_jdam.methods.model_dir import MODEL_CARD, WEIGHTS
from bids_jdam.models.demo import DEMO_MODEL_DIR
from bids_jdam.synthesis.loaded_model import load_model
from bids_jdam.workflows.calibrate import model_dir_to_calibrate

REPO = "bids-jdam/demo"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MODEL_FILES = (WEIGHTS, "config.json", MODEL_CARD, "healthy_reference.nii.gz", "healthy_reference.tsv")


def _use_hub_setting(monkeypatch, name: str, value) -> None:
    """Set a Hub setting for this test, both in the environment and where huggingface_hub keeps what it read of it
    at import (whichever of the two the installed version consults)."""
    monkeypatch.setenv(name, str(int(value)) if isinstance(value, bool) else str(value))
    constant = "ENDPOINT" if name == "HF_ENDPOINT" else name
    if hasattr(huggingface_hub.constants, constant):
        monkeypatch.setattr(huggingface_hub.constants, constant, value)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hub cache holding the packaged demo model as REPO at COMMIT (main), in the layout huggingface_hub writes:
    content-addressed blobs, a snapshot of symbolic links to them, and the ref of main."""
    cache = tmp_path / "hub-cache"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for folder in (repo / "blobs", repo / "refs", snapshot):
        folder.mkdir(parents=True)
    for name in MODEL_FILES:
        blob = repo / "blobs" / f"blob-of-{name}"
        shutil.copyfile(DEMO_MODEL_DIR / name, blob)
        (snapshot / name).symlink_to(f"../../blobs/{blob.name}")
    (repo / "refs" / "main").write_text(COMMIT)
    _use_hub_setting(monkeypatch, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def offline(monkeypatch):
    _use_hub_setting(monkeypatch, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("reference", [f"hf:{REPO}", f"hf:{REPO}@{COMMIT}", f"hf:{REPO}@main"])
def test_hub_model_loads_from_the_cache_offline(hub_cache, offline, tmp_path, reference):
    model = load_model(reference, tmp_path, "cpu")
    assert model.name == "bids-jdam-demo" and model.trained_on_phantoms
    assert model.hub_snapshot.commit == COMMIT
    assert model.hub_snapshot.pinned == f"hf:{REPO}@{COMMIT}"  # what worker processes load


def test_tampered_weights_in_the_cache_fail_the_checksum(hub_cache, offline, tmp_path):
    blob = (hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT / WEIGHTS).resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"hf:{REPO} \\(commit {COMMIT}\\): .*sha256 does not match") as error:
        load_model(f"hf:{REPO}", tmp_path, "cpu")
    assert "\n" not in str(error.value)


def test_a_model_missing_from_the_cache_offline_is_one_line_naming_it(hub_cache, offline, tmp_path):
    with pytest.raises(InputError) as error:
        load_model("hf:someone/absent@v2", tmp_path, "cpu")
    message = str(error.value)
    assert message.startswith("hf:someone/absent@v2: not in the Hugging Face cache") and "HF_HUB_OFFLINE" in message
    assert str(hub_cache) in message and "\n" not in message


def test_calibrate_names_a_missing_hub_model_in_one_line(hub_cache, offline, tmp_path, capsys):
    assert calibrate_main(["hf:someone/absent", str(tmp_path), "--copy-to", str(tmp_path / "copy")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bids-jdam-calibrate: error: hf:someone/absent: not in the Hugging Face cache")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_hub_model_is_calibrated_as_a_copy_only(hub_cache, offline, tmp_path):
    with pytest.raises(InputError, match="--copy-to"):
        model_dir_to_calibrate(f"hf:{REPO}")
    copy = model_dir_to_calibrate(f"hf:{REPO}", tmp_path / "copy")
    assert sorted(p.name for p in copy.iterdir()) == sorted(MODEL_FILES)
    assert not any(p.is_symlink() for p in copy.iterdir())  # writing the card must not reach the cache's blobs
    assert (copy / WEIGHTS).read_bytes() == (DEMO_MODEL_DIR / WEIGHTS).read_bytes()


@pytest.mark.parametrize("reference", ["hf:", "hf:demo", "hf:a/b/c", "hf:org/name@", "hf:org/na me"])
def test_malformed_references_name_the_expected_form(reference):
    with pytest.raises(InputError, match="hf:ORG/NAME or hf:ORG/NAME@REVISION"):
        HubReference.parse(reference)


class _HubAnswers(http.server.BaseHTTPRequestHandler):
    """The Hub's answers for an unknown repository and an unknown revision (the X-Error-Code it sends)."""

    def do_GET(self):  # noqa: N802 - the name http.server calls
        code = "RevisionNotFound" if "/revision/v9" in self.path else "RepoNotFound"
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def local_hub(hub_cache, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _use_hub_setting(monkeypatch, "HF_HUB_OFFLINE", False)
    _use_hub_setting(monkeypatch, "HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield server
    server.shutdown()
    server.server_close()


def test_unknown_repository_and_revision_are_one_line_each(local_hub):
    with pytest.raises(InputError, match="^hf:someone/absent: no model repository someone/absent on the Hugging"):
        fetch_hub_model("hf:someone/absent")
    with pytest.raises(InputError, match=f"^hf:{REPO}@v9: no revision 'v9' in {REPO}"):
        fetch_hub_model(f"hf:{REPO}@v9")


def _closed_port() -> int:
    """A localhost port that nothing listens on (one just released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_hub_falls_back_to_the_cache_or_is_one_line(hub_cache, monkeypatch):
    _use_hub_setting(monkeypatch, "HF_HUB_OFFLINE", False)
    _use_hub_setting(monkeypatch, "HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert fetch_hub_model(f"hf:{REPO}").commit == COMMIT
    with pytest.raises(InputError, match="^hf:someone/absent: the Hugging Face Hub cannot be reached") as error:
        fetch_hub_model("hf:someone/absent")
    assert "\n" not in str(error.value)
