"""KServe's Python model server with a thin scikit-learn model, as KServe's sklearnserver does.

KServe's own sklearn server is not published on PyPI, so this is the same few lines: load the
joblib file, and in predict turn the v1 or v2 payload into an array with KServe's helpers, call
the model, and build the response with KServe's helpers. Configured by environment:
MODEL_NAME, MODEL_PATH, HTTP_PORT, GRPC_PORT. Everything else is KServe's default.
"""

from __future__ import annotations

import os

import joblib
import kserve
from kserve.utils.utils import get_predict_input, get_predict_response


class SKLearnModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.model = None

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):  # type: ignore[no-untyped-def]
        instances = get_predict_input(payload)
        result = self.model.predict(instances)  # type: ignore[attr-defined]
        return get_predict_response(payload, result, self.name)


if __name__ == "__main__":
    model = SKLearnModel(os.environ["MODEL_NAME"], os.environ["MODEL_PATH"])
    model.load()
    kserve.ModelServer(
        http_port=int(os.environ["HTTP_PORT"]), grpc_port=int(os.environ["GRPC_PORT"])
    ).start([model])
