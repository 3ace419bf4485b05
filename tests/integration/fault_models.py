"""Custom model classes that misbehave on purpose, served by the real model server (format
custom) so a canary can answer 5xx or slowly. They wrap a real scikit-learn artifact, so their
inputs look like the stable model's."""

from __future__ import annotations

import time

import joblib


class _Wrapped:
    def __init__(self, path: str | None) -> None:
        assert path is not None
        self.model = joblib.load(path)
        self.n_features_in_ = self.model.n_features_in_


class FailingModel(_Wrapped):
    """Passes the server's warm-up (a predict on zeros) but raises on real inputs: the server
    turns Ready, then answers 500 to every request, as a model broken for real data would."""

    def predict(self, x):  # type: ignore[no-untyped-def]
        if not x.any():
            return self.model.predict(x)
        raise RuntimeError("injected failure")


class SlowModel(_Wrapped):
    """Correct but slow: 300 ms per predict call."""

    def predict(self, x):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return self.model.predict(x)


class FlippedModel(_Wrapped):
    """Healthy and fast, but predicts the other class for every row: a model that answers like
    stable in shape and type and disagrees with it on every prediction."""

    def predict(self, x):  # type: ignore[no-untyped-def]
        return 1 - self.model.predict(x)
