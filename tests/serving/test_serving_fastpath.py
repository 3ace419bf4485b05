"""The verified fast path gives scikit-learn's own answers, or is not used."""

from __future__ import annotations

import numpy as np
import pytest
from modelserver.runtimes.fastpath import compile_fast_path
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

Xc, yc = make_classification(
    n_samples=400, n_features=8, n_informative=5, n_classes=3, random_state=1
)
Xb, yb = make_classification(n_samples=400, n_features=8, random_state=2)
Xr, yr = make_regression(n_samples=400, n_features=8, random_state=3)


@pytest.mark.parametrize(
    ("model", "x", "y"),
    [
        (LogisticRegression(max_iter=500), Xb, yb),
        (LogisticRegression(max_iter=500), Xc, yc),
        (LogisticRegression(max_iter=500), Xb, np.where(yb == 1, "spam", "ham")),
        (RandomForestClassifier(n_estimators=7, random_state=0), Xc, yc),
        (RandomForestClassifier(n_estimators=8, max_depth=3, random_state=0), Xb, yb),
        (DecisionTreeClassifier(random_state=0), Xc, yc),
        (RandomForestRegressor(n_estimators=5, random_state=0), Xr, yr),
        (ExtraTreesRegressor(n_estimators=5, random_state=0), Xr, yr),
        (Ridge(), Xr, yr),
    ],
    ids=lambda v: type(v).__name__ if hasattr(v, "fit") else "",
)
def test_matches_sklearn(model, x, y) -> None:  # type: ignore[no-untyped-def]
    model.fit(x, y)
    fast = compile_fast_path(model, x.shape[1])
    assert fast is not None
    rng = np.random.default_rng(5)
    test = np.vstack([x[:50], rng.normal(0, 3, size=(50, x.shape[1]))])
    xt = test.astype(fast.input_dtype)
    assert np.array_equal(fast.predict(xt), model.predict(test))
    assert np.array_equal(fast.predict(xt[:1]), model.predict(test[:1]))
    if hasattr(model, "predict_proba"):
        assert fast.predict_proba is not None
        assert np.allclose(fast.predict_proba(xt), model.predict_proba(test), rtol=1e-9, atol=1e-12)


def test_unsupported_models_have_no_fast_path() -> None:
    assert compile_fast_path(KNeighborsClassifier().fit(Xb, yb), 8) is None
    assert (
        compile_fast_path(make_pipeline(StandardScaler(), LogisticRegression()).fit(Xb, yb), 8)
        is None
    )

    class MyForest(RandomForestClassifier):  # a subclass may override predict
        pass

    assert compile_fast_path(MyForest(n_estimators=2).fit(Xb, yb), 8) is None


def test_a_fast_path_that_disagrees_is_not_used() -> None:
    model = LogisticRegression().fit(Xb, yb)
    model.coef_ = model.coef_.copy()
    original = model.predict

    class Lying(LogisticRegression):
        pass

    model.predict = lambda x: 1 - original(x)  # type: ignore[method-assign]
    assert compile_fast_path(model, 8) is None
