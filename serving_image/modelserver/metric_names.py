"""Names of the metrics the model server exports, shared by the server and the operator.

This module is the single source of truth for metric and label names. It is plain constants and
string helpers on purpose: the operator imports it without pulling in numpy, scikit-learn or
prometheus-client, and the server imports it to create the metrics, so the two can never drift.

Every request-level series carries the labels ``model`` (the served model's name), ``version`` (the
revision the operator deployed; set with ``MODELSERVER_MODEL_VERSION``), ``endpoint`` (one of the
``ENDPOINT_*`` values below, never a raw path, so clients cannot create series), ``code`` (the
HTTP status code as a string) and ``protocol`` (``http`` or ``grpc``). A gRPC call counts under
the endpoint of its REST twin (ModelInfer is ``infer``) with the HTTP status REST would have
answered (INVALID_ARGUMENT is 400, INTERNAL 500, ...: see ``GRPC_STATUS_CODES``), so the canary
queries below cover both protocols unchanged.

Canary analysis per revision (the operator builds these with the helpers at the bottom):

Error ratio — the share of inference requests that failed on the server side (5xx). Client errors
(4xx) are the caller's fault, not the revision's, and are left out::

    sum by (model, version) (rate(
        modelserver_requests_total{endpoint=~"infer|predict", code=~"5.."}[5m]))
    /
    sum by (model, version) (rate(
        modelserver_requests_total{endpoint=~"infer|predict"}[5m]))

p99 latency of inference requests, seconds::

    histogram_quantile(0.99, sum by (le, model, version) (
        rate(modelserver_request_duration_seconds_bucket{endpoint=~"infer|predict"}[5m])))

Other series: ``modelserver_inference_duration_seconds`` (one predict call, per batch),
``modelserver_batch_size`` (rows per predict call), ``modelserver_model_load_duration_seconds``,
``modelserver_model_ready`` (1 when the model can serve) and ``modelserver_feature_drift_psi``
(population stability index of each input feature against the reference statistics shipped with
the model; 0.1 to 0.25 is a moderate shift, above 0.25 a large one) and
``modelserver_payload_log_events_total{outcome="sent|failed|dropped"}`` (audit events sent to the
payload log sink, refused by it or unreachable, and dropped because the queue was full), and the
``modelserver_shadow_*`` series of shadow traffic (see ``modelserver.shadow``).
"""

from __future__ import annotations

# --- metric names (as exposed; counters carry their ``_total`` suffix) ---------------------------
REQUESTS_TOTAL = "modelserver_requests_total"
REQUEST_DURATION_SECONDS = "modelserver_request_duration_seconds"
INFERENCE_DURATION_SECONDS = "modelserver_inference_duration_seconds"
BATCH_SIZE = "modelserver_batch_size"
MODEL_LOAD_DURATION_SECONDS = "modelserver_model_load_duration_seconds"
MODEL_READY = "modelserver_model_ready"
INFLIGHT_REQUESTS = "modelserver_inflight_requests"
FEATURE_DRIFT_PSI = "modelserver_feature_drift_psi"
DRIFT_ROWS_TOTAL = "modelserver_drift_rows_total"
# Payload logging (modelserver.payload_log): events by outcome, sent (the sink answered 2xx),
# failed (refused for good: another 4xx, an untrusted certificate) and dropped (the bounded
# queue was full); events the sink could not take yet are sent again, not counted.
PAYLOAD_LOG_EVENTS_TOTAL = "modelserver_payload_log_events_total"
# Shadow traffic (modelserver.shadow), exported by the server that mirrors (stable), labelled
# with the shadow's revision: copies sent, copies dropped (queue full), answers that agreed or
# disagreed with this server's, copies the shadow did not answer with a 2xx, and its answer time.
SHADOW_MIRRORED_TOTAL = "modelserver_shadow_mirrored_total"
SHADOW_DROPPED_TOTAL = "modelserver_shadow_dropped_total"
SHADOW_AGREED_TOTAL = "modelserver_shadow_agreed_total"
SHADOW_DISAGREED_TOTAL = "modelserver_shadow_disagreed_total"
SHADOW_ERRORS_TOTAL = "modelserver_shadow_errors_total"
SHADOW_DURATION_SECONDS = "modelserver_shadow_duration_seconds"

# --- label names ---------------------------------------------------------------------------------
LABEL_MODEL = "model"
LABEL_VERSION = "version"
LABEL_ENDPOINT = "endpoint"
LABEL_CODE = "code"
LABEL_FEATURE = "feature"
LABEL_OUTCOME = "outcome"
LABEL_PROTOCOL = "protocol"

# --- values of the ``protocol`` label ------------------------------------------------------------
PROTOCOL_HTTP = "http"
PROTOCOL_GRPC = "grpc"

# The ``code`` a gRPC call is counted with, by gRPC status name: the HTTP status of the same
# outcome over REST.
GRPC_STATUS_CODES = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
}
LABEL_SHADOW = "shadow"  # the shadow revision a shadow_* series is about

# --- values of the ``endpoint`` label ------------------------------------------------------------
ENDPOINT_INFER = "infer"  # POST /v2/models/{name}[/versions/{v}]/infer
ENDPOINT_PREDICT = "predict"  # POST /v1/models/{name}:predict
ENDPOINT_MODEL_METADATA = "model_metadata"
ENDPOINT_MODEL_READY = "model_ready"
ENDPOINT_SERVER_METADATA = "server_metadata"
ENDPOINT_LIVE = "live"
ENDPOINT_READY = "ready"
ENDPOINT_METRICS = "metrics"
ENDPOINT_SHADOW = "shadow"  # GET/PUT/DELETE /v2/shadow: the operator configures mirroring
ENDPOINT_OTHER = "other"  # anything that matched no route

INFERENCE_ENDPOINTS = (ENDPOINT_INFER, ENDPOINT_PREDICT)

# The ``model`` label value used when a request names a model this server does not serve: the
# requested name is never used as a label value, so a client cannot blow up the series count.
UNKNOWN_MODEL = "_unknown"

# Latency buckets in seconds: fine-grained below 10 ms, where a healthy classical model lives.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _inference_selector(model: str, version: str | None) -> str:
    """A PromQL label selector for the inference endpoints of one model (and revision)."""
    parts = [f'{LABEL_MODEL}="{model}"', f'{LABEL_ENDPOINT}=~"{"|".join(INFERENCE_ENDPOINTS)}"']
    if version is not None:
        parts.insert(1, f'{LABEL_VERSION}="{version}"')
    return ",".join(parts)


def error_ratio_query(model: str, version: str | None = None, window: str = "5m") -> str:
    """PromQL for the ratio of 5xx inference responses, per model and version."""
    sel = _inference_selector(model, version)
    by = f"{LABEL_MODEL}, {LABEL_VERSION}"
    return (
        f'sum by ({by}) (rate({REQUESTS_TOTAL}{{{sel},{LABEL_CODE}=~"5.."}}[{window}]))'
        f" / sum by ({by}) (rate({REQUESTS_TOTAL}{{{sel}}}[{window}]))"
    )


def latency_quantile_query(
    model: str, version: str | None = None, quantile: float = 0.99, window: str = "5m"
) -> str:
    """PromQL for a request-latency quantile (seconds) of inference requests, per version."""
    sel = _inference_selector(model, version)
    return (
        f"histogram_quantile({quantile}, sum by (le, {LABEL_MODEL}, {LABEL_VERSION}) "
        f"(rate({REQUEST_DURATION_SECONDS}_bucket{{{sel}}}[{window}])))"
    )
