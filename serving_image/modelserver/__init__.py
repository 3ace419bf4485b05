"""modelserver: the serving image of modeldeploy — an Open Inference Protocol v2 server.

Run ``python -m modelserver --help``. The package never imports kopf or the Kubernetes client.
"""

__version__ = "0.1.0"
