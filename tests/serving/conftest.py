"""Fixtures for the serving tests: small models trained here, and real server processes.

Every server under test is ``python -m modelserver`` started as a process on 127.0.0.1 and
spoken to over HTTP; nothing in the server is mocked.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servingkit import N_FEATURES, Server

CUSTOM_MODELS = textwrap.dedent(
    '''
    """Custom model classes used by the serving tests (written to a temp dir on PYTHONPATH)."""
    import os
    import time

    import numpy as np


    class SumModel:
        """Predicts the row sum; predict_proba is a fixed 2-class split."""

        n_features_in_ = 20

        def __init__(self, path):
            self.path = path

        def predict(self, x):
            return x.sum(axis=1)

        def predict_proba(self, x):
            p = np.full(len(x), 0.25)
            return np.stack([1 - p, p], axis=1)


    class GateModel(SumModel):
        """Blocks in predict until the release file exists: a model in the middle of a call.

        The marker file says a predict call started. Rows whose first value is -1 make it raise.
        """

        def predict(self, x):
            if (x[:, 0] == -1).any():
                raise ValueError("row rejected by GateModel")
            if not x.any():  # the warm-up call at load time passes
                return x.sum(axis=1)
            gate = os.environ["GATE_DIR"]
            open(os.path.join(gate, "started"), "a").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(gate, "release")):
                if time.monotonic() > deadline:
                    raise TimeoutError("never released")
                time.sleep(0.01)
            return x.sum(axis=1)


    class LoadGateModel(SumModel):
        """Blocks while loading until the release file exists: a model still being loaded.

        Each process that starts loading leaves a marker file named after its pid.
        """

        def __init__(self, path):
            gate = os.environ["GATE_DIR"]
            open(os.path.join(gate, f"loading-{os.getpid()}"), "a").close()
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(gate, "release")):
                if time.monotonic() > deadline:
                    raise TimeoutError("never released")
                time.sleep(0.01)
            super().__init__(path)


    class SlowModel(SumModel):
        """Takes 50 ms per predict call, so requests are in flight for a while."""

        def predict(self, x):
            time.sleep(0.05)
            return x.sum(axis=1)


    class BrokenModel:
        def __init__(self, path):
            raise RuntimeError("this model refuses to load")
    '''
)


@dataclass(frozen=True)
class Models:
    dir: Path
    x: Any  # training rows (numpy)
    lr: Path
    rf: Path
    xgb: Path
    lgbm: Path
    onnx: Path
    reference: Path
    custom_path: Path  # directory to put on PYTHONPATH for custom classes

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": f"{self.custom_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """Small models of every runtime, trained here on the same 20-feature data."""
    import joblib
    import numpy as np
    from modelserver.drift import reference_stats
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    d = tmp_path_factory.mktemp("models")
    x, y = make_classification(n_samples=600, n_features=N_FEATURES, random_state=0)
    x = x.astype(np.float32)
    lr = LogisticRegression(max_iter=500).fit(x, y)
    joblib.dump(lr, d / "lr.joblib")
    joblib.dump(RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y), d / "rf.joblib")

    import xgboost

    xgb = xgboost.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1).fit(x, y)
    xgb.save_model(d / "xgb.json")

    import lightgbm

    lgbm = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1, n_jobs=1)
    lgbm.fit(x, y)
    lgbm.booster_.save_model(str(d / "lgbm.txt"))

    from skl2onnx import to_onnx

    onx = to_onnx(lr, x[:1], target_opset=17)
    (d / "lr.onnx").write_bytes(onx.SerializeToString())

    (d / "reference.json").write_text(json.dumps(reference_stats(x)))
    custom = d / "custom"
    custom.mkdir()
    (custom / "ms_test_models.py").write_text(CUSTOM_MODELS)
    return Models(
        d, x, d / "lr.joblib", d / "rf.joblib", d / "xgb.json", d / "lgbm.txt",
        d / "lr.onnx", d / "reference.json", custom,
    )  # fmt: skip


@pytest.fixture
def start_server(tmp_path: Path, models: Models) -> Iterator[Any]:
    """Start servers for one test; all are stopped (SIGTERM) at the end."""
    started: list[Server] = []

    def start(*args: str, env: Mapping[str, str] | None = None, **kw: Any) -> Server:
        server = Server(list(args), {**models.env(), **(env or {})}, log_dir=tmp_path, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def lr_server(tmp_path_factory: pytest.TempPathFactory, models: Models) -> Iterator[Server]:
    """One LogisticRegression server shared by a module's read-only tests."""
    log_dir = tmp_path_factory.mktemp("lr-server")
    server = Server(
        ["--model-uri", str(models.lr), "--model-name", "iris", "--model-version", "7",
         "--reference-stats-uri", str(models.reference), "--default-outputs", "predict"],
        models.env(), log_dir=log_dir,
    )  # fmt: skip
    server.wait_ready()
    yield server
    server.stop()
